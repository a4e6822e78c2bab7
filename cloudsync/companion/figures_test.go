package companion

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// The figures of `make bench` (TAKT_FIGURES=1).

// Ingest throughput against a real versitygw on loopback: 12 stations, each
// with 24 batches of 256 verdicts (73,728 verdicts) and every tenth verdict
// with an image (7,373 image objects), ingested by a fresh companion in one
// pass. Beside it, in the same run, the bare read of the same objects (list
// every key, GET every batch, no parsing, no index) with the same
// concurrency: the ratio is what parsing and indexing cost on top of S3.
func TestFiguresIngest(t *testing.T) {
	if os.Getenv("TAKT_FIGURES") != "1" {
		t.Skip("figures run under make bench (TAKT_FIGURES=1)")
	}
	const stations, batches, perBatch = 12, 24, 256
	e := newEnv(t, false)
	// Image statistics (which download PASS images after the pass) are
	// measured by TestFiguresImageStats; these images are not decodable.
	e.cfg.Models[0].Triggers.Drift.ImageThreshold = 0
	ctx := context.Background()
	img := bytes.Repeat([]byte{0xA5}, 2048) // image content is not read at ingest
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	score := 0.4
	for s := range stations {
		station := fmt.Sprintf("st-%02d", s)
		for b := range batches {
			g.Go(func() error {
				var body bytes.Buffer
				first := uint64(b*perBatch + 1)
				for i := range perBatch {
					id := first + uint64(i)
					r := stationRecord{Schema: 1, ID: id, Station: station, CameraID: "cam0", Serial: fmt.Sprintf("SN-%d", id),
						Time: day.Add(time.Duration(id) * time.Second), Decision: "PASS", Score: &score, Threshold: 1}
					r.Model.Name, r.Model.Version = "part", "1.0.0"
					js, _ := json.Marshal(r)
					body.Write(js)
					body.WriteByte('\n')
					if id%10 == 0 {
						if _, err := e.bucket.PutNew(gctx, wire.ImageKey(station, r.Time, id, "jpg"), img, "image/jpeg"); err != nil {
							return err
						}
					}
				}
				key := wire.VerdictBatchKey(station, day, first, first+perBatch-1)
				_, err := e.bucket.PutNew(gctx, key, body.Bytes(), "application/x-ndjson")
				return err
			})
		}
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	// Bare read: list everything, GET the batches.
	start := time.Now()
	var keys []string
	if err := e.bucket.List(ctx, "", "", true, func(o cloudsync.ObjectInfo) error { keys = append(keys, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bytesRead int
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(e.cfg.Ingest.Concurrency)
	for _, k := range keys {
		if !strings.HasPrefix(k, "verdicts/") {
			continue
		}
		g.Go(func() error {
			data, _, err := e.bucket.Get(gctx, k)
			mu.Lock()
			bytesRead += len(data)
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	bare := time.Since(start)

	c := e.newCompanion(e.cfg)
	defer c.Close()
	res, err := c.Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdicts != stations*batches*perBatch || res.Images != len(keys)-stations*batches {
		t.Fatalf("ingested %+v, want %d verdicts and %d images", res, stations*batches*perBatch, len(keys)-stations*batches)
	}
	vps := float64(res.Verdicts) / res.Elapsed.Seconds()
	ips := float64(res.Images) / res.Elapsed.Seconds()
	t.Logf("ingest of %d verdicts and %d image keys: %v; bare list+get of the same (%d bytes): %v", res.Verdicts, res.Images, res.Elapsed, bytesRead, bare)
	fmt.Printf("BENCH cloud_ingest_verdicts_per_s=%.0f\n", vps)
	fmt.Printf("BENCH cloud_ingest_images_per_s=%.0f\n", ips)
	fmt.Printf("BENCH cloud_ingest_vs_bare_read=%.2f\n", res.Elapsed.Seconds()/bare.Seconds())
	// A second pass over the same bucket finds nothing new: its cost is the listing.
	c.lastFull = time.Now()
	res2, err := c.Ingest(ctx)
	if err != nil || res2.Objects != 0 {
		t.Fatalf("second pass = %+v, %v", res2, err)
	}
	fmt.Printf("BENCH cloud_ingest_idle_pass_ms=%.1f\n", float64(res2.Elapsed.Microseconds())/1000)
}

// Image statistics for the drift watch: 400 PASS images (640x480 JPEG, a
// synthetic part) downloaded, decoded and measured after an ingest pass,
// beside the bare GET of the same objects with the same concurrency.
func TestFiguresImageStats(t *testing.T) {
	if os.Getenv("TAKT_FIGURES") != "1" {
		t.Skip("figures run under make bench (TAKT_FIGURES=1)")
	}
	const n = 400
	e := newEnv(t, false)
	e.cfg.Models[0].Triggers.Drift.Window = n
	f, _, err := synth.RenderPart(synth.RenderOptions{Seed: 7, Width: 640, Height: 480}, 1, synth.None)
	if err != nil {
		t.Fatal(err)
	}
	jpg, err := camera.Encode(f, "jpg", 90)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ps []part
	for i := 1; i <= n; i++ {
		ps = append(ps, part{id: uint64(i), decision: "PASS", score: 0.5, image: jpg})
	}
	e.upload("st1", "part", day, ps)
	c := e.newCompanion(e.cfg)
	defer c.Close()
	if _, err := c.ingest(ctx, true); err != nil {
		t.Fatal(err)
	}
	st, _ := c.index.stats("part")
	keys := st.ImageQueue

	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.cfg.Ingest.Concurrency)
	for _, k := range keys {
		g.Go(func() error { _, _, err := e.bucket.Get(gctx, k); return err })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	bare := time.Since(start)

	start = time.Now()
	done, err := c.updateImageStats(ctx)
	took := time.Since(start)
	if err != nil || done != n {
		t.Fatalf("image statistics of %d images: %d done, %v", n, done, err)
	}
	t.Logf("%d images of %d bytes: statistics %v, bare GET %v", n, len(jpg), took, bare)
	fmt.Printf("BENCH cloud_image_stats_per_s=%.0f\n", float64(n)/took.Seconds())
	fmt.Printf("BENCH cloud_image_stats_vs_bare_get=%.2f\n", took.Seconds()/bare.Seconds())
}
