//go:build !cgo

package models

import (
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
)

// Preprocess fails without cgo: resizing and color conversion use OpenCV.
func Preprocess(f camera.Frame, in bundle.InputShape, dst []float32) error { return ErrNoCgo }

// PreprocessAll fails without cgo.
func PreprocessAll(frames []camera.Frame, in bundle.InputShape) ([][]float32, error) {
	return nil, ErrNoCgo
}
