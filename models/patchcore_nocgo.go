//go:build !cgo

package models

import (
	"context"

	"github.com/takt-edge/takt/camera"
)

// TrainPatchCore fails without cgo: training runs the model in ONNX Runtime.
func TrainPatchCore(ctx context.Context, good []camera.Frame, opts PatchCoreOptions) (*TrainedModel, error) {
	return nil, ErrNoCgo
}
