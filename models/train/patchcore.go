package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/train/backbone"
)

// PatchCoreOptions tunes TrainPatchCore. Zero fields take the defaults of
// DefaultPatchCoreOptions.
//
// The model is a PatchCore-like memory bank over hand-made features:
//
//	x     = InstanceNormalization(image / GaussianBlur(image, LightingSigma))
//	F     = Conv(Pad(x), bank)                       Gaussian G, Gx, Gy, Gxx, Gyy, Gxy at Sigmas
//	patch = MaxPool([F, |F|], 2*Stride, Stride)      patch features on a grid, standardized,
//	                                                 with the weighted position appended
//	d     = min_m ||patch - bank_m||                 MatMul + ReduceMin against the coreset
//	map   = GaussianBlur(Resize(d), MapSigma)        anomaly_map [1,1,H,W]
//	score = max(map)
//
// Aligned parts and roughly aligned tiles do better with PositionWeight > 0 (in the tests,
// 128 on synthetic parts and 256 on magnetic tiles), which makes the bank compare a patch
// mostly with patches from the same place. The threshold follows the template's rule (k-fold cross-validation over the good
// images, calibrate with Margin).
type PatchCoreOptions struct {
	Name    string `yaml:"name"`    // takt.name; default "patchcore"
	Version string `yaml:"version"` // takt.version; default "0.1.0"
	// Width and Height are the model input size, rounded down to multiples of Stride.
	// Default: Width 128, Height from the median aspect of the good images. Images of other
	// aspects are stretched (textures need no aspect check).
	Width  int `yaml:"width"`
	Height int `yaml:"height"`
	// Sigmas are the filter-bank scales in model-input pixels; default 1, 2, 4.
	Sigmas []float64 `yaml:"sigmas"`
	// LightingSigma is the Gaussian sigma, in model-input pixels, of the local brightness the
	// image is divided by first (as in TemplateOptions); default Width/16; negative = off.
	LightingSigma float64 `yaml:"lighting_sigma"`
	// Downsample averages the input over Downsample x Downsample blocks first (in the
	// graph), so a model can take a larger input (shared with the template in an ensemble)
	// and work at a coarser scale; Sigmas, LightingSigma and Stride are then in pixels of
	// the averaged image. Default 1: none.
	Downsample int `yaml:"downsample"`
	// Stride is the patch grid step in model-input pixels (even); default 4.
	Stride int `yaml:"stride"`
	// Pool is how pixel features are pooled into a patch: PoolMax (default) keeps thin
	// defects (scratches, cracks) that an average over the patch would dilute; PoolMean.
	Pool string `yaml:"pool"`
	// PositionWeight adds the patch position (x, y in 0..1, times this weight, in units of
	// feature standard deviations) to every patch feature, so aligned parts are compared
	// with patches near the same place (a missing hole looks like plain plate elsewhere).
	// Default 0: position-free, for textures.
	PositionWeight float64 `yaml:"position_weight"`
	// BankSize is the coreset size (greedy k-center); default 2000.
	BankSize int `yaml:"bank_size"`
	// MaxCandidates caps the patches the coreset is chosen from (a random subset beyond);
	// default 30000.
	MaxCandidates int `yaml:"max_candidates"`
	// MapSigma is the Gaussian sigma smoothing the anomaly map, in pixels of the averaged
	// image (see Downsample); default Stride.
	MapSigma float64 `yaml:"map_sigma"`
	// K is how many nearest bank vectors a patch's distance is averaged over; default 1.
	// K > 1 forgives a patch that matches one odd training patch (a stain seen once).
	K int `yaml:"k"`
	// ScoreTop is the fraction of the anomaly map whose mean is the image score; default 0:
	// the maximum. A small fraction (0.01) weighs defect area, not one hot pixel.
	ScoreTop float64 `yaml:"score_top"`
	// Folds for threshold cross-validation; default min(n, 10).
	Folds int `yaml:"folds"`
	// FalseReject is the share of good parts the threshold may reject (a fraction);
	// default eval.DefaultFalseReject. See eval.ChooseThreshold.
	FalseReject float64 `yaml:"false_reject"`
	// Ignore lists regions the model must not judge, as fractions of the frame.
	Ignore []bundle.Region `yaml:"ignore"`
	// Color is ColorAuto (default: RGB when the good images are colour), ColorGray or
	// ColorRGB. In RGB the filter bank runs on each channel and a patch's features are the
	// three channels' side by side; a 3-channel backbone gets the colours as they are.
	Color string `yaml:"color"`
	// Seed drives the coreset's first pick and the candidate subset.
	Seed uint64 `yaml:"seed"`
	// Threads is ONNX Runtime's intra-op thread count while training; 0 = its default.
	Threads int `yaml:"threads"`
	// Backbone, when its ONNX is set, replaces the filter bank: the patch features are the
	// feature map of a user's ONNX model cut at a layer (see backbone.Options). The input
	// size is then the backbone's, and Width, Height, Sigmas, LightingSigma, Downsample,
	// Stride and Pool do not apply; MapSigma is in input pixels (default 4).
	Backbone backbone.Options `yaml:"-"`
	// Progress, when set, is called after each cross-validation fold (done of total).
	Progress  func(done, total int) `yaml:"-"`
	TrainedAt time.Time             `yaml:"-"`

	bb *backbone.Backbone // Backbone, cut and sized (patchCorePlan)
}

// Patch pooling of PatchCoreOptions.Pool.
const (
	PoolMax  = "max"
	PoolMean = "mean"
)

// DefaultPatchCoreOptions returns the defaults TrainPatchCore uses for zero fields.
func DefaultPatchCoreOptions() PatchCoreOptions {
	return PatchCoreOptions{Name: "patchcore", Version: "0.1.0", Width: 128, Sigmas: []float64{1, 2, 4},
		Stride: 4, Pool: PoolMax, BankSize: 2000, MaxCandidates: 30000, FalseReject: eval.DefaultFalseReject}
}

func patchCorePlan(good []camera.Frame, opts PatchCoreOptions) (PatchCoreOptions, bundle.InputShape, error) {
	if len(good) < 2 {
		return opts, bundle.InputShape{}, fmt.Errorf("train patchcore: %d good images, need at least 2", len(good))
	}
	for i, f := range good {
		if err := models.CheckFrame(f); err != nil {
			return opts, bundle.InputShape{}, fmt.Errorf("train patchcore: good image %d: %w", i, err)
		}
	}
	def := DefaultPatchCoreOptions()
	if opts.Name == "" {
		opts.Name = def.Name
	}
	if opts.Version == "" {
		opts.Version = def.Version
	}
	if len(opts.Sigmas) == 0 {
		opts.Sigmas = def.Sigmas
	}
	if opts.Stride == 0 {
		opts.Stride = def.Stride
	}
	if opts.Pool == "" {
		opts.Pool = def.Pool
	}
	if opts.BankSize == 0 {
		opts.BankSize = def.BankSize
	}
	if opts.MaxCandidates == 0 {
		opts.MaxCandidates = def.MaxCandidates
	}
	if opts.MapSigma == 0 {
		opts.MapSigma = float64(opts.Stride)
	}
	if opts.FalseReject == 0 {
		opts.FalseReject = def.FalseReject
	}
	if opts.Folds == 0 {
		opts.Folds = min(len(good), maxFolds)
	}
	if opts.K == 0 {
		opts.K = 1
	}
	if opts.Downsample == 0 {
		opts.Downsample = 1
	}
	if opts.Downsample < 1 || opts.Downsample > 8 {
		return opts, bundle.InputShape{}, fmt.Errorf("train patchcore: downsample %d: want 1..8", opts.Downsample)
	}
	if opts.TrainedAt.IsZero() {
		opts.TrainedAt = time.Now()
	}
	a0 := medianAspect(good)
	channels, err := inputChannels(opts.Color, good)
	if err != nil {
		return opts, bundle.InputShape{}, fmt.Errorf("train patchcore: %w", err)
	}
	if len(opts.Backbone.ONNX) > 0 {
		return backbonePlan(opts, a0, len(good), channels)
	}
	switch {
	case opts.Width == 0 && opts.Height == 0:
		opts.Width = def.Width
		opts.Height = int(math.Round(float64(def.Width) / a0))
	case opts.Height == 0:
		opts.Height = int(math.Round(float64(opts.Width) / a0))
	case opts.Width == 0:
		opts.Width = int(math.Round(float64(opts.Height) * a0))
	}
	s := opts.Stride
	ds := opts.Downsample
	if s > 0 {
		opts.Width -= opts.Width % (s * ds)
		opts.Height -= opts.Height % (s * ds)
	}
	if opts.LightingSigma == 0 {
		opts.LightingSigma = float64(opts.Width/ds) / 16
	}
	in := bundle.InputShape{Channels: channels, Height: opts.Height, Width: opts.Width}
	r := filterRadius(opts.Sigmas)
	// Checks of the feature stage are on the averaged size (fw x fh).
	fw, fh := opts.Width/ds, opts.Height/ds
	switch {
	case s < 2 || s > 16 || s%2 != 0:
		return opts, in, fmt.Errorf("train patchcore: stride %d: want an even number 2..16", s)
	case fw < 4*s || fh < 4*s || opts.Width > 1024 || opts.Height > 1024:
		return opts, in, fmt.Errorf("train patchcore: input size %dx%d (downsample %d): want 4*stride..1024", opts.Width, opts.Height, ds)
	case r >= min(fw, fh):
		return opts, in, fmt.Errorf("train patchcore: sigmas %v need a %d px border, too wide for %dx%d", opts.Sigmas, r, fw, fh)
	case !sigmasValid(opts.Sigmas):
		return opts, in, fmt.Errorf("train patchcore: sigmas %v: want each in 0.5..8", opts.Sigmas)
	case opts.LightingSigma > 0 && (opts.LightingSigma < 1 || 2*blurRadius(opts.LightingSigma) >= min(fw, fh)):
		return opts, in, fmt.Errorf("train patchcore: lighting_sigma %g: want >= 1 and a border below half of %dx%d", opts.LightingSigma, fw, fh)
	case opts.Pool != PoolMax && opts.Pool != PoolMean:
		return opts, in, fmt.Errorf("train patchcore: pool %q: want %q or %q", opts.Pool, PoolMax, PoolMean)
	}
	return opts, in, checkBankOptions(opts, len(good))
}

func sigmasValid(ss []float64) bool {
	for _, s := range ss {
		if s < 0.5 || s > 8 {
			return false
		}
	}
	return true
}

func filterRadius(sigmas []float64) int {
	r := 0
	for _, s := range sigmas {
		r = max(r, blurRadius(s))
	}
	return r
}

// filterBank is the Conv weight [C,1,k,k] (k = 2r+1) of G, Gx, Gy, Gxx, Gyy, Gxy per sigma,
// each derivative scaled by sigma^order so the scales answer alike.
func filterBank(sigmas []float64) (w []float32, channels, k int) {
	r := filterRadius(sigmas)
	k = 2*r + 1
	for _, s := range sigmas {
		g := gaussianKernel(s, r)
		d1 := func(i int) float64 { x := float64(i - r); return -x / (s * s) * g[i] * s }
		d2 := func(i int) float64 { x := float64(i - r); return (x*x/(s*s*s*s) - 1/(s*s)) * g[i] * s * s }
		g0 := func(i int) float64 { return g[i] }
		for _, f := range [][2]func(int) float64{{g0, g0}, {d1, g0}, {g0, d1}, {d2, g0}, {g0, d2}, {d1, d1}} {
			for y := range k {
				for x := range k {
					w = append(w, float32(f[0](x)*f[1](y)))
				}
			}
			channels++
		}
	}
	return w, channels, k
}

// backbonePlan is patchCorePlan's rest with a backbone: the input size and the patch
// grid are the backbone's.
func backbonePlan(opts PatchCoreOptions, aspect float64, images, channels int) (PatchCoreOptions, bundle.InputShape, error) {
	if opts.bb == nil {
		bb, err := backbone.Resolve(opts.Backbone, aspect)
		if err != nil {
			return opts, bundle.InputShape{}, fmt.Errorf("train patchcore: %w", err)
		}
		opts.bb = bb
	}
	bb := opts.bb
	opts.Width, opts.Height, opts.Downsample = bb.InW, bb.InH, 1
	opts.Stride = max(1, bb.InW/bb.FeatW)
	opts.Sigmas, opts.LightingSigma, opts.Pool = nil, 0, ""
	in := bundle.InputShape{Channels: channels, Height: bb.InH, Width: bb.InW}
	return opts, in, checkBankOptions(opts, images)
}

// checkBankOptions checks the options of the memory bank and the map, shared by the filter
// bank and a backbone (images: the number of good images).
func checkBankOptions(opts PatchCoreOptions, images int) error {
	switch {
	case opts.BankSize < 1 || opts.BankSize > 20000:
		return fmt.Errorf("train patchcore: bank_size %d: want 1..20000", opts.BankSize)
	case opts.MaxCandidates < opts.BankSize:
		return fmt.Errorf("train patchcore: max_candidates %d: want >= bank_size %d", opts.MaxCandidates, opts.BankSize)
	case opts.PositionWeight < 0 || opts.PositionWeight > 1000:
		return fmt.Errorf("train patchcore: position_weight %g: want 0..1000", opts.PositionWeight)
	case opts.MapSigma < 0.3 || 2*blurRadius(opts.MapSigma*float64(opts.Downsample)) >= min(opts.Width, opts.Height):
		return fmt.Errorf("train patchcore: map_sigma %g: want >= 0.3 and a border below half of %dx%d", opts.MapSigma, opts.Width, opts.Height)
	case opts.Folds < 2 || opts.Folds > images:
		return fmt.Errorf("train patchcore: folds %d: want 2..%d (the number of good images)", opts.Folds, images)
	case !(opts.FalseReject > 0 && opts.FalseReject < 1):
		return fmt.Errorf("train patchcore: false_reject %g: want a fraction between 0 and 1 (0.01 is 1%%)", opts.FalseReject)
	case !regionsValid(opts.Ignore):
		return fmt.Errorf("train patchcore: ignore: every region needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got %v", opts.Ignore)
	case opts.Threads < 0:
		return fmt.Errorf("train patchcore: threads %d: want >= 0", opts.Threads)
	case opts.K < 1 || opts.K > 64 || opts.K > opts.BankSize:
		return fmt.Errorf("train patchcore: k %d: want 1..64 and <= bank_size", opts.K)
	case opts.ScoreTop < 0 || opts.ScoreTop >= 1:
		return fmt.Errorf("train patchcore: score_top %g: want 0 (max) or a fraction below 1", opts.ScoreTop)
	}
	return nil
}

// patchDims is the patch grid (rows, columns) and the feature count before position.
func patchDims(in bundle.InputShape, opts PatchCoreOptions) (h, w, d int) {
	if opts.bb != nil {
		return opts.bb.FeatH, opts.bb.FeatW, opts.bb.FeatC
	}
	_, c, _ := filterBank(opts.Sigmas)
	ds := max(1, opts.Downsample)
	return in.Height / ds / opts.Stride, in.Width / ds / opts.Stride, 2 * c * max(1, in.Channels)
}

// featureSource is the graph value addPatchFeatures starts from: the input, or its
// block average "image_small" with Downsample.
func featureSource(opts PatchCoreOptions) string {
	if opts.Downsample > 1 {
		return "image_small"
	}
	return "image"
}

// addPatchFeatures adds the raw patch features of "image" as "patch" [1,D,h,w].
func addPatchFeatures(g *onnxgraph.Graph, in bundle.InputShape, opts PatchCoreOptions) {
	if opts.bb != nil {
		opts.bb.AddFeatures(g, in.Channels)
		return
	}
	wts, c, k := filterBank(opts.Sigmas)
	r := int64(k / 2)
	g.Initializer("in_scale", []int64{1}, []float32{1})
	g.Initializer("in_bias", []int64{1}, []float32{0})
	src := "image"
	if ds := int64(opts.Downsample); ds > 1 {
		g.Node("AveragePool", []string{"image"}, []string{"image_small"}, onnxgraph.Ints("kernel_shape", ds, ds), onnxgraph.Ints("strides", ds, ds))
		src = "image_small"
	}
	ds := max(1, opts.Downsample)
	c3 := max(1, in.Channels)
	src = addPlanes(g, src, c3, in.Height/ds, in.Width/ds)
	if opts.LightingSigma > 0 {
		addBlur(g, "light", src, "light", opts.LightingSigma)
		g.Initializer("light_floor", []int64{1}, []float32{lightingFloor})
		g.Node("Max", []string{"light", "light_floor"}, []string{"light_floored"})
		g.Node("Div", []string{src, "light_floored"}, []string{"lit"})
		src = "lit"
	}
	g.Node("InstanceNormalization", []string{src, "in_scale", "in_bias"}, []string{"x"}, onnxgraph.Float("epsilon", 1e-4))
	g.InitializerInt64("bank_pads", []int64{8}, []int64{0, 0, r, r, 0, 0, r, r})
	g.Node("Pad", []string{"x", "bank_pads"}, []string{"x_padded"}, onnxgraph.String("mode", "reflect"))
	g.Initializer("filters", []int64{int64(c), 1, int64(k), int64(k)}, wts)
	g.Node("Conv", []string{"x_padded", "filters"}, []string{"responses"}, onnxgraph.Ints("kernel_shape", int64(k), int64(k)))
	g.Node("Abs", []string{"responses"}, []string{"energy"})
	g.Node("Concat", []string{"responses", "energy"}, []string{"pixel_features"}, onnxgraph.Int("axis", 1))
	s := int64(opts.Stride)
	pooled := "patch"
	if c3 > 1 {
		pooled = "patch_planes"
	}
	if opts.Pool == PoolMax {
		g.Node("MaxPool", []string{"pixel_features"}, []string{pooled},
			onnxgraph.Ints("kernel_shape", 2*s, 2*s), onnxgraph.Ints("strides", s, s),
			onnxgraph.Ints("pads", s/2, s/2, s/2, s/2))
	} else {
		g.Node("AveragePool", []string{"pixel_features"}, []string{pooled},
			onnxgraph.Ints("kernel_shape", 2*s, 2*s), onnxgraph.Ints("strides", s, s),
			onnxgraph.Ints("pads", s/2, s/2, s/2, s/2), onnxgraph.Int("count_include_pad", 0))
	}
	if c3 > 1 {
		// The channels' features side by side, channel by channel: [C,F,h,w] -> [1,C*F,h,w].
		h, w, d := patchDims(in, opts)
		g.InitializerInt64("patch_shape", []int64{4}, []int64{1, int64(d), int64(h), int64(w)})
		g.Node("Reshape", []string{"patch_planes", "patch_shape"}, []string{"patch"})
	}
}

// patchFeatureGraph outputs only "patch" [1,D,h,w].
func patchFeatureGraph(in bundle.InputShape, opts PatchCoreOptions) ([]byte, error) {
	g := onnxgraph.New("patchcore_features")
	g.Input("image", inputDims(in)...)
	addPatchFeatures(g, in, opts)
	h, w, d := patchDims(in, opts)
	g.Output("patch", 1, int64(d), int64(h), int64(w))
	return g.Marshal()
}

// patchBank is a trained memory bank: the standardization of the raw features and the
// coreset vectors (standardized, position appended), row-major [M][dim].
type patchBank struct {
	mean, std []float32 // per raw feature
	dim       int       // raw features + 2 with position
	vectors   []float32
}

func (b *patchBank) size() int { return len(b.vectors) / b.dim }

// patchCoreGraph is the scoring model for bank.
func patchCoreGraph(in bundle.InputShape, opts PatchCoreOptions, bank *patchBank, meta [][2]string) ([]byte, error) {
	return patchCoreHeadGraph(in, opts, bank, nil, false, meta)
}

// patchCoreHeadGraph is the scoring model for bank; with head, score is the supervised
// head's defect probability instead of the map's score; with headOut, the graph also
// outputs the head's input vector "head_in" [1,headDim] (for training the head), and the
// standardized patch features "patch_std" [1,D,h,w] and their bank distances
// "dist_grid" [1,1,h,w] (for comparing heads in the tests).
func patchCoreHeadGraph(in bundle.InputShape, opts PatchCoreOptions, bank *patchBank, head *kindHeads, headOut bool, meta [][2]string) ([]byte, error) {
	g := onnxgraph.New(opts.Name)
	g.SetDoc("Takt PatchCore-like anomaly model: filter-bank patch features, nearest-neighbour distance to a coreset memory bank.")
	dims := []int64{1, 1, int64(in.Height), int64(in.Width)}
	g.Input("image", inputDims(in)...)
	addPatchFeatures(g, in, opts)
	h, w, d := patchDims(in, opts)
	p := int64(h * w)
	g.Initializer("feat_mean", []int64{1, int64(d), 1, 1}, bank.mean)
	g.Initializer("feat_std", []int64{1, int64(d), 1, 1}, bank.std)
	g.Node("Sub", []string{"patch", "feat_mean"}, []string{"patch_centered"})
	g.Node("Div", []string{"patch_centered", "feat_std"}, []string{"patch_std"})
	feat := "patch_std"
	if bank.dim > d {
		g.Initializer("position", []int64{1, 2, int64(h), int64(w)}, positionGrid(h, w, opts.PositionWeight))
		g.Node("Concat", []string{"patch_std", "position"}, []string{"patch_pos"}, onnxgraph.Int("axis", 1))
		feat = "patch_pos"
	}
	D, M := int64(bank.dim), int64(bank.size())
	g.InitializerInt64("flat_shape", []int64{2}, []int64{D, p})
	g.Node("Reshape", []string{feat, "flat_shape"}, []string{"flat"})
	g.Node("Transpose", []string{"flat"}, []string{"rows"}, onnxgraph.Ints("perm", 1, 0)) // [P,D]
	g.Initializer("bank_t", []int64{D, M}, transpose(bank.vectors, int(M), int(D)))
	g.Initializer("bank_sq", []int64{1, M}, rowNorms(bank.vectors, int(D)))
	g.Initializer("minus_two", []int64{1}, []float32{-2})
	g.Initializer("ones_d", []int64{D, 1}, ones(int(D)))
	g.Initializer("zero", []int64{1}, []float32{0})
	g.Node("MatMul", []string{"rows", "bank_t"}, []string{"dot"})   // [P,M]
	g.Node("Mul", []string{"dot", "minus_two"}, []string{"dot2"})   // -2ab
	g.Node("Add", []string{"dot2", "bank_sq"}, []string{"partial"}) // |b|^2 - 2ab
	g.Node("Mul", []string{"rows", "rows"}, []string{"rows_sq"})
	g.Node("MatMul", []string{"rows_sq", "ones_d"}, []string{"row_sq"}) // |a|^2, [P,1]
	k := min(opts.K, bank.size())
	if k <= 1 {
		g.Node("ReduceMin", []string{"partial"}, []string{"nearest"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 1))
		g.Node("Add", []string{"nearest", "row_sq"}, []string{"d2"})
		g.Node("Max", []string{"d2", "zero"}, []string{"d2_pos"})
		g.Node("Sqrt", []string{"d2_pos"}, []string{"dist"})
	} else {
		// The k smallest of |b|^2 - 2ab are the k largest of its negation.
		g.InitializerInt64("knn_k", []int64{1}, []int64{int64(k)})
		g.Node("Neg", []string{"partial"}, []string{"partial_neg"})
		g.Node("TopK", []string{"partial_neg", "knn_k"}, []string{"nearest_neg", "nearest_idx"}, onnxgraph.Int("axis", 1))
		g.Node("Sub", []string{"row_sq", "nearest_neg"}, []string{"d2"}) // [P,k]
		g.Node("Max", []string{"d2", "zero"}, []string{"d2_pos"})
		g.Node("Sqrt", []string{"d2_pos"}, []string{"dist_k"})
		g.Node("ReduceMean", []string{"dist_k"}, []string{"dist"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 1))
	}
	g.InitializerInt64("grid_shape", []int64{4}, []int64{1, 1, int64(h), int64(w)})
	g.Node("Reshape", []string{"dist", "grid_shape"}, []string{"dist_grid"})
	g.InitializerInt64("map_size", []int64{4}, dims)
	g.Node("Resize", []string{"dist_grid", "", "", "map_size"}, []string{"dist_full"},
		onnxgraph.String("mode", "linear"), onnxgraph.String("coordinate_transformation_mode", "half_pixel"))
	addBlur(g, "map_blur", "dist_full", "map_smooth", opts.MapSigma*float64(max(1, opts.Downsample))) // at the input size
	if len(opts.Ignore) > 0 {
		g.Initializer("judge_mask", dims, ignoreMask(in, opts.Ignore))
		g.Node("Mul", []string{"map_smooth", "judge_mask"}, []string{"anomaly_map"})
	} else {
		g.Node("Identity", []string{"map_smooth"}, []string{"anomaly_map"})
	}
	switch {
	case head == nil && !headOut:
		addImageScore(g, in, opts.ScoreTop, "anomaly_map", "score")
	default:
		addImageScore(g, in, opts.ScoreTop, "anomaly_map", "map_score")
		ds := max(1, opts.Downsample)
		src := featureSource(opts)
		if in.Channels > 1 {
			// The brightness statistics are of the gray image.
			g.Node("ReduceMean", []string{src}, []string{src + "_gray"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 1))
			src += "_gray"
		}
		addHeadInput(g, d, h, w, src, in.Height/ds, in.Width/ds)
		if head == nil {
			g.Node("Identity", []string{"map_score"}, []string{"score"})
		} else {
			addHead(g, head)
		}
	}
	if headOut {
		g.Output("head_in", 1, int64(headDim(d)))
		g.Output("patch_std", 1, int64(d), int64(h), int64(w))
		g.Output("dist_grid", 1, 1, int64(h), int64(w))
	}
	g.Output("score", 1)
	g.Output("anomaly_map", dims...)
	for _, kv := range meta {
		g.Meta(kv[0], kv[1])
	}
	return g.Marshal()
}

// addImageScore reduces the map to the image score: its maximum, or with top in (0,1) the
// mean of its highest top fraction of pixels.
func addImageScore(g *onnxgraph.Graph, in bundle.InputShape, top float64, mapName, out string) {
	n := int64(in.Height * in.Width)
	k := int64(math.Round(top * float64(n)))
	if top <= 0 || k <= 1 {
		g.Node("ReduceMax", []string{mapName}, []string{out}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		return
	}
	g.InitializerInt64("score_flat", []int64{2}, []int64{1, n})
	g.Node("Reshape", []string{mapName, "score_flat"}, []string{"score_pixels"})
	g.InitializerInt64("score_k", []int64{1}, []int64{k})
	g.Node("TopK", []string{"score_pixels", "score_k"}, []string{"score_top", "score_top_idx"}, onnxgraph.Int("axis", 1))
	g.Node("ReduceMean", []string{"score_top"}, []string{out}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 0))
}

func positionGrid(h, w int, weight float64) []float32 {
	out := make([]float32, 2*h*w)
	for y := range h {
		for x := range w {
			out[y*w+x] = float32(weight * (float64(x) + 0.5) / float64(w))
			out[h*w+y*w+x] = float32(weight * (float64(y) + 0.5) / float64(h))
		}
	}
	return out
}

func transpose(a []float32, rows, cols int) []float32 {
	out := make([]float32, len(a))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = a[i*cols+j]
		}
	}
	return out
}

func rowNorms(a []float32, dim int) []float32 {
	out := make([]float32, len(a)/dim)
	for i := range out {
		var s float32
		for _, v := range a[i*dim : (i+1)*dim] {
			s += v * v
		}
		out[i] = s
	}
	return out
}

func ones(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// buildBank standardizes the raw patch features of the images with use(i) (each
// [D][h*w], channel-major as ONNX Runtime returns them), appends position and picks the
// coreset.
func buildBank(feats [][]float32, h, w, d int, use func(int) bool, opts PatchCoreOptions) *patchBank {
	p := h * w
	var n int
	mean := make([]float64, d)
	sq := make([]float64, d)
	for i, f := range feats {
		if !use(i) {
			continue
		}
		n += p
		for c := range d {
			for _, v := range f[c*p : (c+1)*p] {
				mean[c] += float64(v)
				sq[c] += float64(v) * float64(v)
			}
		}
	}
	b := &patchBank{mean: make([]float32, d), std: make([]float32, d), dim: d}
	for c := range d {
		m := mean[c] / float64(n)
		b.mean[c] = float32(m)
		b.std[c] = float32(math.Sqrt(max(sq[c]/float64(n)-m*m, 1e-8)))
	}
	pos := opts.PositionWeight > 0
	if pos {
		b.dim = d + 2
	}
	grid := positionGrid(h, w, opts.PositionWeight)
	// Candidates: every patch of every used image, or a random subset of MaxCandidates.
	type ref struct{ img, at int }
	var refs []ref
	var imgs []int
	for i := range feats {
		if use(i) {
			imgs = append(imgs, i)
			for j := range p {
				refs = append(refs, ref{i, j})
			}
		}
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x9c0e))
	row := func(r ref, dst []float32) {
		for c := range d {
			dst[c] = (feats[r.img][c*p+r.at] - b.mean[c]) / b.std[c]
		}
		if pos {
			dst[d], dst[d+1] = grid[r.at], grid[p+r.at]
		}
	}
	// coreset picks up to m of the candidates by greedy k-center, from at most
	// MaxCandidates of them drawn at random.
	coreset := func(refs []ref, m int) []float32 {
		if len(refs) > opts.MaxCandidates {
			rng.Shuffle(len(refs), func(i, j int) { refs[i], refs[j] = refs[j], refs[i] })
			refs = refs[:opts.MaxCandidates]
		}
		cand := make([]float32, len(refs)*b.dim)
		for k, r := range refs {
			row(r, cand[k*b.dim:(k+1)*b.dim])
		}
		return greedyCoreset(cand, b.dim, m, rng.IntN(len(refs)))
	}
	groups := min(opts.K, len(imgs))
	if groups <= 1 {
		b.vectors = coreset(refs, opts.BankSize)
		return b
	}
	// The mean distance to K neighbours asks how many training images hold a patch like
	// this one. One k-center coreset of all patches keeps a single vector for a patch that
	// every image shares, so its 2nd and K-th neighbours lie in other clusters or places and
	// the score jumps with the coreset's picks. Instead the images are dealt into K groups
	// and each group gets its own coreset of BankSize/K (at least the number of patch
	// positions): every patch has a close vector in each group, and a patch seen in one
	// image only is close in one group only.
	rng.Shuffle(len(imgs), func(a, b int) { imgs[a], imgs[b] = imgs[b], imgs[a] })
	group := make([]int, len(feats))
	for k, i := range imgs {
		group[i] = k % groups
	}
	for g := range groups {
		var part []ref
		for _, r := range refs {
			if group[r.img] == g {
				part = append(part, r)
			}
		}
		// At least a vector a patch position in each group, or K neighbours reach into
		// the next place where the bank is smaller than K times the positions.
		b.vectors = append(b.vectors, coreset(part, max(p, opts.BankSize/groups))...)
	}
	return b
}

// greedyCoreset picks up to m rows of x (n x dim) by greedy k-center: each next row is the
// one farthest from those picked, starting at row first.
func greedyCoreset(x []float32, dim, m, first int) []float32 {
	n := len(x) / dim
	if n <= m {
		return x
	}
	minD := make([]float32, n)
	for i := range minD {
		minD[i] = float32(math.Inf(1))
	}
	out := make([]float32, 0, m*dim)
	const workers = 2
	pick := first
	for len(out) < m*dim {
		c := x[pick*dim : (pick+1)*dim]
		out = append(out, c...)
		var wg sync.WaitGroup
		best := [workers]int{}
		bestD := [workers]float32{}
		for wk := range workers {
			wg.Add(1)
			go func(wk int) {
				defer wg.Done()
				lo, hi := wk*n/workers, (wk+1)*n/workers
				bi, bd := lo, float32(-1)
				for i := lo; i < hi; i++ {
					row := x[i*dim : (i+1)*dim]
					var s float32
					for j, v := range row {
						e := v - c[j]
						s += e * e
					}
					if s < minD[i] {
						minD[i] = s
					}
					if minD[i] > bd {
						bi, bd = i, minD[i]
					}
				}
				best[wk], bestD[wk] = bi, bd
			}(wk)
		}
		wg.Wait()
		bw := 0
		for wk := 1; wk < workers; wk++ {
			if bestD[wk] > bestD[bw] {
				bw = wk
			}
		}
		pick = best[bw]
		if minD[pick] == 0 {
			break // every candidate is already in the bank
		}
	}
	return out
}

func patchCoreMeta(opts PatchCoreOptions, in bundle.InputShape, threshold float64, images, bankSize int) [][2]string {
	if opts.bb != nil {
		return [][2]string{
			{bundle.MetaTask, "anomaly"}, {bundle.MetaName, opts.Name}, {bundle.MetaVersion, opts.Version}, {bundle.MetaInput, in.String()},
			{bundle.MetaThreshold, strconv.FormatFloat(threshold, 'g', -1, 64)},
			{bundle.MetaTrainedImages, strconv.Itoa(images)}, {bundle.MetaTrainedAt, opts.TrainedAt.UTC().Format(time.RFC3339)},
			{bundle.MetaMethod, fmt.Sprintf("patchcore %s position_weight=%g bank=%d k=%d map_sigma=%g score_top=%g folds=%d false_reject=%g ignore=%v",
				opts.bb, opts.PositionWeight, bankSize, opts.K, opts.MapSigma, opts.ScoreTop, opts.Folds, opts.FalseReject, opts.Ignore)},
		}
	}
	return [][2]string{
		{bundle.MetaTask, "anomaly"},
		{bundle.MetaName, opts.Name},
		{bundle.MetaVersion, opts.Version},
		{bundle.MetaInput, in.String()},
		{bundle.MetaThreshold, strconv.FormatFloat(threshold, 'g', -1, 64)},
		{bundle.MetaTrainedImages, strconv.Itoa(images)},
		{bundle.MetaTrainedAt, opts.TrainedAt.UTC().Format(time.RFC3339)},
		{bundle.MetaMethod, fmt.Sprintf("patchcore downsample=%d sigmas=%v lighting_sigma=%g stride=%d pool=%s position_weight=%g bank=%d k=%d map_sigma=%g score_top=%g folds=%d false_reject=%g ignore=%v",
			opts.Downsample, opts.Sigmas, opts.LightingSigma, opts.Stride, opts.Pool, opts.PositionWeight, bankSize, opts.K, opts.MapSigma, opts.ScoreTop, opts.Folds, opts.FalseReject, opts.Ignore)},
	}
}
