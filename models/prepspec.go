package models

import (
	"math"

	"github.com/takt-edge/takt/models/bundle"
)

// prepSpec is the per-model part of preprocessing, computed once at load: the input shape
// and layout, the color order and a lookup table per tensor channel that turns a byte
// into its normalized float, (b/255 - mean) / std.
type prepSpec struct {
	in     bundle.InputShape
	nhwc   bool
	color  string // ColorGray, ColorRGB or ColorBGR: the tensor's channel order
	resize string
	pad    byte // the letterbox's pad value
	lut    [3][256]float32
}

func newPrepSpec(in bundle.InputShape, nhwc bool, color string, mean, std [3]float64, resize string) *prepSpec {
	s := &prepSpec{in: in, nhwc: nhwc, color: color, resize: resize}
	for c := range 3 {
		for b := range 256 {
			if mean[c] == 0 && std[c] == 1 {
				s.lut[c][b] = scale255[b] // exactly float32(b)/255, as the trainer computes it
			} else {
				s.lut[c][b] = float32((float64(b)/255 - mean[c]) / std[c])
			}
		}
	}
	return s
}

// srcChannel is the channel of a BGR (or gray) source pixel that tensor channel c reads.
func (s *prepSpec) srcChannel(c, srcChannels int) int {
	if srcChannels == 1 {
		return 0
	}
	if s.color == bundle.ColorRGB {
		return 2 - c
	}
	return c
}

// fillPad sets every input value to the normalized value of the pad pixel (letterbox).
func (s *prepSpec) fillPad(dst []float32) {
	n := s.in.Width * s.in.Height
	for c := range s.in.Channels {
		v := s.lut[c][s.pad]
		if s.nhwc {
			for i := c; i < len(dst); i += s.in.Channels {
				dst[i] = v
			}
		} else {
			plane := dst[c*n : (c+1)*n]
			for i := range plane {
				plane[i] = v
			}
		}
	}
}

// write normalizes a tw x th image of srcChannels-byte pixels (BGR or gray) into dst at
// offset (ox, oy), in the tensor's layout and channel order.
func (s *prepSpec) write(pix []byte, srcChannels, tw, th, ox, oy int, dst []float32) {
	in := s.in
	n := in.Width * in.Height
	for c := range in.Channels {
		lut := &s.lut[c]
		sc := s.srcChannel(c, srcChannels)
		for y := range th {
			src := pix[y*tw*srcChannels : (y+1)*tw*srcChannels]
			if s.nhwc {
				base := ((oy+y)*in.Width+ox)*in.Channels + c
				for x := range tw {
					dst[base+x*in.Channels] = lut[src[x*srcChannels+sc]]
				}
				continue
			}
			out := dst[c*n+(oy+y)*in.Width+ox : c*n+(oy+y)*in.Width+ox+tw]
			if srcChannels == 1 {
				for x, b := range src {
					out[x] = lut[b]
				}
				continue
			}
			for x := range out {
				out[x] = lut[src[x*srcChannels+sc]]
			}
		}
	}
}

// geometry is where a frame's pixels go in the input tensor: the source rectangle
// [x0,x1) x [y0,y1) of the frame is resized to tw x th and written at (ox, oy).
type geometry struct {
	x0, y0, x1, y1 int
	tw, th, ox, oy int
}

// frameGeometry is the geometry of a fw x fh frame's roi (the whole frame for a zero
// Region) fed to input in with the resize mode.
func frameGeometry(fw, fh int, roi bundle.Region, in bundle.InputShape, resize string) geometry {
	x0, y0, x1, y1 := 0, 0, fw, fh
	if roi != (bundle.Region{}) {
		x0 = clampInt(int(math.Floor(roi.X0*float64(fw))), 0, fw-1)
		y0 = clampInt(int(math.Floor(roi.Y0*float64(fh))), 0, fh-1)
		x1 = clampInt(int(math.Ceil(roi.X1*float64(fw))), x0+1, fw)
		y1 = clampInt(int(math.Ceil(roi.Y1*float64(fh))), y0+1, fh)
	}
	if resize == bundle.ResizeCrop {
		cw, ch := x1-x0, y1-y0
		// Largest centered rectangle of the input's aspect.
		if cw*in.Height > ch*in.Width {
			nw := max(1, ch*in.Width/in.Height)
			x0 += (cw - nw) / 2
			x1 = x0 + nw
		} else {
			nh := max(1, cw*in.Height/in.Width)
			y0 += (ch - nh) / 2
			y1 = y0 + nh
		}
	}
	g := geometry{x0: x0, y0: y0, x1: x1, y1: y1, tw: in.Width, th: in.Height}
	if resize == bundle.ResizeLetterbox {
		cw, ch := x1-x0, y1-y0
		scale := min(float64(in.Width)/float64(cw), float64(in.Height)/float64(ch))
		g.tw = clampInt(int(math.Round(float64(cw)*scale)), 1, in.Width)
		g.th = clampInt(int(math.Round(float64(ch)*scale)), 1, in.Height)
		g.ox, g.oy = (in.Width-g.tw)/2, (in.Height-g.th)/2
	}
	return g
}

// toFrame maps a point of the input tensor back to frame pixels.
func (g geometry) toFrame(x, y float64) (float64, float64) {
	return float64(g.x0) + (x-float64(g.ox))*float64(g.x1-g.x0)/float64(g.tw),
		float64(g.y0) + (y-float64(g.oy))*float64(g.y1-g.y0)/float64(g.th)
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }
