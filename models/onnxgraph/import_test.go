package onnxgraph_test

import (
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Import keeps another model's nodes (with attributes the writer has no helper for, such
// as a Constant's tensor) and initializers as they are, and checks their order like Node's.
func TestImport(t *testing.T) {
	value := &onnxpb.TensorProto{Name: proto.String("c"), Dims: []int64{1}, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{3}}
	constant := &onnxpb.NodeProto{OpType: proto.String("Constant"), Output: []string{"bb_three"},
		Attribute: []*onnxpb.AttributeProto{{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: value}}}
	mul := &onnxpb.NodeProto{OpType: proto.String("Mul"), Input: []string{"x", "bb_three"}, Output: []string{"bb_y"}}
	add := &onnxpb.NodeProto{OpType: proto.String("Add"), Input: []string{"bb_y", "bb_half"}, Output: []string{"bb_z"}}
	half := &onnxpb.TensorProto{Name: proto.String("bb_half"), Dims: []int64{1}, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{0.5}}

	g := onnxgraph.New("imported")
	g.Input("x", 1, 2)
	g.Import([]*onnxpb.NodeProto{constant, mul, add}, []*onnxpb.TensorProto{half})
	g.Node("Identity", []string{"bb_z"}, []string{"y"})
	g.Output("y", 1, 2)
	m, err := g.Proto()
	if err != nil {
		t.Fatal(err)
	}
	if n := m.Graph.Node[0]; n.GetOpType() != "Constant" || n.Attribute[0].GetT().FloatData[0] != 3 || n.GetName() != "Constant_0" {
		t.Errorf("imported Constant node: %v; want its tensor attribute kept and the name Constant_0", n)
	}
	if in := m.Graph.Initializer[0]; in.GetName() != "bb_half" || in.FloatData[0] != 0.5 {
		t.Errorf("imported initializer: %v; want bb_half = 0.5 as given", in)
	}
	constant.Output[0] = "changed" // Import copied: the graph does not change with its source
	if m2, _ := g.Proto(); m2.Graph.Node[0].Output[0] != "bb_three" {
		t.Errorf("imported node changed with its source: output %q", m2.Graph.Node[0].Output[0])
	}

	bad := onnxgraph.New("unordered")
	bad.Input("x", 1, 2)
	bad.Import([]*onnxpb.NodeProto{add, mul}, []*onnxpb.TensorProto{half})
	bad.Output("bb_z", 1, 2)
	if _, err := bad.Proto(); err == nil || !strings.Contains(err.Error(), `reads "bb_y"`) {
		t.Errorf("imported nodes out of order: error %v, want one naming bb_y", err)
	}
}
