package bundle

import (
	"fmt"
	"strconv"

	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Metadata keys (ONNX metadata_props) Takt writes into its models and reads back.
const (
	MetaTask          = "takt.task"           // "anomaly" | "classification"
	MetaName          = "takt.name"           // model name
	MetaVersion       = "takt.version"        // model version, semantic
	MetaInput         = "takt.input"          // InputShape.String()
	MetaThreshold     = "takt.threshold"      // score above it is anomalous; "0" or absent: config decides
	MetaTrainedImages = "takt.trained_images" // number of good images
	MetaTrainedAt     = "takt.trained_at"     // RFC 3339 UTC
	MetaMethod        = "takt.method"         // how the model was made, with its parameters
)

// ModelHeader is what Takt needs to know about an ONNX file before running it: read with
// protowire so that weights (initializers, nodes) are skipped, not copied.
type ModelHeader struct {
	irVersion    int64
	modelVersion int64
	graphName    string
	inputs       []valueSpec // graph inputs that are not initializers
	outputs      []valueSpec
	meta         map[string]string
	opset        int64             // ai.onnx opset import; 0 when the model imports none
	producers    map[string]string // graph output name -> op_type of the node that writes it
	ops          map[string]int    // "domain:op_type" (domain empty for ai.onnx) -> node count
}

// Opset is the model's ai.onnx opset import; 0 when it imports none.
func (h *ModelHeader) Opset() int64 { return h.opset }

// Meta is the model's metadata_props (takt.* keys among them); the caller must not modify it.
func (h *ModelHeader) Meta() map[string]string { return h.meta }

// IRVersion is the model's ONNX IR version.
func (h *ModelHeader) IRVersion() int64 { return h.irVersion }

// GraphName is the name of the model's main graph.
func (h *ModelHeader) GraphName() string { return h.graphName }

// Inputs describes the graph inputs that are not initializers, in graph order.
func (h *ModelHeader) Inputs() []TensorInfo { return tensorInfos(h.inputs) }

// Outputs describes the graph outputs, in graph order.
func (h *ModelHeader) Outputs() []TensorInfo { return tensorInfos(h.outputs) }

// ProducerOp is the op_type of the node of the main graph that writes output name; "" when
// none does (an output that is a graph input or initializer).
func (h *ModelHeader) ProducerOp(name string) string { return h.producers[name] }

// Ops counts the nodes of the main graph per operator, keyed "op_type" for ai.onnx and
// "domain:op_type" for other domains (custom operators).
func (h *ModelHeader) Ops() map[string]int { return h.ops }

// TensorInfo describes one graph input or output.
type TensorInfo struct {
	Name string
	// Tensor is false for a sequence, map or optional value.
	Tensor bool
	// Elem is the element type: "float32", or ONNX's name (INT64, BOOL, ...).
	Elem string
	// Ranked is false when the model gives no shape.
	Ranked bool
	// Dims holds -1 for a dynamic or unknown dim; DimNames the symbolic name of such a
	// dim ("batch_size", "height"), "" where there is none.
	Dims     []int64
	DimNames []string
}

// String shows the tensor as the model declares it, e.g. "input" float32 [batch_size,3,height,width].
func (t TensorInfo) String() string { return specFromInfo(t).String() }

func tensorInfos(vs []valueSpec) []TensorInfo {
	out := make([]TensorInfo, len(vs))
	for i, v := range vs {
		out[i] = TensorInfo{Name: v.name, Tensor: v.tensor, Elem: elemName(v.elemType), Ranked: v.ranked,
			Dims: append([]int64(nil), v.dims...), DimNames: append([]string(nil), v.dimNames...)}
	}
	return out
}

func specFromInfo(t TensorInfo) valueSpec {
	v := valueSpec{name: t.Name, tensor: t.Tensor, dims: t.Dims, dimNames: t.DimNames, ranked: t.Ranked}
	if t.Elem == "float32" {
		v.elemType = onnxpb.TensorProto_FLOAT
	} else {
		v.elemType = onnxpb.TensorProto_DataType(onnxpb.TensorProto_DataType_value[t.Elem])
	}
	return v
}

// valueSpec is one graph input or output. dims holds -1 for a dynamic or unknown dim.
type valueSpec struct {
	name     string
	tensor   bool // a tensor (not a sequence, map, ...)
	elemType onnxpb.TensorProto_DataType
	dims     []int64
	dimNames []string // dim_param of dynamic dims, "" elsewhere
	ranked   bool     // the shape is known (dims may still hold -1)
}

func (v valueSpec) String() string {
	if !v.tensor {
		return fmt.Sprintf("%q (not a tensor)", v.name)
	}
	shape := "unknown shape"
	if v.ranked {
		shape = "["
		for i, d := range v.dims {
			if i > 0 {
				shape += ","
			}
			if d < 0 {
				if i < len(v.dimNames) && v.dimNames[i] != "" {
					shape += v.dimNames[i]
				} else {
					shape += "?"
				}
			} else {
				shape += strconv.FormatInt(d, 10)
			}
		}
		shape += "]"
	}
	return fmt.Sprintf("%q %s %s", v.name, elemName(v.elemType), shape)
}

func elemName(t onnxpb.TensorProto_DataType) string {
	if t == onnxpb.TensorProto_FLOAT {
		return "float32"
	}
	return onnxpb.TensorProto_DataType_name[int32(t)]
}

// InspectModel reads the header of a serialized ONNX ModelProto. Errors wrap
// ErrInvalidModel.
func InspectModel(data []byte) (*ModelHeader, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty file", ErrInvalidModel)
	}
	h := &ModelHeader{meta: map[string]string{}, producers: map[string]string{}, ops: map[string]int{}}
	var graph []byte
	haveGraph := false
	err := walkFields(data, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			h.irVersion = int64(v)
		case num == 5 && typ == protowire.VarintType:
			h.modelVersion = int64(v)
		case num == 7 && typ == protowire.BytesType:
			graph, haveGraph = b, true
		case num == 8 && typ == protowire.BytesType:
			var op onnxpb.OperatorSetIdProto
			if err := proto.Unmarshal(b, &op); err != nil {
				return fmt.Errorf("opset_import: %w", err)
			}
			if d := op.GetDomain(); d == "" || d == "ai.onnx" {
				h.opset = op.GetVersion()
			}
		case num == 14 && typ == protowire.BytesType:
			var kv onnxpb.StringStringEntryProto
			if err := proto.Unmarshal(b, &kv); err != nil {
				return fmt.Errorf("metadata_props: %w", err)
			}
			h.meta[kv.GetKey()] = kv.GetValue()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v (truncated or not an ONNX file)", ErrInvalidModel, err)
	}
	if h.irVersion <= 0 || !haveGraph {
		return nil, fmt.Errorf("%w: no ir_version or no graph (not an ONNX file)", ErrInvalidModel)
	}
	inits := map[string]bool{}
	var inputs []valueSpec
	err = walkFields(graph, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			return h.addNode(b)
		case 2:
			h.graphName = string(b)
		case 5: // initializer: only its name (field 8) matters here
			return walkFields(b, func(n protowire.Number, t protowire.Type, _ uint64, nb []byte) error {
				if n == 8 && t == protowire.BytesType {
					inits[string(nb)] = true
				}
				return nil
			})
		case 11, 12:
			var vi onnxpb.ValueInfoProto
			if err := proto.Unmarshal(b, &vi); err != nil {
				return fmt.Errorf("graph input/output: %w", err)
			}
			if num == 11 {
				inputs = append(inputs, specOf(&vi))
			} else {
				h.outputs = append(h.outputs, specOf(&vi))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: graph: %v (truncated or not an ONNX file)", ErrInvalidModel, err)
	}
	for _, in := range inputs {
		if !inits[in.name] { // IR < 4 lists initializers as inputs too
			h.inputs = append(h.inputs, in)
		}
	}
	outs := map[string]bool{}
	for _, o := range h.outputs {
		outs[o.name] = true
	}
	for name := range h.producers {
		if !outs[name] {
			delete(h.producers, name)
		}
	}
	return h, nil
}

// addNode counts one NodeProto of the main graph and notes which op writes each of its
// outputs (only graph outputs are kept in the end). Subgraphs of If and Loop are not
// walked: their nodes are attributes.
func (h *ModelHeader) addNode(node []byte) error {
	var opType, domain string
	var outputs []string
	err := walkFields(node, func(n protowire.Number, t protowire.Type, _ uint64, b []byte) error {
		if t != protowire.BytesType {
			return nil
		}
		switch n {
		case 2:
			outputs = append(outputs, string(b))
		case 4:
			opType = string(b)
		case 7:
			domain = string(b)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	key := opType
	if domain != "" && domain != "ai.onnx" {
		key = domain + ":" + opType
	}
	h.ops[key]++
	for _, o := range outputs {
		h.producers[o] = opType
	}
	return nil
}

// walkFields calls fn for every field of one protobuf message; v holds varint and fixed
// values, b the contents of length-delimited fields (a sub-slice of msg, not a copy).
func walkFields(msg []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		var v uint64
		var b []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(msg)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(msg)
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(msg)
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(msg)
		default:
			n = protowire.ConsumeFieldValue(num, typ, msg)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		msg = msg[n:]
		if err := fn(num, typ, v, b); err != nil {
			return err
		}
	}
	return nil
}

func specOf(vi *onnxpb.ValueInfoProto) valueSpec {
	s := valueSpec{name: vi.GetName()}
	tt := vi.GetType().GetTensorType()
	if tt == nil {
		return s
	}
	s.tensor = true
	s.elemType = onnxpb.TensorProto_DataType(tt.GetElemType())
	if tt.Shape == nil {
		return s
	}
	s.ranked = true
	for _, d := range tt.GetShape().GetDim() {
		if dv, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); ok && dv.DimValue > 0 {
			s.dims = append(s.dims, dv.DimValue)
			s.dimNames = append(s.dimNames, "")
		} else {
			s.dims = append(s.dims, -1)
			s.dimNames = append(s.dimNames, d.GetDimParam())
		}
	}
	return s
}
