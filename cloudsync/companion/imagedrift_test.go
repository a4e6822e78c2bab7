package companion

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/camera/synth"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
)

// Small parts for the image drift test: a drift window needs dozens of
// distinct images, and the renderer is slow under -race.
const smallW, smallH = 128, 96

var smallParts = map[string][]byte{}

// smallPNG renders good part index at 128x96 with its pixels scaled by gain
// (1: as rendered; 0.7: 30% darker, as under a failing lamp).
func smallPNG(t *testing.T, index int, gain float64) []byte {
	t.Helper()
	k := fmt.Sprintf("%d/%g", index, gain)
	partsMu.Lock()
	defer partsMu.Unlock()
	if b, ok := smallParts[k]; ok {
		return b
	}
	f, _, err := synth.RenderPart(synth.RenderOptions{Seed: 7, Width: smallW, Height: smallH}, index, synth.None)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range f.Pix {
		f.Pix[i] = byte(math.Min(255, float64(v)*gain+0.5))
	}
	b, err := camera.Encode(f, "png", 0)
	if err != nil {
		t.Fatal(err)
	}
	smallParts[k] = b
	return b
}

// Drift on image statistics: a model trained on 20 good parts gets an image
// baseline (mean and deviation of brightness, contrast and sharpness) in
// the registry and its manifest. 40 other good parts PASSed on the line
// (normal part-to-part variation) stay under image_threshold and start no
// job; the statistics survive a restart without being computed again; 40
// parts 30% darker start a drift job that names brightness.
func TestImageDrift(t *testing.T) {
	e := newEnv(t, false)
	m := testModel("lit")
	r := synth.MarkingRegion(synth.RenderOptions{Seed: 7, Width: smallW, Height: smallH})
	m.Experiments = []trainer.ExperimentConfig{builtinExp("template-32", "template", map[string]any{"width": 32,
		"ignore": []map[string]float64{{"x0": max(0, float64(r.Min.X)/smallW), "y0": max(0, float64(r.Min.Y)/smallH),
			"x1": min(1, float64(r.Max.X)/smallW), "y1": min(1, float64(r.Max.Y)/smallH)}}})}
	m.Triggers.Labels, m.Triggers.Cooldown = 0, 0
	m.Triggers.Drift = DriftConfig{Threshold: 0, ImageThreshold: 0.5, Window: 40, MinSamples: 30}
	cfg := e.cfg
	cfg.Models = []ModelConfig{m}
	upload := func(first, index, n int, gain float64, version string) {
		var ps []part
		for i := range n {
			ps = append(ps, part{id: uint64(first + i), decision: "PASS", score: 0.5, image: smallPNG(t, index+i, gain), version: version})
		}
		e.upload("st1", "lit", day, ps)
	}
	upload(1, 1, 20, 1, "0.9.0")
	ctx := context.Background()
	c := e.newCompanion(cfg)
	stop := e.run(c)
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := c.Enqueue("lit", TriggerManual, "")
	if err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, c, j.ID, 2*time.Minute)
	idx, _, err := c.readIndex(ctx, "lit")
	if err != nil || j.State != JobSucceeded || idx.Promoted != j.Version || len(idx.Versions[0].ImageBaseline) != 3 {
		t.Fatalf("job %+v, index %+v, %v; want a promoted version with an image baseline of 3 statistics", j, idx, err)
	}
	base := idx.Versions[0].ImageBaseline[statBrightness]
	if base.N != 20 || !(base.Mean > 20 && base.Mean < 235) || idx.Versions[0].Metrics["image_brightness_mean"] != base.Mean {
		t.Errorf("brightness baseline %+v (metrics %v); want the mean of the 20 good images, also in the metrics", base, idx.Versions[0].Metrics)
	}

	upload(101, 21, 40, 1, j.Version) // normal variation
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckTriggers(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := c.Drift(ctx, "lit")
	if err != nil || d.Drifted || len(d.Images) != 3 || len(c.Jobs()) != 1 {
		t.Fatalf("drift after 40 normal parts = %+v, %v, %d jobs; want 3 statistics judged, none drifted, no new job", d, err, len(c.Jobs()))
	}
	for _, x := range d.Images {
		if x.Samples != 40 || x.Reason != "" {
			t.Errorf("%s: %d samples (%s), want 40 judged", x.Statistic, x.Samples, x.Reason)
		}
		t.Logf("normal: %s PSI %.3f (mean %.2f, baseline %.2f)", x.Statistic, x.PSI, x.Recent, x.Baseline)
	}
	stop()

	// A restart: the recent statistics come from the index, the baseline
	// from the registry; nothing is queued to compute again.
	c = e.newCompanion(cfg)
	e.run(c)
	st, _ := c.index.stats("lit")
	d2, err := c.Drift(ctx, "lit")
	if err != nil || len(st.ImageQueue) != 0 || len(d2.Images) != 3 || d2.Images[0].PSI != d.Images[0].PSI || d2.Images[0].Samples != 40 {
		t.Fatalf("after restart: queue %d, drift %+v, %v; want an empty queue and the same PSI %.3f on 40 images", len(st.ImageQueue), d2, err, d.Images[0].PSI)
	}

	upload(201, 21, 40, 0.7, j.Version) // the lamp fails: 30% darker
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckTriggers(ctx); err != nil {
		t.Fatal(err)
	}
	d, _ = c.Drift(ctx, "lit")
	jobs := c.Jobs()
	if !d.Drifted || d.Images[0].Statistic != statBrightness || !d.Images[0].Drifted || len(jobs) != 2 ||
		jobs[1].Trigger != TriggerDrift || !strings.Contains(jobs[1].Reason, "brightness PSI") {
		t.Fatalf("drift after 40 darker parts = %+v; jobs %+v; want brightness drifted and a drift job naming it", d, jobs)
	}
	t.Logf("darker: brightness PSI %.3f (mean %.2f, baseline %.2f); job reason: %s", d.Images[0].PSI, d.Images[0].Recent, d.Images[0].Baseline, jobs[1].Reason)
	if j2 := waitJob(t, c, jobs[1].ID, 2*time.Minute); j2.State != JobSucceeded {
		_, log, _ := c.Job(j2.ID)
		t.Errorf("drift job = %+v, want it to succeed; log:\n%s", j2, log)
	}
}

// The image statistics of known images: a flat gray image, a one-pixel
// checkerboard (PNG), and a flat JPEG (luma plane).
func TestImageStatistics(t *testing.T) {
	enc := func(img image.Image, format string) []byte {
		var b bytes.Buffer
		var err error
		if format == "jpeg" {
			err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 95})
		} else {
			err = png.Encode(&b, img)
		}
		if err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	flat := image.NewGray(image.Rect(0, 0, 40, 30))
	board := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for y := range 30 {
		for x := range 40 {
			flat.Pix[y*40+x] = 90
			if (x+y)%2 == 0 {
				board.Set(x, y, color.White)
			} else {
				board.Set(x, y, color.Black)
			}
		}
	}
	for _, tc := range []struct {
		name string
		data []byte
		want ImageStats
		tol  float64
	}{
		{"flat png", enc(flat, "png"), ImageStats{Brightness: 90}, 1e-9},
		{"checkerboard png", enc(board, "png"), ImageStats{Brightness: 127.5, Contrast: 127.5, Sharpness: 1020}, 1e-9},
		{"flat jpeg", enc(flat, "jpeg"), ImageStats{Brightness: 90}, 1},
	} {
		got, err := imageStats(tc.data)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if math.Abs(got.Brightness-tc.want.Brightness) > tc.tol || math.Abs(got.Contrast-tc.want.Contrast) > tc.tol ||
			math.Abs(got.Sharpness-tc.want.Sharpness) > tc.tol {
			t.Errorf("%s: stats %+v, want %+v (within %g)", tc.name, got, tc.want, tc.tol)
		}
	}
	if _, err := imageStats([]byte("not an image")); err == nil || !strings.Contains(err.Error(), "image statistics") {
		t.Errorf("garbage: %v, want an image statistics error", err)
	}
}

// The image PSI with a baseline of 20 images, as a job has: over 500
// windows of 40 values from the baseline's own distribution, fewer than 3%
// go over the default image_threshold 0.5 (the baseline's estimation error
// from 20 images); a shift of one standard deviation goes over it in more
// than 80%.
func TestImageDriftStatistic(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const trials = 500
	var falseAlarms, caught int
	for range trials {
		var train []ImageStats
		for range 20 {
			train = append(train, ImageStats{Brightness: 120 + 6*rng.NormFloat64()})
		}
		base, err := imageBaseline(train)
		if err != nil {
			t.Fatal(err)
		}
		b := base[statBrightness]
		same, shifted := make([]float64, 40), make([]float64, 40)
		for i := range same {
			same[i] = 120 + 6*rng.NormFloat64()
			shifted[i] = 126 + 6*rng.NormFloat64()
		}
		p, _ := b.psi(same)
		q, _ := b.psi(shifted)
		if p > 0.5 {
			falseAlarms++
		}
		if q > 0.5 {
			caught++
		}
	}
	if falseAlarms > trials*3/100 || caught < trials*8/10 {
		t.Errorf("PSI over 0.5: %d of %d unchanged windows (want < 3%%), %d of %d shifted by one deviation (want > 80%%)",
			falseAlarms, trials, caught, trials)
	}
	t.Logf("unchanged over 0.5: %d/%d; shifted by 1 sd: %d/%d", falseAlarms, trials, caught, trials)
}
