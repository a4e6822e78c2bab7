//go:build cgo

package onnxgraph_test

import (
	"math"
	"testing"

	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/onnxgraph"
	ort "github.com/yalue/onnxruntime_go"
)

// run loads data in ONNX Runtime, feeds the float32 input "x" and returns output "y".
func run(t *testing.T, data []byte, xShape []int64, x []float32, yShape []int64) []float32 {
	t.Helper()
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatalf("InitONNXRuntime: %v", err)
	}
	in, err := ort.NewTensor(ort.NewShape(xShape...), x)
	if err != nil {
		t.Fatalf("input tensor: %v", err)
	}
	defer in.Destroy()
	out, err := ort.NewEmptyTensor[float32](ort.NewShape(yShape...))
	if err != nil {
		t.Fatalf("output tensor: %v", err)
	}
	defer out.Destroy()
	s, err := ort.NewAdvancedSessionWithONNXData(data, []string{"x"}, []string{"y"},
		[]ort.Value{in}, []ort.Value{out}, nil)
	if err != nil {
		t.Fatalf("onnx runtime rejected the graph: %v", err)
	}
	defer s.Destroy()
	if err := s.Run(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return append([]float32(nil), out.GetData()...)
}

// avgPool3 is a reference 3x3 average pool, stride 1, pad 1, count_include_pad=0.
func avgPool3(x []float32, h, w int) []float32 {
	y := make([]float32, len(x))
	for r := 0; r < h; r++ {
		for c := 0; c < w; c++ {
			var sum float32
			n := 0
			for dr := -1; dr <= 1; dr++ {
				for dc := -1; dc <= 1; dc++ {
					rr, cc := r+dr, c+dc
					if rr >= 0 && rr < h && cc >= 0 && cc < w {
						sum += x[rr*w+cc]
						n++
					}
				}
			}
			y[r*w+c] = sum / float32(n)
		}
	}
	return y
}

func TestGraphsInONNXRuntime(t *testing.T) {
	x34 := make([]float32, 12)
	for i := range x34 {
		x34[i] = float32(i*i%7) - 2
	}
	tests := []struct {
		name   string
		build  func(g *onnxgraph.Graph)
		xShape []int64
		x      []float32
		yShape []int64
		want   []float32
	}{
		{
			name: "Add initializer",
			build: func(g *onnxgraph.Graph) {
				g.Input("x", 1, 4)
				g.Initializer("b", []int64{1, 4}, []float32{10, 20, 30, 40})
				g.Node("Add", []string{"x", "b"}, []string{"y"})
				g.Output("y", 1, 4)
			},
			xShape: []int64{1, 4}, x: []float32{1, 2, 3, 4},
			yShape: []int64{1, 4}, want: []float32{11, 22, 33, 44},
		},
		{
			name: "Mul by scalar initializer",
			build: func(g *onnxgraph.Graph) {
				g.Input("x", 1, 3)
				g.Initializer("k", nil, []float32{-0.5})
				g.Node("Mul", []string{"x", "k"}, []string{"y"})
				g.Output("y", 1, 3)
			},
			xShape: []int64{1, 3}, x: []float32{2, 4, -8},
			yShape: []int64{1, 3}, want: []float32{-1, -2, 4},
		},
		{
			name: "AveragePool 3x3 without padding in the count",
			build: func(g *onnxgraph.Graph) {
				g.Input("x", 1, 1, 3, 4)
				g.Node("AveragePool", []string{"x"}, []string{"y"},
					onnxgraph.Ints("kernel_shape", 3, 3), onnxgraph.Ints("pads", 1, 1, 1, 1),
					onnxgraph.Ints("strides", 1, 1), onnxgraph.Int("count_include_pad", 0))
				g.Output("y", 1, 1, 3, 4)
			},
			xShape: []int64{1, 1, 3, 4}, x: x34,
			yShape: []int64{1, 1, 3, 4}, want: avgPool3(x34, 3, 4),
		},
		{
			name: "ReduceMax over C,H,W",
			build: func(g *onnxgraph.Graph) {
				g.Input("x", 1, 1, 3, 4)
				g.Node("ReduceMax", []string{"x"}, []string{"y"},
					onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
				g.Output("y", 1)
			},
			xShape: []int64{1, 1, 3, 4}, x: x34,
			yShape: []int64{1}, want: []float32{2}, // max of i*i%7-2
		},
		{
			name: "Pad reflect (string attr, int64 initializer) then Conv",
			build: func(g *onnxgraph.Graph) {
				g.Input("x", 1, 1, 1, 3)
				g.InitializerInt64("pads", []int64{8}, []int64{0, 0, 0, 1, 0, 0, 0, 1})
				g.Node("Pad", []string{"x", "pads"}, []string{"p"}, onnxgraph.String("mode", "reflect"))
				g.Initializer("w", []int64{1, 1, 1, 3}, []float32{1, 1, 1})
				g.Node("Conv", []string{"p", "w"}, []string{"y"}, onnxgraph.Ints("kernel_shape", 1, 3))
				g.Output("y", 1, 1, 1, 3)
			},
			// reflect-padded [2 1 2 3 2] summed over windows of 3
			xShape: []int64{1, 1, 1, 3}, x: []float32{1, 2, 3},
			yShape: []int64{1, 1, 1, 3}, want: []float32{5, 6, 7},
		},
		{
			name: "Constant value_floats and LeakyRelu alpha (floats, float attrs)",
			build: func(g *onnxgraph.Graph) {
				g.Input("x", 2)
				g.Node("Constant", nil, []string{"c"}, onnxgraph.Floats("value_floats", 1, -3))
				g.Node("Add", []string{"x", "c"}, []string{"s"})
				g.Node("LeakyRelu", []string{"s"}, []string{"y"}, onnxgraph.Float("alpha", 0.5))
				g.Output("y", 2)
			},
			xShape: []int64{2}, x: []float32{1, 1},
			yShape: []int64{2}, want: []float32{2, -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := onnxgraph.New("test")
			tt.build(g)
			data, err := g.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got := run(t, data, tt.xShape, tt.x, tt.yShape)
			for i := range tt.want {
				if math.Abs(float64(got[i]-tt.want[i])) > 1e-5 {
					t.Fatalf("y: got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestMetadataInONNXRuntime(t *testing.T) {
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatalf("InitONNXRuntime: %v", err)
	}
	g := onnxgraph.New("meta-graph")
	g.Input("x", 1)
	g.Node("Identity", []string{"x"}, []string{"y"})
	g.Output("y", 1)
	g.Meta("takt.threshold", "0.25")
	data, err := g.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	md, err := ort.GetModelMetadataWithONNXData(data)
	if err != nil {
		t.Fatalf("GetModelMetadataWithONNXData: %v", err)
	}
	defer md.Destroy()
	producer, _ := md.GetProducerName()
	graph, _ := md.GetGraphName()
	th, ok, err := md.LookupCustomMetadataMap("takt.threshold")
	if producer != "takt" || graph != "meta-graph" || th != "0.25" || !ok || err != nil {
		t.Fatalf("metadata: got producer %q graph %q threshold %q (found %v, err %v), want takt, meta-graph, 0.25",
			producer, graph, th, ok, err)
	}
}
