//go:build cgo

package train

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"github.com/takt-edge/takt/models/train/backbone"
	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"
)

// testBackbone describes a small CNN written with the graph writer, shaped like an
// exported classifier: input "input" [1,channels,h,w] ->
// conv1 (8, 3x3) relu "feat1" -> maxpool 2 -> conv2 (16, 3x3) relu "feat2" -> maxpool 2 ->
// conv3 (16, 3x3) relu "feat3" -> global average pool -> flatten "logits" [1,16].
type testBackbone struct {
	channels, h, w int
	opset          int64
	extraOutputs   []string // intermediate tensors also declared as graph outputs
}

func (tb testBackbone) write(t *testing.T) []byte {
	t.Helper()
	g := onnxgraph.New("test-backbone")
	if tb.opset > 0 {
		g.SetOpset(tb.opset)
	}
	g.Input("input", 1, int64(tb.channels), int64(tb.h), int64(tb.w))
	rng := rand.New(rand.NewPCG(3, 4))
	conv := func(name, in string, cin, cout int) {
		w := make([]float32, cout*cin*9)
		for i := range w {
			w[i] = float32(rng.NormFloat64() / math.Sqrt(float64(cin*9)))
		}
		b := make([]float32, cout)
		for i := range b {
			b[i] = float32(rng.NormFloat64() * 0.05)
		}
		g.Initializer(name+".weight", []int64{int64(cout), int64(cin), 3, 3}, w)
		g.Initializer(name+".bias", []int64{int64(cout)}, b)
		g.Node("Conv", []string{in, name + ".weight", name + ".bias"}, []string{name + "_out"},
			onnxgraph.Ints("kernel_shape", 3, 3), onnxgraph.Ints("pads", 1, 1, 1, 1))
	}
	pool := func(in, out string) {
		g.Node("MaxPool", []string{in}, []string{out}, onnxgraph.Ints("kernel_shape", 2, 2), onnxgraph.Ints("strides", 2, 2))
	}
	conv("conv1", "input", tb.channels, 8)
	g.Node("Relu", []string{"conv1_out"}, []string{"feat1"})
	pool("feat1", "pool1")
	conv("conv2", "pool1", 8, 16)
	g.Node("Relu", []string{"conv2_out"}, []string{"feat2"})
	pool("feat2", "pool2")
	conv("conv3", "pool2", 16, 16)
	g.Node("Relu", []string{"conv3_out"}, []string{"feat3"})
	g.Node("GlobalAveragePool", []string{"feat3"}, []string{"gap"})
	g.Node("Flatten", []string{"gap"}, []string{"logits"}, onnxgraph.Int("axis", 1))
	g.Output("logits", 1, 16)
	for _, o := range tb.extraOutputs {
		switch o {
		case "feat1":
			g.Output(o, 1, 8, int64(tb.h), int64(tb.w))
		case "feat2":
			g.Output(o, 1, 16, int64(tb.h/2), int64(tb.w/2))
		}
	}
	data, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// symbolic rewrites the input's height and width (and batch) as symbolic dims, as a
// dynamic-axes export does.
func symbolic(t *testing.T, data []byte) []byte {
	t.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	dims := m.Graph.Input[0].Type.GetTensorType().Shape.Dim
	for i, name := range map[int]string{0: "batch", 2: "height", 3: "width"} {
		dims[i].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: name}
	}
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBackboneCutMatchesFullModel: the patch features of a model with a backbone cut at
// "feat2" equal what the whole backbone computes at "feat2" (declared as an extra output
// and run in ONNX Runtime) for the gray image repeated over 3 channels and normalized
// with the ImageNet mean and std; the cut keeps 5 of the 10 nodes and none of the head.
func TestBackboneCutMatchesFullModel(t *testing.T) {
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatal(err)
	}
	const h, w = 24, 32
	full := testBackbone{channels: 3, h: h, w: w, extraOutputs: []string{"feat2"}}.write(t)
	bb, err := backbone.Resolve(backbone.Options{ONNX: testBackbone{channels: 3, h: h, w: w}.write(t), Layer: "feat2",
		Mean: backbone.ImageNetMean, Std: backbone.ImageNetStd, Neighborhood: 1}, 4.0/3)
	if err != nil {
		t.Fatal(err)
	}
	if len(bb.Nodes()) != 5 || bb.FeatC != 16 || bb.FeatH != h/2 || bb.FeatW != w/2 || bb.InW != w || bb.InH != h {
		t.Fatalf("cut: %d nodes, features %dx%dx%d, input %dx%d; want 5 nodes, 16x%dx%d, %dx%d", len(bb.Nodes()), bb.FeatC, bb.FeatH, bb.FeatW, bb.InW, bb.InH, h/2, w/2, w, h)
	}
	for _, n := range bb.Nodes() {
		if n.GetOpType() == "GlobalAveragePool" || strings.Contains(strings.Join(n.Output, " "), "conv3") {
			t.Errorf("cut kept node %s %v past the layer", n.GetOpType(), n.Output)
		}
	}
	opts := PatchCoreOptions{bb: bb}
	in := bundle.InputShape{Channels: 1, Height: h, Width: w}
	data, err := patchFeatureGraph(in, opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	gray := make([]float32, h*w)
	for i := range gray {
		gray[i] = rng.Float32()
	}
	cut, err := runGraphAll(data, "patch", ort.NewShape(1, 1, h, w), ort.NewShape(1, 16, h/2, w/2), 1, [][]float32{gray}, "cut")
	if err != nil {
		t.Fatal(err)
	}
	// The whole backbone on the normalized 3-channel image, its "feat2" output.
	rgb := make([]float32, 3*h*w)
	for c := range 3 {
		for i, v := range gray {
			rgb[c*h*w+i] = float32((float64(v) - backbone.ImageNetMean[c]) / backbone.ImageNetStd[c])
		}
	}
	x, err := ort.NewTensor(ort.NewShape(1, 3, h, w), rgb)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Destroy()
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(full, []string{"input"}, []string{"feat2", "logits"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destroy()
	outs := []ort.Value{nil, nil}
	if err := s.Run([]ort.Value{x}, outs); err != nil {
		t.Fatal(err)
	}
	defer outs[0].Destroy()
	defer outs[1].Destroy()
	want := outs[0].(*ort.Tensor[float32]).GetData()
	got := cut[0]
	if len(got) != len(want) {
		t.Fatalf("cut features: %d values, full model's feat2 %d", len(got), len(want))
	}
	var worst float64
	nonzero := 0
	for i := range want {
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
		if want[i] != 0 {
			nonzero++
		}
	}
	if worst > 1e-5 || nonzero < len(want)/10 {
		t.Errorf("cut features differ from the full model's feat2 by up to %g (%d of %d nonzero); want <= 1e-5", worst, nonzero, len(want))
	}

	// Two layers: feat1's 8 channels on its own grid, then feat2's 16 resized to it.
	bb2, err := backbone.Resolve(backbone.Options{ONNX: testBackbone{channels: 3, h: h, w: w}.write(t), Layer: "feat1, feat2",
		Mean: backbone.ImageNetMean, Std: backbone.ImageNetStd, Neighborhood: 1}, 4.0/3)
	if err != nil {
		t.Fatal(err)
	}
	if bb2.FeatC != 24 || bb2.FeatH != h || bb2.FeatW != w {
		t.Fatalf("cut at feat1,feat2: features %dx%dx%d, want 24x%dx%d", bb2.FeatC, bb2.FeatH, bb2.FeatW, h, w)
	}
	data2, err := patchFeatureGraph(in, PatchCoreOptions{bb: bb2})
	if err != nil {
		t.Fatal(err)
	}
	joined, err := runGraphAll(data2, "patch", ort.NewShape(1, 1, h, w), ort.NewShape(1, 24, h, w), 1, [][]float32{gray}, "cut")
	if err != nil {
		t.Fatal(err)
	}
	s1, err := ort.NewDynamicAdvancedSessionWithONNXData(testBackbone{channels: 3, h: h, w: w, extraOutputs: []string{"feat1"}}.write(t),
		[]string{"input"}, []string{"feat1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Destroy()
	outs1 := []ort.Value{nil}
	if err := s1.Run([]ort.Value{x}, outs1); err != nil {
		t.Fatal(err)
	}
	defer outs1[0].Destroy()
	want1 := outs1[0].(*ort.Tensor[float32]).GetData()
	worst = 0
	for i := range want1 {
		worst = max(worst, math.Abs(float64(joined[0][i]-want1[i])))
	}
	// feat2 resized: its mean over the grid is kept up to the border effects of bilinear.
	var m2, mj float64
	for _, v := range want {
		m2 += float64(v)
	}
	for _, v := range joined[0][len(want1):] {
		mj += float64(v)
	}
	m2, mj = m2/float64(len(want)), mj/float64(len(joined[0])-len(want1))
	if worst > 1e-5 || math.Abs(m2-mj) > 0.05*math.Abs(m2)+1e-3 {
		t.Errorf("joined features: feat1 part off by up to %g (want <= 1e-5); feat2 part mean %.4f, feat2's own %.4f", worst, mj, m2)
	}
}

// TestBackboneErrors: every way a backbone can be unusable gives an error naming it.
func TestBackboneErrors(t *testing.T) {
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatal(err)
	}
	ok := testBackbone{channels: 3, h: 16, w: 16}.write(t)
	mod := func(f func(m *onnxpb.ModelProto)) []byte {
		var m onnxpb.ModelProto
		if err := proto.Unmarshal(ok, &m); err != nil {
			t.Fatal(err)
		}
		f(&m)
		data, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	twoChannel := testBackbone{channels: 2, h: 16, w: 16}.write(t)
	tests := []struct {
		name string
		o    backbone.Options
		want string
	}{
		{"not onnx", backbone.Options{ONNX: []byte("this is not a model, just text\n"), Layer: "feat2"}, "not an ONNX model"},
		{"empty graph", backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) { m.Graph.Node = nil }), Layer: "feat2"}, "not an ONNX model"},
		{"no layer", backbone.Options{ONNX: ok}, "no layer given"},
		{"layer not found", backbone.Options{ONNX: ok, Layer: "feat"}, `layer "feat" not found among the 10 node outputs; candidates: feat1, feat2, feat3`},
		{"second layer not found", backbone.Options{ONNX: ok, Layer: "feat1,fest2"}, `layer "fest2" not found`},
		{"too many layers", backbone.Options{ONNX: ok, Layer: "feat1,feat2,feat3,conv1_out,conv2_out"}, "want 1 to 4"},
		{"layer is an initializer", backbone.Options{ONNX: ok, Layer: "conv1.weight"}, "candidates: conv1_out"},
		{"layer not 4-D", backbone.Options{ONNX: ok, Layer: "logits"}, `layer "logits" has shape [1 16]`},
		{"input channels", backbone.Options{ONNX: twoChannel, Layer: "feat1"}, "unsupported input shape (want 1 or 3 fixed channels"},
		{"input rank", backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) {
			m.Graph.Input[0].Type.GetTensorType().Shape.Dim = m.Graph.Input[0].Type.GetTensorType().Shape.Dim[1:]
		}), Layer: "feat1"}, "has shape [3,16,16]: unsupported input shape"},
		{"input batch", backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) {
			m.Graph.Input[0].Type.GetTensorType().Shape.Dim[0].Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: 8}
		}), Layer: "feat1"}, "batch 8"},
		{"opset too new", backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) { m.OpsetImport[0].Version = proto.Int64(30) }), Layer: "feat1"}, "opset 30 is too new"},
		{"op changed after 17", backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) {
			m.OpsetImport[0].Version = proto.Int64(18)
			m.Graph.Node[1].OpType = proto.String("Mish")
		}), Layer: "feat1"}, "opset 18: operator Mish"},
		{"custom domain", backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) { m.Graph.Node[1].Domain = proto.String("com.microsoft") }), Layer: "feat1"}, `domain "com.microsoft"`},
		{"external data", backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) {
			m.Graph.Initializer[0].DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
		}), Layer: "feat1"}, "external file"},
		{"mean per channel", backbone.Options{ONNX: ok, Layer: "feat1", Mean: []float64{0.1, 0.2}}, "mean has 2 values for a 3-channel input"},
		{"std zero", backbone.Options{ONNX: ok, Layer: "feat1", Std: []float64{0}}, "std 0 of channel 0"},
		{"neighborhood even", backbone.Options{ONNX: ok, Layer: "feat1", Neighborhood: 2}, "neighborhood 2"},
		{"fixed size", backbone.Options{ONNX: ok, Layer: "feat1", Width: 32}, "fixed at 16"},
		{"feature map too small", backbone.Options{ONNX: symbolic(t, ok), Layer: "feat3", Width: 8, Height: 8}, "only 2x2"},
	}
	for _, tt := range tests {
		_, err := backbone.Resolve(tt.o, 1)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	// A conv stack exported at an old opset uses only operators that kept their meaning.
	if _, err := backbone.Resolve(backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) { m.OpsetImport[0].Version = proto.Int64(11) }), Layer: "feat2"}, 1); err != nil {
		t.Errorf("opset 11 conv stack: %v", err)
	}
	if _, err := backbone.Resolve(backbone.Options{ONNX: mod(func(m *onnxpb.ModelProto) { m.OpsetImport[0].Version = proto.Int64(21) }), Layer: "feat2"}, 1); err != nil {
		t.Errorf("opset 21 conv stack: %v", err)
	}
	// Template and ensemble are refused with a backbone.
	good := goodParts(3, 1, 1)
	for _, meth := range []string{MethodTemplate, MethodEnsemble} {
		_, err := Train(context.Background(), TrainSet{Good: good}, TrainOptions{Method: meth, Backbone: backbone.Options{ONNX: ok, Layer: "feat2"}})
		if err == nil || !strings.Contains(err.Error(), "features feed patchcore only") {
			t.Errorf("Train %s with a backbone: %v, want a patchcore-only error", meth, err)
		}
	}
}

// TestPatchCoreBackboneTrain: Train with a backbone (1-channel, symbolic input size, cut at
// "feat2") makes a PatchCore model of the asked input size that ONNX Runtime runs as a
// station does and that scores defective parts above good ones; with labeled defects the
// supervised head trains on the backbone's features too.
func TestPatchCoreBackboneTrain(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~8x slower under -race; make test runs this test without it")
	}
	good := goodParts(8, 1, 1)
	held := goodParts(4, 101, 1)
	var defects []camera.Frame
	for i, d := range []defect{darkSpot, scratch, missingHole, darkSpot, scratch, missingHole} {
		defects = append(defects, makePart(partSpec{width: 640, height: 480, channels: 1, defect: d, seed: 201 + uint64(i)}))
	}
	bo := backbone.Options{ONNX: symbolic(t, testBackbone{channels: 1, h: 8, w: 8}.write(t)), Layer: "feat2", Width: 128}
	pc := TexturePatchCoreOptions()
	pc.Folds, pc.BankSize = 2, 1000
	if o, err := trainPlan(TrainSet{Good: good}, TrainOptions{Backbone: bo, PatchCore: pc}); err != nil || o.HeadLambda != 0.1 {
		t.Errorf("trainPlan with a backbone: head lambda %g (%v), want the backbone's default 0.1", o.HeadLambda, err)
	}
	m, err := Train(context.Background(), TrainSet{Good: good}, TrainOptions{Name: "bb", Backbone: bo, PatchCore: pc, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	desc, err := bundle.InspectModel(m.ONNX)
	if err != nil {
		t.Fatal(err)
	}
	if m.Method != MethodPatchCore || m.Input.Width != 128 || m.Input.Height != 96 || !strings.Contains(desc.Meta()[bundle.MetaMethod], `layer="feat2"`) {
		t.Fatalf("Train with a backbone: method %s input %s meta %q; want patchcore 128x96 naming the layer", m.Method, m.Input, desc.Meta()[bundle.MetaMethod])
	}
	g := scoreFrames(t, m, held)
	d := scoreFrames(t, m, defects)
	a := eval.EvaluateScores(g, d)
	t.Logf("backbone patchcore %s: held-out auroc %.3f", m.Input, a)
	if a < 0.8 {
		t.Errorf("backbone patchcore: held-out auroc %.3f (good %v, defects %v), want >= 0.8 (0.917 measured; 4 x 6 pairs, so one pair is 0.042)", a, g, d)
	}
	sm, err := Train(context.Background(), TrainSet{Good: good, Defects: labeled(defects)},
		TrainOptions{Name: "bb-head", Backbone: bo, BackboneAlone: true, PatchCore: pc, Threads: 2, MinHeadDefects: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sm.Metrics["cv_auroc_patchcore_head"]; !ok || sm.Method != MethodPatchCore || sm.Metrics["with_filter_bank"] != 0 {
		t.Errorf("Train with a backbone and labels: method %s metrics %v; want patchcore with a head tried", sm.Method, sm.Metrics)
	}
	scoreFrames(t, sm, held[:1])
}

func labeled(fs []camera.Frame) []LabeledFrame {
	out := make([]LabeledFrame, len(fs))
	for i, f := range fs {
		out[i] = LabeledFrame{Frame: f, Label: "defect"}
	}
	return out
}

// TestBackboneCutTakesColour: with an RGB model input, a 3-channel backbone gets the
// image's own channels (normalized per channel), not a gray copy; a 1-channel backbone
// gets their mean.
func TestBackboneCutTakesColour(t *testing.T) {
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatal(err)
	}
	const h, w = 24, 32
	rng := rand.New(rand.NewPCG(7, 7))
	rgb := make([]float32, 3*h*w)
	for i := range rgb {
		rgb[i] = rng.Float32()
	}
	for _, channels := range []int{3, 1} {
		file := testBackbone{channels: channels, h: h, w: w}.write(t)
		full := testBackbone{channels: channels, h: h, w: w, extraOutputs: []string{"feat2"}}.write(t)
		mean, std := []float64{0.2, 0.4, 0.6}[:channels], []float64{0.5, 0.25, 0.125}[:channels]
		bb, err := backbone.Resolve(backbone.Options{ONNX: file, Layer: "feat2", Mean: mean, Std: std, Neighborhood: 1}, 4.0/3)
		if err != nil {
			t.Fatal(err)
		}
		in := bundle.InputShape{Channels: 3, Height: h, Width: w}
		data, err := patchFeatureGraph(in, PatchCoreOptions{bb: bb})
		if err != nil {
			t.Fatal(err)
		}
		cut, err := runGraphAll(data, "patch", ort.NewShape(1, 3, h, w), ort.NewShape(1, 16, h/2, w/2), 1, [][]float32{rgb}, "cut")
		if err != nil {
			t.Fatal(err)
		}
		x := make([]float32, channels*h*w)
		for c := range channels {
			for i := range h * w {
				v := float64(rgb[c*h*w+i])
				if channels == 1 {
					v = (float64(rgb[i]) + float64(rgb[h*w+i]) + float64(rgb[2*h*w+i])) / 3
				}
				x[c*h*w+i] = float32((v - mean[c]) / std[c])
			}
		}
		xt, err := ort.NewTensor(ort.NewShape(1, int64(channels), h, w), x)
		if err != nil {
			t.Fatal(err)
		}
		defer xt.Destroy()
		s, err := ort.NewDynamicAdvancedSessionWithONNXData(full, []string{"input"}, []string{"feat2"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Destroy()
		outs := []ort.Value{nil}
		if err := s.Run([]ort.Value{xt}, outs); err != nil {
			t.Fatal(err)
		}
		defer outs[0].Destroy()
		want := outs[0].(*ort.Tensor[float32]).GetData()
		var worst float64
		for i := range want {
			worst = max(worst, math.Abs(float64(cut[0][i]-want[i])))
		}
		if worst > 1e-5 {
			t.Errorf("%d-channel backbone on an RGB input: features differ from the full model's by up to %g; want <= 1e-5", channels, worst)
		}
	}
}
