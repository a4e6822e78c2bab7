//go:build cgo

package train

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/onnxpb"
	"github.com/takt-edge/takt/models/train/backbone"
	"google.golang.org/protobuf/proto"
)

// comboParts is the fixture of the filter bank beside a backbone: synthetic good parts
// and parts with labeled defects, and the test backbone cut at "feat2" at 128x96.
func comboParts(t *testing.T) (good, held, defects, heldDefects []camera.Frame, bo backbone.Options) {
	t.Helper()
	good = goodParts(8, 1, 1)
	held = goodParts(4, 101, 1)
	for i, d := range []defect{darkSpot, scratch, missingHole, darkSpot, scratch, missingHole, darkSpot, scratch} {
		f := makePart(partSpec{width: 640, height: 480, channels: 1, defect: d, seed: 201 + uint64(i)})
		if i < 6 {
			defects = append(defects, f)
		} else {
			heldDefects = append(heldDefects, f)
		}
	}
	bo = backbone.Options{ONNX: symbolic(t, testBackbone{channels: 1, h: 8, w: 8}.write(t)), Layer: "feat2", Width: 128}
	return good, held, defects, heldDefects, bo
}

// TestPatchCoreWithFilterBank: Train with a backbone and labeled defects builds one graph
// with both extractors that ONNX Runtime runs as a station does (from a signed bundle):
// the head reads both head vectors (its input length is the sum), the map is the filter
// bank's, and the filter-bank half computes the standalone filter bank's features.
func TestPatchCoreWithFilterBank(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~8x slower under -race; make test runs this test without it")
	}
	good, held, defects, heldDefects, bo := comboParts(t)
	pc := TexturePatchCoreOptions()
	pc.Folds, pc.BankSize = 2, 300
	m, err := Train(context.Background(), TrainSet{Good: good, Defects: labeled(defects)},
		TrainOptions{Name: "combo", Backbone: bo, PatchCore: pc, Threads: 2, MinHeadDefects: 3}) // the default with a backbone and labels
	if err != nil {
		t.Fatal(err)
	}
	if !m.Supervised || m.Method != MethodPatchCore || m.Input.Width != 128 || m.Input.Height != 96 {
		t.Fatalf("Train with filter bank: supervised %v method %s input %s: want a supervised patchcore at 128x96", m.Supervised, m.Method, m.Input)
	}
	if m.Metrics["with_filter_bank"] != 1 {
		t.Errorf("metrics %v: want with_filter_bank 1, the default with a backbone and enough labeled defects", m.Metrics)
	}
	for _, k := range []string{"cv_auroc_patchcore_head", "cv_auroc_patchcore_folds", "cv_auroc_backbone_folds", "cv_auroc", "cv_f1", "train_seconds"} {
		if v, ok := m.Metrics[k]; !ok || math.IsNaN(v) {
			t.Errorf("metrics %v: want %s", m.Metrics, k)
		}
	}
	desc, err := bundle.InspectModel(m.ONNX)
	if err != nil {
		t.Fatal(err)
	}
	if meth := desc.Meta()[bundle.MetaMethod]; !strings.Contains(meth, `layer="feat2"`) || !strings.Contains(meth, "with_filter_bank downsample=2") || !strings.Contains(meth, "kinds=defect lambda=1 ") {
		t.Errorf("takt.method %q: want the backbone's layer, the filter bank at downsample 2 and the default lambda 1", meth)
	}
	// The head's input: the filter bank's 36 features (3 sigmas x 6 filters, and their
	// magnitudes) and the backbone's 16 channels.
	var mp onnxpb.ModelProto
	if err := proto.Unmarshal(m.ONNX, &mp); err != nil {
		t.Fatal(err)
	}
	want := int64(headDim(36) + headDim(16))
	var got []int64
	for _, in := range mp.Graph.Initializer {
		if in.GetName() == "head_w" {
			got = in.Dims
		}
	}
	if len(got) != 2 || got[0] != want {
		t.Errorf("head_w dims %v: want [%d 1] (%d + %d)", got, want, headDim(36), headDim(16))
	}

	// A station runs it from a signed bundle: probabilities, and the filter bank's map.
	man, err := m.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	r := runtimeOf(t, man, m.ONNX, models.RuntimeOptions{Threads: 2, ReturnMap: true})
	var gs, ds []float64
	for i, f := range append(append([]camera.Frame(nil), held...), heldDefects...) {
		res, err := r.Infer(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		if !(res.Score >= 0 && res.Score <= 1) || res.Map == nil || res.Map.Width != 128 || res.Map.Height != 96 {
			t.Fatalf("infer %d: score %v map %v: want a probability and a 128x96 map", i, res.Score, res.Map)
		}
		if i < len(held) {
			gs = append(gs, res.Score)
		} else {
			ds = append(ds, res.Score)
		}
	}
	a := eval.EvaluateScores(gs, ds)
	t.Logf("with filter bank: held-out auroc %.3f (good %.3f, defects %.3f), metrics %v", a, gs, ds, m.Metrics)
	if a < 0.75 {
		t.Errorf("with filter bank: held-out auroc %.3f (good %v, defects %v), want >= 0.75", a, gs, ds)
	}

	// The filter-bank half on the 128x96 input (averaged 2x2 in the graph) against the
	// standalone filter bank at 64x48 (resized by the preprocessing).
	bbO, in, err := patchCorePlan(good, func() PatchCoreOptions { o := pc; o.Backbone = bo; return o }())
	if err != nil {
		t.Fatal(err)
	}
	fbO, err := comboFilterBankOptions(bbO, in)
	if err != nil {
		t.Fatal(err)
	}
	fbO, _, err = patchCorePlan(good, fbO)
	if err != nil {
		t.Fatal(err)
	}
	alone, aloneIn, err := patchCorePlan(good, pc)
	if err != nil {
		t.Fatal(err)
	}
	if aloneIn.Width != 64 || aloneIn.Height != 48 {
		t.Fatalf("standalone filter bank input %s: want 64x48", aloneIn)
	}
	worst, mean, exact := filterBankHalfAgreement(t, good[:3], in, fbO, aloneIn, alone)
	t.Logf("filter-bank half against the standalone filter bank: difference %.4f feature standard deviations at most, %.5f on average; %.2g at most on the same 64x48 input", worst, mean, exact)
	// The two differ only in where 8-bit rounding happens: the preprocessing resizes to
	// 128x96 (rounded) before the graph averages 2x2, or straight to 64x48 (rounded).
	// Given the 2x2 average itself, the standalone filter bank computes the same.
	if worst > 0.1 || mean > 0.01 || exact > 1e-3 {
		t.Errorf("filter-bank half differs from the standalone filter bank by %.4f feature standard deviations at most, %.5f on average, %.2g on the same input; want <= 0.1, 0.01 and 1e-3", worst, mean, exact)
	}
}

// filterBankHalfAgreement compares the joint model's filter-bank half (fbO at in) with
// the standalone filter bank (alone at aloneIn, half the size) on frames: the largest and
// mean difference of their patch features (see featureAgreement) with each input made by
// the preprocessing, and the largest when the standalone one gets the joint input
// averaged 2x2 in float (no 8-bit rounding between).
func filterBankHalfAgreement(t *testing.T, frames []camera.Frame, in bundle.InputShape, fbO PatchCoreOptions, aloneIn bundle.InputShape, alone PatchCoreOptions) (worst, mean, exact float64) {
	t.Helper()
	if fbO.Downsample != 2 || aloneIn.Width*2 != in.Width || aloneIn.Height*2 != in.Height {
		t.Fatalf("filter-bank half at %s downsample %d against %s: want half the size", in, fbO.Downsample, aloneIn)
	}
	xs := preprocessed(t, in, frames)
	joint, err := patchFeaturesAll(in, fbO, xs)
	if err != nil {
		t.Fatal(err)
	}
	single, err := patchFeaturesAll(aloneIn, alone, preprocessed(t, aloneIn, frames))
	if err != nil {
		t.Fatal(err)
	}
	_, _, d := patchDims(aloneIn, alone)
	worst, mean = featureAgreement(joint, single, d)
	halves := make([][]float32, len(xs))
	for i, x := range xs {
		h := make([]float32, aloneIn.Len())
		for y := range aloneIn.Height {
			for xx := range aloneIn.Width {
				at := func(dy, dx int) float32 { return x[(2*y+dy)*in.Width+2*xx+dx] }
				h[y*aloneIn.Width+xx] = (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4
			}
		}
		halves[i] = h
	}
	same, err := patchFeaturesAll(aloneIn, alone, halves)
	if err != nil {
		t.Fatal(err)
	}
	exact, _ = featureAgreement(joint, same, d)
	return worst, mean, exact
}

// featureAgreement is the largest and the mean absolute difference between two sets of
// patch features ([image][d*P], channel-major as patchFeaturesAll returns them), in
// standard deviations of the feature's channel over b.
func featureAgreement(a, b [][]float32, d int) (worst, mean float64) {
	p := len(b[0]) / d
	var count float64
	for c := range d {
		var s, sq, n float64
		for i := range b {
			for _, v := range b[i][c*p : (c+1)*p] {
				s, sq, n = s+float64(v), sq+float64(v)*float64(v), n+1
			}
		}
		m := s / n
		sd := math.Sqrt(max(sq/n-m*m, 1e-12))
		for i := range b {
			for j := c * p; j < (c+1)*p; j++ {
				e := math.Abs(float64(a[i][j]-b[i][j])) / sd
				worst, mean, count = max(worst, e), mean+e, count+1
			}
		}
	}
	return worst, mean / count
}

// TestWithFilterBankErrors: the joint model refuses what it cannot build, naming why.
func TestWithFilterBankErrors(t *testing.T) {
	good, _, defects, _, bo := comboParts(t)
	tests := []struct {
		name string
		set  TrainSet
		opts TrainOptions
		want string
	}{
		{"no backbone", TrainSet{Good: good, Defects: labeled(defects)}, TrainOptions{WithFilterBank: true, MinHeadDefects: 3}, "with_filter_bank needs a backbone"},
		{"too few defects", TrainSet{Good: good, Defects: labeled(defects[:2])}, TrainOptions{Backbone: bo, WithFilterBank: true, MinHeadDefects: 3}, "needs at least 3 labeled defects (min_head_defects), got 2"},
		{"no head", TrainSet{Good: good, Defects: labeled(defects)}, TrainOptions{Backbone: bo, WithFilterBank: true, MinHeadDefects: -1}, "min_head_defects -1 turns the head off"},
		{"size", TrainSet{Good: good, Defects: labeled(defects)}, TrainOptions{Backbone: func() backbone.Options { o := bo; o.Width, o.Height = 100, 76; return o }(),
			WithFilterBank: true, MinHeadDefects: 3}, "input 100x76 is not a multiple of 8"},
		{"template", TrainSet{Good: good, Defects: labeled(defects)}, TrainOptions{Method: MethodTemplate, Backbone: bo, WithFilterBank: true, MinHeadDefects: 3}, "method template with a backbone"},
		{"both", TrainSet{Good: good, Defects: labeled(defects)}, TrainOptions{Backbone: bo, WithFilterBank: true, BackboneAlone: true, MinHeadDefects: 3}, "with_filter_bank and backbone_alone both set"},
	}
	for _, tt := range tests {
		if _, err := trainPlan(tt.set, tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: trainPlan error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	// The default: beside a backbone whenever the head is trained and the size fits.
	for _, tt := range []struct {
		name    string
		defects int
		opts    TrainOptions
		want    bool
		lambda  float64
	}{
		{"enough defects", 3, TrainOptions{Backbone: bo, MinHeadDefects: 3}, true, comboHeadLambda},
		{"too few defects", 2, TrainOptions{Backbone: bo, MinHeadDefects: 3}, false, 0.1},
		{"backbone alone", 6, TrainOptions{Backbone: bo, BackboneAlone: true, MinHeadDefects: 3}, false, 0.1},
		{"size off the filter bank's step", 6, TrainOptions{Backbone: func() backbone.Options { o := bo; o.Width, o.Height = 100, 76; return o }(), MinHeadDefects: 3}, false, 0.1},
		{"no head", 6, TrainOptions{Backbone: bo, MinHeadDefects: -1}, false, 0.1},
		{"own lambda", 6, TrainOptions{Backbone: bo, MinHeadDefects: 3, HeadLambda: 0.3}, true, 0.3},
	} {
		o, err := trainPlan(TrainSet{Good: good, Defects: labeled(defects[:tt.defects])}, tt.opts)
		if err != nil || o.WithFilterBank != tt.want || o.HeadLambda != tt.lambda {
			t.Errorf("%s: trainPlan with_filter_bank %v head lambda %g (%v), want %v and %g", tt.name, o.WithFilterBank, o.HeadLambda, err, tt.want, tt.lambda)
		}
	}
}
