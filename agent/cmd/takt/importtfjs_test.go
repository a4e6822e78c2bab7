package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTFJS writes a small TF.js graph model as tensorflowjs_converter lays it out: an
// NHWC 72x96 RGB input scaled to -1..1, a strided 3x3 convolution with bias and Relu6
// ("net/conv/Relu6", 36x48x8, uint8-quantized filter) and a global-mean + MatMul head.
func writeTFJS(t *testing.T, dir string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	var shard []byte
	var weights []map[string]any
	var nodes []map[string]any
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	constant := func(name string, shape []int, n int, quant bool) {
		nodes = append(nodes, map[string]any{"name": name, "op": "Const", "attr": map[string]any{"dtype": map[string]any{"type": "DT_FLOAT"}}})
		w := map[string]any{"name": name, "shape": shape, "dtype": "float32"}
		if quant {
			for range n {
				shard = append(shard, uint8(rng.IntN(256)))
			}
			w["quantization"] = map[string]any{"min": -0.5, "scale": 1.0 / 255, "dtype": "uint8"}
		} else {
			for range n {
				shard = binary.LittleEndian.AppendUint32(shard, math.Float32bits(float32(rng.NormFloat64()*0.2)))
			}
		}
		weights = append(weights, w)
	}
	nodes = append(nodes, map[string]any{"name": "input", "op": "Placeholder", "attr": map[string]any{
		"dtype": map[string]any{"type": "DT_FLOAT"},
		"shape": map[string]any{"shape": map[string]any{"dim": []map[string]string{{"size": "-1"}, {"size": "72"}, {"size": "96"}, {"size": "3"}}}}}})
	constant("net/Mul/y", []int{}, 1, false)
	constant("net/conv/w", []int{3, 3, 3, 8}, 3*3*3*8, true)
	constant("net/conv/b", []int{8}, 8, false)
	constant("net/fc/w", []int{8, 2}, 16, false)
	nodes = append(nodes, map[string]any{"name": "net/mean/axes", "op": "Const", "attr": map[string]any{"dtype": map[string]any{"type": "DT_INT32"}}})
	shard = binary.LittleEndian.AppendUint32(shard, 1)
	shard = binary.LittleEndian.AppendUint32(shard, 2)
	weights = append(weights, map[string]any{"name": "net/mean/axes", "shape": []int{2}, "dtype": "int32"})
	nodes = append(nodes,
		map[string]any{"name": "net/Mul", "op": "Mul", "input": []string{"input", "net/Mul/y"}},
		map[string]any{"name": "net/conv/Relu6", "op": "_FusedConv2D", "input": []string{"net/Mul", "net/conv/w", "net/conv/b"}, "attr": map[string]any{
			"strides": map[string]any{"list": map[string]any{"i": []string{"1", "2", "2", "1"}}}, "padding": map[string]any{"s": b64("SAME")},
			"data_format": map[string]any{"s": b64("NHWC")}, "fused_ops": map[string]any{"list": map[string]any{"s": []string{b64("BiasAdd"), b64("Relu6")}}}}},
		map[string]any{"name": "net/mean", "op": "Mean", "input": []string{"net/conv/Relu6", "net/mean/axes"}},
		map[string]any{"name": "net/logits", "op": "MatMul", "input": []string{"net/mean", "net/fc/w"}},
	)
	m := map[string]any{"format": "graph-model", "modelTopology": map[string]any{"node": nodes},
		"weightsManifest": []any{map[string]any{"paths": []string{"group1-shard1of1.bin"}, "weights": weights}}}
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "group1-shard1of1.bin"), shard, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestModelTrainEvalImportTFJS: `takt model import-tfjs` converts a TF.js graph model, and
// `takt model train --backbone` cuts the result at a layer by its TensorFlow name.
func TestModelTrainEvalImportTFJS(t *testing.T) {
	dir := t.TempDir()
	tf, bb := filepath.Join(dir, "tfjs"), filepath.Join(dir, "bb.onnx")
	if err := os.MkdirAll(tf, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTFJS(t, tf)
	out, err := takt(t, "model", "import-tfjs", tf, "--out", bb)
	if err != nil || !strings.Contains(out, "wrote "+bb) {
		t.Fatalf("model import-tfjs: %v\n%s", err, out)
	}
	if out, err := takt(t, "model", "import-tfjs", dir, "--out", bb); err == nil || !strings.Contains(out+err.Error(), "model.json") {
		t.Errorf("model import-tfjs of a folder without model.json: %v\n%s, want an error naming model.json", err, out)
	}
	if out, err := takt(t, "model", "import-tfjs", tf); err == nil || !strings.Contains(out+err.Error(), "--out is required") {
		t.Errorf("model import-tfjs without --out: %v\n%s", err, out)
	}
	if raceEnabled {
		t.Skip("training is ~20x slower under -race; make test runs this test without it")
	}
	data := filepath.Join(dir, "data")
	if out, err := takt(t, "synth", "--out", data, "--good", "5", "--seed", "9"); err != nil {
		t.Fatalf("synth: %v\n%s", err, out)
	}
	m := filepath.Join(dir, "m.onnx")
	out, err = takt(t, "model", "train", "--data", data, "--out", m, "--backbone", bb, "--layer", "net/conv/Relu6")
	if err != nil {
		t.Fatalf("model train --backbone (converted): %v\n%s", err, out)
	}
	if !strings.Contains(out, "method patchcore;") || !strings.Contains(out, "input gray 1x1x72x96") {
		t.Errorf("model train --backbone output: want method patchcore on the converted model's 96x72 input:\n%s", out)
	}
}
