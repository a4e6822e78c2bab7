// Package camera turns cameras, video streams, video files and image folders into Takt Frames.
//
// # Basics
//
// A Source delivers frames one at a time with Read. A Camera is opened from a Config with
// Open; Config.Kind chooses the source: a V4L2 device, an RTSP/HTTP URL (FFmpeg), a GStreamer
// pipeline, a video file or an image folder. OpenSet opens the several cameras of a station
// and reads them as one Source. Every frame is copied out of OpenCV into a Frame that owns
// its pixel bytes, so no gocv.Mat crosses this package's boundary.
//
// Each Camera runs one capture goroutine that owns the OpenCV objects. Config.Mode says how
// frames reach Read:
//
//   - stream: every frame in order, read ahead by one (replay of files and folders);
//   - free_run: the capture runs at the camera's pace, Read returns the newest frame
//     (latest wins) and counts the ones it skipped as dropped;
//   - triggered: Read returns, for each Trigger, the first frame captured after it (or a
//     frame captured within Config.TriggerWindow before it).
//
// # Never hang
//
// Every OpenCV open and read has a deadline (Config.OpenTimeout, Config.ReadTimeout). A call
// that overruns it marks the camera stalled; the capture is abandoned, not waited on (an
// OpenCV call cannot be interrupted, opencv#22677), counted in Stats.Abandoned and
// Stats.Stuck, and closed by its goroutine if the call ever returns. A new capture is
// opened with exponential backoff. Read never blocks on OpenCV: it reports ErrStalled, and
// a trigger that cannot get a frame gets a FrameError naming the reason.
//
// # Caveats
//
// OpenCV calls are cgo; the package needs OpenCV 4 (gocv v0.31.0). Without cgo, Open returns
// ErrNoCgo. A capture stuck forever inside OpenCV keeps its thread and memory until the
// process ends; Stats.Stuck shows how many there are.
package camera

import (
	"context"
	"errors"
	"time"
)

// Frame is one captured image. Pix holds Height rows of Width*Channels bytes, BGR order for
// three channels. The Frame owns Pix: a Source never reuses a buffer it has handed out,
// unless the consumer gives it back with Camera.Recycle or Set.Recycle.
type Frame struct {
	CameraID string
	Seq      uint64 // 1-based capture sequence per camera, across reconnects
	// Time is the capture time: when OpenCV handed the frame over; for a network stream
	// (kind url) its timestamp on the host's clock, so a frame handed over late keeps the
	// time it was sent at (see streamClock).
	Time     time.Time
	Width    int
	Height   int
	Channels int    // 1 (gray) or 3 (BGR)
	Pix      []byte // len == Width*Height*Channels
	Origin   string // file name or "video#index" for replay; empty for live sources
	Serial   string // the part serial of the Trigger that asked for this frame, if any
}

// Source delivers frames.
type Source interface {
	// Read blocks until the next frame, ctx is done, or the source fails. It returns io.EOF
	// when a finite source (file, folder without loop) is exhausted.
	Read(ctx context.Context) (Frame, error)
	// Close releases the device or file. Read after Close returns ErrClosed.
	Close() error
}

var (
	// ErrClosed is returned by Read after Close.
	ErrClosed = errors.New("camera: source closed")
	// ErrStalled says no frame can be had now: the source stalled (no frame within its
	// deadline), failed, or is reconnecting. Read returns it (wrapped) once per outage in
	// stream and free_run mode and keeps reconnecting; in triggered mode it is the Err of the
	// FrameError a trigger gets. Find it with errors.Is.
	ErrStalled = errors.New("camera: no frame (stalled or reconnecting)")
	// ErrNotTriggered is returned by Trigger on a camera that is not in triggered mode.
	ErrNotTriggered = errors.New("camera: not in triggered mode")
	// ErrTriggerBusy is returned by Trigger when MaxPendingTriggers triggers wait already.
	ErrTriggerBusy = errors.New("camera: too many triggers waiting for frames")
	// ErrNoCgo is returned by Open in a build without cgo, where OpenCV is not available.
	ErrNoCgo = errors.New("camera: built without cgo, OpenCV sources are not available")
)

var errUndecodable = errors.New("not an image OpenCV can decode")

// FrameError is a failure to produce one frame that leaves the source usable: the next Read
// may succeed (an undecodable file in a folder, one corrupt video frame). The part it
// belonged to gets a NO_DECISION verdict.
//
// In triggered mode a trigger that gets no frame (stalled, reconnecting, no frame within
// ReadTimeout) yields a FrameError with Serial set and Err wrapping ErrStalled.
type FrameError struct {
	CameraID string
	Seq      uint64
	Origin   string
	Serial   string // the trigger's part serial, triggered mode only
	Err      error
}

func (e *FrameError) Error() string {
	what := e.Origin
	if e.Serial != "" {
		what = "for trigger " + e.Serial
	}
	return "camera " + e.CameraID + ": frame " + what + ": " + e.Err.Error()
}

func (e *FrameError) Unwrap() error { return e.Err }
