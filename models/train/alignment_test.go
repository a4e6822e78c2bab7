//go:build cgo

package train

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/camera/synth"
)

// TestAlignmentPartsAndTextures: the alignment statistic MethodAuto chooses by puts the
// synthetic parts on a fixture above alignedThreshold and random textures (unevenly lit,
// like tiles) below it, with room on both sides, for 3 and for 12 images. The figures test
// measures it on the magnetic tiles too.
func TestAlignmentPartsAndTextures(t *testing.T) {
	const most = 12
	parts := renderParts(t, synth.RenderOptions{Seed: 7, Width: 320, Height: 240}, 1, most, synth.None)
	tiles := textureFrames(most, 128, 11)
	for _, n := range []int{3, most} {
		ap, err := goodAlignment(parts[:n])
		if err != nil {
			t.Fatal(err)
		}
		at, err := goodAlignment(tiles[:n])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d images: alignment of synthetic parts %.3f, of textures %.3f (threshold %g)", n, ap, at, alignedThreshold)
		if !alignedParts(ap) || ap < alignedThreshold+0.15 {
			t.Errorf("%d synthetic parts: alignment %.3f, want >= %g (aligned, with margin)", n, ap, alignedThreshold+0.15)
		}
		if alignedParts(at) || at > alignedThreshold-0.15 {
			t.Errorf("%d textures: alignment %.3f, want <= %g (texture, with margin)", n, at, alignedThreshold-0.15)
		}
	}
}

// TestPatchCoreAutoChoice: Train's auto without labels takes PatchCore alone on random
// textures and compares the template, PatchCore and the ensemble on synthetic
// parts on a fixture, reporting the alignment it chose by.
func TestPatchCoreAutoChoice(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~8x slower under -race; make test runs this test without it")
	}
	tiles := textureFrames(8, 128, 12)
	m, err := Train(context.Background(), TrainSet{Good: tiles}, TrainOptions{Name: "tiles", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	tilesAlign := m.Metrics["alignment"]
	_, tried := m.Metrics["cv_auroc_"+MethodTemplate]
	if m.Method != MethodPatchCore || tried || !(m.Metrics["alignment"] < alignedThreshold) {
		t.Errorf("auto on textures: method %s, metrics %v; want patchcore alone, alignment below %g", m.Method, m.Metrics, alignedThreshold)
	}
	parts := renderParts(t, synth.RenderOptions{Seed: 7, Width: 320, Height: 240}, 1, 6, synth.None)
	m, err = Train(context.Background(), TrainSet{Good: parts}, TrainOptions{Name: "parts", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, meth := range []string{MethodTemplate, MethodPatchCore, MethodEnsemble} {
		if _, ok := m.Metrics["cv_auroc_"+meth]; !ok || !(m.Metrics["alignment"] >= alignedThreshold) {
			t.Errorf("auto on synthetic parts: metrics %v; want cv_auroc_%s and alignment >= %g", m.Metrics, meth, alignedThreshold)
		}
	}
	t.Logf("auto: textures alignment %.3f -> patchcore; synthetic parts alignment %.3f -> %s", tilesAlign, m.Metrics["alignment"], m.Method)
}

// textureFrames are n random gray textures of size x size, each lit unevenly by its own
// amount (0 to 30%), seeded so every run sees the same ones.
func textureFrames(n, size int, seed uint64) []camera.Frame {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]camera.Frame, n)
	for i := range out {
		out[i] = textureFrame(rng, size, size, 0.3*rng.Float64())
	}
	return out
}
