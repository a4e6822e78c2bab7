package train

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/onnxgraph"
)

// MinThreshold is the lowest threshold TrainTemplate sets (in map units, standard
// deviations), so that identical training images do not give a threshold of 0.
const MinThreshold = 1.0

// maxFolds bounds the cross-validation sessions TrainTemplate creates.
const maxFolds = 10

// TemplateOptions tunes TrainTemplate. Zero fields take the defaults of
// DefaultTemplateOptions.
type TemplateOptions struct {
	Name    string `yaml:"name"`    // takt.name; default "template"
	Version string `yaml:"version"` // takt.version; default "0.1.0"
	// Width and Height are the model input size. Default: Width 256 and Height from the
	// aspect of the good images (192 for 640x480); with only one set, the other follows the
	// aspect. Thin defects (scratches) need about 2.5 frame pixels per model pixel or less.
	Width  int `yaml:"width"`
	Height int `yaml:"height"`
	// BlurSigma is the Gaussian blur sigma in model-input pixels; default 1.
	BlurSigma float64 `yaml:"blur_sigma"`
	// MinStd floors the per-pixel std, in 0..1 gray units; default 0.02 (5 gray levels).
	MinStd float64 `yaml:"min_std"`
	// LightingSigma is the Gaussian sigma, in model-input pixels, of the local brightness the
	// image is divided by before comparing (lighting normalization); default Width/16;
	// negative turns it off.
	LightingSigma float64 `yaml:"lighting_sigma"`
	// PoseJitter is the part position jitter to tolerate beyond what the good images show,
	// as a std in model-input pixels; default 1 (2.5 px in a 640x480 frame at 256x192). It
	// raises the std where the mean image has edges. Use a tiny value such as 0.01 to
	// rely on the good images alone.
	PoseJitter float64 `yaml:"pose_jitter"`
	// Shift is how far, in model-input pixels, a part may sit off the template before it
	// counts as anomalous: each pixel is compared with the template shifted by up to Shift
	// pixels in x and y and the best match counts (parts on a fixture move a little).
	// Default Width/85 rounded, at least 1 (3 at 256); negative turns it off.
	Shift int `yaml:"shift"`
	// MapSmooth is the odd box size that smooths the anomaly map; default 3, 1 = none.
	MapSmooth int `yaml:"map_smooth"`
	// Color is ColorAuto (default: RGB when the good images are colour), ColorGray or
	// ColorRGB. In RGB each channel has its own per-pixel mean and std, and a pixel's
	// anomaly is its largest channel's.
	Color string `yaml:"color"`
	// FalseReject is the share of good parts the threshold may reject (a fraction);
	// default eval.DefaultFalseReject. See eval.ChooseThreshold.
	FalseReject float64 `yaml:"false_reject"`
	// Ignore lists regions the model must not judge, such as printed serial numbers or date
	// codes that differ on every part, as fractions of the frame (0..1), so they hold for
	// any frame and model size.
	Ignore []bundle.Region `yaml:"ignore"`
	// Threads is ONNX Runtime's intra-op thread count while training; 0 = its default.
	Threads int `yaml:"threads"`
	// Progress, when set, is called after each cross-validation fold (done of total).
	Progress func(done, total int) `yaml:"-"`
	// TrainedAt is written as takt.trained_at; default time.Now().
	TrainedAt time.Time `yaml:"-"`
}

// ignoreMask is 1 where the model judges and 0 inside any of the regions, at the model size.
func ignoreMask(in bundle.InputShape, regions []bundle.Region) []float32 {
	mask := make([]float32, in.Height*in.Width)
	for y := range in.Height {
		for x := range in.Width {
			fx, fy := (float64(x)+0.5)/float64(in.Width), (float64(y)+0.5)/float64(in.Height)
			mask[y*in.Width+x] = 1
			for _, r := range regions {
				if fx >= r.X0 && fx < r.X1 && fy >= r.Y0 && fy < r.Y1 {
					mask[y*in.Width+x] = 0
					break
				}
			}
		}
	}
	return mask
}

const defaultTemplateWidth = 256

// DefaultTemplateOptions returns the defaults TrainTemplate uses for zero fields.
func DefaultTemplateOptions() TemplateOptions {
	return TemplateOptions{Name: "template", Version: "0.1.0", BlurSigma: 1, MinStd: 0.02, PoseJitter: 1,
		MapSmooth: 3, FalseReject: eval.DefaultFalseReject}
}

// TrainedModel is the result of TrainTemplate.
type TrainedModel struct {
	ONNX      []byte // the serialized ONNX model
	Name      string
	Version   string
	Input     bundle.InputShape
	Threshold float64 // as stored in takt.threshold; a score above it is anomalous
	// Operating is how Threshold was chosen and the rates expected at it.
	Operating eval.OperatingPoint
	// GoodScores are the cross-validated scores of the good images, in input order: each
	// from a model that did not see the image. The threshold is calibrated on them.
	GoodScores []float64
	// TrainScores are the scores the final model gives the good images, in input order:
	// what Runtime.Infer returns for the same frames.
	TrainScores []float64
	Folds       int // cross-validation folds; == number of images for leave-one-out
	TrainedAt   time.Time
	// Method is the trainer that made the model: MethodTemplate or MethodPatchCore.
	Method string
	// Supervised is true when a head trained on labeled defects computes the score (a
	// defect probability, 0..1).
	Supervised bool
	// Metrics are training figures added to the manifest's metrics (Train sets them: the
	// cross-validated AUROC of each candidate method, F1 at the threshold, timings).
	Metrics map[string]float64

	// regraph rebuilds ONNX with another threshold in its metadata (Train moves the
	// threshold to the best F1 when labeled defects exist).
	regraph func(threshold float64) ([]byte, error)
}

// SHA256 is the hex sha256 of the ONNX bytes, as Runtime's ModelInfo reports it.
func (m *TrainedModel) SHA256() string {
	sum := sha256.Sum256(m.ONNX)
	return hex.EncodeToString(sum[:])
}

// Manifest is the bundle manifest of the trained model (without files and golden set, which
// BuildBundle and the caller add): gray NCHW input scaled to 0..1, stretched, outputs score
// and anomaly_map, thresholds.fail from the calibration.
func (m *TrainedModel) Manifest() (bundle.Manifest, error) {
	h, err := bundle.InspectModel(m.ONNX)
	if err != nil {
		return bundle.Manifest{}, err
	}
	color := bundle.ColorGray
	if m.Input.Channels == 3 {
		color = bundle.ColorRGB
	}
	return bundle.Manifest{
		Format:  bundle.BundleFormat,
		Name:    m.Name,
		Version: m.Version,
		Task:    bundle.TaskAnomaly,
		Input: bundle.InputSpec{Name: "image", Width: m.Input.Width, Height: m.Input.Height, Layout: bundle.LayoutNCHW,
			Color: color, Resize: bundle.ResizeStretch},
		Outputs:    bundle.OutputSpec{Score: "score", Map: "anomaly_map"},
		Thresholds: m.thresholds(),
		Opset:      int(h.Opset()),
		Metrics:    m.manifestMetrics(),
	}, nil
}

// thresholds is the manifest's thresholds: the FAIL threshold with the rule that chose it
// and the rates the cross-validated scores predict at it.
func (m *TrainedModel) thresholds() bundle.Thresholds {
	t := bundle.Thresholds{Fail: m.Threshold, Rule: m.Operating.Rule, FalseRejectBudget: m.Operating.Budget}
	if op := m.Operating; op.Rule != "" {
		t.ExpectedFalseReject = &op.FalseReject
		if !math.IsNaN(op.Escape) {
			t.ExpectedEscape = &op.Escape
		}
	}
	return t
}

func (m *TrainedModel) manifestMetrics() map[string]float64 {
	out := map[string]float64{"good_images": float64(len(m.GoodScores)), "folds": float64(m.Folds),
		"good_score_max": slices.Max(m.GoodScores)}
	for k, v := range m.Metrics {
		out[k] = v
	}
	return out
}

// WriteFile writes the ONNX model to path atomically: a temp file in the same folder,
// fsync, rename over path, fsync of the folder. Readers see the old file or the new one,
// never a part.
func (m *TrainedModel) WriteFile(path string) (err error) {
	if len(m.ONNX) == 0 {
		return errors.New("write model: no ONNX bytes")
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(m.ONNX); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write model %s: fsync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write model %s: open folder for fsync: %w", path, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("write model %s: fsync folder: %w", path, err)
	}
	return nil
}

// maxAspectDiff is how far (relative) a good image's aspect ratio may be from the first's
// for the images to be one camera view.
const maxAspectDiff = 0.10

func aspectOf(f camera.Frame) float64 { return float64(f.Width) / float64(f.Height) }

// otherView is the index of the first image whose aspect ratio is more than maxAspectDiff
// from image 0's, or 0 when all are one view.
func otherView(good []camera.Frame) int {
	for i, f := range good {
		if f.Height > 0 && good[0].Height > 0 && math.Abs(aspectOf(f)-aspectOf(good[0]))/aspectOf(good[0]) > maxAspectDiff {
			return i
		}
	}
	return 0
}

// medianAspect is the median width/height of the good images: the shape a model for images
// of several aspects (a texture, loosely cropped parts) takes, so that it does not depend on
// which image comes first.
func medianAspect(good []camera.Frame) float64 {
	as := make([]float64, 0, len(good))
	for _, f := range good {
		if f.Height > 0 {
			as = append(as, aspectOf(f))
		}
	}
	if len(as) == 0 {
		return 1
	}
	slices.Sort(as)
	if n := len(as); n%2 == 0 {
		return (as[n/2-1] + as[n/2]) / 2
	}
	return as[len(as)/2]
}

// oneView says whether the good images share one aspect ratio (within maxAspectDiff).
func oneView(good []camera.Frame) bool { return otherView(good) == 0 }

// templatePlan checks the training set and options and fills in the defaults.
func templatePlan(good []camera.Frame, opts TemplateOptions) (TemplateOptions, bundle.InputShape, error) {
	if len(good) < 2 {
		return opts, bundle.InputShape{}, fmt.Errorf("train template: %d good images, need at least 2 (10 or more for a steady threshold)", len(good))
	}
	for i, f := range good {
		if err := models.CheckFrame(f); err != nil {
			return opts, bundle.InputShape{}, fmt.Errorf("train template: good image %d: %w", i, err)
		}
	}
	if i := otherView(good); i > 0 {
		f := good[i]
		return opts, bundle.InputShape{}, fmt.Errorf("train template: good image %d is %dx%d (aspect %.2f) but image 0 is %dx%d (aspect %.2f): train on images of one camera view, or use method patchcore",
			i, f.Width, f.Height, aspectOf(f), good[0].Width, good[0].Height, aspectOf(good[0]))
	}
	def := DefaultTemplateOptions()
	if opts.Name == "" {
		opts.Name = def.Name
	}
	if opts.Version == "" {
		opts.Version = def.Version
	}
	if opts.BlurSigma == 0 {
		opts.BlurSigma = def.BlurSigma
	}
	if opts.MinStd == 0 {
		opts.MinStd = def.MinStd
	}
	if opts.PoseJitter == 0 {
		opts.PoseJitter = def.PoseJitter
	}
	if opts.MapSmooth == 0 {
		opts.MapSmooth = def.MapSmooth
	}
	if opts.FalseReject == 0 {
		opts.FalseReject = def.FalseReject
	}
	if opts.TrainedAt.IsZero() {
		opts.TrainedAt = time.Now()
	}
	a0 := aspectOf(good[0])
	switch {
	case opts.Width == 0 && opts.Height == 0:
		opts.Width = defaultTemplateWidth
		opts.Height = int(math.Round(defaultTemplateWidth / a0))
	case opts.Height == 0:
		opts.Height = int(math.Round(float64(opts.Width) / a0))
	case opts.Width == 0:
		opts.Width = int(math.Round(float64(opts.Height) * a0))
	}
	// Lighting and shift scale with the model size, so a smaller model sees the same part.
	if opts.LightingSigma == 0 {
		opts.LightingSigma = float64(opts.Width) / 16
	}
	if opts.Shift == 0 {
		opts.Shift = max(1, int(math.Round(float64(opts.Width)/85)))
	}
	channels, err := inputChannels(opts.Color, good)
	if err != nil {
		return opts, bundle.InputShape{}, fmt.Errorf("train template: %w", err)
	}
	in := bundle.InputShape{Channels: channels, Height: opts.Height, Width: opts.Width}
	r := blurRadius(opts.BlurSigma)
	switch {
	case opts.Width < 8 || opts.Height < 8 || opts.Width > 2048 || opts.Height > 2048:
		return opts, in, fmt.Errorf("train template: input size %dx%d: want width and height in 8..2048", opts.Width, opts.Height)
	case opts.BlurSigma < 0.3 || opts.BlurSigma > 10:
		return opts, in, fmt.Errorf("train template: blur_sigma %g: want 0.3..10", opts.BlurSigma)
	case r >= opts.Width || r >= opts.Height:
		return opts, in, fmt.Errorf("train template: blur_sigma %g needs a %d px border, too wide for %dx%d", opts.BlurSigma, r, opts.Width, opts.Height)
	case opts.MinStd <= 0 || opts.MinStd > 1:
		return opts, in, fmt.Errorf("train template: min_std %g: want > 0 and <= 1", opts.MinStd)
	case opts.LightingSigma > 0 && (opts.LightingSigma < opts.BlurSigma || 2*blurRadius(opts.LightingSigma) >= min(opts.Width, opts.Height)):
		return opts, in, fmt.Errorf("train template: lighting_sigma %g: want >= blur_sigma and a border below half of %dx%d", opts.LightingSigma, opts.Width, opts.Height)
	case opts.Shift > 8 || 2*opts.Shift >= min(opts.Width, opts.Height):
		return opts, in, fmt.Errorf("train template: shift %d: want at most 8 and less than half of %dx%d", opts.Shift, opts.Width, opts.Height)
	case !regionsValid(opts.Ignore):
		return opts, in, fmt.Errorf("train template: ignore: every region needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got %v", opts.Ignore)
	case opts.PoseJitter < 0 || opts.PoseJitter > 10:
		return opts, in, fmt.Errorf("train template: pose_jitter %g: want > 0 and <= 10", opts.PoseJitter)
	case opts.MapSmooth < 1 || opts.MapSmooth%2 == 0 || opts.MapSmooth > 31:
		return opts, in, fmt.Errorf("train template: map_smooth %d: want an odd number 1..31", opts.MapSmooth)
	case !(opts.FalseReject > 0 && opts.FalseReject < 1):
		return opts, in, fmt.Errorf("train template: false_reject %g: want a fraction between 0 and 1 (0.01 is 1%%)", opts.FalseReject)
	case opts.Threads < 0:
		return opts, in, fmt.Errorf("train template: threads %d: want >= 0", opts.Threads)
	}
	return opts, in, nil
}

// alignWindow is the odd side, in model-input pixels, of the neighbourhood that chooses
// one shift.
var alignWindow = 15

// shiftOffsets lists the (dx, dy) offsets within a disc of radius r, (0,0) first.
func shiftOffsets(r int) [][2]int {
	out := [][2]int{{0, 0}}
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			if (dx != 0 || dy != 0) && dx*dx+dy*dy <= r*r {
				out = append(out, [2]int{dx, dy})
			}
		}
	}
	return out
}

// shiftStack stacks img (in.Height x in.Width) shifted by each offset, edges replicated.
func shiftStack(img []float32, in bundle.InputShape, shifts [][2]int) []float32 {
	w, h := in.Width, in.Height
	out := make([]float32, 0, len(shifts)*w*h)
	for _, d := range shifts {
		for y := range h {
			sy := min(max(y-d[1], 0), h-1)
			for x := range w {
				sx := min(max(x-d[0], 0), w-1)
				out = append(out, img[sy*w+sx])
			}
		}
	}
	return out
}

func regionsValid(rs []bundle.Region) bool {
	for _, r := range rs {
		if !r.Valid() {
			return false
		}
	}
	return true
}

// blurRadius is the Gaussian kernel radius for sigma: 3 sigma, rounded up.
func blurRadius(sigma float64) int { return int(math.Ceil(3 * sigma)) }

// gaussian1D is a normalized Gaussian kernel of 2*blurRadius(sigma)+1 taps.
func gaussian1D(sigma float64) []float32 {
	g := gaussianKernel(sigma, blurRadius(sigma))
	k := make([]float32, len(g))
	for i, v := range g {
		k[i] = float32(v)
	}
	return k
}

// gaussianKernel is a Gaussian of sigma sampled at -r..r, normalized to sum 1.
func gaussianKernel(sigma float64, r int) []float64 {
	g := make([]float64, 2*r+1)
	var sum float64
	for i := range g {
		x := float64(i - r)
		g[i] = math.Exp(-x * x / (2 * sigma * sigma))
		sum += g[i]
	}
	for i := range g {
		g[i] /= sum
	}
	return g
}

// addBlur adds the Gaussian blur of value in (shape [1,1,H,W]) as value out; prefix keeps
// the initializer and intermediate names of several blurs apart.
func addBlur(g *onnxgraph.Graph, prefix, in, out string, sigma float64) {
	r := int64(blurRadius(sigma))
	k := gaussian1D(sigma)
	n := int64(len(k))
	g.InitializerInt64(prefix+"_pads", []int64{8}, []int64{0, 0, r, r, 0, 0, r, r})
	g.Node("Pad", []string{in, prefix + "_pads"}, []string{prefix + "_padded"}, onnxgraph.String("mode", "reflect"))
	g.Initializer(prefix+"_kx", []int64{1, 1, 1, n}, k)
	g.Initializer(prefix+"_ky", []int64{1, 1, n, 1}, k)
	g.Node("Conv", []string{prefix + "_padded", prefix + "_kx"}, []string{prefix + "_x"}, onnxgraph.Ints("kernel_shape", 1, n))
	g.Node("Conv", []string{prefix + "_x", prefix + "_ky"}, []string{out}, onnxgraph.Ints("kernel_shape", n, 1))
}

// lightingFloor keeps the lighting division finite on black regions (0..1 gray units).
const lightingFloor = 0.05

// addFeatures adds the template model's per-pixel feature of in as out: the image blurred
// by BlurSigma, divided by the image blurred by LightingSigma when that is set, so a part
// lit brighter, darker or with a gradient looks the same as under the training light.
func addFeatures(g *onnxgraph.Graph, in, out string, opts TemplateOptions) {
	if opts.LightingSigma <= 0 {
		addBlur(g, "blur", in, out, opts.BlurSigma)
		return
	}
	addBlur(g, "blur", in, "fine", opts.BlurSigma)
	addBlur(g, "light", in, "light", opts.LightingSigma)
	g.Initializer("light_floor", []int64{1}, []float32{lightingFloor})
	g.Node("Max", []string{"light", "light_floor"}, []string{"light_floored"})
	g.Node("Div", []string{"fine", "light_floored"}, []string{out})
}

// inputDims is the model input's tensor shape [1,C,H,W].
func inputDims(in bundle.InputShape) []int64 {
	return []int64{1, int64(max(1, in.Channels)), int64(in.Height), int64(in.Width)}
}

// planeDims is the shape [C,1,H,W] in which each channel of the input is an image of its
// own: the gray graphs (blurs, filter banks) then run on every channel at once.
func planeDims(in bundle.InputShape) []int64 {
	return []int64{int64(max(1, in.Channels)), 1, int64(in.Height), int64(in.Width)}
}

// addPlanes reshapes the input value src [1,C,H,W] into its channel planes [C,1,H,W] and
// returns the value to use: src itself for a gray input.
func addPlanes(g *onnxgraph.Graph, src string, channels, h, w int) string {
	if channels <= 1 {
		return src
	}
	g.InitializerInt64(src+"_planes_shape", []int64{4}, []int64{int64(channels), 1, int64(h), int64(w)})
	g.Node("Reshape", []string{src, src + "_planes_shape"}, []string{src + "_planes"})
	return src + "_planes"
}

// blurGraph is a model with only the template model's features: input "image" [1,C,H,W],
// output "blurred" [C,1,H,W].
func blurGraph(in bundle.InputShape, opts TemplateOptions) ([]byte, error) {
	g := onnxgraph.New("template_features")
	g.Input("image", inputDims(in)...)
	addFeatures(g, addPlanes(g, "image", in.Channels, in.Height, in.Width), "blurred", opts)
	g.Output("blurred", planeDims(in)...)
	return g.Marshal()
}

// templateGraph is the scoring model for the given per-pixel mean and std (len H*W).
func templateGraph(in bundle.InputShape, opts TemplateOptions, mean, std []float32, meta [][2]string) ([]byte, error) {
	g := onnxgraph.New(opts.Name)
	g.SetDoc("Takt template anomaly model: score = max(BoxMean(|GaussianBlur(image) - mean| / std)), in standard deviations.")
	dims := []int64{1, 1, int64(in.Height), int64(in.Width)}
	c := int64(max(1, in.Channels))
	g.Input("image", inputDims(in)...)
	addFeatures(g, addPlanes(g, "image", in.Channels, in.Height, in.Width), "blurred", opts)
	shifts := shiftOffsets(opts.Shift)
	if len(shifts) == 1 {
		g.Initializer("mean", planeDims(in), mean)
		g.Initializer("std", planeDims(in), std)
		g.Node("Sub", []string{"blurred", "mean"}, []string{"diff"})
		g.Node("Div", []string{"diff", "std"}, []string{"z"})
		g.Node("Abs", []string{"z"}, []string{"abs_z_planes"})
	} else {
		// Compare with every shifted template at once ([C,K,H,W]) and keep the best match.
		kdims := []int64{c, int64(len(shifts)), int64(in.Height), int64(in.Width)}
		g.Initializer("mean_shifted", kdims, shiftStackPlanes(mean, in, shifts))
		g.Initializer("std_shifted", kdims, shiftStackPlanes(std, in, shifts))
		g.Node("Sub", []string{"blurred", "mean_shifted"}, []string{"diff"})
		g.Node("Div", []string{"diff", "std_shifted"}, []string{"z"})
		g.Node("Abs", []string{"z"}, []string{"abs_z_shifted"})
		// Each neighbourhood picks the shift that fits it best as a whole, so a defect
		// smaller than the window cannot pick a shift of its own that explains it away;
		// in colour one shift for all channels, as the part moves as a whole.
		a := int64(alignWindow)
		g.Node("AveragePool", []string{"abs_z_shifted"}, []string{"fit_planes"},
			onnxgraph.Ints("kernel_shape", a, a), onnxgraph.Ints("strides", 1, 1),
			onnxgraph.Ints("pads", a/2, a/2, a/2, a/2), onnxgraph.Int("count_include_pad", 0))
		best := "best_shift"
		if c > 1 {
			g.Node("ReduceMean", []string{"fit_planes"}, []string{"fit"}, onnxgraph.Ints("axes", 0), onnxgraph.Int("keepdims", 1))
			g.InitializerInt64("best_shift_planes_shape", []int64{4}, planeDims(in))
			g.Node("ArgMin", []string{"fit"}, []string{"best_shift_one"}, onnxgraph.Int("axis", 1), onnxgraph.Int("keepdims", 1))
			g.Node("Expand", []string{"best_shift_one", "best_shift_planes_shape"}, []string{best})
		} else {
			g.Node("ArgMin", []string{"fit_planes"}, []string{best}, onnxgraph.Int("axis", 1), onnxgraph.Int("keepdims", 1))
		}
		g.Node("GatherElements", []string{"abs_z_shifted", best}, []string{"abs_z_planes"}, onnxgraph.Int("axis", 1))
	}
	if c > 1 {
		// A pixel is as anomalous as its most anomalous channel: a colour defect may show
		// in one channel only.
		g.Node("ReduceMax", []string{"abs_z_planes"}, []string{"abs_z"}, onnxgraph.Ints("axes", 0), onnxgraph.Int("keepdims", 1))
	} else {
		g.Node("Identity", []string{"abs_z_planes"}, []string{"abs_z"})
	}
	if len(opts.Ignore) > 0 {
		g.Initializer("judge_mask", dims, ignoreMask(in, opts.Ignore))
		g.Node("Mul", []string{"abs_z", "judge_mask"}, []string{"abs_z_judged"})
	} else {
		g.Node("Identity", []string{"abs_z"}, []string{"abs_z_judged"})
	}
	m := int64(opts.MapSmooth)
	g.Node("AveragePool", []string{"abs_z_judged"}, []string{"anomaly_map"},
		onnxgraph.Ints("kernel_shape", m, m), onnxgraph.Ints("strides", 1, 1),
		onnxgraph.Ints("pads", m/2, m/2, m/2, m/2), onnxgraph.Int("count_include_pad", 0))
	g.Node("ReduceMax", []string{"anomaly_map"}, []string{"score"},
		onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
	g.Output("score", 1)
	g.Output("anomaly_map", dims...)
	for _, kv := range meta {
		g.Meta(kv[0], kv[1])
	}
	return g.Marshal()
}

// templateMeta is the metadata of a trained template model.
func templateMeta(opts TemplateOptions, in bundle.InputShape, threshold float64, images int) [][2]string {
	return [][2]string{
		{bundle.MetaTask, "anomaly"},
		{bundle.MetaName, opts.Name},
		{bundle.MetaVersion, opts.Version},
		{bundle.MetaInput, in.String()},
		{bundle.MetaThreshold, strconv.FormatFloat(threshold, 'g', -1, 64)},
		{bundle.MetaTrainedImages, strconv.Itoa(images)},
		{bundle.MetaTrainedAt, opts.TrainedAt.UTC().Format(time.RFC3339)},
		{bundle.MetaMethod, fmt.Sprintf("template blur_sigma=%g lighting_sigma=%g min_std=%g pose_jitter=%g shift=%d map_smooth=%d false_reject=%g ignore=%v",
			opts.BlurSigma, opts.LightingSigma, opts.MinStd, opts.PoseJitter, opts.Shift, opts.MapSmooth, opts.FalseReject, opts.Ignore)},
	}
}

// pixelStatsPlanes is pixelStats of each channel plane of the images blurred[i] (each
// in.Channels planes of in.Height x in.Width), the planes' results one after the other.
func pixelStatsPlanes(blurred [][]float32, in bundle.InputShape, use func(i int) bool, minStd, jitter float64) (mean, std []float32) {
	c := max(1, in.Channels)
	if c == 1 {
		return pixelStats(blurred, in, use, minStd, jitter)
	}
	plane := in.Height * in.Width
	for k := range c {
		part := make([][]float32, len(blurred))
		for i, b := range blurred {
			part[i] = b[k*plane : (k+1)*plane]
		}
		m, s := pixelStats(part, in, use, minStd, jitter)
		mean, std = append(mean, m...), append(std, s...)
	}
	return mean, std
}

// shiftStackPlanes is shiftStack of each channel plane of img, [C,K,H,W].
func shiftStackPlanes(img []float32, in bundle.InputShape, shifts [][2]int) []float32 {
	plane := in.Height * in.Width
	var out []float32
	for k := range max(1, in.Channels) {
		out = append(out, shiftStack(img[k*plane:(k+1)*plane], in, shifts)...)
	}
	return out
}

// pixelStats is the per-pixel mean and std of the images blurred[i] (each in.Height x
// in.Width) for which use(i) holds:
//
//	std = sqrt(max(s, minStd)^2 + jitter^2 * |grad mean|^2)
//
// with s the sample std (0 for one image) and grad the central-difference gradient of the
// mean image: a shift of the part by jitter pixels changes a pixel by about
// jitter*|grad mean|.
func pixelStats(blurred [][]float32, in bundle.InputShape, use func(i int) bool, minStd, jitter float64) (mean, std []float32) {
	n := len(blurred[0])
	sum := make([]float64, n)
	sq := make([]float64, n)
	count := 0
	for i, b := range blurred {
		if !use(i) {
			continue
		}
		count++
		for p, v := range b {
			sum[p] += float64(v)
		}
	}
	mean = make([]float32, n)
	for p := range sum {
		sum[p] /= float64(count)
		mean[p] = float32(sum[p])
	}
	for i, b := range blurred {
		if !use(i) {
			continue
		}
		for p, v := range b {
			d := float64(v) - sum[p]
			sq[p] += d * d
		}
	}
	w, h := in.Width, in.Height
	at := func(x, y int) float64 { return sum[min(h-1, max(0, y))*w+min(w-1, max(0, x))] }
	std = make([]float32, n)
	for y := range h {
		for x := range w {
			p := y*w + x
			s := 0.0
			if count > 1 {
				s = math.Sqrt(sq[p] / float64(count-1))
			}
			s = max(s, minStd)
			gx := (at(x+1, y) - at(x-1, y)) / 2
			gy := (at(x, y+1) - at(x, y-1)) / 2
			std[p] = float32(math.Sqrt(s*s + jitter*jitter*(gx*gx+gy*gy)))
		}
	}
	return mean, std
}

// calibrate chooses the threshold from the cross-validated good scores for a false-reject
// budget (see eval.ChooseThreshold), at least MinThreshold.
func calibrate(goodScores []float64, falseReject float64) (eval.OperatingPoint, error) {
	for i, s := range goodScores {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return eval.OperatingPoint{}, fmt.Errorf("good image %d scored %v", i, s)
		}
	}
	return eval.ChooseThreshold(goodScores, nil, eval.RuleFalseReject, falseReject, MinThreshold)
}
