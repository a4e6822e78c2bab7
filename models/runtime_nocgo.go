//go:build !cgo

package models

import (
	"context"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
)

// Runtime needs ONNX Runtime, a C library; without cgo it cannot be created.
type Runtime struct{}

// LoadRuntime fails without cgo.
func LoadRuntime(path string, opts RuntimeOptions) (*Runtime, error) { return nil, ErrNoCgo }

// LoadRuntimeData fails without cgo.
func LoadRuntimeData(data []byte, opts RuntimeOptions) (*Runtime, error) { return nil, ErrNoCgo }

// NewRuntime fails without cgo.
func NewRuntime(ctx context.Context, b *bundle.Bundle, opts RuntimeOptions) (*Runtime, error) {
	return nil, ErrNoCgo
}

// DecodeImage fails without cgo.
func DecodeImage(data []byte) (camera.Frame, error) { return camera.Frame{}, ErrNoCgo }

// CheckFinite fails without cgo.
func (r *Runtime) CheckFinite(ctx context.Context) error { return ErrNoCgo }

// ScoreInput fails without cgo.
func (r *Runtime) ScoreInput(x []float32) (float64, error) { return 0, ErrNoCgo }

// Info is empty without cgo.
func (r *Runtime) Info() Info { return Info{} }

// Attempts is empty without cgo.
func (r *Runtime) Attempts() []ProviderAttempt { return nil }

// EngineBuild is empty without cgo.
func (r *Runtime) EngineBuild() BuildStatus { return BuildStatus{} }

// Infer fails without cgo.
func (r *Runtime) Infer(ctx context.Context, f camera.Frame) (Result, error) {
	return Result{}, ErrNoCgo
}

// CopyMap returns dst[:0] without cgo.
func (r *Runtime) CopyMap(dst []float32) []float32 { return dst[:0] }

// Close does nothing without cgo.
func (r *Runtime) Close() error { return nil }

// HeatmapOptions tunes Heatmap.
type HeatmapOptions struct {
	Lo, Hi float64
	Alpha  float64
	ROI    bundle.Region
}

// Heatmap fails without cgo.
func Heatmap(f camera.Frame, m *AnomalyMap, opts HeatmapOptions) (camera.Frame, error) {
	return camera.Frame{}, ErrNoCgo
}

// HeatmapJPEG fails without cgo.
func HeatmapJPEG(f camera.Frame, m *AnomalyMap, opts HeatmapOptions, quality int) ([]byte, error) {
	return nil, ErrNoCgo
}
