//go:build cgo

package camera

import (
	"fmt"

	"gocv.io/x/gocv"
)

// Encode compresses f as "jpg" (quality 1..100) or "png" for storage and display.
func Encode(f Frame, format string, quality int) ([]byte, error) {
	mt, err := matType(f)
	if err != nil {
		return nil, err
	}
	m, err := gocv.NewMatFromBytes(f.Height, f.Width, mt, f.Pix)
	if err != nil {
		return nil, fmt.Errorf("camera: frame %s: %w", f.Origin, err)
	}
	defer m.Close()
	var buf *gocv.NativeByteBuffer
	switch format {
	case "jpg", "jpeg":
		buf, err = gocv.IMEncodeWithParams(gocv.JPEGFileExt, m, []int{gocv.IMWriteJpegQuality, quality})
	case "png":
		buf, err = gocv.IMEncode(gocv.PNGFileExt, m)
	default:
		return nil, fmt.Errorf("camera: image format %q is not one of jpg, png", format)
	}
	if err != nil {
		return nil, fmt.Errorf("camera: encode %s: %w", format, err)
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}

func matType(f Frame) (gocv.MatType, error) {
	if f.Width <= 0 || f.Height <= 0 || len(f.Pix) != f.Width*f.Height*f.Channels {
		return 0, fmt.Errorf("camera: frame %s: %dx%dx%d does not match %d pixel bytes", f.Origin, f.Width, f.Height, f.Channels, len(f.Pix))
	}
	switch f.Channels {
	case 1:
		return gocv.MatTypeCV8UC1, nil
	case 3:
		return gocv.MatTypeCV8UC3, nil
	}
	return 0, fmt.Errorf("camera: frame %s: %d channels (want 1 or 3)", f.Origin, f.Channels)
}
