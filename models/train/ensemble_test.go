//go:build cgo

package train

import (
	"context"
	"math"
	"testing"

	"github.com/takt-edge/takt/camera/synth"
)

// The ensemble graph must score exactly max(template/thA, patchcore/thB), map and score.
func TestEnsembleScoresTheLargerRatio(t *testing.T) {
	o := synth.RenderOptions{Seed: 4, Width: 160, Height: 120}
	train := renderParts(t, o, 1, 3, synth.None)
	ctx := context.Background()
	opts, err := trainPlan(TrainSet{Good: train}, TrainOptions{Method: MethodEnsemble, Template: TemplateOptions{Width: 64}, Threads: 2,
		PatchCore: PatchCoreOptions{Width: 32, PositionWeight: 64, BankSize: 200, MapSigma: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if opts.PatchCore.Downsample != 2 || opts.PatchCore.Width != 64 || opts.Template.Height != opts.PatchCore.Height {
		t.Fatalf("ensemble plan: patchcore %dx%d downsample %d, template height %d: want the template's 64 px input averaged by 2",
			opts.PatchCore.Width, opts.PatchCore.Height, opts.PatchCore.Downsample, opts.Template.Height)
	}
	m, err := Train(ctx, TrainSet{Good: train}, opts)
	if err != nil {
		t.Fatalf("Train ensemble: %v", err)
	}
	if m.Method != MethodEnsemble || m.Threshold != 1 {
		t.Fatalf("method %q threshold %v, want %q and 1", m.Method, m.Threshold, MethodEnsemble)
	}
	tm, err := TrainTemplate(ctx, train, opts.Template)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := TrainPatchCore(ctx, train, opts.PatchCore)
	if err != nil {
		t.Fatal(err)
	}
	frames := append(renderParts(t, o, 50, 2, synth.None), renderParts(t, o, 60, 2, synth.Scratch)...)
	e, a, b := scoreFrames(t, m, frames), scoreFrames(t, tm, frames), scoreFrames(t, pm, frames)
	for i := range frames {
		want := max(a[i]/tm.Threshold, b[i]/pm.Threshold)
		if math.Abs(e[i]-want) > 1e-4*max(1, want) {
			t.Errorf("frame %d: ensemble score %.6f, want max(%.4f/%.4f, %.4f/%.4f) = %.6f", i, e[i], a[i], tm.Threshold, b[i], pm.Threshold, want)
		}
	}
	for i, s := range m.TrainScores {
		if s != max(tm.TrainScores[i]/tm.Threshold, pm.TrainScores[i]/pm.Threshold) {
			t.Errorf("train score %d = %v: want the larger ratio of the two models'", i, s)
		}
	}
}
