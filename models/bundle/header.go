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
	opset        int64 // ai.onnx opset import; 0 when the model imports none
}

// Opset is the model's ai.onnx opset import; 0 when it imports none.
func (h *ModelHeader) Opset() int64 { return h.opset }

// Meta is the model's metadata_props (takt.* keys among them); the caller must not modify it.
func (h *ModelHeader) Meta() map[string]string { return h.meta }

// valueSpec is one graph input or output. dims holds -1 for a dynamic or unknown dim.
type valueSpec struct {
	name     string
	tensor   bool // a tensor (not a sequence, map, ...)
	elemType onnxpb.TensorProto_DataType
	dims     []int64
	ranked   bool // the shape is known (dims may still hold -1)
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
				shape += "?"
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
	h := &ModelHeader{meta: map[string]string{}}
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
	return h, nil
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
		} else {
			s.dims = append(s.dims, -1)
		}
	}
	return s
}
