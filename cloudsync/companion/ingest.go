package companion

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// verdictRecord is the part of a station's verdict record (one line of a
// verdicts/ batch) the companion reads; other fields are ignored, so the
// station may add some.
type verdictRecord struct {
	ID        uint64    `json:"id"`
	Station   string    `json:"station"`
	Time      time.Time `json:"time"`
	Decision  string    `json:"decision"`
	Score     *float64  `json:"score"`
	Threshold float64   `json:"threshold"`
	Model     struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"model"`
	Label string `json:"label"`
	// Models holds each model's outcome when the station runs several
	// models on a frame; the fields above are those of the deciding model.
	Models []struct {
		Model struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"model"`
		Decision  string   `json:"decision"`
		Score     *float64 `json:"score"`
		Threshold float64  `json:"threshold"`
	} `json:"models"`
}

// outcomes returns each model's outcome of the record: the models list, or
// the deciding model alone.
func (r verdictRecord) outcomes() map[string]Outcome {
	out := map[string]Outcome{}
	for _, m := range r.Models {
		if m.Model.Name != "" {
			out[m.Model.Name] = Outcome{Version: m.Model.Version, Decision: m.Decision, Score: m.Score, Threshold: m.Threshold}
		}
	}
	if len(out) == 0 {
		name := r.Model.Name
		if name == "" {
			name = "unnamed"
		}
		out[name] = Outcome{Version: r.Model.Version, Decision: r.Decision, Score: r.Score, Threshold: r.Threshold}
	}
	return out
}

type labelRecord = wire.LabelRecord

// imageRef is an image object, known from its key alone (images are fetched
// when a training dataset needs them, not at ingest).
type imageRef struct {
	Key     string
	Station string
	ID      uint64
}

// Ingest prefixes, in the order a pass reads them: verdicts first, so that
// labels and images mostly find their verdict already indexed.
var ingestPrefixes = []string{"verdicts/", "labels/", "images/"}

// IngestResult counts what one pass added.
type IngestResult struct {
	Verdicts, Images, Labels int
	Objects                  int // objects read or indexed
	Skipped                  int // objects that could not be parsed (logged)
	Elapsed                  time.Duration
}

// ingestPage bounds the keys applied in one transaction.
const ingestPage = 500

// ingest reads what the stations uploaded since the last pass (or, with
// full, everything not yet seen) into the index.
func (c *Companion) ingest(ctx context.Context, full bool) (IngestResult, error) {
	start := time.Now()
	var res IngestResult
	for _, prefix := range ingestPrefixes {
		var stations []string
		err := c.bucket.List(ctx, prefix, "", false, func(o cloudsync.ObjectInfo) error {
			if o.Size == -1 {
				stations = append(stations, o.Key)
			}
			return nil
		})
		if err != nil {
			return res, err
		}
		for _, sp := range stations {
			if err := c.ingestPrefix(ctx, sp, full, &res); err != nil {
				return res, err
			}
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

func (c *Companion) ingestPrefix(ctx context.Context, prefix string, full bool, res *IngestResult) error {
	// Label keys sort by the labelled verdict's capture date and id, not by
	// when the label was set: a label on an old verdict sorts before the
	// cursor. Labels are few (one per operator action), so their prefix is
	// listed whole every pass; seen keys are skipped.
	after := ""
	if !full && !strings.HasPrefix(prefix, "labels/") {
		after = c.index.cursor(prefix)
	}
	var page []string
	flush := func() error {
		if len(page) == 0 {
			return nil
		}
		last := page[len(page)-1]
		items, skipped, err := c.fetch(ctx, c.index.unseen(page))
		if err != nil {
			return err
		}
		v, i, l, err := c.index.apply(items, prefix, last)
		if err != nil {
			return err
		}
		res.Verdicts += v
		res.Images += i
		res.Labels += l
		res.Objects += len(items)
		res.Skipped += skipped
		page = page[:0]
		return nil
	}
	err := c.bucket.List(ctx, prefix, after, true, func(o cloudsync.ObjectInfo) error {
		page = append(page, o.Key)
		if len(page) >= ingestPage {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// fetch reads the verdict batches and label objects among keys (images are
// parsed from their keys). An object that does not parse is logged and
// counted as skipped, and marked seen so it is not read again.
func (c *Companion) fetch(ctx context.Context, keys []string) ([]fetched, int, error) {
	out := make([]fetched, len(keys))
	bad := make([]bool, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Ingest.Concurrency)
	for i, key := range keys {
		out[i].key = key
		if strings.HasPrefix(key, "images/") {
			ref, err := parseImageKey(key)
			if err != nil {
				c.log.Warn().Err(err).Str("key", key).Msg("ingest: image key skipped")
				bad[i] = true
				continue
			}
			out[i].image = &ref
			continue
		}
		g.Go(func() error {
			data, _, err := c.bucket.Get(gctx, key)
			if errors.Is(err, cloudsync.ErrNotFound) {
				bad[i] = true // deleted since the listing
				return nil
			}
			if err != nil {
				return err
			}
			switch {
			case strings.HasPrefix(key, "verdicts/"):
				recs, err := parseVerdictBatch(data)
				if err != nil {
					c.log.Warn().Err(err).Str("key", key).Msg("ingest: verdict batch skipped")
					bad[i] = true
					return nil
				}
				out[i].verdicts = recs
			case strings.HasPrefix(key, "labels/"):
				var r labelRecord
				if err := json.Unmarshal(data, &r); err != nil || r.VerdictID == 0 || r.Station == "" {
					c.log.Warn().Err(err).Str("key", key).Msg("ingest: label object skipped (not a label record)")
					bad[i] = true
					return nil
				}
				out[i].label = &r
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	skipped := 0
	for i := range out {
		if bad[i] {
			skipped++
			out[i] = fetched{key: out[i].key, verdicts: []verdictRecord{}} // an empty batch: marked seen, adds nothing
		}
	}
	return out, skipped, nil
}

// parseVerdictBatch reads a JSON Lines batch; a line that does not parse
// makes the whole batch an error (batches are written whole by one station).
func parseVerdictBatch(data []byte) ([]verdictRecord, error) {
	var out []verdictRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r verdictRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if r.ID == 0 || r.Station == "" || r.Decision == "" {
			return nil, fmt.Errorf("line %d: id, station and decision are required", n)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if out == nil {
		out = []verdictRecord{}
	}
	return out, nil
}

// parseImageKey reads images/{station}/{yyyy}/{mm}/{dd}/{id}.{ext}.
func parseImageKey(key string) (imageRef, error) {
	parts := strings.Split(key, "/")
	if len(parts) != 6 || parts[0] != "images" || parts[1] == "" {
		return imageRef{}, fmt.Errorf("image key %q: want images/{station}/{yyyy}/{mm}/{dd}/{id}.{ext}", key)
	}
	base := parts[5]
	id, err := strconv.ParseUint(strings.TrimSuffix(base, path.Ext(base)), 10, 64)
	if err != nil || id == 0 {
		return imageRef{}, fmt.Errorf("image key %q: %q is not a verdict id", key, base)
	}
	return imageRef{Key: key, Station: parts[1], ID: id}, nil
}
