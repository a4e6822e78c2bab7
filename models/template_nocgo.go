//go:build !cgo

package models

import (
	"context"

	"github.com/takt-edge/takt/camera"
)

// TrainTemplate fails without cgo: training runs the model in ONNX Runtime.
func TrainTemplate(ctx context.Context, good []camera.Frame, opts TemplateOptions) (*TrainedModel, error) {
	return nil, ErrNoCgo
}
