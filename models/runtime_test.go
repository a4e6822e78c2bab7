//go:build cgo

package models

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/internal/modeltest"
	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

func TestRuntimeForeignModels(t *testing.T) {
	t.Run("three channels, dynamic batch, no metadata", func(t *testing.T) {
		// score = mean over C,H,W of image * [1, 10, 100] per channel (R, G, B planes).
		data := modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
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
		r, err := LoadRuntime(modeltest.WriteModel(t, data), RuntimeOptions{Threads: 1, ReturnMap: true})
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
			{"BGR frame", modeltest.Uniform(8, 8, 30, 60, 90), (90*1 + 60*10 + 30*100) / 255.0 / 3},
			{"gray frame", modeltest.Uniform(8, 8, 50), 50 * 111 / 255.0 / 3},
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
		data := modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
			g.Input("image", 1, 1, 4, 4)
			g.Node("ReduceMax", []string{"image"}, []string{"m"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
			g.Node("Sub", []string{"m", "m"}, []string{"zero"})
			g.Node("Div", []string{"zero", "zero"}, []string{"score"})
			g.Output("score", 1)
		})
		r, err := LoadRuntime(modeltest.WriteModel(t, data), RuntimeOptions{Threads: 1})
		if err != nil {
			t.Fatalf("LoadRuntime: %v", err)
		}
		defer r.Close()
		res, err := r.Infer(context.Background(), modeltest.Uniform(4, 4, 7))
		if err != nil || !math.IsNaN(res.Score) {
			t.Fatalf("Infer: got score %v, error %v, want NaN and nil", res.Score, err)
		}
	})
}

func TestInferErrors(t *testing.T) {
	data := modeltest.TinyModel(t, modeltest.MaxScore(1, 8, 8))
	r, err := LoadRuntimeData(data, RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("LoadRuntimeData: %v", err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	bad := modeltest.Uniform(8, 8, 1)
	bad.Pix = bad.Pix[:10]
	tests := []struct {
		name   string
		ctx    context.Context
		frame  camera.Frame
		wantIs error
	}{
		{"context done", canceled, modeltest.Uniform(8, 8, 1), context.Canceled},
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
		if res, err := r.Infer(ctx, modeltest.Uniform(8, 8, 51)); err != nil || math.Abs(res.Score-0.2) > 1e-6 {
			t.Fatalf("Infer %d with a live context: got %v, %v, want 0.2, nil", i, res.Score, err)
		}
	}
	r.Close()
	r.Close()
	if _, err := r.Infer(context.Background(), modeltest.Uniform(8, 8, 1)); err == nil {
		t.Errorf("Infer after Close: got nil error, want one")
	}
}

func TestInferCanceledWhileRunning(t *testing.T) {
	// A deliberately slow model: a chain of 21x21 convolutions on 256x256.
	data := modeltest.TinyModel(t, func(g *onnxgraph.Graph) {
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
	r, err := LoadRuntimeData(data, RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("LoadRuntimeData: %v", err)
	}
	defer r.Close()
	frame := modeltest.Uniform(256, 256, 100)
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
