// Package models is about ML models (not data models): running ONNX models with ONNX
// Runtime to turn a camera frame into scores. The signed bundle format is package
// models/bundle; the trainers are package models/train.
//
// # Basics
//
// InitONNXRuntime loads the ONNX Runtime shared library once per process (LoadRuntime,
// NewRuntime and the trainers do it on first use). A Runtime holds one ONNX Runtime
// session (an onnxruntime_go AdvancedSession) with preallocated input and output tensors.
// LoadRuntime loads a plain ONNX file (float32 NCHW gray or RGB input, 0..1, outputs
// "score" or anomalib's "pred_score", optional "anomaly_map"; identity and threshold from
// takt.* metadata_props). NewRuntime loads a verified Bundle as its Manifest describes it:
// input layout NCHW/NHWC, color gray/RGB/BGR, mean/std, resize mode (stretch, crop,
// letterbox), ROIs, anomaly, classification (FAIL classes) or detection outputs (boxes,
// Ultralytics-style NMS); it replays the golden set before it returns. Output sizes a model
// leaves dynamic (an anomaly map, a detector's anchors) are read from one test run at
// load. Infer crops each ROI, converts and resizes with OpenCV into reused Mats and
// normalizes in one pass into the input tensor, runs the session and reads the score,
// class, boxes and map: no Go heap allocation per frame in steady state.
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
// # Trainers
//
// The trainers that write Takt's own ONNX graphs (template, PatchCore, heads, ensemble,
// evaluation) live in package models/train; a user-supplied backbone is cut in
// models/train/backbone. They score through LoadRuntimeData, ScoreInput and
// PreprocessAll so that training sees what Infer sees.
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
