package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// BundleFormat is the manifest "format" this version of Takt reads and writes.
const BundleFormat = "takt-bundle/1"

// Opsets of the ai.onnx domain Takt accepts: ONNX Runtime 1.24 officially supports up to 25.
const (
	MinOpset = 7
	MaxOpset = 25
)

// Tasks a model can have.
const (
	TaskAnomaly        = "anomaly"        // score (higher is more anomalous) and an optional map
	TaskClassification = "classification" // class probabilities (or logits with Softmax)
	TaskDetection      = "detection"      // boxes with a class and a confidence each
)

// BoxLayoutCXCYWH is the layout of an Ultralytics YOLO detect export without NMS: one output
// [1, 4+K, anchors] whose rows are the box centre x, y, width and height in input pixels,
// then the K class scores.
const BoxLayoutCXCYWH = "cxcywh-classes"

// BoxLayoutXYXY is the layout of an end-to-end export (YOLOv10-style heads): one output
// [1, N, 6] whose rows are x1, y1, x2, y2 in input pixels, the score and the class index;
// its boxes need no NMS.
const BoxLayoutXYXY = "xyxy-score-class"

// Steps an exported graph may do itself (InputSpec.InGraph).
const (
	InGraphResize    = "resize"    // the graph resizes its input to the size it was trained on
	InGraphNormalize = "normalize" // the graph applies its mean/std: Takt feeds byte/255
)

// Input layouts, color orders and resize modes of an InputSpec.
const (
	LayoutNCHW = "NCHW"
	LayoutNHWC = "NHWC"

	ColorGray = "gray"
	ColorRGB  = "rgb"
	ColorBGR  = "bgr"

	// ResizeStretch scales the (ROI of the) frame to the input size, ignoring its aspect.
	ResizeStretch = "stretch"
	// ResizeCrop cuts the largest centered rectangle of the input's aspect, then scales.
	ResizeCrop = "crop"
	// ResizeLetterbox scales to fit inside the input, keeping the aspect, and pads the rest
	// with black (after normalization: (0 - mean) / std).
	ResizeLetterbox = "letterbox"
)

// Manifest describes a model bundle: what the model is, how to feed it, how to read its
// outputs, how to decide, and the sha256 of every other file of the bundle. It is what the
// bundle's signature signs. See models/README.md, "Bundles".
type Manifest struct {
	Format  string `json:"format"`  // BundleFormat
	Name    string `json:"name"`    // model name
	Version string `json:"version"` // semantic version, e.g. 1.4.0
	Task    string `json:"task"`    // TaskAnomaly, TaskClassification or TaskDetection
	// Input says how a frame becomes the model's input tensor.
	Input InputSpec `json:"input"`
	// Outputs names the model outputs Takt reads.
	Outputs OutputSpec `json:"outputs"`
	// Thresholds decide PASS / FAIL from the score.
	Thresholds Thresholds `json:"thresholds"`
	// ROIs are regions of the frame, each scored separately; the part's score is the
	// highest. None: the whole frame.
	ROIs []ROI `json:"rois,omitempty"`
	// MinAgentVersion is the oldest agent version that can run the bundle (semantic).
	MinAgentVersion string `json:"min_agent_version,omitempty"`
	// Opset is the model's ai.onnx opset; it must match model.onnx.
	Opset int `json:"opset"`
	// Metrics are training/evaluation figures, free-form (e.g. auroc, f1, threshold_fpr).
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Dataset identifies the dataset snapshot the model was trained on.
	Dataset string `json:"dataset,omitempty"`
	// Rollback allows a station to install this bundle over a higher version.
	Rollback bool `json:"rollback,omitempty"`
	// Golden is the golden set: images with the scores the model must reproduce.
	Golden *GoldenSet `json:"golden,omitempty"`
	// Files maps every file of the bundle but manifest.json and signature to its hex
	// sha256. It must hold model.onnx.
	Files map[string]string `json:"files,omitempty"`
}

// InputSpec says how a frame becomes the model's input tensor.
type InputSpec struct {
	// Name is the ONNX input; empty takes the model's only input.
	Name string `json:"name,omitempty"`
	// Width and Height are the input size; 0 takes it from the model, which then must have
	// fixed dims there.
	Width  int    `json:"width,omitempty"`
	Height int    `json:"height,omitempty"`
	Layout string `json:"layout"` // LayoutNCHW or LayoutNHWC
	Color  string `json:"color"`  // ColorGray, ColorRGB or ColorBGR (channel order of the tensor)
	// Mean and Std normalize each channel (in the tensor's channel order) after scaling
	// bytes to 0..1: (b/255 - mean) / std. One value, or one per channel. Default 0 and 1.
	Mean []float64 `json:"mean,omitempty"`
	Std  []float64 `json:"std,omitempty"`
	// Resize is ResizeStretch (default), ResizeCrop or ResizeLetterbox.
	Resize string `json:"resize,omitempty"`
	// Pad is the byte value ResizeLetterbox pads with (0, black, by default; Ultralytics
	// pads 114, gray), before normalization like any pixel.
	Pad int `json:"pad,omitempty"`
	// InGraph lists what the graph does itself (InGraphResize, InGraphNormalize), as in
	// anomalib's exports: with "normalize", mean and std must stay 0 and 1, or the input
	// would be normalized twice.
	InGraph []string `json:"in_graph,omitempty"`
}

// OutputSpec names the outputs Takt reads.
type OutputSpec struct {
	// Score is the output holding the image score (anomaly: one float; anomalib exports call
	// it pred_score) or the class scores (classification: [1,K] or [K]).
	Score string `json:"score"`
	// Map is the optional anomaly map output, [1,1,h,w] or [1,h,w] (anomalib: anomaly_map).
	Map string `json:"map,omitempty"`
	// Labels name the K classes of a classifier, in output order.
	Labels []string `json:"labels,omitempty"`
	// OKLabel is the class of a good part; a classifier's score is 1 - P(OKLabel).
	OKLabel string `json:"ok_label,omitempty"`
	// Softmax applies a softmax to the class scores (for a model that outputs logits).
	Softmax bool `json:"softmax,omitempty"`
	// FailLabels are the classes that mean FAIL. A classifier's score is the sum of their
	// probabilities (default: every class but OKLabel, so 1 - P(OKLabel)); a detector's is
	// the highest confidence of a box of one of them (default: every class).
	FailLabels []string `json:"fail_labels,omitempty"`
	// Normalize applies anomalib 1.x's min-max normalization to a raw score and map, as
	// its inferencers do with the metadata.json it exports: clamp((x - threshold) / (max -
	// min) + 0.5, 0, 1), with the image threshold for the score and the pixel threshold for
	// the map. The score's threshold is then 0.5.
	Normalize *ScoreNormalization `json:"normalize,omitempty"`
	// ScoreRange is the [low, high] range of the score when the model bounds it (anomalib's
	// normalized pred_score: [0, 1]); thresholds.fail must lie inside it.
	ScoreRange []float64 `json:"score_range,omitempty"`
	// BoxLayout is a detector's output layout: BoxLayoutCXCYWH or BoxLayoutXYXY.
	BoxLayout string `json:"box_layout,omitempty"`
	// MinConfidence drops a detector's boxes at or below it before NMS (default 0.25, as
	// Ultralytics' predict).
	MinConfidence float64 `json:"min_confidence,omitempty"`
	// NMSIoU is the IoU above which non-maximum suppression drops the weaker of two boxes
	// of one class (Ultralytics: 0.7); 0 for an export that has NMS in the graph.
	NMSIoU float64 `json:"nms_iou,omitempty"`
}

// ScoreNormalization holds anomalib 1.x's metadata.json keys of the same names.
type ScoreNormalization struct {
	ImageThreshold float64 `json:"image_threshold"`
	PixelThreshold float64 `json:"pixel_threshold"`
	Min            float64 `json:"min"`
	Max            float64 `json:"max"`
}

// DefaultMinConfidence is a detector's MinConfidence when the manifest gives none.
const DefaultMinConfidence = 0.25

// FailClasses lists the classes that mean FAIL: FailLabels, or their default.
func (o *OutputSpec) FailClasses(task string) []string {
	if len(o.FailLabels) > 0 {
		return o.FailLabels
	}
	var out []string
	for _, l := range o.Labels {
		if task != TaskClassification || l != o.OKLabel {
			out = append(out, l)
		}
	}
	return out
}

// Thresholds decide PASS / FAIL.
type Thresholds struct {
	// Fail: a score above it is FAIL. Must be > 0.
	Fail float64 `json:"fail"`
	// Rule is how the trainer chose Fail: "false-reject" (within FalseRejectBudget),
	// "best-f1", "few-images" (too few good images for a tail fit); empty when set by hand.
	Rule string `json:"rule,omitempty"`
	// FalseRejectBudget is the share of good parts the plant accepts to reject, as the
	// trainer was told (0.01 is 1%).
	FalseRejectBudget float64 `json:"false_reject_budget,omitempty"`
	// PerClass sets the FAIL threshold of single FAIL classes of a classifier (on the
	// class's probability) or detector (on a box's confidence); Fail holds for the others.
	// With it, the score is the highest of each FAIL class's probability (a detector: box
	// confidence) times Fail / its threshold, so that it is above Fail exactly when one
	// class is above its own threshold.
	PerClass map[string]float64 `json:"per_class,omitempty"`
	// ExpectedFalseReject and ExpectedEscape are the shares of good parts failed and of
	// defective parts passed at Fail that the trainer's cross-validation predicts; absent
	// when unknown (ExpectedEscape needs labeled defects).
	ExpectedFalseReject *float64 `json:"expected_false_reject,omitempty"`
	ExpectedEscape      *float64 `json:"expected_escape,omitempty"`
}

// ROI is a named region of the frame in fractions (0..1) of its width and height.
type ROI struct {
	Name string `json:"name"`
	Region
}

// GoldenSet is the bundle's golden set: images under golden/ and the scores the model gives
// them. A station replays it before it serves the model.
type GoldenSet struct {
	// Tolerance is the largest allowed |got - want| / max(1, |want|); default 1e-3.
	Tolerance float64      `json:"tolerance,omitempty"`
	Cases     []GoldenCase `json:"cases"`
}

// GoldenCase is one golden image and its expected score (the part's score, over all ROIs).
type GoldenCase struct {
	File  string  `json:"file"` // path in the bundle, under golden/
	Score float64 `json:"score"`
	Class string  `json:"class,omitempty"` // classification: the expected top class
}

// ParseManifest decodes manifest JSON strictly (unknown keys and trailing data are errors)
// and validates it. Errors wrap ErrBadBundle.
func ParseManifest(data []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest.json: %v", ErrBadBundle, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: manifest.json: data after the JSON object", ErrBadBundle)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks every field and reports all missing keys at once, then the first wrong
// value, naming the key. Errors wrap ErrBadBundle.
func (m *Manifest) Validate() error {
	var missing []string
	need := func(ok bool, key string) {
		if !ok {
			missing = append(missing, key)
		}
	}
	need(m.Format != "", "format")
	need(m.Name != "", "name")
	need(m.Version != "", "version")
	need(m.Task != "", "task")
	need(m.Input.Layout != "", "input.layout")
	need(m.Input.Color != "", "input.color")
	need(m.Outputs.Score != "", "outputs.score")
	need(m.Thresholds.Fail != 0, "thresholds.fail")
	need(m.Opset != 0, "opset")
	need(m.Files["model.onnx"] != "", "files[model.onnx]")
	if m.Task == TaskClassification {
		need(len(m.Outputs.Labels) > 0, "outputs.labels")
		need(m.Outputs.OKLabel != "", "outputs.ok_label")
	}
	if m.Task == TaskDetection {
		need(len(m.Outputs.Labels) > 0, "outputs.labels")
		need(m.Outputs.BoxLayout != "", "outputs.box_layout")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: manifest.json: missing keys: %s", ErrBadBundle, strings.Join(missing, ", "))
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: manifest.json: "+format, append([]any{ErrBadBundle}, args...)...)
	}
	if m.Format != BundleFormat {
		return bad("format %q: want %q", m.Format, BundleFormat)
	}
	if _, err := ParseSemver(m.Version); err != nil {
		return bad("version: %v", err)
	}
	if m.MinAgentVersion != "" {
		if _, err := ParseSemver(m.MinAgentVersion); err != nil {
			return bad("min_agent_version: %v", err)
		}
	}
	if m.Task != TaskAnomaly && m.Task != TaskClassification && m.Task != TaskDetection {
		return bad("task %q: want %s, %s or %s", m.Task, TaskAnomaly, TaskClassification, TaskDetection)
	}
	in := m.Input
	if in.Layout != LayoutNCHW && in.Layout != LayoutNHWC {
		return bad("input.layout %q: want NCHW or NHWC", in.Layout)
	}
	if !slices.Contains([]string{ColorGray, ColorRGB, ColorBGR}, in.Color) {
		return bad("input.color %q: want gray, rgb or bgr", in.Color)
	}
	if in.Width < 0 || in.Height < 0 || (in.Width == 0) != (in.Height == 0) {
		return bad("input.width %d, input.height %d: give both (> 0) or neither", in.Width, in.Height)
	}
	if in.Resize != "" && !slices.Contains([]string{ResizeStretch, ResizeCrop, ResizeLetterbox}, in.Resize) {
		return bad("input.resize %q: want stretch, crop or letterbox", in.Resize)
	}
	if in.Pad < 0 || in.Pad > 255 || (in.Pad != 0 && in.Resize != ResizeLetterbox) {
		return bad("input.pad %d: want a byte value 0..255, with input.resize letterbox", in.Pad)
	}
	channels := 3
	if in.Color == ColorGray {
		channels = 1
	}
	for _, v := range []struct {
		key  string
		vals []float64
	}{{"input.mean", in.Mean}, {"input.std", in.Std}} {
		if len(v.vals) != 0 && len(v.vals) != 1 && len(v.vals) != channels {
			return bad("%s has %d values: want 1 or %d (one per channel)", v.key, len(v.vals), channels)
		}
		for _, x := range v.vals {
			if math.IsNaN(x) || math.IsInf(x, 0) || (v.key == "input.std" && x <= 0) {
				return bad("%s: %v is not a finite number%s", v.key, x, map[bool]string{true: " > 0"}[v.key == "input.std"])
			}
		}
	}
	for _, step := range in.InGraph {
		if step != InGraphResize && step != InGraphNormalize {
			return bad("input.in_graph %q: want %s or %s", step, InGraphResize, InGraphNormalize)
		}
		if step == InGraphNormalize && (slices.ContainsFunc(in.Mean, func(v float64) bool { return v != 0 }) ||
			slices.ContainsFunc(in.Std, func(v float64) bool { return v != 1 })) {
			return bad("input.mean %v, input.std %v: the graph normalizes its input itself (input.in_graph has %q): leave them out, or the input is normalized twice", in.Mean, in.Std, InGraphNormalize)
		}
	}
	out := m.Outputs
	if err := m.validateClasses(); err != nil {
		return err
	}
	if n := out.Normalize; n != nil {
		if m.Task != TaskAnomaly {
			return bad("outputs.normalize: only for task anomaly")
		}
		for _, v := range []float64{n.ImageThreshold, n.PixelThreshold, n.Min, n.Max} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return bad("outputs.normalize %+v: not finite", *n)
			}
		}
		if !(n.Max > n.Min) {
			return bad("outputs.normalize: max %v must be above min %v", n.Max, n.Min)
		}
	}
	if r := out.ScoreRange; r != nil {
		if len(r) != 2 || !(r[0] < r[1]) || math.IsInf(r[0], 0) || math.IsInf(r[1], 0) {
			return bad("outputs.score_range %v: want [low, high] with low < high", r)
		}
		if t := m.Thresholds.Fail; !(t > r[0] && t < r[1]) {
			return bad("thresholds.fail %v is outside outputs.score_range %v: the threshold is on another scale than the score", t, r)
		}
	}
	if t := m.Thresholds.Fail; math.IsNaN(t) || math.IsInf(t, 0) || t <= 0 {
		return bad("thresholds.fail: %v must be a finite number > 0", t)
	}
	if b := m.Thresholds.FalseRejectBudget; b != 0 && !(b > 0 && b < 1) {
		return bad("thresholds.false_reject_budget: %v must be a fraction between 0 and 1", b)
	}
	for name, r := range map[string]*float64{"expected_false_reject": m.Thresholds.ExpectedFalseReject, "expected_escape": m.Thresholds.ExpectedEscape} {
		if r != nil && !(*r >= 0 && *r <= 1) {
			return bad("thresholds.%s: %v must be a fraction between 0 and 1", name, *r)
		}
	}
	names := map[string]bool{}
	for i, r := range m.ROIs {
		if r.Name == "" || names[r.Name] {
			return bad("rois[%d]: empty or repeated name %q", i, r.Name)
		}
		names[r.Name] = true
		if !r.Valid() {
			return bad("rois[%d] %q: %+v is not a rectangle inside the frame (fractions 0..1, x0 < x1, y0 < y1)", i, r.Name, r.Region)
		}
	}
	if m.Opset < MinOpset || m.Opset > MaxOpset {
		return bad("opset %d: unsupported, want %d..%d", m.Opset, MinOpset, MaxOpset)
	}
	for name, sum := range m.Files {
		if err := checkBundlePath(name); err != nil {
			return bad("files: %v", err)
		}
		if name == manifestFile || name == signatureFile {
			return bad("files: %s must not be listed", name)
		}
		if !sha256Hex.MatchString(sum) {
			return bad("files[%s]: %q is not a lowercase hex sha256", name, sum)
		}
	}
	if g := m.Golden; g != nil {
		if g.Tolerance < 0 || math.IsNaN(g.Tolerance) {
			return bad("golden.tolerance: %v must be >= 0", g.Tolerance)
		}
		if len(g.Cases) == 0 {
			return bad("golden: no cases")
		}
		for i, c := range g.Cases {
			if !strings.HasPrefix(c.File, "golden/") || m.Files[c.File] == "" {
				return bad("golden.cases[%d]: file %q must be under golden/ and listed in files", i, c.File)
			}
			if math.IsNaN(c.Score) || math.IsInf(c.Score, 0) {
				return bad("golden.cases[%d]: score %v is not finite", i, c.Score)
			}
			if c.Class != "" && !slices.Contains(m.Outputs.Labels, c.Class) {
				return bad("golden.cases[%d]: class %q is not one of outputs.labels", i, c.Class)
			}
		}
	}
	return nil
}

// validateClasses checks labels, ok_label, fail_labels and the detector keys against the task.
func (m *Manifest) validateClasses() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: manifest.json: "+format, append([]any{ErrBadBundle}, args...)...)
	}
	out := m.Outputs
	labeled := m.Task == TaskClassification || m.Task == TaskDetection
	switch {
	case !labeled && (len(out.Labels) > 0 || out.OKLabel != "" || out.Softmax || len(out.FailLabels) > 0):
		return bad("outputs.labels, ok_label, fail_labels, softmax: only for task classification or detection")
	case m.Task != TaskDetection && (out.BoxLayout != "" || out.MinConfidence != 0 || out.NMSIoU != 0):
		return bad("outputs.box_layout, min_confidence, nms_iou: only for task detection")
	case !labeled && len(m.Thresholds.PerClass) > 0:
		return bad("thresholds.per_class: only for task classification or detection")
	case !labeled:
		return nil
	case out.Map != "":
		return bad("outputs.map: a %s model has no anomaly map", m.Task)
	}
	seen := map[string]bool{}
	for _, l := range out.Labels {
		if l == "" || seen[l] {
			return bad("outputs.labels: empty or repeated label %q", l)
		}
		seen[l] = true
	}
	if m.Task == TaskClassification && !seen[out.OKLabel] {
		return bad("outputs.ok_label %q is not one of outputs.labels %q", out.OKLabel, out.Labels)
	}
	for _, l := range out.FailLabels {
		if !seen[l] {
			return bad("outputs.fail_labels: %q is not one of outputs.labels %q", l, out.Labels)
		}
		if m.Task == TaskClassification && l == out.OKLabel {
			return bad("outputs.fail_labels: %q is outputs.ok_label, the class of a good part", l)
		}
	}
	if m.Task == TaskClassification && len(out.FailClasses(m.Task)) == 0 {
		return bad("outputs.fail_labels: no class means FAIL")
	}
	for l, t := range m.Thresholds.PerClass {
		if !slices.Contains(out.FailClasses(m.Task), l) {
			return bad("thresholds.per_class: %q is not a FAIL class (outputs.fail_labels %q)", l, out.FailClasses(m.Task))
		}
		if !(t > 0 && t < 1) {
			return bad("thresholds.per_class[%s] %v: want a probability between 0 and 1", l, t)
		}
	}
	if m.Task != TaskDetection {
		return nil
	}
	if out.Softmax || out.OKLabel != "" {
		return bad("outputs.softmax, ok_label: not for task detection (a detector finds defects; fail_labels names which)")
	}
	if out.BoxLayout != BoxLayoutCXCYWH && out.BoxLayout != BoxLayoutXYXY {
		return bad("outputs.box_layout %q: want %q ([1, 4+classes, anchors], as Ultralytics YOLO exports) or %q ([1, N, 6] of an end-to-end export)",
			out.BoxLayout, BoxLayoutCXCYWH, BoxLayoutXYXY)
	}
	if c := out.MinConfidence; !(c >= 0 && c < 1) {
		return bad("outputs.min_confidence %v: want 0 <= c < 1", c)
	}
	if u := out.NMSIoU; !(u >= 0 && u <= 1) {
		return bad("outputs.nms_iou %v: want 0 (no NMS) up to 1", u)
	}
	if len(m.ROIs) > 0 {
		return bad("rois: not supported for task detection (the boxes cover the whole frame)")
	}
	for l, t := range m.Thresholds.PerClass {
		if t < out.minConfidence() {
			return bad("thresholds.per_class[%s] %v is below outputs.min_confidence %v: boxes below it are dropped before the decision", l, t, out.minConfidence())
		}
	}
	if c := out.minConfidence(); m.Thresholds.Fail < c {
		return bad("thresholds.fail %v is below outputs.min_confidence %v: boxes below it are dropped before the decision", m.Thresholds.Fail, c)
	}
	return nil
}

func (o *OutputSpec) minConfidence() float64 {
	if o.MinConfidence == 0 {
		return DefaultMinConfidence
	}
	return o.MinConfidence
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// CheckAgent reports whether an agent of version agentVersion may run the bundle.
func (m *Manifest) CheckAgent(agentVersion string) error {
	if m.MinAgentVersion == "" {
		return nil
	}
	have, err := ParseSemver(agentVersion)
	if err != nil {
		return fmt.Errorf("agent version: %w", err)
	}
	want, _ := ParseSemver(m.MinAgentVersion)
	if have.Compare(want) < 0 {
		return fmt.Errorf("%w: %s %s needs agent %s or newer, this is %s", ErrBadBundle, m.Name, m.Version, m.MinAgentVersion, agentVersion)
	}
	return nil
}

// CheckUpgrade reports whether next may replace running (same model name): its version must
// be higher, unless next is a signed rollback. A downgrade wraps ErrDowngrade.
func CheckUpgrade(running, next *Manifest) error {
	if running.Name != next.Name {
		return fmt.Errorf("%w: bundle is model %q, the station runs %q", ErrBadBundle, next.Name, running.Name)
	}
	a, err := ParseSemver(running.Version)
	if err != nil {
		return fmt.Errorf("running version: %w", err)
	}
	b, err := ParseSemver(next.Version)
	if err != nil {
		return fmt.Errorf("%w: version: %v", ErrBadBundle, err)
	}
	if b.Compare(a) <= 0 && !next.Rollback {
		return fmt.Errorf("%w: %s %s is not above the running %s and is not signed as a rollback (\"rollback\": true)",
			ErrDowngrade, next.Name, next.Version, running.Version)
	}
	return nil
}

// Semver is a parsed semantic version (https://semver.org); build metadata is ignored.
type Semver struct {
	Major, Minor, Patch int
	Pre                 string
}

var semverRE = regexp.MustCompile(`^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$`)

// ParseSemver parses MAJOR.MINOR.PATCH[-pre][+build], with an optional leading v.
func ParseSemver(s string) (Semver, error) {
	m := semverRE.FindStringSubmatch(s)
	if m == nil {
		return Semver{}, fmt.Errorf("%q is not a semantic version (MAJOR.MINOR.PATCH)", s)
	}
	var v Semver
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	v.Pre = m[4]
	return v, nil
}

// Compare returns -1, 0 or 1. A pre-release sorts before its release; pre-releases compare
// by their dot-separated identifiers (numeric ones numerically).
func (v Semver) Compare(o Semver) int {
	for _, d := range [][2]int{{v.Major, o.Major}, {v.Minor, o.Minor}, {v.Patch, o.Patch}} {
		if d[0] != d[1] {
			return cmpInt(d[0], d[1])
		}
	}
	switch {
	case v.Pre == o.Pre:
		return 0
	case v.Pre == "":
		return 1
	case o.Pre == "":
		return -1
	}
	a, b := strings.Split(v.Pre, "."), strings.Split(o.Pre, ".")
	for i := 0; i < len(a) && i < len(b); i++ {
		x, errx := strconv.Atoi(a[i])
		y, erry := strconv.Atoi(b[i])
		switch {
		case errx == nil && erry == nil:
			if x != y {
				return cmpInt(x, y)
			}
		case errx == nil:
			return -1
		case erry == nil:
			return 1
		case a[i] != b[i]:
			return strings.Compare(a[i], b[i])
		}
	}
	return cmpInt(len(a), len(b))
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkBundlePath accepts a clean relative slash path without "..".
func checkBundlePath(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return fmt.Errorf("path %q: want a relative slash path", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("path %q: empty, . or .. element", name)
		}
	}
	return nil
}
