//go:build cgo

package synth

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"gocv.io/x/gocv"

	"github.com/takt-edge/takt/camera"
)

func mustRender(t *testing.T, o RenderOptions, index int, d Defect) (camera.Frame, Label) {
	t.Helper()
	f, l, err := RenderPart(o, index, d)
	if err != nil {
		t.Fatalf("RenderPart(%d, %q): %v", index, d, err)
	}
	return f, l
}

// mad is the mean absolute difference of two frames over r, per channel value.
func mad(a, b camera.Frame, r image.Rectangle) float64 {
	sum, n := 0, 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for i := (y*a.Width + r.Min.X) * 3; i < (y*a.Width+r.Max.X)*3; i++ {
			d := int(a.Pix[i]) - int(b.Pix[i])
			sum += max(d, -d)
			n++
		}
	}
	return float64(sum) / float64(n)
}

// down4 averages 4x4 blocks, like a model input resize to a quarter of the size.
func down4(f camera.Frame) camera.Frame {
	w, h := f.Width/4, f.Height/4
	out := camera.Frame{Width: w, Height: h, Channels: 3, Pix: make([]byte, w*h*3)}
	for y := range h {
		for x := range w {
			for ch := range 3 {
				s := 0
				for dy := range 4 {
					for dx := range 4 {
						s += int(f.Pix[((4*y+dy)*f.Width+4*x+dx)*3+ch])
					}
				}
				out.Pix[(y*w+x)*3+ch] = byte(s / 16)
			}
		}
	}
	return out
}

// maxDiff is the largest difference of one channel value of a and b inside r.
func maxDiff(a, b camera.Frame, r image.Rectangle) int {
	m := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for i := (y*a.Width + r.Min.X) * 3; i < (y*a.Width+r.Max.X)*3; i++ {
			d := int(a.Pix[i]) - int(b.Pix[i])
			m = max(m, d, -d)
		}
	}
	return m
}

func TestRenderDeterministic(t *testing.T) {
	for _, d := range append([]Defect{None}, AllDefects()...) {
		a, la := mustRender(t, RenderOptions{Seed: 7}, 3, d)
		b, lb := mustRender(t, RenderOptions{Seed: 7}, 3, d)
		if !bytes.Equal(a.Pix, b.Pix) || la != lb {
			t.Errorf("%s: two renders with the same inputs differ", defectName(d))
		}
		c, _ := mustRender(t, RenderOptions{Seed: 8}, 3, d)
		if bytes.Equal(a.Pix, c.Pix) {
			t.Errorf("%s: seeds 7 and 8 render the same pixels", defectName(d))
		}
		if a.Width != 640 || a.Height != 480 || a.Channels != 3 || len(a.Pix) != 640*480*3 || a.Seq != 3 {
			t.Errorf("%s: frame %dx%dx%d with %d bytes, seq %d; want 640x480x3, seq 3",
				defectName(d), a.Width, a.Height, a.Channels, len(a.Pix), a.Seq)
		}
	}
}

// TestDefectsStandOut checks, for every kind on several parts, that the defect changes the
// part only inside its box, much more than another good part differs there, and that it stays
// visible after a 4x downscale.
func TestDefectsStandOut(t *testing.T) {
	o := RenderOptions{Seed: 42}
	const parts = 6
	goods := make([]camera.Frame, parts+2)
	for i := 1; i < len(goods); i++ {
		goods[i], _ = mustRender(t, o, i, None)
	}
	whole := image.Rect(0, 0, 640, 480)
	// Good parts differ a little: pose, brushing, sheen, lighting and sensor noise.
	jitter := mad(goods[1], goods[2], whole)
	if jitter < 1 || jitter > 8 {
		t.Errorf("good parts 1 and 2 differ by %.2f on average, want a little (1..8)", jitter)
	}
	for _, d := range AllDefects() {
		for i := 1; i <= parts; i++ {
			f, l := mustRender(t, o, i, d)
			good := goods[i]
			box := l.Box
			if l.Defect != d || l.Seq != i || box.Empty() || !box.In(whole) {
				t.Fatalf("%s part %d: label %+v", d, i, l)
			}
			if box.Dx() < 8 || box.Dy() < 8 || box.Dx()*box.Dy() > 200*200 {
				t.Errorf("%s part %d: box %v, want between 8x8 and 200x200 px", d, i, box)
			}
			// Outside the box the defective part is the good part, pixel for pixel.
			changed := 0
			for y := range 480 {
				for x := range 640 {
					p := (y*640 + x) * 3
					if f.Pix[p] != good.Pix[p] || f.Pix[p+1] != good.Pix[p+1] || f.Pix[p+2] != good.Pix[p+2] {
						if !image.Pt(x, y).In(box) {
							t.Fatalf("%s part %d: pixel (%d,%d) outside box %v changed", d, i, x, y, box)
						}
						changed++
					}
				}
			}
			// Inside the box, the defect changes the part much more than two good parts differ
			// there. Where the defect replaces a feature (missing_hole) that moves with the
			// pose, compare with the variation over the whole frame instead.
			signal := mad(f, good, box)
			variation := mad(good, goods[i+1], box)
			if d == MissingHole {
				variation = jitter
			}
			if signal < 2*variation {
				t.Errorf("%s part %d: in box %v the defect changes pixels by %.1f on average, good parts differ by %.1f; want >= 2x",
					d, i, box, signal, variation)
			}
			small := image.Rect(box.Min.X/4, box.Min.Y/4, (box.Max.X+3)/4, (box.Max.Y+3)/4)
			if m := maxDiff(down4(f), down4(good), small); m < 50 {
				t.Errorf("%s part %d: after a 4x downscale the defect changes a pixel by at most %d, want >= 50", d, i, m)
			}
			if testing.Verbose() {
				t.Logf("%s part %d: box %v, %d px changed, mad in box %.1f, good-good %.1f in box, %.2f in frame",
					d, i, box, changed, signal, mad(good, goods[i+1], box), jitter)
			}
		}
	}
}

func TestRenderScaled(t *testing.T) {
	for _, sz := range []image.Point{{320, 240}, {1280, 720}} {
		f, l := mustRender(t, RenderOptions{Seed: 1, Width: sz.X, Height: sz.Y}, 5, Crack)
		if f.Width != sz.X || f.Height != sz.Y || len(f.Pix) != sz.X*sz.Y*3 {
			t.Errorf("frame %dx%d with %d bytes, want %v", f.Width, f.Height, len(f.Pix), sz)
		}
		if l.Box.Empty() || !l.Box.In(image.Rectangle{Max: sz}) {
			t.Errorf("%v: box %v", sz, l.Box)
		}
	}
}

// files lists the regular files under dir, slash-separated and relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// checkLabels checks labels.csv against the summary and the files in the folder.
func checkLabels(t *testing.T, dir string, sum Summary, extra ...string) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "labels.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ls, err := ReadLabels(f)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ls, sum.Labels) {
		t.Fatalf("labels.csv has %v, summary %v", ls, sum.Labels)
	}
	want := append([]string{"labels.csv"}, extra...)
	for _, l := range ls {
		want = append(want, l.File)
		if l.Good() != l.Box.Empty() {
			t.Errorf("%s: %s with box %v", l.File, defectName(l.Defect), l.Box)
		}
	}
	slices.Sort(want)
	if got := files(t, dir); !slices.Equal(got, want) {
		t.Errorf("files\n%v\nwant\n%v", got, want)
	}
	// Spot check the first image: a PNG of the right size with the rendered pixels.
	b, err := os.ReadFile(filepath.Join(dir, ls[0].File))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds() != image.Rect(0, 0, 640, 480) {
		t.Fatalf("%s: %v, bounds %v", ls[0].File, err, img.Bounds())
	}
}

func TestGenerateClasses(t *testing.T) {
	dir := t.TempDir()
	sum, err := Generate(Options{Out: dir, Seed: 5, Good: 3, Defective: 5})
	if err != nil {
		t.Fatal(err)
	}
	checkLabels(t, dir, sum)
	count := map[string]int{}
	for _, l := range sum.Labels {
		count[filepath.Dir(l.File)]++
		if filepath.Dir(l.File) != classDir(l.Defect) {
			t.Errorf("%s holds a %s part", l.File, defectName(l.Defect))
		}
	}
	if want := map[string]int{"good": 3, "scratch": 2, "missing_hole": 1, "spot": 1, "crack": 1}; !reflect.DeepEqual(count, want) {
		t.Errorf("parts per folder %v, want %v", count, want)
	}
	if sum.Video != "" {
		t.Errorf("video %q without Video", sum.Video)
	}

	// Same seed, same bytes; another seed, other images.
	again := t.TempDir()
	if _, err := Generate(Options{Out: again, Seed: 5, Good: 3, Defective: 5}); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := Generate(Options{Out: other, Seed: 6, Good: 3, Defective: 5}); err != nil {
		t.Fatal(err)
	}
	for _, name := range files(t, dir) {
		a, _ := os.ReadFile(filepath.Join(dir, name))
		b, _ := os.ReadFile(filepath.Join(again, name))
		c, _ := os.ReadFile(filepath.Join(other, name))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs with seed 5", name)
		}
		if name != "labels.csv" && bytes.Equal(a, c) {
			t.Errorf("%s is the same with seeds 5 and 6", name)
		}
	}
}

func TestGenerateLineVideo(t *testing.T) {
	dir := t.TempDir()
	sum, err := Generate(Options{Out: dir, Seed: 9, Good: 4, Defective: 3, Layout: LayoutLine, Video: true, Defects: []Defect{Spot, Crack}})
	if err != nil {
		t.Fatal(err)
	}
	checkLabels(t, dir, sum, "line.avi")
	for i, l := range sum.Labels {
		if want := fmt.Sprintf("line/%05d.png", i+1); l.File != want {
			t.Errorf("part %d in %s, want %s", i+1, l.File, want)
		}
		if l.Defect != None && l.Defect != Spot && l.Defect != Crack {
			t.Errorf("part %d has %s, not one of the kinds asked for", i+1, l.Defect)
		}
	}
	if sum.Video != filepath.Join(dir, "line.avi") || sum.VideoFrames != 7 {
		t.Errorf("video %q with %d frames, want line.avi with 7", sum.Video, sum.VideoFrames)
	}

	// Read the video back independently of Generate's own check.
	vc, err := gocv.VideoCaptureFile(sum.Video)
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	m := gocv.NewMat()
	defer m.Close()
	n := 0
	for vc.Read(&m) && !m.Empty() {
		n++
		if m.Cols() != 640 || m.Rows() != 480 || m.Channels() != 3 {
			t.Fatalf("video frame %d is %dx%dx%d, want 640x480x3", n, m.Cols(), m.Rows(), m.Channels())
		}
		if n == 1 {
			// MJPG is lossy; the frame must still be close to the PNG.
			f, _ := mustRender(t, RenderOptions{Seed: 9}, 1, sum.Labels[0].Defect)
			got := camera.Frame{Width: 640, Height: 480, Channels: 3, Pix: m.ToBytes()}
			if d := mad(f, got, image.Rect(0, 0, 640, 480)); d > 4 {
				t.Errorf("first video frame differs from part 1 by %.1f on average, want <= 4", d)
			}
		}
	}
	if n != 7 {
		t.Errorf("video has %d frames, want 7", n)
	}
}

func TestGenerateRerun(t *testing.T) {
	dir := t.TempDir()
	if _, err := Generate(Options{Out: dir, Seed: 1, Good: 4, Defective: 4, Layout: LayoutLine, Video: true}); err != nil {
		t.Fatal(err)
	}
	// Things a previous, interrupted run or a user may have left.
	mustWrite(t, filepath.Join(dir, "notes.txt"), "keep me")
	mustWrite(t, filepath.Join(dir, "line", ".synth-123.tmp"), "half a png")
	mustWrite(t, filepath.Join(dir, "line", "99999.png"), "old part")

	sum, err := Generate(Options{Out: dir, Seed: 1, Good: 2, Defective: 1, Layout: LayoutLine})
	if err != nil {
		t.Fatal(err)
	}
	checkLabels(t, dir, sum, "notes.txt")

	sum, err = Generate(Options{Out: dir, Seed: 1, Good: 2, Defective: 2})
	if err != nil {
		t.Fatal(err)
	}
	checkLabels(t, dir, sum, "notes.txt")
	if _, err := os.Stat(filepath.Join(dir, "line")); !os.IsNotExist(err) {
		t.Errorf("emptied line folder still there: %v", err)
	}
}

func mustWrite(t *testing.T, name, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
