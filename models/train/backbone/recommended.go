package backbone

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// RecommendedFile is the file, in a backbone folder, that names the recommended backbone:
// packaging/fetch-backbone.sh writes it beside the converted model (`make build` fetches
// it into .deps/backbone; nothing of it is in the repository).
const RecommendedFile = "recommended.json"

// Recommended is the backbone `takt model train` uses by default where it was measured to
// help, as RecommendedFile describes it.
type Recommended struct {
	Dir    string    `json:"-"`      // the folder it was found in
	Model  string    `json:"model"`  // the ONNX file, relative to Dir
	Layer  string    `json:"layer"`  // Options.Layer
	Mean   []float64 `json:"mean"`   // Options.Mean
	Std    []float64 `json:"std"`    // Options.Std
	Source string    `json:"source"` // where the weights come from, and their licence
}

// Path is the model file's path.
func (r Recommended) Path() string { return filepath.Join(r.Dir, r.Model) }

// Options reads the model file into Options.
func (r Recommended) Options() (Options, error) {
	data, err := os.ReadFile(r.Path())
	if err != nil {
		return Options{}, fmt.Errorf("recommended backbone: %w", err)
	}
	return Options{ONNX: data, Layer: r.Layer, Mean: r.Mean, Std: r.Std}, nil
}

// RecommendedDirs are the folders FindRecommended looks in, in order: $TAKT_BACKBONE_DIR;
// .deps/backbone of the checkout an executable in bin/ was built in; the packages'
// /usr/lib/takt/backbone.
func RecommendedDirs() []string {
	var dirs []string
	if d := os.Getenv("TAKT_BACKBONE_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			dirs = append(dirs, filepath.Join(filepath.Dir(exe), "..", ".deps", "backbone"))
		}
	}
	return append(dirs, "/usr/lib/takt/backbone")
}

// ErrNoRecommended is FindRecommended's error when no folder holds a recommended backbone.
var ErrNoRecommended = errors.New("no recommended backbone")

// FindRecommended reads RecommendedFile from the first of dirs that has one. A folder
// without it is skipped; a broken one (unreadable, bad JSON, no model or layer, the model
// missing) is an error naming the file, not a silent fallback.
func FindRecommended(dirs []string) (Recommended, error) {
	for _, d := range dirs {
		path := filepath.Join(d, RecommendedFile)
		raw, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Recommended{}, fmt.Errorf("recommended backbone: %w", err)
		}
		var r Recommended
		if err := json.Unmarshal(raw, &r); err != nil {
			return Recommended{}, fmt.Errorf("recommended backbone %s: %w", path, err)
		}
		if r.Model == "" || r.Layer == "" {
			return Recommended{}, fmt.Errorf("recommended backbone %s: want \"model\" and \"layer\"", path)
		}
		r.Dir = filepath.Clean(d)
		if _, err := os.Stat(r.Path()); err != nil {
			return Recommended{}, fmt.Errorf("recommended backbone %s: model: %w", path, err)
		}
		return r, nil
	}
	return Recommended{}, fmt.Errorf("%w in %v", ErrNoRecommended, dirs)
}
