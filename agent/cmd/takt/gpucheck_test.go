package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models"
)

// On a CPU-only ONNX Runtime (this repository's), gpu-check scores on the CPU, reports CUDA
// and TensorRT as unavailable with ONNX Runtime's reason, and fails only when asked to
// require them.
func TestGPUCheckWithoutGPU(t *testing.T) {
	lib, err := models.FindONNXRuntime()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(lib), "libonnxruntime_providers_shared.so")); err == nil {
		t.Skipf("%s has GPU providers beside it: packaging/gpu-check.sh checks that machine", lib)
	}
	dir := t.TempDir()
	train, line, model := filepath.Join(dir, "train"), filepath.Join(dir, "line"), filepath.Join(dir, "model.onnx")
	for _, args := range [][]string{
		{"synth", "--out", train, "--good", "8", "--seed", "5", "--first", "1001"},
		{"synth", "--out", line, "--layout", "line", "--good", "2", "--defective", "1", "--seed", "5", "--first", "1009"},
		{"model", "train", "--data", train, "--out", model, "--name", "gpu-check", "--version", "1.0.0", "--method", "template"},
	} {
		if out, err := takt(t, args...); err != nil {
			t.Fatalf("takt %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	images, err := filepath.Glob(filepath.Join(line, "line", "*.png"))
	if err != nil || len(images) != 3 {
		t.Fatalf("images of the line: %v, %v; want 3", images, err)
	}
	args := append([]string{"gpu-check", "--model", model, "--engine-cache", t.TempDir(), "--runs", "5"}, images...)
	out, err := takt(t, args...)
	if err != nil {
		t.Fatalf("gpu-check: %v\n%s", err, out)
	}
	for _, want := range []string{"\ncpu       ok ", "\ncuda      unavailable ", "\ntensorrt  unavailable ", "Failed to load library", "tolerance: |score - cpu| <= 0.001"} {
		if !strings.Contains(out, want) {
			t.Errorf("gpu-check output lacks %q:\n%s", want, out)
		}
	}
	out, err = takt(t, append([]string{"gpu-check", "--require-gpu"}, args[1:]...)...)
	if err == nil || !strings.Contains(err.Error(), "cuda:") || !strings.Contains(err.Error(), "tensorrt:") {
		t.Errorf("gpu-check --require-gpu on a CPU-only runtime = %v, want an error naming cuda and tensorrt\n%s", err, out)
	}
}
