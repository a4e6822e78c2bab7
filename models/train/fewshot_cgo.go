//go:build cgo

package train

import (
	"context"
	"fmt"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
)

// preprocessGood turns good images into model inputs (gray or RGB as in, stretched to in, 0..1) through
// the same preprocessor as Runtime.Infer. what names the trainer in errors.
func preprocessGood(what string, good []camera.Frame, in bundle.InputShape) ([][]float32, error) {
	xs, err := models.PreprocessAll(good, in)
	if err != nil {
		return nil, fmt.Errorf("train %s: good %w", what, err)
	}
	return xs, nil
}

// calibrated is what crossValidate returns: the final model and its threshold, with the
// held-out scores the threshold came from and the final model's scores of the same images.
type calibrated struct {
	onnx        []byte
	threshold   float64
	op          eval.OperatingPoint
	goodScores  []float64
	trainScores []float64
}

// crossValidate is the trainers' shared calibration: with k folds, every good image is
// scored by a model that foldGraph builds from the other folds (use(i) says which images it
// may learn from); the threshold is calibrated on those held-out scores for the false-reject budget; then
// finalGraph builds the shipped model from all images, and it scores them too (what
// Runtime.Infer returns for them). ctx stops it between folds.
func crossValidate(ctx context.Context, what string, xs [][]float32, folds int, falseReject float64, threads int, progress func(done, total int),
	foldGraph func(use func(int) bool) ([]byte, error), finalGraph func(threshold float64) ([]byte, error)) (calibrated, error) {
	n := len(xs)
	c := calibrated{goodScores: make([]float64, n), trainScores: make([]float64, n)}
	ropts := models.RuntimeOptions{Threads: threads, Warmup: -1} // one test run: scores, not latencies
	for k := range folds {
		if err := ctx.Err(); err != nil {
			return c, fmt.Errorf("train %s: %w", what, err)
		}
		data, err := foldGraph(func(i int) bool { return i%folds != k })
		if err != nil {
			return c, fmt.Errorf("train %s: fold %d: %w", what, k, err)
		}
		if err := scoreWith(data, ropts, xs, func(i int) bool { return i%folds == k }, c.goodScores); err != nil {
			return c, fmt.Errorf("train %s: fold %d: %w", what, k, err)
		}
		if progress != nil {
			progress(k+1, folds)
		}
	}
	var err error
	if c.op, err = calibrate(c.goodScores, falseReject); err != nil {
		return c, fmt.Errorf("train %s: %w", what, err)
	}
	c.threshold = c.op.Threshold
	if err := ctx.Err(); err != nil {
		return c, fmt.Errorf("train %s: %w", what, err)
	}
	if c.onnx, err = finalGraph(c.threshold); err != nil {
		return c, fmt.Errorf("train %s: %w", what, err)
	}
	if err := scoreWith(c.onnx, ropts, xs, func(int) bool { return true }, c.trainScores); err != nil {
		return c, fmt.Errorf("train %s: final model: %w", what, err)
	}
	return c, nil
}
