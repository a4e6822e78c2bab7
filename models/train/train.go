package train

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/train/backbone"
)

// Trainer methods of TrainOptions.Method.
const (
	// MethodAuto chooses the method. With labeled defects it trains every method and keeps
	// the one with the best cross-validated AUROC on them. With good images only it first
	// measures how alike they are in place (see alignment): parts on a fixture get the
	// template, PatchCore and their ensemble compared on pseudo-defects drawn on held-out
	// good images; textures and loosely placed parts get PatchCore. With a backbone it is
	// PatchCore.
	MethodAuto = "auto"
	// MethodTemplate is TrainTemplate: a per-pixel Gaussian, for aligned parts.
	MethodTemplate = "template"
	// MethodPatchCore is TrainPatchCore: a memory bank of patch features, for textures and
	// loosely aligned parts; with enough labeled defects it gets a supervised head.
	MethodPatchCore = "patchcore"
)

// LabeledFrame is an image with its class: a defect kind such as "crack".
type LabeledFrame struct {
	Frame camera.Frame
	Label string
}

// TrainSet is what Train learns from: good images (required, at least 2) and, optionally,
// labeled defective images.
type TrainSet struct {
	Good    []camera.Frame
	Defects []LabeledFrame
}

// TrainOptions tunes Train. Zero fields take defaults.
type TrainOptions struct {
	// Method is MethodAuto (default), MethodTemplate or MethodPatchCore.
	Method  string
	Name    string // takt.name; default "model"
	Version string // takt.version; default "0.1.0"
	// Template and PatchCore are the methods' options (their Name, Version, Ignore,
	// Threads and Progress are set from these options). A zero PatchCore takes
	// TexturePatchCoreOptions; a Template without a size gets Width 128.
	Template  TemplateOptions
	PatchCore PatchCoreOptions
	// Ignore lists regions the model must not judge, as fractions of the frame.
	Ignore []bundle.Region
	// Color is ColorAuto (default: an RGB model when the good images are colour, see
	// minChromaSpread), ColorGray or ColorRGB; it sets Template.Color and PatchCore.Color
	// where those are empty.
	Color string
	// MinHeadDefects is how many labeled defects it takes to train the supervised head;
	// default 10; negative: never.
	MinHeadDefects int
	// HeadLambda is the heads' L2 penalty; default 0.001 (with a head per defect kind,
	// each sees a few labels against all good rows; 0.001 beat 0.003, 0.01 and 0.03 on
	// the magnetic tiles' splits 1-2), or 0.1 with a Backbone: a
	// backbone's hundreds of channels give the head several hundred inputs for a few
	// hundred rows, and on the magnetic tiles the stronger penalty did better on every
	// split the settings were compared on (models/README.md, "Trainer results"); comboHeadLambda
	// (1) with the filter bank beside a backbone (WithFilterBank).
	HeadLambda float64
	// Backbone, when its ONNX is set, gives PatchCore the features of a user's ONNX model
	// cut at a layer instead of the filter bank (see backbone.Options); the method is then
	// PatchCore (auto) and template or ensemble are refused.
	Backbone backbone.Options
	// WithFilterBank, with a Backbone and at least MinHeadDefects labeled defects, builds
	// one model with both feature extractors: the filter-bank PatchCore (the texture
	// default, on the backbone's input averaged down to about 64 px) and the backbone
	// PatchCore, each with its own memory bank, and the supervised head over both head
	// vectors (see comboGraph); its HeadLambda defaults to comboHeadLambda. It is the
	// default whenever a backbone and enough defects for the head are given (and the
	// backbone's input is a multiple of the filter bank's patch step): on the magnetic
	// tiles it beat the backbone alone and the filter bank alone (models/README.md,
	// "Trainer results"). Set, it is required: too few defects are an error.
	WithFilterBank bool
	// BackboneAlone keeps the filter bank out of a backbone model (the head, if any, on
	// the backbone's features only).
	BackboneAlone bool
	// FalseReject is the share of good parts the plant accepts to reject (a fraction):
	// the threshold is set from the cross-validated good scores so that this share of
	// good parts is expected above it; default eval.DefaultFalseReject. With labeled
	// defects that threshold also catches the most defects within the budget.
	FalseReject float64
	// ThresholdRule is eval.RuleFalseReject (default) or eval.RuleBestF1 (the best F1 on
	// the cross-validated defects, whatever it costs in false rejects; needs labels).
	ThresholdRule string
	// Threads is ONNX Runtime's intra-op thread count while training; 0 = its default.
	Threads int
	// Seed drives the pseudo-defects and the coreset.
	Seed uint64
	// Progress, when set, is called as training goes: step names what runs ("template",
	// "patchcore", "head"), done of total its units (folds).
	Progress func(step string, done, total int)
	// TrainedAt is written as takt.trained_at; default time.Now().
	TrainedAt time.Time
}

// DefaultMinHeadDefects is TrainOptions.MinHeadDefects' default.
const DefaultMinHeadDefects = 10

// RecommendedBackbone is the rule `takt model train --backbone auto` and takt-cloud's
// builtin experiments share: the recommended backbone (backbone.FindRecommended) is used
// where it was measured to help, with at least minHead labeled defects (the filter bank
// beside it, heads over both), for a method that can take it (auto, patchcore) and no
// input size asked for (the recommended model's is fixed). applies says the rule asks for
// it; rec.Dir is empty when none was found. A broken recommended backbone is an error.
func RecommendedBackbone(method string, minHead, defects, width, height int) (rec backbone.Recommended, applies bool, err error) {
	if minHead <= 0 || defects < minHead || width != 0 || height != 0 ||
		(method != MethodAuto && method != MethodPatchCore) {
		return rec, false, nil
	}
	rec, err = backbone.FindRecommended(backbone.RecommendedDirs())
	if errors.Is(err, backbone.ErrNoRecommended) {
		return backbone.Recommended{}, true, nil
	}
	return rec, err == nil, err
}

// TexturePatchCoreOptions are the PatchCore settings Train uses by default, chosen on the
// magnetic-tile images (models/README.md, "Trainer results"): a 64 px wide input, local lighting
// normalization at 2 px (stains and uneven light vary more than the texture), position
// weighted 256 (tiles are roughly aligned), the mean distance to the 3 nearest bank
// vectors (a stain seen once in training does not excuse a similar defect), and the mean
// of the top 3% of the map as the score (defect area counts, not one hot pixel).
func TexturePatchCoreOptions() PatchCoreOptions {
	return PatchCoreOptions{Width: 64, LightingSigma: 2, PositionWeight: 256, MapSigma: 2, K: 3, ScoreTop: 0.03}
}

// comboHeadLambda is the heads' L2 penalty with WithFilterBank: the two head vectors
// together have over 700 inputs (at MobileNetV2's expanded_conv_12) for about 150 rows;
// on splits 1-2 of the magnetic tiles 1 beat 0.1, with heads per kind and with one head,
// and 3 collapsed (models/README.md, "Trainer results").
const comboHeadLambda = 1.0

// trainTemplateWidth is the template's input width in Train when none is given.
const trainTemplateWidth = 128

func trainPlan(set TrainSet, opts TrainOptions) (TrainOptions, error) {
	if opts.Method == "" {
		opts.Method = MethodAuto
	}
	switch opts.Method {
	case MethodAuto, MethodTemplate, MethodPatchCore, MethodEnsemble:
	default:
		return opts, fmt.Errorf("train: method %q: want %s, %s, %s or %s", opts.Method, MethodAuto, MethodTemplate, MethodPatchCore, MethodEnsemble)
	}
	if len(set.Good) < 2 {
		return opts, fmt.Errorf("train: %d good images, need at least 2", len(set.Good))
	}
	if err := models.CheckFrame(set.Good[0]); err != nil {
		return opts, fmt.Errorf("train: good image 0: %w", err)
	}
	if len(opts.Backbone.ONNX) == 0 && len(opts.PatchCore.Backbone.ONNX) > 0 {
		opts.Backbone = opts.PatchCore.Backbone
	}
	withBackbone := len(opts.Backbone.ONNX) > 0
	if withBackbone {
		switch opts.Method {
		case MethodAuto:
			opts.Method = MethodPatchCore
		case MethodTemplate, MethodEnsemble:
			return opts, fmt.Errorf("train: method %s with a backbone: its features feed %s only", opts.Method, MethodPatchCore)
		}
	}
	for i, d := range set.Defects {
		if err := models.CheckFrame(d.Frame); err != nil {
			return opts, fmt.Errorf("train: defect image %d (%s): %w", i, d.Label, err)
		}
	}
	if opts.Name == "" {
		opts.Name = "model"
	}
	if opts.Version == "" {
		opts.Version = "0.1.0"
	}
	if opts.MinHeadDefects == 0 {
		opts.MinHeadDefects = DefaultMinHeadDefects
	}
	if opts.FalseReject == 0 {
		opts.FalseReject = eval.DefaultFalseReject
	}
	if !(opts.FalseReject > 0 && opts.FalseReject < 1) {
		return opts, fmt.Errorf("train: false-reject budget %g: want a fraction between 0 and 1 (0.01 is 1%%)", opts.FalseReject)
	}
	switch opts.ThresholdRule {
	case "":
		opts.ThresholdRule = eval.RuleFalseReject
	case eval.RuleFalseReject:
	case eval.RuleBestF1:
		if len(set.Defects) == 0 {
			return opts, fmt.Errorf("train: threshold rule %s needs labeled defects", eval.RuleBestF1)
		}
	default:
		return opts, fmt.Errorf("train: threshold rule %q: want %s or %s", opts.ThresholdRule, eval.RuleFalseReject, eval.RuleBestF1)
	}
	if opts.TrainedAt.IsZero() {
		opts.TrainedAt = time.Now()
	}
	if opts.PatchCore.Width == 0 && opts.PatchCore.Height == 0 && opts.PatchCore.PositionWeight == 0 && opts.PatchCore.K == 0 {
		def := TexturePatchCoreOptions()
		def.Folds, def.BankSize, def.Seed, def.Pool, def.Sigmas, def.Stride = opts.PatchCore.Folds, opts.PatchCore.BankSize,
			opts.PatchCore.Seed, opts.PatchCore.Pool, opts.PatchCore.Sigmas, opts.PatchCore.Stride
		opts.PatchCore = def
	}
	if (opts.Method == MethodAuto || opts.Method == MethodEnsemble) && opts.PatchCore.Downsample == 0 {
		// The ensemble needs one input for both models: the template's size; PatchCore
		// averages it down to about its own width (64 px by default) in the graph.
		w := opts.Template.Width
		if w == 0 {
			w = trainTemplateWidth
		}
		h := opts.Template.Height
		if h == 0 {
			h = int(math.Round(float64(w) / medianAspect(set.Good)))
		}
		pw := opts.PatchCore.Width
		if pw == 0 {
			pw = TexturePatchCoreOptions().Width
		}
		ds := max(1, int(math.Round(float64(w)/float64(pw))))
		stride := opts.PatchCore.Stride
		if stride == 0 {
			stride = DefaultPatchCoreOptions().Stride
		}
		w -= w % (stride * ds)
		h -= h % (stride * ds)
		opts.Template.Width, opts.Template.Height = w, h
		opts.PatchCore.Width, opts.PatchCore.Height, opts.PatchCore.Downsample = w, h, ds
	}
	if opts.Template.Width == 0 && opts.Template.Height == 0 {
		// 128 px wide: on the synthetic parts about as accurate and much faster to train than
		// TrainTemplate's 256 (models/README.md, "Few-shot trainer").
		opts.Template.Width = trainTemplateWidth
	}
	if opts.PatchCore.Seed == 0 {
		opts.PatchCore.Seed = opts.Seed
	}
	if _, err := inputChannels(opts.Color, nil); err != nil {
		return opts, fmt.Errorf("train: %w", err)
	}
	if opts.Template.Color == "" {
		opts.Template.Color = opts.Color
	}
	if opts.PatchCore.Color == "" {
		opts.PatchCore.Color = opts.Color
	}
	if opts.Template.FalseReject == 0 {
		opts.Template.FalseReject = opts.FalseReject
	}
	if opts.PatchCore.FalseReject == 0 {
		opts.PatchCore.FalseReject = opts.FalseReject
	}
	if withBackbone {
		// Cut and run once here, not in every fold and check.
		opts.PatchCore.Backbone = opts.Backbone
		bb, err := backbone.Resolve(opts.Backbone, medianAspect(set.Good))
		if err != nil {
			return opts, fmt.Errorf("train: %w", err)
		}
		opts.PatchCore.bb = bb
		_, sizeErr := comboFilterBankOptions(opts.PatchCore, bundle.InputShape{Channels: 1, Height: bb.InH, Width: bb.InW})
		if !opts.WithFilterBank && !opts.BackboneAlone && sizeErr == nil && opts.MinHeadDefects > 0 && len(set.Defects) >= opts.MinHeadDefects {
			opts.WithFilterBank = true
		}
		if opts.WithFilterBank && sizeErr != nil {
			return opts, fmt.Errorf("train: %w", sizeErr)
		}
	}
	if opts.WithFilterBank && opts.BackboneAlone {
		return opts, fmt.Errorf("train: with_filter_bank and backbone_alone both set: choose one")
	}
	if opts.WithFilterBank {
		switch {
		case !withBackbone:
			return opts, fmt.Errorf("train: with_filter_bank needs a backbone (--backbone FILE.onnx --layer L): the filter bank alone is the default model")
		case opts.MinHeadDefects < 0:
			return opts, fmt.Errorf("train: with_filter_bank builds a supervised head over both feature extractors, and min_head_defects %d turns the head off", opts.MinHeadDefects)
		case len(set.Defects) < opts.MinHeadDefects:
			return opts, fmt.Errorf("train: with_filter_bank builds a supervised head over both feature extractors: it needs at least %d labeled defects (min_head_defects), got %d",
				opts.MinHeadDefects, len(set.Defects))
		}
	}
	if opts.HeadLambda == 0 {
		opts.HeadLambda = 0.001
		if withBackbone {
			opts.HeadLambda = 0.1
		}
		if opts.WithFilterBank {
			opts.HeadLambda = comboHeadLambda
		}
	}
	if opts.HeadLambda < 0 {
		return opts, fmt.Errorf("train: head_lambda %g: want >= 0", opts.HeadLambda)
	}
	for _, o := range []struct {
		name, version *string
		ignore        *[]bundle.Region
		threads       *int
		at            *time.Time
	}{
		{&opts.Template.Name, &opts.Template.Version, &opts.Template.Ignore, &opts.Template.Threads, &opts.Template.TrainedAt},
		{&opts.PatchCore.Name, &opts.PatchCore.Version, &opts.PatchCore.Ignore, &opts.PatchCore.Threads, &opts.PatchCore.TrainedAt},
	} {
		*o.name, *o.version, *o.threads, *o.at = opts.Name, opts.Version, opts.Threads, opts.TrainedAt
		if len(opts.Ignore) > 0 {
			*o.ignore = opts.Ignore
		}
	}
	return opts, nil
}

// pseudoDefect draws a synthetic flaw on a copy of f, for choosing a method without
// labeled defects: a soft dark or bright blob (a spot, a hole, a stain) or a thin line (a
// scratch, a crack) of random place, size and contrast.
func pseudoDefect(f camera.Frame, rng *rand.Rand) camera.Frame {
	out := f
	out.Pix = append([]byte(nil), f.Pix...)
	w, h := float64(f.Width), float64(f.Height)
	s := min(w, h)
	cx, cy := w*(0.15+0.7*rng.Float64()), h*(0.15+0.7*rng.Float64())
	sign := 1.0
	if rng.IntN(2) == 0 {
		sign = -1
	}
	contrast := sign * (40 + 40*rng.Float64())
	var dist func(x, y float64) float64 // distance from the flaw's core, in its widths
	if rng.IntN(2) == 0 {
		r := s * (0.02 + 0.04*rng.Float64())
		dist = func(x, y float64) float64 { return math.Hypot(x-cx, y-cy) / r }
	} else {
		a := rng.Float64() * math.Pi
		half := s * (0.08 + 0.12*rng.Float64())
		width := max(1.0, s*0.004)
		dx, dy := math.Cos(a), math.Sin(a)
		dist = func(x, y float64) float64 {
			px, py := x-cx, y-cy
			t := max(-half, min(half, px*dx+py*dy))
			return math.Hypot(px-t*dx, py-t*dy) / width
		}
	}
	for y := range f.Height {
		for x := range f.Width {
			d := dist(float64(x)+0.5, float64(y)+0.5)
			if d > 2 {
				continue
			}
			a := contrast * math.Exp(-d*d)
			for c := range f.Channels {
				i := (y*f.Width+x)*f.Channels + c
				out.Pix[i] = clampPix(float64(out.Pix[i]) + a)
			}
		}
	}
	return out
}

func clampPix(v float64) byte {
	return byte(max(0, min(255, math.Round(v))))
}

// Alignment of the good images (MethodAuto without labels, see alignedParts).
const (
	// alignWidth is the width the images are compared at.
	alignWidth = 64
	// alignSigma is the Gaussian sigma, in pixels at alignWidth, of the brightness taken
	// out before comparing: what remains is detail (edges, holes, texture grain).
	alignSigma = 2
	// alignMaxImages caps the images the statistic is computed from.
	alignMaxImages = 40
	// alignedThreshold splits parts on a fixture from textures, with a wide margin on both
	// sides (models/README.md, "How auto chooses").
	alignedThreshold = 0.5
)

// alignment measures how much the good images agree in place: the median over images of
// the correlation between an image's detail (the image minus its Gaussian blur at sigma,
// so lighting does not count) and the detail of the mean of the other images. Parts on a
// fixture put their edges and holes at the same pixels, so every image looks like the
// mean of the others (near 1); on a texture the grain is at random places, averages out
// in the mean and the correlation is near 0. xs are w x h gray images, at least 2.
func alignment(xs [][]float32, w, h int, sigma float64) float64 {
	n := len(xs)
	if n < 2 {
		return math.NaN()
	}
	detail := make([][]float64, n)
	sum := make([]float64, w*h)
	for i, x := range xs {
		d := make([]float64, w*h)
		for j, v := range x {
			d[j] = float64(v)
		}
		blur := gaussBlur(d, w, h, sigma)
		for j := range d {
			d[j] -= blur[j]
			sum[j] += d[j]
		}
		detail[i] = d
	}
	rs := make([]float64, n)
	other := make([]float64, w*h)
	for i, d := range detail {
		for j := range other {
			other[j] = (sum[j] - d[j]) / float64(n-1)
		}
		rs[i] = correlation(d, other)
	}
	slices.Sort(rs)
	if n%2 == 1 {
		return rs[n/2]
	}
	return (rs[n/2-1] + rs[n/2]) / 2
}

// alignedParts says whether good images of alignment a are parts on a fixture (MethodAuto
// compares the template, PatchCore and their ensemble) rather than a texture or loosely
// placed parts (MethodAuto takes PatchCore).
func alignedParts(a float64) bool { return a >= alignedThreshold }

// gaussBlur blurs a w x h image with a Gaussian of sigma (separable, borders clamped).
func gaussBlur(x []float64, w, h int, sigma float64) []float64 {
	r := blurRadius(sigma)
	k := gaussianKernel(sigma, r)
	tmp := make([]float64, len(x))
	out := make([]float64, len(x))
	for y := range h {
		for xx := range w {
			var a float64
			for i, kv := range k {
				a += kv * x[y*w+min(w-1, max(0, xx+i-r))]
			}
			tmp[y*w+xx] = a
		}
	}
	for y := range h {
		for xx := range w {
			var a float64
			for i, kv := range k {
				a += kv * tmp[min(h-1, max(0, y+i-r))*w+xx]
			}
			out[y*w+xx] = a
		}
	}
	return out
}

// correlation is Pearson's r of a and b (0 when either is flat).
func correlation(a, b []float64) float64 {
	var ma, mb float64
	for i := range a {
		ma += a[i]
		mb += b[i]
	}
	ma /= float64(len(a))
	mb /= float64(len(b))
	var sab, saa, sbb float64
	for i := range a {
		da, db := a[i]-ma, b[i]-mb
		sab += da * db
		saa += da * da
		sbb += db * db
	}
	if saa == 0 || sbb == 0 {
		return 0
	}
	return sab / math.Sqrt(saa*sbb)
}
