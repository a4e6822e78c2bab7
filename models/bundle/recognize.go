package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/takt-edge/takt/models/onnxpb"
)

// Export kinds that Recognize tells apart by their inputs, outputs and metadata.
const (
	ExportAnomalib     = "anomalib"      // anomalib 2.x to_onnx: pred_score, anomaly_map, ...
	ExportAnomalib1    = "anomalib-1"    // anomalib 1.x to_onnx: "output" and metadata.json beside it
	ExportClassifier   = "classifier"    // torchvision or timm classifier: [N,K] logits or probabilities
	ExportYOLOClassify = "yolo-classify" // Ultralytics YOLO classify: softmax inside, names in metadata
	ExportYOLODetect   = "yolo-detect"   // Ultralytics YOLO detect without NMS: [1,4+K,anchors]
	ExportTakt         = "takt"          // trained by Takt: takt.* metadata
)

// ThresholdRuleExporter marks a threshold that comes from the exporter's own score scale
// (anomalib's normalized 0.5, a probability of 0.5, Ultralytics' box confidence).
const ThresholdRuleExporter = "exporter"

// ImageNetMean and ImageNetStd are the normalization of torchvision's and timm's ImageNet
// models, in R, G, B order.
var (
	ImageNetMean = []float64{0.485, 0.456, 0.406}
	ImageNetStd  = []float64{0.229, 0.224, 0.225}
)

// Recognition is what Recognize found in a model: the export kind, the manifest it implies
// and what it cannot tell.
type Recognition struct {
	// Kind is one of the Export constants, "" when the model matches none.
	Kind string
	// Found says what was recognized and from which evidence.
	Found string
	// Assumed lists the choices made without evidence in the model, each naming the
	// manifest key that changes it.
	Assumed []string

	draft     Manifest
	questions []Question
	h         *ModelHeader
}

// Question is a manifest key Recognize could not fill: Key is the manifest key, Flag the
// `takt model inspect` flag that sets it, Why what the model lacks.
type Question struct {
	Key, Flag, Why string
}

func (q Question) String() string { return fmt.Sprintf("%s: %s; set %s", q.Key, q.Why, q.Flag) }

// Answers fill or override what Recognize found. Zero fields keep the recognized value.
type Answers struct {
	Name, Version string
	Width, Height int
	Labels        []string
	OKLabel       string
	FailLabels    []string
	Threshold     float64
	PerClass      map[string]float64
	Mean, Std     []float64
}

// ErrQuestions is wrapped by Recognition.Manifest when keys are still open.
var ErrQuestions = errors.New("the model does not tell everything the manifest needs")

// Questions lists the keys Recognize could not fill (before answers).
func (r *Recognition) Questions() []Question { return r.questions }

// AnomalibMetadataFile is the file anomalib 1.x writes beside its export.
const AnomalibMetadataFile = "metadata.json"

// Recognize looks for the signature of a known export in the model's inputs, outputs and
// metadata, and in the files the exporter writes beside the model (beside maps a file
// name such as AnomalibMetadataFile to its bytes; nil for none). It never fails: a model
// it does not recognize has an empty Kind.
func Recognize(h *ModelHeader, beside map[string][]byte) *Recognition {
	r := &Recognition{h: h, draft: Manifest{Format: BundleFormat, Version: "1.0.0", Opset: int(h.opset)}}
	r.draft.Name = h.meta[MetaName]
	if r.draft.Name == "" {
		r.draft.Name = h.graphName
	}
	if len(h.inputs) != 1 {
		r.Found = fmt.Sprintf("%d inputs: Takt feeds one image input", len(h.inputs))
		return r
	}
	in := h.inputs[0]
	if !in.tensor || in.elemType != onnxpb.TensorProto_FLOAT || !in.ranked || len(in.dims) != 4 {
		r.Found = fmt.Sprintf("input %v: Takt feeds a float32 image tensor of rank 4", in)
		return r
	}
	m := &r.draft
	m.Input.Name = in.name
	m.Input.Layout, m.Input.Color = LayoutNCHW, ColorRGB
	hi, wi := 2, 3
	switch {
	case in.dims[1] == 1:
		m.Input.Color = ColorGray
	case in.dims[1] == 3:
	case in.dims[3] == 3 || in.dims[3] == 1:
		m.Input.Layout, hi, wi = LayoutNHWC, 1, 2
		if in.dims[3] == 1 {
			m.Input.Color = ColorGray
		}
	default:
		r.ask("input.layout", "--layout NCHW|NHWC", fmt.Sprintf("input %v has no channel dim of 1 or 3", in))
	}
	if in.dims[hi] > 0 && in.dims[wi] > 0 {
		m.Input.Width, m.Input.Height = int(in.dims[wi]), int(in.dims[hi])
	}
	outs := map[string]*valueSpec{}
	for i := range h.outputs {
		outs[h.outputs[i].name] = &h.outputs[i]
	}
	switch {
	case h.meta[MetaTask] == TaskAnomaly && outs["score"] != nil:
		r.takt()
	case outs["pred_score"] != nil:
		r.anomalib(outs)
	case in.name == "input" && outs["output"] != nil && outs["output"].ranked && len(outs["output"].dims) == 4:
		r.anomalib1(beside[AnomalibMetadataFile])
	case h.meta["author"] == "Ultralytics" || (h.meta["task"] != "" && h.meta["names"] != "" && h.meta["imgsz"] != ""):
		r.ultralytics()
	case len(h.outputs) == 1 && isClassScores(&h.outputs[0]):
		r.classifier(&h.outputs[0])
	default:
		r.Found = "none of the known exports (anomalib, torchvision/timm classifier, Ultralytics YOLO classify or detect, Takt)"
		r.ask("task", "write the manifest by hand: models/README.md, \"Bundles\"", "the model is "+r.Found)
	}
	if r.Kind != "" && (m.Input.Width == 0 || m.Input.Height == 0) {
		r.ask("input.width, input.height", "--width W --height H",
			fmt.Sprintf("input %v has dynamic height and width and no metadata gives its size", in))
	}
	return r
}

func isClassScores(o *valueSpec) bool {
	return o.tensor && o.elemType == onnxpb.TensorProto_FLOAT && o.ranked && len(o.dims) == 2 && o.dims[0] <= 1 && o.dims[1] > 1
}

func (r *Recognition) ask(key, flag, why string) {
	r.questions = append(r.questions, Question{Key: key, Flag: flag, Why: why})
}

func (r *Recognition) takt() {
	h, m := r.h, &r.draft
	r.Kind = ExportTakt
	r.Found = "a model trained by Takt (takt.* metadata)"
	m.Task, m.Outputs.Score = TaskAnomaly, "score"
	if outputNamed(h, "anomaly_map") != nil {
		m.Outputs.Map = "anomaly_map"
	}
	if v := h.meta[MetaVersion]; v != "" {
		m.Version = v
	}
	if th, err := strconv.ParseFloat(h.meta[MetaThreshold], 64); err == nil && th > 0 {
		m.Thresholds.Fail = th
	} else {
		r.ask("thresholds.fail", "--threshold T", "the model carries no takt.threshold")
	}
}

func (r *Recognition) anomalib(outs map[string]*valueSpec) {
	m := &r.draft
	r.Kind = ExportAnomalib
	names := []string{"pred_score"}
	m.Task, m.Outputs.Score = TaskAnomaly, "pred_score"
	if outs["anomaly_map"] != nil {
		m.Outputs.Map = "anomaly_map"
		names = append(names, "anomaly_map")
	}
	for _, n := range []string{"pred_label", "pred_mask"} {
		if outs[n] != nil {
			names = append(names, n)
		}
	}
	r.Found = fmt.Sprintf("anomalib 2.x export (outputs %s): resizing, ImageNet normalization and score normalization happen inside the graph", strings.Join(names, ", "))
	m.Input.Color = ColorRGB
	m.Input.InGraph = []string{InGraphResize, InGraphNormalize}
	m.Outputs.ScoreRange = []float64{0, 1}
	m.Thresholds.Fail, m.Thresholds.Rule = 0.5, ThresholdRuleExporter
	r.Assumed = append(r.Assumed, "thresholds.fail 0.5: anomalib's post-processor normalizes pred_score so that its learned image threshold is 0.5")
}

// anomalib1 reads an anomalib 1.x export: the transform is in the graph, the raw anomaly
// map is "output", the raw image score (when the model computes one) a [N] output, and the
// normalization lives in metadata.json.
func (r *Recognition) anomalib1(metadata []byte) {
	h, m := r.h, &r.draft
	r.Kind = ExportAnomalib1
	m.Task, m.Outputs.Map = TaskAnomaly, "output"
	m.Input.Color = ColorRGB
	m.Input.InGraph = []string{InGraphResize, InGraphNormalize}
	for _, o := range h.outputs {
		if o.name != "output" && o.tensor && o.elemType == onnxpb.TensorProto_FLOAT && o.ranked && len(o.dims) >= 1 && len(o.dims) <= 2 {
			m.Outputs.Score = o.name
		}
	}
	r.Found = fmt.Sprintf("anomalib 1.x export (input \"input\", raw anomaly map \"output\", image score %q): resizing and ImageNet normalization in the graph, score normalization in %s", m.Outputs.Score, AnomalibMetadataFile)
	if m.Outputs.Score == "" {
		r.Found = "anomalib 1.x export (input \"input\", raw anomaly map \"output\") without an image score output"
		r.ask("outputs.score", "export a model that outputs pred_score (anomalib 2.x, or PatchCore and others in 1.x)", r.Found)
	}
	if metadata == nil {
		r.ask("outputs.normalize", "put anomalib's "+AnomalibMetadataFile+" beside the model", "anomalib 1.x keeps its thresholds and min/max outside the graph")
		return
	}
	var md struct {
		ImageThreshold *float64 `json:"image_threshold"`
		PixelThreshold *float64 `json:"pixel_threshold"`
		Min            *float64 `json:"min"`
		Max            *float64 `json:"max"`
	}
	if err := json.Unmarshal(metadata, &md); err != nil || md.ImageThreshold == nil {
		r.ask("outputs.normalize", "give anomalib's own "+AnomalibMetadataFile, fmt.Sprintf("%s beside the model has no image_threshold (%v)", AnomalibMetadataFile, err))
		return
	}
	if md.Min != nil && md.Max != nil && *md.Max > *md.Min {
		n := &ScoreNormalization{ImageThreshold: *md.ImageThreshold, Min: *md.Min, Max: *md.Max}
		if md.PixelThreshold != nil {
			n.PixelThreshold = *md.PixelThreshold
		}
		m.Outputs.Normalize = n
		m.Outputs.ScoreRange = []float64{0, 1}
		m.Thresholds.Fail, m.Thresholds.Rule = 0.5, ThresholdRuleExporter
		r.Assumed = append(r.Assumed, fmt.Sprintf("outputs.normalize from %s: scores normalized as anomalib's inferencers do, threshold 0.5", AnomalibMetadataFile))
		return
	}
	// Without min/max anomalib does not normalize: its threshold is on the raw score.
	m.Thresholds.Fail, m.Thresholds.Rule = *md.ImageThreshold, ThresholdRuleExporter
	r.Assumed = append(r.Assumed, fmt.Sprintf("thresholds.fail %g: image_threshold of %s, on the raw score", *md.ImageThreshold, AnomalibMetadataFile))
}

func (r *Recognition) ultralytics() {
	h, m := r.h, &r.draft
	task := h.meta["task"]
	names, err := parsePythonNames(h.meta["names"])
	if err != nil {
		r.Found = fmt.Sprintf("an Ultralytics %s export whose names metadata does not parse (%v)", task, err)
		r.ask("outputs.labels", "--labels a,b,c", "metadata names: "+err.Error())
	}
	if size := parseIntList(h.meta["imgsz"]); len(size) == 2 && m.Input.Width == 0 {
		m.Input.Height, m.Input.Width = size[0], size[1] // Ultralytics writes [height, width]
	}
	m.Input.Color = ColorRGB
	m.Outputs.Labels = names
	out := &h.outputs[0]
	m.Outputs.Score = out.name
	switch task {
	case "classify":
		r.Kind = ExportYOLOClassify
		r.Found = fmt.Sprintf("Ultralytics YOLO classify export (metadata task=classify, %d names, imgsz %s); softmax inside the graph", len(names), h.meta["imgsz"])
		m.Task = TaskClassification
		m.Input.Resize = ResizeCrop
		m.Outputs.Softmax = h.ProducerOp(out.name) != "Softmax"
		r.okLabel()
		m.Thresholds.Fail, m.Thresholds.Rule = 0.5, ThresholdRuleExporter
		r.Assumed = append(r.Assumed, "thresholds.fail 0.5: a part FAILs when its FAIL classes together are more likely than not")
	case "detect":
		if out.ranked && len(out.dims) == 3 && out.dims[2] == 6 && out.dims[1] != int64(4+len(names)) {
			r.Kind = ExportYOLODetect
			r.Found = fmt.Sprintf("Ultralytics YOLO end-to-end detect export (metadata task=detect, %d names, imgsz %s): output %v, rows x1, y1, x2, y2, score, class, no NMS needed",
				len(names), h.meta["imgsz"], out)
			m.Task = TaskDetection
			m.Input.Resize, m.Input.Pad = ResizeLetterbox, 114
			m.Outputs.BoxLayout = BoxLayoutXYXY
			m.Outputs.MinConfidence = DefaultMinConfidence
			m.Thresholds.Fail, m.Thresholds.Rule = DefaultMinConfidence, ThresholdRuleExporter
			r.Assumed = append(r.Assumed,
				"outputs.min_confidence 0.25: Ultralytics' predict default",
				"thresholds.fail 0.25: a part FAILs when any box of a FAIL class is above it (the confidence Ultralytics shows boxes at)",
				"outputs.fail_labels: every class (set --fail-labels to keep some classes informative)")
			return
		}
		if !out.ranked || len(out.dims) != 3 || (out.dims[1] > 0 && out.dims[1] != int64(4+len(names))) {
			r.Found = fmt.Sprintf("Ultralytics YOLO detect export with output %v: Takt reads [1,%d,anchors] (no NMS) or [1,N,6] (end-to-end)", out, 4+len(names))
			r.ask("outputs.box_layout", "re-export with the default head", r.Found)
			return
		}
		r.Kind = ExportYOLODetect
		r.Found = fmt.Sprintf("Ultralytics YOLO detect export (metadata task=detect, %d names, imgsz %s): output %s [1,4+%d,anchors], boxes cx, cy, w, h and class scores, no NMS in the graph",
			len(names), h.meta["imgsz"], out.name, len(names))
		m.Task = TaskDetection
		m.Input.Resize, m.Input.Pad = ResizeLetterbox, 114 // Ultralytics' LetterBox pads gray
		m.Outputs.BoxLayout = BoxLayoutCXCYWH
		m.Outputs.MinConfidence, m.Outputs.NMSIoU = DefaultMinConfidence, 0.7
		m.Thresholds.Fail, m.Thresholds.Rule = DefaultMinConfidence, ThresholdRuleExporter
		r.Assumed = append(r.Assumed,
			"outputs.min_confidence 0.25, outputs.nms_iou 0.7: Ultralytics' predict defaults",
			"thresholds.fail 0.25: a part FAILs when any box of a FAIL class is above it (the confidence Ultralytics shows boxes at)",
			"outputs.fail_labels: every class (set --fail-labels to keep some classes informative)")
	default:
		r.Found = fmt.Sprintf("an Ultralytics %s export: Takt runs classify and detect models", task)
		r.ask("task", "export a classify or detect model", r.Found)
	}
}

func (r *Recognition) classifier(out *valueSpec) {
	h, m := r.h, &r.draft
	k := int(out.dims[1])
	r.Kind = ExportClassifier
	m.Task = TaskClassification
	m.Outputs.Score = out.name
	m.Outputs.Softmax = h.ProducerOp(out.name) != "Softmax"
	scale := "logits (a softmax is applied)"
	if !m.Outputs.Softmax {
		scale = "probabilities (softmax in the graph)"
	}
	r.Found = fmt.Sprintf("image classifier (torchvision/timm style): output %v, %d classes, %s", out, k, scale)
	for _, key := range []string{"labels", "classes", "names"} {
		if v := h.meta[key]; v != "" {
			var labels []string
			if json.Unmarshal([]byte(v), &labels) == nil && len(labels) == k {
				m.Outputs.Labels = labels
			} else if names, err := parsePythonNames(v); err == nil {
				m.Outputs.Labels = names
			}
		}
	}
	if len(m.Outputs.Labels) != k {
		m.Outputs.Labels = nil
		r.ask("outputs.labels", "--labels a,b,c", fmt.Sprintf("the model does not name its %d classes", k))
	} else {
		r.okLabel()
	}
	if m.Input.Color == ColorRGB {
		m.Input.Mean, m.Input.Std = ImageNetMean, ImageNetStd
		r.Assumed = append(r.Assumed, "input.mean, input.std ImageNet's: what torchvision's and timm's transforms apply outside the graph (--mean, --std)")
	}
	m.Thresholds.Fail, m.Thresholds.Rule = 0.5, ThresholdRuleExporter
	r.Assumed = append(r.Assumed, "thresholds.fail 0.5: a part FAILs when its FAIL classes together are more likely than not")
}

// okLabel picks the class of a good part when its name says so.
func (r *Recognition) okLabel() {
	m := &r.draft
	if l := goodClass(m.Outputs.Labels); l != "" {
		m.Outputs.OKLabel = l
		r.Assumed = append(r.Assumed, fmt.Sprintf("outputs.ok_label %q: the class named as a good part (--ok-label)", l))
		return
	}
	r.ask("outputs.ok_label", "--ok-label NAME", fmt.Sprintf("none of the classes %q is named as a good part", m.Outputs.Labels))
}

// goodClass is the label that names a good part, "" when none does.
func goodClass(labels []string) string {
	for _, l := range labels {
		if slices.Contains([]string{"good", "ok", "okay", "pass", "normal", "no_defect"}, strings.ToLower(l)) {
			return l
		}
	}
	return ""
}

// Manifest is the recognized manifest with the answers applied, without files (takt model
// sign adds them). It fails with an error wrapping ErrQuestions that lists every open key,
// or with the check of the manifest against the model.
func (r *Recognition) Manifest(a Answers) (*Manifest, error) {
	m := r.draft
	m.Input.Mean, m.Input.Std = slices.Clone(m.Input.Mean), slices.Clone(m.Input.Std)
	m.Outputs.Labels = slices.Clone(m.Outputs.Labels)
	if a.Name != "" {
		m.Name = a.Name
	}
	if a.Version != "" {
		m.Version = a.Version
	}
	if a.Width > 0 || a.Height > 0 {
		m.Input.Width, m.Input.Height = a.Width, a.Height
	}
	if a.Labels != nil {
		m.Outputs.Labels = a.Labels
	}
	if a.OKLabel != "" {
		m.Outputs.OKLabel = a.OKLabel
	}
	if a.FailLabels != nil {
		m.Outputs.FailLabels = a.FailLabels
	}
	if a.Threshold > 0 {
		m.Thresholds.Fail, m.Thresholds.Rule = a.Threshold, ""
	}
	if a.PerClass != nil {
		m.Thresholds.PerClass = a.PerClass
	}
	if a.Mean != nil {
		m.Input.Mean = a.Mean
	}
	if a.Std != nil {
		m.Input.Std = a.Std
	}
	if m.Task == TaskClassification && m.Outputs.OKLabel == "" {
		m.Outputs.OKLabel = goodClass(m.Outputs.Labels)
	}
	var open []string
	for _, q := range r.questions {
		answered := false
		switch q.Key {
		case "input.width, input.height":
			answered = m.Input.Width > 0 && m.Input.Height > 0
		case "outputs.labels":
			answered = len(m.Outputs.Labels) > 0
		case "outputs.ok_label":
			answered = m.Outputs.OKLabel != ""
		case "thresholds.fail", "outputs.normalize":
			answered = m.Thresholds.Fail > 0 && (q.Key == "thresholds.fail" || a.Threshold > 0)
		}
		if !answered {
			open = append(open, q.String())
		}
	}
	if m.Task == TaskClassification && len(m.Outputs.Labels) > 0 && m.Outputs.OKLabel == "" && !slices.ContainsFunc(r.questions, func(q Question) bool { return q.Key == "outputs.ok_label" }) {
		open = append(open, Question{Key: "outputs.ok_label", Flag: "--ok-label NAME", Why: fmt.Sprintf("none of the classes %q is named as a good part", m.Outputs.Labels)}.String())
	}
	if m.Name == "" {
		open = append(open, Question{Key: "name", Flag: "--name NAME", Why: "the model has no name"}.String())
	}
	if len(open) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrQuestions, strings.Join(open, "\n  "))
	}
	check := m
	check.Files = map[string]string{modelFile: strings.Repeat("0", 64)}
	if err := check.Validate(); err != nil {
		return nil, err
	}
	if _, err := ManifestSpec(r.h, &check); err != nil {
		return nil, err
	}
	return &m, nil
}

var pythonName = regexp.MustCompile(`(\d+)\s*:\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")`)

// parsePythonNames reads Ultralytics' names metadata, str() of a Python dict such as
// "{0: 'good', 1: 'scratch'}", into names in index order.
func parsePythonNames(s string) ([]string, error) {
	ms := pythonName.FindAllStringSubmatch(s, -1)
	if len(ms) == 0 {
		return nil, fmt.Errorf("%q is not a dict of class names", s)
	}
	names := make([]string, len(ms))
	for _, m := range ms {
		i, err := strconv.Atoi(m[1])
		if err != nil || i < 0 || i >= len(ms) || names[i] != "" {
			return nil, fmt.Errorf("%q: class indexes are not 0..%d", s, len(ms)-1)
		}
		names[i] = m[2] + m[3]
	}
	return names, nil
}

// parseIntList reads "[640, 480]" or "640".
func parseIntList(s string) []int {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '[' || r == ']' || r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil
		}
		out = append(out, n)
	}
	if len(out) == 1 {
		out = append(out, out[0])
	}
	return out
}
