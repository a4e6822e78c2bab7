//go:build cgo

package camera

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/camera/cameratest"
)

const installHint = cameratest.InstallHint

func freePort(t *testing.T) int { return cameratest.FreePort(t) }

func testLogger(t *testing.T) zerolog.Logger { return zerolog.New(zerolog.NewTestWriter(t)) }

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func readCtx(t *testing.T, c Source, within time.Duration) (Frame, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	f, err := c.Read(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read blocked longer than %v", within)
	}
	return f, err
}

// The stream freezes (SIGSTOP: the TCP connection stays open, OpenCV's read blocks), then
// dies (SIGKILL) and comes back: the camera reports the stall within its read deadline,
// triggers in the gap get a FrameError wrapping ErrStalled, and the camera reconnects.
func TestRTSPStallReconnectTriggered(t *testing.T) {
	srv := cameratest.StartRTSP(t, 0)
	const readTimeout = time.Second
	cam, err := Open(Config{ID: "top", Kind: KindURL, URL: srv.URL(), Mode: ModeTriggered, ReadTimeout: readTimeout,
		OpenTimeout: 5 * time.Second, ReconnectMin: 100 * time.Millisecond, ReconnectMax: 500 * time.Millisecond}, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("Open %s: %v", srv.URL(), err)
	}
	defer cam.Close()
	if got := cam.State(); got != StateConnected {
		t.Fatalf("state after Open: got %s, want connected", got)
	}

	trigger := func(serial string) time.Time {
		t.Helper()
		at := time.Now()
		if err := cam.Trigger(Trigger{Serial: serial, Time: at}); err != nil {
			t.Fatalf("Trigger %s: %v", serial, err)
		}
		return at
	}
	for i := range 3 {
		serial := fmt.Sprintf("before-%d", i)
		at := trigger(serial)
		f, err := readCtx(t, cam, 3*time.Second)
		if err != nil {
			t.Fatalf("Read for %s: %v", serial, err)
		}
		if f.Serial != serial || !f.Time.After(at) || f.Width != 320 || f.Height != 240 || f.Channels != 3 || f.CameraID != "top" {
			t.Fatalf("frame for %s: got serial=%s after=%v %dx%dx%d cam=%s, want %s, captured after the trigger, 320x240x3, top",
				serial, f.Serial, f.Time.After(at), f.Width, f.Height, f.Channels, f.CameraID, serial)
		}
		time.Sleep(50 * time.Millisecond)
	}

	srv.Freeze()
	frozen := time.Now()
	took := waitFor(t, readTimeout+time.Second, "state stalled after the stream froze", func() bool { return cam.State() != StateConnected })
	t.Logf("stall reported %v after the stream froze (read_timeout %v)", took, readTimeout)

	for i := range 2 {
		serial := fmt.Sprintf("gap-%d", i)
		trigger(serial)
		start := time.Now()
		_, err := readCtx(t, cam, readTimeout+time.Second)
		var fe *FrameError
		if !errors.As(err, &fe) || !errors.Is(err, ErrStalled) || fe.Serial != serial {
			t.Fatalf("trigger %s in the gap: got %v, want a FrameError for %s wrapping ErrStalled", serial, err, serial)
		}
		if d := time.Since(start); d > readTimeout+200*time.Millisecond {
			t.Fatalf("trigger %s in the gap: answered after %v, want within read_timeout %v", serial, d, readTimeout)
		}
	}

	srv.Restart()
	back := waitFor(t, 20*time.Second, "reconnect after the server came back", func() bool { return cam.State() == StateConnected })
	t.Logf("reconnected %v after the server restarted (outage %v)", back, time.Since(frozen))

	at := trigger("after")
	f, err := readCtx(t, cam, 3*time.Second)
	if err != nil || f.Serial != "after" || !f.Time.After(at) {
		t.Fatalf("trigger after reconnect: got serial=%q err=%v, want a frame for \"after\"", f.Serial, err)
	}
	st := cam.Stats()
	if st.Stalls < 1 || st.Reconnects < 1 || st.Abandoned < 1 || st.TriggerMisses != 2 || st.Triggers != 6 {
		t.Fatalf("stats: got %+v, want stalls>=1 reconnects>=1 abandoned>=1 trigger_misses=2 triggers=6", st)
	}
	// The read abandoned in OpenCV returns once the dead server's socket is closed.
	waitFor(t, 35*time.Second, "abandoned capture returned", func() bool { return cam.Stats().Stuck == 0 })
}

// An HTTP MJPEG stream served by Debian's ffmpeg, read free-run: the newest frame wins and
// the frames nobody read are counted as dropped; when the server dies Read reports it.
func TestHTTPMJPEGFreeRun(t *testing.T) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatalf("ffmpeg is missing: %s", installHint)
	}
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/cam.mjpg", port)
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", url)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	cfg := Config{ID: "side", Kind: KindURL, URL: url, ReadTimeout: time.Second, OpenTimeout: 5 * time.Second, ReconnectMin: time.Second}
	var cam *Camera
	waitFor(t, 10*time.Second, "ffmpeg serving "+url, func() bool {
		cam, err = Open(cfg, WithLogger(testLogger(t)))
		return err == nil
	})
	defer cam.Close()
	var last uint64
	for i := range 10 {
		f, err := readCtx(t, cam, 2*time.Second)
		if err != nil {
			t.Fatalf("Read %d: %v", i, err)
		}
		if f.Seq <= last || f.Width != 320 || f.Height != 240 || f.Channels != 3 {
			t.Fatalf("frame %d: got seq=%d (last %d) %dx%dx%d, want increasing seq, 320x240x3", i, f.Seq, last, f.Width, f.Height, f.Channels)
		}
		last = f.Seq
		cam.Recycle(f)
	}
	time.Sleep(400 * time.Millisecond) // ~10 frames at 25 fps arrive unread
	f, err := readCtx(t, cam, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(f.Time); age > 150*time.Millisecond {
		t.Fatalf("free_run: got a frame %v old, want the newest (< 150ms)", age)
	}
	if d := cam.Stats().Dropped; d < 3 {
		t.Fatalf("free_run: got %d dropped frames after 400ms unread, want >= 3", d)
	}

	cmd.Process.Kill()
	cmd.Wait()
	start := time.Now()
	for {
		_, err := readCtx(t, cam, 3*time.Second)
		if errors.Is(err, ErrStalled) {
			break
		}
		if err != nil {
			t.Fatalf("Read after the server died: got %v, want an error wrapping ErrStalled", err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Read reported the dead stream after %v, want within read_timeout+1s", d)
	}
	if s := cam.State(); s != StateReconnecting && s != StateStalled {
		t.Fatalf("state after the server died: got %s, want reconnecting or stalled", s)
	}
}

// OpenCV's GStreamer backend runs the pipeline; videotestsrc stands in for aravissrc and
// nvarguscamerasrc, whose pipelines camera/README.md gives.
func TestGStreamerPipeline(t *testing.T) {
	cam, err := Open(Config{ID: "gige", Kind: KindGStreamer,
		Pipeline: "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=2 sync=false"},
		WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("Open: %v (does OpenCV have its GStreamer backend and gstreamer1.0-plugins-base? %s)", err, installHint)
	}
	defer cam.Close()
	for i := range 5 {
		f, err := readCtx(t, cam, 2*time.Second)
		if err != nil {
			t.Fatalf("Read %d: %v", i, err)
		}
		if f.Width != 160 || f.Height != 120 || f.Channels != 3 || len(f.Pix) != 160*120*3 {
			t.Fatalf("frame %d: got %dx%dx%d len %d, want 160x120x3", i, f.Width, f.Height, f.Channels, len(f.Pix))
		}
	}

	_, err = Open(Config{ID: "csi", Kind: KindGStreamer, Pipeline: "videotestsrc ! nosuchelement ! appsink"})
	if err == nil || !strings.Contains(err.Error(), "GStreamer backend could not start it") {
		t.Fatalf("Open with a missing element: got %v, want an error saying GStreamer could not start it", err)
	}
}

// OpenCV 4.6's GStreamer backend never returns from opening a pipeline whose source element
// does not exist: Open gives up at open_timeout and leaves the call behind.
func TestOpenThatNeverReturns(t *testing.T) {
	const openTimeout = 500 * time.Millisecond
	start := time.Now()
	_, err := Open(Config{ID: "csi", Kind: KindGStreamer, Pipeline: "nosuchelementsrc ! videoconvert ! appsink", OpenTimeout: openTimeout})
	took := time.Since(start)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "open gave no answer within 500ms") {
		t.Fatalf("Open: got %v, want an error wrapping ErrStalled saying the open gave no answer", err)
	}
	if took > openTimeout+300*time.Millisecond {
		t.Fatalf("Open returned after %v, want about open_timeout %v", took, openTimeout)
	}
}

func TestMissingDevice(t *testing.T) {
	for _, dev := range []string{"97", "/dev/video98"} {
		_, err := Open(Config{ID: "usb", Kind: KindDevice, Device: dev})
		want := "V4L2 device " + devicePath(dev) + ": stat " + devicePath(dev) + ": no such file or directory (is the camera connected?"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Open device %s: got %v, want an error containing %q", dev, err, want)
		}
	}
	_, err := Open(Config{ID: "cam", Kind: KindURL, URL: fmt.Sprintf("rtsp://127.0.0.1:%d/cam", freePort(t)), OpenTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "could not open it (server down") {
		t.Fatalf("Open a stream nobody serves: got %v, want a clear error", err)
	}
}

// A network stream's frames are dated by their timestamps: frames FFmpeg held while the
// reader was busy are handed over late but keep the times they were sent at (so a trigger
// after them is not answered with them), and no frame is dated after its delivery.
func TestStreamFramesKeepTheirSendTime(t *testing.T) {
	srv := cameratest.StartRTSP(t, 0)
	cp, err := openURL(Config{ID: "top", Kind: KindURL, URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.close()
	p := newPool(8)
	read := func() (Frame, time.Time) {
		t.Helper()
		f, err := cp.grab(p)
		if err != nil {
			t.Fatal(err)
		}
		return f, time.Now()
	}
	var last time.Time
	for i := range 20 {
		f, at := read()
		if f.Time.After(at) || f.Time.Before(last) {
			t.Fatalf("frame %d dated %v, delivered %v, after a frame dated %v: want dates in order, none after its delivery", i, f.Time, at, last)
		}
		last = f.Time
	}
	const pause = 600 * time.Millisecond
	time.Sleep(pause) // the stream goes on; FFmpeg holds its frames
	f, at := read()
	if held := at.Sub(f.Time); held < pause/2 {
		t.Errorf("the first frame after a %v pause is dated %v before its delivery: want it dated when it was sent, at least %v before", pause, held, pause/2)
	}
	if f.Time.Before(last) {
		t.Errorf("the first frame after the pause is dated before the frame before it")
	}
}
