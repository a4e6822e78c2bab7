package models

import (
	"fmt"

	"github.com/takt-edge/takt/camera"
)

// InputShape is a model's image input: a float32 NCHW tensor [1, Channels, Height, Width]
// with pixels scaled to 0..1 (byte/255). Channels is 1 (gray) or 3 (R, G, B planes).
type InputShape struct {
	Channels int
	Height   int
	Width    int
}

// Len is the number of float32 values of the input tensor.
func (s InputShape) Len() int { return s.Channels * s.Height * s.Width }

// String describes the input the way the takt.input metadata stores it, e.g.
// "gray 1x1x96x128 scale=1/255" or "rgb 1x3x224x224 scale=1/255".
func (s InputShape) String() string {
	color := "gray"
	if s.Channels == 3 {
		color = "rgb"
	}
	return fmt.Sprintf("%s 1x%dx%dx%d scale=1/255", color, s.Channels, s.Height, s.Width)
}

func (s InputShape) validate() error {
	if s.Channels != 1 && s.Channels != 3 {
		return fmt.Errorf("input channels %d: want 1 (gray) or 3 (rgb)", s.Channels)
	}
	if s.Width < 1 || s.Height < 1 {
		return fmt.Errorf("input size %dx%d: want positive width and height", s.Width, s.Height)
	}
	return nil
}

// checkFrame reports a Frame whose fields disagree with its pixel buffer.
func checkFrame(f camera.Frame) error {
	if f.Channels != 1 && f.Channels != 3 {
		return fmt.Errorf("%w: %d channels, want 1 (gray) or 3 (BGR)", ErrBadFrame, f.Channels)
	}
	if f.Width < 1 || f.Height < 1 {
		return fmt.Errorf("%w: size %dx%d", ErrBadFrame, f.Width, f.Height)
	}
	if want := f.Width * f.Height * f.Channels; len(f.Pix) != want {
		return fmt.Errorf("%w: %dx%dx%d needs %d bytes, Pix has %d", ErrBadFrame,
			f.Width, f.Height, f.Channels, want, len(f.Pix))
	}
	return nil
}

// scale255 maps a byte to float32 0..1, exactly float32(b)/255.
var scale255 = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i) / 255
	}
	return t
}()
