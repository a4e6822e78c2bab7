//go:build cgo && matprofile

package camera

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"gocv.io/x/gocv"
)

// Run with -tags matprofile: every Mat the camera makes is closed, in every mode, over
// 10,000 frames, and none is left after Close.
func TestMatProfile10000Frames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loop.avi")
	writeVideo(t, path, 50, 160, 120)
	for _, mode := range []string{ModeStream, ModeFreeRun, ModeTriggered} {
		t.Run(mode, func(t *testing.T) {
			base := gocv.MatProfile.Count()
			cam, err := Open(Config{ID: "leak", Kind: KindFile, Path: path, Loop: true, Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			peak := 0
			for i := 0; cam.Stats().Frames < 10000; i++ {
				if mode == ModeTriggered {
					if err := cam.Trigger(Trigger{}); err != nil {
						t.Fatal(err)
					}
				}
				f, err := cam.Read(context.Background())
				if err != nil {
					t.Fatalf("Read %d: %v", i, err)
				}
				cam.Recycle(f)
				peak = max(peak, gocv.MatProfile.Count()-base)
			}
			cam.Close()
			deadline := time.Now().Add(2 * time.Second)
			for gocv.MatProfile.Count() != base && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := gocv.MatProfile.Count() - base; n != 0 || peak > 4 {
				var b bytes.Buffer
				gocv.MatProfile.WriteTo(&b, 1)
				t.Fatalf("%d Mats left after Close (peak %d while reading, want <= 4):\n%s", n, peak, b.String())
			}
			t.Logf("%s: %d frames, at most %d Mats open while reading, 0 after Close", mode, cam.Stats().Frames, peak)
		})
	}
}
