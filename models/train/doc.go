// Package train holds the few-shot trainers that write Takt's ONNX anomaly models from a
// few good images (and optional labeled defects): the template model, PatchCore-like
// memory banks (on a filter bank or a backbone from package backbone), supervised heads,
// their ensemble, and the evaluation helpers (AUROC, confusion, F1 thresholds). Trained
// models run in package models like any other ONNX model; TrainedModel.Manifest gives
// the bundle manifest (package bundle).
//
// # Template anomaly model
//
// TrainTemplate learns, per pixel, the mean and standard deviation of the blurred gray
// image over a few good parts, and writes an ONNX model that scores a new image as
//
//	blurred = GaussianBlur(image, BlurSigma)        Pad (reflect), separable Conv
//	map     = BoxMean(|blurred - mean| / std)        AveragePool, MapSmooth x MapSmooth
//	score   = max(map)                               ReduceMax
//
// so the map (output anomaly_map, [1,1,H,W]) is in standard deviations and score is [1].
// mean and std are computed from the blurred good images as ONNX Runtime computes them,
// by running the model's own blur graph, so training and inference see the same numbers.
// Per pixel,
//
//	std = sqrt(max(s, MinStd)^2 + PoseJitter^2 * |grad mean|^2)
//
// with s the sample std over the good images: the floor keeps flat regions, where good
// images hardly vary, from exploding on sensor noise, and the gradient term tolerates a
// part that sits PoseJitter pixels off, which a few good images rarely show in full.
//
// Threshold rule: every good image is scored by a model trained without it, by k-fold
// cross-validation with k = min(n, 10) and image i in fold i mod k (leave-one-out for up
// to 10 images; above that each fold holds out about n/10). These out-of-sample scores are
// TrainedModel.GoodScores and
//
//	threshold = max(MinThreshold, max(GoodScores) * (1 + Margin))
//
// A score above the threshold is anomalous. At least 2 good images are needed; 10 or more
// give a much steadier threshold. The deployed model is trained on all images, so new good
// parts typically score a little below GoodScores.
//
// # Few-shot trainer
//
// Train is what `takt model train` and the cloud trainer call: from a TrainSet (good
// images, optional labeled defects) it trains the template, TrainPatchCore's memory bank
// and their ensemble (MethodEnsemble: one graph, each score over its own threshold, the
// larger counts), keeps the method with the best cross-validated AUROC (on the defects, or
// on pseudo-defects drawn on held-out good images), moves the threshold to the best F1
// when defects exist, and with enough of them adds a supervised head (logistic regression
// in the graph, head.go). TrainedModel.Metrics carries the figures into the manifest.
// EvaluateScores, ConfusionAt and BestF1Threshold are the evaluation helpers.
//
// # Caveats
//
// Training runs graphs in ONNX Runtime (cgo); without cgo the trainers return
// models.ErrNoCgo. The evaluation helpers are pure Go.
package train
