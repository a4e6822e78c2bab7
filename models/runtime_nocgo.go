//go:build !cgo

package models

import (
	"context"

	"github.com/takt-edge/takt/camera"
)

// Runtime needs ONNX Runtime, a C library; without cgo it cannot be created.
type Runtime struct{}

// LoadRuntime fails without cgo.
func LoadRuntime(path string, opts RuntimeOptions) (*Runtime, error) { return nil, ErrNoCgo }

// Info is empty without cgo.
func (r *Runtime) Info() Info { return Info{} }

// Infer fails without cgo.
func (r *Runtime) Infer(ctx context.Context, f camera.Frame) (Result, error) {
	return Result{}, ErrNoCgo
}

// CopyMap returns dst[:0] without cgo.
func (r *Runtime) CopyMap(dst []float32) []float32 { return dst[:0] }

// Close does nothing without cgo.
func (r *Runtime) Close() error { return nil }
