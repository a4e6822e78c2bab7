package companion

// The one file that calls the models package's trainers: their option types
// and entry points may change, and this adapter is where that is absorbed.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
)

// builtinMethods are the builtin trainer's methods (ExperimentConfig.Method).
var builtinMethods = []string{"template", "patchcore"}

// builtin trains with the models package in process.
type builtin struct {
	method   string
	template models.TemplateOptions
	patch    models.PatchCoreOptions
}

var _ Trainer = (*builtin)(nil)

// builtinTrainer decodes the experiment's options strictly into the method's
// options type (unknown keys are errors).
func builtinTrainer(e ExperimentConfig) (*builtin, error) {
	b := &builtin{method: e.Method}
	var dst any
	switch e.Method {
	case "template":
		dst = &b.template
	case "patchcore":
		dst = &b.patch
	default:
		return nil, fmt.Errorf("method %q is not one of %q", e.Method, builtinMethods)
	}
	if e.Options.Kind == 0 {
		return b, nil
	}
	raw, err := yaml.Marshal(&e.Options)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", e.Method, yamlErr(err))
	}
	return b, nil
}

// Train reads data/good/ and trains; defects are not used by these
// trainers (the validation set judges them).
func (b *builtin) Train(ctx context.Context, job TrainInput, log io.Writer) (*Candidate, error) {
	good, err := readImages(job.Data + "/good")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "builtin %s: %d good images\n", b.method, len(good))
	var tm *models.TrainedModel
	switch b.method {
	case "template":
		o := b.template
		o.Name, o.Version, o.Threads = job.Name, job.Version, job.Threads
		tm, err = models.TrainTemplate(ctx, good, o)
	case "patchcore":
		o := b.patch
		o.Name, o.Version, o.Threads = job.Name, job.Version, job.Threads
		tm, err = models.TrainPatchCore(ctx, good, o)
	}
	if err != nil {
		return nil, err
	}
	m, err := tm.Manifest()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "builtin %s: input %s, threshold %.4g, cross-validated good scores max %.4g\n",
		b.method, tm.Input, tm.Threshold, slices.Max(tm.GoodScores))
	// The golden set: the first good images with the scores the final model gives them.
	var golden []Golden
	for i, f := range good[:min(3, len(good))] {
		png, err := camera.Encode(f, "png", 0)
		if err != nil {
			return nil, fmt.Errorf("golden image %d: %w", i, err)
		}
		golden = append(golden, Golden{PNG: png, Score: tm.TrainScores[i]})
	}
	return &Candidate{ONNX: tm.ONNX, Manifest: m, GoodScores: tm.GoodScores, Golden: golden}, nil
}
