package companion

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/cloudsync/companion/trainer"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
)

// faintPNG renders part index with a faint defect: the good part blended
// alpha of the way towards the same part with the defect drawn on it.
func faintPNG(t *testing.T, index int, kind synth.Defect, alpha float64) []byte {
	t.Helper()
	o := synth.RenderOptions{Seed: 7, Width: partW, Height: partH}
	g, _, err := synth.RenderPart(o, index, synth.None)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := synth.RenderPart(o, index, kind)
	if err != nil {
		t.Fatal(err)
	}
	f := g
	f.Pix = make([]byte, len(g.Pix))
	for i := range g.Pix {
		f.Pix[i] = byte(float64(g.Pix[i]) + alpha*(float64(d.Pix[i])-float64(g.Pix[i])) + 0.5)
	}
	b, err := camera.Encode(f, "png", 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bundleScores runs a signed bundle of the registry on PNG images.
func bundleScores(t *testing.T, c *Companion, model, version string, pngs [][]byte) (scores []float64, threshold float64, m bundle.Manifest) {
	t.Helper()
	data, _, err := c.bucket.Get(context.Background(), BundleKey(model, version))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, p := range pngs {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d.png", i)), p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	frames, err := trainer.ReadImages(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.ReadBundle(bytes.NewReader(data), c.keys)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := models.NewRuntime(context.Background(), b, models.RuntimeOptions{Warmup: -1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for _, f := range frames {
		r, err := rt.Infer(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		scores = append(scores, r.Score)
	}
	return scores, rt.Info().Threshold, *b.Manifest
}

// Operator labels feed training. A good part the station rejected and the
// operator labelled false_reject is a good training image. A model trained
// on good parts alone lets
// faint cracks through (their scores are under its threshold, which sits a
// margin above the good parts'); the operator labels those escapes
// false_accept; the labels trigger a job whose builtin trainer gets the
// labelled escapes as defects (those the split puts on its training side; the others are in the
// validation set): the threshold moves to the best F1, the new model
// catches validation escapes the promoted one missed, and is promoted. The
// bundle's manifest says how many defect images trained it.
func TestLabelsFeedTraining(t *testing.T) {
	e := newEnv(t, false)
	// The escapes are faint cracks inside the good parts' spread: only a threshold that
	// follows the labelled defects (best F1) catches them; the default false-reject
	// budget would keep them passing (TestLabelsKeepFalseRejectBudget).
	e.cfg.Models[0].Experiments = []trainer.ExperimentConfig{builtinExp("template-64", "template",
		map[string]any{"width": 64, "ignore": []map[string]float64{markingFractions()}, "threshold_rule": "best-f1"})}
	var ps []part
	for i := 1; i <= 20; i++ {
		ps = append(ps, part{id: uint64(i), decision: "PASS", score: 0.5, image: partPNG(t, i, synth.None)})
	}
	// And a good part the model rejected, labelled false_reject: a good image.
	ps = append(ps, part{id: 99, decision: "FAIL", score: 3, image: partPNG(t, 21, synth.None)})
	e.upload("st1", "part", day, ps)
	e.label("st1", day, 99, 50, "false_reject")
	ctx := context.Background()
	c := e.newCompanion(e.cfg)
	e.run(c)
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	j1, err := c.Enqueue("part", TriggerManual, "good parts only")
	if err != nil {
		t.Fatal(err)
	}
	j1 = waitJob(t, c, j1.ID, 2*time.Minute)
	if j1.State != JobSucceeded || !j1.Promoted || j1.Dataset.TrainDefect+j1.Dataset.ValDefect != 0 ||
		j1.Dataset.TrainGood+j1.Dataset.ValGood != 21 || j1.Dataset.Labels != 1 {
		t.Fatalf("job 1 = %+v; want promoted, trained on 21 good parts (the false_reject one among them) only", j1)
	}

	// The faint cracks the promoted model PASSes: the escapes.
	var escapes [][]byte
	var candidates [][]byte
	for i := range 16 {
		candidates = append(candidates, faintPNG(t, 300+i, synth.Crack, 0.25))
	}
	scores, th1, m1 := bundleScores(t, c, "part", j1.Version, candidates)
	for i, s := range scores {
		if s <= th1 {
			escapes = append(escapes, candidates[i])
		}
	}
	if m1.Metrics["defect_images"] != 0 || len(escapes) < 8 {
		t.Fatalf("model %s (defect_images %v, threshold %.3f) PASSes %d of 16 faint cracks (scores %.3v); want at least 8 escapes",
			j1.Version, m1.Metrics["defect_images"], th1, len(escapes), scores)
	}
	var es []part
	for i, img := range escapes {
		es = append(es, part{id: uint64(100 + i), decision: "PASS", score: 0.9, image: img, version: j1.Version})
	}
	e.upload("st1", "part", day, es)
	for i := range escapes {
		e.label("st1", day, uint64(100+i), uint64(i+1), "false_accept")
	}
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckTriggers(ctx); err != nil {
		t.Fatal(err)
	}
	var j2 Job
	for _, j := range c.Jobs() {
		if j.ID != j1.ID {
			j2 = j
		}
	}
	if j2.Trigger != TriggerLabels {
		t.Fatalf("jobs after %d false_accept labels = %+v; want a labels job", len(escapes), c.Jobs())
	}
	j2 = waitJob(t, c, j2.ID, 2*time.Minute)
	_, log, _ := c.Job(j2.ID)
	if j2.State != JobSucceeded || j2.Dataset.TrainDefect < 2 || j2.Dataset.ValDefect < 2 || j2.Dataset.Labels != len(escapes)+1 ||
		j2.Dataset.TrainGood+j2.Dataset.ValGood != 21 || j2.Dataset.TrainDefect+j2.Dataset.ValDefect != len(escapes) {
		t.Fatalf("job 2 = %+v; want succeeded, the same 21 good images, the %d escapes as defects on both sides of the split; log:\n%s", j2, len(escapes), log)
	}
	if !strings.Contains(log, fmt.Sprintf("%d defect images", j2.Dataset.TrainDefect)) {
		t.Errorf("job 2 log does not show the trainer reading %d defect images:\n%s", j2.Dataset.TrainDefect, log)
	}
	win := j2.Experiments[0].Score
	if j2.Current == nil || j2.Current.F1 != 0 || win.F1 <= 0 || !j2.Promoted {
		t.Fatalf("job 2: promoted %s F1 %v on the validation escapes, new F1 %v, promoted=%v; want the old one to miss them all "+
			"and the new one to catch some and be promoted; log:\n%s", j2.CurrentVersion, j2.Current, win, j2.Promoted, log)
	}
	_, th2, m2 := bundleScores(t, c, "part", j2.Version, escapes[:1])
	if m2.Metrics["defect_images"] != float64(j2.Dataset.TrainDefect) || m2.Metrics["cv_f1"] <= 0 || !(th2 < th1) {
		t.Errorf("bundle %s: defect_images %v, cv_f1 %v, threshold %.3f; want %d defects, an F1, a threshold under %.3f",
			j2.Version, m2.Metrics["defect_images"], m2.Metrics["cv_f1"], th2, j2.Dataset.TrainDefect, th1)
	}
	t.Logf("%d of 16 faint cracks escaped; trained on %d; threshold %.3f -> %.3f; validation F1 %.3f -> %.3f, FPR %.3f -> %.3f, AUROC %.3f -> %.3f on %d good + %d labelled escapes",
		len(escapes), j2.Dataset.TrainDefect, th1, th2, j2.Current.F1, win.F1, j2.Current.FPR, win.FPR, j2.Current.AUROC, win.AUROC, win.Good, win.Defect)
}
