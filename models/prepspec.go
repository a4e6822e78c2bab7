package models

import "github.com/takt-edge/takt/models/bundle"

// prepSpec is the per-model part of preprocessing, computed once at load: the input shape
// and layout, the color order and a lookup table per tensor channel that turns a byte
// into its normalized float, (b/255 - mean) / std.
type prepSpec struct {
	in     bundle.InputShape
	nhwc   bool
	color  string // ColorGray, ColorRGB or ColorBGR: the tensor's channel order
	resize string
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

// fillPad sets every input value to the normalized value of a black pixel (letterbox).
func (s *prepSpec) fillPad(dst []float32) {
	n := s.in.Width * s.in.Height
	for c := range s.in.Channels {
		v := s.lut[c][0]
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
