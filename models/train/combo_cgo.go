//go:build cgo

package train

import (
	"context"
	"fmt"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
)

// comboHead is what trainComboHead returns besides the model: the cross-validated
// AUROCs of the head and of each extractor's map score alone, over the same rows.
type comboHead struct {
	auroc, fbMapAUROC, bbMapAUROC float64
}

// trainComboHead trains the filter bank beside the backbone (see comboGraph): both
// extractors' features of every image, per fold a bank of each from the good images
// outside the fold, the joint graph run on the fold's held-out good images and on the
// defects of the fold, and the head cross-validated over those rows as
// trainPatchCoreHead does; the final model has both banks built from every good image.
// opts is planned (trainPlan) with a backbone.
func trainComboHead(ctx context.Context, good []camera.Frame, labeled []LabeledFrame, opts TrainOptions) (*TrainedModel, comboHead, error) {
	defects, kinds := headKinds(len(good), labeled)
	var res comboHead
	fail := func(err error) (*TrainedModel, comboHead, error) {
		return nil, res, fmt.Errorf("train with filter bank: %w", err)
	}
	bbO, in, err := patchCorePlan(good, opts.PatchCore)
	if err != nil {
		return nil, res, err
	}
	fbO, err := comboFilterBankOptions(bbO, in)
	if err != nil {
		return nil, res, fmt.Errorf("train: %w", err)
	}
	fbO, fbIn, err := patchCorePlan(good, fbO)
	if err != nil {
		return fail(fmt.Errorf("filter bank: %w", err))
	}
	if fbIn != in {
		return fail(fmt.Errorf("the filter bank's input %s differs from the backbone's %s", fbIn, in))
	}
	xs, err := preprocessGood("with filter bank", good, in)
	if err != nil {
		return nil, res, err
	}
	ds, err := preprocessGood("with filter bank", defects, in)
	if err != nil {
		return nil, res, err
	}
	type half struct {
		o       PatchCoreOptions
		feats   [][]float32
		h, w, d int
	}
	halves := [2]*half{{o: fbO}, {o: bbO}}
	for _, hv := range halves {
		hv.h, hv.w, hv.d = patchDims(in, hv.o)
		if hv.feats, err = patchFeaturesAll(in, hv.o, xs); err != nil {
			return fail(err)
		}
	}
	banks := func(use func(int) bool) (fb, bb *patchBank) {
		b := [2]*patchBank{}
		for i, hv := range halves {
			b[i] = buildBank(hv.feats, hv.h, hv.w, hv.d, use, hv.o)
		}
		return b[0], b[1]
	}
	dim := headDim(halves[0].d) + headDim(halves[1].d)
	folds := bbO.Folds
	rows, err := foldHeadRows(ctx, xs, ds, folds, in, bbO.Threads, dim, opts.Progress, func(use func(int) bool) ([]byte, error) {
		fb, bb := banks(use)
		return comboGraph(in, fbO, fb, bbO, bb, nil, true, nil)
	})
	if err != nil {
		return fail(err)
	}
	hf, err := fitHeadRows(rows, len(xs), kinds, opts)
	if err != nil {
		return fail(err)
	}
	res.auroc = hf.auroc
	res.fbMapAUROC = hf.columnAUROC(rows, 2*halves[0].d)
	res.bbMapAUROC = hf.columnAUROC(rows, headDim(halves[0].d)+2*halves[1].d)
	final := func(threshold float64) ([]byte, error) {
		fb, bb := banks(func(int) bool { return true })
		meta := comboMeta(fbO, bbO, in, threshold, len(good), fb.size(), bb.size(), len(defects), hf.head.kinds, opts.HeadLambda)
		return comboGraph(in, fbO, fb, bbO, bb, hf.head, false, meta)
	}
	onnx, err := final(hf.threshold)
	if err != nil {
		return fail(err)
	}
	trainScores := make([]float64, len(xs))
	if err := scoreWith(onnx, models.RuntimeOptions{Threads: bbO.Threads, Warmup: -1}, xs, func(int) bool { return true }, trainScores); err != nil {
		return fail(fmt.Errorf("final model: %w", err))
	}
	return &TrainedModel{
		ONNX: onnx, Name: bbO.Name, Version: bbO.Version, Input: in, Threshold: hf.threshold, Operating: hf.op,
		GoodScores: append([]float64(nil), hf.probs[:len(xs)]...), TrainScores: trainScores, Folds: folds, TrainedAt: bbO.TrainedAt,
		Method: MethodPatchCore, Supervised: true, Metrics: map[string]float64{"cv_f1": hf.f1}, regraph: final,
	}, res, nil
}
