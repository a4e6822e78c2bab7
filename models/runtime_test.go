//go:build cgo

package models

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
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

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

func TestLoadRuntimeMatchesTrainer(t *testing.T) {
	good, m := trainedFixture(t)
	path := filepath.Join(t.TempDir(), "bracket.onnx")
	if err := m.WriteFile(path); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	r, err := LoadRuntime(path, RuntimeOptions{Threads: 1, ReturnMap: true})
	if err != nil {
		t.Fatalf("LoadRuntime: %v", err)
	}
	defer r.Close()
	file, _ := os.ReadFile(path)
	sum := sha256.Sum256(file)
	wantInfo := Info{
		Model:     ModelInfo{Name: "bracket", Version: "1.2.0", SHA256: hex.EncodeToString(sum[:])},
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
	r, err := newRuntime(m.ONNX, RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("newRuntime: %v", err)
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
			r, err := LoadRuntime(path, RuntimeOptions{Threads: 1})
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

func TestRuntimeForeignModels(t *testing.T) {
	t.Run("three channels, dynamic batch, no metadata", func(t *testing.T) {
		// score = mean over C,H,W of image * [1, 10, 100] per channel (R, G, B planes).
		data := tinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 3, 4, 4)
			g.Initializer("w", []int64{1, 3, 1, 1}, []float32{1, 10, 100})
			g.Node("Mul", []string{"image", "w"}, []string{"weighted"})
			g.Node("ReduceMean", []string{"weighted"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
			g.Output("score", 1)
		})
		mp := &onnxpb.ModelProto{}
		if err := proto.Unmarshal(data, mp); err != nil {
			t.Fatal(err)
		}
		mp.Graph.Input[0].Type.GetTensorType().Shape.Dim[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
		mp.Graph.Output[0].Type.GetTensorType().Shape.Dim[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
		data, _ = proto.Marshal(mp)
		r, err := LoadRuntime(writeModel(t, data), RuntimeOptions{Threads: 1, ReturnMap: true})
		if err != nil {
			t.Fatalf("LoadRuntime: %v", err)
		}
		defer r.Close()
		info := r.Info()
		if info.Input != (bundle.InputShape{Channels: 3, Height: 4, Width: 4}) || info.Threshold != 0 || info.Model.Name != "tiny" || info.MapWidth != 0 {
			t.Errorf("Info: got %+v, want input 3x4x4, threshold 0, name tiny, no map", info)
		}
		tests := []struct {
			name  string
			frame camera.Frame
			want  float64
		}{
			{"BGR frame", uniform(8, 8, 30, 60, 90), (90*1 + 60*10 + 30*100) / 255.0 / 3},
			{"gray frame", uniform(8, 8, 50), 50 * 111 / 255.0 / 3},
		}
		for _, tt := range tests {
			res, err := r.Infer(context.Background(), tt.frame)
			if err != nil {
				t.Fatalf("%s: Infer: %v", tt.name, err)
			}
			if math.Abs(res.Score-tt.want) > 1e-5 || res.Map != nil {
				t.Errorf("%s: score %v, map %v: want %v, no map", tt.name, res.Score, res.Map, tt.want)
			}
		}
	})
	t.Run("NaN score", func(t *testing.T) {
		data := tinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 1, 4, 4)
			g.Node("ReduceMax", []string{"image"}, []string{"m"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
			g.Node("Sub", []string{"m", "m"}, []string{"zero"})
			g.Node("Div", []string{"zero", "zero"}, []string{"score"})
			g.Output("score", 1)
		})
		r, err := LoadRuntime(writeModel(t, data), RuntimeOptions{Threads: 1})
		if err != nil {
			t.Fatalf("LoadRuntime: %v", err)
		}
		defer r.Close()
		res, err := r.Infer(context.Background(), uniform(4, 4, 7))
		if err != nil || !math.IsNaN(res.Score) {
			t.Fatalf("Infer: got score %v, error %v, want NaN and nil", res.Score, err)
		}
	})
}

func TestInferErrors(t *testing.T) {
	data := tinyModel(t, maxScore(1, 8, 8))
	r, err := newRuntime(data, RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("newRuntime: %v", err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	bad := uniform(8, 8, 1)
	bad.Pix = bad.Pix[:10]
	tests := []struct {
		name   string
		ctx    context.Context
		frame  camera.Frame
		wantIs error
	}{
		{"context done", canceled, uniform(8, 8, 1), context.Canceled},
		{"short pixel buffer", context.Background(), bad, ErrBadFrame},
		{"four channels", context.Background(), camera.Frame{Width: 2, Height: 2, Channels: 4, Pix: make([]byte, 16)}, ErrBadFrame},
	}
	for _, tt := range tests {
		if _, err := r.Infer(tt.ctx, tt.frame); !errors.Is(err, tt.wantIs) {
			t.Errorf("%s: Infer error: got %v, want %v", tt.name, err, tt.wantIs)
		}
	}
	// A live context with a deadline goes through the terminate watcher, and a run after
	// a cancellation must not stay terminated.
	ctx, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	for i := range 3 {
		if res, err := r.Infer(ctx, uniform(8, 8, 51)); err != nil || math.Abs(res.Score-0.2) > 1e-6 {
			t.Fatalf("Infer %d with a live context: got %v, %v, want 0.2, nil", i, res.Score, err)
		}
	}
	r.Close()
	r.Close()
	if _, err := r.Infer(context.Background(), uniform(8, 8, 1)); err == nil {
		t.Errorf("Infer after Close: got nil error, want one")
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

func BenchmarkInfer(b *testing.B) {
	_, m := trainedFixture(b)
	r, err := newRuntime(m.ONNX, RuntimeOptions{Threads: 1})
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

func TestInferCanceledWhileRunning(t *testing.T) {
	// A deliberately slow model: a chain of 21x21 convolutions on 256x256.
	data := tinyModel(t, func(g *onnxgraph.Graph) {
		g.Input("image", 1, 1, 256, 256)
		w := make([]float32, 21*21)
		for i := range w {
			w[i] = 1.0 / float32(len(w))
		}
		g.Initializer("w", []int64{1, 1, 21, 21}, w)
		prev := "image"
		for i := range 24 {
			out := "conv" + string(rune('a'+i))
			g.Node("Conv", []string{prev, "w"}, []string{out}, onnxgraph.Ints("kernel_shape", 21, 21), onnxgraph.Ints("pads", 10, 10, 10, 10))
			prev = out
		}
		g.Node("ReduceMax", []string{prev}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Output("score", 1)
	})
	r, err := newRuntime(data, RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("newRuntime: %v", err)
	}
	defer r.Close()
	frame := uniform(256, 256, 100)
	full, err := r.Infer(context.Background(), frame)
	if err != nil {
		t.Fatalf("Infer: %v", err)
	}
	t.Logf("full run %v", full.Timings.Infer)
	ctx, cancel := context.WithTimeout(context.Background(), full.Timings.Infer/20)
	defer cancel()
	start := time.Now()
	res, err := r.Infer(ctx, frame)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Infer with a deadline of 1/20 of a run: got %v, %v, want context.DeadlineExceeded", res.Score, err)
	}
	if took > full.Timings.Infer/2 {
		t.Errorf("terminated Infer took %v, want well under a full run (%v)", took, full.Timings.Infer)
	}
	// The terminate flag must not leak into the next run.
	again, err := r.Infer(context.Background(), frame)
	if err != nil || again.Score != full.Score {
		t.Fatalf("Infer after a terminated run: got %v, %v, want %v, nil", again.Score, err, full.Score)
	}
}
