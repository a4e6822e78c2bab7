//go:build !cgo

package models

import "context"

// Train fails without cgo: training runs the model in ONNX Runtime.
func Train(ctx context.Context, set TrainSet, opts TrainOptions) (*TrainedModel, error) {
	return nil, ErrNoCgo
}
