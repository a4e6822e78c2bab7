// contract-trainer is a stand-in external trainer for the container tests of
// the docker backend (built with CGO_ENABLED=0, imported into a local image).
// It does what testdata/copy-trainer.sh does for the command backend: it
// checks the dataset folder contract in $TAKT_DATA (good/ with images,
// labels.json), then "trains" by copying the ONNX model at $MODEL_FILE (baked
// into the image) to $TAKT_OUT/model.onnx and writes metrics.json with the
// threshold from $MODEL_FILE.threshold. Its metrics also say what it saw
// inside the container: the images, its uid and gid, and whether writing
// into the dataset failed as read-only.
//
// $FAIL_EXIT=N makes it fail with exit status N after a line on stderr;
// $SLEEP=D makes it wait D first (a trainer that overruns its timeout).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "contract-trainer:", err)
		os.Exit(1)
	}
}

func run() error {
	data, out := os.Getenv("TAKT_DATA"), os.Getenv("TAKT_OUT")
	if data == "" || out == "" {
		return errors.New("TAKT_DATA or TAKT_OUT is not set")
	}
	if d := os.Getenv("SLEEP"); d != "" {
		dur, err := time.ParseDuration(d)
		if err != nil {
			return fmt.Errorf("SLEEP: %w", err)
		}
		fmt.Printf("sleeping %v\n", dur)
		time.Sleep(dur)
	}
	if code := os.Getenv("FAIL_EXIT"); code != "" {
		n, err := strconv.Atoi(code)
		if err != nil {
			return fmt.Errorf("FAIL_EXIT: %w", err)
		}
		fmt.Fprintf(os.Stderr, "contract-trainer: giving up on purpose with status %d\n", n)
		os.Exit(n)
	}
	if _, err := os.Stat(filepath.Join(data, "labels.json")); err != nil {
		return fmt.Errorf("contract broken: %w", err)
	}
	good, err := countImages(filepath.Join(data, "good"))
	if err != nil || good == 0 {
		return fmt.Errorf("contract broken: %s/good has no images (%v)", data, err)
	}
	defect, err := countImages(filepath.Join(data, "defect"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Printf("args: %q\n", os.Args[1:])
	fmt.Printf("contract ok: good/ %d images, defect/ %d images, model %s %s, job %s\n",
		good, defect, os.Getenv("TAKT_MODEL_NAME"), os.Getenv("TAKT_MODEL_VERSION"), os.Getenv("TAKT_JOB"))

	readOnly := 0.0
	probe := filepath.Join(data, "written-by-trainer")
	switch err := os.WriteFile(probe, []byte("x"), 0o644); {
	case errors.Is(err, syscall.EROFS):
		readOnly = 1
		fmt.Printf("%s is read-only: %v\n", data, err)
	case err != nil:
		fmt.Printf("%s not writable, but not read-only: %v\n", data, err)
	default:
		fmt.Printf("wrote %s: the dataset is writable\n", probe)
	}

	model := os.Getenv("MODEL_FILE")
	onnx, err := os.ReadFile(model)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "model.onnx"), onnx, 0o644); err != nil {
		return err
	}
	thr, err := os.ReadFile(model + ".threshold")
	if err != nil {
		return err
	}
	threshold, err := strconv.ParseFloat(strings.TrimSpace(string(thr)), 64)
	if err != nil {
		return fmt.Errorf("%s.threshold: %w", model, err)
	}
	metrics := map[string]any{
		"threshold": threshold,
		"input":     map[string]string{"layout": "NCHW", "color": "gray"},
		"outputs":   map[string]string{"score": "score", "map": "anomaly_map"},
		"metrics": map[string]float64{"trainer_good_images": float64(good), "trainer_defect_images": float64(defect),
			"trainer_uid": float64(os.Getuid()), "trainer_gid": float64(os.Getgid()), "trainer_data_read_only": readOnly},
	}
	js, err := json.Marshal(metrics)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "metrics.json"), js, 0o644)
}

func countImages(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			n++
		}
	}
	return n, err
}
