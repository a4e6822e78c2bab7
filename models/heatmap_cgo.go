//go:build cgo

package models

import (
	"fmt"
	"image"
	"math"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"gocv.io/x/gocv"
)

// HeatmapOptions tunes Heatmap.
type HeatmapOptions struct {
	// Lo and Hi are the map values drawn coldest and hottest; Hi <= Lo takes Lo = 0 and Hi =
	// twice the model's threshold or, without one, the map's maximum.
	Lo, Hi float64
	// Alpha is the heat's opacity over the frame, 0..1; 0 means 0.45.
	Alpha float64
	// ROI is where the map lies in the frame (a zero Region: the whole frame).
	ROI bundle.Region
}

// Heatmap draws an anomaly map over a frame for operators: the map is scaled to Lo..Hi,
// colored with OpenCV's JET colormap (blue cold, red hot), resized to the ROI and blended
// over the frame. It returns a new BGR frame (encode it with camera.Encode); f is not
// changed. It allocates and is meant for the operator page, not the per-part hot path.
func Heatmap(f camera.Frame, m *AnomalyMap, opts HeatmapOptions) (camera.Frame, error) {
	if err := CheckFrame(f); err != nil {
		return camera.Frame{}, err
	}
	if m == nil || m.Width < 1 || m.Height < 1 || len(m.Values) != m.Width*m.Height {
		return camera.Frame{}, fmt.Errorf("heatmap: no anomaly map or its size disagrees with its values")
	}
	lo, hi := opts.Lo, opts.Hi
	if hi <= lo {
		lo, hi = 0, 0
		for _, v := range m.Values {
			if !math.IsNaN(float64(v)) {
				hi = max(hi, float64(v))
			}
		}
		if hi <= 0 {
			hi = 1
		}
	}
	alpha := opts.Alpha
	if alpha <= 0 || alpha > 1 {
		alpha = 0.45
	}
	x0, y0, x1, y1 := 0, 0, f.Width, f.Height
	if opts.ROI != (bundle.Region{}) {
		x0, y0 = int(opts.ROI.X0*float64(f.Width)), int(opts.ROI.Y0*float64(f.Height))
		x1, y1 = max(x0+1, int(math.Ceil(opts.ROI.X1*float64(f.Width)))), max(y0+1, int(math.Ceil(opts.ROI.Y1*float64(f.Height))))
		x1, y1 = min(x1, f.Width), min(y1, f.Height)
	}
	gray := gocv.NewMatWithSize(m.Height, m.Width, gocv.MatTypeCV8UC1)
	defer gray.Close()
	gp, err := gray.DataPtrUint8()
	if err != nil {
		return camera.Frame{}, err
	}
	for i, v := range m.Values {
		t := (float64(v) - lo) / (hi - lo)
		if math.IsNaN(t) {
			t = 1
		}
		gp[i] = byte(math.Round(255 * max(0, min(1, t))))
	}
	sized := gocv.NewMat()
	defer sized.Close()
	gocv.Resize(gray, &sized, image.Pt(x1-x0, y1-y0), 0, 0, gocv.InterpolationLinear)
	heat := gocv.NewMat()
	defer heat.Close()
	gocv.ApplyColorMap(sized, &heat, gocv.ColormapJet)
	hp, err := heat.DataPtrUint8()
	if err != nil {
		return camera.Frame{}, err
	}
	out := camera.Frame{CameraID: f.CameraID, Seq: f.Seq, Time: f.Time, Origin: f.Origin, Serial: f.Serial,
		Width: f.Width, Height: f.Height, Channels: 3, Pix: make([]byte, f.Width*f.Height*3)}
	for i := range f.Width * f.Height {
		for c := range 3 {
			if f.Channels == 3 {
				out.Pix[3*i+c] = f.Pix[3*i+c]
			} else {
				out.Pix[3*i+c] = f.Pix[i]
			}
		}
	}
	w := x1 - x0
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			o := 3 * (y*f.Width + x)
			h := 3 * ((y-y0)*w + (x - x0))
			for c := range 3 {
				out.Pix[o+c] = byte(math.Round((1-alpha)*float64(out.Pix[o+c]) + alpha*float64(hp[h+c])))
			}
		}
	}
	return out, nil
}

// HeatmapJPEG is Heatmap encoded as a JPEG of the given quality (1..100).
func HeatmapJPEG(f camera.Frame, m *AnomalyMap, opts HeatmapOptions, quality int) ([]byte, error) {
	hf, err := Heatmap(f, m, opts)
	if err != nil {
		return nil, err
	}
	return camera.Encode(hf, "jpg", quality)
}
