package models

import "errors"

// Errors callers may branch on with errors.Is. Errors from this package wrap them with the
// detail (file, input name, shape) the caller lacks.
var (
	// ErrNoCgo is returned where ONNX Runtime or OpenCV would be needed in a build without cgo.
	ErrNoCgo = errors.New("models: built without cgo, ONNX Runtime is not available")
	// ErrInvalidModel means the bytes are not a loadable ONNX model: not protobuf, truncated,
	// no graph, or rejected by ONNX Runtime. Retrying will not help; fetch the file again.
	ErrInvalidModel = errors.New("not a valid ONNX model")
	// ErrUnsupportedModel means a valid ONNX model that Takt cannot run: its input is not
	// float32 [1,1,H,W] or [1,3,H,W] with fixed dims, its score output is missing or not a
	// single float32, or its takt.* metadata is malformed.
	ErrUnsupportedModel = errors.New("unsupported model")
	// ErrBadFrame means a camera.Frame whose size, channels and pixel buffer disagree, or
	// whose channel count is not 1 or 3.
	ErrBadFrame = errors.New("bad frame")

	// errClosed is returned by Infer after Close, a programming error.
	errClosed = errors.New("models: runtime closed")
)
