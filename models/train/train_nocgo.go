//go:build !cgo

package train

import (
	"context"

	"github.com/takt-edge/takt/models"
)

// Train fails without cgo: training runs the model in ONNX Runtime.
func Train(ctx context.Context, set TrainSet, opts TrainOptions) (*TrainedModel, error) {
	return nil, models.ErrNoCgo
}
