package models

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestProviderOptionsValidate(t *testing.T) {
	tests := []struct {
		opts ProviderOptions
		want string
	}{
		{ProviderOptions{}, ""},
		{ProviderOptions{Chain: []string{"tensorrt", "cuda", "cpu"}, Require: "tensorrt"}, ""},
		{ProviderOptions{Chain: []string{"gpu"}}, `providers: "gpu" is not one of tensorrt, cuda, cpu`},
		{ProviderOptions{Chain: []string{"cpu", "cpu"}}, `"cpu" listed twice`},
		{ProviderOptions{Require: "cuda"}, `require: "cuda" is not in providers [cpu]`},
		{ProviderOptions{DeviceID: -1}, "device_id: -1"},
	}
	for _, tt := range tests {
		err := tt.opts.Validate()
		if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want))) {
			t.Errorf("%+v: Validate: got %v, want %q", tt.opts, err, tt.want)
		}
	}
}

func TestEngineCacheKey(t *testing.T) {
	base := EngineCacheKey("sha", "1.24.1", "10.3.0", "Orin", true)
	if len(base) != 24 || base != EngineCacheKey("sha", "1.24.1", "10.3.0", "Orin", true) {
		t.Fatalf("key %q: want 24 hex digits, stable", base)
	}
	for _, other := range []string{
		EngineCacheKey("sha2", "1.24.1", "10.3.0", "Orin", true),
		EngineCacheKey("sha", "1.24.2", "10.3.0", "Orin", true),
		EngineCacheKey("sha", "1.24.1", "10.4.0", "Orin", true),
		EngineCacheKey("sha", "1.24.1", "10.3.0", "RTX A2000", true),
		EngineCacheKey("sha", "1.24.1", "10.3.0", "Orin", false),
	} {
		if other == base {
			t.Errorf("a changed model, runtime, TensorRT, GPU or precision gave the same key %s", base)
		}
	}
}

func TestDetectTensorRTAndGPU(t *testing.T) {
	dgpu := fstest.MapFS{
		"usr/lib/x86_64-linux-gnu/libnvinfer.so":           {},
		"usr/lib/x86_64-linux-gnu/libnvinfer.so.10":        {},
		"usr/lib/x86_64-linux-gnu/libnvinfer.so.10.3.0":    {},
		"proc/driver/nvidia/gpus/0000:01:00.0/information": {Data: []byte("Model: \t\t NVIDIA RTX A2000\nIRQ: 100\n")},
	}
	jetson := fstest.MapFS{
		"usr/lib/aarch64-linux-gnu/libnvinfer.so.8.6.2": {},
		"proc/device-tree/model":                        {Data: []byte("NVIDIA Jetson Orin Nano Developer Kit\x00")},
	}
	dirs := []string{"usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu"}
	tests := []struct {
		name     string
		fs       fstest.MapFS
		trt, gpu string
	}{
		{"dGPU", dgpu, "10.3.0", "NVIDIA RTX A2000"},
		{"Jetson", jetson, "8.6.2", "NVIDIA Jetson Orin Nano Developer Kit"},
		{"CPU only", fstest.MapFS{}, "none", "none"},
	}
	for _, tt := range tests {
		if got := detectTensorRT(tt.fs, dirs); got != tt.trt {
			t.Errorf("%s: TensorRT %q, want %q", tt.name, got, tt.trt)
		}
		if got := detectGPU(tt.fs); got != tt.gpu {
			t.Errorf("%s: GPU %q, want %q", tt.name, got, tt.gpu)
		}
	}
}
