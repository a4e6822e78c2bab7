//go:build cgo

package train

import (
	"context"
	"fmt"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	ort "github.com/yalue/onnxruntime_go"
)

// TrainPatchCore trains a PatchCore-like anomaly model (see PatchCoreOptions) on good
// images (gray or BGR, any size; other aspects are stretched) and calibrates its threshold
// by k-fold cross-validation as TrainTemplate does. It loads ONNX Runtime if needed and
// writes nothing. ctx stops training between steps.
func TrainPatchCore(ctx context.Context, good []camera.Frame, opts PatchCoreOptions) (*TrainedModel, error) {
	opts, in, err := patchCorePlan(good, opts)
	if err != nil {
		return nil, err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return nil, fmt.Errorf("train patchcore: %w", err)
	}
	xs, err := preprocessGood("patchcore", good, in)
	if err != nil {
		return nil, err
	}
	h, w, d := patchDims(in, opts)
	feats, err := patchFeaturesAll(in, opts, xs)
	if err != nil {
		return nil, fmt.Errorf("train patchcore: %w", err)
	}
	final := func(threshold float64) ([]byte, error) {
		bank := buildBank(feats, h, w, d, func(int) bool { return true }, opts)
		return patchCoreGraph(in, opts, bank, patchCoreMeta(opts, in, threshold, len(good), bank.size()))
	}
	c, err := crossValidate(ctx, "patchcore", xs, opts.Folds, opts.FalseReject, opts.Threads, opts.Progress,
		func(use func(int) bool) ([]byte, error) {
			return patchCoreGraph(in, opts, buildBank(feats, h, w, d, use, opts), nil)
		},
		final)
	if err != nil {
		return nil, err
	}
	return &TrainedModel{
		ONNX: c.onnx, Name: opts.Name, Version: opts.Version, Input: in, Threshold: c.threshold, Operating: c.op,
		GoodScores: c.goodScores, TrainScores: c.trainScores, Folds: opts.Folds, TrainedAt: opts.TrainedAt,
		Method: MethodPatchCore, regraph: final,
	}, nil
}

// patchFeaturesAll runs the feature graph in ONNX Runtime on every input; each result is
// [D][h*w] floats.
func patchFeaturesAll(in bundle.InputShape, opts PatchCoreOptions, xs [][]float32) ([][]float32, error) {
	data, err := patchFeatureGraph(in, opts)
	if err != nil {
		return nil, err
	}
	h, w, d := patchDims(in, opts)
	return runGraphAll(data, "patch", ort.NewShape(inputDims(in)...),
		ort.NewShape(1, int64(d), int64(h), int64(w)), opts.Threads, xs, "features")
}
