//go:build cgo

package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/eval"
)

// TestPatchCoreHeadInputGraph checks the head vector the graph computes against the same
// statistics computed here in Go: the brightness statistics of the input and the maxima
// of the patch features and bank distances over the border ring and the interior.
func TestPatchCoreHeadInputGraph(t *testing.T) {
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	frames := make([]camera.Frame, 6)
	for i := range frames {
		frames[i] = textureFrame(rng, 64, 64, 0.3*float64(i%3))
	}
	opts := TexturePatchCoreOptions()
	opts.BankSize, opts.Folds = 200, 2
	po, in, err := patchCorePlan(frames[:4], opts)
	if err != nil {
		t.Fatal(err)
	}
	xs, err := preprocessGood("test", frames, in)
	if err != nil {
		t.Fatal(err)
	}
	h, w, d := patchDims(in, po)
	feats, err := patchFeaturesAll(in, po, xs[:4])
	if err != nil {
		t.Fatal(err)
	}
	bank := buildBank(feats, h, w, d, func(int) bool { return true }, po)
	data, err := patchCoreHeadGraph(in, po, bank, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := newRows(len(xs))
	headRowsOf(t, data, in, d, h, w, xs, func(int) bool { return true }, rows)
	if got, want := len(rows.headIn[0]), headDim(d); got != want {
		t.Fatalf("head_in has %d values, want headDim %d", got, want)
	}
	ring := headRing(h, w)
	if ring != 2 {
		t.Errorf("headRing(%d, %d) = %d, want 2 (an eighth of 16)", h, w, ring)
	}
	near := func(what string, i int, got, want float32) {
		t.Helper()
		if math.Abs(float64(got-want)) > 1e-3*max(1, math.Abs(float64(want))) {
			t.Errorf("image %d %s: graph %.5f, Go %.5f", i, what, got, want)
		}
	}
	p := h * w
	for i := range xs {
		v := rows.headIn[i]
		g := globalVec(xs[i], in.Height, in.Width)
		for j, want := range g {
			near(fmt.Sprintf("brightness statistic %d", j), i, v[2*d+3+j], want)
		}
		maxOver := func(grid []float32, inside bool) float32 {
			m := float32(math.Inf(-1))
			for y := range h {
				for x := range w {
					border := y < ring || x < ring || y >= h-ring || x >= w-ring
					if border != inside {
						m = max(m, grid[y*w+x])
					}
				}
			}
			return m
		}
		at := 2*d + 3 + headGlobalDim
		for _, inside := range []bool{false, true} {
			for c := range d {
				near("region max", i, v[at+c], maxOver(rows.std[i][c*p:(c+1)*p], inside))
			}
			near("region distance max", i, v[at+d], maxOver(rows.dist[i], inside))
			at += d + 1
		}
	}
	// A ramp of light must show in the block spread (statistic 6).
	if a, b := rows.headIn[0][2*d+3+6], rows.headIn[2][2*d+3+6]; b <= a {
		t.Errorf("block spread of the uneven image %.4f, of the even one %.4f: want the uneven one larger", b, a)
	}
}

// textureFrame is a gray random texture; uneven > 0 brightens it from top to bottom by
// up to that fraction, a smooth ramp (an unevenly lit or uneven tile).
func textureFrame(rng *rand.Rand, w, h int, uneven float64) camera.Frame {
	f := camera.Frame{Width: w, Height: h, Channels: 1, Pix: make([]byte, w*h)}
	for y := range h {
		for x := range w {
			v := 110 + 30*rng.Float64()
			v *= 1 + uneven*float64(y)/float64(h-1)
			f.Pix[y*w+x] = clampPix(v)
		}
	}
	return f
}

// TestPatchCoreSupervisedHeadBeatsMap: on textured parts where the defect is uneven light
// (which the patch features divide out on purpose, so PatchCore cannot see it), a handful
// of labeled defects teach the supervised head to catch it.
func TestPatchCoreSupervisedHeadBeatsMap(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~20x slower under -race; make test runs this test without it")
	}
	rng := rand.New(rand.NewPCG(7, 8))
	gen := func(n int, defect bool) []camera.Frame {
		out := make([]camera.Frame, n)
		for i := range out {
			u := 0.0
			if defect {
				u = 0.3 + 0.3*rng.Float64()
			}
			out[i] = textureFrame(rng, 64, 64, u)
		}
		return out
	}
	good, heldGood := gen(30, false), gen(20, false)
	var labeled []LabeledFrame
	for _, f := range gen(12, true) {
		labeled = append(labeled, LabeledFrame{Frame: f, Label: "uneven"})
	}
	heldDefects := gen(20, true)
	opts := TrainOptions{Method: MethodPatchCore, Threads: 2, PatchCore: TexturePatchCoreOptions()}
	opts.PatchCore.Folds, opts.PatchCore.BankSize = 3, 300
	ctx := context.Background()
	um, err := Train(ctx, TrainSet{Good: good}, opts)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := Train(ctx, TrainSet{Good: good, Defects: labeled}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if um.Supervised || !sm.Supervised {
		t.Fatalf("supervised: %v without labels, %v with 12: want false and true", um.Supervised, sm.Supervised)
	}
	ua := eval.EvaluateScores(scoreFrames(t, um, heldGood), scoreFrames(t, um, heldDefects))
	sa := eval.EvaluateScores(scoreFrames(t, sm, heldGood), scoreFrames(t, sm, heldDefects))
	t.Logf("held-out AUROC: PatchCore %.3f, with the supervised head %.3f; metrics %v", ua, sa, sm.Metrics)
	if sa < 0.95 || sa < ua+0.1 {
		t.Errorf("held-out AUROC with the head %.3f, PatchCore alone %.3f: want the head >= 0.95 and 0.1 above", sa, ua)
	}
}

// TestPatchCoreAutoMixedAspects: good images of differing aspect (the magnetic tiles are
// 120 to 620 pixels a side) are no camera view of parts on a fixture; auto trains the
// texture model on them instead of failing in the template.
func TestPatchCoreAutoMixedAspects(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~20x slower under -race; make test runs this test without it")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	var good []camera.Frame
	for i := range 8 {
		w, h := 64, 64
		if i%2 == 1 {
			w, h = 96, 40
		}
		good = append(good, textureFrame(rng, w, h, 0))
	}
	opts := TrainOptions{Threads: 2}
	opts.PatchCore = TexturePatchCoreOptions()
	opts.PatchCore.Folds, opts.PatchCore.BankSize = 2, 200
	m, err := Train(context.Background(), TrainSet{Good: good}, opts)
	if err != nil {
		t.Fatalf("Train auto on mixed aspects: %v", err)
	}
	if m.Method != MethodPatchCore {
		t.Errorf("auto on mixed aspects chose %s, want %s", m.Method, MethodPatchCore)
	}
	if _, err := Train(context.Background(), TrainSet{Good: good}, TrainOptions{Method: MethodTemplate}); err == nil || !strings.Contains(err.Error(), "one camera view") {
		t.Errorf("template on mixed aspects: %v, want an error asking for one camera view", err)
	}
}
