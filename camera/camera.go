// Package camera turns cameras, video files and image folders into Takt Frames.
//
// # Basics
//
// A Source delivers frames one at a time with Read. Sources are opened from a Config with
// Open; which kind is chosen by Config.Kind. Every frame is copied out of OpenCV into a
// Frame that owns its pixel bytes, so no gocv.Mat crosses this package's boundary.
//
// # Caveats
//
// OpenCV calls are cgo; the package needs OpenCV 4 (gocv v0.31.0). Without cgo, Open returns
// ErrNoCgo.
package camera

import (
	"context"
	"errors"
	"time"
)

// Frame is one captured image. Pix holds Height rows of Width*Channels bytes, BGR order for
// three channels. The Frame owns Pix: a Source never reuses a buffer it has handed out.
type Frame struct {
	CameraID string
	Seq      uint64    // 1-based capture sequence per source
	Time     time.Time // capture time
	Width    int
	Height   int
	Channels int    // 1 (gray) or 3 (BGR)
	Pix      []byte // len == Width*Height*Channels
	Origin   string // file name, frame index in a video or device, for replay and debugging
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
	// ErrNoCgo is returned by Open in a build without cgo, where OpenCV is not available.
	ErrNoCgo = errors.New("camera: built without cgo, OpenCV sources are not available")
)

var errUndecodable = errors.New("not an image OpenCV can decode")

// FrameError is a failure to produce one frame that leaves the source usable: the next Read
// may succeed (an undecodable file in a folder, one corrupt video frame). The part it
// belonged to gets a NO_DECISION verdict.
type FrameError struct {
	CameraID string
	Seq      uint64
	Origin   string
	Err      error
}

func (e *FrameError) Error() string {
	return "camera " + e.CameraID + ": frame " + e.Origin + ": " + e.Err.Error()
}

func (e *FrameError) Unwrap() error { return e.Err }
