package train

import (
	"math"
	"math/rand/v2"

	"github.com/takt-edge/takt/camera"
)

// A synthetic part on a fixture, drawn in a 640x480 frame (coordinates scale with the
// frame width): a bright plate on a dark background with four holes and a slot, placed
// with a small random shift, gain jitter and sensor noise. Defects are drawn on top.

type defect string

const (
	noDefect    defect = ""
	darkSpot    defect = "dark spot"    // a stain: dark disc, radius 12 px
	scratch     defect = "scratch"      // a 5 px wide dark line, 130 px long
	missingHole defect = "missing hole" // one hole not drilled
)

type partSpec struct {
	width, height int
	channels      int // 1 gray, 3 BGR
	defect        defect
	seed          uint64
}

func makePart(s partSpec) camera.Frame {
	rng := rand.New(rand.NewPCG(s.seed, 0x7a4b))
	k := float64(s.width) / 640 // frame scale
	dx := (rng.Float64()*2 - 1) * 3
	dy := (rng.Float64()*2 - 1) * 3
	gain := 1 + (rng.Float64()*2-1)*0.02
	type hole struct{ x, y float64 }
	holes := []hole{{150, 130}, {490, 130}, {150, 350}, {490, 350}}
	if s.defect == missingHole {
		holes = holes[:3]
	}
	f := camera.Frame{Width: s.width, Height: s.height, Channels: s.channels, Seq: s.seed,
		Pix: make([]byte, s.width*s.height*s.channels)}
	for py := 0; py < s.height; py++ {
		for px := 0; px < s.width; px++ {
			// Part coordinates, in the 640x480 reference frame.
			x := (float64(px)+0.5)/k - dx
			y := (float64(py)+0.5)/k - dy
			v := 40.0
			if x >= 80 && x < 560 && y >= 60 && y < 420 {
				v = 170
				for _, h := range holes {
					if (x-h.x)*(x-h.x)+(y-h.y)*(y-h.y) < 30*30 {
						v = 40
					}
				}
				if x >= 260 && x < 380 && y >= 220 && y < 260 {
					v = 90
				}
				switch s.defect {
				case darkSpot:
					if (x-320)*(x-320)+(y-160)*(y-160) < 12*12 {
						v -= 90
					}
				case scratch:
					if distToSegment(x, y, 200, 300, 330, 330) < 2.5 {
						v -= 80
					}
				}
			}
			v = v*gain + rng.NormFloat64()*4
			i := (py*s.width + px) * s.channels
			if s.channels == 1 {
				f.Pix[i] = clampByte(v)
			} else { // a slightly warm light: B < G < R
				f.Pix[i], f.Pix[i+1], f.Pix[i+2] = clampByte(v*0.9), clampByte(v), clampByte(v*1.1)
			}
		}
	}
	return f
}

func clampByte(v float64) byte { return byte(math.Round(min(255, max(0, v)))) }

func distToSegment(x, y, x0, y0, x1, y1 float64) float64 {
	vx, vy := x1-x0, y1-y0
	t := ((x-x0)*vx + (y-y0)*vy) / (vx*vx + vy*vy)
	t = min(1, max(0, t))
	ex, ey := x-(x0+t*vx), y-(y0+t*vy)
	return math.Hypot(ex, ey)
}

// goodParts draws n good 640x480 parts with seeds from, from+1, ...
func goodParts(n int, from uint64, channels int) []camera.Frame {
	fs := make([]camera.Frame, n)
	for i := range fs {
		fs[i] = makePart(partSpec{width: 640, height: 480, channels: channels, seed: from + uint64(i)})
	}
	return fs
}
