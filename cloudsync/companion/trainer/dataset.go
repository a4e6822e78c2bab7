package trainer

// The dataset folder is the contract between the companion and every
// trainer: good/ and defect/ hold the images, labels.json says where each
// came from (see TrainInput).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/takt-edge/takt/camera"
)

// Classes of a dataset folder: its subfolders good/ and defect/ hold the
// images of each.
const (
	ClassGood   = "good"
	ClassDefect = "defect"
)

// DatasetEntry is one image of labels.json.
type DatasetEntry struct {
	File      string    `json:"file"`  // path in the folder, e.g. good/line1-st3-0000000000000042.jpg
	Class     string    `json:"class"` // good or defect
	Station   string    `json:"station"`
	VerdictID uint64    `json:"verdict_id"`
	Time      time.Time `json:"time"`
	Decision  string    `json:"decision"`
	Label     string    `json:"label,omitempty"`
	Score     *float64  `json:"score,omitempty"`
	Model     string    `json:"model_version,omitempty"`
}

// LabelsFile is labels.json of a dataset folder.
type LabelsFile struct {
	Model  string         `json:"model"`
	Job    string         `json:"job"`
	Images []DatasetEntry `json:"images"`
}

// ReadImages reads every image of dir in name order; a missing or empty
// folder gives none.
func ReadImages(dir string) ([]camera.Frame, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || err == nil && len(entries) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	src, err := camera.Open(camera.Config{ID: "dataset", Kind: camera.KindFolder, Path: dir})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var frames []camera.Frame
	for {
		f, err := src.Read(context.Background())
		if errors.Is(err, io.EOF) {
			return frames, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		frames = append(frames, f)
	}
}
