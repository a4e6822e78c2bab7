//go:build cgo

package tfjs_test

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/onnxpb"
	"github.com/takt-edge/takt/models/tfjs"
	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"
)

// fixture builds a small TF.js graph model with every operator family the converter
// supports, in the layout tensorflowjs_converter writes, and computes what TensorFlow
// would output for an input, independently of the converter (NHWC loops in Go).
type fixture struct {
	nodes   []map[string]any
	weights []map[string]any
	shard   []byte
	consts  map[string]ref // as TF sees them after dequantization
}

type ref struct {
	shape []int
	v     []float32
}

func attrS(s string) map[string]any {
	return map[string]any{"s": base64.StdEncoding.EncodeToString([]byte(s))}
}
func attrInts(v ...int) map[string]any {
	var s []string
	for _, x := range v {
		s = append(s, strconv.Itoa(x))
	}
	return map[string]any{"list": map[string]any{"i": s}}
}
func attrStrs(v ...string) map[string]any {
	var s []string
	for _, x := range v {
		s = append(s, base64.StdEncoding.EncodeToString([]byte(x)))
	}
	return map[string]any{"list": map[string]any{"s": s}}
}

func (f *fixture) node(name, op string, inputs []string, attr map[string]any) {
	n := map[string]any{"name": name, "op": op}
	if len(inputs) > 0 {
		n["input"] = inputs
	}
	if attr != nil {
		n["attr"] = attr
	}
	f.nodes = append(f.nodes, n)
}

// constant adds a Const node with its weights stored as quant ("", "uint8" or "float16").
func (f *fixture) constant(name string, shape []int, v []float32, quant string) {
	f.node(name, "Const", nil, map[string]any{"dtype": map[string]any{"type": "DT_FLOAT"}})
	w := map[string]any{"name": name, "shape": shape, "dtype": "float32"}
	stored := make([]float32, len(v))
	switch quant {
	case "":
		for i, x := range v {
			f.shard = binary.LittleEndian.AppendUint32(f.shard, math.Float32bits(x))
			stored[i] = x
		}
	case "uint8":
		lo, hi := v[0], v[0]
		for _, x := range v {
			lo, hi = min(lo, x), max(hi, x)
		}
		scale := float64(hi-lo) / 255
		if scale == 0 {
			scale = 1
		}
		for i, x := range v {
			q := uint8(math.Round(float64(x-lo) / scale))
			f.shard = append(f.shard, q)
			stored[i] = float32(float64(q)*scale + float64(lo))
		}
		w["quantization"] = map[string]any{"min": float64(lo), "scale": scale, "dtype": "uint8"}
	case "float16":
		for i, x := range v {
			h, back := toHalf(x)
			f.shard = binary.LittleEndian.AppendUint16(f.shard, h)
			stored[i] = back
		}
		w["quantization"] = map[string]any{"dtype": "float16"}
	}
	f.weights = append(f.weights, w)
	f.consts[name] = ref{shape, stored}
}

func (f *fixture) intConst(name string, v ...int32) {
	f.node(name, "Const", nil, map[string]any{"dtype": map[string]any{"type": "DT_INT32"}})
	for _, x := range v {
		f.shard = binary.LittleEndian.AppendUint32(f.shard, uint32(x))
	}
	f.weights = append(f.weights, map[string]any{"name": name, "shape": []int{len(v)}, "dtype": "int32"})
}

// toHalf rounds x (a normal float16 value's range) to float16, truncating the mantissa,
// and returns the bits and their value.
func toHalf(x float32) (uint16, float32) {
	if x == 0 {
		return 0, 0
	}
	b := math.Float32bits(x)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	frac := uint16(b>>13) & 0x3ff
	h := sign | uint16(exp)<<10 | frac
	v := float32(math.Ldexp(1+float64(frac)/1024, exp-15))
	if sign != 0 {
		v = -v
	}
	return h, v
}

func (f *fixture) write(t *testing.T, dir string) {
	t.Helper()
	m := map[string]any{
		"format": "graph-model", "generatedBy": "2.2.0", "convertedBy": "takt test fixture",
		"modelTopology": map[string]any{"node": f.nodes, "versions": map[string]any{}},
		"weightsManifest": []any{map[string]any{
			"paths": []string{"group1-shard1of2.bin", "group1-shard2of2.bin"}, "weights": f.weights}},
	}
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	half := len(f.shard) / 2
	for name, b := range map[string][]byte{"model.json": js, "group1-shard1of2.bin": f.shard[:half], "group1-shard2of2.bin": f.shard[half:]} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func randVals(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

const (
	inH, inW = 9, 10 // odd and even: TF's SAME pads them differently
	nClass   = 5
)

// buildFixture is a MobileNet-shaped toy: input scaling, a strided fused conv with Relu6,
// a strided depthwise conv (multiplier 2) with Relu, a 1x1 conv and a residual add, a
// per-channel constant, both poolings with SAME padding, then a Mean + fused MatMul +
// Softmax head and an AvgPool + Squeeze + MatMul + Sigmoid head.
func buildFixture() *fixture {
	rng := rand.New(rand.NewPCG(7, 7))
	f := &fixture{consts: map[string]ref{}}
	nhwc := map[string]any{"dim": []map[string]string{{"size": "-1"}, {"size": strconv.Itoa(inH)}, {"size": strconv.Itoa(inW)}, {"size": "3"}}}
	f.node("input", "Placeholder", nil, map[string]any{"shape": map[string]any{"shape": nhwc}, "dtype": map[string]any{"type": "DT_FLOAT"}})
	f.constant("net/in/Mul/y", []int{}, []float32{2}, "uint8")
	f.constant("net/in/Sub/y", []int{}, []float32{1}, "uint8")
	f.constant("net/conv/w", []int{3, 3, 3, 4}, randVals(rng, 108, 0.5), "uint8")
	f.constant("net/conv/b", []int{4}, randVals(rng, 4, 0.3), "")
	f.constant("net/dw/w", []int{3, 3, 4, 2}, randVals(rng, 72, 0.5), "")
	f.constant("net/dw/b", []int{8}, randVals(rng, 8, 0.3), "float16")
	f.constant("net/pw/w", []int{1, 1, 8, 8}, randVals(rng, 64, 0.4), "")
	f.constant("net/chan", []int{8}, randVals(rng, 8, 0.5), "")
	f.intConst("net/mean/axes", 1, 2)
	f.constant("net/fc/w", []int{8, nClass}, randVals(rng, 8*nClass, 0.7), "uint8")
	f.constant("net/fc/b", []int{nClass}, randVals(rng, nClass, 0.2), "")
	conv := func(strides []int, pad string, fused ...string) map[string]any {
		a := map[string]any{"strides": attrInts(strides...), "padding": attrS(pad), "data_format": attrS("NHWC"),
			"dilations": attrInts(1, 1, 1, 1), "T": map[string]any{"type": "DT_FLOAT"}}
		if len(fused) > 0 {
			a["fused_ops"] = attrStrs(fused...)
			a["num_args"] = map[string]any{"i": "1"}
		}
		return a
	}
	f.node("net/in/Mul", "Mul", []string{"net/in/Mul/y", "input"}, nil)
	f.node("net/in/Sub", "Sub", []string{"net/in/Mul", "net/in/Sub/y"}, nil)
	f.node("net/conv/Relu6", "_FusedConv2D", []string{"net/in/Sub", "net/conv/w", "net/conv/b"}, conv([]int{1, 2, 2, 1}, "SAME", "BiasAdd", "Relu6"))
	f.node("net/dw/Relu", "FusedDepthwiseConv2dNative", []string{"net/conv/Relu6", "net/dw/w", "net/dw/b"}, conv([]int{1, 2, 2, 1}, "SAME", "BiasAdd", "Relu"))
	f.node("net/pw/Conv2D", "Conv2D", []string{"net/dw/Relu", "net/pw/w"}, conv([]int{1, 1, 1, 1}, "VALID"))
	f.node("net/block/add", "AddV2", []string{"net/dw/Relu", "net/pw/Conv2D"}, nil)
	f.node("net/block/scaled", "Mul", []string{"net/block/add", "net/chan"}, nil)
	f.node("net/maxpool", "MaxPool", []string{"net/block/scaled"}, map[string]any{"ksize": attrInts(1, 2, 2, 1), "strides": attrInts(1, 1, 1, 1), "padding": attrS("SAME"), "data_format": attrS("NHWC")})
	f.node("net/avgpool", "AvgPool", []string{"net/maxpool"}, map[string]any{"ksize": attrInts(1, 3, 3, 1), "strides": attrInts(1, 2, 2, 1), "padding": attrS("SAME"), "data_format": attrS("NHWC")})
	f.node("net/gap", "Mean", []string{"net/avgpool", "net/mean/axes"}, map[string]any{"keep_dims": map[string]any{"b": false}})
	f.node("net/fc/BiasAdd", "_FusedMatMul", []string{"net/gap", "net/fc/w", "net/fc/b"}, map[string]any{"fused_ops": attrStrs("BiasAdd"),
		"transpose_a": map[string]any{"b": false}, "transpose_b": map[string]any{"b": false}})
	f.node("net/probs", "Softmax", []string{"net/fc/BiasAdd"}, nil)
	f.node("net/valid", "AvgPool", []string{"net/avgpool"}, map[string]any{"ksize": attrInts(1, 2, 2, 1), "strides": attrInts(1, 2, 2, 1), "padding": attrS("VALID"), "data_format": attrS("NHWC")})
	f.node("net/squeeze", "Squeeze", []string{"net/valid"}, map[string]any{"squeeze_dims": attrInts(1, 2)})
	f.node("net/fc2", "MatMul", []string{"net/squeeze", "net/fc/w"}, nil)
	f.node("net/gate", "Sigmoid", []string{"net/fc2"}, nil)
	return f
}

// img is an NHWC tensor of batch 1.
type img struct {
	h, w, c int
	v       []float32
}

func (x img) at(y, xx, k int) float32 { return x.v[(y*x.w+xx)*x.c+k] }

// samePads is TF's SAME: output ceil(in/s), total padding split with the odd one after.
func samePads(in, k, s int) (out, before int) {
	out = (in + s - 1) / s
	total := max((out-1)*s+k-in, 0)
	return out, total / 2
}

func window(in, k, s int, pad string) (out, before int) {
	if pad == "SAME" {
		return samePads(in, k, s)
	}
	return (in-k)/s + 1, 0
}

// conv2d is TF's Conv2D (HWIO filter) or, with depthwise, DepthwiseConv2dNative ([kh,kw,C,M]).
func conv2d(x img, w ref, s int, pad string, depthwise bool) img {
	kh, kw, ci, co := w.shape[0], w.shape[1], w.shape[2], w.shape[3]
	oh, pt := window(x.h, kh, s, pad)
	ow, pl := window(x.w, kw, s, pad)
	outC := co
	if depthwise {
		outC = ci * co
	}
	y := img{oh, ow, outC, make([]float32, oh*ow*outC)}
	for oy := range oh {
		for ox := range ow {
			for o := range outC {
				var sum float64
				for dy := range kh {
					for dx := range kw {
						iy, ix := oy*s-pt+dy, ox*s-pl+dx
						if iy < 0 || ix < 0 || iy >= x.h || ix >= x.w {
							continue
						}
						if depthwise {
							ch, m := o/co, o%co
							sum += float64(x.at(iy, ix, ch)) * float64(w.v[((dy*kw+dx)*ci+ch)*co+m])
							continue
						}
						for i := range ci {
							sum += float64(x.at(iy, ix, i)) * float64(w.v[((dy*kw+dx)*ci+i)*co+o])
						}
					}
				}
				y.v[(oy*ow+ox)*outC+o] = float32(sum)
			}
		}
	}
	return y
}

func pool(x img, k, s int, pad string, avg bool) img {
	oh, pt := window(x.h, k, s, pad)
	ow, pl := window(x.w, k, s, pad)
	y := img{oh, ow, x.c, make([]float32, oh*ow*x.c)}
	for oy := range oh {
		for ox := range ow {
			for ch := range x.c {
				best, sum, n := float32(math.Inf(-1)), 0.0, 0
				for dy := range k {
					for dx := range k {
						iy, ix := oy*s-pt+dy, ox*s-pl+dx
						if iy < 0 || ix < 0 || iy >= x.h || ix >= x.w {
							continue // TF's AvgPool averages the pixels inside only
						}
						v := x.at(iy, ix, ch)
						best = max(best, v)
						sum += float64(v)
						n++
					}
				}
				if avg {
					best = float32(sum / float64(n))
				}
				y.v[(oy*ow+ox)*x.c+ch] = best
			}
		}
	}
	return y
}

func perChannel(x img, b []float32, f func(v, b float32) float32) img {
	y := img{x.h, x.w, x.c, make([]float32, len(x.v))}
	for i, v := range x.v {
		y.v[i] = f(v, b[i%x.c])
	}
	return y
}

func dense(x []float32, w ref, b []float32) []float32 {
	in, out := w.shape[0], w.shape[1]
	y := make([]float32, out)
	for o := range out {
		s := float64(0)
		if b != nil {
			s = float64(b[o])
		}
		for i := range in {
			s += float64(x[i]) * float64(w.v[i*out+o])
		}
		y[o] = float32(s)
	}
	return y
}

// reference runs the fixture as TensorFlow would on x (NHWC 0..1): the block output
// (NHWC), the softmax and the sigmoid head.
func (f *fixture) reference(x img) (block img, probs, gate []float32) {
	c := f.consts
	s := img{x.h, x.w, x.c, make([]float32, len(x.v))}
	for i, v := range x.v {
		s.v[i] = v*c["net/in/Mul/y"].v[0] - c["net/in/Sub/y"].v[0]
	}
	a := perChannel(conv2d(s, c["net/conv/w"], 2, "SAME", false), c["net/conv/b"].v, func(v, b float32) float32 { return min(max(v+b, 0), 6) })
	d := perChannel(conv2d(a, c["net/dw/w"], 2, "SAME", true), c["net/dw/b"].v, func(v, b float32) float32 { return max(v+b, 0) })
	p := conv2d(d, c["net/pw/w"], 1, "VALID", false)
	block = img{d.h, d.w, d.c, make([]float32, len(d.v))}
	for i := range d.v {
		block.v[i] = d.v[i] + p.v[i]
	}
	scaled := perChannel(block, c["net/chan"].v, func(v, b float32) float32 { return v * b })
	ap := pool(pool(scaled, 2, 1, "SAME", false), 3, 2, "SAME", true)
	gap := make([]float32, ap.c)
	for i, v := range ap.v {
		gap[i%ap.c] += v / float32(ap.h*ap.w)
	}
	logits := dense(gap, c["net/fc/w"], c["net/fc/b"].v)
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v))
	}
	for _, v := range logits {
		probs = append(probs, float32(math.Exp(float64(v))/z))
	}
	v := pool(ap, 2, 2, "VALID", true)
	for _, l := range dense(v.v, c["net/fc/w"], nil) {
		gate = append(gate, float32(1/(1+math.Exp(-float64(l)))))
	}
	return block, probs, gate
}

// runORT runs model data on one NCHW input and returns the named outputs of the given
// shapes.
func runORT(t *testing.T, data []byte, x []float32, xShape []int64, outs []string, shapes [][]int64) [][]float32 {
	t.Helper()
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatal(err)
	}
	in, err := ort.NewTensor(ort.NewShape(xShape...), x)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Destroy()
	var vals []ort.Value
	var tensors []*ort.Tensor[float32]
	for _, s := range shapes {
		o, err := ort.NewEmptyTensor[float32](ort.NewShape(s...))
		if err != nil {
			t.Fatal(err)
		}
		defer o.Destroy()
		vals = append(vals, o)
		tensors = append(tensors, o)
	}
	sess, err := ort.NewAdvancedSessionWithONNXData(data, []string{"input"}, outs, []ort.Value{in}, vals, nil)
	if err != nil {
		t.Fatalf("onnx runtime rejected the converted model: %v", err)
	}
	defer sess.Destroy()
	if err := sess.Run(); err != nil {
		t.Fatal(err)
	}
	var res [][]float32
	for _, o := range tensors {
		res = append(res, append([]float32(nil), o.GetData()...))
	}
	return res
}

// withOutput adds tensor name (of unknown shape) to the model's outputs, as Takt's
// backbone cut reads a layer.
func withOutput(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m.Graph.Output = append(m.Graph.Output, &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}}}})
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// TestConvertMatchesReference converts the fixture and checks ONNX Runtime's outputs, and
// the block output cut by its TF name, against the Go reference of TensorFlow's semantics.
func TestConvertMatchesReference(t *testing.T) {
	f := buildFixture()
	dir := t.TempDir()
	f.write(t, dir)
	data, err := tfjs.ConvertDir(dir, tfjs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	in := m.Graph.Input[0]
	if in.GetName() != "input" {
		t.Fatalf("input %q, want the placeholder's name", in.GetName())
	}
	dims := in.GetType().GetTensorType().GetShape().GetDim()
	if len(dims) != 4 || dims[0].GetDimParam() == "" || dims[1].GetDimValue() != 3 || dims[2].GetDimValue() != inH || dims[3].GetDimValue() != inW {
		t.Fatalf("input dims %v: want [N,3,%d,%d] (NCHW, symbolic batch)", dims, inH, inW)
	}
	var outs []string
	for _, o := range m.Graph.Output {
		outs = append(outs, o.GetName())
	}
	if strings.Join(outs, ",") != "net/probs,net/gate" {
		t.Fatalf("outputs %v, want the graph's sinks net/probs and net/gate", outs)
	}
	cut := withOutput(t, data, "net/block/add")
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 3 {
		x := img{inH, inW, 3, make([]float32, inH*inW*3)}
		for i := range x.v {
			x.v[i] = rng.Float32()
		}
		nchw := make([]float32, len(x.v))
		for y := range inH {
			for xx := range inW {
				for k := range 3 {
					nchw[(k*inH+y)*inW+xx] = x.at(y, xx, k)
				}
			}
		}
		block, probs, gate := f.reference(x)
		got := runORT(t, cut, nchw, []int64{1, 3, inH, inW}, []string{"net/probs", "net/gate", "net/block/add"},
			[][]int64{{1, nClass}, {1, nClass}, {1, int64(block.c), int64(block.h), int64(block.w)}})
		if block.h != 3 || block.w != 3 {
			t.Fatalf("reference block %dx%d, want 3x3 (9x10 after two stride-2 SAME convs)", block.h, block.w)
		}
		blockNCHW := make([]float32, len(block.v))
		for y := range block.h {
			for xx := range block.w {
				for k := range block.c {
					blockNCHW[(k*block.h+y)*block.w+xx] = block.at(y, xx, k)
				}
			}
		}
		for _, c := range []struct {
			name      string
			got, want []float32
		}{{"softmax", got[0], probs}, {"sigmoid head", got[1], gate}, {"block output (NCHW)", got[2], blockNCHW}} {
			if d := maxDiff(c.got, c.want); d > 1e-4 {
				t.Errorf("trial %d %s: max difference %.2g from the reference\n got %v\nwant %v", trial, c.name, d, c.got, c.want)
			}
		}
	}

	// At another size (the spatial override), the convolutional part follows TF's SAME
	// arithmetic for those sizes too.
	data, err = tfjs.ConvertDir(dir, tfjs.Options{Width: 7, Height: 12})
	if err != nil {
		t.Fatal(err)
	}
	x := img{12, 7, 3, make([]float32, 12*7*3)}
	for i := range x.v {
		x.v[i] = rng.Float32()
	}
	nchw := make([]float32, len(x.v))
	for y := range x.h {
		for xx := range x.w {
			for k := range 3 {
				nchw[(k*x.h+y)*x.w+xx] = x.at(y, xx, k)
			}
		}
	}
	block, _, _ := f.reference(x)
	got := runORT(t, withOutput(t, data, "net/block/add"), nchw, []int64{1, 3, 12, 7}, []string{"net/probs", "net/block/add"},
		[][]int64{{1, nClass}, {1, int64(block.c), int64(block.h), int64(block.w)}})
	var want []float32
	for k := range block.c {
		for y := range block.h {
			for xx := range block.w {
				want = append(want, block.at(y, xx, k))
			}
		}
	}
	if d := maxDiff(got[1], want); d > 1e-4 {
		t.Errorf("12x7 input: block output differs by %.2g from the reference", d)
	}
}

// TestConvertErrors: what the converter cannot take is named.
func TestConvertErrors(t *testing.T) {
	f := buildFixture()
	dir := t.TempDir()
	f.write(t, dir)
	js, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	shards := func(p string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, p)) }
	cases := []struct {
		name, want string
		edit       func(m map[string]any)
		shard      func(string) ([]byte, error)
		opts       tfjs.Options
	}{
		{name: "layers model", want: "only graph models", edit: func(m map[string]any) { m["format"] = "layers-model" }},
		{name: "unknown op", want: `node "net/gate" (Tanhx): operator Tanhx is not supported`, edit: func(m map[string]any) {
			nodes := m["modelTopology"].(map[string]any)["node"].([]any)
			nodes[len(nodes)-1].(map[string]any)["op"] = "Tanhx"
		}},
		{name: "NCHW", want: "only NHWC", edit: func(m map[string]any) {
			for _, n := range m["modelTopology"].(map[string]any)["node"].([]any) {
				if n.(map[string]any)["name"] == "net/pw/Conv2D" {
					n.(map[string]any)["attr"].(map[string]any)["data_format"] = attrS("NCHW")
				}
			}
		}},
		{name: "truncated shard", want: "a shard is missing or truncated", shard: func(p string) ([]byte, error) {
			b, err := shards(p)
			if strings.Contains(p, "2of2") {
				b = b[:len(b)-8]
			}
			return b, err
		}},
		{name: "half a size", want: "give both width and height", opts: tfjs.Options{Width: 32}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(js, &m); err != nil {
				t.Fatal(err)
			}
			if c.edit != nil {
				c.edit(m)
			}
			b, _ := json.Marshal(m)
			sh := shards
			if c.shard != nil {
				sh = c.shard
			}
			_, err := tfjs.Convert(b, sh, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want one containing %q", err, c.want)
			}
		})
	}
}
