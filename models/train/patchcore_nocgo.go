//go:build !cgo

package train

import (
	"context"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
)

// TrainPatchCore fails without cgo: training runs the model in ONNX Runtime.
func TrainPatchCore(ctx context.Context, good []camera.Frame, opts PatchCoreOptions) (*TrainedModel, error) {
	return nil, models.ErrNoCgo
}
