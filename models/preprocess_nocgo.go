//go:build !cgo

package models

import "github.com/takt-edge/takt/camera"

// Preprocess fails without cgo: resizing and color conversion use OpenCV.
func Preprocess(f camera.Frame, in InputShape, dst []float32) error { return ErrNoCgo }
