//go:build cgo

package models

import (
	"fmt"
	"image"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"gocv.io/x/gocv"
)

// Preprocess turns a frame into model input: for a 1-channel input the frame is converted
// to gray (OpenCV BGR2GRAY), resized to in.Width x in.Height with INTER_AREA and scaled to
// float32 byte/255; for a 3-channel input it is resized in color and written as R, G, B
// planes (a gray frame fills all three). The result goes straight into dst, which must
// hold in.Len() values, so a caller can reuse a preallocated tensor. The trainer and
// Runtime.Infer both use this path, so training and inference see identical inputs.
func Preprocess(f camera.Frame, in bundle.InputShape, dst []float32) error {
	p := newPreprocessor()
	defer p.close()
	color := bundle.ColorGray
	if in.Channels == 3 {
		color = bundle.ColorRGB
	}
	return p.run(f, bundle.Region{}, newPrepSpec(in, false, color, [3]float64{}, [3]float64{1, 1, 1}, bundle.ResizeStretch), dst)
}

// PreprocessAll is Preprocess of many frames into inputs stretched to in (gray with one
// channel, RGB with three), with one set of OpenCV buffers: the trainers feed good images
// this way so that they see them as Runtime.Infer does. Errors name the frame's index.
func PreprocessAll(frames []camera.Frame, in bundle.InputShape) ([][]float32, error) {
	xs := make([][]float32, len(frames))
	pre := newPreprocessor()
	defer pre.close()
	color := bundle.ColorGray
	if in.Channels == 3 {
		color = bundle.ColorRGB
	}
	ps := newPrepSpec(in, false, color, [3]float64{}, [3]float64{1, 1, 1}, bundle.ResizeStretch)
	for i, f := range frames {
		xs[i] = make([]float32, in.Len())
		if err := pre.run(f, bundle.Region{}, ps, xs[i]); err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
	}
	return xs, nil
}

// preprocessor keeps its OpenCV buffers across frames so that a Runtime does not allocate
// per frame once the frame (or ROI) size is stable. It is not safe for concurrent use.
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

// run writes the preprocessed roi of f (the whole frame for a zero Region) into dst:
//
//	crop   copy of the ROI's pixels into a reused Mat (the only copy of the frame)
//	color  OpenCV BGR2GRAY for a gray model; BGR -> RGB is a channel index, not a pass
//	resize OpenCV INTER_AREA into a reused Mat (stretch, crop or letterbox)
//	write  one pass: byte -> (b/255 - mean)/std by lookup table, NCHW or NHWC, into dst
func (p *preprocessor) run(f camera.Frame, roi bundle.Region, s *prepSpec, dst []float32) error {
	if err := CheckFrame(f); err != nil {
		return err
	}
	in := s.in
	if err := in.Validate(); err != nil {
		return err
	}
	if len(dst) != in.Len() {
		return fmt.Errorf("preprocess: dst holds %d values, input %v needs %d", len(dst), in, in.Len())
	}
	g := frameGeometry(f.Width, f.Height, roi, in, s.resize)
	x0, y0, x1, y1 := g.x0, g.y0, g.x1, g.y1
	cw, ch := x1-x0, y1-y0
	if f.Channels == 1 && in.Channels == 1 && cw == in.Width && ch == in.Height {
		// What OpenCV would do, without the copies: INTER_AREA at scale 1 is the identity.
		lut := &s.lut[0]
		for y := range ch {
			row := f.Pix[(y0+y)*f.Width+x0 : (y0+y)*f.Width+x1]
			out := dst[y*in.Width : (y+1)*in.Width]
			for i, b := range row {
				out[i] = lut[b]
			}
		}
		return nil
	}
	if err := p.load(f, x0, y0, x1, y1); err != nil {
		return err
	}
	base := &p.src
	if in.Channels == 1 && f.Channels == 3 {
		gocv.CvtColor(p.src, &p.gray, gocv.ColorBGRToGray)
		base = &p.gray
	}
	tw, th, ox, oy := g.tw, g.th, g.ox, g.oy
	if tw != in.Width || th != in.Height {
		s.fillPad(dst) // letterbox
	}
	small := base
	if base.Cols() != tw || base.Rows() != th {
		gocv.Resize(*base, &p.small, image.Pt(tw, th), 0, 0, gocv.InterpolationArea)
		small = &p.small
	}
	pix, err := small.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("preprocess: read resized image: %w", err)
	}
	s.write(pix, small.Channels(), tw, th, ox, oy, dst)
	return nil
}

// load copies the rectangle [x0,x1) x [y0,y1) of the frame into p.src, a Mat in C memory
// (gocv.NewMatFromBytes would keep a pointer into Go memory), reallocating only when the
// size changes.
func (p *preprocessor) load(f camera.Frame, x0, y0, x1, y1 int) error {
	typ := gocv.MatTypeCV8UC1
	if f.Channels == 3 {
		typ = gocv.MatTypeCV8UC3
	}
	w, h := x1-x0, y1-y0
	if p.src.Empty() || p.src.Rows() != h || p.src.Cols() != w || p.src.Type() != typ {
		p.src.Close()
		p.src = gocv.NewMatWithSize(h, w, typ)
	}
	buf, err := p.src.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("preprocess: frame buffer: %w", err)
	}
	if x0 == 0 && w == f.Width {
		copy(buf, f.Pix[y0*f.Width*f.Channels:y1*f.Width*f.Channels])
		return nil
	}
	rowLen := w * f.Channels
	for y := range h {
		start := ((y0+y)*f.Width + x0) * f.Channels
		copy(buf[y*rowLen:(y+1)*rowLen], f.Pix[start:start+rowLen])
	}
	return nil
}
