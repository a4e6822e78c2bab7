// Package onnxgraph writes small ONNX models: a Graph collects float32 inputs and outputs
// with fixed shapes, initializers, operator nodes and metadata, checks them, and marshals
// an ONNX ModelProto (IR version 8, producer "takt") built on the generated types of
// models/onnxpb.
//
// # Basics
//
//	g := onnxgraph.New("double")
//	g.Input("x", 1, 4)
//	g.Initializer("two", []int64{1}, []float32{2})
//	g.Node("Mul", []string{"x", "two"}, []string{"y"})
//	g.Output("y", 1, 4)
//	data, err := g.Marshal()
//
// Nodes are added in execution order: a node may only read graph inputs, initializers and
// outputs of nodes added before it (an empty input name stands for an omitted optional
// input, as in ONNX). Proto and Marshal report the first mistake they find, naming the
// node or value; the Graph methods themselves never fail.
//
// # Caveats
//
// The writer checks names, ordering and initializer sizes, not operator semantics: a
// wrong attribute or a shape mismatch is only found when ONNX Runtime loads the model, so
// load every graph you write in a test. Operators are from the default ai.onnx domain at
// the graph's opset (DefaultOpset unless SetOpset is called; mind that some operators
// changed between opsets, e.g. ReduceMax takes axes as an attribute up to opset 17 and as
// an input from opset 18).
package onnxgraph

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

const (
	// DefaultOpset is the ai.onnx opset version a new Graph imports.
	DefaultOpset = 17
	// IRVersion is the ONNX IR version of every model written here.
	IRVersion = 8
	// ProducerName is written into every model's producer_name.
	ProducerName = "takt"
)

// Graph collects one ONNX model. The zero value is not usable; call New.
type Graph struct {
	name    string
	doc     string
	opset   int64
	inputs  []value
	outputs []value
	inits   []initializer
	nodes   []node
	meta    []keyValue
}

type value struct {
	name string
	dims []int64
}

type initializer struct {
	name     string
	dims     []int64
	dataType onnxpb.TensorProto_DataType
	raw      []byte // little-endian elements
	count    int    // number of elements in raw
	imported *onnxpb.TensorProto
}

type node struct {
	op      string
	inputs  []string
	outputs []string
	attrs   []Attr
	// imported is a node taken as is from another model (see Import).
	imported *onnxpb.NodeProto
}

type keyValue struct{ key, value string }

// New returns an empty Graph named name that imports the ai.onnx opset DefaultOpset.
func New(name string) *Graph {
	return &Graph{name: name, opset: DefaultOpset}
}

// SetOpset sets the ai.onnx opset version the model imports.
func (g *Graph) SetOpset(version int64) { g.opset = version }

// SetDoc sets the model's doc_string, a human-readable description.
func (g *Graph) SetDoc(doc string) { g.doc = doc }

// Input declares a float32 graph input with fixed dims (at least one, each >= 1).
func (g *Graph) Input(name string, dims ...int64) {
	g.inputs = append(g.inputs, value{name: name, dims: clone(dims)})
}

// Output declares a float32 graph output with fixed dims (at least one, each >= 1). The
// value must be a graph input, an initializer or a node output.
func (g *Graph) Output(name string, dims ...int64) {
	g.outputs = append(g.outputs, value{name: name, dims: clone(dims)})
}

// Initializer adds a constant float32 tensor with the given dims (nil or empty for a
// scalar) and row-major data; len(data) must equal the product of dims. data is copied.
func (g *Graph) Initializer(name string, dims []int64, data []float32) {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	g.inits = append(g.inits, initializer{name: name, dims: clone(dims),
		dataType: onnxpb.TensorProto_FLOAT, raw: raw, count: len(data)})
}

// InitializerInt64 adds a constant int64 tensor, as operators such as Pad and Reshape take
// for their pads and shape inputs. Otherwise as Initializer.
func (g *Graph) InitializerInt64(name string, dims []int64, data []int64) {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	g.inits = append(g.inits, initializer{name: name, dims: clone(dims),
		dataType: onnxpb.TensorProto_INT64, raw: raw, count: len(data)})
}

// Node appends an ai.onnx operator node of type op (e.g. "Conv") reading inputs and
// writing outputs. Nodes are named "<op>_<index>".
func (g *Graph) Node(op string, inputs, outputs []string, attrs ...Attr) {
	g.nodes = append(g.nodes, node{op: op, inputs: clone(inputs), outputs: clone(outputs),
		attrs: append([]Attr(nil), attrs...)})
}

// Import appends nodes and initializers taken as they are from another model (a user's
// backbone), after the nodes added so far. Their names must not clash with the graph's own
// (rename them first); attributes of any type and initializers of any element type are
// kept. The nodes must be of the default ai.onnx domain and valid at the graph's opset:
// Import copies, the caller checks meaning. Ordering and names are checked like Node's.
func (g *Graph) Import(nodes []*onnxpb.NodeProto, inits []*onnxpb.TensorProto) {
	for _, t := range inits {
		g.inits = append(g.inits, initializer{name: t.GetName(), dims: clone(t.Dims), imported: proto.Clone(t).(*onnxpb.TensorProto)})
	}
	for _, n := range nodes {
		g.nodes = append(g.nodes, node{op: n.GetOpType(), inputs: clone(n.Input), outputs: clone(n.Output),
			imported: proto.Clone(n).(*onnxpb.NodeProto)})
	}
}

// Opset is the ai.onnx opset version the model imports.
func (g *Graph) Opset() int64 { return g.opset }

// Meta adds a metadata_props entry (key, value) to the model. Keys must be unique.
func (g *Graph) Meta(key, value string) {
	g.meta = append(g.meta, keyValue{key, value})
}

// Attr is one node attribute; make it with Int, Ints, Float, Floats or String.
type Attr struct {
	name   string
	typ    onnxpb.AttributeProto_AttributeType
	i      int64
	f      float32
	s      string
	ints   []int64
	floats []float32
}

// Int is an integer attribute.
func Int(name string, v int64) Attr {
	return Attr{name: name, typ: onnxpb.AttributeProto_INT, i: v}
}

// Ints is a list-of-integers attribute (kernel_shape, pads, axes, ...).
func Ints(name string, v ...int64) Attr {
	return Attr{name: name, typ: onnxpb.AttributeProto_INTS, ints: clone(v)}
}

// Float is a float attribute.
func Float(name string, v float32) Attr {
	return Attr{name: name, typ: onnxpb.AttributeProto_FLOAT, f: v}
}

// Floats is a list-of-floats attribute.
func Floats(name string, v ...float32) Attr {
	return Attr{name: name, typ: onnxpb.AttributeProto_FLOATS, floats: clone(v)}
}

// String is a string attribute (e.g. Pad's mode "reflect").
func String(name, v string) Attr {
	return Attr{name: name, typ: onnxpb.AttributeProto_STRING, s: v}
}

func (a Attr) proto() *onnxpb.AttributeProto {
	p := &onnxpb.AttributeProto{Name: proto.String(a.name), Type: a.typ.Enum()}
	switch a.typ {
	case onnxpb.AttributeProto_INT:
		p.I = proto.Int64(a.i)
	case onnxpb.AttributeProto_INTS:
		p.Ints = clone(a.ints)
	case onnxpb.AttributeProto_FLOAT:
		p.F = proto.Float32(a.f)
	case onnxpb.AttributeProto_FLOATS:
		p.Floats = clone(a.floats)
	case onnxpb.AttributeProto_STRING:
		p.S = []byte(a.s)
	}
	return p
}

// Marshal checks the graph and returns the serialized ONNX model.
func (g *Graph) Marshal() ([]byte, error) {
	m, err := g.Proto()
	if err != nil {
		return nil, err
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("onnxgraph: marshal %q: %w", g.name, err)
	}
	return data, nil
}

// Proto checks the graph and returns it as a fresh ModelProto, for callers that want to
// adjust something the Graph does not offer before marshaling it themselves.
func (g *Graph) Proto() (*onnxpb.ModelProto, error) {
	if err := g.check(); err != nil {
		return nil, fmt.Errorf("onnxgraph: graph %q: %w", g.name, err)
	}
	gp := &onnxpb.GraphProto{Name: proto.String(g.name)}
	for _, v := range g.inputs {
		gp.Input = append(gp.Input, valueInfo(v))
	}
	for _, v := range g.outputs {
		gp.Output = append(gp.Output, valueInfo(v))
	}
	for _, in := range g.inits {
		if in.imported != nil {
			gp.Initializer = append(gp.Initializer, proto.Clone(in.imported).(*onnxpb.TensorProto))
			continue
		}
		gp.Initializer = append(gp.Initializer, &onnxpb.TensorProto{
			Name:     proto.String(in.name),
			Dims:     clone(in.dims),
			DataType: proto.Int32(int32(in.dataType)),
			RawData:  clone(in.raw),
		})
	}
	for i, n := range g.nodes {
		if n.imported != nil {
			np := proto.Clone(n.imported).(*onnxpb.NodeProto)
			np.Name = proto.String(fmt.Sprintf("%s_%d", n.op, i))
			gp.Node = append(gp.Node, np)
			continue
		}
		np := &onnxpb.NodeProto{
			Name:   proto.String(fmt.Sprintf("%s_%d", n.op, i)),
			OpType: proto.String(n.op),
			Input:  clone(n.inputs),
			Output: clone(n.outputs),
		}
		for _, a := range n.attrs {
			np.Attribute = append(np.Attribute, a.proto())
		}
		gp.Node = append(gp.Node, np)
	}
	m := &onnxpb.ModelProto{
		IrVersion:    proto.Int64(IRVersion),
		ProducerName: proto.String(ProducerName),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(g.opset)}},
		Graph:        gp,
	}
	if g.doc != "" {
		m.DocString = proto.String(g.doc)
	}
	for _, kv := range g.meta {
		m.MetadataProps = append(m.MetadataProps,
			&onnxpb.StringStringEntryProto{Key: proto.String(kv.key), Value: proto.String(kv.value)})
	}
	return m, nil
}

func valueInfo(v value) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range v.dims {
		shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{
			Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(v.name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape:    shape,
		}}},
	}
}

// check reports the first structural mistake in g.
func (g *Graph) check() error {
	if g.name == "" {
		return errors.New("graph has no name")
	}
	if g.opset < 1 {
		return fmt.Errorf("opset %d: want >= 1", g.opset)
	}
	// defined maps every value name to what defines it, for "duplicate" messages.
	defined := map[string]string{}
	define := func(name, what string) error {
		if name == "" {
			return fmt.Errorf("%s has an empty name", what)
		}
		if prev, ok := defined[name]; ok {
			return fmt.Errorf("duplicate name %q: %s and %s", name, prev, what)
		}
		defined[name] = what
		return nil
	}
	for _, v := range g.inputs {
		if err := define(v.name, "input "+quote(v.name)); err != nil {
			return err
		}
		if err := checkDims(v.dims, false); err != nil {
			return fmt.Errorf("input %q: %w", v.name, err)
		}
	}
	for _, in := range g.inits {
		if err := define(in.name, "initializer "+quote(in.name)); err != nil {
			return err
		}
		if in.imported != nil {
			continue // another model's tensor: its data is its own business
		}
		if err := checkDims(in.dims, true); err != nil {
			return fmt.Errorf("initializer %q: %w", in.name, err)
		}
		if want := product(in.dims); int64(in.count) != want {
			return fmt.Errorf("initializer %q: %d values for dims %v, want %d", in.name, in.count, in.dims, want)
		}
	}
	for i, n := range g.nodes {
		what := fmt.Sprintf("node %d (%s)", i, n.op)
		if n.op == "" {
			return fmt.Errorf("node %d has no operator type", i)
		}
		if len(n.outputs) == 0 {
			return fmt.Errorf("%s has no outputs", what)
		}
		for _, in := range n.inputs {
			if in == "" {
				continue // omitted optional input
			}
			if _, ok := defined[in]; !ok {
				return fmt.Errorf("%s reads %q, which is neither a graph input, an initializer nor an output of an earlier node", what, in)
			}
		}
		attrs := map[string]bool{}
		for _, a := range n.attrs {
			if a.name == "" || a.typ == onnxpb.AttributeProto_UNDEFINED {
				return fmt.Errorf("%s has an attribute without name or type (make them with Int, Ints, Float, Floats, String)", what)
			}
			if attrs[a.name] {
				return fmt.Errorf("%s has attribute %q twice", what, a.name)
			}
			attrs[a.name] = true
		}
		for _, out := range n.outputs {
			if err := define(out, what+" output "+quote(out)); err != nil {
				return err
			}
		}
	}
	if len(g.outputs) == 0 {
		return errors.New("graph has no outputs")
	}
	outs := map[string]bool{}
	for _, v := range g.outputs {
		if outs[v.name] {
			return fmt.Errorf("output %q declared twice", v.name)
		}
		outs[v.name] = true
		if _, ok := defined[v.name]; !ok {
			return fmt.Errorf("output %q is neither a graph input, an initializer nor a node output", v.name)
		}
		if err := checkDims(v.dims, false); err != nil {
			return fmt.Errorf("output %q: %w", v.name, err)
		}
	}
	keys := map[string]bool{}
	for _, kv := range g.meta {
		if kv.key == "" {
			return errors.New("metadata key is empty")
		}
		if keys[kv.key] {
			return fmt.Errorf("duplicate metadata key %q", kv.key)
		}
		keys[kv.key] = true
	}
	return nil
}

func checkDims(dims []int64, scalarOK bool) error {
	if len(dims) == 0 && !scalarOK {
		return errors.New("no dims (rank 0); give the fixed shape")
	}
	for _, d := range dims {
		if d < 1 {
			return fmt.Errorf("dims %v: every dim must be a fixed size >= 1", dims)
		}
	}
	return nil
}

func product(dims []int64) int64 {
	p := int64(1)
	for _, d := range dims {
		p *= d
	}
	return p
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

func clone[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append([]T(nil), s...)
}
