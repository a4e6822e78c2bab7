//go:build cgo

package models

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
)

// TestFiguresTrainerBackbone measures PatchCore on a user's pretrained backbone on the
// magnetic tiles (good images only, the splits of TestFiguresTrainerConfigs; split 3 is
// the BENCH figure), against the texture default in the same run. The backbone is not
// part of the repository: give it as TAKT_BACKBONE=FILE.onnx with TAKT_BACKBONE_LAYER
// (and optionally TAKT_BACKBONE_WIDTH, default 128, the tiles' size, and
// TAKT_BACKBONE_NORM=imagenet); without it the figure is not measured.
func TestFiguresTrainerBackbone(t *testing.T) {
	figuresOn(t)
	path := os.Getenv("TAKT_BACKBONE")
	if path == "" {
		t.Skip("no TAKT_BACKBONE=FILE.onnx (with TAKT_BACKBONE_LAYER) given: the backbone figure needs a pretrained model from outside the repository")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bo := BackboneOptions{ONNX: data, Layer: os.Getenv("TAKT_BACKBONE_LAYER"), Width: 128}
	if w := os.Getenv("TAKT_BACKBONE_WIDTH"); w != "" {
		if bo.Width, err = strconv.Atoi(w); err != nil {
			t.Fatalf("TAKT_BACKBONE_WIDTH %q: %v", w, err)
		}
	}
	if os.Getenv("TAKT_BACKBONE_NORM") == "imagenet" {
		bo.Mean, bo.Std = ImageNetMean, ImageNetStd
	}
	s := loadTileSet(t)
	defects := make([]camera.Frame, len(s.defects))
	for i, d := range s.defects {
		defects[i] = d.Frame
	}
	ctx := context.Background()
	configs := []struct {
		name string
		pc   func() PatchCoreOptions
		bb   bool
	}{
		{"texture default (filter bank, 64 px)", TexturePatchCoreOptions, false},
		{"backbone, texture settings", TexturePatchCoreOptions, true},
		{"backbone, position 64", func() PatchCoreOptions { o := TexturePatchCoreOptions(); o.PositionWeight = 64; return o }, true},
	}
	for _, c := range configs {
		var aurocs []string
		var sum, last float64
		var took time.Duration
		for split := uint64(1); split <= 3; split++ {
			train, held := tileSplit(s, split)
			o := c.pc()
			o.Threads, o.Folds = 2, 2
			if c.bb {
				o.Backbone = bo
			}
			start := time.Now()
			m, err := TrainPatchCore(ctx, train, o)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			took += time.Since(start)
			last = EvaluateScores(scoreFrames(t, m, held), scoreFrames(t, m, defects))
			sum += last
			aurocs = append(aurocs, ftoa(last))
			if split == 3 && c.bb {
				t.Logf("%s: %s", c.name, m.Input)
			}
		}
		if c.name == "backbone, texture settings" {
			fmt.Printf("BENCH auroc_magnetic_tile_backbone=%.3f\n", last)
		}
		t.Logf("| %s | %s | %.3f | %.1f s |", c.name, strings.Join(aurocs, " | "), sum/3, took.Seconds()/3)
	}
}
