// Package tfjs converts a TensorFlow.js graph model (the model.json and weight shards that
// tensorflowjs_converter writes, --output_format=tfjs_graph_model) to an ONNX model, so a
// network trained elsewhere (an ImageNet MobileNet, a fine-tuned classifier) can serve as
// Takt's backbone (backbone.Options in models/train/backbone, `takt model train --backbone`).
//
// # What comes out
//
// A 4-D image input NHWC in TensorFlow becomes NCHW in ONNX (Takt's backbone contract), and
// so does every 4-D feature map inside: convolution weights are transposed once at
// conversion, operators that care about the layout (convolutions, pooling, per-channel
// constants, Squeeze and Mean over the spatial axes) are written for NCHW, and anything
// else gets its input transposed back to NHWC first, so the result always means what the
// TensorFlow graph meant. Every TF node's output keeps the node's name as its ONNX tensor
// name: `--layer` names a block output as TensorFlow called it (e.g.
// ".../MobilenetV2/expanded_conv_5/add"). The batch dimension stays symbolic when the TF
// placeholder's is -1; the spatial size is the placeholder's unless Options override it
// (a fully convolutional cut runs at any size: TF's "SAME" padding becomes ONNX's
// SAME_UPPER, which puts the odd pixel at the bottom/right as TF does).
//
// Weights quantized by the TF.js converter (uint8 or uint16 affine, float16) are
// dequantized to float32.
//
// # Operators
//
// Placeholder, Const, Identity, Add, AddV2, Sub, Mul, RealDiv, Maximum, Minimum, BiasAdd,
// Relu, Relu6, Sigmoid, Conv2D, _FusedConv2D, DepthwiseConv2dNative,
// FusedDepthwiseConv2dNative (fused BiasAdd then Relu, Relu6, LeakyRelu or Sigmoid),
// AvgPool, MaxPool, Mean, Squeeze, Reshape, MatMul, _FusedMatMul, Softmax. Anything else is
// refused with the node's name and operator; so is NCHW data_format.
package tfjs

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Opset is the ai.onnx opset of the converted model (Takt runs backbones at 17).
const Opset = 17

// Options tunes Convert. Zero fields keep the model's own.
type Options struct {
	// Width and Height fix the image input's spatial size (both or neither), e.g. to run a
	// 224 px ImageNet backbone at the inspection's 128 px; the layers after a global pool or
	// a flatten may then no longer fit, which ONNX Runtime reports when it loads the model.
	Width, Height int
}

// ConvertDir converts the graph model in dir: dir/model.json and the shard files its
// weightsManifest names, relative to dir.
func ConvertDir(dir string, o Options) ([]byte, error) {
	js, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		return nil, fmt.Errorf("tfjs: %w", err)
	}
	return Convert(js, func(p string) ([]byte, error) {
		if filepath.IsAbs(p) || strings.Contains(filepath.ToSlash(p), "..") {
			return nil, fmt.Errorf("shard path %q leaves the model's folder", p)
		}
		return os.ReadFile(filepath.Join(dir, p))
	}, o)
}

// Convert converts a graph model: modelJSON is model.json, shard reads a weight file by
// the path the manifest gives.
func Convert(modelJSON []byte, shard func(path string) ([]byte, error), o Options) ([]byte, error) {
	var m modelFile
	if err := json.Unmarshal(modelJSON, &m); err != nil {
		return nil, fmt.Errorf("tfjs: model.json: %w", err)
	}
	if m.Format != "" && m.Format != "graph-model" {
		return nil, fmt.Errorf("tfjs: model.json has format %q: only graph models (tensorflowjs_converter --output_format=tfjs_graph_model) are supported; a Keras layers-model must be converted to a graph model first", m.Format)
	}
	if len(m.Topology.Node) == 0 {
		return nil, errors.New("tfjs: model.json has no modelTopology.node: not a TF.js graph model")
	}
	if (o.Width > 0) != (o.Height > 0) || o.Width < 0 || o.Height < 0 {
		return nil, fmt.Errorf("tfjs: input size %dx%d: give both width and height (>= 1) or neither", o.Width, o.Height)
	}
	weights, err := readWeights(m.Manifest, shard)
	if err != nil {
		return nil, err
	}
	c := &converter{g: onnxgraph.New("tfjs"), consts: map[string]*tensor{}, layout: map[string]bool{},
		defined: map[string]bool{}, opts: o, weights: weights, cache: map[string]string{}}
	c.g.SetOpset(Opset)
	c.g.SetDoc("converted from a TensorFlow.js graph model by takt (" + m.ConvertedBy + ")")
	return c.run(m.Topology.Node)
}

type modelFile struct {
	Format      string `json:"format"`
	ConvertedBy string `json:"convertedBy"`
	Topology    struct {
		Node []tfNode `json:"node"`
	} `json:"modelTopology"`
	Manifest []struct {
		Paths   []string     `json:"paths"`
		Weights []weightSpec `json:"weights"`
	} `json:"weightsManifest"`
}

type weightSpec struct {
	Name         string  `json:"name"`
	Shape        []int64 `json:"shape"`
	Dtype        string  `json:"dtype"`
	Quantization *struct {
		Min   float64 `json:"min"`
		Scale float64 `json:"scale"`
		Dtype string  `json:"dtype"`
	} `json:"quantization"`
}

type tfNode struct {
	Name  string            `json:"name"`
	Op    string            `json:"op"`
	Input []string          `json:"input"`
	Attr  map[string]tfAttr `json:"attr"`
}

// tfAttr is a TF AttrValue in the JSON mapping of protobuf (bytes are base64, int64s
// are strings).
type tfAttr struct {
	S     string   `json:"s"`
	I     string   `json:"i"`
	F     *float64 `json:"f"`
	B     *bool    `json:"b"`
	Type  string   `json:"type"`
	Shape *struct {
		Dim []struct {
			Size string `json:"size"`
		} `json:"dim"`
	} `json:"shape"`
	List *struct {
		S []string  `json:"s"`
		I []string  `json:"i"`
		F []float64 `json:"f"`
	} `json:"list"`
}

// tensor is a constant: float32 data or int64 (TF int32) data, TF's shape.
type tensor struct {
	shape []int64
	f     []float32
	i     []int64
	isInt bool
}

func (t *tensor) size() int64 {
	n := int64(1)
	for _, d := range t.shape {
		n *= d
	}
	return n
}

// readWeights reads every manifest group's shards, concatenated, into named tensors.
func readWeights(manifest []struct {
	Paths   []string     `json:"paths"`
	Weights []weightSpec `json:"weights"`
}, shard func(string) ([]byte, error)) (map[string]*tensor, error) {
	out := map[string]*tensor{}
	for gi, group := range manifest {
		var buf []byte
		for _, p := range group.Paths {
			b, err := shard(p)
			if err != nil {
				return nil, fmt.Errorf("tfjs: weights group %d: %w", gi, err)
			}
			buf = append(buf, b...)
		}
		off := 0
		for _, w := range group.Weights {
			t := &tensor{shape: slices.Clone(w.Shape)}
			for _, d := range w.Shape {
				if d < 0 {
					return nil, fmt.Errorf("tfjs: weight %q has shape %v", w.Name, w.Shape)
				}
			}
			n := int(t.size())
			kind := w.Dtype
			if w.Quantization != nil {
				kind = w.Quantization.Dtype
			}
			var width int
			switch kind {
			case "float32", "int32":
				width = 4
			case "uint16", "float16":
				width = 2
			case "uint8", "bool":
				width = 1
			default:
				return nil, fmt.Errorf("tfjs: weight %q has dtype %q: unsupported (want float32, int32 or bool, quantized uint8, uint16 or float16)", w.Name, kind)
			}
			if off+n*width > len(buf) {
				return nil, fmt.Errorf("tfjs: weight %q needs bytes %d..%d but the shards of group %d hold %d: a shard is missing or truncated", w.Name, off, off+n*width, gi, len(buf))
			}
			b := buf[off : off+n*width]
			off += n * width
			switch {
			case w.Dtype == "int32" && w.Quantization == nil:
				t.isInt = true
				t.i = make([]int64, n)
				for k := range n {
					t.i[k] = int64(int32(binary.LittleEndian.Uint32(b[4*k:])))
				}
			case w.Dtype == "bool":
				t.isInt = true
				t.i = make([]int64, n)
				for k := range n {
					t.i[k] = int64(b[k])
				}
			case w.Dtype != "float32" && w.Dtype != "int32":
				return nil, fmt.Errorf("tfjs: weight %q has dtype %q: unsupported", w.Name, w.Dtype)
			default:
				t.f = make([]float32, n)
				for k := range n {
					switch kind {
					case "float32":
						t.f[k] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*k:]))
					case "uint8":
						t.f[k] = float32(float64(b[k])*w.Quantization.Scale + w.Quantization.Min)
					case "uint16":
						t.f[k] = float32(float64(binary.LittleEndian.Uint16(b[2*k:]))*w.Quantization.Scale + w.Quantization.Min)
					case "float16":
						t.f[k] = halfToFloat(binary.LittleEndian.Uint16(b[2*k:]))
					default:
						return nil, fmt.Errorf("tfjs: weight %q: quantization %q of %s: unsupported", w.Name, kind, w.Dtype)
					}
				}
				if w.Dtype == "int32" { // quantized int32: round back
					t.isInt, t.i = true, make([]int64, n)
					for k, v := range t.f {
						t.i[k] = int64(math.Round(float64(v)))
					}
					t.f = nil
				}
			}
			out[w.Name] = t
		}
		if off != len(buf) {
			return nil, fmt.Errorf("tfjs: weights group %d: the manifest describes %d bytes, the shards hold %d", gi, off, len(buf))
		}
	}
	return out, nil
}

func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		return float32(math.Ldexp(float64(frac)/1024, -14)) * float32(1-2*int(h>>15))
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

type converter struct {
	g       *onnxgraph.Graph
	opts    Options
	weights map[string]*tensor
	consts  map[string]*tensor // TF Const nodes by name
	// layout[name] is true for a 4-D tensor TF sees as NHWC and ONNX holds as NCHW.
	layout  map[string]bool
	defined map[string]bool   // ONNX values written (or graph inputs)
	cache   map[string]string // derived values (transposes, reshaped constants) by key
	inputs  []inputInfo
	used    map[string]bool
}

type inputInfo struct {
	name string
	dims []int64 // ONNX dims; -1 symbolic
}

func (c *converter) run(nodes []tfNode) ([]byte, error) {
	c.used = map[string]bool{}
	for _, n := range nodes {
		for _, in := range n.Input {
			c.used[tensorName(in)] = true
		}
	}
	var outs []string
	for _, n := range nodes {
		if err := c.node(n); err != nil {
			return nil, fmt.Errorf("tfjs: node %q (%s): %w", n.Name, n.Op, err)
		}
		if n.Op != "Const" && n.Op != "Placeholder" && !c.used[n.Name] {
			outs = append(outs, n.Name)
		}
	}
	if len(c.inputs) == 0 {
		return nil, errors.New("tfjs: the graph has no Placeholder input")
	}
	if len(outs) == 0 {
		return nil, errors.New("tfjs: the graph has no outputs")
	}
	for _, o := range outs {
		// Outputs as TensorFlow sees them: NHWC back when the value is NCHW here.
		if c.layout[o] {
			nhwc, err := c.plain(o)
			if err != nil {
				return nil, err
			}
			c.g.Node("Identity", []string{nhwc}, []string{o + ":nhwc"})
			o += ":nhwc"
		}
		c.g.Output(o, 1)
	}
	for _, in := range c.inputs {
		c.g.Input(in.name, fixedDims(in.dims)...)
	}
	m, err := c.g.Proto()
	if err != nil {
		return nil, fmt.Errorf("tfjs: %w", err)
	}
	// The writer declares fixed shapes; a TF -1 is a symbolic dim, and output shapes are
	// left for ONNX Runtime to infer.
	for i, in := range c.inputs {
		for d, v := range in.dims {
			if v < 0 {
				m.Graph.Input[i].Type.GetTensorType().Shape.Dim[d].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
			}
		}
	}
	for _, o := range m.Graph.Output {
		o.Type.GetTensorType().Shape = nil
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("tfjs: marshal: %w", err)
	}
	return data, nil
}

func fixedDims(d []int64) []int64 {
	out := make([]int64, len(d))
	for i, v := range d {
		out[i] = max(v, 1)
	}
	return out
}

// tensorName strips TF's ":0" output index and "^" control inputs.
func tensorName(s string) string {
	s = strings.TrimPrefix(s, "^")
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if _, err := strconv.Atoi(s[i+1:]); err == nil {
			return s[:i]
		}
	}
	return s
}

// inputsOf are n's data inputs (control inputs dropped), by node name; a ":k" output other
// than 0 is refused.
func inputsOf(n tfNode) ([]string, error) {
	var out []string
	for _, in := range n.Input {
		if strings.HasPrefix(in, "^") {
			continue
		}
		if i := strings.LastIndexByte(in, ':'); i >= 0 {
			if k, err := strconv.Atoi(in[i+1:]); err == nil && k != 0 {
				return nil, fmt.Errorf("reads output %d of %q: only single-output operators are supported", k, in[:i])
			}
		}
		out = append(out, tensorName(in))
	}
	return out, nil
}

func (c *converter) node(n tfNode) error {
	ins, err := inputsOf(n)
	if err != nil {
		return err
	}
	if df := n.str("data_format"); df != "" && df != "NHWC" {
		return fmt.Errorf("data_format %s: only NHWC is supported (what TF.js runs)", df)
	}
	want := func(k int) error {
		if len(ins) != k {
			return fmt.Errorf("%d inputs, want %d", len(ins), k)
		}
		return nil
	}
	switch n.Op {
	case "Placeholder":
		return c.placeholder(n)
	case "Const":
		t, ok := c.weights[n.Name]
		if !ok {
			return errors.New("no weights for this constant in the weightsManifest")
		}
		c.consts[n.Name] = t
		return nil
	case "Identity":
		if err := want(1); err != nil {
			return err
		}
		if t, ok := c.consts[ins[0]]; ok {
			c.consts[n.Name] = t
			return nil
		}
		return c.unary("Identity", ins[0], n.Name)
	case "Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum", "BiasAdd":
		if err := want(2); err != nil {
			return err
		}
		op := map[string]string{"Add": "Add", "AddV2": "Add", "BiasAdd": "Add", "Sub": "Sub", "Mul": "Mul", "RealDiv": "Div",
			"Maximum": "Max", "Minimum": "Min"}[n.Op]
		return c.binary(op, ins[0], ins[1], n.Name)
	case "Relu", "Sigmoid":
		if err := want(1); err != nil {
			return err
		}
		return c.unary(n.Op, ins[0], n.Name)
	case "Relu6":
		if err := want(1); err != nil {
			return err
		}
		x, err := c.value(ins[0])
		if err != nil {
			return err
		}
		c.relu6(x, n.Name)
		c.layout[n.Name] = c.layout[ins[0]]
		return nil
	case "Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative":
		return c.conv(n, ins)
	case "AvgPool", "MaxPool":
		if err := want(1); err != nil {
			return err
		}
		return c.pool(n, ins[0])
	case "Mean":
		if err := want(2); err != nil {
			return err
		}
		return c.mean(n, ins)
	case "Squeeze":
		if err := want(1); err != nil {
			return err
		}
		return c.squeeze(n, ins[0])
	case "Reshape":
		if err := want(2); err != nil {
			return err
		}
		shape, ok := c.consts[ins[1]]
		if !ok || !shape.isInt {
			return errors.New("the target shape is not an int32 constant: unsupported")
		}
		x, err := c.plain(ins[0])
		if err != nil {
			return err
		}
		c.g.InitializerInt64(n.Name+"/shape", []int64{int64(len(shape.i))}, shape.i)
		c.g.Node("Reshape", []string{x, n.Name + "/shape"}, []string{n.Name})
		c.defined[n.Name] = true
		return nil
	case "MatMul", "_FusedMatMul":
		return c.matmul(n, ins)
	case "Softmax":
		if err := want(1); err != nil {
			return err
		}
		x, err := c.plain(ins[0])
		if err != nil {
			return err
		}
		c.g.Node("Softmax", []string{x}, []string{n.Name}, onnxgraph.Int("axis", -1))
		c.defined[n.Name] = true
		return nil
	}
	return fmt.Errorf("operator %s is not supported by the converter (supported: Conv2D, DepthwiseConv2dNative and their fused forms, pooling, Mean, Squeeze, Reshape, MatMul, Softmax and element-wise arithmetic and activations)", n.Op)
}

func (n tfNode) str(key string) string {
	a, ok := n.Attr[key]
	if !ok || a.S == "" {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(a.S)
	if err != nil {
		return a.S
	}
	return string(b)
}

func (n tfNode) ints(key string) ([]int64, error) {
	a, ok := n.Attr[key]
	if !ok || a.List == nil {
		return nil, nil
	}
	out := make([]int64, len(a.List.I))
	for i, s := range a.List.I {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %q is not an integer", key, s)
		}
		out[i] = v
	}
	return out, nil
}

func (n tfNode) strs(key string) []string {
	a, ok := n.Attr[key]
	if !ok || a.List == nil {
		return nil
	}
	var out []string
	for _, s := range a.List.S {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			out = append(out, s)
			continue
		}
		out = append(out, string(b))
	}
	return out
}

func (c *converter) placeholder(n tfNode) error {
	if t := n.Attr["dtype"].Type; t != "" && t != "DT_FLOAT" {
		return fmt.Errorf("input of type %s: only float inputs are supported", t)
	}
	sh := n.Attr["shape"].Shape
	if sh == nil || len(sh.Dim) == 0 {
		return errors.New("input without a known shape: unsupported (the placeholder needs its rank and spatial size)")
	}
	dims := make([]int64, len(sh.Dim))
	for i, d := range sh.Dim {
		v, err := strconv.ParseInt(d.Size, 10, 64)
		if err != nil {
			return fmt.Errorf("input dim %q", d.Size)
		}
		dims[i] = v
	}
	if len(dims) == 4 {
		if c.opts.Width > 0 {
			dims[1], dims[2] = int64(c.opts.Height), int64(c.opts.Width)
		}
		if dims[1] < 1 || dims[2] < 1 {
			return fmt.Errorf("image input %v has no fixed height and width: give the size to convert at", dims)
		}
		if dims[3] < 1 {
			return fmt.Errorf("image input %v has no fixed channel count", dims)
		}
		c.inputs = append(c.inputs, inputInfo{name: n.Name, dims: []int64{dims[0], dims[3], dims[1], dims[2]}})
		c.layout[n.Name] = true
	} else {
		for i, d := range dims[1:] {
			if d < 1 {
				return fmt.Errorf("input dim %d is %d: only the batch may be symbolic", i+1, d)
			}
		}
		c.inputs = append(c.inputs, inputInfo{name: n.Name, dims: dims})
	}
	c.defined[n.Name] = true
	return nil
}

// value is the ONNX value of TF tensor name as it is stored (a constant is written as a
// float or int64 initializer of TF's shape on first use).
func (c *converter) value(name string) (string, error) {
	if c.defined[name] {
		return name, nil
	}
	t, ok := c.consts[name]
	if !ok {
		return "", fmt.Errorf("input %q is not defined before its use (or its operator was not converted)", name)
	}
	if t.isInt {
		c.g.InitializerInt64(name, t.shape, t.i)
	} else {
		c.g.Initializer(name, t.shape, t.f)
	}
	c.defined[name] = true
	return name, nil
}

// plain is name as TensorFlow lays it out (NHWC for 4-D), transposing back if needed.
func (c *converter) plain(name string) (string, error) {
	v, err := c.value(name)
	if err != nil || !c.layout[name] {
		return v, err
	}
	key := "nhwc:" + name
	if out, ok := c.cache[key]; ok {
		return out, nil
	}
	out := name + ":nhwc"
	c.g.Node("Transpose", []string{v}, []string{out}, onnxgraph.Ints("perm", 0, 2, 3, 1))
	c.cache[key] = out
	return out, nil
}

func (c *converter) unary(op, in, out string) error {
	x, err := c.value(in)
	if err != nil {
		return err
	}
	c.g.Node(op, []string{x}, []string{out})
	c.layout[out] = c.layout[in]
	c.defined[out] = true
	return nil
}

func (c *converter) relu6(x, out string) {
	if _, ok := c.cache["relu6"]; !ok {
		c.g.Initializer("tfjs/zero", nil, []float32{0})
		c.g.Initializer("tfjs/six", nil, []float32{6})
		c.cache["relu6"] = ""
	}
	c.g.Node("Clip", []string{x, "tfjs/zero", "tfjs/six"}, []string{out})
	c.defined[out] = true
}

// binary writes an element-wise op. With a NCHW operand, a constant scalar, per-channel
// vector or 4-D tensor is laid out to match; anything else computes in TF's layout.
func (c *converter) binary(op, a, b, out string) error {
	if c.layout[a] || c.layout[b] {
		ok := true
		var names [2]string
		for i, x := range []string{a, b} {
			if c.layout[x] {
				names[i] = x
				continue
			}
			t, isConst := c.consts[x]
			v, fits := "", false
			if isConst && !t.isInt {
				v, fits = c.constNCHW(x, t)
			}
			if !fits {
				ok = false
				break
			}
			names[i] = v
		}
		if ok {
			c.g.Node(op, names[:], []string{out})
			c.layout[out] = true
			c.defined[out] = true
			return nil
		}
	}
	x, err := c.plain(a)
	if err != nil {
		return err
	}
	y, err := c.plain(b)
	if err != nil {
		return err
	}
	c.g.Node(op, []string{x, y}, []string{out})
	c.defined[out] = true
	return nil
}

// constNCHW writes constant t so that it broadcasts against an NCHW tensor as it did
// against NHWC: scalars as they are, [C] as [C,1,1], 4-D transposed.
func (c *converter) constNCHW(name string, t *tensor) (string, bool) {
	if len(t.shape) == 0 || t.size() == 1 && len(t.shape) <= 1 {
		v, _ := c.value(name)
		return v, true
	}
	key := "nchw:" + name
	if v, ok := c.cache[key]; ok {
		return v, true
	}
	out := name + ":nchw"
	switch len(t.shape) {
	case 1:
		c.g.Initializer(out, []int64{t.shape[0], 1, 1}, t.f)
	case 4:
		n, h, w, ch := t.shape[0], t.shape[1], t.shape[2], t.shape[3]
		d := make([]float32, len(t.f))
		for i := range n {
			for y := range h {
				for x := range w {
					for k := range ch {
						d[((i*ch+k)*h+y)*w+x] = t.f[((i*h+y)*w+x)*ch+k]
					}
				}
			}
		}
		c.g.Initializer(out, []int64{n, ch, h, w}, d)
	default:
		return "", false
	}
	c.cache[key] = out
	c.defined[out] = true
	return out, true
}

func (c *converter) asNCHW(name string) (string, error) {
	v, err := c.value(name)
	if err != nil || c.layout[name] {
		return v, err
	}
	key := "nchw:" + name
	if out, ok := c.cache[key]; ok {
		return out, nil
	}
	out := name + ":nchw"
	c.g.Node("Transpose", []string{v}, []string{out}, onnxgraph.Ints("perm", 0, 3, 1, 2))
	c.cache[key] = out
	return out, nil
}

// spatial reads strides/ksize/dilations given as NHWC 4-lists into their H, W pair.
func spatial(n tfNode, key string, def int64) ([]int64, error) {
	v, err := n.ints(key)
	if err != nil {
		return nil, err
	}
	switch len(v) {
	case 0:
		return []int64{def, def}, nil
	case 4:
		if v[0] != 1 || v[3] != 1 {
			return nil, fmt.Errorf("%s %v over batch or channels: unsupported", key, v)
		}
		return []int64{v[1], v[2]}, nil
	}
	return nil, fmt.Errorf("%s %v: want 4 values (NHWC)", key, v)
}

// padding is the ONNX form of TF's padding attribute.
func padding(n tfNode) (onnxgraph.Attr, error) {
	switch p := n.str("padding"); p {
	case "SAME":
		// TF pads total = max((ceil(in/s)-1)*s + k - in, 0) with the odd pixel after,
		// which is SAME_UPPER (not SAME_LOWER, which puts it before).
		return onnxgraph.String("auto_pad", "SAME_UPPER"), nil
	case "VALID":
		return onnxgraph.String("auto_pad", "VALID"), nil
	case "EXPLICIT":
		v, err := n.ints("explicit_paddings")
		if err != nil {
			return onnxgraph.Attr{}, err
		}
		if len(v) != 8 || v[0] != 0 || v[1] != 0 || v[6] != 0 || v[7] != 0 {
			return onnxgraph.Attr{}, fmt.Errorf("explicit_paddings %v: want 8 values (NHWC pairs) padding only height and width", v)
		}
		return onnxgraph.Ints("pads", v[2], v[4], v[3], v[5]), nil
	default:
		return onnxgraph.Attr{}, fmt.Errorf("padding %q: want SAME, VALID or EXPLICIT", p)
	}
}

func (c *converter) conv(n tfNode, ins []string) error {
	fused := n.Op == "_FusedConv2D" || n.Op == "FusedDepthwiseConv2dNative"
	depthwise := strings.Contains(n.Op, "Depthwise")
	ops := n.strs("fused_ops")
	if !fused && len(ins) != 2 || fused && len(ins) != 2+boolInt(len(ops) > 0 && ops[0] == "BiasAdd") {
		return fmt.Errorf("%d inputs for fused ops %v: unsupported", len(ins), ops)
	}
	if fused && len(ops) > 0 && ops[0] != "BiasAdd" {
		return fmt.Errorf("fused ops %v: only BiasAdd followed by an activation is supported", ops)
	}
	wt, ok := c.consts[ins[1]]
	if !ok || wt.isInt || len(wt.shape) != 4 {
		return fmt.Errorf("filter %q is not a 4-D float constant: unsupported", ins[1])
	}
	strides, err := spatial(n, "strides", 1)
	if err != nil {
		return err
	}
	dil, err := spatial(n, "dilations", 1)
	if err != nil {
		return err
	}
	pad, err := padding(n)
	if err != nil {
		return err
	}
	x, err := c.asNCHW(ins[0])
	if err != nil {
		return err
	}
	kh, kw, ci, co := wt.shape[0], wt.shape[1], wt.shape[2], wt.shape[3]
	var w []float32
	var wdims []int64
	group := int64(1)
	if depthwise {
		// TF [kh,kw,C,M] -> ONNX [C*M,1,kh,kw], group C; output channel c*M+m as in TF.
		w = make([]float32, len(wt.f))
		for y := range kh {
			for xx := range kw {
				for ch := range ci {
					for m := range co {
						w[((ch*co+m)*kh+y)*kw+xx] = wt.f[((y*kw+xx)*ci+ch)*co+m]
					}
				}
			}
		}
		wdims, group = []int64{ci * co, 1, kh, kw}, ci
	} else {
		// TF HWIO -> ONNX OIHW.
		w = make([]float32, len(wt.f))
		for y := range kh {
			for xx := range kw {
				for i := range ci {
					for o := range co {
						w[((o*ci+i)*kh+y)*kw+xx] = wt.f[((y*kw+xx)*ci+i)*co+o]
					}
				}
			}
		}
		wdims = []int64{co, ci, kh, kw}
	}
	wname := ins[1] + ":oihw"
	if _, ok := c.cache[wname]; !ok {
		c.g.Initializer(wname, wdims, w)
		c.cache[wname] = wname
	}
	convIn := []string{x, wname}
	if fused && len(ops) > 0 {
		bt, ok := c.consts[ins[2]]
		if !ok || bt.isInt || bt.size() != wdims[0] {
			return fmt.Errorf("bias %q is not a float constant of %d values", ins[2], wdims[0])
		}
		b, _ := c.value(ins[2])
		if len(bt.shape) != 1 {
			return fmt.Errorf("bias %q has shape %v, want [%d]", ins[2], bt.shape, wdims[0])
		}
		convIn = append(convIn, b)
	}
	var act string
	if fused && len(ops) > 1 {
		if len(ops) > 2 {
			return fmt.Errorf("fused ops %v: unsupported", ops)
		}
		act = ops[1]
	}
	convOut := n.Name
	if act != "" {
		convOut = n.Name + ":preact"
	}
	c.g.Node("Conv", convIn, []string{convOut}, pad, onnxgraph.Ints("strides", strides...),
		onnxgraph.Ints("dilations", dil...), onnxgraph.Int("group", group), onnxgraph.Ints("kernel_shape", kh, kw))
	c.defined[convOut] = true
	c.layout[n.Name] = true
	switch act {
	case "":
	case "Relu", "Sigmoid":
		c.g.Node(act, []string{convOut}, []string{n.Name})
	case "Relu6":
		c.relu6(convOut, n.Name)
	case "LeakyRelu":
		alpha := 0.2
		if a := n.Attr["leakyrelu_alpha"].F; a != nil {
			alpha = *a
		}
		c.g.Node("LeakyRelu", []string{convOut}, []string{n.Name}, onnxgraph.Float("alpha", float32(alpha)))
	default:
		return fmt.Errorf("fused activation %s: unsupported (Relu, Relu6, LeakyRelu, Sigmoid)", act)
	}
	c.defined[n.Name] = true
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *converter) pool(n tfNode, in string) error {
	k, err := spatial(n, "ksize", 1)
	if err != nil {
		return err
	}
	s, err := spatial(n, "strides", 1)
	if err != nil {
		return err
	}
	pad, err := padding(n)
	if err != nil {
		return err
	}
	x, err := c.asNCHW(in)
	if err != nil {
		return err
	}
	attrs := []onnxgraph.Attr{pad, onnxgraph.Ints("kernel_shape", k...), onnxgraph.Ints("strides", s...)}
	op := "MaxPool"
	if n.Op == "AvgPool" {
		// TF averages over the pixels inside the image only.
		op = "AveragePool"
		attrs = append(attrs, onnxgraph.Int("count_include_pad", 0))
	}
	c.g.Node(op, []string{x}, []string{n.Name}, attrs...)
	c.layout[n.Name] = true
	c.defined[n.Name] = true
	return nil
}

// nchwAxis maps an NHWC axis (negative counts from the end) to NCHW.
func nchwAxis(a int64) int64 {
	if a < 0 {
		a += 4
	}
	return []int64{0, 2, 3, 1}[a]
}

func (c *converter) mean(n tfNode, ins []string) error {
	axes, ok := c.consts[ins[1]]
	if !ok || !axes.isInt {
		return errors.New("the axes are not an int32 constant: unsupported")
	}
	keep := n.Attr["keep_dims"].B != nil && *n.Attr["keep_dims"].B
	ax := slices.Clone(axes.i)
	spatialOnly := len(ax) == 2
	for _, a := range ax {
		if a < -4 || a > 3 {
			spatialOnly = false
			break
		}
		if na := nchwAxis(a); na != 2 && na != 3 {
			spatialOnly = false
		}
	}
	if c.layout[ins[0]] && spatialOnly {
		// Global average pooling: NCHW [N,C] (or [N,C,1,1] kept, still NCHW) as TF's [N,C].
		c.g.Node("ReduceMean", []string{ins[0]}, []string{n.Name}, onnxgraph.Ints("axes", 2, 3), onnxgraph.Int("keepdims", int64(boolInt(keep))))
		c.layout[n.Name] = keep
		c.defined[n.Name] = true
		return nil
	}
	x, err := c.plain(ins[0])
	if err != nil {
		return err
	}
	c.g.Node("ReduceMean", []string{x}, []string{n.Name}, onnxgraph.Ints("axes", ax...), onnxgraph.Int("keepdims", int64(boolInt(keep))))
	c.defined[n.Name] = true
	return nil
}

func (c *converter) squeeze(n tfNode, in string) error {
	dims, err := n.ints("squeeze_dims")
	if err != nil {
		return err
	}
	if len(dims) == 0 {
		return errors.New("squeeze without squeeze_dims: unsupported (the converter does not infer shapes)")
	}
	x, err := c.plain(in)
	if err != nil {
		return err
	}
	c.g.InitializerInt64(n.Name+"/axes", []int64{int64(len(dims))}, dims)
	c.g.Node("Squeeze", []string{x, n.Name + "/axes"}, []string{n.Name})
	c.defined[n.Name] = true
	return nil
}

func (c *converter) matmul(n tfNode, ins []string) error {
	ops := n.strs("fused_ops")
	if n.Op == "MatMul" && len(ins) != 2 || n.Op == "_FusedMatMul" && (len(ops) == 0 || ops[0] != "BiasAdd" || len(ins) != 3 || len(ops) > 2) {
		return fmt.Errorf("%d inputs, fused ops %v: unsupported (MatMul, optionally with BiasAdd and an activation)", len(ins), ops)
	}
	ta := n.Attr["transpose_a"].B != nil && *n.Attr["transpose_a"].B
	tb := n.Attr["transpose_b"].B != nil && *n.Attr["transpose_b"].B
	a, err := c.plain(ins[0])
	if err != nil {
		return err
	}
	b, err := c.plain(ins[1])
	if err != nil {
		return err
	}
	in := []string{a, b}
	if len(ins) == 3 {
		bias, err := c.value(ins[2])
		if err != nil {
			return err
		}
		in = append(in, bias)
	}
	out := n.Name
	act := ""
	if len(ops) == 2 {
		act = ops[1]
		out = n.Name + ":preact"
	}
	c.g.Node("Gemm", in, []string{out}, onnxgraph.Int("transA", int64(boolInt(ta))), onnxgraph.Int("transB", int64(boolInt(tb))))
	c.defined[out] = true
	switch act {
	case "":
	case "Relu", "Sigmoid":
		c.g.Node(act, []string{out}, []string{n.Name})
	case "Relu6":
		c.relu6(out, n.Name)
	default:
		return fmt.Errorf("fused activation %s: unsupported (Relu, Relu6, Sigmoid)", act)
	}
	c.defined[n.Name] = true
	return nil
}
