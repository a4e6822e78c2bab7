//go:build cgo

package train

import (
	"context"
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
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/internal/modeltest"
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
		modeltest.MaxScore(1, 96, 128)(g)
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
		{"dynamic input dims", dynamic(), bundle.ErrUnsupportedModel, `input "image" float32 [1,1,height,width] has dynamic dims`},
		{"rank 2 input", modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 16)
			g.Node("ReduceMax", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 0))
			g.Output("score", 1)
		}), bundle.ErrUnsupportedModel, "has rank 2"},
		{"two channels", modeltest.TinyModel(t, modeltest.MaxScore(2, 8, 8)), bundle.ErrUnsupportedModel, `input "image" float32 [1,2,8,8]`},
		{"no score output", modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 1, 8, 8)
			g.Node("ReduceMax", []string{"image"}, []string{"out"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
			g.Output("out", 1)
		}), bundle.ErrUnsupportedModel, `no output "score" (outputs: ["out"])`},
		{"score with many values", modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 1, 8, 8)
			g.Node("ReduceMax", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2), onnxgraph.Int("keepdims", 0))
			g.Output("score", 1, 8)
		}), bundle.ErrUnsupportedModel, `score output "score" float32 [1,8]`},
		{"map of the wrong rank", modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			modeltest.MaxScore(1, 8, 8)(g)
			g.Node("Flatten", []string{"image"}, []string{"anomaly_map"})
			g.Output("anomaly_map", 1, 64)
		}), bundle.ErrUnsupportedModel, `anomaly map output "anomaly_map" float32 [1,64]`},
		{"two inputs", modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			modeltest.MaxScore(1, 8, 8)(g)
			g.Input("other", 1)
		}), bundle.ErrUnsupportedModel, "2 inputs, want exactly 1"},
		{"bad threshold metadata", modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			modeltest.MaxScore(1, 8, 8)(g)
			g.Meta("takt.threshold", "high")
		}), bundle.ErrUnsupportedModel, `takt.threshold="high"`},
		{"input metadata disagrees", modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			modeltest.MaxScore(1, 8, 8)(g)
			g.Meta("takt.input", "gray 1x1x96x128 scale=1/255")
		}), bundle.ErrUnsupportedModel, `does not match the model input`},
		{"operator onnx runtime does not know", modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 1, 8, 8)
			g.Node("NoSuchOp", []string{"image"}, []string{"score"})
			g.Output("score", 1)
		}), bundle.ErrInvalidModel, "onnx runtime rejected it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "absent.onnx")
			if tt.data != nil {
				path = modeltest.WriteModel(t, tt.data)
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
	m := modeltest.ClassifierManifest(false)
	m.Input.Layout = bundle.LayoutNCHW
	m.ROIs = []bundle.ROI{{Name: "a", Region: bundle.Region{X0: 0, Y0: 0, X1: 0.6, Y1: 1}}, {Name: "b", Region: bundle.Region{X0: 0.4, Y0: 0, X1: 1, Y1: 1}}}
	cls := runtimeOf(t, m, modeltest.ClassifierModel(t, false), models.RuntimeOptions{})
	ab := modeltest.AnomalibManifest()
	ab.Input.Resize = bundle.ResizeLetterbox
	anomalib := runtimeOf(t, ab, modeltest.AnomalibModel(t, 24, 32, false), models.RuntimeOptions{})
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
		{"classifier, 2 ROIs, softmax", cls, modeltest.Uniform(64, 48, 10, 20, 30)},
		{"anomalib, letterbox, ImageNet mean/std", anomalib, modeltest.Uniform(64, 64, 10, 20, 30)},
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
	b := modeltest.BundleOf(t, man, tm.ONNX)
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
		return modeltest.VMRSS(t)
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

// runtimeOf opens a runtime for m and onnx, on one thread unless opts says otherwise,
// closed when the test ends.
func runtimeOf(t testing.TB, m bundle.Manifest, onnx []byte, opts models.RuntimeOptions) *models.Runtime {
	t.Helper()
	if opts.Threads == 0 {
		opts.Threads = 1
	}
	return modeltest.Open(t, m, onnx, func(ctx context.Context, b *bundle.Bundle) (*models.Runtime, error) {
		return models.NewRuntime(ctx, b, opts)
	})
}
