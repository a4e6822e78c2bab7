//go:build cgo

package train

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/train/backbone"
)

// TestFiguresTrainerBackbone prints the split protocol's figures (as
// TestFiguresTrainerMagneticTile and TestFiguresTrainerSolarCells) for Train with the
// recommended backbone, as `takt model train` runs it by default when make build has
// fetched it: with half of each defect kind on the magnetic tiles and on the solar cells
// (the filter bank beside the backbone, heads over both), and, for comparison only (it is
// not the default), good images only on the tiles; also the median training seconds with
// labels and the last tile model's inference p50 per tile (2 threads). The backbone is
// found as `takt model train` finds it: $TAKT_BACKBONE_DIR, else the checkout's
// .deps/backbone (packaging/fetch-backbone.sh, run by make build and make bench).
func TestFiguresTrainerBackbone(t *testing.T) {
	figuresOn(t)
	dirs := []string{filepath.Join("..", "..", ".deps", "backbone")}
	if d := os.Getenv("TAKT_BACKBONE_DIR"); d != "" {
		dirs = []string{d}
	}
	rec, err := backbone.FindRecommended(dirs)
	if err != nil {
		t.Fatalf("%v: run packaging/fetch-backbone.sh .deps/backbone (make bench does)", err)
	}
	bo, err := rec.Options()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("recommended backbone %s at %s", rec.Path(), rec.Layer)
	opts := TrainOptions{Backbone: bo}
	s := loadProtocolSet(t, "magnetic-tile", "blowhole", "break", "crack", "fray", "uneven")
	un := summarize(t, s.name, "good only, backbone", first(protocolRuns(t, s, false, opts)))
	fmt.Printf("BENCH auroc_magnetic_tile_backbone=%.3f\n", un.auroc)
	fmt.Printf("BENCH auroc_magnetic_tile_backbone_sd=%.3f\n", un.aurocSD)
	rs, m := protocolRuns(t, s, true, opts)
	sup := summarize(t, s.name, "with labels, backbone", rs)
	fmt.Printf("BENCH auroc_magnetic_tile_supervised_backbone=%.3f\n", sup.auroc)
	fmt.Printf("BENCH auroc_magnetic_tile_supervised_backbone_sd=%.3f\n", sup.aurocSD)
	fmt.Printf("BENCH false_reject_magnetic_tile_supervised_backbone=%.3f\n", sup.falseReject)
	fmt.Printf("BENCH escape_magnetic_tile_supervised_backbone=%.3f\n", sup.escape)
	fmt.Printf("BENCH cv_auroc_gap_magnetic_tile_supervised_backbone=%.3f\n", sup.cvGap)
	fmt.Printf("BENCH backbone_supervised_train_seconds=%.1f\n", sup.seconds)
	r, err := models.LoadRuntimeData(m.ONNX, models.RuntimeOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ds := inferTimes(t, r, s.good, 40)
	fmt.Printf("BENCH backbone_infer_p50_ms=%.1f\n", ms(median(ds)))

	cells := loadProtocolSet(t, "solar-cells", "defective")
	sc := summarize(t, cells.name, "with labels, backbone", first(protocolRuns(t, cells, true, opts)))
	fmt.Printf("BENCH auroc_solar_cells_supervised_backbone=%.3f\n", sc.auroc)
	fmt.Printf("BENCH auroc_solar_cells_supervised_backbone_sd=%.3f\n", sc.aurocSD)
	fmt.Printf("BENCH false_reject_solar_cells_supervised_backbone=%.3f\n", sc.falseReject)
	fmt.Printf("BENCH escape_solar_cells_supervised_backbone=%.3f\n", sc.escape)
	fmt.Printf("BENCH cv_auroc_gap_solar_cells_supervised_backbone=%.3f\n", sc.cvGap)
}

// TestFiguresTrainerBackboneConfigs compares PatchCore on a user's pretrained backbone
// with the texture default on the magnetic tiles (good images only, the three splits of
// TestFiguresTrainerConfigs; a comparison, no figure). The backbone is given as
// TAKT_BACKBONE=FILE.onnx with TAKT_BACKBONE_LAYER (and optionally TAKT_BACKBONE_WIDTH,
// default the backbone's fixed size or else 128, the tiles' size, and
// TAKT_BACKBONE_NORM=imagenet).
func TestFiguresTrainerBackboneConfigs(t *testing.T) {
	comparisonsOn(t)
	data := backboneFromEnv(t)
	bo := backbone.Options{ONNX: data, Layer: os.Getenv("TAKT_BACKBONE_LAYER")}
	if bb, err := backbone.Cut(bo); err != nil {
		t.Fatal(err)
	} else if bb.FixedW == 0 {
		bo.Width = 128 // the tiles' size, unless the backbone fixes its own
	}
	if w := os.Getenv("TAKT_BACKBONE_WIDTH"); w != "" {
		var err error
		if bo.Width, err = strconv.Atoi(w); err != nil {
			t.Fatalf("TAKT_BACKBONE_WIDTH %q: %v", w, err)
		}
	}
	if os.Getenv("TAKT_BACKBONE_NORM") == "imagenet" {
		bo.Mean, bo.Std = backbone.ImageNetMean, backbone.ImageNetStd
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
		var sum float64
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
			a := eval.EvaluateScores(scoreFrames(t, m, held), scoreFrames(t, m, defects))
			sum += a
			aurocs = append(aurocs, ftoa(a))
			if split == 3 && c.bb {
				t.Logf("%s: %s", c.name, m.Input)
			}
		}
		t.Logf("| %s | %s | %.3f | %.1f s |", c.name, strings.Join(aurocs, " | "), sum/3, took.Seconds()/3)
	}
}

// TestFiguresTrainerBackboneSupervisedConfigs compares supervised configurations with a
// pretrained backbone (TAKT_BACKBONE, cut at TAKT_BACKBONE_LAYER) on the magnetic tiles'
// three splits (a comparison, no figure): per split, 100 good tiles and half of each defect
// class train `Train` with WithFilterBank (the filter-bank and the backbone PatchCore in
// one graph, the supervised head over both); the other good tiles and defects are scored.
// TAKT_BACKBONE_COMPARE lists further layer sets, separated by ";", TAKT_BACKBONE_LAMBDAS
// head L2 penalties (comma-separated; default Train's), TAKT_BACKBONE_ALONE=1 adds the
// backbone without the filter bank; the shipped filter-bank model runs first for reference.
func TestFiguresTrainerBackboneSupervisedConfigs(t *testing.T) {
	comparisonsOn(t)
	data := backboneFromEnv(t)
	layer := os.Getenv("TAKT_BACKBONE_LAYER")
	layers := []string{layer}
	for _, l := range strings.Split(os.Getenv("TAKT_BACKBONE_COMPARE"), ";") {
		if l = strings.TrimSpace(l); l != "" && l != layer {
			layers = append(layers, l)
		}
	}
	lambdas := []float64{0} // Train's default
	if v := os.Getenv("TAKT_BACKBONE_LAMBDAS"); v != "" {
		lambdas = nil
		for _, f := range strings.Split(v, ",") {
			x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || x <= 0 {
				t.Fatalf("TAKT_BACKBONE_LAMBDAS %q: want positive numbers, comma-separated", v)
			}
			lambdas = append(lambdas, x)
		}
	}
	type config struct {
		name   string
		layer  string
		fb     bool
		lambda float64
	}
	// The shipped filter-bank model first, for reference in the same run (never the BENCH
	// figure of the backbone).
	configs := []config{{name: "filter bank alone, shipped head (reference)"}}
	for _, l := range layers {
		if os.Getenv("TAKT_BACKBONE_ALONE") == "1" {
			configs = append(configs, config{backboneLayerName(l) + ", backbone alone", l, false, 0})
		}
		for _, lambda := range lambdas {
			name := backboneLayerName(l) + " + filter bank"
			if lambda > 0 {
				name += fmt.Sprintf(", L2 %g", lambda)
			}
			configs = append(configs, config{name, l, true, lambda})
		}
	}
	s := loadTileSet(t)
	ctx := context.Background()
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatal(err)
	}
	// The filter-bank half of the joint model (128 px input, averaged 2x2 in the graph)
	// against the standalone filter bank (64 px, resized by the preprocessing), on split
	// 1's training tiles.
	train, _ := tileSplit(s, 1)
	bbO, in, err := patchCorePlan(train, func() PatchCoreOptions {
		o := TexturePatchCoreOptions()
		o.Backbone = backbone.Options{ONNX: data, Layer: layer}
		return o
	}())
	if err != nil {
		t.Fatal(err)
	}
	fbO, err := comboFilterBankOptions(bbO, in)
	if err != nil {
		t.Fatal(err)
	}
	if fbO, _, err = patchCorePlan(train, fbO); err != nil {
		t.Fatal(err)
	}
	alone, aloneIn, err := patchCorePlan(train, TexturePatchCoreOptions())
	if err != nil {
		t.Fatal(err)
	}
	worst, mean, exact := filterBankHalfAgreement(t, train, in, fbO, aloneIn, alone)
	t.Logf("filter-bank half (%s, downsample %d) against the standalone filter bank (%s) on %d tiles: %.4f feature standard deviations at most, %.5f on average; on the same input (2x2 average without 8-bit rounding) %.2g at most",
		in, fbO.Downsample, aloneIn, len(train), worst, mean, exact)
	for _, c := range configs {
		var aurocs []float64
		var took time.Duration
		var m *TrainedModel
		var held []camera.Frame
		for split := uint64(1); split <= 3; split++ {
			train, h := tileSplit(s, split)
			held = h
			trainD, testD := defectSets(s, split)
			start := time.Now()
			var err error
			o := TrainOptions{Method: MethodPatchCore, Name: "tile-backbone", Threads: 2, WithFilterBank: c.fb, HeadLambda: c.lambda}
			if c.layer != "" {
				o.Backbone = backbone.Options{ONNX: data, Layer: c.layer}
				o.BackboneAlone = !c.fb
			}
			m, err = Train(ctx, TrainSet{Good: train, Defects: trainD}, o)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			took += time.Since(start)
			if !m.Supervised {
				t.Errorf("%s split %d: Train kept the unsupervised model (metrics %v): want the head", c.name, split, m.Metrics)
			}
			aurocs = append(aurocs, eval.EvaluateScores(scoreFrames(t, m, held), scoreFrames(t, m, testD)))
			t.Logf("%s split %d: auroc %.3f, %.0f s, metrics %v", c.name, split, aurocs[split-1], time.Since(start).Seconds(), m.Metrics)
		}
		// Inference per tile, as a station runs the model (2 threads).
		r, err := models.LoadRuntimeData(m.ONNX, models.RuntimeOptions{Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		ds := inferTimes(t, r, held, 40)
		r.Close()
		t.Logf("| %s (%s) | %.3f | %.3f | %.3f | %.3f | %.1f s | %.1f ms |", c.name, m.Input, aurocs[0], aurocs[1], (aurocs[0]+aurocs[1])/2, aurocs[2],
			took.Seconds()/3, ms(median(ds)))
	}
}

// headRowsFor computes the supervised head's input rows as Train does, with 5 folds:
// train (good then defects) from fold banks that did not see the image, test from the
// bank of all good training images.
func headRowsFor(t *testing.T, po PatchCoreOptions, train, trainD, test []camera.Frame) (trows, terows [][]float32, d int) {
	t.Helper()
	po, in, err := patchCorePlan(train, po)
	if err != nil {
		t.Fatal(err)
	}
	po.Threads = 2
	xs, ds, tx := preprocessed(t, in, train), preprocessed(t, in, trainD), preprocessed(t, in, test)
	h, w, d := patchDims(in, po)
	feats, err := patchFeaturesAll(in, po, xs)
	if err != nil {
		t.Fatal(err)
	}
	all := append(append([][]float32(nil), xs...), ds...)
	trows = make([][]float32, len(all))
	const folds = 5
	for k := range folds {
		bank := buildBank(feats, h, w, d, func(i int) bool { return i%folds != k }, po)
		data, err := patchCoreHeadGraph(in, po, bank, nil, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		held := func(i int) bool {
			if i < len(xs) {
				return i%folds == k
			}
			return (i-len(xs))%folds == k
		}
		if err := runOutput(data, in, 2, "head_in", headDim(d), all, held, trows); err != nil {
			t.Fatal(err)
		}
	}
	bank := buildBank(feats, h, w, d, func(int) bool { return true }, po)
	data, err := patchCoreHeadGraph(in, po, bank, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	terows = make([][]float32, len(tx))
	if err := runOutput(data, in, 2, "head_in", headDim(d), tx, func(int) bool { return true }, terows); err != nil {
		t.Fatal(err)
	}
	return trows, terows, d
}

// TestFiguresTrainerBackboneHeads compares, on the same head rows, what the supervised
// head makes of a backbone's features (TAKT_BACKBONE at TAKT_BACKBONE_LAYER and the layer
// sets of TAKT_BACKBONE_COMPARE): its L2 penalty, its pooled features alone, and the
// backbone's vector beside the filter bank's (the shipped head's inputs of both, one
// logistic regression). Rows as in TestFiguresTrainerSupervisedConfigs (5-fold banks;
// defect halves drawn per split); settings compared on splits 1-2, split 3 shown.
func TestFiguresTrainerBackboneHeads(t *testing.T) {
	comparisonsOn(t)
	data := backboneFromEnv(t)
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatal(err)
	}
	layers := []string{os.Getenv("TAKT_BACKBONE_LAYER")}
	for _, l := range strings.Split(os.Getenv("TAKT_BACKBONE_COMPARE"), ";") {
		if l = strings.TrimSpace(l); l != "" && l != layers[0] {
			layers = append(layers, l)
		}
	}
	s := loadTileSet(t)
	var table splitTable
	add := table.add
	for split := uint64(1); split <= 3; split++ {
		train, held := tileSplit(s, split)
		trD, testD := defectSets(s, split)
		var trainD []camera.Frame
		for _, d := range trD {
			trainD = append(trainD, d.Frame)
		}
		test := append(append([]camera.Frame(nil), held...), testD...)
		nh := len(held)
		lab := make([]bool, len(train)+len(trainD))
		for i := len(train); i < len(lab); i++ {
			lab[i] = true
		}
		evalHead := func(name string, tr, te [][]float32, lambda float64) {
			lh, err := fitHead(tr, lab, lambda)
			if err != nil {
				t.Fatal(err)
			}
			var sc []float64
			for _, x := range te {
				sc = append(sc, lh.prob(x))
			}
			add(name, eval.EvaluateScores(sc[:nh], sc[nh:]))
		}
		handTr, handTe, _ := headRowsFor(t, TexturePatchCoreOptions(), train, trainD, test)
		evalHead("filter bank, shipped head (L2 0.01)", handTr, handTe, 0.01)
		for _, l := range layers {
			po := TexturePatchCoreOptions()
			po.Backbone = backbone.Options{ONNX: data, Layer: l}
			tr, te, d := headRowsFor(t, po, train, trainD, test)
			name := backboneLayerName(l)
			var sc []float64
			for _, r := range te {
				sc = append(sc, float64(r[2*d])) // the map score
			}
			add(name+": map score (no head)", eval.EvaluateScores(sc[:nh], sc[nh:]))
			for _, lambda := range []float64{0.01, 0.1, 1} {
				evalHead(fmt.Sprintf("%s: head, L2 %g", name, lambda), tr, te, lambda)
			}
			pooled := func(rs [][]float32) (out [][]float32) {
				for _, r := range rs {
					out = append(out, r[:2*d])
				}
				return out
			}
			evalHead(name+": pooled features only (max, mean), L2 0.1", pooled(tr), pooled(te), 0.1)
			both := func(a, b [][]float32) (out [][]float32) {
				for i := range a {
					out = append(out, cat(a[i], b[i]))
				}
				return out
			}
			for _, lambda := range []float64{0.01, 0.1, 1} {
				evalHead(fmt.Sprintf("%s + filter bank head vectors, L2 %g", name, lambda), both(tr, handTr), both(te, handTe), lambda)
			}
		}
	}
	table.log(t)
}

// backboneLayerName shortens TF-style layer paths to their last two parts
// (".../expanded_conv_12/add" -> "expanded_conv_12/add"), joined with " + ".
func backboneLayerName(l string) string {
	var parts []string
	for _, p := range strings.Split(l, ",") {
		if i := strings.LastIndex(p, "/"); i > 0 {
			if j := strings.LastIndex(p[:i], "/"); j >= 0 {
				p = p[j+1:]
			}
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " + ")
}

// backboneFromEnv is the ONNX backbone named by TAKT_BACKBONE; without it the figure is
// skipped (the model comes from outside the repository: packaging/fetch-backbone.sh).
func backboneFromEnv(t *testing.T) []byte {
	t.Helper()
	path := os.Getenv("TAKT_BACKBONE")
	if path == "" {
		t.Skip("no TAKT_BACKBONE=FILE.onnx (with TAKT_BACKBONE_LAYER) given: the backbone figure needs a pretrained model from outside the repository")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
