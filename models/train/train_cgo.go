//go:build cgo

package train

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
	ort "github.com/yalue/onnxruntime_go"
)

// Train is the few-shot trainer behind `takt model train`: it trains the method(s) of
// opts on set.Good and returns the model to ship, with its metrics.
//
//   - Good images only: the threshold is calibrated on cross-validated good scores (see
//     TrainTemplate). MethodAuto first measures the images' alignment (see alignment):
//     below alignedThreshold (a texture, loosely placed parts) it trains PatchCore; at or
//     above (parts on a fixture) it trains the template, PatchCore and their ensemble (see
//     MethodEnsemble) and keeps the one with the highest AUROC of held-out good images
//     against pseudo-defects (blobs and thin lines drawn on them, see pseudoDefect).
//   - With a backbone (opts.Backbone), the method is PatchCore on its features.
//   - With a backbone and at least MinHeadDefects defects (opts.WithFilterBank, the
//     default unless BackboneAlone): one model with the filter-bank and the backbone
//     PatchCore side by side and the supervised head over both (see comboGraph); no
//     unsupervised candidate is trained. Metrics: with_filter_bank (0/1, with a backbone)
//     and cv_auroc_backbone_folds, the backbone's map score on the head's folds.
//   - With labeled defects: methods are compared by the AUROC of their cross-validated
//     good scores against the defects' scores, and the threshold moves to the best F1.
//   - With at least MinHeadDefects defects (and PatchCore allowed): a supervised head
//     (logistic regression on image-level statistics of the patch features, the anomaly
//     map and the image's brightness, in the graph; see head.go) is trained too. It
//     replaces PatchCore, its base; another method (template, ensemble) only when the
//     head's cross-validated AUROC is at least that method's. Its score is a defect
//     probability.
//
// Metrics holds cv_auroc_<method> of each candidate, cv_f1 at the threshold (with
// defects), alignment (auto without labels), defect_images, supervised (0/1) and
// train_seconds. ctx stops it between steps.
func Train(ctx context.Context, set TrainSet, opts TrainOptions) (*TrainedModel, error) {
	start := time.Now()
	opts, err := trainPlan(set, opts)
	if err != nil {
		return nil, err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	metrics := map[string]float64{"defect_images": float64(len(set.Defects))}
	defects := make([]camera.Frame, len(set.Defects))
	for i, d := range set.Defects {
		defects[i] = d.Frame
	}
	if opts.WithFilterBank {
		// The joint model is a head; PatchCore alone on either extractor would only be
		// replaced by it (as below), so it is not trained first.
		m, res, err := trainComboHead(ctx, set.Good, set.Defects, opts)
		if err != nil {
			return nil, err
		}
		metrics["cv_auroc_patchcore_head"] = res.auroc
		metrics["cv_auroc_patchcore_folds"] = res.fbMapAUROC
		metrics["cv_auroc_backbone_folds"] = res.bbMapAUROC
		metrics["with_filter_bank"] = 1
		metrics["cv_auroc"] = res.auroc
		metrics["cv_f1"] = m.Metrics["cv_f1"]
		metrics["supervised"] = 1
		metrics["train_seconds"] = time.Since(start).Seconds()
		m.Metrics = metrics
		return m, nil
	}
	methods := []string{opts.Method}
	if opts.Method == MethodAuto {
		methods = []string{MethodTemplate, MethodPatchCore, MethodEnsemble}
		switch {
		case !oneView(set.Good):
			// Images of differing aspect are not one camera's view of parts on a fixture:
			// the template cannot take them, the texture model stretches each to its input.
			methods = []string{MethodPatchCore}
		case len(set.Defects) == 0:
			// Without labels, pseudo-defects cannot tell a texture model from a template
			// (a blob on a texture is as easy for both); how alike the good images are in
			// place can (see alignment).
			a, err := goodAlignment(set.Good)
			if err != nil {
				return nil, err
			}
			metrics["alignment"] = a
			if !alignedParts(a) {
				methods = []string{MethodPatchCore}
			}
		}
	}
	var best *TrainedModel
	var bestDefectScores []float64
	bestAUROC := math.Inf(-1)
	trained := map[string]*TrainedModel{}
	for _, meth := range methods {
		var m *TrainedModel
		if meth == MethodEnsemble && opts.Method == MethodAuto && trained[MethodTemplate].Input != trained[MethodPatchCore].Input {
			continue // sizes set apart by the caller: no common input to share
		}
		if meth == MethodEnsemble && trained[MethodTemplate] != nil && trained[MethodPatchCore] != nil {
			m, err = ensembleOf(trained[MethodTemplate], trained[MethodPatchCore], opts)
		} else {
			m, err = trainMethod(ctx, meth, set.Good, opts, opts.Progress)
		}
		if err != nil {
			return nil, err
		}
		trained[meth] = m
		var auroc float64
		var ds []float64
		switch {
		case len(defects) > 0:
			if ds, err = scoreRaw(m.ONNX, m.Input, opts.Threads, defects); err != nil {
				return nil, fmt.Errorf("train %s: score defects: %w", meth, err)
			}
			auroc = eval.EvaluateScores(m.GoodScores, ds)
		case len(methods) > 1:
			if auroc, err = pseudoAUROC(ctx, meth, set.Good, opts, opts.Progress); err != nil {
				return nil, err
			}
		}
		if len(methods) > 1 || len(defects) > 0 {
			metrics["cv_auroc_"+meth] = auroc
		}
		// On a tie the ensemble wins: with a handful of images the check saturates, and the
		// ensemble fails a part whenever either model would.
		if best == nil || auroc > bestAUROC || (meth == MethodEnsemble && auroc >= bestAUROC) {
			best, bestAUROC, bestDefectScores = m, auroc, ds
		}
	}
	if opts.MinHeadDefects > 0 && len(defects) >= opts.MinHeadDefects && opts.Method != MethodTemplate {
		hm, auroc, mapAUROC, err := trainPatchCoreHead(ctx, set.Good, set.Defects, opts)
		if err != nil {
			return nil, err
		}
		metrics["cv_auroc_patchcore_head"] = auroc
		metrics["cv_auroc_patchcore_folds"] = mapAUROC
		// Over PatchCore, its own base, the head is always kept: on the magnetic tiles it
		// beat PatchCore on the held-out defects in every split, while cross-validation
		// on the training defects favoured either by turns (models/README.md,
		// "Trainer results"); both cross-validated figures go to the metrics. Another method
		// (template, ensemble) must be beaten by its own figure.
		if best.Method == MethodPatchCore || auroc >= bestAUROC {
			best, bestAUROC = hm, auroc
			metrics["cv_f1"] = hm.Metrics["cv_f1"]
		}
	}
	if len(defects) > 0 && !best.Supervised {
		floor := 0.0
		if best.Method != MethodEnsemble {
			floor = MinThreshold
		}
		op, err := eval.ChooseThreshold(best.GoodScores, bestDefectScores, opts.ThresholdRule, opts.FalseReject, floor)
		if err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		if op.Threshold != best.Threshold {
			if best.ONNX, err = best.regraph(op.Threshold); err != nil {
				return nil, fmt.Errorf("train: %w", err)
			}
			best.Threshold = op.Threshold
		}
		best.Operating = op
		metrics["cv_f1"] = eval.F1AtThreshold(best.GoodScores, bestDefectScores, op.Threshold)
	}
	if len(defects) > 0 || len(methods) > 1 {
		metrics["cv_auroc"] = bestAUROC
	}
	metrics["supervised"] = map[bool]float64{true: 1}[best.Supervised]
	if opts.PatchCore.bb != nil {
		metrics["with_filter_bank"] = 0
	}
	metrics["train_seconds"] = time.Since(start).Seconds()
	best.Metrics = metrics
	return best, nil
}

// goodAlignment is the alignment of (up to alignMaxImages of) the good images, compared
// gray at alignWidth px wide.
func goodAlignment(good []camera.Frame) (float64, error) {
	if len(good) > alignMaxImages {
		good = good[:alignMaxImages]
	}
	h := max(8, int(math.Round(float64(alignWidth)*float64(good[0].Height)/float64(good[0].Width))))
	xs, err := preprocessGood("alignment", good, bundle.InputShape{Channels: 1, Height: h, Width: alignWidth})
	if err != nil {
		return 0, err
	}
	return alignment(xs, alignWidth, h, alignSigma), nil
}

func trainMethod(ctx context.Context, meth string, good []camera.Frame, opts TrainOptions, progress func(string, int, int)) (*TrainedModel, error) {
	hook := func(done, total int) {
		if progress != nil {
			progress(meth, done, total)
		}
	}
	switch meth {
	case MethodTemplate:
		o := opts.Template
		o.Progress = hook
		return TrainTemplate(ctx, good, o)
	case MethodEnsemble:
		tm, err := trainMethod(ctx, MethodTemplate, good, opts, progress)
		if err != nil {
			return nil, err
		}
		pm, err := trainMethod(ctx, MethodPatchCore, good, opts, progress)
		if err != nil {
			return nil, err
		}
		return ensembleOf(tm, pm, opts)
	default:
		o := opts.PatchCore
		o.Progress = hook
		return TrainPatchCore(ctx, good, o)
	}
}

// ensembleOf joins a template and a PatchCore model trained on the same images and input
// size (see MethodEnsemble). Its held-out good scores are the larger of the two models'
// scores over their thresholds (1 is where either model's own threshold lies); its own
// threshold is chosen on them for the false-reject budget, since a part fails when either
// model would and the two budgets add up.
func ensembleOf(tm, pm *TrainedModel, opts TrainOptions) (*TrainedModel, error) {
	if tm == nil || pm == nil {
		return nil, fmt.Errorf("train ensemble: needs the template and the patchcore model")
	}
	if tm.Input != pm.Input {
		return nil, fmt.Errorf("train ensemble: template input %s and patchcore input %s differ", tm.Input, pm.Input)
	}
	methodOf := func(m *TrainedModel) string {
		h, err := bundle.InspectModel(m.ONNX)
		if err != nil {
			return m.Method
		}
		return h.Meta()[bundle.MetaMethod]
	}
	final := func(threshold float64) ([]byte, error) {
		meta := ensembleMeta(opts.Name, opts.Version, tm.Input, threshold, len(tm.GoodScores), opts.TrainedAt.UTC().Format(time.RFC3339),
			tm.Threshold, pm.Threshold, methodOf(tm), methodOf(pm))
		return mergeEnsemble(tm.ONNX, pm.ONNX, tm.Threshold, pm.Threshold, meta)
	}
	good := make([]float64, len(tm.GoodScores))
	train := make([]float64, len(tm.GoodScores))
	for i := range good {
		good[i] = max(tm.GoodScores[i]/tm.Threshold, pm.GoodScores[i]/pm.Threshold)
		train[i] = max(tm.TrainScores[i]/tm.Threshold, pm.TrainScores[i]/pm.Threshold)
	}
	op, err := eval.ChooseThreshold(good, nil, eval.RuleFalseReject, opts.FalseReject, 0)
	if err != nil {
		return nil, fmt.Errorf("train ensemble: %w", err)
	}
	onnx, err := final(op.Threshold)
	if err != nil {
		return nil, err
	}
	return &TrainedModel{ONNX: onnx, Name: opts.Name, Version: opts.Version, Input: tm.Input, Threshold: op.Threshold, Operating: op,
		GoodScores: good, TrainScores: train, Folds: tm.Folds, TrainedAt: opts.TrainedAt, Method: MethodEnsemble, regraph: final}, nil
}

// pseudoAUROC trains meth on two thirds of the good images and returns the AUROC of the
// other third against pseudo-defects drawn on them (two each).
func pseudoAUROC(ctx context.Context, meth string, good []camera.Frame, opts TrainOptions, progress func(string, int, int)) (float64, error) {
	var train, held []camera.Frame
	for i, f := range good {
		if i%3 == 2 {
			held = append(held, f)
		} else {
			train = append(train, f)
		}
	}
	if len(train) < 2 || len(held) < 1 {
		return math.NaN(), nil // too few images to compare: the first method stays
	}
	o := opts
	o.Template.Progress, o.PatchCore.Progress = nil, nil
	o.PatchCore.Folds = min(len(train), 3)
	if progress != nil {
		progress("check "+meth, 0, 1)
	}
	m, err := trainMethod(ctx, meth, train, o, func(string, int, int) {})
	if progress != nil {
		progress("check "+meth, 1, 1)
	}
	if err != nil {
		return 0, fmt.Errorf("train %s: pseudo-defect check: %w", meth, err)
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x5eed))
	var pseudo []camera.Frame
	for _, f := range held {
		pseudo = append(pseudo, pseudoDefect(f, rng), pseudoDefect(f, rng))
	}
	gs, err := scoreRaw(m.ONNX, m.Input, opts.Threads, held)
	if err != nil {
		return 0, fmt.Errorf("train %s: pseudo-defect check: %w", meth, err)
	}
	ps, err := scoreRaw(m.ONNX, m.Input, opts.Threads, pseudo)
	if err != nil {
		return 0, fmt.Errorf("train %s: pseudo-defect check: %w", meth, err)
	}
	return eval.EvaluateScores(gs, ps), nil
}

// scoreRaw scores frames with model data as Runtime.Infer would.
func scoreRaw(data []byte, in bundle.InputShape, threads int, frames []camera.Frame) ([]float64, error) {
	xs, err := preprocessGood("scoring", frames, in)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(xs))
	err = scoreWith(data, models.RuntimeOptions{Threads: threads, Warmup: -1}, xs, func(int) bool { return true }, out)
	return out, err
}

// trainPatchCoreHead trains PatchCore with the supervised head (see head.go) and returns it
// with the head's cross-validated AUROC and that of PatchCore's own score on the same
// folds. Every head input row comes from a fold model whose bank did not see the image;
// the head is cross-validated in 5 folds over those rows. Both AUROCs are the mean of
// the folds' AUROCs: the five fold heads' probabilities are not on one scale, and
// pooling them understates the head against the single score it competes with
// (models/README.md, "Trainer results"). The threshold (best F1) comes from the pooled probabilities.
func trainPatchCoreHead(ctx context.Context, good []camera.Frame, labeled []LabeledFrame, opts TrainOptions) (*TrainedModel, float64, float64, error) {
	defects, kinds := headKinds(len(good), labeled)
	po, in, err := patchCorePlan(good, opts.PatchCore)
	if err != nil {
		return nil, 0, 0, err
	}
	xs, err := preprocessGood("patchcore head", good, in)
	if err != nil {
		return nil, 0, 0, err
	}
	ds, err := preprocessGood("patchcore head", defects, in)
	if err != nil {
		return nil, 0, 0, err
	}
	h, w, d := patchDims(in, po)
	feats, err := patchFeaturesAll(in, po, xs)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("train patchcore head: %w", err)
	}
	folds := po.Folds
	rows, err := foldHeadRows(ctx, xs, ds, folds, in, po.Threads, headDim(d), opts.Progress, func(use func(int) bool) ([]byte, error) {
		return patchCoreHeadGraph(in, po, buildBank(feats, h, w, d, use, po), nil, true, nil)
	})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("train patchcore head: %w", err)
	}
	hf, err := fitHeadRows(rows, len(xs), kinds, opts)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("train patchcore head: %w", err)
	}
	mapAUROC := hf.columnAUROC(rows, 2*d) // the map score's place in the head vector
	head, th, f1, goodP := hf.head, hf.threshold, hf.f1, hf.probs[:len(xs)]
	auroc := hf.auroc
	final := func(threshold float64) ([]byte, error) {
		bank := buildBank(feats, h, w, d, func(int) bool { return true }, po)
		meta := patchCoreMeta(po, in, threshold, len(good), bank.size())
		for i := range meta {
			if meta[i][0] == bundle.MetaMethod {
				meta[i][1] += fmt.Sprintf(" head=logistic defects=%d kinds=%s lambda=%g", len(defects), strings.Join(head.kinds, ","), opts.HeadLambda)
			}
		}
		return patchCoreHeadGraph(in, po, bank, head, false, meta)
	}
	onnx, err := final(th)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("train patchcore head: %w", err)
	}
	trainScores := make([]float64, len(xs))
	if err := scoreWith(onnx, models.RuntimeOptions{Threads: po.Threads, Warmup: -1}, xs, func(int) bool { return true }, trainScores); err != nil {
		return nil, 0, 0, fmt.Errorf("train patchcore head: final model: %w", err)
	}
	return &TrainedModel{
		ONNX: onnx, Name: po.Name, Version: po.Version, Input: in, Threshold: th, Operating: hf.op,
		GoodScores: append([]float64(nil), goodP...), TrainScores: trainScores, Folds: folds, TrainedAt: po.TrainedAt,
		Method: MethodPatchCore, Supervised: true, Metrics: map[string]float64{"cv_f1": f1}, regraph: final,
	}, auroc, mapAUROC, nil
}

// headKinds splits labeled defects into their frames and the kinds of the head's rows
// (good images first, nGood of kind "", then the defects; an unlabeled defect is of kind
// "defect").
func headKinds(nGood int, labeled []LabeledFrame) (defects []camera.Frame, kinds []string) {
	defects = make([]camera.Frame, len(labeled))
	kinds = make([]string, nGood, nGood+len(labeled))
	for i, d := range labeled {
		defects[i] = d.Frame
		kinds = append(kinds, cmp.Or(d.Label, "defect"))
	}
	return defects, kinds
}

// foldHeadRows computes the head input ("head_in", dim values) of every good image xs and
// defect ds with folds fold models: graph(use) builds the model whose banks hold the good
// images i with use(i), and a fold's model scores the good images and the share of the
// defects it left out, so no row comes from a bank that saw its image.
func foldHeadRows(ctx context.Context, xs, ds [][]float32, folds int, in bundle.InputShape, threads, dim int,
	progress func(step string, done, total int), graph func(use func(int) bool) ([]byte, error)) ([][]float32, error) {
	all := append(append([][]float32(nil), xs...), ds...)
	rows := make([][]float32, len(all))
	for k := range folds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := graph(func(i int) bool { return i%folds != k })
		if err != nil {
			return nil, fmt.Errorf("fold %d: %w", k, err)
		}
		held := func(i int) bool {
			if i < len(xs) {
				return i%folds == k
			}
			return (i-len(xs))%folds == k
		}
		if err := runOutput(data, in, threads, "head_in", dim, all, held, rows); err != nil {
			return nil, fmt.Errorf("fold %d: %w", k, err)
		}
		if progress != nil {
			progress("head", k+1, folds)
		}
	}
	return rows, nil
}

// headFolds is how many folds the supervised head is cross-validated in, over its rows.
const headFolds = 5

// headFit is a supervised head fitted on rows (good images first, then defects) with the
// figures it was judged by.
type headFit struct {
	head   *kindHeads // fitted on every row
	probs  []float64  // per row, from a head fitted without the row's fold
	labels []bool     // per row: a defect
	auroc  float64    // of probs, the mean of the folds' AUROCs (see foldAUROC)
	// op is the threshold chosen on probs by the options' rule (see eval.ChooseThreshold),
	// threshold its value and f1 the F1 there.
	op            eval.OperatingPoint
	threshold, f1 float64
}

// fitHeadRows cross-validates the heads (see kindHeads) in headFolds folds over rows (the
// first nGood are good images, the rest defects; each row from a fold model whose bank
// did not see the image; kinds as headKinds gives them) and fits the final heads on all
// of them with L2 penalty opts.HeadLambda; the threshold follows opts' rule and budget.
func fitHeadRows(rows [][]float32, nGood int, kinds []string, opts TrainOptions) (*headFit, error) {
	lambda := opts.HeadLambda
	labels := make([]bool, len(rows))
	for i := nGood; i < len(rows); i++ {
		labels[i] = true
	}
	probs := make([]float64, len(rows))
	for k := range headFolds {
		var tx [][]float32
		var tk []string
		for i := range rows {
			if i%headFolds != k {
				tx, tk = append(tx, rows[i]), append(tk, kinds[i])
			}
		}
		hd, err := fitKindHeads(tx, tk, lambda)
		if err != nil {
			return nil, err
		}
		for i := range rows {
			if i%headFolds == k {
				probs[i] = hd.prob(rows[i])
			}
		}
	}
	op, err := eval.ChooseProbabilityThreshold(probs[:nGood], probs[nGood:], opts.ThresholdRule, opts.FalseReject)
	if err != nil {
		return nil, err
	}
	head, err := fitKindHeads(rows, kinds, lambda)
	if err != nil {
		return nil, err
	}
	return &headFit{head: head, probs: probs, labels: labels, auroc: foldAUROC(probs, labels, headFolds), op: op,
		threshold: op.Threshold, f1: eval.F1AtThreshold(probs[:nGood], probs[nGood:], op.Threshold)}, nil
}

// columnAUROC is the AUROC of the rows' input at (a map score: what PatchCore alone
// scores), over the head's folds as its own AUROC is.
func (hf *headFit) columnAUROC(rows [][]float32, at int) float64 {
	s := make([]float64, len(rows))
	for i, r := range rows {
		s[i] = float64(r[at])
	}
	return foldAUROC(s, hf.labels, headFolds)
}

// foldAUROC is the mean over folds (row i in fold i%folds) of the AUROC of scores, good
// against defective (labels), over the folds that hold both.
func foldAUROC(scores []float64, labels []bool, folds int) float64 {
	var sum float64
	var n int
	for k := range folds {
		var g, d []float64
		for i, v := range scores {
			if i%folds != k {
				continue
			}
			if labels[i] {
				d = append(d, v)
			} else {
				g = append(g, v)
			}
		}
		if len(g) > 0 && len(d) > 0 {
			sum += eval.EvaluateScores(g, d)
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// runOutput runs data on every input with use(i) and copies its output out (size floats)
// into dst[i].
func runOutput(data []byte, in bundle.InputShape, threads int, out string, size int, xs [][]float32, use func(int) bool, dst [][]float32) error {
	return runOutputs(data, in, threads, []string{out}, [][]int64{{1, int64(size)}}, xs, use, [][][]float32{dst})
}

// runOutputs runs data on every input with use(i) and copies each output outs[j]
// (of shapes[j]) into dst[j][i].
func runOutputs(data []byte, in bundle.InputShape, threads int, outs []string, shapes [][]int64, xs [][]float32, use func(int) bool, dst [][][]float32) error {
	x, err := ort.NewEmptyTensor[float32](ort.NewShape(inputDims(in)...))
	if err != nil {
		return err
	}
	defer x.Destroy()
	ys := make([]ort.Value, len(outs))
	yt := make([]*ort.Tensor[float32], len(outs))
	for j, sh := range shapes {
		y, err := ort.NewEmptyTensor[float32](ort.NewShape(sh...))
		if err != nil {
			return err
		}
		defer y.Destroy()
		ys[j], yt[j] = y, y
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return err
	}
	defer so.Destroy()
	if threads > 0 {
		if err := so.SetIntraOpNumThreads(threads); err != nil {
			return err
		}
	}
	s, err := ort.NewAdvancedSessionWithONNXData(data, []string{"image"}, outs, []ort.Value{x}, ys, so)
	if err != nil {
		return fmt.Errorf("%v model: %w", outs, err)
	}
	defer s.Destroy()
	for i, xi := range xs {
		if !use(i) {
			continue
		}
		copy(x.GetData(), xi)
		if err := s.Run(); err != nil {
			return fmt.Errorf("image %d: %w", i, err)
		}
		for j := range outs {
			dst[j][i] = append([]float32(nil), yt[j].GetData()...)
		}
	}
	return nil
}
