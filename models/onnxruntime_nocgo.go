//go:build !cgo

package models

// InitONNXRuntime fails without cgo: ONNX Runtime is a C library.
func InitONNXRuntime(libPath string) error { return ErrNoCgo }

// ONNXRuntimeVersion is "" without cgo.
func ONNXRuntimeVersion() string { return "" }
