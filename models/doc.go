// Package models is about ML models: the ONNX graphs Takt writes and trains, the signed
// model bundles stations accept, and running models with ONNX Runtime to turn a camera
// frame into scores.
//
// # Basics
//
// InitONNXRuntime loads the ONNX Runtime shared library once per process (LoadRuntime,
// NewRuntime and TrainTemplate do it on first use). A Runtime holds one ONNX Runtime
// session (an onnxruntime_go AdvancedSession) with preallocated input and output tensors.
// LoadRuntime loads a plain ONNX file (float32 NCHW gray or RGB input, 0..1, outputs
// "score" or anomalib's "pred_score", optional "anomaly_map"; identity and threshold from
// takt.* metadata_props). NewRuntime loads a verified Bundle as its Manifest describes it:
// input layout NCHW/NHWC, color gray/RGB/BGR, mean/std, resize mode (stretch, crop,
// letterbox), ROIs, anomaly or classification outputs; it replays the golden set before it
// returns. Infer crops each ROI, converts and resizes with OpenCV into reused Mats and
// normalizes in one pass into the input tensor, runs the session and reads the score,
// class and map: no Go heap allocation per frame in steady state.
//
// # Lifecycle
//
// Load (provider chain, below) -> warm up (RuntimeOptions.Warmup runs on a blank input,
// Info.Warmup; never part of a latency figure) -> validate (input and output names, shapes
// and types against the manifest at load; golden set replay within tolerance) -> serve
// (Infer) -> Close, which destroys the session, tensors and OpenCV buffers. Loading and
// closing 200 times does not grow the process (tested with VmRSS).
//
// # Execution providers
//
// ProviderOptions.Chain, e.g. [tensorrt, cuda, cpu], is tried in order; the first that
// loads serves and is reported in Info.Provider and every Result.Provider. Passing over a
// provider sets Info.Degraded with the reason in Info.Fallback; with Require set, that
// provider failing is ErrProviderUnavailable instead. TensorRT engines are cached under
// EngineCacheDir/EngineCacheKey(model sha256, ONNX Runtime version, TensorRT version, GPU,
// precision); an engine that is not cached is built on a goroutine while the next
// provider serves, with progress in the log, and Infer swaps the TensorRT session in
// between two frames (EngineBuild reports the build). On a CPU-only ONNX Runtime, TensorRT
// and CUDA fail to load their provider libraries and the chain falls back to CPU.
//
// # Bundles
//
// The bundle format, signing and trust live in package models/bundle (pure Go);
// NewRuntime takes a verified bundle.Bundle and replays its golden set.
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
// ONNX Runtime and OpenCV are cgo; without cgo the constructors return ErrNoCgo; bundles,
// manifests and keys (package bundle) work without cgo.
//
// Concurrency: a Runtime is for one goroutine at a time (it reuses its tensors and OpenCV
// buffers; AdvancedSession is not for sharing): run one Runtime per worker, each with a
// share of the cores (RuntimeOptions.Threads). Info, Attempts and EngineBuild may be
// called from any goroutine. Result.ROIs belongs to the Runtime until the next Infer.
//
// What this machine cannot exercise: a real TensorRT engine build and its timing cache,
// and CUDA sessions; tests stand a CPU session in for the TensorRT build to test the
// background build, swap, cache folder and abandon-on-Close paths.
package models
