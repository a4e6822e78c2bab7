package bundle

import "fmt"

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

// Validate reports a shape Takt cannot feed: channels other than 1 or 3, or an empty size.
func (s InputShape) Validate() error {
	if s.Channels != 1 && s.Channels != 3 {
		return fmt.Errorf("input channels %d: want 1 (gray) or 3 (rgb)", s.Channels)
	}
	if s.Width < 1 || s.Height < 1 {
		return fmt.Errorf("input size %dx%d: want positive width and height", s.Width, s.Height)
	}
	return nil
}

// Region is a rectangle in fractions of the frame: X0 <= x < X1, Y0 <= y < Y1, all in 0..1.
type Region struct {
	X0 float64 `yaml:"x0"`
	Y0 float64 `yaml:"y0"`
	X1 float64 `yaml:"x1"`
	Y1 float64 `yaml:"y1"`
}

// Valid says whether r is a non-empty rectangle inside the frame (fractions 0..1).
func (r Region) Valid() bool {
	return 0 <= r.X0 && r.X0 < r.X1 && r.X1 <= 1 && 0 <= r.Y0 && r.Y0 < r.Y1 && r.Y1 <= 1
}
