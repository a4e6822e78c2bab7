package bundle

import "errors"

// Errors callers may branch on with errors.Is. Errors from this package wrap them with the
// detail (file, member, input name, shape) the caller lacks. ErrRevokedKey and ErrDowngrade
// (trust.go) wrap ErrBadSignature and ErrBadBundle.
var (
	// ErrInvalidModel means the bytes are not a loadable ONNX model: not protobuf, truncated,
	// no graph, or rejected by ONNX Runtime. Retrying will not help; fetch the file again.
	ErrInvalidModel = errors.New("not a valid ONNX model")
	// ErrUnsupportedModel means a valid ONNX model that Takt cannot run: its input is not a
	// float32 image tensor whose dims are fixed or given by the manifest, its opset is out of
	// range, its score output is missing or of the wrong shape, its outputs disagree with the
	// manifest, or its takt.* metadata is malformed.
	ErrUnsupportedModel = errors.New("unsupported model")
	// ErrBadBundle means a model bundle that is not a complete tar, lacks or misnames a
	// member, has a malformed manifest, or a file whose sha256 differs from the manifest's.
	ErrBadBundle = errors.New("bad model bundle")
	// ErrBadSignature means a bundle that is unsigned, signed by a key that is not trusted, or
	// whose signature does not match its manifest. Never load such a bundle.
	ErrBadSignature = errors.New("bad model bundle signature")
)
