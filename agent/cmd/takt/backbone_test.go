package main

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/onnxgraph"
)

// writeBackbone writes a small RGB classifier-shaped CNN with a fixed 96x72 input:
// conv (stride 2) relu "feat1" -> maxpool -> conv relu "feat2" (24x18) -> global pool "logits".
func writeBackbone(t *testing.T, path string) {
	t.Helper()
	g := onnxgraph.New("cli-backbone")
	g.Input("pixel_values", 1, 3, 72, 96)
	rng := rand.New(rand.NewPCG(5, 6))
	conv := func(name, in string, cin, cout int, stride int64) {
		w := make([]float32, cout*cin*9)
		for i := range w {
			w[i] = float32(rng.NormFloat64() / math.Sqrt(float64(cin*9)))
		}
		g.Initializer(name+".weight", []int64{int64(cout), int64(cin), 3, 3}, w)
		g.Node("Conv", []string{in, name + ".weight"}, []string{name + "_out"}, onnxgraph.Ints("kernel_shape", 3, 3), onnxgraph.Ints("pads", 1, 1, 1, 1), onnxgraph.Ints("strides", stride, stride))
	}
	conv("conv1", "pixel_values", 3, 8, 2)
	g.Node("Relu", []string{"conv1_out"}, []string{"feat1"})
	g.Node("MaxPool", []string{"feat1"}, []string{"pool1"}, onnxgraph.Ints("kernel_shape", 2, 2), onnxgraph.Ints("strides", 2, 2))
	conv("conv2", "pool1", 8, 16, 1)
	g.Node("Relu", []string{"conv2_out"}, []string{"feat2"})
	g.Node("GlobalAveragePool", []string{"feat2"}, []string{"logits"})
	g.Output("logits", 1, 16, 1, 1)
	data, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestModelTrainEvalBackbone: `takt model train --backbone --layer` writes a signed
// bundle whose model takes the backbone's input size, which verify (golden set replay)
// and eval run like any other.
func TestModelTrainEvalBackbone(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~20x slower under -race; make test runs this test without it")
	}
	dir := t.TempDir()
	data, bb, key, bundlePath := filepath.Join(dir, "data"), filepath.Join(dir, "bb.onnx"), filepath.Join(dir, "key"), filepath.Join(dir, "bb.tar")
	writeBackbone(t, bb)
	for _, args := range [][]string{
		{"synth", "--out", data, "--good", "6", "--defective", "4", "--seed", "8"},
		{"model", "keygen", "--out", key},
	} {
		if out, err := takt(t, args...); err != nil {
			t.Fatalf("takt %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	good := filepath.Join(dir, "goodonly")
	if err := os.MkdirAll(good, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(data, "good"), filepath.Join(good, "good")); err != nil {
		t.Fatal(err)
	}
	out, err := takt(t, "model", "train", "--data", good, "--out", bundlePath, "--key", key, "--name", "bb-part",
		"--backbone", bb, "--layer", "feat2", "--backbone-mean", "imagenet", "--backbone-std", "imagenet")
	if err != nil {
		t.Fatalf("model train --backbone: %v\n%s", err, out)
	}
	if !strings.Contains(out, "method patchcore;") || !strings.Contains(out, "input gray 1x1x72x96") {
		t.Errorf("model train --backbone output: want method patchcore and the backbone's 96x72 input:\n%s", out)
	}
	t.Logf("model train --backbone:\n%s", out)
	if out, err := takt(t, "model", "verify", "--key", key+".pub", bundlePath); err != nil || !strings.Contains(out, "golden set 3/3") {
		t.Fatalf("model verify: %v\n%s", err, out)
	}
	b, err := bundle.InspectBundle(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Input.Width != 96 || b.Manifest.Input.Height != 72 {
		t.Errorf("bundle input %+v, want 96x72", b.Manifest.Input)
	}
	out, err = takt(t, "model", "eval", "--bundle", bundlePath, "--key", key+".pub", "--data", data)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || !strings.HasPrefix(lines[len(lines)-1], "auroc=") {
		t.Fatalf("model eval of the backbone bundle: %v\n%s", err, out)
	}

	// With the labeled defects and --with-filter-bank: one model with both extractors and
	// the supervised head, verified and evaluated like any other.
	combo := filepath.Join(dir, "combo.tar")
	out, err = takt(t, "model", "train", "--data", data, "--out", combo, "--key", key, "--name", "bb-fb-part",
		"--backbone", bb, "--layer", "feat2", "--with-filter-bank", "--min-head-defects", "3")
	if err != nil {
		t.Fatalf("model train --with-filter-bank: %v\n%s", err, out)
	}
	if !strings.Contains(out, "method patchcore + supervised head;") || !strings.Contains(out, "cv_auroc_backbone_folds=") || !strings.Contains(out, "input gray 1x1x72x96") {
		t.Errorf("model train --with-filter-bank output: want the supervised patchcore with both extractors' figures at 96x72:\n%s", out)
	}
	if out, err := takt(t, "model", "verify", "--key", key+".pub", combo); err != nil || !strings.Contains(out, "golden set 3/3") {
		t.Fatalf("model verify --with-filter-bank bundle: %v\n%s", err, out)
	}
	out, err = takt(t, "model", "eval", "--bundle", combo, "--key", key+".pub", "--data", data)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || !strings.HasPrefix(lines[len(lines)-1], "auroc=") {
		t.Fatalf("model eval of the --with-filter-bank bundle: %v\n%s", err, out)
	}
}

func TestModelTrainBackboneErrors(t *testing.T) {
	dir := t.TempDir()
	bb, text := filepath.Join(dir, "bb.onnx"), filepath.Join(dir, "notes.onnx")
	writeBackbone(t, bb)
	if err := os.WriteFile(text, []byte("not a model\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := takt(t, "synth", "--out", dir, "--good", "2", "--seed", "2"); err != nil {
		t.Fatalf("synth: %v\n%s", err, out)
	}
	m := filepath.Join(dir, "m.onnx")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--layer", "feat2"}, "need --backbone FILE.onnx"},
		{[]string{"--backbone", filepath.Join(dir, "none.onnx"), "--layer", "feat2"}, "none.onnx"},
		{[]string{"--backbone", text, "--layer", "feat2"}, "not an ONNX model"},
		{[]string{"--backbone", bb, "--layer", "feat"}, `layer "feat" not found among the 6 node outputs; candidates: feat1, feat2`},
		{[]string{"--backbone", bb}, "no layer given to cut at; candidates:"},
		{[]string{"--backbone", bb, "--layer", "logits"}, `layer "logits" is only 1x1 for a 96x72 input`},
		{[]string{"--backbone", bb, "--layer", "feat2", "--backbone-mean", "red"}, `--backbone-mean "red"`},
		{[]string{"--backbone", bb, "--layer", "feat2", "--width", "64"}, "fixed at 96"},
		{[]string{"--backbone", bb, "--layer", "feat2", "--method", "template"}, "features feed patchcore only"},
		{[]string{"--with-filter-bank"}, "need --backbone FILE.onnx"},
		{[]string{"--backbone", bb, "--layer", "feat2", "--with-filter-bank"}, "needs at least 10 labeled defects (min_head_defects), got 0"},
	}
	for _, tt := range tests {
		args := append([]string{"model", "train", "--data", dir, "--out", m}, tt.args...)
		out, err := takt(t, args...)
		if err == nil || !strings.Contains(out+err.Error(), tt.want) {
			t.Errorf("takt %s: got %q / %v, want an error containing %q", strings.Join(args, " "), out, err, tt.want)
		}
	}
}

// TestModelTrainRecommendedBackbone: with labeled defects, `takt model train` takes the
// recommended backbone (found through TAKT_BACKBONE_DIR here, .deps/backbone after make
// build) beside the filter bank by default; --backbone none, good images only, or no
// recommended backbone train the filter bank alone; a broken recommended.json is an error
// naming it.
func TestModelTrainRecommendedBackbone(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~20x slower under -race; make test runs this test without it")
	}
	dir := t.TempDir()
	data, rec, empty := filepath.Join(dir, "data"), filepath.Join(dir, "backbone"), filepath.Join(dir, "empty")
	for _, d := range []string{rec, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeBackbone(t, filepath.Join(rec, "bb.onnx"))
	recJSON := filepath.Join(rec, "recommended.json")
	if err := os.WriteFile(recJSON, []byte(`{"model": "bb.onnx", "layer": "feat2", "source": "a test CNN"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := takt(t, "synth", "--out", data, "--good", "6", "--defective", "4", "--seed", "8"); err != nil {
		t.Fatalf("synth: %v\n%s", err, out)
	}
	goodOnly := filepath.Join(dir, "goodonly")
	if err := os.MkdirAll(goodOnly, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(data, "good"), filepath.Join(goodOnly, "good")); err != nil {
		t.Fatal(err)
	}
	train := func(bbDir, data string, extra ...string) (string, error) {
		t.Setenv("TAKT_BACKBONE_DIR", bbDir)
		args := append([]string{"model", "train", "--data", data, "--out", filepath.Join(dir, "m.onnx"), "--min-head-defects", "3"}, extra...)
		return takt(t, args...)
	}
	out, err := train(rec, data)
	if err != nil {
		t.Fatalf("model train with a recommended backbone: %v\n%s", err, out)
	}
	if !strings.Contains(out, "train: backbone "+filepath.Join(rec, "bb.onnx")+" at feat2 beside the filter bank") ||
		!strings.Contains(out, "cv_auroc_backbone_folds=") || !strings.Contains(out, "with_filter_bank=1") || !strings.Contains(out, "input gray 1x1x72x96") {
		t.Errorf("model train with labels and a recommended backbone: want the backbone beside the filter bank at its 96x72 input:\n%s", out)
	}
	for _, c := range []struct {
		name, bbDir, data string
		extra             []string
		want              string
	}{
		{"--backbone none", rec, data, []string{"--backbone", "none"}, ""},
		{"good images only", rec, goodOnly, nil, ""},
		{"none found", empty, data, nil, "train: no recommended backbone found in " + empty},
	} {
		out, err := train(c.bbDir, c.data, c.extra...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, out)
		}
		if strings.Contains(out, "train: backbone") || strings.Contains(out, "with_filter_bank") || strings.Contains(out, "1x1x72x96") {
			t.Errorf("%s: want the filter bank alone:\n%s", c.name, out)
		}
		if c.want != "" && !strings.Contains(out, c.want) {
			t.Errorf("%s: want %q:\n%s", c.name, c.want, out)
		}
	}
	if err := os.WriteFile(recJSON, []byte(`{"model": "bb.onnx"`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := train(rec, data); err == nil || !strings.Contains(err.Error(), recJSON) || !strings.Contains(err.Error(), "--backbone none") {
		t.Errorf("broken recommended.json: got %v, want an error naming %s and --backbone none\n%s", err, recJSON, out)
	}
}
