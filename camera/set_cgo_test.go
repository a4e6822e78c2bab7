//go:build cgo

package camera

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// A Set of two stream cameras returns every frame of both files, each camera's in order,
// then io.EOF: the read-ahead hand-off and the shared wake-up lose no frame and no wake-up.
func TestSetStreamEveryFrame(t *testing.T) {
	const n = 40
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.avi"), filepath.Join(dir, "b.avi")
	writeVideo(t, a, n, 160, 120)
	writeVideo(t, b, n, 160, 120)
	set, err := OpenSet([]Config{{ID: "a", Kind: KindFile, Path: a}, {ID: "b", Kind: KindFile, Path: b}})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	last := map[string]uint64{}
	for i, f := range readAll(t, readerFunc(func() (Frame, error) { return set.Read(ctx) }), 3*n) {
		if f.Seq != last[f.CameraID]+1 {
			t.Fatalf("frame %d: camera %s seq %d, want %d", i, f.CameraID, f.Seq, last[f.CameraID]+1)
		}
		last[f.CameraID] = f.Seq
		if i%3 == 0 { // a slow reader now and then, so the capture waits for the slot
			time.Sleep(5 * time.Millisecond)
		}
		set.Recycle(f)
	}
	if last["a"] != n || last["b"] != n {
		t.Fatalf("got %d frames of a and %d of b, want %d of each", last["a"], last["b"], n)
	}
}

type readerFunc func() (Frame, error)

func (r readerFunc) Read(context.Context) (Frame, error) { return r() }
func (r readerFunc) Close() error                        { return nil }
