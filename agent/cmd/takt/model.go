package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
)

func cmdModelTrain(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model train", stderr)
	data := fs.String("data", "", "folder with good/ images (required)")
	out := fs.String("out", "", "ONNX model file to write (required)")
	def := models.DefaultTemplateOptions()
	name := fs.String("name", def.Name, "model name (takt.name)")
	version := fs.String("version", def.Version, "model version (takt.version)")
	width := fs.Int("width", 0, "model input width (default 128)")
	height := fs.Int("height", 0, "model input height (default: from the images' aspect)")
	maxTrain := fs.Int("max-train", 0, "use at most this many good images (0 = all)")
	blur := fs.Float64("blur-sigma", def.BlurSigma, "Gaussian blur sigma in model pixels")
	lighting := fs.Float64("lighting-sigma", 0, "lighting normalization sigma in model pixels (0: width/16, negative: off)")
	shift := fs.Int("shift", 0, "tolerated part shift against the template in model pixels (0: width/85, negative: off)")
	smooth := fs.Int("map-smooth", def.MapSmooth, "odd box size smoothing the anomaly map (1 = none)")
	jitter := fs.Float64("pose-jitter", def.PoseJitter, "tolerated part shift in model pixels")
	margin := fs.Float64("margin", def.Margin, "threshold margin over the highest held-out good score (0.25 = 25%)")
	var ignore []string
	fs.Func("ignore", "region not to judge, as x0,y0,x1,y1 in pixels of the training images (repeatable), e.g. a printed serial number", func(v string) error {
		ignore = append(ignore, v)
		return nil
	})
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *data == "" || *out == "" {
		fs.Usage()
		return errors.New("model train: --data and --out are required")
	}
	goodDir := filepath.Join(*data, "good")
	good, err := readFolder(goodDir, *maxTrain)
	if err != nil {
		return err
	}
	regions, err := parseRegions(ignore, good[0].Width, good[0].Height)
	if err != nil {
		return err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fmt.Fprintf(stdout, "train: %d good images from %s\n", len(good), goodDir)
	tm, err := models.TrainTemplate(ctx, good, models.TemplateOptions{
		Name: *name, Version: *version, Width: *width, Height: *height,
		BlurSigma: *blur, LightingSigma: *lighting, Shift: *shift, Ignore: regions, MapSmooth: *smooth, PoseJitter: *jitter, Margin: *margin,
	})
	if err != nil {
		return err
	}
	if err := tm.WriteFile(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "train: wrote %s (%s %s, input %s, threshold %.4g, good scores max %.4g over %d folds, sha256 %s)\n",
		*out, tm.Name, tm.Version, tm.Input, tm.Threshold, slices.Max(tm.GoodScores), tm.Folds, tm.SHA256()[:12])
	return nil
}

// parseRegions turns "x0,y0,x1,y1" pixel rectangles of a w x h image into frame fractions.
func parseRegions(specs []string, w, h int) ([]models.Region, error) {
	var out []models.Region
	for _, s := range specs {
		var x0, y0, x1, y1 float64
		if n, err := fmt.Sscanf(s, "%g,%g,%g,%g", &x0, &y0, &x1, &y1); n != 4 || err != nil {
			return nil, fmt.Errorf("--ignore %q: want x0,y0,x1,y1 in pixels", s)
		}
		r := models.Region{X0: x0 / float64(w), Y0: y0 / float64(h), X1: x1 / float64(w), Y1: y1 / float64(h)}
		if !(0 <= r.X0 && r.X0 < r.X1 && r.X1 <= 1 && 0 <= r.Y0 && r.Y0 < r.Y1 && r.Y1 <= 1) {
			return nil, fmt.Errorf("--ignore %q: not a rectangle inside the %dx%d training images", s, w, h)
		}
		out = append(out, r)
	}
	return out, nil
}

// readFolder reads every image of dir in name order, at most max (0 = all).
func readFolder(dir string, max int) ([]camera.Frame, error) {
	src, err := camera.Open(camera.Config{ID: "train", Kind: camera.KindFolder, Path: dir})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var frames []camera.Frame
	for max == 0 || len(frames) < max {
		f, err := src.Read(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		frames = append(frames, f)
	}
	return frames, nil
}

func cmdModelInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model inspect", stderr)
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	path := fs.Arg(0)
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	rt, err := models.LoadRuntime(path, models.RuntimeOptions{})
	if err != nil {
		return fmt.Errorf("model %s: %w", path, err)
	}
	defer rt.Close()
	info := rt.Info()
	fmt.Fprintf(stdout, "model:     %s\nname:      %s\nversion:   %s\nsha256:    %s\ntask:      %s\ninput:     %s\n",
		path, info.Model.Name, info.Model.Version, info.Model.SHA256, info.Task, info.Input)
	if info.MapWidth > 0 {
		fmt.Fprintf(stdout, "map:       %dx%d\n", info.MapWidth, info.MapHeight)
	}
	fmt.Fprintf(stdout, "threshold: %g\nprovider:  %s\nruntime:   ONNX Runtime %s\n", info.Threshold, info.Provider, models.ONNXRuntimeVersion())
	return nil
}
