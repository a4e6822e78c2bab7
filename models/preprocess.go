package models

import (
	"fmt"

	"github.com/takt-edge/takt/camera"
)

// CheckFrame reports a Frame whose fields disagree with its pixel buffer.
func CheckFrame(f camera.Frame) error {
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
