package models

import "errors"

// Errors callers may branch on with errors.Is. Errors from this package wrap them with the
// detail (file, input name, shape) the caller lacks. A model that is not valid ONNX or that
// Takt cannot run wraps bundle.ErrInvalidModel or bundle.ErrUnsupportedModel.
var (
	// ErrNoCgo is returned where ONNX Runtime or OpenCV would be needed in a build without cgo.
	ErrNoCgo = errors.New("models: built without cgo, ONNX Runtime is not available")
	// ErrBadFrame means a camera.Frame whose size, channels and pixel buffer disagree, or
	// whose channel count is not 1 or 3.
	ErrBadFrame = errors.New("bad frame")
	// ErrProviderUnavailable means the execution provider the configuration requires
	// (ProviderOptions.Require) could not be used; its own error is in the message.
	ErrProviderUnavailable = errors.New("required execution provider unavailable")
	// ErrGoldenMismatch means the model did not reproduce its golden set within tolerance on
	// this station: a different runtime, provider or preprocessing than the one it was made for.
	ErrGoldenMismatch = errors.New("golden set mismatch")

	// errClosed is returned by Infer after Close, a programming error.
	errClosed = errors.New("models: runtime closed")
)
