//go:build cgo

package camera

import (
	"context"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"gocv.io/x/gocv"
)

// writeVideo writes an MJPG AVI of n frames w x h whose frames differ.
func writeVideo(t testing.TB, path string, n, w, h int) {
	t.Helper()
	vw, err := gocv.VideoWriterFile(path, "MJPG", 25, w, h, true)
	if err != nil {
		t.Fatal(err)
	}
	defer vw.Close()
	// A textured scene (blurred noise, like a part's surface) with a moving bright part, so
	// decoding costs what a real camera image costs.
	tex := gocv.NewMatWithSize(h, w, gocv.MatTypeCV8UC3)
	defer tex.Close()
	gocv.RandU(&tex, gocv.NewScalar(0, 0, 0, 0), gocv.NewScalar(255, 255, 255, 0))
	gocv.GaussianBlur(tex, &tex, image.Pt(7, 7), 0, 0, gocv.BorderDefault)
	m := gocv.NewMat()
	defer m.Close()
	for i := range n {
		tex.CopyTo(&m)
		x := (i * 5) % max(1, w-w/4)
		gocv.Rectangle(&m, image.Rect(x, h/4, x+w/4, h/2), color.RGBA{230, 230, 230, 0}, -1)
		if err := vw.Write(m); err != nil {
			t.Fatal(err)
		}
	}
}

// rssBytes is the process's resident set size from /proc/self/statm.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(data))
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// 10,000 frames through a looping video file: the process's memory stays flat, so no Mat
// or pixel buffer leaks per frame (one leaked 160x120 frame a read would be 500 MB).
func TestNoLeak10000Frames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loop.avi")
	writeVideo(t, path, 50, 160, 120)
	cam, err := Open(Config{ID: "leak", Kind: KindFile, Path: path, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	read := func(n int) {
		for i := range n {
			f, err := cam.Read(context.Background())
			if err != nil {
				t.Fatalf("Read %d: %v", i, err)
			}
			if i%2 == 0 { // half go back to the pool, half to the garbage collector
				cam.Recycle(f)
			}
		}
	}
	settle := func() int64 { runtime.GC(); debug.FreeOSMemory(); return rssBytes(t) }
	read(1000)
	before := settle()
	read(9000)
	after := settle()
	t.Logf("RSS after 1,000 frames %d KiB, after 10,000 %d KiB", before>>10, after>>10)
	if grew := after - before; grew > 16<<20 {
		t.Fatalf("RSS grew %d KiB over 9,000 frames, want < 16 MiB", grew>>10)
	}
}
