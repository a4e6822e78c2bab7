//go:build !cgo

package models

import "fmt"

// resolveBackbone fails without cgo: the backbone is run in ONNX Runtime to learn its
// feature shape.
func resolveBackbone(o BackboneOptions, aspect float64) (*backbone, error) {
	return nil, fmt.Errorf("backbone: %w", ErrNoCgo)
}
