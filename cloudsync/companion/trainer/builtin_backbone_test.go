package trainer

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/models/onnxgraph"
	"go.yaml.in/yaml/v3"
)

// writeTestBackbone writes a small RGB CNN with a fixed 96x72 input and a "feat" map at
// stride 2, with recommended.json naming it, into dir.
func writeTestBackbone(t *testing.T, dir string) {
	t.Helper()
	g := onnxgraph.New("test-backbone")
	g.Input("input", 1, 3, 72, 96)
	rng := rand.New(rand.NewPCG(3, 4))
	w := make([]float32, 8*3*9)
	for i := range w {
		w[i] = float32(rng.NormFloat64() / 5)
	}
	g.Initializer("conv.weight", []int64{8, 3, 3, 3}, w)
	g.Node("Conv", []string{"input", "conv.weight"}, []string{"conv_out"}, onnxgraph.Ints("kernel_shape", 3, 3),
		onnxgraph.Ints("pads", 1, 1, 1, 1), onnxgraph.Ints("strides", 2, 2))
	g.Node("Relu", []string{"conv_out"}, []string{"feat"})
	g.Node("GlobalAveragePool", []string{"feat"}, []string{"logits"})
	g.Output("logits", 1, 8, 1, 1)
	data, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bb.onnx"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "recommended.json"), []byte(`{"model": "bb.onnx", "layer": "feat"}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBuiltinRecommendedBackbone: a patchcore experiment with enough labelled defects
// trains with the recommended backbone beside the filter bank, as takt model train does;
// backbone: none, or a width, trains the filter bank alone; another value is refused.
func TestBuiltinRecommendedBackbone(t *testing.T) {
	dir := t.TempDir()
	parts, data, bb := filepath.Join(dir, "parts"), filepath.Join(dir, "data"), filepath.Join(dir, "backbone")
	if err := os.MkdirAll(bb, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestBackbone(t, bb)
	t.Setenv("TAKT_BACKBONE_DIR", bb)
	if _, err := synth.Generate(synth.Options{Out: parts, Seed: 4, Good: 6, Defective: 4, Width: 320, Height: 240}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{ClassGood, ClassDefect} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(parts)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		class := ClassDefect
		if e.Name() == ClassGood {
			class = ClassGood
		}
		files, _ := filepath.Glob(filepath.Join(parts, e.Name(), "*.png"))
		for _, f := range files {
			if err := os.Rename(f, filepath.Join(data, class, e.Name()+"-"+filepath.Base(f))); err != nil {
				t.Fatal(err)
			}
		}
	}
	train := func(options string) (string, *Candidate, error) {
		var e ExperimentConfig
		if err := yaml.Unmarshal([]byte("{name: p, trainer: builtin, method: patchcore, options: "+options+"}"), &e); err != nil {
			t.Fatal(err)
		}
		b, err := builtinTrainer(e)
		if err != nil {
			return "", nil, err
		}
		var log bytes.Buffer
		c, err := b.Train(context.Background(), TrainInput{Data: data, Name: "p", Version: "1.0.0", Threads: 2}, &log)
		return log.String(), c, err
	}
	log, c, err := train("{min_head_defects: 3}")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if !strings.Contains(log, "backbone "+filepath.Join(bb, "bb.onnx")+" at feat beside the filter bank") ||
		c.Manifest.Metrics["with_filter_bank"] != 1 || c.Manifest.Input.Width != 96 || c.Manifest.Input.Height != 72 {
		t.Errorf("with labels and a recommended backbone: metrics %v, input %+v; want the backbone beside the filter bank at 96x72\n%s",
			c.Manifest.Metrics, c.Manifest.Input, log)
	}
	for _, options := range []string{"{min_head_defects: 3, backbone: none}", "{min_head_defects: 3, width: 64}"} {
		log, c, err := train(options)
		if err != nil {
			t.Fatalf("%s: %v\n%s", options, err, log)
		}
		if strings.Contains(log, "beside the filter bank") || c.Manifest.Metrics["with_filter_bank"] != 0 {
			t.Errorf("%s: want the filter bank alone\n%s", options, log)
		}
	}
	if _, _, err := train("{backbone: mobilenet}"); err == nil || !strings.Contains(err.Error(), `backbone "mobilenet": want auto or none`) {
		t.Errorf("backbone mobilenet: got %v, want an error naming it", err)
	}
}
