//go:build !cgo

package train

import (
	"context"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
)

// TrainTemplate fails without cgo: training runs the model in ONNX Runtime.
func TrainTemplate(ctx context.Context, good []camera.Frame, opts TemplateOptions) (*TrainedModel, error) {
	return nil, models.ErrNoCgo
}
