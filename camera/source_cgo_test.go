//go:build cgo

package camera

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"
)

// writeTestImages writes n 64x48 images whose top-left pixel encodes their index.
func writeTestImages(t *testing.T, dir string, n int) {
	t.Helper()
	for i := range n {
		m := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(float64(10*i), 50, 100, 0), 48, 64, gocv.MatTypeCV8UC3)
		gocv.Rectangle(&m, image.Rect(10, 10, 30, 30), color.RGBA{255, 255, 255, 0}, -1)
		if !gocv.IMWrite(filepath.Join(dir, "img-"+string(rune('a'+i))+".png"), m) {
			t.Fatalf("write test image %d", i)
		}
		m.Close()
	}
}

func readAll(t *testing.T, s Source, max int) []Frame {
	t.Helper()
	var frames []Frame
	for len(frames) < max {
		f, err := s.Read(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		frames = append(frames, f)
	}
	return frames
}

func TestFolderSource(t *testing.T) {
	dir := t.TempDir()
	writeTestImages(t, dir, 3)
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		loop bool
		max  int
		want int
	}{
		{"once", false, 10, 3},
		{"loop", true, 7, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(Config{ID: "cam1", Kind: KindFolder, Path: dir, Loop: tt.loop})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			frames := readAll(t, s, tt.max)
			if len(frames) != tt.want {
				t.Fatalf("got %d frames, want %d", len(frames), tt.want)
			}
			for i, f := range frames {
				if f.Seq != uint64(i+1) || f.CameraID != "cam1" || f.Width != 64 || f.Height != 48 || f.Channels != 3 || len(f.Pix) != 64*48*3 {
					t.Fatalf("frame %d: got seq=%d cam=%s %dx%dx%d len=%d", i, f.Seq, f.CameraID, f.Width, f.Height, f.Channels, len(f.Pix))
				}
				wantB := byte(10 * (i % 3))
				if f.Pix[0] != wantB {
					t.Fatalf("frame %d: got blue %d, want %d (files out of order?)", i, f.Pix[0], wantB)
				}
			}
		})
	}
}

func TestFolderSourceUndecodableFile(t *testing.T) {
	dir := t.TempDir()
	writeTestImages(t, dir, 2)
	if err := os.WriteFile(filepath.Join(dir, "img-ab.png"), []byte("truncated"), 0o644); err != nil {
		t.Fatal(err)
	}
	var s Source
	s, err := Open(Config{ID: "cam1", Kind: KindFolder, Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var good, bad int
	for {
		_, err := s.Read(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		var fe *FrameError
		if errors.As(err, &fe) {
			bad++
			if !strings.Contains(err.Error(), "img-ab.png") {
				t.Errorf("error %q does not name the file", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		good++
	}
	if good != 2 || bad != 1 {
		t.Fatalf("got good=%d bad=%d, want 2 and 1", good, bad)
	}
	if st := s.(*Camera).Stats(); st.Corrupt != 1 || st.Frames != 2 {
		t.Fatalf("stats: got corrupt=%d frames=%d, want 1 and 2", st.Corrupt, st.Frames)
	}
	if got := s.(*Camera).State(); got != StateEnded {
		t.Fatalf("state at the end: got %s, want ended", got)
	}
}

func TestVideoFileSource(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "line.avi")
	w, err := gocv.VideoWriterFile(path, "MJPG", 10, 64, 48, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		m := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(float64(40*i), 40, 40, 0), 48, 64, gocv.MatTypeCV8UC3)
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	w.Close()

	s, err := Open(Config{ID: "cam0", Kind: KindFile, Path: path})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	frames := readAll(t, s, 100)
	s.Close()
	if len(frames) != 5 {
		t.Fatalf("got %d frames, want 5", len(frames))
	}
	if f := frames[4]; f.Width != 64 || f.Height != 48 || !strings.HasSuffix(f.Origin, "#5") {
		t.Fatalf("last frame: got %dx%d origin %s, want 64x48 ...#5", f.Width, f.Height, f.Origin)
	}

	s, err = Open(Config{ID: "cam0", Kind: KindFile, Path: path, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := len(readAll(t, s, 12)); got != 12 {
		t.Fatalf("looping: got %d frames, want 12", got)
	}
	s.Close()
	if _, err := s.Read(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: got %v, want ErrClosed", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notVideo := filepath.Join(dir, "clip.avi")
	if err := os.WriteFile(notVideo, []byte("this is text, not a video"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown kind", Config{ID: "c", Kind: "usb", Path: dir}, `camera.kind: "usb" is not a source kind`},
		{"no path", Config{ID: "c", Kind: KindFolder}, "camera.path: must name the image folder"},
		{"no id", Config{Kind: KindFolder, Path: dir}, "camera.id: must not be empty"},
		{"missing folder", Config{ID: "c", Kind: KindFolder, Path: filepath.Join(dir, "nope")}, "no such file or directory"},
		{"empty folder", Config{ID: "c", Kind: KindFolder, Path: t.TempDir()}, "holds no images"},
		{"missing video", Config{ID: "c", Kind: KindFile, Path: filepath.Join(dir, "nope.avi")}, "no such file or directory"},
		{"not a video", Config{ID: "c", Kind: KindFile, Path: notVideo}, "not a video OpenCV can decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Open: got no error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestEncode(t *testing.T) {
	f := Frame{Width: 32, Height: 16, Channels: 3, Pix: make([]byte, 32*16*3), Origin: "t"}
	for i := range f.Pix {
		f.Pix[i] = byte(i % 251)
	}
	for _, format := range []string{"png", "jpg"} {
		data, err := Encode(f, format, 90)
		if err != nil {
			t.Fatalf("Encode %s: %v", format, err)
		}
		m, err := gocv.IMDecode(data, gocv.IMReadColor)
		if err != nil || m.Cols() != 32 || m.Rows() != 16 {
			t.Fatalf("%s: decoded %dx%d err=%v, want 32x16", format, m.Cols(), m.Rows(), err)
		}
		if format == "png" && string(m.ToBytes()) != string(f.Pix) {
			t.Fatalf("png roundtrip changed pixels")
		}
		m.Close()
	}
	if _, err := Encode(f, "gif", 0); err == nil || !strings.Contains(err.Error(), `"gif"`) {
		t.Fatalf("Encode gif: got %v, want an error naming the format", err)
	}
	bad := f
	bad.Pix = bad.Pix[:10]
	if _, err := Encode(bad, "png", 0); err == nil {
		t.Fatalf("Encode with short Pix: got no error")
	}
}

// A triggered camera answers with the first frame captured after the trigger, or with a
// TriggerWindow at once with a recent frame captured before it.
func TestTriggerModes(t *testing.T) {
	const pipeline = "videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=30/1 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=2 sync=false"
	for _, window := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("window=%v", window), func(t *testing.T) {
			cam, err := Open(Config{ID: "t", Kind: KindGStreamer, Pipeline: pipeline, Mode: ModeTriggered, TriggerWindow: window})
			if err != nil {
				t.Fatal(err)
			}
			defer cam.Close()
			time.Sleep(200 * time.Millisecond) // the ring fills
			if _, err := cam.Read(ctxTimeout(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Read without a trigger: got %v, want it to wait", err)
			}
			for i := range 3 {
				at := time.Now()
				if err := cam.Trigger(Trigger{Serial: fmt.Sprint("p", i)}); err != nil {
					t.Fatal(err)
				}
				f, err := cam.Read(ctxTimeout(t, 2*time.Second))
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				after := f.Time.After(at)
				if f.Serial != fmt.Sprint("p", i) || after != (window == 0) || at.Sub(f.Time) > window {
					t.Fatalf("trigger %d: got serial %s, captured %v relative to the trigger; want p%d and %s", i, f.Serial, f.Time.Sub(at), i,
						map[bool]string{true: "after it", false: "within the window before it"}[window == 0])
				}
			}
		})
	}
	dir := t.TempDir()
	writeTestImages(t, dir, 1)
	folder, err := Open(Config{ID: "f", Kind: KindFolder, Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer folder.Close()
	if err := folder.Trigger(Trigger{}); !errors.Is(err, ErrNotTriggered) {
		t.Fatalf("Trigger on a stream camera: got %v, want ErrNotTriggered", err)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
