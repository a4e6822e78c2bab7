package train

import (
	"fmt"
	"math"
	"slices"

	"github.com/takt-edge/takt/camera"
)

// Colour choices of TrainOptions.Color, TemplateOptions.Color and PatchCoreOptions.Color.
const (
	// ColorAuto (the default, also "") trains on colour when the good images are colour
	// (see minChromaSpread), else on gray.
	ColorAuto = "auto"
	ColorGray = "gray"
	ColorRGB  = "rgb"
)

// minChromaSpread is the chroma spread (see chromaSpread), in gray levels, from which the
// good images count as colour. A gray camera, or a colour camera on bare metal under a
// tinted light, gives channels that follow one another; coloured parts (a case,
// insulation, a solder mask) depart from that by tens of levels.
const minChromaSpread = 5.0

// chromaSpread is how much colour a frame shows, in gray levels: over blocks of about
// 1/128 of its shorter side (averaging out sensor noise), the residual standard deviation
// of R and of B once each is fitted as an affine function of G, sqrt(res_R^2 + res_B^2).
// It is 0 for a gray frame and for gray parts under a tinted light or white balance (each
// channel a gain and offset of the others), and large when hues differ across the part.
func chromaSpread(f camera.Frame) float64 {
	if f.Channels != 3 || f.Width*f.Height == 0 {
		return 0
	}
	b := max(1, min(f.Width, f.Height)/128)
	var bs, gs, rs []float64
	for y0 := 0; y0+b <= f.Height; y0 += b {
		for x0 := 0; x0+b <= f.Width; x0 += b {
			var sb, sg, sr float64
			for y := y0; y < y0+b; y++ {
				row := f.Pix[3*(y*f.Width+x0) : 3*(y*f.Width+x0+b)]
				for i := 0; i < len(row); i += 3 {
					sb, sg, sr = sb+float64(row[i]), sg+float64(row[i+1]), sr+float64(row[i+2])
				}
			}
			n := float64(b * b)
			bs, gs, rs = append(bs, sb/n), append(gs, sg/n), append(rs, sr/n)
		}
	}
	return math.Sqrt(affineResidual(gs, rs) + affineResidual(gs, bs))
}

// affineResidual is the mean squared residual of y fitted as a + b*x by least squares.
func affineResidual(x, y []float64) float64 {
	n := float64(len(x))
	var mx, my float64
	for i := range x {
		mx, my = mx+x[i], my+y[i]
	}
	mx, my = mx/n, my/n
	var sxx, sxy, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxx, sxy, syy = sxx+dx*dx, sxy+dx*dy, syy+dy*dy
	}
	if sxx == 0 {
		return syy / n
	}
	return max(0, syy-sxy*sxy/sxx) / n
}

// chromaSample is how many of the good images (evenly spaced) decide ColorAuto.
const chromaSample = 20

// inputChannels resolves color for the good images: 1 (gray) or 3 (RGB). ColorAuto takes
// RGB when the median chromaSpread of the images is at least minChromaSpread.
func inputChannels(color string, good []camera.Frame) (int, error) {
	switch color {
	case ColorGray:
		return 1, nil
	case ColorRGB:
		return 3, nil
	case "", ColorAuto:
	default:
		return 0, fmt.Errorf("color %q: want %s, %s or %s", color, ColorAuto, ColorGray, ColorRGB)
	}
	if len(good) == 0 {
		return 1, nil
	}
	var spreads []float64
	step := max(1, len(good)/chromaSample)
	for i := 0; i < len(good); i += step {
		spreads = append(spreads, chromaSpread(good[i]))
	}
	slices.Sort(spreads)
	if spreads[len(spreads)/2] >= minChromaSpread {
		return 3, nil
	}
	return 1, nil
}
