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

// TrainTemplate trains a template anomaly model on good images (gray or BGR, any size of
// one aspect ratio) and calibrates its threshold, as the package doc describes under
// "Template anomaly model". It needs at least 2 images, loads ONNX Runtime if needed and
// writes nothing: call WriteFile. ctx stops training between steps.
func TrainTemplate(ctx context.Context, good []camera.Frame, opts TemplateOptions) (*TrainedModel, error) {
	opts, in, err := templatePlan(good, opts)
	if err != nil {
		return nil, err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return nil, fmt.Errorf("train template: %w", err)
	}
	xs, err := preprocessGood("template", good, in)
	if err != nil {
		return nil, err
	}
	blurred, err := blurAll(in, opts, xs)
	if err != nil {
		return nil, fmt.Errorf("train template: %w", err)
	}
	folds := min(len(good), maxFolds)
	final := func(threshold float64) ([]byte, error) {
		mean, std := pixelStatsPlanes(blurred, in, func(int) bool { return true }, opts.MinStd, opts.PoseJitter)
		return templateGraph(in, opts, mean, std, templateMeta(opts, in, threshold, len(good)))
	}
	c, err := crossValidate(ctx, "template", xs, folds, opts.FalseReject, opts.Threads, opts.Progress,
		func(use func(int) bool) ([]byte, error) {
			mean, std := pixelStatsPlanes(blurred, in, use, opts.MinStd, opts.PoseJitter)
			return templateGraph(in, opts, mean, std, nil)
		},
		final)
	if err != nil {
		return nil, err
	}
	return &TrainedModel{
		ONNX:        c.onnx,
		Name:        opts.Name,
		Version:     opts.Version,
		Input:       in,
		Threshold:   c.threshold,
		Operating:   c.op,
		GoodScores:  c.goodScores,
		TrainScores: c.trainScores,
		Folds:       folds,
		TrainedAt:   opts.TrainedAt,
		Method:      MethodTemplate,
		regraph:     final,
	}, nil
}

// scoreWith loads model data into a Runtime and sets scores[i] for every input xs[i] with
// use(i), through the same session code as Runtime.Infer.
func scoreWith(data []byte, opts models.RuntimeOptions, xs [][]float32, use func(int) bool, scores []float64) error {
	r, err := models.LoadRuntimeData(data, opts)
	if err != nil {
		return err
	}
	defer r.Close()
	for i, x := range xs {
		if !use(i) {
			continue
		}
		if scores[i], err = r.ScoreInput(x); err != nil {
			return fmt.Errorf("score good image %d: %w", i, err)
		}
	}
	return nil
}

// blurAll runs the template model's blur in ONNX Runtime on every input.
func blurAll(in bundle.InputShape, opts TemplateOptions, xs [][]float32) ([][]float32, error) {
	data, err := blurGraph(in, opts)
	if err != nil {
		return nil, err
	}
	return runGraphAll(data, "blurred", ort.NewShape(inputDims(in)...), ort.NewShape(planeDims(in)...), opts.Threads, xs, "blur")
}

// runGraphAll runs a training-time graph (input "image", one output) in ONNX Runtime on
// every input and returns a copy of the output for each; what names the graph in errors.
func runGraphAll(data []byte, output string, inShape, outShape ort.Shape, threads int, xs [][]float32, what string) ([][]float32, error) {
	x, err := ort.NewEmptyTensor[float32](inShape)
	if err != nil {
		return nil, err
	}
	defer x.Destroy()
	y, err := ort.NewEmptyTensor[float32](outShape)
	if err != nil {
		return nil, err
	}
	defer y.Destroy()
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if threads > 0 {
		if err := so.SetIntraOpNumThreads(threads); err != nil {
			return nil, err
		}
	}
	s, err := ort.NewAdvancedSessionWithONNXData(data, []string{"image"}, []string{output},
		[]ort.Value{x}, []ort.Value{y}, so)
	if err != nil {
		return nil, fmt.Errorf("%s model: %w", what, err)
	}
	defer s.Destroy()
	out := make([][]float32, len(xs))
	for i, xi := range xs {
		copy(x.GetData(), xi)
		if err := s.Run(); err != nil {
			return nil, fmt.Errorf("%s of good image %d: %w", what, i, err)
		}
		out[i] = append([]float32(nil), y.GetData()...)
	}
	return out, nil
}
