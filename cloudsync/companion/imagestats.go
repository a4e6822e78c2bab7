package companion

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // the stations upload JPEG or PNG
	_ "image/png"
	"math"
	"os"
)

// Image statistics (cloudsync/README.md, "Triggers and drift"): three numbers per image that move when
// the light, the camera or the material changes, whatever the model scores.
//
//	brightness  mean gray level (0..255; gray = luma of the image)
//	contrast    standard deviation of the gray levels
//	sharpness   mean absolute 4-neighbour Laplacian of the gray levels
//	            (falls when the lens is dirty or out of focus)
//
// A version's image baseline is the mean and standard deviation of each
// statistic over the good images of the job that trained it (training and
// validation sides). Both sides are read with a measurement tolerance
// tau = max(2% of the baseline mean, 0.5): the baseline is the normal
// distribution N(mean, sd^2 + tau^2), cut at its nine deciles into ten bins
// of 10% each; each recent PASS image's value x spreads over the bins as
// N(x, tau^2), and a_i is the mean share of bin i over the window. The PSI
// of the a_i against the 10% each is the statistic, as for the scores.
//
// Why a fitted normal: a job has a few dozen good images, and nine
// empirical cut points from 20 values alone give a PSI around 0.5 on an
// unchanged line (about 9/n), two fitted numbers about 0.1 (2/n). Why the
// tolerance: synthetic or well-lit training sets vary by a fraction of a
// gray level, and without it a change too small to matter (or a window that
// happens to be even more uniform) would read as drift. A lamp that loses
// a good part of its light moves the brightness by many tolerances.

// Image statistic names, as in the registry, the manifest metrics and the
// drift status.
const (
	statBrightness = "brightness"
	statContrast   = "contrast"
	statSharpness  = "sharpness"
)

var imageStatNames = []string{statBrightness, statContrast, statSharpness}

// ImageStats are the statistics of one image.
type ImageStats struct {
	Brightness float64 `json:"brightness"`
	Contrast   float64 `json:"contrast"`
	Sharpness  float64 `json:"sharpness"`
}

func (s ImageStats) get(name string) float64 {
	switch name {
	case statBrightness:
		return s.Brightness
	case statContrast:
		return s.Contrast
	}
	return s.Sharpness
}

// StatBaseline is the baseline of one image statistic.
type StatBaseline struct {
	Mean float64 `json:"mean"`
	SD   float64 `json:"sd"`
	N    int     `json:"n"`
}

// normalDeciles are the nine deciles of the standard normal distribution.
var normalDeciles = []float64{-1.2815516, -0.8416212, -0.5244005, -0.2533471, 0, 0.2533471, 0.5244005, 0.8416212, 1.2815516}

// tolerance is the baseline's measurement tolerance tau.
func (b StatBaseline) tolerance() float64 { return max(0.02*math.Abs(b.Mean), 0.5) }

// cuts are the baseline's nine cut points: deciles of N(mean, sd^2+tau^2).
func (b StatBaseline) cuts() []float64 {
	tau := b.tolerance()
	sd := math.Sqrt(b.SD*b.SD + tau*tau)
	out := make([]float64, len(normalDeciles))
	for i, z := range normalDeciles {
		out[i] = b.Mean + sd*z
	}
	return out
}

// psi is the PSI of values, each spread as N(x, tau^2), against the
// baseline's ten bins of 10%.
func (b StatBaseline) psi(values []float64) (float64, error) {
	if len(values) == 0 {
		return 0, errors.New("drift: no recent images")
	}
	cuts, tau := b.cuts(), b.tolerance()
	var share [10]float64
	for _, x := range values {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, errors.New("drift: an image statistic is not finite")
		}
		prev := 0.0
		for i, c := range cuts {
			cdf := 0.5 * math.Erfc(-(c-x)/(tau*math.Sqrt2))
			share[i] += cdf - prev
			prev = cdf
		}
		share[9] += 1 - prev
	}
	var sum float64
	for _, v := range share {
		a := max(v/float64(len(values)), psiFloor)
		sum += (a - 0.1) * math.Log(a/0.1)
	}
	return sum, nil
}

// imageBaseline fits the baseline of each statistic; it needs 2 images.
func imageBaseline(stats []ImageStats) (map[string]StatBaseline, error) {
	if len(stats) < 2 {
		return nil, fmt.Errorf("image baseline: %d images, need at least 2", len(stats))
	}
	out := map[string]StatBaseline{}
	for _, name := range imageStatNames {
		var sum, sq float64
		for _, s := range stats {
			sum += s.get(name)
		}
		mean := sum / float64(len(stats))
		for _, s := range stats {
			d := s.get(name) - mean
			sq += d * d
		}
		out[name] = StatBaseline{Mean: mean, SD: math.Sqrt(sq / float64(len(stats)-1)), N: len(stats)}
	}
	return out, nil
}

// imageStatsFile computes the statistics of an image file.
func imageStatsFile(path string) (ImageStats, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ImageStats{}, err
	}
	return imageStats(data)
}

// imageStats decodes a JPEG or PNG and computes its statistics.
func imageStats(data []byte) (ImageStats, error) {
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return ImageStats{}, fmt.Errorf("image statistics: %w", err)
	}
	w, h, gray := grayLevels(img)
	if w < 3 || h < 3 {
		return ImageStats{}, fmt.Errorf("image statistics: %dx%d image, need at least 3x3", w, h)
	}
	var sum, sq float64
	for _, v := range gray {
		sum += float64(v)
	}
	mean := sum / float64(len(gray))
	for _, v := range gray {
		d := float64(v) - mean
		sq += d * d
	}
	var lap float64
	for y := 1; y < h-1; y++ {
		row := gray[y*w : (y+1)*w]
		up, down := gray[(y-1)*w:y*w], gray[(y+1)*w:(y+2)*w]
		for x := 1; x < w-1; x++ {
			l := 4*int(row[x]) - int(row[x-1]) - int(row[x+1]) - int(up[x]) - int(down[x])
			if l < 0 {
				l = -l
			}
			lap += float64(l)
		}
	}
	return ImageStats{Brightness: mean, Contrast: math.Sqrt(sq / float64(len(gray))),
		Sharpness: lap / float64((w-2)*(h-2))}, nil
}

// grayLevels returns the image's luma, row by row.
func grayLevels(img image.Image) (w, h int, gray []byte) {
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	gray = make([]byte, w*h)
	switch m := img.(type) {
	case *image.Gray:
		for y := range h {
			copy(gray[y*w:(y+1)*w], m.Pix[y*m.Stride:y*m.Stride+w])
		}
	case *image.YCbCr: // JPEG: Y is the luma
		for y := range h {
			copy(gray[y*w:(y+1)*w], m.Y[y*m.YStride:y*m.YStride+w])
		}
	default:
		for y := range h {
			for x := range w {
				gray[y*w+x] = color.GrayModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.Gray).Y
			}
		}
	}
	return w, h, gray
}

// ImageDrift is the drift watch's view of one image statistic.
type ImageDrift struct {
	Statistic string  `json:"statistic"`
	PSI       float64 `json:"psi"`
	Baseline  float64 `json:"baseline_mean"`
	Recent    float64 `json:"recent_mean"`
	Threshold float64 `json:"threshold"`
	Drifted   bool    `json:"drifted"`
	Samples   int     `json:"samples"`
	Reason    string  `json:"reason,omitempty"` // why it could not be judged
}

// imageDriftOf judges the latest window PASS images' statistics against the
// baseline of each statistic.
func imageDriftOf(cfg DriftConfig, baseline map[string]StatBaseline, recent []ImageStats) []ImageDrift {
	if len(recent) > cfg.Window {
		recent = recent[len(recent)-cfg.Window:]
	}
	var out []ImageDrift
	for _, name := range imageStatNames {
		d := ImageDrift{Statistic: name, Threshold: cfg.ImageThreshold, Samples: len(recent)}
		b, ok := baseline[name]
		switch {
		case !ok:
			d.Reason = "no image baseline for this version"
		case len(recent) < cfg.MinSamples:
			d.Reason = fmt.Sprintf("%d PASS images, need %d", len(recent), cfg.MinSamples)
		}
		if d.Reason != "" {
			out = append(out, d)
			continue
		}
		vals := make([]float64, len(recent))
		for i, s := range recent {
			vals[i] = s.get(name)
			d.Recent += vals[i] / float64(len(recent))
		}
		v, err := b.psi(vals)
		if err != nil {
			d.Reason = err.Error()
		}
		d.PSI, d.Baseline = v, b.Mean
		d.Drifted = err == nil && cfg.ImageThreshold > 0 && v > cfg.ImageThreshold
		out = append(out, d)
	}
	return out
}

// driftedStats names the drifted statistics with their PSI.
func driftedStats(ds []ImageDrift) []string {
	var out []string
	for _, d := range ds {
		if d.Drifted {
			out = append(out, fmt.Sprintf("%s PSI %.2f (mean %.4g -> %.4g)", d.Statistic, d.PSI, d.Baseline, d.Recent))
		}
	}
	return out
}
