//go:build cgo

package train

import (
	"bytes"
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Trained models in the runtime: what the trainers write loads, scores as the trainer
// scored it, and serves without allocating or leaking.

func TestLoadRuntimeMatchesTrainer(t *testing.T) {
	good, m := trainedFixture(t)
	path := filepath.Join(t.TempDir(), "bracket.onnx")
	if err := m.WriteFile(path); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	r, err := models.LoadRuntime(path, models.RuntimeOptions{Threads: 1, ReturnMap: true})
	if err != nil {
		t.Fatalf("LoadRuntime: %v", err)
	}
	defer r.Close()
	file, _ := os.ReadFile(path)
	sum := sha256.Sum256(file)
	wantInfo := models.Info{
		Model:     models.ModelInfo{Name: "bracket", Version: "1.2.0", SHA256: hex.EncodeToString(sum[:])},
		Task:      "anomaly",
		Input:     bundle.InputShape{Channels: 1, Height: 96, Width: 128},
		MapWidth:  128,
		MapHeight: 96,
		Threshold: m.Threshold,
		Provider:  "cpu",
		Layout:    bundle.LayoutNCHW,
		Color:     bundle.ColorGray,
		Opset:     17,
	}
	got := r.Info()
	if got.Warmup <= 0 {
		t.Errorf("Info.Warmup: got %v, want > 0 (the warm-up runs took time)", got.Warmup)
	}
	got.Warmup = 0
	if got != wantInfo {
		t.Errorf("Info:\n got %+v\nwant %+v", got, wantInfo)
	}
	if m.SHA256() != wantInfo.Model.SHA256 {
		t.Errorf("TrainedModel.SHA256: got %s, want %s", m.SHA256(), wantInfo.Model.SHA256)
	}
	var mapBuf []float32
	for i, f := range good {
		res, err := r.Infer(context.Background(), f)
		if err != nil {
			t.Fatalf("Infer good image %d: %v", i, err)
		}
		if res.Score != m.TrainScores[i] {
			t.Errorf("good image %d: Infer score %v, trainer score %v: want identical", i, res.Score, m.TrainScores[i])
		}
		if res.Model != wantInfo.Model || res.Provider != "cpu" {
			t.Errorf("good image %d: result model %+v provider %q, want %+v cpu", i, res.Model, res.Provider, wantInfo.Model)
		}
		if res.Timings.Infer <= 0 || res.Timings.Preprocess <= 0 || res.Timings.Total < res.Timings.Infer+res.Timings.Preprocess {
			t.Errorf("good image %d: timings %+v, want positive with total >= preprocess + infer", i, res.Timings)
		}
		if res.Map == nil || res.Map.Width != 128 || res.Map.Height != 96 || len(res.Map.Values) != 128*96 {
			if res.Map == nil {
				t.Fatalf("good image %d: no map, want 128x96 values", i)
			}
			t.Fatalf("good image %d: map %dx%d with %d values, want 128x96", i, res.Map.Width, res.Map.Height, len(res.Map.Values))
		}
		hi := float32(math.Inf(-1))
		for _, v := range res.Map.Values {
			hi = max(hi, v)
		}
		if float64(hi) != res.Score {
			t.Errorf("good image %d: max of the map %v, score %v: want equal", i, hi, res.Score)
		}
		mapBuf = r.CopyMap(mapBuf)
		if len(mapBuf) != len(res.Map.Values) || mapBuf[777] != res.Map.Values[777] {
			t.Errorf("good image %d: CopyMap differs from Result.Map", i)
		}
	}
}

func TestInferFrameSizes(t *testing.T) {
	_, m := trainedFixture(t)
	r, err := models.LoadRuntimeData(m.ONNX, models.RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("LoadRuntimeData: %v", err)
	}
	defer r.Close()
	tests := []struct {
		name string
		spec partSpec
		// below says the good part must also score below the threshold; frames of another
		// aspect are squeezed, so only their running is checked.
		below bool
	}{
		{"1280x960 gray", partSpec{width: 1280, height: 960, channels: 1, seed: 401}, true},
		{"320x240 BGR", partSpec{width: 320, height: 240, channels: 3, seed: 402}, true},
		// Drawn at 128x96 directly, edges are sharper than in frames shrunk from 640x480,
		// which the tight shift-aligned template notices: only its running is checked.
		{"128x96 gray, the model size", partSpec{width: 128, height: 96, channels: 1, seed: 403}, false},
		{"1024x768 BGR", partSpec{width: 1024, height: 768, channels: 3, seed: 404}, true},
		{"640x360 16:9", partSpec{width: 640, height: 360, channels: 1, seed: 405}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := r.Infer(context.Background(), makePart(tt.spec))
			if err != nil {
				t.Fatalf("Infer: %v", err)
			}
			t.Logf("score %.3f (threshold %.3f)", res.Score, m.Threshold)
			if math.IsNaN(res.Score) || (tt.below && res.Score > m.Threshold) {
				t.Errorf("score %v: want a number below the threshold %v", res.Score, m.Threshold)
			}
		})
	}
}

func TestLoadRuntimeErrors(t *testing.T) {
	_, m := trainedFixture(t)
	garbage := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	dynamic := func() []byte {
		g := onnxgraph.New("dynamic")
		maxScore(1, 96, 128)(g)
		mp, err := g.Proto()
		if err != nil {
			t.Fatal(err)
		}
		dims := mp.Graph.Input[0].Type.GetTensorType().Shape.Dim
		dims[2].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "height"}
		dims[3].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "width"}
		data, err := proto.Marshal(mp)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	tests := []struct {
		name    string
		data    []byte // nil: no file at all
		wantIs  error
		wantMsg string
	}{
		{"missing file", nil, fs.ErrNotExist, "no such file"},
		{"empty file", []byte{}, bundle.ErrInvalidModel, "empty file"},
		{"garbage bytes", garbage, bundle.ErrInvalidModel, "not a valid ONNX model"},
		{"text file", []byte("threshold: 0.5\n"), bundle.ErrInvalidModel, "not a valid ONNX model"},
		{"truncated model", m.ONNX[:len(m.ONNX)/2], bundle.ErrInvalidModel, "truncated"},
		{"dynamic input dims", dynamic(), bundle.ErrUnsupportedModel, `input "image" float32 [1,1,?,?] has dynamic dims`},
		{"rank 2 input", tinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 16)
			g.Node("ReduceMax", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 0))
			g.Output("score", 1)
		}), bundle.ErrUnsupportedModel, "has rank 2"},
		{"two channels", tinyModel(t, maxScore(2, 8, 8)), bundle.ErrUnsupportedModel, `input "image" float32 [1,2,8,8]`},
		{"no score output", tinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 1, 8, 8)
			g.Node("ReduceMax", []string{"image"}, []string{"out"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
			g.Output("out", 1)
		}), bundle.ErrUnsupportedModel, `no output "score" (outputs: ["out"])`},
		{"score with many values", tinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 1, 8, 8)
			g.Node("ReduceMax", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2), onnxgraph.Int("keepdims", 0))
			g.Output("score", 1, 8)
		}), bundle.ErrUnsupportedModel, `score output "score" float32 [1,8]`},
		{"map of the wrong rank", tinyModel(t, func(g *onnxgraph.Graph) {
			maxScore(1, 8, 8)(g)
			g.Node("Flatten", []string{"image"}, []string{"anomaly_map"})
			g.Output("anomaly_map", 1, 64)
		}), bundle.ErrUnsupportedModel, `anomaly map output "anomaly_map" float32 [1,64]`},
		{"two inputs", tinyModel(t, func(g *onnxgraph.Graph) {
			maxScore(1, 8, 8)(g)
			g.Input("other", 1)
		}), bundle.ErrUnsupportedModel, "2 inputs, want exactly 1"},
		{"bad threshold metadata", tinyModel(t, func(g *onnxgraph.Graph) {
			maxScore(1, 8, 8)(g)
			g.Meta("takt.threshold", "high")
		}), bundle.ErrUnsupportedModel, `takt.threshold="high"`},
		{"input metadata disagrees", tinyModel(t, func(g *onnxgraph.Graph) {
			maxScore(1, 8, 8)(g)
			g.Meta("takt.input", "gray 1x1x96x128 scale=1/255")
		}), bundle.ErrUnsupportedModel, `does not match the model input`},
		{"operator onnx runtime does not know", tinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 1, 8, 8)
			g.Node("NoSuchOp", []string{"image"}, []string{"score"})
			g.Output("score", 1)
		}), bundle.ErrInvalidModel, "onnx runtime rejected it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "absent.onnx")
			if tt.data != nil {
				path = writeModel(t, tt.data)
			}
			r, err := models.LoadRuntime(path, models.RuntimeOptions{Threads: 1})
			if err == nil {
				r.Close()
				t.Fatalf("LoadRuntime: got nil error, want %v", tt.wantIs)
			}
			if !errors.Is(err, tt.wantIs) || !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), path) {
				t.Fatalf("LoadRuntime error:\n got %v\nwant errors.Is %v, containing %q and the path", err, tt.wantIs, tt.wantMsg)
			}
		})
	}
}

func BenchmarkInfer(b *testing.B) {
	_, m := trainedFixture(b)
	r, err := models.LoadRuntimeData(m.ONNX, models.RuntimeOptions{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for _, f := range []camera.Frame{goodParts(1, 500, 1)[0], goodParts(1, 500, 3)[0]} {
		b.Run(map[int]string{1: "gray640x480", 3: "bgr640x480"}[f.Channels], func(b *testing.B) {
			b.ReportAllocs()
			var pre, inf float64
			for b.Loop() {
				res, err := r.Infer(context.Background(), f)
				if err != nil {
					b.Fatal(err)
				}
				pre += float64(res.Timings.Preprocess)
				inf += float64(res.Timings.Infer)
			}
			b.ReportMetric(pre/inf, "preprocess/infer")
		})
	}
}

func TestInferZeroAllocs(t *testing.T) {
	_, tm := trainedFixture(t)
	plain, err := models.LoadRuntimeData(tm.ONNX, models.RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	m := classifierManifest(false)
	m.Input.Layout = bundle.LayoutNCHW
	m.ROIs = []bundle.ROI{{Name: "a", Region: bundle.Region{X0: 0, Y0: 0, X1: 0.6, Y1: 1}}, {Name: "b", Region: bundle.Region{X0: 0.4, Y0: 0, X1: 1, Y1: 1}}}
	cls := runtimeOf(t, m, classifierModel(t, false), models.RuntimeOptions{})
	ab := anomalibManifest()
	ab.Input.Resize = bundle.ResizeLetterbox
	anomalib := runtimeOf(t, ab, anomalibModel(t, 24, 32, false), models.RuntimeOptions{})
	// The agent's case: a part deadline on the context, so the terminate watcher runs.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	var mapBuf []float32
	tests := []struct {
		name  string
		r     *models.Runtime
		frame camera.Frame
	}{
		{"template, BGR 640x480", plain, goodParts(1, 900, 3)[0]},
		{"template, gray 640x480", plain, goodParts(1, 901, 1)[0]},
		{"classifier, 2 ROIs, softmax", cls, uniform(64, 48, 10, 20, 30)},
		{"anomalib, letterbox, ImageNet mean/std", anomalib, uniform(64, 64, 10, 20, 30)},
	}
	for _, tt := range tests {
		allocs := testing.AllocsPerRun(30, func() {
			if _, err := tt.r.Infer(ctx, tt.frame); err != nil {
				t.Fatal(err)
			}
			mapBuf = tt.r.CopyMap(mapBuf)
		})
		if allocs != 0 {
			t.Errorf("%s: %v heap allocations per Infer, want 0", tt.name, allocs)
		}
	}
}

// Loading and destroying a model 200 times does not grow the process.
func TestLoadDestroyCyclesDoNotLeak(t *testing.T) {
	_, tm := trainedFixture(t)
	man, err := tm.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	b := bundleOf(t, man, tm.ONNX)
	frame := goodParts(1, 902, 3)[0]
	cycle := func() {
		r, err := models.NewRuntime(context.Background(), b, models.RuntimeOptions{Threads: 1, Warmup: -1,
			Providers: models.ProviderOptions{Chain: []string{"cuda", "cpu"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Infer(context.Background(), frame); err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	settle := func() int64 {
		runtime.GC()
		debug.FreeOSMemory()
		return vmRSS(t)
	}
	for range 20 { // allocator pools and ONNX Runtime's lazy state settle
		cycle()
	}
	before := settle()
	const cycles = 200
	for range cycles {
		cycle()
	}
	after := settle()
	growth := after - before
	t.Logf("VmRSS %d KiB -> %d KiB over %d load/destroy cycles (model %d KiB)", before>>10, after>>10, cycles, len(tm.ONNX)>>10)
	// Measured here: -13..+7 MiB of allocator noise over 200 cycles; one leaked session per
	// cycle would be 200 x (1.25 MiB of weights + ONNX Runtime's arena).
	if limit := int64(24 << 20); growth > limit {
		t.Fatalf("VmRSS grew by %d KiB over %d cycles, want at most %d KiB", growth>>10, cycles, limit>>10)
	}
}

// writeModel writes data to a file in a fresh temp folder and returns its path.
func writeModel(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// tinyModel builds a graph with build and returns it serialized.
func tinyModel(t testing.TB, build func(g *onnxgraph.Graph)) []byte {
	t.Helper()
	g := onnxgraph.New("tiny")
	build(g)
	data, err := g.Marshal()
	if err != nil {
		t.Fatalf("build test model: %v", err)
	}
	return data
}

// maxScore is a model with input [1,c,h,w] and score = max of the input.
func maxScore(c, h, w int64) func(g *onnxgraph.Graph) {
	return func(g *onnxgraph.Graph) {
		g.Input("image", 1, c, h, w)
		g.Node("ReduceMax", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Output("score", 1)
	}
}

// uniform is a frame of one color: a gray level, or B, G, R.
func uniform(w, h int, color ...byte) camera.Frame {
	f := camera.Frame{Width: w, Height: h, Channels: len(color), Pix: make([]byte, w*h*len(color))}
	for i := range f.Pix {
		f.Pix[i] = color[i%len(color)]
	}
	return f
}

// bundleOf signs m and onnx with a fresh key and reads the bundle back, verified.
func bundleOf(t testing.TB, m bundle.Manifest, onnx []byte) *bundle.Bundle {
	t.Helper()
	pub, priv := newKey(t)
	keys := bundle.TrustedKeys{}
	keys.Add(pub)
	b, err := bundle.ReadBundle(bytes.NewReader(buildBundle(t, m, onnx, nil, priv)), keys)
	if err != nil {
		t.Fatalf("ReadBundle: %v", err)
	}
	return b
}

func runtimeOf(t testing.TB, m bundle.Manifest, onnx []byte, opts models.RuntimeOptions) *models.Runtime {
	t.Helper()
	if opts.Threads == 0 {
		opts.Threads = 1
	}
	r, err := models.NewRuntime(context.Background(), bundleOf(t, m, onnx), opts)
	if err != nil {
		t.Fatalf("NewRuntime: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// anomalibModel is shaped like an anomalib export: input "input" [1,3,h,w] (ImageNet
// normalized outside), outputs pred_score [1] and anomaly_map [1,1,h,w] (and a pred_mask
// Takt does not read). map = mean over channels of (x - 0.5)^2, score = max of the map.
func anomalibModel(t testing.TB, h, w int64, dynamic bool) []byte {
	g := onnxgraph.New("anomalib-padim")
	g.Input("input", 1, 3, h, w)
	g.Initializer("half", []int64{1}, []float32{0.5})
	g.Node("Sub", []string{"input", "half"}, []string{"d"})
	g.Node("Mul", []string{"d", "d"}, []string{"sq"})
	g.Node("ReduceMean", []string{"sq"}, []string{"anomaly_map"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 1))
	g.Node("ReduceMax", []string{"anomaly_map"}, []string{"pred_score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
	g.Node("Identity", []string{"anomaly_map"}, []string{"pred_mask"})
	g.Output("pred_score", 1)
	g.Output("anomaly_map", 1, 1, h, w)
	g.Output("pred_mask", 1, 1, h, w)
	mp, err := g.Proto()
	if err != nil {
		t.Fatal(err)
	}
	if dynamic {
		for _, v := range []*onnxpb.ValueInfoProto{mp.Graph.Input[0], mp.Graph.Output[1], mp.Graph.Output[2]} {
			dims := v.Type.GetTensorType().Shape.Dim
			dims[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
			dims[2].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "height"}
			dims[3].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "width"}
		}
		mp.Graph.Output[0].Type.GetTensorType().Shape.Dim[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
	}
	data, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func anomalibManifest() bundle.Manifest {
	return bundle.Manifest{Name: "padim", Version: "2.0.0", Task: bundle.TaskAnomaly,
		Input:      bundle.InputSpec{Layout: bundle.LayoutNCHW, Color: bundle.ColorRGB, Mean: imagenetMean, Std: imagenetStd},
		Outputs:    bundle.OutputSpec{Score: "pred_score", Map: "anomaly_map"},
		Thresholds: bundle.Thresholds{Fail: 3}, Opset: 17}
}

// classifierModel: input [1,3,8,8] RGB; class scores = 4 * mean of each channel, so a red
// part is class 0, a green one class 1, a blue one class 2. With softmax the graph ends in
// Softmax (probabilities), else it outputs logits.
func classifierModel(t testing.TB, softmax bool) []byte {
	return tinyModel(t, func(g *onnxgraph.Graph) {
		g.Input("pixel_values", 1, 3, 8, 8)
		g.Initializer("four", []int64{1}, []float32{4})
		g.Node("ReduceMean", []string{"pixel_values"}, []string{"m"}, onnxgraph.Ints("axes", 2, 3), onnxgraph.Int("keepdims", 0))
		out := "logits"
		g.Node("Mul", []string{"m", "four"}, []string{"logits"})
		if softmax {
			out = "probs"
			g.Node("Softmax", []string{"logits"}, []string{"probs"}, onnxgraph.Int("axis", 1))
		}
		g.Output(out, 1, 3)
	})
}

func classifierManifest(softmaxInGraph bool) bundle.Manifest {
	m := bundle.Manifest{Name: "cls", Version: "1.0.0", Task: bundle.TaskClassification,
		Input:      bundle.InputSpec{Layout: bundle.LayoutNCHW, Color: bundle.ColorRGB},
		Outputs:    bundle.OutputSpec{Score: "probs", Labels: []string{"good", "scratch", "dent"}, OKLabel: "good"},
		Thresholds: bundle.Thresholds{Fail: 0.5}, Opset: 17}
	if !softmaxInGraph {
		m.Outputs.Score, m.Outputs.Softmax = "logits", true
	}
	return m
}

func vmRSS(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func buildBundle(t testing.TB, m bundle.Manifest, onnx []byte, files map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := bundle.BuildBundle(&buf, m, onnx, files, key); err != nil {
		t.Fatalf("BuildBundle: %v", err)
	}
	return buf.Bytes()
}

var imagenetMean, imagenetStd = []float64{0.485, 0.456, 0.406}, []float64{0.229, 0.224, 0.225}
