// Package models is about ML models: the ONNX graphs Takt writes and trains, and running
// them with ONNX Runtime to turn a camera frame into scores.
//
// # Basics
//
// InitONNXRuntime loads the ONNX Runtime shared library once per process. A Runtime holds
// one ONNX Runtime session with preallocated input and output tensors; Infer preprocesses a
// camera.Frame into the input tensor, runs the model and returns a Result with the image
// score and, for anomaly models, the anomaly map.
//
// # Caveats
//
// ONNX Runtime and OpenCV are cgo; without cgo the constructors return ErrNoCgo. A Runtime
// is for one goroutine at a time (it reuses its tensors); run one Runtime per worker.
package models
