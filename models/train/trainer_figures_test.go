//go:build cgo

package train

import (
	"context"
	"errors"
	"fmt"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
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
	magneticTile := datasetDir(t, "magnetic-tile")
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
// a supervised figure trains on vary with the split as the good tiles do (kindHalves).
func defectHalves(s tileSet, split uint64) (trainIdx, testIdx []int) {
	return kindHalves(s.defects, split)
}

// kindHalves splits every defect kind of defects in two with seed split: the first
// ceil(n/2) of each kind's shuffle train (trainIdx, indices into defects), the rest are
// held out.
func kindHalves(defects []LabeledFrame, split uint64) (trainIdx, testIdx []int) {
	byClass := map[string][]int{}
	var classes []string
	for i, d := range defects {
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
// (every pixel good) and defects; each mask has its map's size.
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

// The dataset figures follow one protocol (models/README.md, "Trainer results"): over
// protocolSplits random splits with fixed seeds, at most 100 good images train and every
// other image is held out; the labelled figures also train on half of each defect kind,
// drawn per split, and hold out the other half. Every split runs Train as shipped
// (default options: method auto, the default false-reject budget), so no setting is
// chosen by a held-out score. Figures are the mean over splits, with "_sd" the standard
// deviation between splits; training seconds are the median.

// protocolSplits is how many splits a dataset figure averages; TAKT_FIGURES_SPLITS sets
// another count for a quick look (the figures need at least 10).
func protocolSplits(t *testing.T) int {
	if v := os.Getenv("TAKT_FIGURES_SPLITS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("TAKT_FIGURES_SPLITS %q: want a positive count", v)
		}
		return n
	}
	return 10
}

// protocolSet is a dataset as `takt model train --data` reads it (camera's folder
// source: every image at its own size, in name order): good images, defects labelled
// with their folder's kind and, where the dataset has one, each defect's mask file.
type protocolSet struct {
	name    string
	good    []camera.Frame
	defects []LabeledFrame
	masks   []string // per defect; "" without a mask
}

func loadProtocolSet(t *testing.T, name string, kinds ...string) protocolSet {
	t.Helper()
	dir := datasetDir(t, name)
	s := protocolSet{name: name, good: readImages(t, filepath.Join(dir, "good"))}
	for _, k := range kinds {
		fs := readImages(t, filepath.Join(dir, k))
		names := imageNames(t, filepath.Join(dir, k))
		if len(names) != len(fs) {
			t.Fatalf("%s/%s: %d frames from %d image files", name, k, len(fs), len(names))
		}
		for i, f := range fs {
			s.defects = append(s.defects, LabeledFrame{Frame: f, Label: k})
			mask := filepath.Join(dir, k, "masks", strings.TrimSuffix(filepath.Base(names[i]), filepath.Ext(names[i]))+".png")
			if _, err := os.Stat(mask); err != nil {
				mask = ""
			}
			s.masks = append(s.masks, mask)
		}
	}
	return s
}

// readImages reads dir as the command does: camera's folder source, name order.
func readImages(t *testing.T, dir string) []camera.Frame {
	t.Helper()
	src, err := camera.Open(camera.Config{ID: "figures", Kind: camera.KindFolder, Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var frames []camera.Frame
	for {
		f, err := src.Read(context.Background())
		if errors.Is(err, io.EOF) {
			return frames
		}
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		frames = append(frames, f)
	}
}

// imageNames lists dir's image files in name order, as the folder source reads them.
func imageNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && slices.Contains(camera.ImageExtensions, strings.ToLower(filepath.Ext(e.Name()))) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

// goodHalves shuffles n good images with seed split (as tileSplit does) and keeps at most
// 100 for training, the rest held out.
func goodHalves(n int, split uint64) (trainIdx, heldIdx []int) {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	rng := rand.New(rand.NewPCG(split, 2))
	rng.Shuffle(n, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	k := min(100, n*2/3)
	return idx[:k], idx[k:]
}

// splitResult is what one split of the protocol measured, on its held-out images.
type splitResult struct {
	auroc       float64
	falseReject float64 // at the model's threshold: share of held-out good images failed
	escape      float64 // share of held-out defects passed
	cvAUROC     float64 // the trainer's own metrics["cv_auroc"]; NaN when it reports none
	pixelAUROC  float64 // maps against masks; NaN without masks or with labels
	seconds     float64 // wall time of Train
}

// protocolRuns trains and scores every split of s, good images only or with half of each
// defect kind, and logs each split; opts are Train's (its defaults, unless a figure
// measures another shipped configuration such as a backbone). It returns the last
// split's model beside the results.
func protocolRuns(t *testing.T, s protocolSet, labels bool, opts TrainOptions) ([]splitResult, *TrainedModel) {
	t.Helper()
	if opts.Name == "" {
		opts.Name = s.name
	}
	var out []splitResult
	var m *TrainedModel
	for split := uint64(1); split <= uint64(protocolSplits(t)); split++ {
		trIdx, heldIdx := goodHalves(len(s.good), split)
		set := TrainSet{}
		for _, i := range trIdx {
			set.Good = append(set.Good, s.good[i])
		}
		var held, test []camera.Frame
		for _, i := range heldIdx {
			held = append(held, s.good[i])
		}
		var masks []string
		if labels {
			trD, teD := kindHalves(s.defects, split)
			for _, i := range trD {
				set.Defects = append(set.Defects, s.defects[i])
			}
			for _, i := range teD {
				test = append(test, s.defects[i].Frame)
			}
		} else {
			for _, d := range s.defects {
				test = append(test, d.Frame)
			}
			masks = s.masks
		}
		start := time.Now()
		var err error
		m, err = Train(context.Background(), set, opts)
		if err != nil {
			t.Fatalf("%s split %d: %v", s.name, split, err)
		}
		r := splitResult{seconds: time.Since(start).Seconds(), cvAUROC: math.NaN(), pixelAUROC: math.NaN()}
		if v, ok := m.Metrics["cv_auroc"]; ok {
			r.cvAUROC = v
		}
		g, gm := mapsOf(t, m, held)
		d, dm := mapsOf(t, m, test)
		r.auroc = eval.EvaluateScores(g, d)
		r.falseReject, r.escape = eval.Rates(g, d, m.Threshold)
		if slices.ContainsFunc(masks, func(p string) bool { return p != "" }) {
			var dms [][]float32
			var ms [][]bool
			for i, p := range masks {
				if p != "" {
					dms = append(dms, dm[i])
					ms = append(ms, loadMaskAt(t, p, m.Input.Width, m.Input.Height))
				}
			}
			r.pixelAUROC = pixelAUROC(gm, dms, ms)
		}
		kind := "good only"
		if labels {
			kind = fmt.Sprintf("%d labelled defects", len(set.Defects))
		}
		t.Logf("%s split %d (%d good, %s; held out %d good, %d defective): %s %s supervised=%v in %.1f s; auroc %.3f, cv_auroc %.3f, pixel auroc %.3f; threshold %.4g (%s, budget %g, expected false reject %.3f escape %.3f): false reject %.3f, escape %.3f",
			s.name, split, len(set.Good), kind, len(held), len(test), m.Method, m.Input, m.Supervised, r.seconds, r.auroc, r.cvAUROC, r.pixelAUROC,
			m.Threshold, m.Operating.Rule, m.Operating.Budget, m.Operating.FalseReject, m.Operating.Escape, r.falseReject, r.escape)
		if labels && s.name == "magnetic-tile" && !m.Supervised {
			t.Errorf("%s split %d: with %d labeled defects Train kept the unsupervised model (metrics %v): want the head", s.name, split, len(set.Defects), m.Metrics)
		}
		out = append(out, r)
	}
	return out, m
}

func first[A, B any](a A, _ B) A { return a }

// column is one measure of every split.
func column(rs []splitResult, f func(splitResult) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func meanOf(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// sdOf is the sample standard deviation (0 for one value).
func sdOf(xs []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	m := meanOf(xs)
	var s float64
	for _, x := range xs {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(xs)-1))
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// protocolSummary is the per-dataset figures of both runs.
type protocolSummary struct {
	auroc, aurocSD, falseReject, escape, seconds float64
	cvGap, cvGapSD                               float64 // cv_auroc minus held-out AUROC
	pixel, pixelSD                               float64
}

func summarize(t *testing.T, name, kind string, rs []splitResult) protocolSummary {
	t.Helper()
	aur := column(rs, func(r splitResult) float64 { return r.auroc })
	gap := column(rs, func(r splitResult) float64 { return r.cvAUROC - r.auroc })
	pix := column(rs, func(r splitResult) float64 { return r.pixelAUROC })
	s := protocolSummary{
		auroc: meanOf(aur), aurocSD: sdOf(aur),
		falseReject: meanOf(column(rs, func(r splitResult) float64 { return r.falseReject })),
		escape:      meanOf(column(rs, func(r splitResult) float64 { return r.escape })),
		seconds:     medianOf(column(rs, func(r splitResult) float64 { return r.seconds })),
		cvGap:       meanOf(gap), cvGapSD: sdOf(gap),
		pixel: meanOf(pix), pixelSD: sdOf(pix),
	}
	t.Logf("| %s | %s | %d | %.3f ± %.3f | %.3f | %.3f | %.3f ± %.3f | %.1f s |", name, kind, len(rs), s.auroc, s.aurocSD,
		s.falseReject, s.escape, s.cvGap, s.cvGapSD, s.seconds)
	return s
}

// TestFiguresTrainerMagneticTile prints the trainer's figures on the real magnetic tiles
// (300 good, 146 defective in five kinds, 120-620 px a side) by the split protocol: image
// AUROC good images only and with labels, both rates at each model's own threshold, the
// gap between the trainer's cv_auroc and the held-out AUROC (with labels), training
// seconds, and pixel AUROC of the good-only model's maps against the masks.
func TestFiguresTrainerMagneticTile(t *testing.T) {
	figuresOn(t)
	// The alignment auto chooses by: the tiles are a texture (models/README.md, "How auto chooses").
	align, err := goodAlignment(loadTiles(t, filepath.Join(datasetDir(t, "magnetic-tile"), "good"), 128, 12))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("BENCH alignment_magnetic_tile=%.3f\n", align)
	if alignedParts(align) {
		t.Errorf("alignment of 12 magnetic tiles %.3f is above %g: auto would take them for parts on a fixture", align, alignedThreshold)
	}

	s := loadProtocolSet(t, "magnetic-tile", "blowhole", "break", "crack", "fray", "uneven")
	un := summarize(t, s.name, "good only", first(protocolRuns(t, s, false, TrainOptions{})))
	fmt.Printf("BENCH auroc_magnetic_tile_unsupervised=%.3f\n", un.auroc)
	fmt.Printf("BENCH auroc_magnetic_tile_unsupervised_sd=%.3f\n", un.aurocSD)
	fmt.Printf("BENCH false_reject_magnetic_tile_unsupervised=%.3f\n", un.falseReject)
	fmt.Printf("BENCH escape_magnetic_tile_unsupervised=%.3f\n", un.escape)
	fmt.Printf("BENCH train_seconds_magnetic_tile_unsupervised=%.1f\n", un.seconds)
	fmt.Printf("BENCH pixel_auroc_magnetic_tile=%.3f\n", un.pixel)
	fmt.Printf("BENCH pixel_auroc_magnetic_tile_sd=%.3f\n", un.pixelSD)

	sup := summarize(t, s.name, "with labels", first(protocolRuns(t, s, true, TrainOptions{})))
	fmt.Printf("BENCH auroc_magnetic_tile_supervised=%.3f\n", sup.auroc)
	fmt.Printf("BENCH auroc_magnetic_tile_supervised_sd=%.3f\n", sup.aurocSD)
	fmt.Printf("BENCH false_reject_magnetic_tile_supervised=%.3f\n", sup.falseReject)
	fmt.Printf("BENCH escape_magnetic_tile_supervised=%.3f\n", sup.escape)
	fmt.Printf("BENCH cv_auroc_gap_magnetic_tile_supervised=%.3f\n", sup.cvGap)
	fmt.Printf("BENCH cv_auroc_gap_magnetic_tile_supervised_sd=%.3f\n", sup.cvGapSD)
	fmt.Printf("BENCH train_seconds_magnetic_tile_supervised=%.1f\n", sup.seconds)
}

// TestFiguresTrainerSolarCells prints the same figures on the real solar cells (200 good,
// 100 defective, 300x300 grey, one pose; one defect kind, no masks).
func TestFiguresTrainerSolarCells(t *testing.T) {
	figuresOn(t)
	s := loadProtocolSet(t, "solar-cells", "defective")
	un := summarize(t, s.name, "good only", first(protocolRuns(t, s, false, TrainOptions{})))
	fmt.Printf("BENCH auroc_solar_cells_unsupervised=%.3f\n", un.auroc)
	fmt.Printf("BENCH auroc_solar_cells_unsupervised_sd=%.3f\n", un.aurocSD)
	fmt.Printf("BENCH false_reject_solar_cells_unsupervised=%.3f\n", un.falseReject)
	fmt.Printf("BENCH escape_solar_cells_unsupervised=%.3f\n", un.escape)
	fmt.Printf("BENCH train_seconds_solar_cells_unsupervised=%.1f\n", un.seconds)

	sup := summarize(t, s.name, "with labels", first(protocolRuns(t, s, true, TrainOptions{})))
	fmt.Printf("BENCH auroc_solar_cells_supervised=%.3f\n", sup.auroc)
	fmt.Printf("BENCH auroc_solar_cells_supervised_sd=%.3f\n", sup.aurocSD)
	fmt.Printf("BENCH false_reject_solar_cells_supervised=%.3f\n", sup.falseReject)
	fmt.Printf("BENCH escape_solar_cells_supervised=%.3f\n", sup.escape)
	fmt.Printf("BENCH cv_auroc_gap_solar_cells_supervised=%.3f\n", sup.cvGap)
	fmt.Printf("BENCH cv_auroc_gap_solar_cells_supervised_sd=%.3f\n", sup.cvGapSD)
	fmt.Printf("BENCH train_seconds_solar_cells_supervised=%.1f\n", sup.seconds)
}

// loadMaskAt reads a mask PNG (white = defect) sampled to w x h (nearest pixel).
func loadMaskAt(t *testing.T, path string, w, h int) []bool {
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
	b := img.Bounds()
	out := make([]bool, w*h)
	for y := range h {
		for x := range w {
			r, _, _, _ := img.At(b.Min.X+x*b.Dx()/w, b.Min.Y+y*b.Dy()/h).RGBA()
			out[y*w+x] = r > 127*257
		}
	}
	return out
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

// comparisonsOn runs a comparison of settings (the "What was tried" tables of
// models/README.md; no figure) only with TAKT_FIGURES_COMPARE=1 as well as TAKT_FIGURES=1:
// `make bench` prints the figures of what ships.
func comparisonsOn(t *testing.T) {
	figuresOn(t)
	if os.Getenv("TAKT_FIGURES_COMPARE") != "1" {
		t.Skip("comparisons of settings run with TAKT_FIGURES_COMPARE=1")
	}
}

// TestFiguresTrainerConfigs compares trainer configurations on the magnetic tiles (good
// images only, 100 for training, the other 50 held out with every defect) over three
// splits, for the table in models/README.md. Folds are 2: the threshold plays no part in AUROC.
func TestFiguresTrainerConfigs(t *testing.T) {
	comparisonsOn(t)
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
