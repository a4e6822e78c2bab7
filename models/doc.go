// Package models is about ML models: the ONNX graphs Takt writes and trains, and running
// them with ONNX Runtime to turn a camera frame into scores.
//
// # Basics
//
// InitONNXRuntime loads the ONNX Runtime shared library once per process (LoadRuntime and
// TrainTemplate do it on first use). A Runtime holds one ONNX Runtime session with
// preallocated input and output tensors; Infer preprocesses a camera.Frame into the input
// tensor (Preprocess: gray or RGB, resized with INTER_AREA, byte/255), runs the model and
// returns a Result with the image score and, for anomaly models, the anomaly map. Takt's
// models carry their threshold and identity in ONNX metadata_props (takt.threshold,
// takt.name, takt.version, takt.input, takt.task, ...); Runtime.Info reports them.
// Package models/onnxgraph writes the ONNX graphs.
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
// # Caveats
//
// ONNX Runtime and OpenCV are cgo; without cgo the constructors return ErrNoCgo. A Runtime
// is for one goroutine at a time (it reuses its tensors); run one Runtime per worker.
// Only the CPU execution provider is used so far. Three-channel models get R, G, B planes
// scaled to 0..1 with no mean/std normalization: such models must normalize in the graph.
package models
