package models

import (
	"errors"
	"os"
	"path/filepath"
)

// ONNXRuntimeLibName is the file name of the ONNX Runtime shared library Takt looks for.
const ONNXRuntimeLibName = "libonnxruntime.so.1"

// FindONNXRuntime returns the path of the ONNX Runtime shared library: $ONNXRUNTIME_LIB if
// set; else the first that exists of <exe>/../lib, <exe>/../.deps/lib (a source checkout's
// bin/), .deps/lib in the working folder or any parent (tests), /usr/lib/takt/lib, /usr/lib and
// /usr/local/lib. It returns an error naming every place it looked.
func FindONNXRuntime() (string, error) {
	if p := os.Getenv("ONNXRUNTIME_LIB"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", errors.New("ONNXRUNTIME_LIB=" + p + " does not exist")
		}
		return p, nil
	}
	var candidates []string
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		candidates = append(candidates,
			filepath.Join(dir, "..", "lib", ONNXRuntimeLibName),
			filepath.Join(dir, "..", ".deps", "lib", ONNXRuntimeLibName))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, ".deps", "lib", ONNXRuntimeLibName))
			if parent := filepath.Dir(dir); parent == dir {
				break
			}
		}
	}
	candidates = append(candidates,
		"/usr/lib/takt/lib/"+ONNXRuntimeLibName,
		"/usr/lib/"+ONNXRuntimeLibName,
		"/usr/local/lib/"+ONNXRuntimeLibName)
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return filepath.Clean(c), nil
		}
	}
	return "", errors.New("ONNX Runtime library " + ONNXRuntimeLibName +
		" not found (set ONNXRUNTIME_LIB or run packaging/install-deps.sh)")
}
