package onnxgraph_test

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

func TestMarshalRoundTrip(t *testing.T) {
	g := onnxgraph.New("double")
	g.SetDoc("doubles x")
	g.Input("x", 1, 4)
	g.Initializer("two", []int64{1}, []float32{2})
	g.InitializerInt64("shape", []int64{2}, []int64{2, 2})
	g.Node("Mul", []string{"x", "two"}, []string{"y"})
	g.Node("Reshape", []string{"y", "shape"}, []string{"z"})
	g.Output("z", 2, 2)
	g.Meta("takt.task", "test")
	data, err := g.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"ir_version", m.GetIrVersion(), int64(8)},
		{"producer_name", m.GetProducerName(), "takt"},
		{"doc_string", m.GetDocString(), "doubles x"},
		{"opset domain", m.GetOpsetImport()[0].GetDomain(), ""},
		{"opset version", m.GetOpsetImport()[0].GetVersion(), int64(17)},
		{"graph name", m.GetGraph().GetName(), "double"},
		{"nodes", len(m.GetGraph().GetNode()), 2},
		{"node 1 name", m.GetGraph().GetNode()[1].GetName(), "Reshape_1"},
		{"metadata key", m.GetMetadataProps()[0].GetKey(), "takt.task"},
		{"metadata value", m.GetMetadataProps()[0].GetValue(), "test"},
		{"output dims", len(m.GetGraph().GetOutput()[0].GetType().GetTensorType().GetShape().GetDim()), 2},
		{"initializer type", m.GetGraph().GetInitializer()[0].GetDataType(), int32(onnxpb.TensorProto_FLOAT)},
		{"initializer value", math.Float32frombits(binary.LittleEndian.Uint32(m.GetGraph().GetInitializer()[0].GetRawData())), float32(2)},
		{"int64 initializer value", int64(binary.LittleEndian.Uint64(m.GetGraph().GetInitializer()[1].GetRawData()[8:])), int64(2)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestCheckErrors(t *testing.T) {
	base := func() *onnxgraph.Graph {
		g := onnxgraph.New("g")
		g.Input("x", 1, 2)
		g.Initializer("c", []int64{1, 2}, []float32{1, 2})
		return g
	}
	tests := []struct {
		name  string
		build func() *onnxgraph.Graph
		want  string // substring of the error
	}{
		{"undefined node input", func() *onnxgraph.Graph {
			g := base()
			g.Node("Add", []string{"x", "nope"}, []string{"y"})
			g.Output("y", 1, 2)
			return g
		}, `node 0 (Add) reads "nope", which is neither a graph input, an initializer nor an output of an earlier node`},
		{"input used before its node", func() *onnxgraph.Graph {
			g := base()
			g.Node("Add", []string{"x", "b"}, []string{"a"})
			g.Node("Neg", []string{"x"}, []string{"b"})
			g.Output("a", 1, 2)
			return g
		}, `reads "b"`},
		{"input and initializer share a name", func() *onnxgraph.Graph {
			g := base()
			g.Initializer("x", []int64{1}, []float32{1})
			g.Output("x", 1, 2)
			return g
		}, `duplicate name "x": input "x" and initializer "x"`},
		{"two nodes write one value", func() *onnxgraph.Graph {
			g := base()
			g.Node("Neg", []string{"x"}, []string{"y"})
			g.Node("Abs", []string{"x"}, []string{"y"})
			g.Output("y", 1, 2)
			return g
		}, `duplicate name "y": node 0 (Neg) output "y" and node 1 (Abs) output "y"`},
		{"output declared twice", func() *onnxgraph.Graph {
			g := base()
			g.Node("Neg", []string{"x"}, []string{"y"})
			g.Output("y", 1, 2)
			g.Output("y", 1, 2)
			return g
		}, `output "y" declared twice`},
		{"output never produced", func() *onnxgraph.Graph {
			g := base()
			g.Output("y", 1, 2)
			return g
		}, `output "y" is neither`},
		{"no outputs", base, "no outputs"},
		{"initializer size", func() *onnxgraph.Graph {
			g := base()
			g.Initializer("w", []int64{2, 3}, []float32{1, 2, 3})
			g.Output("x", 1, 2)
			return g
		}, `initializer "w": 3 values for dims [2 3], want 6`},
		{"dynamic input dim", func() *onnxgraph.Graph {
			g := onnxgraph.New("g")
			g.Input("x", 1, -1)
			g.Output("x", 1, 2)
			return g
		}, `input "x": dims [1 -1]: every dim must be a fixed size >= 1`},
		{"output without dims", func() *onnxgraph.Graph {
			g := base()
			g.Output("x")
			return g
		}, `output "x": no dims`},
		{"duplicate metadata key", func() *onnxgraph.Graph {
			g := base()
			g.Output("x", 1, 2)
			g.Meta("k", "1")
			g.Meta("k", "2")
			return g
		}, `duplicate metadata key "k"`},
		{"duplicate attribute", func() *onnxgraph.Graph {
			g := base()
			g.Node("ReduceMax", []string{"x"}, []string{"y"}, onnxgraph.Int("keepdims", 0), onnxgraph.Int("keepdims", 1))
			g.Output("y", 1)
			return g
		}, `attribute "keepdims" twice`},
		{"zero attribute", func() *onnxgraph.Graph {
			g := base()
			g.Node("ReduceMax", []string{"x"}, []string{"y"}, onnxgraph.Attr{})
			g.Output("y", 1)
			return g
		}, "attribute without name or type"},
		{"empty op", func() *onnxgraph.Graph {
			g := base()
			g.Node("", []string{"x"}, []string{"y"})
			g.Output("y", 1, 2)
			return g
		}, "node 0 has no operator type"},
		{"no name", func() *onnxgraph.Graph {
			g := onnxgraph.New("")
			g.Input("x", 1)
			g.Output("x", 1)
			return g
		}, "graph has no name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.build().Marshal()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Marshal error: got %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestOptionalInputAllowed(t *testing.T) {
	g := onnxgraph.New("pad")
	g.Input("x", 1, 1, 2, 2)
	g.InitializerInt64("pads", []int64{8}, []int64{0, 0, 1, 1, 0, 0, 1, 1})
	g.Node("Pad", []string{"x", "pads", ""}, []string{"y"}, onnxgraph.String("mode", "reflect"))
	g.Output("y", 1, 1, 4, 4)
	if _, err := g.Marshal(); err != nil {
		t.Fatalf("Marshal with an omitted optional input: got %v, want nil", err)
	}
}
