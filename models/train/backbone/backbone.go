package backbone

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Options puts a user-supplied ONNX feature extractor (a CNN trained elsewhere,
// e.g. a torchvision ResNet exported with torch.onnx.export) in place of PatchCore's
// filter bank: the model is cut at the tensor Layer (only the nodes that tensor depends on
// are kept, with their initializers) and spliced into the anomaly graph, so the shipped
// model still reads Takt's "image" input and the station runs it like any other bundle.
//
// What the backbone gets: Takt's preprocessing makes a gray image of 0..1 at the model
// input size (stretched); the graph repeats it over the backbone's channels (1 or 3; a
// color backbone sees R = G = B) and normalizes each channel as (x - Mean[c]) / Std[c].
// The backbone's input must be one float tensor [N,C,H,W] with N 1 or symbolic and C 1 or
// 3; H and W may be fixed (the model input then has that size) or symbolic.
//
// The Layer tensor must be a float feature map [1,C',h,w]: every cell is one patch of the
// memory bank. Operators run at opset 17 (Takt's graph): a backbone exported at opsets
// 13..17 is taken as is; outside that range only operators whose meaning did not change
// are accepted (Conv, Relu, pooling, BatchNormalization, Add, ...), see backboneStableOps.
type Options struct {
	// ONNX is the backbone model (the file's bytes); nil: no backbone.
	ONNX []byte `yaml:"-"`
	// Layer names the tensor to cut at (a node output, e.g. "/layer2/layer2.1/relu_1/Relu_output_0"),
	// or several, comma-separated: their feature maps are resized (bilinear) to the grid
	// of the first and concatenated, as PatchCore joins two stages of a ResNet.
	Layer string `yaml:"layer"`
	// Mean and Std normalize the input per channel (one value, or one per channel);
	// default mean 0 and std 1: the backbone sees 0..1. ImageNet-trained backbones want
	// ImageNetMean and ImageNetStd.
	Mean []float64 `yaml:"mean"`
	Std  []float64 `yaml:"std"`
	// Width and Height are the input size when the backbone's is symbolic; default width
	// 224, height from the good images' median aspect. A fixed backbone input size wins;
	// asking for another is an error.
	Width  int `yaml:"width"`
	Height int `yaml:"height"`
	// Neighborhood is the odd size of the average pooling over the feature map before the
	// bank (PatchCore's locally aware patch features: a patch also sees its neighbours);
	// default 3; 1: off.
	Neighborhood int `yaml:"neighborhood"`
}

// ImageNetMean and ImageNetStd are the RGB input normalization of torchvision's
// ImageNet-trained models, for Options (on an input of 0..1).
var (
	ImageNetMean = []float64{0.485, 0.456, 0.406}
	ImageNetStd  = []float64{0.229, 0.224, 0.225}
)

const (
	// backboneOpset is the opset the cut backbone runs at inside Takt's graph.
	backboneOpset = onnxgraph.DefaultOpset
	// backboneNewestOpset is the newest ai.onnx opset ONNX Runtime 1.24 knows.
	backboneNewestOpset = 24
	// backbonePrefix renames every backbone tensor, away from the graph's own names.
	backbonePrefix = "bb_"
	// backboneDefaultWidth is the input width of a backbone with a symbolic size.
	backboneDefaultWidth = 224
)

// backboneStableOps are the operators a backbone exported at an opset outside 13..17 may
// use: for each, the range of opsets over which its float meaning equals opset 17's
// (later versions only added types, or attributes whose default keeps the old meaning).
var backboneStableOps = map[string][2]int64{
	"Conv": {1, 99}, "ConvTranspose": {1, 99}, "Relu": {6, 99}, "LeakyRelu": {6, 99}, "PRelu": {9, 99},
	"Sigmoid": {6, 99}, "Tanh": {6, 99}, "Elu": {6, 99}, "Selu": {6, 99}, "HardSigmoid": {6, 99},
	"HardSwish": {14, 99}, "Softplus": {1, 99}, "Exp": {6, 99}, "Sqrt": {6, 99}, "Abs": {6, 99}, "Neg": {6, 99},
	"MaxPool": {8, 99}, "AveragePool": {7, 99}, "GlobalAveragePool": {1, 99}, "GlobalMaxPool": {1, 99},
	"BatchNormalization": {9, 99}, "InstanceNormalization": {6, 99}, "Clip": {11, 99},
	"Add": {7, 99}, "Sub": {7, 99}, "Mul": {7, 99}, "Div": {7, 99}, "Concat": {4, 99}, "Identity": {1, 99},
	"Reshape": {5, 99}, "Shape": {1, 99}, "Transpose": {1, 99}, "Flatten": {1, 99}, "Slice": {10, 99},
	"Squeeze": {13, 99}, "Unsqueeze": {13, 99}, "Gather": {11, 99}, "Constant": {1, 99},
}

// Backbone is a backbone cut at its layers, renamed and checked, with the size of its
// input (as Takt feeds it) and of its feature maps (found by running it).
type Backbone struct {
	layers         []string
	sha256         string // of the user's file
	nodes          []*onnxpb.NodeProto
	inits          []*onnxpb.TensorProto
	input          string   // renamed
	outputs        []string // renamed layers
	channels       int      // of the backbone input: 1 or 3
	FixedH, FixedW int64    // the input's fixed size, 0 where symbolic
	InH, InW       int      // the model input size
	layerC         []int    // channels of each layer
	layerHW        [][2]int // h, w of each layer
	FeatC          int      // channels of the joined features
	FeatH, FeatW   int      // their grid: the first layer's
	mean, std      []float32
	neighborhood   int
}

// Nodes are the nodes kept from the user's model, renamed; the caller must not modify them.
func (bb *Backbone) Nodes() []*onnxpb.NodeProto { return bb.nodes }

// Cut parses o.ONNX, keeps what o.Layer's tensors depend on and checks it; the
// input size and feature shapes are left for Resolve.
func Cut(o Options) (*Backbone, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(o.ONNX, &m); err != nil {
		return nil, fmt.Errorf("backbone: not an ONNX model: %w", err)
	}
	g := m.GetGraph()
	if g == nil || len(g.Node) == 0 || len(g.Input) == 0 {
		return nil, fmt.Errorf("backbone: not an ONNX model (%d bytes without a graph of nodes and inputs)", len(o.ONNX))
	}
	opset := int64(-1)
	for _, imp := range m.OpsetImport {
		if imp.GetDomain() == "" || imp.GetDomain() == "ai.onnx" {
			opset = imp.GetVersion()
		}
	}
	switch {
	case opset < 1:
		return nil, fmt.Errorf("backbone: the model imports no ai.onnx opset")
	case opset > backboneNewestOpset:
		return nil, fmt.Errorf("backbone: opset %d is too new: ONNX Runtime 1.24 knows up to %d, and Takt runs the backbone at %d; export it with opset 13..17 (torch.onnx.export(..., opset_version=17))",
			opset, backboneNewestOpset, backboneOpset)
	}
	if o.Layer == "" {
		return nil, fmt.Errorf("backbone: no layer given to cut at; candidates: %s", layerCandidates(g, ""))
	}
	var layers []string
	for _, l := range strings.Split(o.Layer, ",") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(layers, l) {
			layers = append(layers, l)
		}
	}
	if len(layers) == 0 || len(layers) > 4 {
		return nil, fmt.Errorf("backbone: layer %q: want 1 to 4 comma-separated tensor names", o.Layer)
	}
	last := -1
	need := map[string]bool{}
	for _, l := range layers {
		producer := -1
		for i, n := range g.Node {
			if slices.Contains(n.Output, l) {
				producer = i
			}
		}
		if producer < 0 {
			return nil, fmt.Errorf("backbone: layer %q not found among the %d node outputs; candidates: %s", l, countOutputs(g), layerCandidates(g, l))
		}
		last = max(last, producer)
		need[l] = true
	}
	// Walk back from the layers: nodes are in topological order (an ONNX rule), so one
	// reverse pass finds everything they depend on.
	var kept []*onnxpb.NodeProto
	for i := last; i >= 0; i-- {
		n := g.Node[i]
		used := false
		for _, out := range n.Output {
			used = used || need[out]
		}
		if !used {
			continue
		}
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			return nil, fmt.Errorf("backbone: layer %q depends on node %q of operator domain %q: only standard ai.onnx operators are supported", o.Layer, n.GetName(), d)
		}
		for _, a := range n.Attribute {
			if a.G != nil || len(a.Graphs) > 0 {
				return nil, fmt.Errorf("backbone: layer %q depends on node %q (%s) with a subgraph: control flow is not supported", o.Layer, n.GetName(), n.GetOpType())
			}
		}
		if opset < 13 || opset > backboneOpset {
			r, ok := backboneStableOps[n.GetOpType()]
			if !ok || opset < r[0] || opset > r[1] {
				return nil, fmt.Errorf("backbone: opset %d: operator %s (node %q) may mean something else at opset %d, where Takt runs the backbone; export it with opset 13..17 (torch.onnx.export(..., opset_version=17))",
					opset, n.GetOpType(), n.GetName(), backboneOpset)
			}
		}
		kept = append(kept, n)
		for _, in := range n.Input {
			if in != "" {
				need[in] = true
			}
		}
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	for _, s := range g.SparseInitializer {
		if need[s.GetValues().GetName()] {
			return nil, fmt.Errorf("backbone: initializer %q is sparse: not supported", s.GetValues().GetName())
		}
	}
	bb := &Backbone{layers: layers, neighborhood: o.Neighborhood}
	sum := sha256.Sum256(o.ONNX)
	bb.sha256 = hex.EncodeToString(sum[:])
	isInit := map[string]bool{}
	for _, t := range g.Initializer {
		isInit[t.GetName()] = true
		if !need[t.GetName()] {
			continue
		}
		if t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL || len(t.ExternalData) > 0 {
			return nil, fmt.Errorf("backbone: initializer %q is stored in an external file: save the model as one file (onnx.save(model, path, save_as_external_data=False))", t.GetName())
		}
		c := proto.Clone(t).(*onnxpb.TensorProto)
		c.Name = proto.String(backbonePrefix + t.GetName())
		bb.inits = append(bb.inits, c)
	}
	var inputs []*onnxpb.ValueInfoProto
	for _, in := range g.Input {
		if need[in.GetName()] && !isInit[in.GetName()] {
			inputs = append(inputs, in)
		}
	}
	switch {
	case len(kept) == 0:
		return nil, fmt.Errorf("backbone: layer %q is a constant, not a feature map", o.Layer)
	case len(inputs) == 0:
		return nil, fmt.Errorf("backbone: layer %q does not depend on the model's image input", o.Layer)
	case len(inputs) > 1:
		return nil, fmt.Errorf("backbone: layer %q depends on %d inputs; want one image input", o.Layer, len(inputs))
	}
	if err := bb.checkInput(inputs[0]); err != nil {
		return nil, err
	}
	rename := func(s string) string {
		if s == "" {
			return s
		}
		return backbonePrefix + s
	}
	for _, n := range kept {
		c := proto.Clone(n).(*onnxpb.NodeProto)
		for i := range c.Input {
			c.Input[i] = rename(c.Input[i])
		}
		for i := range c.Output {
			c.Output[i] = rename(c.Output[i])
		}
		c.Domain = nil
		bb.nodes = append(bb.nodes, c)
	}
	bb.input = rename(inputs[0].GetName())
	for _, l := range layers {
		bb.outputs = append(bb.outputs, rename(l))
	}
	var err error
	if bb.mean, err = perChannel("mean", o.Mean, 0, bb.channels); err != nil {
		return nil, err
	}
	if bb.std, err = perChannel("std", o.Std, 1, bb.channels); err != nil {
		return nil, err
	}
	for c, s := range bb.std {
		if !(s > 0) {
			return nil, fmt.Errorf("backbone: std %g of channel %d: want > 0", s, c)
		}
	}
	if bb.neighborhood == 0 {
		bb.neighborhood = 3
	}
	if bb.neighborhood < 1 || bb.neighborhood > 9 || bb.neighborhood%2 == 0 {
		return nil, fmt.Errorf("backbone: neighborhood %d: want an odd number 1..9", bb.neighborhood)
	}
	return bb, nil
}

// checkInput takes the backbone input's channels and fixed size.
func (bb *Backbone) checkInput(in *onnxpb.ValueInfoProto) error {
	tt := in.GetType().GetTensorType()
	if tt == nil || tt.GetElemType() != int32(onnxpb.TensorProto_FLOAT) {
		return fmt.Errorf("backbone: input %q is not a float tensor: unsupported input (want float NCHW)", in.GetName())
	}
	dims := tt.GetShape().GetDim()
	desc := shapeString(dims)
	if len(dims) != 4 {
		return fmt.Errorf("backbone: input %q has shape %s: unsupported input shape (want NCHW: [1,C,H,W] with C 1 or 3)", in.GetName(), desc)
	}
	fixed := func(i int) int64 {
		if v, ok := dims[i].Value.(*onnxpb.TensorShapeProto_Dimension_DimValue); ok {
			return v.DimValue
		}
		return 0
	}
	if n := fixed(0); n > 1 {
		return fmt.Errorf("backbone: input %q has shape %s: unsupported input shape (batch %d; want 1 or symbolic)", in.GetName(), desc, n)
	}
	switch c := fixed(1); c {
	case 1, 3:
		bb.channels = int(c)
	default:
		return fmt.Errorf("backbone: input %q has shape %s: unsupported input shape (want 1 or 3 fixed channels, NCHW)", in.GetName(), desc)
	}
	bb.FixedH, bb.FixedW = fixed(2), fixed(3)
	if bb.FixedH > 4096 || bb.FixedW > 4096 {
		return fmt.Errorf("backbone: input %q has shape %s: unsupported input size (want up to 4096)", in.GetName(), desc)
	}
	return nil
}

// sizeFor sets the model input size: the backbone's fixed size, or o's (default 224 wide,
// height from aspect = width/height of the images).
func (bb *Backbone) sizeFor(o Options, aspect float64) error {
	w, h := o.Width, o.Height
	if w < 0 || h < 0 || w > 4096 || h > 4096 {
		return fmt.Errorf("backbone: input size %dx%d: want 1..4096", w, h)
	}
	if bb.FixedW > 0 {
		if w != 0 && int64(w) != bb.FixedW {
			return fmt.Errorf("backbone: width %d asked, but the backbone's input width is fixed at %d", w, bb.FixedW)
		}
		w = int(bb.FixedW)
	}
	if bb.FixedH > 0 {
		if h != 0 && int64(h) != bb.FixedH {
			return fmt.Errorf("backbone: height %d asked, but the backbone's input height is fixed at %d", h, bb.FixedH)
		}
		h = int(bb.FixedH)
	}
	switch {
	case w == 0 && h == 0:
		w = backboneDefaultWidth
		h = int(math.Round(float64(w) / aspect))
	case w == 0:
		w = int(math.Round(float64(h) * aspect))
	case h == 0:
		h = int(math.Round(float64(w) / aspect))
	}
	if w < 8 || h < 8 {
		return fmt.Errorf("backbone: input size %dx%d: want at least 8x8", w, h)
	}
	bb.InW, bb.InH = w, h
	return nil
}

// probeModel is the cut backbone alone, at the model input size, with the layers as its
// outputs of unknown shape (ONNX Runtime tells them when run).
func (bb *Backbone) probeModel() ([]byte, error) {
	dim := func(v int64) *onnxpb.TensorShapeProto_Dimension {
		return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	float := proto.Int32(int32(onnxpb.TensorProto_FLOAT))
	in := &onnxpb.ValueInfoProto{Name: proto.String(bb.input), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: float, Shape: &onnxpb.TensorShapeProto{
			Dim: []*onnxpb.TensorShapeProto_Dimension{dim(1), dim(int64(bb.channels)), dim(int64(bb.InH)), dim(int64(bb.InW))}}}}}}
	var outs []*onnxpb.ValueInfoProto
	for _, o := range bb.outputs {
		outs = append(outs, &onnxpb.ValueInfoProto{Name: proto.String(o), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: float}}}})
	}
	m := &onnxpb.ModelProto{
		IrVersion: proto.Int64(onnxgraph.IRVersion), ProducerName: proto.String(onnxgraph.ProducerName),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(backboneOpset)}},
		Graph:       &onnxpb.GraphProto{Name: proto.String("backbone"), Node: bb.nodes, Initializer: bb.inits, Input: []*onnxpb.ValueInfoProto{in}, Output: outs},
	}
	return proto.Marshal(m)
}

// addFeatureShape checks the next layer's shape as ONNX Runtime computed it.
func (bb *Backbone) addFeatureShape(shape []int64) error {
	layer := bb.layers[len(bb.layerC)]
	if len(shape) != 4 || shape[0] != 1 {
		return fmt.Errorf("backbone: layer %q has shape %v for a %dx%d input: want a 4-D NCHW feature map [1,C,h,w]", layer, shape, bb.InW, bb.InH)
	}
	c, h, w := shape[1], shape[2], shape[3]
	switch {
	case c < 1 || c > 4096:
		return fmt.Errorf("backbone: layer %q has %d channels: want 1..4096", layer, c)
	case h < 3 || w < 3:
		return fmt.Errorf("backbone: layer %q is only %dx%d for a %dx%d input: cut at an earlier layer or give a larger input", layer, w, h, bb.InW, bb.InH)
	case bb.FeatC+int(c) > 4096:
		return fmt.Errorf("backbone: layers %v have %d channels together: want up to 4096", bb.layers, bb.FeatC+int(c))
	}
	if len(bb.layerC) == 0 {
		bb.FeatH, bb.FeatW = int(h), int(w)
	}
	bb.layerC = append(bb.layerC, int(c))
	bb.layerHW = append(bb.layerHW, [2]int{int(h), int(w)})
	bb.FeatC += int(c)
	return nil
}

// AddFeatures adds the backbone's patch features of "image" ([1,inChannels,H,W], gray or
// RGB) as "patch" [1,C,h,w]. A 3-channel backbone sees a gray image as R = G = B, a
// 1-channel one an RGB image as its mean.
func (bb *Backbone) AddFeatures(g *onnxgraph.Graph, inChannels int) {
	src := "image"
	switch {
	case bb.channels == 3 && inChannels != 3:
		g.Node("Concat", []string{"image", "image", "image"}, []string{"bb_in_rgb"}, onnxgraph.Int("axis", 1))
		src = "bb_in_rgb"
	case bb.channels == 1 && inChannels == 3:
		g.Node("ReduceMean", []string{"image"}, []string{"bb_in_gray"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 1))
		src = "bb_in_gray"
	}
	c := int64(bb.channels)
	g.Initializer("bb_in_mean", []int64{1, c, 1, 1}, bb.mean)
	g.Initializer("bb_in_std", []int64{1, c, 1, 1}, bb.std)
	g.Node("Sub", []string{src, "bb_in_mean"}, []string{"bb_in_centered"})
	g.Node("Div", []string{"bb_in_centered", "bb_in_std"}, []string{bb.input})
	g.Import(bb.nodes, bb.inits)
	feat := bb.outputs[0]
	if len(bb.outputs) > 1 {
		// Every layer on the first one's grid, then side by side.
		joined := []string{bb.outputs[0]}
		for i, o := range bb.outputs[1:] {
			if bb.layerHW[i+1] == [2]int{bb.FeatH, bb.FeatW} {
				joined = append(joined, o)
				continue
			}
			size := fmt.Sprintf("bb_join_size_%d", i+1)
			out := fmt.Sprintf("bb_join_%d", i+1)
			g.InitializerInt64(size, []int64{4}, []int64{1, int64(bb.layerC[i+1]), int64(bb.FeatH), int64(bb.FeatW)})
			g.Node("Resize", []string{o, "", "", size}, []string{out},
				onnxgraph.String("mode", "linear"), onnxgraph.String("coordinate_transformation_mode", "half_pixel"))
			joined = append(joined, out)
		}
		g.Node("Concat", joined, []string{"bb_joined"}, onnxgraph.Int("axis", 1))
		feat = "bb_joined"
	}
	if k := int64(bb.neighborhood); k > 1 {
		g.Node("AveragePool", []string{feat}, []string{"patch"}, onnxgraph.Ints("kernel_shape", k, k),
			onnxgraph.Ints("strides", 1, 1), onnxgraph.Ints("pads", k/2, k/2, k/2, k/2), onnxgraph.Int("count_include_pad", 0))
		return
	}
	g.Node("Identity", []string{feat}, []string{"patch"})
}

func (bb *Backbone) String() string {
	return fmt.Sprintf("backbone=%s layer=%q input=%dx%dx%d mean=%v std=%v features=%dx%dx%d neighborhood=%d",
		bb.sha256[:12], strings.Join(bb.layers, ","), bb.channels, bb.InH, bb.InW, bb.mean, bb.std, bb.FeatC, bb.FeatH, bb.FeatW, bb.neighborhood)
}

func perChannel(what string, v []float64, def float64, channels int) ([]float32, error) {
	out := make([]float32, channels)
	switch len(v) {
	case 0:
		for i := range out {
			out[i] = float32(def)
		}
	case 1:
		for i := range out {
			out[i] = float32(v[0])
		}
	case channels:
		for i := range out {
			out[i] = float32(v[i])
		}
	default:
		return nil, fmt.Errorf("backbone: %s has %d values for a %d-channel input: want 1 or %d", what, len(v), channels, channels)
	}
	return out, nil
}

func shapeString(dims []*onnxpb.TensorShapeProto_Dimension) string {
	var parts []string
	for _, d := range dims {
		switch v := d.Value.(type) {
		case *onnxpb.TensorShapeProto_Dimension_DimValue:
			parts = append(parts, fmt.Sprint(v.DimValue))
		case *onnxpb.TensorShapeProto_Dimension_DimParam:
			parts = append(parts, v.DimParam)
		default:
			parts = append(parts, "?")
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func countOutputs(g *onnxpb.GraphProto) int {
	n := 0
	for _, nd := range g.Node {
		n += len(nd.Output)
	}
	return n
}

// layerCandidates names a few node outputs a user may have meant: those containing want
// (case-insensitive), else outputs of feature-map operators spread over the graph.
func layerCandidates(g *onnxpb.GraphProto, want string) string {
	const most = 8
	var match, feat []string
	featureOps := map[string]bool{"Conv": true, "Relu": true, "Add": true, "MaxPool": true, "Concat": true, "BatchNormalization": true,
		"Clip": true, "HardSwish": true, "Sigmoid": true, "Mul": true, "AveragePool": true}
	for _, n := range g.Node {
		for _, out := range n.Output {
			if out == "" {
				continue
			}
			if want != "" && strings.Contains(strings.ToLower(out), strings.ToLower(want)) {
				match = append(match, out)
			}
			if featureOps[n.GetOpType()] {
				feat = append(feat, out)
			}
		}
	}
	pick := match
	if len(pick) == 0 {
		pick = feat
	}
	if len(pick) > most {
		spread := make([]string, most)
		for i := range spread {
			spread[i] = pick[i*(len(pick)-1)/(most-1)]
		}
		pick = spread
	}
	if len(pick) == 0 {
		return "(none)"
	}
	return strings.Join(pick, ", ")
}
