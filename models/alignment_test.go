//go:build cgo

package models

import (
	"path/filepath"
	"testing"

	"github.com/takt-edge/takt/camera/synth"
)

// TestAlignmentPartsAndTextures: the alignment statistic MethodAuto chooses by puts the
// synthetic parts on a fixture above alignedThreshold and the magnetic tiles (a texture)
// below it, with room on both sides, for 3 and for 20 images.
func TestAlignmentPartsAndTextures(t *testing.T) {
	parts := renderParts(t, synth.RenderOptions{Seed: 7}, 1, 20, synth.None)
	tiles := loadTiles(t, filepath.Join(magneticTile, "good"), 128)[:20]
	for _, n := range []int{3, 20} {
		ap, err := goodAlignment(parts[:n])
		if err != nil {
			t.Fatal(err)
		}
		at, err := goodAlignment(tiles[:n])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d images: alignment of synthetic parts %.3f, of magnetic tiles %.3f (threshold %g)", n, ap, at, alignedThreshold)
		if !alignedParts(ap) || ap < alignedThreshold+0.15 {
			t.Errorf("%d synthetic parts: alignment %.3f, want >= %g (aligned, with margin)", n, ap, alignedThreshold+0.15)
		}
		if alignedParts(at) || at > alignedThreshold-0.15 {
			t.Errorf("%d magnetic tiles: alignment %.3f, want <= %g (texture, with margin)", n, at, alignedThreshold-0.15)
		}
	}
}
