//go:build cgo

package models

import (
	"fmt"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

var ortInit struct {
	sync.Mutex
	path string
}

// InitONNXRuntime loads the ONNX Runtime library at libPath (FindONNXRuntime when empty) and
// creates the process-wide environment. Later calls with the same or an empty path are no-ops;
// a different path is an error, because one process holds one ONNX Runtime. The first load
// also fixes glibc's mmap threshold at 1 MiB (fixMmapThreshold), so that a destroyed
// session's memory goes back to the system.
func InitONNXRuntime(libPath string) error {
	ortInit.Lock()
	defer ortInit.Unlock()
	if libPath == "" {
		if ortInit.path != "" {
			return nil
		}
		found, err := FindONNXRuntime()
		if err != nil {
			return err
		}
		libPath = found
	}
	if ortInit.path != "" {
		if ortInit.path != libPath {
			return fmt.Errorf("onnx runtime already loaded from %s, cannot load %s too", ortInit.path, libPath)
		}
		return nil
	}
	fixMmapThreshold() // before the first session allocates
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("load onnx runtime %s: %w", libPath, err)
	}
	ortInit.path = libPath
	return nil
}

// ONNXRuntimeVersion reports the loaded ONNX Runtime's version, or "" before InitONNXRuntime.
func ONNXRuntimeVersion() string {
	ortInit.Lock()
	defer ortInit.Unlock()
	if ortInit.path == "" {
		return ""
	}
	return ort.GetVersion()
}
