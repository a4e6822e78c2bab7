package cloudsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// Uploader drains an [Outbox] to S3-compatible object storage: each kept
// image chosen by the sampling policy as one object, and every verdict record
// in immutable JSON Lines batches, one object per capture day of each set that
// Outbox.Pending returns, and every operator label entry as its own immutable
// object (labels/..., see [wire.LabelKey]). It acknowledges a set only after every
// object of it is confirmed, and a label entry only after its object is, so a
// crash at any point leads to the same keys being written again, where
// identical existing objects count as success.
type Uploader struct {
	cfg    Config
	outbox Outbox
	log    zerolog.Logger
	store  *objectStore
	sample *sampler

	chosen map[uint64]bool // sampling decisions for the current set (Run's goroutine)

	// confirmed holds the keys of the current set the server confirmed, so
	// a retry after a partial failure does not repeat them.
	confirmedMu sync.Mutex
	confirmed   map[string]bool

	mu      sync.Mutex
	state   string
	lastErr string
	since   time.Time

	objects, bytesUp, existed, conflicts, skipped, capped, missing atomic.Uint64

	// hookBeforeAck, when set (tests), runs after a set is uploaded and
	// before it is acknowledged; an error skips the Ack as a crash would.
	hookBeforeAck func(items []wire.Item) error
}

// Uploader states, in Status.State.
const (
	StateStarting  = "starting"  // not yet talked to the server
	StateIdle      = "idle"      // nothing pending
	StateUploading = "uploading" // a set is in flight
	StateBackoff   = "backoff"   // the last attempt failed; waiting to retry
)

// Status is a snapshot of the uploader for status messages and metrics.
type Status struct {
	State     string       `json:"state"`
	LastError string       `json:"last_error,omitempty"` // of the last failure, "" after a success
	Since     time.Time    `json:"since"`                // when State was entered
	Backlog   wire.Backlog `json:"backlog"`

	Objects       uint64 `json:"objects"`        // objects written
	Bytes         uint64 `json:"bytes"`          // their bytes
	Existed       uint64 `json:"existed"`        // puts that found an identical object (a retry after a crash)
	Conflicts     uint64 `json:"conflicts"`      // keys that held other content
	ImagesSkipped uint64 `json:"images_skipped"` // PASS images the sampling left out
	ImagesCapped  uint64 `json:"images_capped"`  // images left out by an hourly cap
	ImagesMissing uint64 `json:"images_missing"` // images evicted before they were uploaded
}

// New validates cfg and prepares the client; it does no network I/O (it
// reads sync.credentials_file and sync.ca_file). outbox is drained by Run.
func New(cfg Config, outbox Outbox, log zerolog.Logger) (*Uploader, error) {
	if !cfg.Enabled() {
		return nil, errors.New("sync.endpoint: empty; sync is disabled")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if outbox == nil {
		return nil, errors.New("sync: outbox is nil")
	}
	st, err := newObjectStore(cfg)
	if err != nil {
		return nil, err
	}
	return &Uploader{
		cfg: cfg, outbox: outbox, store: st, sample: newSampler(cfg.Sample),
		log:    log.With().Str("component", "sync").Logger(),
		chosen: map[uint64]bool{}, confirmed: map[string]bool{},
		state: StateStarting, since: time.Now(),
	}, nil
}

// Status returns the uploader's state, counters and the outbox backlog.
func (u *Uploader) Status() Status {
	u.mu.Lock()
	s := Status{State: u.state, LastError: u.lastErr, Since: u.since}
	u.mu.Unlock()
	s.Backlog, _ = u.outbox.Backlog()
	s.Objects, s.Bytes, s.Existed, s.Conflicts = u.objects.Load(), u.bytesUp.Load(), u.existed.Load(), u.conflicts.Load()
	s.ImagesSkipped, s.ImagesCapped, s.ImagesMissing = u.skipped.Load(), u.capped.Load(), u.missing.Load()
	return s
}

// Run uploads until ctx is done, then returns nil after in-flight requests
// ended. Failures (network, server errors, wrong credentials) are retried with
// exponential backoff and jitter; they are logged when the state changes, not
// per retry. Run is called once.
func (u *Uploader) Run(ctx context.Context) error {
	defer u.store.transport.CloseIdleConnections()
	u.log.Info().Str("endpoint", u.cfg.Endpoint).Str("bucket", u.cfg.Bucket).Msg("uploader started")
	bo := backoff{min: u.cfg.BackoffMin, max: u.cfg.BackoffMax}
	nextStatus := time.Now().Add(u.cfg.StatusInterval)
	var lastLogged wire.Backlog
	bucketReady := !u.cfg.CreateBucket
	for ctx.Err() == nil {
		if now := time.Now(); !now.Before(nextStatus) {
			nextStatus = now.Add(u.cfg.StatusInterval)
			lastLogged = u.logBacklog(lastLogged)
		}
		var err error
		idle := false
		switch {
		case !bucketReady:
			if err = u.store.ensureBucket(ctx); err == nil {
				bucketReady = true
				continue
			}
		default:
			idle, err = u.step(ctx)
		}
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			d := bo.next()
			if errors.Is(err, ErrAuth) || errors.Is(err, ErrNoBucket) {
				d = u.cfg.BackoffMax // no fast retries against a server that said no
			}
			u.fail(err, d)
			sleep(ctx, d)
			continue
		}
		bo.reset()
		u.succeeded()
		if idle {
			u.setState(StateIdle)
			sleep(ctx, u.cfg.PollInterval)
		}
	}
	u.logBacklog(wire.Backlog{Count: -1})
	u.log.Info().Msg("uploader stopped")
	return nil
}

// step uploads and acknowledges one set of verdicts, then one set of label
// entries; idle is true when there was neither.
func (u *Uploader) step(ctx context.Context) (idle bool, err error) {
	idleVerdicts, err := u.stepVerdicts(ctx)
	if err != nil {
		return false, err
	}
	idleLabels, err := u.stepLabels(ctx)
	if err != nil {
		return false, err
	}
	return idleVerdicts && idleLabels, nil
}

// stepLabels uploads up to BatchSize label entries, one object each, and
// acknowledges those the server confirmed.
func (u *Uploader) stepLabels(ctx context.Context) (idle bool, err error) {
	labels, err := u.outbox.PendingLabels(ctx, u.cfg.BatchSize)
	if err != nil {
		return false, fmt.Errorf("read label outbox: %w", err)
	}
	if len(labels) == 0 {
		return true, nil
	}
	u.setState(StateUploading)
	var jobs []func(context.Context) error
	keys := make([]string, len(labels))
	for i, l := range labels {
		keys[i] = wire.LabelKey(l.Station, l.Time, l.VerdictID, l.Seq)
		jobs = append(jobs, func(ctx context.Context) error {
			return u.put(ctx, keys[i], l.Record, "application/json")
		})
	}
	uploadErr := u.runJobs(ctx, jobs)
	// Acknowledge what the server confirmed, also after a partial failure.
	var seqs []uint64
	u.confirmedMu.Lock()
	for i, l := range labels {
		if u.confirmed[keys[i]] {
			seqs = append(seqs, l.Seq)
		}
	}
	u.confirmedMu.Unlock()
	if len(seqs) > 0 {
		if err := u.outbox.AckLabels(context.WithoutCancel(ctx), seqs); err != nil {
			return false, fmt.Errorf("ack %d labels: %w", len(seqs), err)
		}
		u.confirmedMu.Lock()
		for _, k := range keys {
			delete(u.confirmed, k)
		}
		u.confirmedMu.Unlock()
	}
	return false, uploadErr
}

// stepVerdicts uploads and acknowledges one set; idle is true when there was none.
func (u *Uploader) stepVerdicts(ctx context.Context) (idle bool, err error) {
	items, err := u.outbox.Pending(ctx, u.cfg.BatchSize)
	if err != nil {
		return false, fmt.Errorf("read outbox: %w", err)
	}
	if len(items) == 0 {
		return true, nil
	}
	u.setState(StateUploading)
	if err := u.upload(ctx, items); err != nil {
		return false, err
	}
	if u.hookBeforeAck != nil {
		if err := u.hookBeforeAck(items); err != nil {
			return false, err
		}
	}
	ids := make([]uint64, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	// Record progress even if ctx ended meanwhile: the objects are there.
	if err := u.outbox.Ack(context.WithoutCancel(ctx), ids); err != nil {
		return false, fmt.Errorf("ack %d verdicts: %w", len(ids), err)
	}
	clear(u.chosen)
	u.confirmedMu.Lock()
	clear(u.confirmed)
	u.confirmedMu.Unlock()
	return false, nil
}

// upload writes the chosen images of items, then their records batched per
// station and capture day.
func (u *Uploader) upload(ctx context.Context, items []wire.Item) error {
	var jobs []func(context.Context) error
	for _, it := range items {
		if it.Image != "" && u.choose(it) {
			jobs = append(jobs, func(ctx context.Context) error { return u.uploadImage(ctx, it) })
		}
	}
	if err := u.runJobs(ctx, jobs); err != nil {
		return err
	}
	jobs = jobs[:0]
	for _, batch := range batches(items) {
		jobs = append(jobs, func(ctx context.Context) error {
			var body bytes.Buffer
			for _, it := range batch {
				body.Write(it.Record)
				body.WriteByte('\n')
			}
			key := wire.VerdictBatchKey(batch[0].Station, batch[0].Time, batch[0].ID, batch[len(batch)-1].ID)
			return u.put(ctx, key, body.Bytes(), "application/x-ndjson")
		})
	}
	return u.runJobs(ctx, jobs)
}

// runJobs runs uploads, Concurrency at a time. After a failed attempt the
// first job runs alone as a probe, so a server that is down or refuses us
// sees one request per retry, not a burst. A failure does not cancel the
// uploads in flight (each attempt confirms what it can), but credentials and
// bucket errors stop new ones.
func (u *Uploader) runJobs(ctx context.Context, jobs []func(context.Context) error) error {
	u.mu.Lock()
	probe := u.lastErr != ""
	u.mu.Unlock()
	if probe && len(jobs) > 0 {
		if err := jobs[0](ctx); err != nil {
			return err
		}
		jobs = jobs[1:]
	}
	var g errgroup.Group
	g.SetLimit(u.cfg.Concurrency)
	var refused atomic.Bool
	for _, job := range jobs {
		if refused.Load() || ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			err := job(ctx)
			if errors.Is(err, ErrAuth) || errors.Is(err, ErrNoBucket) {
				refused.Store(true)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// choose applies the sampling policy once per item and set.
func (u *Uploader) choose(it wire.Item) bool {
	if c, ok := u.chosen[it.ID]; ok {
		return c
	}
	c, capped := u.sample.choose(it)
	switch {
	case capped:
		u.capped.Add(1)
	case !c:
		u.skipped.Add(1)
	}
	u.chosen[it.ID] = c
	return c
}

func (u *Uploader) uploadImage(ctx context.Context, it wire.Item) error {
	data, err := os.ReadFile(it.Image)
	if errors.Is(err, fs.ErrNotExist) {
		u.missing.Add(1) // evicted after Pending: the record still goes up
		return nil
	}
	if err != nil {
		return fmt.Errorf("image of verdict %d: %w", it.ID, err)
	}
	ct := "image/jpeg"
	if it.ImageExt == "png" {
		ct = "image/png"
	}
	return u.put(ctx, wire.ImageKey(it.Station, it.Time, it.ID, it.ImageExt), data, ct)
}

// put writes one object; on a conflict it writes the content under a key
// derived from the key and the content, so the data is kept without
// overwriting what is there.
func (u *Uploader) put(ctx context.Context, key string, data []byte, contentType string) error {
	u.confirmedMu.Lock()
	done := u.confirmed[key]
	u.confirmedMu.Unlock()
	if done {
		return nil
	}
	err := u.put1(ctx, key, data, contentType)
	if err == nil {
		u.confirmedMu.Lock()
		u.confirmed[key] = true
		u.confirmedMu.Unlock()
	}
	return err
}

func (u *Uploader) put1(ctx context.Context, key string, data []byte, contentType string) error {
	out, err := u.store.put(ctx, key, data, contentType)
	if errors.Is(err, ErrConflict) {
		u.conflicts.Add(1)
		u.log.Error().Err(err).Str("key", key).Msg("object key holds other content; keeping ours beside it")
		key = conflictKey(key, data)
		out, err = u.store.put(ctx, key, data, contentType)
	}
	if err != nil {
		return err
	}
	if out == putExisted {
		u.existed.Add(1)
		return nil
	}
	u.objects.Add(1)
	u.bytesUp.Add(uint64(len(data)))
	return nil
}

// batches groups items (ascending ids) by station and capture day.
func batches(items []wire.Item) [][]wire.Item {
	type k struct {
		station string
		day     string
	}
	idx := map[k]int{}
	var out [][]wire.Item
	for _, it := range items {
		key := k{it.Station, it.Time.UTC().Format("2006-01-02")}
		i, ok := idx[key]
		if !ok {
			i = len(out)
			idx[key] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], it)
	}
	for _, b := range out {
		slices.SortFunc(b, func(x, y wire.Item) int {
			switch {
			case x.ID < y.ID:
				return -1
			case x.ID > y.ID:
				return 1
			}
			return 0
		})
	}
	return out
}

func (u *Uploader) setState(state string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state != state {
		u.state, u.since = state, time.Now()
	}
}

// succeeded clears the last error after a successful step.
func (u *Uploader) succeeded() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.lastErr != "" {
		u.log.Info().Msg("uploads resumed")
	}
	u.lastErr = ""
}

// fail records a failure; it logs when the error differs from the last one.
func (u *Uploader) fail(err error, retry time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	msg := err.Error()
	if msg != u.lastErr {
		ev := u.log.Warn()
		if errors.Is(err, ErrAuth) || errors.Is(err, ErrNoBucket) {
			ev = u.log.Error()
		}
		ev.Err(err).Dur("retry_in", retry).Msg("upload failed; retrying with backoff")
	}
	if u.state != StateBackoff {
		u.state, u.since = StateBackoff, time.Now()
	}
	u.lastErr = msg
}

// logBacklog logs the backlog when it is not empty or just became empty.
func (u *Uploader) logBacklog(last wire.Backlog) wire.Backlog {
	b, err := u.outbox.Backlog()
	if err != nil || (b.Count == 0 && b.Labels == 0 && last.Count == 0 && last.Labels == 0) {
		return b
	}
	u.mu.Lock()
	state := u.state
	u.mu.Unlock()
	u.log.Info().Int("count", b.Count).Int64("bytes", b.Bytes).Dur("oldest_age", b.Age(time.Now()).Round(time.Millisecond)).Int("labels", b.Labels).
		Str("state", state).Uint64("objects", u.objects.Load()).Msg("sync backlog")
	return b
}
