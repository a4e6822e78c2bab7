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
	// ErrUnsupportedModel means a valid ONNX model that Takt cannot run: its input is not a
	// float32 image tensor whose dims are fixed or given by the manifest, its opset is out of
	// range, its score output is missing or of the wrong shape, its outputs disagree with the
	// manifest, or its takt.* metadata is malformed.
	ErrUnsupportedModel = errors.New("unsupported model")
	// ErrBadFrame means a camera.Frame whose size, channels and pixel buffer disagree, or
	// whose channel count is not 1 or 3.
	ErrBadFrame = errors.New("bad frame")
	// ErrBadBundle means a model bundle that is not a complete tar, lacks or misnames a
	// member, has a malformed manifest, or a file whose sha256 differs from the manifest's.
	ErrBadBundle = errors.New("bad model bundle")
	// ErrBadSignature means a bundle that is unsigned, signed by a key that is not trusted, or
	// whose signature does not match its manifest. Never load such a bundle.
	ErrBadSignature = errors.New("bad model bundle signature")
	// ErrProviderUnavailable means the execution provider the configuration requires
	// (ProviderOptions.Require) could not be used; its own error is in the message.
	ErrProviderUnavailable = errors.New("required execution provider unavailable")
	// ErrGoldenMismatch means the model did not reproduce its golden set within tolerance on
	// this station: a different runtime, provider or preprocessing than the one it was made for.
	ErrGoldenMismatch = errors.New("golden set mismatch")

	// errClosed is returned by Infer after Close, a programming error.
	errClosed = errors.New("models: runtime closed")
)
