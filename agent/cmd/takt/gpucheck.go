package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/models"
)

// gpuCheckTolerance is how far a GPU provider's score may be from the CPU's on the same
// frame: |gpu - cpu| <= tolerance * max(1, |cpu|). FP32 TensorRT and CUDA kernels sum in a
// different order than the CPU's (and TensorRT fuses layers), which moves scores in the
// fifth or sixth digit; FP16 moves them in the third.
var gpuCheckTolerance = map[bool]float64{false: 1e-3, true: 1e-2} // by FP16

// providerRun is what gpu-check measured on one provider.
type providerRun struct {
	provider  string
	err       error         // the provider did not load or run
	load      time.Duration // LoadRuntime, engine build included
	scores    []float64     // one per frame
	lat       []time.Duration
	maxDiff   float64 // largest |score - cpu score| relative to max(1, |cpu|)
	decisions int     // frames whose decision (score > threshold) differs from the CPU's
}

// cmdGPUCheck runs a model on the CPU, CUDA and TensorRT with the agent's runtime and
// provider chain, checks the GPU scores against the CPU's and prints per-provider latency
// at batch 1. packaging/gpu-check.sh reports the machine's GPU stack and calls it.
func cmdGPUCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gpu-check", stderr)
	modelPath := fs.String("model", "", "ONNX model to check (the starter model from takt model train)")
	cacheDir := fs.String("engine-cache", "", "TensorRT engine cache folder (model.gpu.engine_cache); required")
	runs := fs.Int("runs", 200, "timed runs per provider, one frame at a time, after the warm-up")
	fp16 := fs.Bool("fp16", false, "let TensorRT use half precision (model.gpu.fp16); widens the tolerance")
	device := fs.Int("device", 0, "CUDA device id")
	requireGPU := fs.Bool("require-gpu", false, "fail unless both CUDA and TensorRT sessions load and run")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *modelPath == "" || *cacheDir == "" || fs.NArg() == 0 || *runs < 1 {
		fs.Usage()
		return cli.Usagef("gpu-check: give --model M, --engine-cache DIR, --runs >= 1 and at least one image")
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return fmt.Errorf("gpu-check: %w", err)
	}
	var frames []camera.Frame
	for _, path := range fs.Args() {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("gpu-check: %w", err)
		}
		f, err := models.DecodeImage(data)
		if err != nil {
			return fmt.Errorf("gpu-check: image %s: %w", path, err)
		}
		frames = append(frames, f)
	}
	if err := os.MkdirAll(*cacheDir, 0o750); err != nil {
		return fmt.Errorf("gpu-check: engine cache %s: %w", *cacheDir, err)
	}
	fmt.Fprintf(stdout, "onnx runtime %s, model %s, %d frames, %d timed runs per provider at batch 1\n",
		models.ONNXRuntimeVersion(), *modelPath, len(frames), *runs)

	gpu := models.ProviderOptions{DeviceID: *device, FP16: *fp16, EngineCacheDir: *cacheDir}
	var threshold float64
	check := func(provider string) providerRun {
		opts := models.RuntimeOptions{Providers: gpu}
		opts.Providers.Chain, opts.Providers.Require = []string{provider}, provider
		pr := providerRun{provider: provider}
		start := time.Now()
		r, err := models.LoadRuntime(*modelPath, opts)
		pr.load = time.Since(start)
		if err != nil {
			pr.err = err
			return pr
		}
		defer r.Close()
		if got := r.Info().Provider; got != provider {
			pr.err = fmt.Errorf("session runs on %s, want %s", got, provider)
			return pr
		}
		threshold = r.Info().Threshold
		ctx := context.Background()
		for i, f := range frames {
			res, err := r.Infer(ctx, f)
			if err != nil {
				pr.err = fmt.Errorf("frame %s: %w", fs.Arg(i), err)
				return pr
			}
			pr.scores = append(pr.scores, res.Score)
		}
		for i := range *runs {
			t0 := time.Now()
			if _, err := r.Infer(ctx, frames[i%len(frames)]); err != nil {
				pr.err = fmt.Errorf("timed run %d: %w", i, err)
				return pr
			}
			pr.lat = append(pr.lat, time.Since(t0))
		}
		return pr
	}

	cpu := check(models.ProviderCPU)
	if cpu.err != nil {
		return fmt.Errorf("gpu-check: cpu session on %s: %w", *modelPath, cpu.err)
	}
	tol := gpuCheckTolerance[*fp16]
	results := []providerRun{cpu}
	var failures []string
	for _, p := range []string{models.ProviderCUDA, models.ProviderTensorRT} {
		pr := check(p)
		if pr.err == nil {
			for i, s := range pr.scores {
				want := cpu.scores[i]
				d := math.Abs(s-want) / max(1, math.Abs(want))
				if math.IsNaN(s) != math.IsNaN(want) {
					d = math.Inf(1)
				}
				pr.maxDiff = max(pr.maxDiff, d)
				if (s > threshold) != (want > threshold) {
					pr.decisions++
				}
			}
			if pr.maxDiff > tol || pr.decisions > 0 {
				failures = append(failures, fmt.Sprintf("%s scores differ from the cpu's by up to %.2g (tolerance %.0g), %d decisions differ", p, pr.maxDiff, tol, pr.decisions))
			}
		} else if *requireGPU || !errors.Is(pr.err, models.ErrProviderUnavailable) {
			failures = append(failures, fmt.Sprintf("%s: %v", p, pr.err))
		}
		results = append(results, pr)
	}

	fmt.Fprintf(stdout, "%-9s %-11s %10s %9s %9s %12s  %s\n", "provider", "state", "load", "p50_ms", "p99_ms", "max_diff", "note")
	for _, pr := range results {
		if pr.err != nil {
			fmt.Fprintf(stdout, "%-9s %-11s %10s %9s %9s %12s  %s\n", pr.provider, "unavailable", pr.load.Round(time.Millisecond), "-", "-", "-", oneLine(pr.err))
			continue
		}
		note := ""
		switch pr.provider {
		case models.ProviderCPU:
			note = "reference"
		case models.ProviderTensorRT:
			note = "engine cache " + engineFolders(*cacheDir)
		}
		fmt.Fprintf(stdout, "%-9s %-11s %10s %9.3f %9.3f %12.2g  %s\n", pr.provider, "ok", pr.load.Round(time.Millisecond),
			msOf(quantileD(pr.lat, 0.50)), msOf(quantileD(pr.lat, 0.99)), pr.maxDiff, note)
	}
	fmt.Fprintf(stdout, "tolerance: |score - cpu| <= %.0g x max(1, |cpu|) on every frame, and the same decision at threshold %g\n", tol, threshold)
	if len(failures) > 0 {
		return fmt.Errorf("gpu-check: %s", strings.Join(failures, "; "))
	}
	return nil
}

// engineFolders names the engine folders in the cache, or says it is empty.
func engineFolders(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Sprintf("%s unreadable: %v", dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, filepath.Join(dir, e.Name()))
		}
	}
	if len(names) == 0 {
		return dir + " (empty)"
	}
	return strings.Join(names, ", ")
}

func quantileD(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(math.Ceil(q*float64(len(s))))-1]
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// oneLine keeps the first line of an error, which is where ONNX Runtime says what failed.
func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
