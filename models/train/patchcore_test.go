//go:build cgo

package train

import (
	"context"
	"fmt"
	"image"
	"image/jpeg"
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
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
)

// scoreFrames loads model data in ONNX Runtime (as a station would) and scores frames.
func scoreFrames(t *testing.T, m *TrainedModel, frames []camera.Frame) []float64 {
	t.Helper()
	if _, err := m.Manifest(); err != nil {
		t.Fatalf("Manifest: %v", err)
	}
	r, err := models.LoadRuntimeData(m.ONNX, models.RuntimeOptions{Threads: 2, ReturnMap: true})
	if err != nil {
		t.Fatalf("models.LoadRuntimeData(%s): %v", m.Name, err)
	}
	defer r.Close()
	out := make([]float64, len(frames))
	var infer time.Duration
	defer func() {
		t.Logf("%s %s: mean ONNX Runtime run %v over %d frames (2 threads)", m.Name, m.Input, (infer / time.Duration(max(1, len(frames)))).Round(10*time.Microsecond), len(frames))
	}()
	for i, f := range frames {
		res, err := r.Infer(context.Background(), f)
		if err != nil {
			t.Fatalf("Infer %s frame %d: %v", m.Name, i, err)
		}
		if res.Map == nil || res.Map.Width != m.Input.Width || res.Map.Height != m.Input.Height {
			t.Fatalf("%s frame %d: anomaly map %+v, want %dx%d", m.Name, i, res.Map, m.Input.Width, m.Input.Height)
		}
		out[i] = res.Score
		infer += res.Timings.Infer
	}
	return out
}

func renderParts(t *testing.T, o synth.RenderOptions, from, n int, d synth.Defect) []camera.Frame {
	t.Helper()
	fs := make([]camera.Frame, n)
	for i := range fs {
		f, _, err := synth.RenderPart(o, from+i, d)
		if err != nil {
			t.Fatalf("RenderPart(%d, %q): %v", from+i, d, err)
		}
		fs[i] = f
	}
	return fs
}

// markingIgnore is the region of default-size synthetic parts (o's seed) whose serial
// number and codes change per part, as frame fractions for TrainOptions.Ignore.
func markingIgnore(o synth.RenderOptions) []bundle.Region {
	mr := synth.MarkingRegion(o)
	w, h := float64(synth.DefaultWidth), float64(synth.DefaultHeight)
	return []bundle.Region{{X0: max(0, float64(mr.Min.X)/w), Y0: max(0, float64(mr.Min.Y)/h),
		X1: min(1, float64(mr.Max.X)/w), Y1: min(1, float64(mr.Max.Y)/h)}}
}

func TestPatchCoreSynthetic(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~20x slower under -race; make test runs this test without it")
	}
	o := synth.RenderOptions{Seed: 7}
	ignore := markingIgnore(o)
	train := renderParts(t, o, 1, 10, synth.None)
	heldGood := renderParts(t, o, 101, 20, synth.None)
	var defects []camera.Frame
	kinds := synth.AllDefects()
	for k, d := range kinds {
		defects = append(defects, renderParts(t, o, 201+10*k, 6, d)...)
	}
	ctx := context.Background()

	start := time.Now()
	tm, err := TrainTemplate(ctx, train, TemplateOptions{Width: 128, Ignore: ignore, Threads: 2})
	if err != nil {
		t.Fatalf("TrainTemplate: %v", err)
	}
	tTemplate := time.Since(start)
	start = time.Now()
	pm, err := TrainPatchCore(ctx, train, PatchCoreOptions{Width: 128, PositionWeight: 128, Ignore: ignore, Threads: 2})
	if err != nil {
		t.Fatalf("TrainPatchCore: %v", err)
	}
	tPatch := time.Since(start)

	for _, c := range []struct {
		m     *TrainedModel
		train time.Duration
	}{{tm, tTemplate}, {pm, tPatch}} {
		g := scoreFrames(t, c.m, heldGood)
		d := scoreFrames(t, c.m, defects)
		auroc := eval.EvaluateScores(g, d)
		var perKind []string
		for k, kind := range kinds {
			perKind = append(perKind, string(kind)+"="+ftoa(eval.EvaluateScores(g, d[6*k:6*k+6])))
		}
		conf := eval.ConfusionAt(g, d, c.m.Threshold)
		t.Logf("synthetic %s: train %v, auroc=%.3f (%s), threshold %.3f: %+v f1=%.3f, good max %.3f",
			c.m.Name, c.train.Round(time.Millisecond), auroc, strings.Join(perKind, " "), c.m.Threshold, conf, conf.F1(), slices.Max(g))
		if c.m == pm && auroc < 0.9 {
			t.Errorf("patchcore synthetic auroc = %.3f, want >= 0.9", auroc)
		}
	}
}

func ftoa(v float64) string { return fmt.Sprintf("%.3f", v) }

// datasetDir is the shared dataset called name: $TAKT_DATASETS/name when that is set,
// otherwise shared/datasets/name in the nearest folder above the test's that has one (the
// project's shared/ folder sits beside the checkout, at whatever depth the checkout is).
func datasetDir(t *testing.T, name string) string {
	t.Helper()
	if root := os.Getenv("TAKT_DATASETS"); root != "" {
		return filepath.Join(root, name)
	}
	start, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for dir := start; ; {
		p := filepath.Join(dir, "shared", "datasets", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatalf("dataset %s not found in shared/datasets above %s (the project's shared/ folder sits beside the checkout; or set TAKT_DATASETS)", name, start)
		}
		dir = up
	}
}

// loadTiles reads the JPEGs in dir (the first most of them, if given), resized
// (bilinear) to size x size gray frames.
func loadTiles(t *testing.T, dir string, size int, most ...int) []camera.Frame {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	if len(most) > 0 && len(names) > most[0] {
		names = names[:most[0]]
	}
	var out []camera.Frame
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("decode %s: %v", name, err)
		}
		out = append(out, resizeGray(img, size))
	}
	return out
}

func resizeGray(img image.Image, size int) camera.Frame {
	b := img.Bounds()
	gray := func(x, y int) float64 {
		x = min(max(x, 0), b.Dx()-1)
		y = min(max(y, 0), b.Dy()-1)
		r, g, bb, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
		return (0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bb)) / 257
	}
	f := camera.Frame{Width: size, Height: size, Channels: 1, Pix: make([]byte, size*size)}
	for y := range size {
		for x := range size {
			sx := (float64(x)+0.5)*float64(b.Dx())/float64(size) - 0.5
			sy := (float64(y)+0.5)*float64(b.Dy())/float64(size) - 0.5
			x0, y0 := int(sx), int(sy)
			if sx < 0 {
				x0 = -1
			}
			if sy < 0 {
				y0 = -1
			}
			fx, fy := sx-float64(x0), sy-float64(y0)
			v := (1-fy)*((1-fx)*gray(x0, y0)+fx*gray(x0+1, y0)) + fy*((1-fx)*gray(x0, y0+1)+fx*gray(x0+1, y0+1))
			f.Pix[y*size+x] = clampByte(v)
		}
	}
	return f
}

// With a bank of every training patch, each training image's patches are in the bank, so
// the in-graph distance (|a|^2 + |b|^2 - 2ab, ReduceMin) must come out near 0.
func TestPatchCoreMemorizesTraining(t *testing.T) {
	train := renderParts(t, synth.RenderOptions{Seed: 3}, 1, 3, synth.None)
	m, err := TrainPatchCore(context.Background(), train, PatchCoreOptions{Width: 64, BankSize: 20000, MaxCandidates: 20000, Threads: 2})
	if err != nil {
		t.Fatalf("TrainPatchCore: %v", err)
	}
	for i, s := range m.TrainScores {
		if s > 0.05 {
			t.Errorf("train image %d scored %.4f by a bank holding all its patches, want about 0", i, s)
		}
	}
	if min(m.GoodScores[0], m.GoodScores[1], m.GoodScores[2]) <= 0.05 {
		t.Errorf("cross-validated good scores %.4f: want above 0 (held-out images are not in the bank)", m.GoodScores)
	}
	if m.Threshold < MinThreshold || m.Folds != 3 {
		t.Errorf("threshold %v, folds %d: want >= %v and 3", m.Threshold, m.Folds, MinThreshold)
	}
}

func TestPatchCoreOptionsErrors(t *testing.T) {
	good := []camera.Frame{{Width: 64, Height: 48, Channels: 1, Pix: make([]byte, 64*48)}, {Width: 64, Height: 48, Channels: 1, Pix: make([]byte, 64*48)}}
	tests := []struct {
		name string
		opts PatchCoreOptions
		want string
	}{
		{"odd stride", PatchCoreOptions{Stride: 3}, "stride 3"},
		{"pool", PatchCoreOptions{Pool: "median"}, `pool "median"`},
		{"bank", PatchCoreOptions{BankSize: 100, MaxCandidates: 10}, "max_candidates 10"},
		{"sigma", PatchCoreOptions{Sigmas: []float64{20}}, "sigmas"},
		{"folds", PatchCoreOptions{Folds: 3}, "folds 3"},
		{"ignore", PatchCoreOptions{Ignore: []bundle.Region{{X0: 0.5, X1: 0.2, Y1: 1}}}, "ignore"},
	}
	for _, tt := range tests {
		_, _, err := patchCorePlan(good, tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: patchCorePlan error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	if _, _, err := patchCorePlan(good[:1], PatchCoreOptions{}); err == nil {
		t.Errorf("one good image: got no error, want one")
	}
}

// Images of several aspects (a texture's crops) give PatchCore the same input whatever
// their order: the median aspect's, not the first image's.
func TestPatchCoreInputFollowsMedianAspect(t *testing.T) {
	frame := func(w, h int) camera.Frame {
		return camera.Frame{Width: w, Height: h, Channels: 1, Pix: make([]byte, w*h)}
	}
	good := []camera.Frame{frame(400, 100), frame(200, 200), frame(300, 200), frame(100, 300), frame(240, 160)}
	want := bundle.InputShape{Channels: 1, Width: 64, Height: 40} // median aspect 1.5, 64/1.5 rounded down to the stride
	for _, order := range [][]int{{0, 1, 2, 3, 4}, {3, 4, 0, 2, 1}, {1, 0, 4, 3, 2}} {
		var fs []camera.Frame
		for _, i := range order {
			fs = append(fs, good[i])
		}
		_, in, err := patchCorePlan(fs, TexturePatchCoreOptions())
		if err != nil {
			t.Fatal(err)
		}
		if in != want {
			t.Errorf("order %v: input %v, want %v", order, in, want)
		}
	}
}
