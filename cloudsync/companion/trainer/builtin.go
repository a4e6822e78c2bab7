package trainer

// The one file that calls the models package's trainers: their option types
// and entry points may change, and this adapter is where that is absorbed.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/takt-edge/takt/cloudsync/strictyaml"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/train"
	"github.com/takt-edge/takt/models/train/backbone"
)

// builtinMethods are the builtin trainer's methods (ExperimentConfig.Method).
var builtinMethods = []string{"template", "patchcore"}

// builtin trains with the models package in process.
type builtin struct {
	method   string
	template templateOptions
	patch    patchCoreOptions
}

// templateOptions are a template experiment's options: train.TemplateOptions and
// threshold_rule (train.TrainOptions.ThresholdRule: false-reject, the default, keeps the
// false_reject budget; best-f1 takes the best F1 on the labelled defects).
type templateOptions struct {
	train.TemplateOptions `yaml:",inline"`
	ThresholdRule         string `yaml:"threshold_rule"`
}

// patchCoreOptions are a patchcore experiment's options: train.PatchCoreOptions (color
// among them: auto, gray or rgb, as for the template), backbone (auto, the default: with
// at least min_head_defects labelled defects and no width or height, the recommended
// backbone beside the filter bank, as takt model train does; none),
// threshold_rule as for the template, and min_head_defects
// (train.TrainOptions.MinHeadDefects: labelled defects it takes to train the supervised
// head; default 10, negative never).
type patchCoreOptions struct {
	train.PatchCoreOptions `yaml:",inline"`
	ThresholdRule          string `yaml:"threshold_rule"`
	MinHeadDefects         int    `yaml:"min_head_defects"`
	RecommendedBackbone    string `yaml:"backbone"`
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
	if err := strictyaml.Decode(&e.Options, dst); err != nil {
		return nil, fmt.Errorf("%s: %w", e.Method, err)
	}
	switch rule := cmp.Or(b.template.ThresholdRule, b.patch.ThresholdRule); rule {
	case "", eval.RuleFalseReject, eval.RuleBestF1:
	default:
		return nil, fmt.Errorf("%s: threshold_rule %q: want %s or %s", e.Method, rule, eval.RuleFalseReject, eval.RuleBestF1)
	}
	switch bb := b.patch.RecommendedBackbone; bb {
	case "", "auto", "none":
	default:
		return nil, fmt.Errorf("%s: backbone %q: want auto or none", e.Method, bb)
	}
	switch color := cmp.Or(b.template.Color, b.patch.Color); color {
	case "", train.ColorAuto, train.ColorGray, train.ColorRGB:
	default:
		return nil, fmt.Errorf("%s: color %q: want %s, %s or %s", e.Method, color, train.ColorAuto, train.ColorGray, train.ColorRGB)
	}
	return b, nil
}

// Train reads data/good/ and data/defect/ and trains with train.Train: the
// defects (the operators' false_accept labels, and unlabelled FAILs when
// training.trust_fail) let the threshold, kept within the method's
// false_reject budget on the cross-validated good scores, report the escapes
// expected at it, and, for patchcore with at least min_head_defects of them,
// train the supervised head.
func (b *builtin) Train(ctx context.Context, job TrainInput, log io.Writer) (*Candidate, error) {
	good, err := ReadImages(filepath.Join(job.Data, ClassGood))
	if err != nil {
		return nil, err
	}
	defects, err := readDefects(job.Data)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "builtin %s: %d good images, %d defect images\n", b.method, len(good), len(defects))
	opts := train.TrainOptions{Method: b.method, Name: job.Name, Version: job.Version, Threads: job.Threads,
		Template: b.template.TemplateOptions, PatchCore: b.patch.PatchCoreOptions, MinHeadDefects: b.patch.MinHeadDefects,
		FalseReject: cmp.Or(b.template.FalseReject, b.patch.FalseReject), ThresholdRule: cmp.Or(b.template.ThresholdRule, b.patch.ThresholdRule)}
	if b.patch.RecommendedBackbone != "none" {
		rec, applies, err := train.RecommendedBackbone(b.method, cmp.Or(b.patch.MinHeadDefects, train.DefaultMinHeadDefects),
			len(defects), b.patch.Width, b.patch.Height)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w (options backbone: none trains without it)", err)
		case applies && rec.Dir != "":
			if opts.Backbone, err = rec.Options(); err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "builtin %s: backbone %s at %s beside the filter bank\n", b.method, rec.Path(), rec.Layer)
		case applies:
			fmt.Fprintf(log, "builtin %s: no recommended backbone in %v: the filter bank alone\n", b.method, backbone.RecommendedDirs())
		}
	}
	if opts.ThresholdRule == eval.RuleBestF1 && len(defects) == 0 {
		// Nothing labelled yet: the budget rule until operators label defects.
		opts.ThresholdRule = eval.RuleFalseReject
	}
	tm, err := train.Train(ctx, train.TrainSet{Good: good, Defects: defects}, opts)
	if err != nil {
		return nil, err
	}
	m, err := tm.Manifest()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "builtin %s: input %s, threshold %.4g (%s), expected false rejects %.2f%%, cross-validated good scores max %.4g",
		b.method, tm.Input, tm.Threshold, tm.Operating.Rule, 100*tm.Operating.FalseReject, slices.Max(tm.GoodScores))
	if len(defects) > 0 {
		fmt.Fprintf(log, ", cv auroc %.3f f1 %.3f with the defects, supervised head %v", tm.Metrics["cv_auroc"], tm.Metrics["cv_f1"], tm.Supervised)
	}
	fmt.Fprintln(log)
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

// readDefects reads data/defect/ with each image's kind from labels.json:
// the operator's label (false_accept) or the station's decision (FAIL).
func readDefects(data string) ([]train.LabeledFrame, error) {
	frames, err := ReadImages(filepath.Join(data, ClassDefect))
	if err != nil || len(frames) == 0 {
		return nil, err
	}
	kinds := map[string]string{}
	if raw, err := os.ReadFile(filepath.Join(data, "labels.json")); err == nil {
		var lf LabelsFile
		if err := json.Unmarshal(raw, &lf); err != nil {
			return nil, fmt.Errorf("%s/labels.json: %w", data, err)
		}
		for _, e := range lf.Images {
			kinds[path.Base(e.File)] = cmp.Or(e.Label, strings.ToLower(e.Decision))
		}
	}
	out := make([]train.LabeledFrame, len(frames))
	for i, f := range frames {
		out[i] = train.LabeledFrame{Frame: f, Label: cmp.Or(kinds[filepath.Base(f.Origin)], ClassDefect)}
	}
	return out, nil
}
