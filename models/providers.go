package models

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Execution providers, in the names the configuration uses.
const (
	ProviderTensorRT = "tensorrt"
	ProviderCUDA     = "cuda"
	ProviderCPU      = "cpu"
)

// ProviderOptions is the execution provider chain of a station and the GPU options.
type ProviderOptions struct {
	// Chain lists providers to try in order, e.g. [tensorrt, cuda, cpu]; default [cpu].
	// The first that loads serves. CPU is always available.
	Chain []string `yaml:"providers"`
	// Require names a provider that must serve: if it cannot, loading fails with
	// ErrProviderUnavailable instead of falling back. With Require: tensorrt an uncached
	// engine is built before loading returns. Empty: fall back, Info.Degraded says so.
	Require string `yaml:"require"`
	// DeviceID is the CUDA device for TensorRT and CUDA.
	DeviceID int `yaml:"device_id"`
	// FP16 lets TensorRT use half precision.
	FP16 bool `yaml:"fp16"`
	// WorkspaceMB caps TensorRT's builder workspace; 0 is ONNX Runtime's default.
	WorkspaceMB int `yaml:"workspace_mb"`
	// EngineCacheDir keeps built TensorRT engines, one folder per EngineCacheKey; empty
	// builds the engine at every start (in the background, see below).
	EngineCacheDir string `yaml:"engine_cache_dir"`
	// TimingCacheDir keeps TensorRT's timing cache, which speeds up builds of other models
	// on the same GPU; empty uses EngineCacheDir.
	TimingCacheDir string `yaml:"timing_cache_dir"`
	// ProgressEvery is how often a TensorRT engine build logs its progress; default 10s.
	ProgressEvery time.Duration `yaml:"progress_every"`
}

func (o ProviderOptions) withDefaults() ProviderOptions {
	if len(o.Chain) == 0 {
		o.Chain = []string{ProviderCPU}
	}
	if o.TimingCacheDir == "" {
		o.TimingCacheDir = o.EngineCacheDir
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 10 * time.Second
	}
	return o
}

// Validate checks the chain and options, naming the configuration key.
func (o ProviderOptions) Validate() error {
	known := []string{ProviderTensorRT, ProviderCUDA, ProviderCPU}
	seen := map[string]bool{}
	for _, p := range o.Chain {
		if !slices.Contains(known, p) {
			return fmt.Errorf("providers: %q is not one of tensorrt, cuda, cpu", p)
		}
		if seen[p] {
			return fmt.Errorf("providers: %q listed twice", p)
		}
		seen[p] = true
	}
	chain := o.withDefaults().Chain
	if o.Require != "" && !slices.Contains(chain, o.Require) {
		return fmt.Errorf("require: %q is not in providers %v", o.Require, chain)
	}
	if o.DeviceID < 0 {
		return fmt.Errorf("device_id: %d must be >= 0", o.DeviceID)
	}
	if o.WorkspaceMB < 0 {
		return fmt.Errorf("workspace_mb: %d must be >= 0", o.WorkspaceMB)
	}
	return nil
}

// ProviderAttempt is one provider the chain tried.
type ProviderAttempt struct {
	Provider string
	Err      string // why it does not serve; "" for the one that does
	// Background is true for a TensorRT engine build started in the background.
	Background bool
}

// EngineCacheKey names a TensorRT engine: engines are specific to the model, the ONNX
// Runtime and TensorRT versions, the GPU and the precision, so a change of any of them
// builds a new engine instead of loading a stale one.
func EngineCacheKey(modelSHA256, ortVersion, trtVersion, gpu string, fp16 bool) string {
	h := sha256.New()
	fmt.Fprintf(h, "model=%s\nort=%s\ntrt=%s\ngpu=%s\nfp16=%v\n", modelSHA256, ortVersion, trtVersion, gpu, fp16)
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// engineMarker is written into an engine cache folder once the engine is built.
const engineMarker = "takt-engine.json"

var hostProbe struct {
	once     sync.Once
	trt, gpu string
}

// hostTensorRT returns the TensorRT version and GPU of this machine, detected once.
func hostTensorRT() (trt, gpu string) {
	hostProbe.once.Do(func() {
		root := os.DirFS("/")
		dirs := []string{"usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib", "usr/local/lib",
			"usr/local/cuda/lib64", "usr/local/cuda/targets/aarch64-linux/lib", "usr/local/tensorrt/lib", "usr/lib/takt/lib"}
		for _, d := range strings.Split(os.Getenv("LD_LIBRARY_PATH"), ":") {
			if strings.HasPrefix(d, "/") {
				dirs = append([]string{strings.TrimPrefix(path.Clean(d), "/")}, dirs...)
			}
		}
		hostProbe.trt = detectTensorRT(root, dirs)
		hostProbe.gpu = detectGPU(root)
	})
	return hostProbe.trt, hostProbe.gpu
}

var nvinferRE = regexp.MustCompile(`^libnvinfer\.so\.(\d+(?:\.\d+)*)$`)

// detectTensorRT finds the most precise libnvinfer.so.X[.Y.Z] version in dirs of root;
// "none" when there is none.
func detectTensorRT(root fs.FS, dirs []string) string {
	best := ""
	for _, d := range dirs {
		entries, err := fs.ReadDir(root, d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if m := nvinferRE.FindStringSubmatch(e.Name()); m != nil && len(m[1]) > len(best) {
				best = m[1]
			}
		}
		if best != "" {
			return best
		}
	}
	return "none"
}

// detectGPU names the GPU: the "Model:" of the first NVIDIA GPU in
// /proc/driver/nvidia/gpus/*/information, else a Jetson's /proc/device-tree/model;
// "none" when neither exists.
func detectGPU(root fs.FS) string {
	if dirs, err := fs.ReadDir(root, "proc/driver/nvidia/gpus"); err == nil {
		for _, d := range dirs {
			data, err := fs.ReadFile(root, path.Join("proc/driver/nvidia/gpus", d.Name(), "information"))
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "Model" {
					return strings.TrimSpace(v)
				}
			}
		}
	}
	if data, err := fs.ReadFile(root, "proc/device-tree/model"); err == nil {
		if m := strings.TrimSpace(strings.TrimRight(string(data), "\x00")); m != "" {
			return m
		}
	}
	return "none"
}

// BuildStatus is the state of a background TensorRT engine build.
type BuildStatus struct {
	Active   bool          // building now
	Started  time.Time     // zero when no build ran
	Elapsed  time.Duration // so far, or total when done
	Done     bool          // built and adopted (the Runtime serves on TensorRT)
	Err      string        // the build failed
	CacheDir string        // where the engine goes
}
