//go:build cgo

package camera

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"
)

const benchW, benchH, benchFrames = 640, 480, 150

func benchVideo(t testing.TB) string {
	path := filepath.Join(t.TempDir(), "bench.avi")
	writeVideo(t, path, benchFrames, benchW, benchH)
	return path
}

// bareRead is the baseline: a plain gocv loop reading every frame of path into one Mat.
// It returns the wall and CPU time of the read loop (open and close excluded).
func bareRead(t testing.TB, path string) (wall, cpu time.Duration, n int) {
	vc, err := gocv.VideoCaptureFileWithAPI(path, gocv.VideoCaptureFFmpeg)
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	m := gocv.NewMat()
	defer m.Close()
	start, c0 := time.Now(), cpuTime(t)
	for vc.Read(&m) && !m.Empty() {
		n++
	}
	return time.Since(start), cpuTime(t) - c0, n
}

// taktRead reads every frame of path through a Camera, recycling each frame, and returns
// the wall and CPU time of the read loop (open and close excluded).
func taktRead(t testing.TB, path string) (wall, cpu time.Duration, n int) {
	cam, err := Open(Config{ID: "bench", Kind: KindFile, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	start, c0 := time.Now(), cpuTime(t)
	for {
		f, err := cam.Read(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		cam.Recycle(f)
		n++
	}
	return time.Since(start), cpuTime(t) - c0, n
}

// cpuTime is the CPU time this process used so far (user + system, all threads).
func cpuTime(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFiguresCamera prints the camera figures for `make bench`: the CPU the Takt layer
// spends to capture the frames of a file over a bare gocv read loop on the same file in the
// same process (read loops only, best of 9 interleaved rounds; CPU time, because wall time
// on a shared machine swings with other people's load), and heap allocations per frame in
// steady state with frames recycled.
func TestFiguresCamera(t *testing.T) {
	if os.Getenv("TAKT_FIGURES") != "1" {
		t.Skip("figures run with TAKT_FIGURES=1 (make bench)")
	}
	path := benchVideo(t)
	var bare, takt, bareWall, taktWall []time.Duration
	for range 9 {
		d, c, n := bareRead(t, path)
		if n != benchFrames {
			t.Fatalf("bare loop read %d frames, want %d", n, benchFrames)
		}
		bare, bareWall = append(bare, c), append(bareWall, d)
		d, c, n = taktRead(t, path)
		if n != benchFrames {
			t.Fatalf("camera read %d frames, want %d", n, benchFrames)
		}
		takt, taktWall = append(takt, c), append(taktWall, d)
	}
	ratio := float64(slices.Min(takt)) / float64(slices.Min(bare))
	t.Logf("%dx%d MJPG, %d frames, read loops, best of 9: bare gocv cpu %v wall %v; takt cpu %v wall %v",
		benchW, benchH, benchFrames, slices.Min(bare), slices.Min(bareWall), slices.Min(takt), slices.Min(taktWall))
	fmt.Printf("BENCH camera_overhead_ratio=%.3f\n", ratio)

	cam, err := Open(Config{ID: "bench", Kind: KindFile, Path: path, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	read := func(n int) {
		for range n {
			f, err := cam.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			cam.Recycle(f)
		}
	}
	read(200)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 1000
	read(n)
	runtime.ReadMemStats(&after)
	fmt.Printf("BENCH camera_allocs_per_frame=%.2f\n", float64(after.Mallocs-before.Mallocs)/n)
}

func BenchmarkCameraRead(b *testing.B) {
	path := benchVideo(b)
	cam, err := Open(Config{ID: "bench", Kind: KindFile, Path: path, Loop: true})
	if err != nil {
		b.Fatal(err)
	}
	defer cam.Close()
	b.SetBytes(benchW * benchH * 3)
	for b.Loop() {
		f, err := cam.Read(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		cam.Recycle(f)
	}
}

func BenchmarkBareGocvRead(b *testing.B) {
	path := benchVideo(b)
	vc, err := gocv.VideoCaptureFileWithAPI(path, gocv.VideoCaptureFFmpeg)
	if err != nil {
		b.Fatal(err)
	}
	defer vc.Close()
	m := gocv.NewMat()
	defer m.Close()
	b.SetBytes(benchW * benchH * 3)
	for b.Loop() {
		if !vc.Read(&m) || m.Empty() {
			vc.Set(gocv.VideoCapturePosFrames, 0)
			vc.Read(&m)
		}
	}
}
