package bundle

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/takt-edge/takt/models/onnxpb"
)

// RunSpec is how a Runtime runs a model, derived from its header and, for a bundle, its
// manifest.
type RunSpec struct {
	InputName string
	Input     InputShape // what is fed: channels, height, width
	InDims    []int64    // the input tensor: [1,C,H,W] or [1,H,W,C]
	NHWC      bool
	Color     string     // ColorGray, ColorRGB or ColorBGR
	Mean, Std [3]float64 // per tensor channel
	Resize    string     // ResizeStretch, ResizeCrop or ResizeLetterbox
	Pad       byte       // the letterbox's pad value

	Task      string
	ScoreName string
	ScoreDims []int64 // dynamic (batch) dims set to 1
	Labels    []string
	OKIndex   int
	FailIndex []int // classes that mean FAIL (classification, detection)
	// ClassScale, with per-class thresholds, is threshold / the class's own threshold for
	// each label (1 for classes without one); nil without per-class thresholds.
	ClassScale []float64
	Softmax    bool
	MapName    string  // "" without an anomaly map
	MapDims    []int64 // [1,1,h,w] or [1,h,w]
	MapH       int
	MapW       int

	// Normalize is anomalib 1.x's score and map normalization, nil for none.
	Normalize *ScoreNormalization

	// A detector's output: [1, 4+K, Anchors] (BoxLayoutCXCYWH) or [1, Anchors, 6]
	// (BoxLayoutXYXY), its candidate confidence and NMS IoU (0: none).
	BoxLayout     string
	Anchors       int
	MinConfidence float64
	NMSIoU        float64

	// ShapesAtRun is true when an output's size (a map's height and width, a detector's
	// anchor count) is dynamic in the model: the Runtime learns it from a test run and
	// calls SetOutputShapes before it allocates the output tensors.
	ShapesAtRun bool

	Name      string
	Version   string
	Threshold float64
	ROIs      []ROI
	Opset     int64
}

// Classes is the number of class scores of a classifier or detector, 0 for an anomaly model.
func (s *RunSpec) Classes() int { return len(s.Labels) }

// SetOutputShapes fixes the dynamic output dims from the shapes a test run produced: score
// is the shape of the score output, mapShape that of the map (nil without one).
func (s *RunSpec) SetOutputShapes(score, mapShape []int64) error {
	if s.Task == TaskDetection && s.BoxLayout == BoxLayoutXYXY {
		if len(score) != 3 || score[0] != 1 || score[1] < 0 || score[2] != 6 {
			return unsupported("detection output %q is %v at run time: want [1,boxes,6]", s.ScoreName, score)
		}
		s.Anchors = int(score[1])
		s.ScoreDims = []int64{1, score[1], 6}
	} else if s.Task == TaskDetection {
		if len(score) != 3 || score[0] != 1 || score[1] != int64(4+s.Classes()) || score[2] < 1 {
			return unsupported("detection output %q is %v at run time: want [1,%d,anchors]", s.ScoreName, score, 4+s.Classes())
		}
		s.Anchors = int(score[2])
		s.ScoreDims = []int64{1, int64(4 + s.Classes()), score[2]}
	}
	if s.MapName == "" {
		s.ShapesAtRun = false
		return nil
	}
	n := len(mapShape)
	if (n != 3 && n != 4) || mapShape[0] != 1 || (n == 4 && mapShape[1] != 1) || mapShape[n-2] < 1 || mapShape[n-1] < 1 {
		return unsupported("anomaly map output %q is %v at run time: want [1,1,h,w] or [1,h,w]", s.MapName, mapShape)
	}
	s.MapH, s.MapW = int(mapShape[n-2]), int(mapShape[n-1])
	s.MapDims = append([]int64(nil), mapShape...)
	s.ShapesAtRun = false
	return nil
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsupportedModel}, args...)...)
}

func checkOpset(h *ModelHeader) error {
	if h.opset < MinOpset || h.opset > MaxOpset {
		if h.opset == 0 {
			return unsupported("the model imports no ai.onnx opset")
		}
		return unsupported("opset %d: Takt runs ai.onnx opsets %d..%d", h.opset, MinOpset, MaxOpset)
	}
	return nil
}

// RunSpecOf checks that Takt can run a plain ONNX model (no manifest) and how: one float32
// NCHW input [1,1,H,W] (gray) or [1,3,H,W] (RGB) with fixed C, H and W (a dynamic batch dim
// is fed as 1), pixels scaled to 0..1, an anomaly score output scoreOutput (an anomalib
// export's pred_score when the model has no output "score") and optionally an anomaly map.
// Errors wrap ErrUnsupportedModel.
func RunSpecOf(h *ModelHeader, scoreOutput, mapOutput string) (*RunSpec, error) {
	if len(h.inputs) != 1 {
		return nil, unsupported("%d inputs, want exactly 1 image input", len(h.inputs))
	}
	in := h.inputs[0]
	const wantIn = "want float32 [1,1,H,W] or [1,3,H,W] with fixed C, H and W"
	switch {
	case !in.tensor || in.elemType != onnxpb.TensorProto_FLOAT:
		return nil, unsupported("input %v: %s", in, wantIn)
	case !in.ranked || len(in.dims) != 4:
		return nil, unsupported("input %v has rank %d: %s", in, len(in.dims), wantIn)
	case in.dims[1] < 0 || in.dims[2] < 0 || in.dims[3] < 0:
		return nil, unsupported("input %v has dynamic dims: %s (or give them in a bundle manifest)", in, wantIn)
	case in.dims[0] > 1 || (in.dims[1] != 1 && in.dims[1] != 3):
		return nil, unsupported("input %v: %s", in, wantIn)
	}
	if err := checkOpset(h); err != nil {
		return nil, err
	}
	s := &RunSpec{
		InputName: in.name,
		Input:     InputShape{Channels: int(in.dims[1]), Height: int(in.dims[2]), Width: int(in.dims[3])},
		Color:     ColorGray,
		Std:       [3]float64{1, 1, 1},
		Resize:    ResizeStretch,
		Task:      h.meta[MetaTask],
		Name:      h.graphName,
		Opset:     h.opset,
	}
	if s.Input.Channels == 3 {
		s.Color = ColorRGB
	}
	s.InDims = []int64{1, int64(s.Input.Channels), int64(s.Input.Height), int64(s.Input.Width)}
	if scoreOutput == "score" && outputNamed(h, "score") == nil && outputNamed(h, "pred_score") != nil {
		scoreOutput = "pred_score" // anomalib
	}
	if err := s.setOutputs(h, scoreOutput, mapOutput, false); err != nil {
		return nil, err
	}
	if v, ok := h.meta[MetaName]; ok && v != "" {
		s.Name = v
	}
	if v, ok := h.meta[MetaVersion]; ok {
		s.Version = v
	} else if h.modelVersion != 0 {
		s.Version = strconv.FormatInt(h.modelVersion, 10)
	}
	if v, ok := h.meta[MetaInput]; ok && v != s.Input.String() {
		return nil, unsupported("metadata %s=%q does not match the model input %v (want %q)", MetaInput, v, in, s.Input.String())
	}
	if v, ok := h.meta[MetaThreshold]; ok {
		th, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(th) || math.IsInf(th, 0) || th < 0 {
			return nil, unsupported("metadata %s=%q: want a finite number >= 0", MetaThreshold, v)
		}
		s.Threshold = th
	}
	return s, nil
}

func outputNamed(h *ModelHeader, name string) *valueSpec {
	for i := range h.outputs {
		if h.outputs[i].name == name {
			return &h.outputs[i]
		}
	}
	return nil
}

// setOutputs finds and checks the score (or class scores) and map outputs.
func (s *RunSpec) setOutputs(h *ModelHeader, scoreName, mapName string, mapRequired bool) error {
	var names []string
	for _, out := range h.outputs {
		names = append(names, strconv.Quote(out.name))
	}
	out := outputNamed(h, scoreName)
	if out == nil {
		return unsupported("no output %q (outputs: %v)", scoreName, names)
	}
	s.ScoreName = scoreName
	if s.Task == TaskDetection {
		return s.setDetectionOutput(out)
	}
	if !out.tensor || out.elemType != onnxpb.TensorProto_FLOAT || !out.ranked || len(out.dims) < 1 || len(out.dims) > 2 {
		if k := s.Classes(); k > 0 {
			return unsupported("class score output %v: want float32 [1,%d] or [%d]", out, k, k)
		}
		return unsupported("score output %v: want float32 [1] or [1,1] (a dynamic batch dim is fine)", out)
	}
	if k := s.Classes(); k > 0 {
		last := out.dims[len(out.dims)-1]
		if last != int64(k) || (len(out.dims) == 2 && out.dims[0] > 1) {
			return unsupported("class score output %v: want float32 [1,%d] or [%d], one score per label %q", out, k, k, s.Labels)
		}
		for range out.dims[:len(out.dims)-1] {
			s.ScoreDims = append(s.ScoreDims, 1)
		}
		s.ScoreDims = append(s.ScoreDims, int64(k))
	} else {
		for _, d := range out.dims {
			if d > 1 {
				return unsupported("score output %v: want float32 [1] or [1,1] (a dynamic batch dim is fine)", out)
			}
			s.ScoreDims = append(s.ScoreDims, 1)
		}
	}
	m := outputNamed(h, mapName)
	if m == nil {
		if mapRequired {
			return unsupported("no map output %q (outputs: %v)", mapName, names)
		}
		return nil
	}
	const wantMap = "want float32 [1,1,h,w] or [1,h,w]"
	if !m.tensor || m.elemType != onnxpb.TensorProto_FLOAT || !m.ranked || (len(m.dims) != 4 && len(m.dims) != 3) ||
		m.dims[0] > 1 || (len(m.dims) == 4 && m.dims[1] > 1) {
		return unsupported("anomaly map output %v: %s", m, wantMap)
	}
	hgt, wid := m.dims[len(m.dims)-2], m.dims[len(m.dims)-1]
	if hgt < 0 || wid < 0 {
		// An export with dynamic axes rarely declares its map's size (anomalib's depends on
		// the size it resizes to inside the graph): a test run tells.
		s.ShapesAtRun = true
	}
	s.MapName, s.MapH, s.MapW = m.name, int(hgt), int(wid)
	s.MapDims = []int64{1, 1, hgt, wid}
	if len(m.dims) == 3 {
		s.MapDims = []int64{1, hgt, wid}
	}
	return nil
}

// setDetectionOutput checks a detector's output: float32 [1, 4+K, anchors], or [1, N, 6]
// for BoxLayoutXYXY.
func (s *RunSpec) setDetectionOutput(out *valueSpec) error {
	k := s.Classes()
	if s.BoxLayout == BoxLayoutXYXY {
		const want = "want float32 [1,boxes,6] (x1, y1, x2, y2, score, class)"
		if !out.tensor || out.elemType != onnxpb.TensorProto_FLOAT || !out.ranked || len(out.dims) != 3 || out.dims[0] > 1 || (out.dims[2] >= 0 && out.dims[2] != 6) {
			return unsupported("detection output %v: %s", out, want)
		}
		s.ScoreDims = []int64{1, out.dims[1], 6}
		if out.dims[1] < 0 || out.dims[2] < 0 {
			s.ShapesAtRun = true
		} else {
			s.Anchors = int(out.dims[1])
		}
		return nil
	}
	want := fmt.Sprintf("want float32 [1,%d,anchors] (box centre x, y, width, height, then one score per label %q)", 4+k, s.Labels)
	if !out.tensor || out.elemType != onnxpb.TensorProto_FLOAT || !out.ranked || len(out.dims) != 3 {
		return unsupported("detection output %v: %s", out, want)
	}
	if out.dims[0] > 1 || (out.dims[1] >= 0 && out.dims[1] != int64(4+k)) {
		return unsupported("detection output %v: %s", out, want)
	}
	s.ScoreDims = []int64{1, int64(4 + k), out.dims[2]}
	if out.dims[2] < 0 {
		s.ShapesAtRun = true
	} else {
		s.Anchors = int(out.dims[2])
	}
	return nil
}

// ManifestSpec checks a model against its bundle manifest and says how to run it. Errors
// wrap ErrUnsupportedModel.
func ManifestSpec(h *ModelHeader, m *Manifest) (*RunSpec, error) {
	if err := checkOpset(h); err != nil {
		return nil, err
	}
	if h.opset != int64(m.Opset) {
		return nil, unsupported("model.onnx has opset %d, the manifest says %d", h.opset, m.Opset)
	}
	var in *valueSpec
	switch {
	case m.Input.Name != "":
		for i := range h.inputs {
			if h.inputs[i].name == m.Input.Name {
				in = &h.inputs[i]
			}
		}
		if in == nil {
			names := make([]string, len(h.inputs))
			for i, v := range h.inputs {
				names[i] = strconv.Quote(v.name)
			}
			return nil, unsupported("manifest input.name %q is not an input of the model (inputs: %v)", m.Input.Name, names)
		}
		if len(h.inputs) != 1 {
			return nil, unsupported("%d inputs, want exactly 1 image input", len(h.inputs))
		}
	case len(h.inputs) != 1:
		return nil, unsupported("%d inputs, want exactly 1 image input", len(h.inputs))
	default:
		in = &h.inputs[0]
	}
	channels := 3
	if m.Input.Color == ColorGray {
		channels = 1
	}
	want := fmt.Sprintf("want float32 %s [1,C,H,W] with C=%d (input.color %s)", m.Input.Layout, channels, m.Input.Color)
	if m.Input.Layout == LayoutNHWC {
		want = fmt.Sprintf("want float32 %s [1,H,W,C] with C=%d (input.color %s)", m.Input.Layout, channels, m.Input.Color)
	}
	if !in.tensor || in.elemType != onnxpb.TensorProto_FLOAT {
		return nil, unsupported("input %v: %s", in, want)
	}
	if !in.ranked || len(in.dims) != 4 {
		return nil, unsupported("input %v has rank %d: %s", in, len(in.dims), want)
	}
	ci, hi, wi := 1, 2, 3
	if m.Input.Layout == LayoutNHWC {
		ci, hi, wi = 3, 1, 2
	}
	if in.dims[0] > 1 {
		return nil, unsupported("input %v: batch %d, %s", in, in.dims[0], want)
	}
	if c := in.dims[ci]; c >= 0 && c != int64(channels) {
		return nil, unsupported("input %v has %d channels at %s position %d: %s", in, c, m.Input.Layout, ci, want)
	}
	H, W := in.dims[hi], in.dims[wi]
	if m.Input.Width > 0 {
		if (H >= 0 && H != int64(m.Input.Height)) || (W >= 0 && W != int64(m.Input.Width)) {
			return nil, unsupported("input %v is %dx%d (HxW), the manifest says %dx%d", in, H, W, m.Input.Height, m.Input.Width)
		}
		H, W = int64(m.Input.Height), int64(m.Input.Width)
	} else if H < 0 || W < 0 {
		return nil, unsupported("input %v has dynamic axes (height, width) not covered by the manifest: give input.width and input.height", in)
	}
	s := &RunSpec{
		InputName: in.name,
		Input:     InputShape{Channels: channels, Height: int(H), Width: int(W)},
		NHWC:      m.Input.Layout == LayoutNHWC,
		Color:     m.Input.Color,
		Std:       [3]float64{1, 1, 1},
		Resize:    m.Input.Resize,
		Pad:       byte(m.Input.Pad),
		Task:      m.Task,
		Name:      m.Name,
		Version:   m.Version,
		Threshold: m.Thresholds.Fail,
		ROIs:      m.ROIs,
		Opset:     h.opset,
		Softmax:   m.Outputs.Softmax,
	}
	if s.Resize == "" {
		s.Resize = ResizeStretch
	}
	for c := range channels {
		if n := len(m.Input.Mean); n > 0 {
			s.Mean[c] = m.Input.Mean[min(c, n-1)]
		}
		if n := len(m.Input.Std); n > 0 {
			s.Std[c] = m.Input.Std[min(c, n-1)]
		}
	}
	s.InDims = []int64{1, int64(channels), H, W}
	if s.NHWC {
		s.InDims = []int64{1, H, W, int64(channels)}
	}
	if m.Task == TaskClassification || m.Task == TaskDetection {
		s.Labels = m.Outputs.Labels
		s.OKIndex = slices.Index(s.Labels, m.Outputs.OKLabel)
		for _, l := range m.Outputs.FailClasses(m.Task) {
			s.FailIndex = append(s.FailIndex, slices.Index(s.Labels, l))
		}
		if len(m.Thresholds.PerClass) > 0 {
			s.ClassScale = make([]float64, len(s.Labels))
			for i, l := range s.Labels {
				s.ClassScale[i] = 1
				if t, ok := m.Thresholds.PerClass[l]; ok {
					s.ClassScale[i] = m.Thresholds.Fail / t
				}
			}
		}
	}
	if m.Task == TaskDetection {
		s.MinConfidence, s.NMSIoU, s.BoxLayout = m.Outputs.minConfidence(), m.Outputs.NMSIoU, m.Outputs.BoxLayout
	}
	s.Normalize = m.Outputs.Normalize
	if err := s.setOutputs(h, m.Outputs.Score, m.Outputs.Map, m.Outputs.Map != ""); err != nil {
		return nil, err
	}
	return s, nil
}
