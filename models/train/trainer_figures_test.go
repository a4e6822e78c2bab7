//go:build cgo

package train

import (
	"context"
	"fmt"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/eval"
)

// tileSet is the magnetic-tile images at 128x128 with their classes and (defects) masks.
type tileSet struct {
	good    []camera.Frame
	defects []LabeledFrame
	masks   [][]bool // per defect, 64x64, true = defect pixel
}

const tileMaskSize = 64

func loadTileSet(t *testing.T) tileSet {
	t.Helper()
	if _, err := os.Stat(filepath.Join(magneticTile, "good")); err != nil {
		t.Fatalf("magnetic-tile dataset not found (the project's shared/ folder must sit beside the checkout): %v", err)
	}
	var s tileSet
	s.good = loadTiles(t, filepath.Join(magneticTile, "good"), 128)
	for _, k := range []string{"blowhole", "break", "crack", "fray", "uneven"} {
		dir := filepath.Join(magneticTile, k)
		fs := loadTiles(t, dir, 128)
		names, _ := filepath.Glob(filepath.Join(dir, "*.jpg"))
		sort.Strings(names)
		for i, f := range fs {
			s.defects = append(s.defects, LabeledFrame{Frame: f, Label: k})
			base := strings.TrimSuffix(filepath.Base(names[i]), ".jpg")
			s.masks = append(s.masks, loadMask(t, filepath.Join(dir, "masks", base+".png"), tileMaskSize))
		}
	}
	return s
}

func loadMask(t *testing.T, path string, size int) []bool {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatalf("mask: %v", err)
	}
	defer fh.Close()
	img, err := png.Decode(fh)
	if err != nil {
		t.Fatalf("mask %s: %v", path, err)
	}
	f := resizeGray(img, size)
	out := make([]bool, size*size)
	for i, v := range f.Pix {
		out[i] = v > 127
	}
	return out
}

// tileSplit shuffles the good images with seed split and keeps 100 for training and the
// rest held out; defects go to training when trainDefect(i) (the supervised figure).
func tileSplit(s tileSet, split uint64) (train, held []camera.Frame) {
	good := slices.Clone(s.good)
	rng := rand.New(rand.NewPCG(split, 2))
	rng.Shuffle(len(good), func(i, j int) { good[i], good[j] = good[j], good[i] })
	n := min(100, len(good)*2/3)
	return good[:n], good[n:]
}

// defectHalves splits every defect class in two with seed split, so the labelled defects
// a supervised figure trains on vary with the split as the good tiles do: the first
// ceil(n/2) of each class's shuffle train (trainIdx, indices into s.defects), the rest
// are held out.
func defectHalves(s tileSet, split uint64) (trainIdx, testIdx []int) {
	byClass := map[string][]int{}
	var classes []string
	for i, d := range s.defects {
		if _, ok := byClass[d.Label]; !ok {
			classes = append(classes, d.Label)
		}
		byClass[d.Label] = append(byClass[d.Label], i)
	}
	rng := rand.New(rand.NewPCG(split, 3))
	for _, c := range classes {
		idx := byClass[c]
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		n := (len(idx) + 1) / 2
		trainIdx = append(trainIdx, idx[:n]...)
		testIdx = append(testIdx, idx[n:]...)
	}
	return trainIdx, testIdx
}

// defectSets is defectHalves as labelled training defects and held-out frames.
func defectSets(s tileSet, split uint64) (train []LabeledFrame, test []camera.Frame) {
	tr, te := defectHalves(s, split)
	for _, i := range tr {
		train = append(train, s.defects[i])
	}
	for _, i := range te {
		test = append(test, s.defects[i].Frame)
	}
	return train, test
}

// mapsOf scores frames and keeps their anomaly maps.
func mapsOf(t *testing.T, m *TrainedModel, frames []camera.Frame) (scores []float64, maps [][]float32) {
	t.Helper()
	r, err := models.LoadRuntimeData(m.ONNX, models.RuntimeOptions{Threads: 2, ReturnMap: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, f := range frames {
		res, err := r.Infer(context.Background(), f)
		if err != nil {
			t.Fatalf("Infer %d: %v", i, err)
		}
		scores = append(scores, res.Score)
		maps = append(maps, append([]float32(nil), res.Map.Values...))
	}
	return scores, maps
}

// pixelAUROC is the AUROC of map pixels against mask pixels over held-out good images
// (every pixel good) and defects; maps are tileMaskSize square (the texture model's input).
func pixelAUROC(goodMaps, defectMaps [][]float32, masks [][]bool) float64 {
	var neg, pos []float64
	for _, m := range goodMaps {
		for _, v := range m {
			neg = append(neg, float64(v))
		}
	}
	for i, m := range defectMaps {
		for j, v := range m {
			if masks[i][j] {
				pos = append(pos, float64(v))
			} else {
				neg = append(neg, float64(v))
			}
		}
	}
	return eval.EvaluateScores(neg, pos)
}

// TestFiguresTrainerMagneticTile prints the trainer's figures on the real magnetic-tile
// images: image AUROC with good images only (at most 100 for training), with labeled
// defects (the supervised head trained on half of each defect class, evaluated on the
// other half), and pixel AUROC from the masks. Held-out images are never seen by the
// trainer. The settings were compared on splits 1 and 2; split 3 is the BENCH figure.
func TestFiguresTrainerMagneticTile(t *testing.T) {
	figuresOn(t)
	s := loadTileSet(t)
	ctx := context.Background()
	const split = 3
	train, held := tileSplit(s, split)
	defects := make([]camera.Frame, len(s.defects))
	for i, d := range s.defects {
		defects[i] = d.Frame
	}
	t.Logf("magnetic-tile split %d: %d good for training, %d held-out good, %d defective", split, len(train), len(held), len(defects))

	// The alignment auto chooses by: the tiles are a texture (models/README.md, "How auto chooses").
	align, err := goodAlignment(s.good[:12])
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("BENCH alignment_magnetic_tile=%.3f\n", align)
	if alignedParts(align) {
		t.Errorf("alignment of 12 magnetic tiles %.3f is above %g: auto would take them for parts on a fixture", align, alignedThreshold)
	}

	// Unsupervised: the texture PatchCore that Train uses.
	start := time.Now()
	m, err := Train(ctx, TrainSet{Good: train}, TrainOptions{Method: MethodPatchCore, Name: "tile", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	g, gm := mapsOf(t, m, held)
	d, dm := mapsOf(t, m, defects)
	auroc := eval.EvaluateScores(g, d)
	fmt.Printf("BENCH auroc_magnetic_tile_unsupervised=%.3f\n", auroc)
	pix := pixelAUROC(gm, dm, s.masks)
	fmt.Printf("BENCH pixel_auroc_magnetic_tile=%.3f\n", pix)
	_, bestF1 := eval.BestF1Threshold(g, d)
	t.Logf("unsupervised %s: train %v, auroc %.3f, pixel auroc %.3f, f1 at threshold %.3f, best f1 %.3f",
		m.Input, took.Round(time.Millisecond), auroc, pix, eval.F1AtThreshold(g, d, m.Threshold), bestF1)

	// Supervised: half of each defect class (drawn per split, like the good tiles) for
	// training, the image labels only (no masks). Splits 1 and 2 chose the head's inputs;
	// split 3 is the figure.
	for sp := uint64(1); sp <= split; sp++ {
		train, held := tileSplit(s, sp)
		trainD, testD := defectSets(s, sp)
		start = time.Now()
		sm, err := Train(ctx, TrainSet{Good: train, Defects: trainD}, TrainOptions{Method: MethodPatchCore, Name: "tile-supervised", Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		took = time.Since(start)
		sg := scoreFrames(t, sm, held)
		sd := scoreFrames(t, sm, testD)
		sa := eval.EvaluateScores(sg, sd)
		if sp == split {
			fmt.Printf("BENCH auroc_magnetic_tile_supervised=%.3f\n", sa)
		}
		conf := eval.ConfusionAt(sg, sd, sm.Threshold)
		t.Logf("supervised split %d (head %v, %d training defects, %d test defects): train %v, auroc %.3f, at threshold %.3f: %+v f1 %.3f; metrics %v",
			sp, sm.Supervised, len(trainD), len(testD), took.Round(time.Millisecond), sa, sm.Threshold, conf, conf.F1(), sm.Metrics)
		if !sm.Supervised {
			t.Errorf("split %d: with %d labeled defects Train kept the unsupervised model (metrics %v): want the head", sp, len(trainD), sm.Metrics)
		}
	}

	// What --method auto makes of the tiles without labels (for models/README.md).
	start = time.Now()
	am, err := Train(ctx, TrainSet{Good: train}, TrainOptions{Name: "tile-auto", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("auto (good only) chose %s in %v: held-out auroc %.3f; metrics %v", am.Method, time.Since(start).Round(time.Millisecond),
		eval.EvaluateScores(scoreFrames(t, am, held), scoreFrames(t, am, defects)), am.Metrics)
}

// TestFiguresTrainerSynthetic prints the trainer's figures on synthetic parts: the
// held-out AUROC of Train (method auto, the command's default) from 10 good parts against
// new good parts and every defect kind, the training time of those 10 images on this
// machine, and the produced model's inference time at its input size.
func TestFiguresTrainerSynthetic(t *testing.T) {
	figuresOn(t)
	o := synth.RenderOptions{Seed: 7}
	ignore := markingIgnore(o)
	train := renderParts(t, o, 1, 10, synth.None)
	held := renderParts(t, o, 101, 40, synth.None)
	var defects []camera.Frame
	kinds := synth.AllDefects()
	for k, d := range kinds {
		defects = append(defects, renderParts(t, o, 201+20*k, 10, d)...)
	}
	start := time.Now()
	m, err := Train(context.Background(), TrainSet{Good: train}, TrainOptions{Name: "synthetic", Ignore: ignore})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	g := scoreFrames(t, m, held)
	d := scoreFrames(t, m, defects)
	auroc := eval.EvaluateScores(g, d)
	var perKind []string
	for k, kind := range kinds {
		perKind = append(perKind, string(kind)+"="+ftoa(eval.EvaluateScores(g, d[10*k:10*k+10])))
	}
	fmt.Printf("BENCH auroc_synthetic_10_good=%.3f\n", auroc)
	fmt.Printf("BENCH train_seconds_10_images=%.2f\n", took.Seconds())
	conf := eval.ConfusionAt(g, d, m.Threshold)
	t.Logf("synthetic: Train auto chose %s %s in %v (metrics %v): auroc %.3f (%s), at threshold %.3f %+v f1 %.3f",
		m.Method, m.Input, took.Round(time.Millisecond), m.Metrics, auroc, strings.Join(perKind, " "), m.Threshold, conf, conf.F1())

	// Each method alone on the same parts (for the comparison in models/README.md).
	for _, meth := range []string{MethodTemplate, MethodPatchCore, MethodEnsemble} {
		mm, err := Train(context.Background(), TrainSet{Good: train}, TrainOptions{Method: meth, Ignore: ignore})
		if err != nil {
			t.Fatal(err)
		}
		g, d := scoreFrames(t, mm, held), scoreFrames(t, mm, defects)
		var per []string
		for k, kind := range kinds {
			per = append(per, string(kind)+"="+ftoa(eval.EvaluateScores(g, d[10*k:10*k+10])))
		}
		t.Logf("synthetic, %s alone (%s): auroc %.3f (%s)", meth, mm.Input, eval.EvaluateScores(g, d), strings.Join(per, " "))
	}

	// Inference of the produced model, default threads, as a station runs it.
	r, err := models.LoadRuntimeData(m.ONNX, models.RuntimeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ds := inferTimes(t, r, held, 200)
	fmt.Printf("BENCH trained_model_infer_p50_ms=%.3f\n", ms(median(ds)))
	t.Logf("trained model %s: Infer p50 %v p99 %v on 640x480 frames", m.Input, median(ds), pct(ds, 0.99))
}

// TestFiguresTrainerConfigs compares trainer configurations on the magnetic tiles (good
// images only, 100 for training, the other 50 held out with every defect) over three
// splits, for the table in models/README.md. Folds are 2: the threshold plays no part in AUROC.
func TestFiguresTrainerConfigs(t *testing.T) {
	figuresOn(t)
	s := loadTileSet(t)
	defects := make([]camera.Frame, len(s.defects))
	for i, d := range s.defects {
		defects[i] = d.Frame
	}
	ctx := context.Background()
	tex := TexturePatchCoreOptions()
	with := func(f func(*PatchCoreOptions)) PatchCoreOptions { o := tex; f(&o); return o }
	base := PatchCoreOptions{Width: 64, PositionWeight: 256, MapSigma: 2}
	configs := []struct {
		name string
		pc   *PatchCoreOptions
		tpl  *TemplateOptions
	}{
		{"template 128 px (per-pixel Gaussian)", nil, &TemplateOptions{Width: 128}},
		{"patchcore 64 px, position 256, nearest neighbour, max (before)", &base, nil},
		{"  + mean of 3 nearest", ptr(with(func(o *PatchCoreOptions) { o.LightingSigma, o.ScoreTop = 0, 0 })), nil},
		{"  + score = mean of top 3% of the map", ptr(with(func(o *PatchCoreOptions) { o.LightingSigma = 0 })), nil},
		{"  + lighting normalization at 2 px (texture default)", &tex, nil},
		{"texture default without position", ptr(with(func(o *PatchCoreOptions) { o.PositionWeight = 0 })), nil},
		{"texture default, mean pooling", ptr(with(func(o *PatchCoreOptions) { o.Pool = PoolMean })), nil},
	}
	for _, c := range configs {
		var aurocs []string
		var sum float64
		var took time.Duration
		for split := uint64(1); split <= 3; split++ {
			train, held := tileSplit(s, split)
			start := time.Now()
			var m *TrainedModel
			var err error
			if c.tpl != nil {
				o := *c.tpl
				o.Threads = 2
				m, err = TrainTemplate(ctx, train, o)
			} else {
				o := *c.pc
				o.Threads, o.Folds = 2, 2
				m, err = TrainPatchCore(ctx, train, o)
			}
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			took += time.Since(start)
			a := eval.EvaluateScores(scoreFrames(t, m, held), scoreFrames(t, m, defects))
			sum += a
			aurocs = append(aurocs, ftoa(a))
		}
		t.Logf("| %s | %s | %.3f | %.1f s |", c.name, strings.Join(aurocs, " | "), sum/3, took.Seconds()/3)
	}
}

func ptr[T any](v T) *T { return &v }

// inferTimes runs r on n frames taken in turn from frames and returns each total time.
func inferTimes(t *testing.T, r *models.Runtime, frames []camera.Frame, n int) []time.Duration {
	t.Helper()
	ds := make([]time.Duration, 0, n)
	for i := range n {
		res, err := r.Infer(context.Background(), frames[i%len(frames)])
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, res.Timings.Total)
	}
	return ds
}
