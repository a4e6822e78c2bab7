//go:build cgo

package models

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/internal/modeltest"
	"github.com/takt-edge/takt/models/onnxgraph"
)

func TestAnomalibExportLoadsWithManifestOnly(t *testing.T) {
	// A uniform BGR frame: every pixel (b, g, r).
	b, g, r := 40.0, 120.0, 200.0
	var want float64
	for c, v := range []float64{r, g, b} { // tensor channels R, G, B
		x := (v/255 - modeltest.ImageNetMean[c]) / modeltest.ImageNetStd[c]
		want += (x - 0.5) * (x - 0.5) / 3
	}
	tests := []struct {
		name    string
		onnx    []byte
		w, h    int
		wantMap [2]int
	}{
		{"fixed 32x24", modeltest.AnomalibModel(t, 24, 32, false), 0, 0, [2]int{32, 24}},
		{"dynamic axes given by the manifest", modeltest.AnomalibModel(t, 1, 1, true), 40, 30, [2]int{40, 30}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := modeltest.AnomalibManifest()
			m.Input.Width, m.Input.Height = tt.w, tt.h
			rt := runtimeOf(t, m, tt.onnx, RuntimeOptions{ReturnMap: true})
			info := rt.Info()
			if info.MapWidth != tt.wantMap[0] || info.MapHeight != tt.wantMap[1] || info.Color != bundle.ColorRGB {
				t.Fatalf("Info: map %dx%d color %s, want %dx%d rgb", info.MapWidth, info.MapHeight, info.Color, tt.wantMap[0], tt.wantMap[1])
			}
			res, err := rt.Infer(context.Background(), modeltest.Uniform(64, 48, byte(b), byte(g), byte(r)))
			if err != nil {
				t.Fatalf("Infer: %v", err)
			}
			if math.Abs(res.Score-want) > 1e-4 {
				t.Errorf("score: got %.6f, want %.6f (ImageNet-normalized R, G, B planes)", res.Score, want)
			}
			if res.Map == nil || len(res.Map.Values) != tt.wantMap[0]*tt.wantMap[1] || math.Abs(float64(res.Map.Values[7])-want) > 1e-4 {
				t.Errorf("map: got %v values, want %d values of %.6f", len(res.Map.Values), tt.wantMap[0]*tt.wantMap[1], want)
			}
		})
	}
	// Without a manifest, the plain loader finds pred_score too (no normalization then).
	rt, err := LoadRuntime(modeltest.WriteModel(t, modeltest.AnomalibModel(t, 24, 32, false)), RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("LoadRuntime of an anomalib export: %v", err)
	}
	defer rt.Close()
	if info := rt.Info(); info.MapWidth != 32 {
		t.Errorf("plain anomalib: map width %d, want 32", info.MapWidth)
	}
}

func TestClassifierLoadsWithManifestOnly(t *testing.T) {
	pGood := math.Exp(4) / (math.Exp(4) + 2) // softmax([4,0,0])[0]
	pOther := 1 / (math.Exp(4) + 2)
	for _, softmaxInGraph := range []bool{true, false} {
		t.Run("softmax in graph "+strconv.FormatBool(softmaxInGraph), func(t *testing.T) {
			rt := runtimeOf(t, modeltest.ClassifierManifest(softmaxInGraph), modeltest.ClassifierModel(t, softmaxInGraph), RuntimeOptions{})
			if info := rt.Info(); info.Classes != 3 || info.Task != bundle.TaskClassification || info.MapWidth != 0 {
				t.Fatalf("Info: %+v, want 3 classes, classification, no map", info)
			}
			tests := []struct {
				name      string
				bgr       [3]byte
				class     string
				score     float64
				confident float64
			}{
				{"red part is good", [3]byte{0, 0, 255}, "good", 1 - pGood, pGood},
				{"green part is a scratch", [3]byte{0, 255, 0}, "scratch", 1 - pOther, pGood},
				{"blue part is a dent", [3]byte{255, 0, 0}, "dent", 1 - pOther, pGood},
			}
			for _, tt := range tests {
				res, err := rt.Infer(context.Background(), modeltest.Uniform(16, 16, tt.bgr[0], tt.bgr[1], tt.bgr[2]))
				if err != nil {
					t.Fatalf("%s: Infer: %v", tt.name, err)
				}
				if res.Class != tt.class || math.Abs(res.Score-tt.score) > 1e-5 || math.Abs(res.Confidence-tt.confident) > 1e-5 {
					t.Errorf("%s: got class %q score %.5f confidence %.5f, want %q %.5f %.5f",
						tt.name, res.Class, res.Score, res.Confidence, tt.class, tt.score, tt.confident)
				}
			}
		})
	}
	// A classifier whose class count disagrees with the labels is refused.
	m := modeltest.ClassifierManifest(true)
	m.Outputs.Labels = []string{"good", "bad"}
	h, _ := bundle.InspectModel(modeltest.ClassifierModel(t, true))
	m.Format, m.Files = bundle.BundleFormat, map[string]string{"model.onnx": strings.Repeat("0", 64)}
	if _, err := bundle.ManifestSpec(h, &m); !errors.Is(err, bundle.ErrUnsupportedModel) || !strings.Contains(err.Error(), `want float32 [1,2] or [2], one score per label ["good" "bad"]`) {
		t.Errorf("2 labels for 3 classes: got %v, want ErrUnsupportedModel naming the labels", err)
	}
}

func TestPreprocessLayoutsAndResizeModes(t *testing.T) {
	t.Run("NHWC, BGR order, mean and std", func(t *testing.T) {
		onnx := modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("x", 1, 4, 4, 3)
			g.Initializer("w", []int64{1, 1, 1, 3}, []float32{1, 10, 100})
			g.Node("Mul", []string{"x", "w"}, []string{"xw"})
			g.Node("ReduceMean", []string{"xw"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
			g.Output("score", 1)
		})
		m := bundle.Manifest{Name: "nhwc", Version: "1.0.0", Task: bundle.TaskAnomaly, Opset: 17,
			Input:   bundle.InputSpec{Layout: bundle.LayoutNHWC, Color: bundle.ColorBGR, Mean: []float64{0.1, 0.2, 0.3}, Std: []float64{0.5, 0.25, 0.125}},
			Outputs: bundle.OutputSpec{Score: "score"}, Thresholds: bundle.Thresholds{Fail: 1}}
		rt := runtimeOf(t, m, onnx, RuntimeOptions{})
		res, err := rt.Infer(context.Background(), modeltest.Uniform(8, 8, 10, 20, 30))
		if err != nil {
			t.Fatalf("Infer: %v", err)
		}
		v := []float64{(10.0/255 - 0.1) / 0.5, (20.0/255 - 0.2) / 0.25, (30.0/255 - 0.3) / 0.125}
		want := (v[0] + 10*v[1] + 100*v[2]) / 3
		if math.Abs(res.Score-want) > 1e-4 {
			t.Errorf("score: got %.6f, want %.6f", res.Score, want)
		}
		if rt.Info().Layout != bundle.LayoutNHWC {
			t.Errorf("Info.Layout: got %s, want NHWC", rt.Info().Layout)
		}
	})
	// An 8x4 gray frame, left half 0 and right half 255, into a 4x4 model whose map is its
	// input: the map shows what preprocessing wrote.
	frame := camera.Frame{Width: 8, Height: 4, Channels: 1, Pix: make([]byte, 32)}
	for y := range 4 {
		for x := 4; x < 8; x++ {
			frame.Pix[y*8+x] = 255
		}
	}
	const gray = float32(114) / 255 // Ultralytics' letterbox pad
	tests := []struct {
		resize string
		pad    int
		want   []float32 // the 4x4 input, row-major
	}{
		{bundle.ResizeStretch, 0, []float32{0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1}},
		{bundle.ResizeCrop, 0, []float32{0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1}}, // center 4x4: columns 2..5
		{bundle.ResizeLetterbox, 0, []float32{0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0}},
		{bundle.ResizeLetterbox, 114, []float32{gray, gray, gray, gray, 0, 0, 1, 1, 0, 0, 1, 1, gray, gray, gray, gray}},
	}
	for _, tt := range tests {
		t.Run("resize "+tt.resize+" pad "+strconv.Itoa(tt.pad), func(t *testing.T) {
			m := modeltest.MeanManifest()
			m.Input.Resize, m.Input.Pad = tt.resize, tt.pad
			rt := runtimeOf(t, m, modeltest.TinyModel(t, modeltest.MeanModel(4, 4)), RuntimeOptions{})
			if _, err := rt.Infer(context.Background(), frame); err != nil {
				t.Fatalf("Infer: %v", err)
			}
			got := rt.CopyMap(nil)
			for i := range tt.want {
				if got[i] != tt.want[i] {
					t.Fatalf("input: got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestROIs(t *testing.T) {
	m := modeltest.MeanManifest()
	m.ROIs = []bundle.ROI{{Name: "left", Region: bundle.Region{X0: 0, Y0: 0, X1: 0.5, Y1: 1}}, {Name: "right", Region: bundle.Region{X0: 0.5, Y0: 0, X1: 1, Y1: 1}}, {Name: "middle", Region: bundle.Region{X0: 0.25, Y0: 0, X1: 0.75, Y1: 1}}}
	rt := runtimeOf(t, m, modeltest.TinyModel(t, modeltest.MeanModel(4, 4)), RuntimeOptions{ReturnMap: true})
	frame := camera.Frame{Width: 16, Height: 8, Channels: 3, Pix: make([]byte, 16*8*3)}
	for y := range 8 {
		for x := 8; x < 16; x++ {
			for c := range 3 {
				frame.Pix[(y*16+x)*3+c] = 255
			}
		}
	}
	res, err := rt.Infer(context.Background(), frame)
	if err != nil {
		t.Fatalf("Infer: %v", err)
	}
	want := []ROIScore{{Name: "left", Score: 0}, {Name: "right", Score: 1}, {Name: "middle", Score: 0.5}}
	if len(res.ROIs) != 3 {
		t.Fatalf("ROIs: got %d, want 3", len(res.ROIs))
	}
	for i, w := range want {
		if res.ROIs[i].Name != w.Name || math.Abs(res.ROIs[i].Score-w.Score) > 1e-6 {
			t.Errorf("ROI %d: got %+v, want %+v", i, res.ROIs[i], w)
		}
	}
	if res.Score != 1 || res.Map == nil || res.Map.Values[0] != 1 || rt.Info().ROIs != 3 {
		t.Errorf("result: score %v, map of the worst ROI starts %v, want 1 and 1", res.Score, res.Map.Values[:1])
	}
	if res.Timings.Preprocess <= 0 || res.Timings.Infer <= 0 || res.Timings.Total < res.Timings.Infer {
		t.Errorf("timings %+v: want positive, summed over ROIs", res.Timings)
	}
}

func TestProviderChainFallsBack(t *testing.T) {
	onnx := modeltest.TinyModel(t, modeltest.MeanModel(4, 4))
	tests := []struct {
		name         string
		po           ProviderOptions
		wantProvider string
		wantDegraded bool
		wantErr      string // ErrProviderUnavailable with this text
		attempts     []string
	}{
		{"default is cpu", ProviderOptions{}, ProviderCPU, false, "", []string{"cpu"}},
		{"tensorrt, cuda, cpu", ProviderOptions{Chain: []string{"tensorrt", "cuda", "cpu"}, EngineCacheDir: t.TempDir()}, ProviderCPU, true, "", []string{"tensorrt", "cuda", "cpu"}},
		{"cuda, cpu", ProviderOptions{Chain: []string{"cuda", "cpu"}, DeviceID: 1}, ProviderCPU, true, "", []string{"cuda", "cpu"}},
		{"require tensorrt", ProviderOptions{Chain: []string{"tensorrt", "cuda", "cpu"}, Require: "tensorrt", FP16: true, WorkspaceMB: 512}, "", false, "tensorrt", nil},
		{"require cuda", ProviderOptions{Chain: []string{"tensorrt", "cuda", "cpu"}, Require: "cuda"}, "", false, "cuda", nil},
		{"require cpu after gpus", ProviderOptions{Chain: []string{"tensorrt", "cuda", "cpu"}, Require: "cpu"}, ProviderCPU, true, "", []string{"tensorrt", "cuda", "cpu"}},
		{"tensorrt only", ProviderOptions{Chain: []string{"tensorrt"}}, "", false, "no provider of [tensorrt] loads", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := LoadRuntimeData(onnx, RuntimeOptions{Threads: 1, Providers: tt.po})
			if tt.wantErr != "" {
				if err == nil {
					r.Close()
				}
				if !errors.Is(err, ErrProviderUnavailable) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "Failed to load") {
					t.Fatalf("load: got %v, want ErrProviderUnavailable naming %s and ONNX Runtime's load error", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			defer r.Close()
			info := r.Info()
			if info.Provider != tt.wantProvider || info.Degraded != tt.wantDegraded {
				t.Fatalf("Info: provider %q degraded %v, want %q %v (fallback %q)", info.Provider, info.Degraded, tt.wantProvider, tt.wantDegraded, info.Fallback)
			}
			att := r.Attempts()
			if len(att) != len(tt.attempts) {
				t.Fatalf("attempts: got %+v, want providers %v", att, tt.attempts)
			}
			for i, a := range att {
				last := i == len(att)-1
				if a.Provider != tt.attempts[i] || (last != (a.Err == "")) || (!last && !strings.Contains(a.Err, "Failed to load")) {
					t.Errorf("attempt %d: got %+v, want %s failing with ONNX Runtime's load error (except the last)", i, a, tt.attempts[i])
				}
			}
			for _, p := range tt.attempts[:len(tt.attempts)-1] {
				if !strings.Contains(info.Fallback, p+": ") {
					t.Errorf("Info.Fallback %q does not say why %s was passed over", info.Fallback, p)
				}
			}
			res, err := r.Infer(context.Background(), modeltest.Uniform(4, 4, 51))
			if err != nil || res.Provider != tt.wantProvider || math.Abs(res.Score-0.2) > 1e-6 {
				t.Fatalf("Infer: provider %q score %v err %v, want %s 0.2", res.Provider, res.Score, err, tt.wantProvider)
			}
		})
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// There is no GPU here: a CPU session stands in for TensorRT (testProvider), with a gate
// for the "engine build", to test the background build, the swap between frames, the
// engine cache and abandoning a build on Close. What cannot run here: a real TensorRT
// engine build, its timing cache and ONNX Runtime's own engine files.
func TestTensorRTBackgroundBuild(t *testing.T) {
	onnx := modeltest.TinyModel(t, modeltest.MeanModel(4, 4))
	cache := t.TempDir()
	var logs syncBuffer
	newGate := func() (chan struct{}, func(string) string) {
		gate := make(chan struct{})
		calls := 0
		var mu sync.Mutex
		return gate, func(p string) string {
			if p != ProviderTensorRT {
				return p
			}
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if n > 1 { // the first call is the probe; later ones build the engine
				<-gate
			}
			return ProviderCPU
		}
	}
	gate, fake := newGate()
	opts := RuntimeOptions{Threads: 1, Logger: zerolog.New(&logs), testProvider: fake,
		Providers: ProviderOptions{Chain: []string{"tensorrt", "cpu"}, EngineCacheDir: cache, ProgressEvery: 5 * time.Millisecond}}
	r, err := LoadRuntimeData(onnx, opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer r.Close()
	if info, st := r.Info(), r.EngineBuild(); info.Provider != ProviderCPU || !info.Degraded || !st.Active ||
		!strings.Contains(info.Fallback, "tensorrt: engine building in the background") {
		t.Fatalf("while building: provider %q degraded %v build %+v fallback %q, want cpu, degraded, active build", info.Provider, info.Degraded, st, info.Fallback)
	}
	frame := modeltest.Uniform(4, 4, 51)
	if res, err := r.Infer(context.Background(), frame); err != nil || res.Provider != ProviderCPU {
		t.Fatalf("Infer while building: provider %q, %v, want cpu", res.Provider, err)
	}
	for !strings.Contains(logs.String(), `"elapsed"`) {
		time.Sleep(time.Millisecond) // progress is logged while the build runs
	}
	close(gate)
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := r.Infer(context.Background(), frame)
		if err != nil {
			t.Fatalf("Infer: %v", err)
		}
		if res.Provider == ProviderTensorRT {
			if math.Abs(res.Score-0.2) > 1e-6 {
				t.Fatalf("score after the swap: %v, want 0.2", res.Score)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the built engine was not adopted within 20s; build %+v", r.EngineBuild())
		}
		time.Sleep(time.Millisecond)
	}
	info, st := r.Info(), r.EngineBuild()
	if info.Provider != ProviderTensorRT || info.Degraded || !st.Done || st.Active || st.Err != "" {
		t.Fatalf("after the swap: info %+v build %+v, want tensorrt, not degraded, build done", info, st)
	}
	if _, err := os.Stat(filepath.Join(st.CacheDir, engineMarker)); err != nil || filepath.Dir(st.CacheDir) != cache {
		t.Fatalf("engine cache %s: marker %v, want a key folder under %s with %s", st.CacheDir, err, cache, engineMarker)
	}
	for _, want := range []string{"building TensorRT engine in the background", "TensorRT engine built; switching to tensorrt"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not say %q", want)
		}
	}

	// Next start: the engine is cached, TensorRT serves from the start.
	_, fake2 := newGate()
	opts.testProvider = func(p string) string { // no gate: a cached engine loads quickly
		if p == ProviderTensorRT {
			return ProviderCPU
		}
		return fake2(p)
	}
	r2, err := LoadRuntimeData(onnx, opts)
	if err != nil {
		t.Fatalf("load with a cached engine: %v", err)
	}
	if info := r2.Info(); info.Provider != ProviderTensorRT || info.Degraded || r2.EngineBuild().Started != (time.Time{}) {
		t.Errorf("cached engine: provider %q degraded %v build %+v, want tensorrt at once, no build", info.Provider, info.Degraded, r2.EngineBuild())
	}
	r2.Close()

	// Close during a build abandons it; the build's session is destroyed when it ends.
	gate3, fake3 := newGate()
	opts.testProvider = fake3
	opts.Providers.EngineCacheDir = t.TempDir()
	r3, err := LoadRuntimeData(onnx, opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	b := r3.build
	r3.Close()
	close(gate3)
	for {
		b.mu.Lock()
		active := b.status.Active
		b.mu.Unlock()
		if !active {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := r3.Infer(context.Background(), frame); err == nil {
		t.Errorf("Infer after Close: got nil error")
	}
}

func TestHeatmap(t *testing.T) {
	frame := modeltest.Uniform(8, 8, 128)
	m := &AnomalyMap{Width: 2, Height: 2, Values: []float32{0, 0, 0, 10}}
	out, err := Heatmap(frame, m, HeatmapOptions{Lo: 0, Hi: 10, Alpha: 0.5})
	if err != nil {
		t.Fatalf("Heatmap: %v", err)
	}
	if out.Channels != 3 || out.Width != 8 || len(out.Pix) != 8*8*3 {
		t.Fatalf("heatmap frame %dx%dx%d, want 8x8x3", out.Width, out.Height, out.Channels)
	}
	px := func(x, y int) (b, g, r int) {
		i := 3 * (y*8 + x)
		return int(out.Pix[i]), int(out.Pix[i+1]), int(out.Pix[i+2])
	}
	if b, _, r := px(0, 0); b <= r {
		t.Errorf("cold corner: B %d R %d, want blue over red", b, r)
	}
	if b, _, r := px(7, 7); r <= b {
		t.Errorf("hot corner: B %d R %d, want red over blue", b, r)
	}
	if frame.Pix[0] != 128 {
		t.Errorf("Heatmap changed its input frame")
	}
	jpg, err := HeatmapJPEG(frame, m, HeatmapOptions{ROI: bundle.Region{X0: 0.5, Y0: 0.5, X1: 1, Y1: 1}}, 80)
	if err != nil || len(jpg) < 4 || jpg[0] != 0xFF || jpg[1] != 0xD8 {
		t.Fatalf("HeatmapJPEG: %d bytes, %v, want a JPEG", len(jpg), err)
	}
	if _, err := Heatmap(frame, &AnomalyMap{Width: 3, Height: 3, Values: []float32{1}}, HeatmapOptions{}); err == nil {
		t.Errorf("Heatmap of a malformed map: got nil error")
	}
}

// runtimeOf opens a runtime for m and onnx, on one thread unless opts says otherwise,
// closed when the test ends.
func runtimeOf(t testing.TB, m bundle.Manifest, onnx []byte, opts RuntimeOptions) *Runtime {
	t.Helper()
	if opts.Threads == 0 {
		opts.Threads = 1
	}
	return modeltest.Open(t, m, onnx, func(ctx context.Context, b *bundle.Bundle) (*Runtime, error) { return NewRuntime(ctx, b, opts) })
}
