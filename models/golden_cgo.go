//go:build cgo

package models

import (
	"context"
	"fmt"
	"math"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"gocv.io/x/gocv"
)

// DefaultGoldenTolerance is the golden set tolerance when the manifest gives none: the
// largest allowed |got - want| / max(1, |want|).
const DefaultGoldenTolerance = 1e-3

// replayGolden runs every golden image of b and compares its score (and class) with the
// manifest's. Errors wrap ErrGoldenMismatch or ErrBadBundle (an undecodable image).
func (r *Runtime) replayGolden(ctx context.Context, b *bundle.Bundle) error {
	g := b.Manifest.Golden
	if g == nil {
		return nil
	}
	tol := g.Tolerance
	if tol == 0 {
		tol = DefaultGoldenTolerance
	}
	for _, c := range g.Cases {
		f, err := decodeFrame(b.Files[c.File])
		if err != nil {
			return fmt.Errorf("%w: golden %s: %v", bundle.ErrBadBundle, c.File, err)
		}
		f.Origin = c.File
		res, err := r.Infer(ctx, f)
		if err != nil {
			return fmt.Errorf("golden %s: %w", c.File, err)
		}
		diff := math.Abs(res.Score-c.Score) / max(1, math.Abs(c.Score))
		if !(diff <= tol) {
			return fmt.Errorf("%w: %s: score %.6g, want %.6g (relative difference %.3g > tolerance %.3g) on %s",
				ErrGoldenMismatch, c.File, res.Score, c.Score, diff, tol, res.Provider)
		}
		if c.Class != "" && res.Class != c.Class {
			return fmt.Errorf("%w: %s: class %q, want %q", ErrGoldenMismatch, c.File, res.Class, c.Class)
		}
	}
	return nil
}

// DecodeImage decodes a PNG, JPEG or BMP file's bytes into a gray or BGR Frame, as the
// golden set replay reads its images.
func DecodeImage(data []byte) (camera.Frame, error) { return decodeFrame(data) }

// decodeFrame decodes a PNG/JPEG/BMP image into a gray or BGR Frame.
func decodeFrame(data []byte) (camera.Frame, error) {
	if len(data) == 0 {
		return camera.Frame{}, fmt.Errorf("empty image")
	}
	m, err := gocv.IMDecode(data, gocv.IMReadUnchanged)
	if err != nil {
		return camera.Frame{}, err
	}
	defer m.Close()
	if m.Empty() {
		return camera.Frame{}, fmt.Errorf("not an image OpenCV can decode")
	}
	switch m.Type() {
	case gocv.MatTypeCV8UC1, gocv.MatTypeCV8UC3:
	case gocv.MatTypeCV8UC4:
		gocv.CvtColor(m, &m, gocv.ColorBGRAToBGR)
	default:
		return camera.Frame{}, fmt.Errorf("image of OpenCV type %v: want 8-bit gray, BGR or BGRA", m.Type())
	}
	pix, err := m.DataPtrUint8()
	if err != nil {
		return camera.Frame{}, err
	}
	return camera.Frame{Width: m.Cols(), Height: m.Rows(), Channels: m.Channels(), Pix: append([]byte(nil), pix...)}, nil
}
