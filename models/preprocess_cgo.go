//go:build cgo

package models

import (
	"fmt"
	"image"

	"github.com/takt-edge/takt/camera"
	"gocv.io/x/gocv"
)

// Preprocess turns a frame into model input: for a 1-channel input the frame is converted
// to gray (OpenCV BGR2GRAY), resized to in.Width x in.Height with INTER_AREA and scaled to
// float32 byte/255; for a 3-channel input it is resized in color and written as R, G, B
// planes (a gray frame fills all three). The result goes straight into dst, which must
// hold in.Len() values, so a caller can reuse a preallocated tensor. The trainer and
// Runtime.Infer both use this path, so training and inference see identical inputs.
func Preprocess(f camera.Frame, in InputShape, dst []float32) error {
	p := newPreprocessor()
	defer p.close()
	return p.run(f, in, dst)
}

// preprocessor keeps its OpenCV buffers across frames so that a Runtime does not allocate
// per frame once the frame size is stable. It is not safe for concurrent use.
type preprocessor struct {
	src, gray, small gocv.Mat
}

func newPreprocessor() *preprocessor {
	return &preprocessor{src: gocv.NewMat(), gray: gocv.NewMat(), small: gocv.NewMat()}
}

func (p *preprocessor) close() {
	p.src.Close()
	p.gray.Close()
	p.small.Close()
}

func (p *preprocessor) run(f camera.Frame, in InputShape, dst []float32) error {
	if err := checkFrame(f); err != nil {
		return err
	}
	if err := in.validate(); err != nil {
		return err
	}
	if len(dst) != in.Len() {
		return fmt.Errorf("preprocess: dst holds %d values, input %v needs %d", len(dst), in, in.Len())
	}
	if f.Channels == 1 && f.Width == in.Width && f.Height == in.Height {
		// What OpenCV would do, without the copies: INTER_AREA at scale 1 is the identity.
		for i, b := range f.Pix {
			dst[i] = scale255[b]
		}
		if in.Channels == 3 {
			n := in.Width * in.Height
			copy(dst[n:], dst[:n])
			copy(dst[2*n:], dst[:n])
		}
		return nil
	}
	if err := p.load(f); err != nil {
		return err
	}
	base := p.src
	if in.Channels == 1 && f.Channels == 3 {
		gocv.CvtColor(p.src, &p.gray, gocv.ColorBGRToGray)
		base = p.gray
	}
	gocv.Resize(base, &p.small, image.Pt(in.Width, in.Height), 0, 0, gocv.InterpolationArea)
	pix, err := p.small.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("preprocess: read resized image: %w", err)
	}
	n := in.Width * in.Height
	switch {
	case base.Channels() == 1:
		for i, b := range pix[:n] {
			dst[i] = scale255[b]
		}
		if in.Channels == 3 {
			copy(dst[n:], dst[:n])
			copy(dst[2*n:], dst[:n])
		}
	default: // BGR pixels into R, G, B planes
		r, g, b := dst[:n], dst[n:2*n], dst[2*n:3*n]
		for i := range n {
			b[i] = scale255[pix[3*i]]
			g[i] = scale255[pix[3*i+1]]
			r[i] = scale255[pix[3*i+2]]
		}
	}
	return nil
}

// load copies the frame into p.src, a Mat in C memory (gocv.NewMatFromBytes would keep a
// pointer into Go memory), reallocating only when the frame size changes.
func (p *preprocessor) load(f camera.Frame) error {
	typ := gocv.MatTypeCV8UC1
	if f.Channels == 3 {
		typ = gocv.MatTypeCV8UC3
	}
	if p.src.Empty() || p.src.Rows() != f.Height || p.src.Cols() != f.Width || p.src.Type() != typ {
		p.src.Close()
		p.src = gocv.NewMatWithSize(f.Height, f.Width, typ)
	}
	buf, err := p.src.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("preprocess: frame buffer: %w", err)
	}
	copy(buf, f.Pix)
	return nil
}
