package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/train"
	"github.com/takt-edge/takt/models/train/backbone"
)

func cmdModelTrain(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model train", stderr)
	data := fs.String("data", "", "folder with good/ images and, optionally, one folder of images per defect kind (required)")
	method := fs.String("method", train.MethodAuto, "auto (by the images' alignment and cross-validation), template (aligned parts), patchcore (textures, loosely aligned parts) or ensemble")
	minHead := fs.Int("min-head-defects", 10, "labeled defects it takes to train the supervised head (negative: never)")
	out := fs.String("out", "", "model to write (required): FILE.onnx (plain ONNX) or FILE.tar (signed bundle, needs --key)")
	key := fs.String("key", "", "private key file (takt model keygen) to sign a .tar bundle with")
	goldenN := fs.Int("golden", 3, "good images to put in a bundle's golden set with their scores")
	dataset := fs.String("dataset", "", "dataset id recorded in a bundle's manifest")
	def := train.DefaultTemplateOptions()
	name := fs.String("name", "model", "model name (takt.name)")
	version := fs.String("version", def.Version, "model version (takt.version)")
	width := fs.Int("width", 0, "model input width (default: 128 for template and ensemble, 64 for patchcore, 224 or its own for --backbone)")
	height := fs.Int("height", 0, "model input height (default: from the images' aspect)")
	maxTrain := fs.Int("max-train", 0, "use at most this many good images for training (0 = all)")
	blur := fs.Float64("blur-sigma", def.BlurSigma, "Gaussian blur sigma in model pixels")
	lighting := fs.Float64("lighting-sigma", 0, "lighting normalization sigma in model pixels (0: width/16, negative: off)")
	shift := fs.Int("shift", 0, "tolerated part shift against the template in model pixels (0: width/85, negative: off)")
	smooth := fs.Int("map-smooth", def.MapSmooth, "odd box size smoothing the anomaly map (1 = none)")
	jitter := fs.Float64("pose-jitter", def.PoseJitter, "tolerated part shift in model pixels")
	falseReject := eval.DefaultFalseReject
	fs.Func("false-reject", "share of good parts the line accepts to reject, e.g. 1% or 0.01 (default 1%): the threshold is set from the cross-validated good scores so that this share is expected above it", func(v string) error {
		f, err := parseFraction(v)
		falseReject = f
		return err
	})
	color := fs.String("color", train.ColorAuto, "auto (an RGB model when the good images are colour), gray or rgb")
	rule := fs.String("threshold", eval.RuleFalseReject, "how the threshold is chosen: false-reject (keep the --false-reject budget; with defects, catch the most within it) or best-f1 (best F1 on the cross-validated defects)")
	backboneFile := fs.String("backbone", backboneAuto, "auto (with at least --min-head-defects labeled defects, the recommended backbone that make build fetches, beside the filter bank), none, or an ONNX model whose feature map, cut at --layer, gives PatchCore's features (input NCHW float, 1 or 3 channels)")
	layer := fs.String("layer", "", "tensor of --backbone to cut at: a 4-D NCHW feature map (a node output name); several, comma-separated, are joined on the first one's grid")
	bbMean := fs.String("backbone-mean", "", `per-channel mean subtracted from the 0..1 gray input before --backbone: "imagenet" or comma-separated values (default 0)`)
	bbStd := fs.String("backbone-std", "", `per-channel std the input is divided by before --backbone: "imagenet" or comma-separated values (default 1)`)
	withFB := fs.Bool("with-filter-bank", false, "require the filter bank beside --backbone: one model with both PatchCore extractors and the supervised head over both (the default when --min-head-defects labeled defects exist); fewer defects are an error")
	bbAlone := fs.Bool("backbone-alone", false, "keep the filter bank out of a --backbone model, even with labeled defects")
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
		return cli.Usagef("model train: --data and --out are required")
	}
	signed := strings.HasSuffix(*out, ".tar")
	if signed && *key == "" {
		return errors.New("model train: --out " + *out + " is a bundle: give --key KEYFILE to sign it (takt model keygen)")
	}
	if !signed && !strings.HasSuffix(*out, ".onnx") {
		return errors.New("model train: --out must end in .onnx (plain model) or .tar (signed bundle)")
	}
	var bbOpts backbone.Options
	userBackbone := *backboneFile != backboneAuto && *backboneFile != backboneNone && *backboneFile != ""
	if userBackbone {
		var err error
		if bbOpts, err = backboneOptions(*backboneFile, *layer, *bbMean, *bbStd); err != nil {
			return err
		}
	} else if *layer != "" || *bbMean != "" || *bbStd != "" || *withFB || *bbAlone {
		return errors.New("model train: --layer, --backbone-mean, --backbone-std, --with-filter-bank and --backbone-alone need --backbone FILE.onnx")
	}
	var priv ed25519.PrivateKey
	if signed {
		var err error
		if priv, err = bundle.ReadPrivateKey(*key); err != nil {
			return err
		}
	}
	set, err := readTrainSet(*data, *maxTrain)
	if err != nil {
		return err
	}
	good := set.Good
	regions, err := parseRegions(ignore, good[0].Width, good[0].Height)
	if err != nil {
		return err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fmt.Fprintf(stdout, "train: %d good images, %d labeled defects %s from %s, method %s\n", len(good), len(set.Defects),
		labelCounts(set.Defects), *data, *method)
	opts := train.TrainOptions{
		Method: *method, Name: *name, Version: *version, Ignore: regions, MinHeadDefects: *minHead,
		Template: train.TemplateOptions{Width: *width, Height: *height, BlurSigma: *blur, LightingSigma: *lighting,
			Shift: *shift, MapSmooth: *smooth, PoseJitter: *jitter},
		FalseReject: falseReject, ThresholdRule: *rule, Color: *color,
		Progress: newProgress(stderr).step,
	}
	if *backboneFile == backboneAuto {
		rec, applies, err := train.RecommendedBackbone(*method, *minHead, len(set.Defects), *width, *height)
		if err != nil {
			return fmt.Errorf("model train: %w (--backbone none trains without it)", err)
		}
		switch {
		case applies && rec.Dir != "":
			if bbOpts, err = rec.Options(); err != nil {
				return err
			}
			userBackbone = true
			fmt.Fprintf(stdout, "train: backbone %s at %s beside the filter bank (recommended with labeled defects; --backbone none leaves it out)\n", rec.Path(), rec.Layer)
		case applies:
			fmt.Fprintf(stdout, "train: no recommended backbone found in %s (make build fetches it): the filter bank alone\n", strings.Join(backbone.RecommendedDirs(), ", "))
		}
	}
	if userBackbone {
		opts.Backbone = bbOpts
		opts.Backbone.Width, opts.Backbone.Height = *width, *height
		opts.WithFilterBank, opts.BackboneAlone = *withFB, *bbAlone
	}
	if (*width != 0 || *height != 0) && *method == train.MethodPatchCore && !userBackbone {
		// Alone, PatchCore takes the size; otherwise it is the template's and the
		// ensemble's input, which PatchCore averages down to about 64 px.
		opts.PatchCore = train.TexturePatchCoreOptions()
		opts.PatchCore.Width, opts.PatchCore.Height = *width, *height
	}
	tm, err := train.Train(ctx, set, opts)
	if err != nil {
		return err
	}
	if signed {
		if err := writeTrainedBundle(*out, tm, good, *goldenN, *dataset, priv); err != nil {
			return err
		}
	} else if err := tm.WriteFile(*out); err != nil {
		return err
	}
	kind := tm.Method
	if tm.Supervised {
		kind += " + supervised head"
	}
	fmt.Fprintf(stdout, "train: method %s; metrics %s\n", kind, formatMetrics(tm.Metrics))
	fmt.Fprintf(stdout, "train: threshold %.4g (%s); expected at it: %s\n", tm.Threshold, tm.Operating.Rule, expectedRates(tm.Operating))
	fmt.Fprintf(stdout, "train: wrote %s (%s %s, input %s, good scores max %.4g over %d folds, sha256 %s)\n",
		*out, tm.Name, tm.Version, tm.Input, slices.Max(tm.GoodScores), tm.Folds, tm.SHA256()[:12])
	return nil
}

// --backbone's values besides a file.
const (
	backboneAuto = "auto"
	backboneNone = "none"
)

// backboneOptions reads the backbone file and parses its normalization flags.
func backboneOptions(path, layer, mean, std string) (backbone.Options, error) {
	o := backbone.Options{Layer: layer}
	var err error
	if o.ONNX, err = os.ReadFile(path); err != nil {
		return o, fmt.Errorf("model train: --backbone: %w", err)
	}
	if o.Mean, err = parseChannels("--backbone-mean", mean, backbone.ImageNetMean); err != nil {
		return o, err
	}
	if o.Std, err = parseChannels("--backbone-std", std, backbone.ImageNetStd); err != nil {
		return o, err
	}
	return o, nil
}

// parseChannels parses "imagenet" (as imagenet) or comma-separated numbers; "" is nil.
func parseChannels(flag, v string, imagenet []float64) ([]float64, error) {
	switch v {
	case "":
		return nil, nil
	case "imagenet":
		return imagenet, nil
	}
	var out []float64
	for _, p := range strings.Split(v, ",") {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return nil, fmt.Errorf("%s %q: want \"imagenet\" or comma-separated numbers", flag, v)
		}
		out = append(out, f)
	}
	return out, nil
}

// readTrainSet reads DIR/good (at most maxGood images, 0 = all) and every other folder of
// DIR holding images as labeled defects named by the folder (masks/ folders are skipped).
func readTrainSet(dir string, maxGood int) (train.TrainSet, error) {
	var set train.TrainSet
	good, err := readFolder(filepath.Join(dir, "good"), maxGood)
	if err != nil {
		return set, fmt.Errorf("good images: %w", err)
	}
	if len(good) < 2 {
		return set, fmt.Errorf("%s: %d good images, need at least 2", filepath.Join(dir, "good"), len(good))
	}
	set.Good = good
	kinds, err := defectFolders(dir)
	if err != nil {
		return set, err
	}
	for _, k := range kinds {
		fs, err := readFolder(filepath.Join(dir, k), 0)
		if err != nil {
			return set, fmt.Errorf("defect folder %s: %w", k, err)
		}
		for _, f := range fs {
			set.Defects = append(set.Defects, train.LabeledFrame{Frame: f, Label: k})
		}
	}
	return set, nil
}

// defectFolders lists the folders of dir other than good/ and masks/ that hold at least
// one image, sorted.
func defectFolders(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "good" || e.Name() == "masks" || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if !slices.Contains(camera.ImageExtensions, strings.ToLower(filepath.Ext(f.Name()))) {
				continue
			}
			// Stat follows links: a folder of links to images is a defect kind too, as
			// good/ is (the folder camera reads through them).
			if st, err := os.Stat(filepath.Join(dir, e.Name(), f.Name())); err == nil && st.Mode().IsRegular() {
				out = append(out, e.Name())
				break
			}
		}
	}
	return out, nil
}

func labelCounts(ds []train.LabeledFrame) string {
	if len(ds) == 0 {
		return "(good images only: unsupervised)"
	}
	n := map[string]int{}
	var order []string
	for _, d := range ds {
		if n[d.Label] == 0 {
			order = append(order, d.Label)
		}
		n[d.Label]++
	}
	var parts []string
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%s %d", k, n[k]))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func formatMetrics(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// parseRegions turns "x0,y0,x1,y1" pixel rectangles of a w x h image into frame fractions.
func parseRegions(specs []string, w, h int) ([]bundle.Region, error) {
	var out []bundle.Region
	for _, s := range specs {
		var x0, y0, x1, y1 float64
		if n, err := fmt.Sscanf(s, "%g,%g,%g,%g", &x0, &y0, &x1, &y1); n != 4 || err != nil {
			return nil, fmt.Errorf("--ignore %q: want x0,y0,x1,y1 in pixels", s)
		}
		r := bundle.Region{X0: x0 / float64(w), Y0: y0 / float64(h), X1: x1 / float64(w), Y1: y1 / float64(h)}
		if !r.Valid() {
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

// writeTrainedBundle signs the trained model into a bundle whose golden set is the first n
// good images (PNG) with the scores the model gives them.
func writeTrainedBundle(path string, tm *train.TrainedModel, good []camera.Frame, n int, dataset string, key ed25519.PrivateKey) error {
	m, err := tm.Manifest()
	if err != nil {
		return err
	}
	m.Dataset = dataset
	files := map[string][]byte{}
	if n > 0 {
		m.Golden = &bundle.GoldenSet{}
		for i, f := range good[:min(n, len(good))] {
			png, err := camera.Encode(f, "png", 0)
			if err != nil {
				return fmt.Errorf("golden image %d: %w", i, err)
			}
			name := fmt.Sprintf("golden/%04d.png", i+1)
			files[name] = png
			m.Golden.Cases = append(m.Golden.Cases, bundle.GoldenCase{File: name, Score: tm.TrainScores[i]})
		}
	}
	return bundle.WriteBundleFile(path, m, tm.ONNX, files, key)
}

func cmdModelKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model keygen", stderr)
	out := fs.String("out", "", "private key file to write (mode 0600); the public key goes to FILE.pub (required)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *out == "" {
		fs.Usage()
		return cli.Usagef("model keygen: --out is required")
	}
	pub, err := bundle.WriteKeyPair(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "keygen: private key %s (keep it secret), public key %s.pub, key id %s\n", *out, *out, bundle.KeyID(pub))
	return nil
}

func cmdModelSign(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model sign", stderr)
	manifestPath := fs.String("manifest", "", "manifest JSON without files (required); see the README")
	modelPath := fs.String("model", "", "ONNX model (required)")
	golden := fs.String("golden", "", "folder whose files go into the bundle as golden/<name>")
	key := fs.String("key", "", "private key file (required)")
	out := fs.String("out", "", "bundle to write, FILE.tar (required)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *manifestPath == "" || *modelPath == "" || *key == "" || *out == "" {
		fs.Usage()
		return cli.Usagef("model sign: --manifest, --model, --key and --out are required")
	}
	raw, err := os.ReadFile(*manifestPath)
	if err != nil {
		return err
	}
	var m bundle.Manifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("manifest %s: %w", *manifestPath, err)
	}
	onnx, err := os.ReadFile(*modelPath)
	if err != nil {
		return err
	}
	files := map[string][]byte{}
	if *golden != "" {
		entries, err := os.ReadDir(*golden)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				data, err := os.ReadFile(filepath.Join(*golden, e.Name()))
				if err != nil {
					return err
				}
				files["golden/"+e.Name()] = data
			}
		}
	}
	priv, err := bundle.ReadPrivateKey(*key)
	if err != nil {
		return err
	}
	if err := bundle.WriteBundleFile(*out, m, onnx, files, priv); err != nil {
		return fmt.Errorf("model sign: %w", err)
	}
	fmt.Fprintf(stdout, "sign: wrote %s (%s %s, %d golden files, key id %s)\n", *out, m.Name, m.Version, len(files),
		bundle.KeyID(priv.Public().(ed25519.PublicKey)))
	return nil
}

func cmdModelVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model verify", stderr)
	var keyFiles []string
	fs.Func("key", "trusted public key file, KEYFILE.pub (repeatable, required)", func(v string) error {
		keyFiles = append(keyFiles, v)
		return nil
	})
	providers := fs.String("providers", "cpu", "execution provider chain to load the model on, e.g. tensorrt,cuda,cpu")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if len(keyFiles) == 0 {
		fs.Usage()
		return cli.Usagef("model verify: give at least one --key KEYFILE.pub")
	}
	keys, err := bundle.LoadTrustedKeys(keyFiles...)
	if err != nil {
		return err
	}
	b, err := bundle.OpenBundle(fs.Arg(0), keys)
	if err != nil {
		return err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	rt, err := models.NewRuntime(context.Background(), b, models.RuntimeOptions{
		Providers: models.ProviderOptions{Chain: strings.Split(*providers, ",")}})
	if err != nil {
		return err
	}
	defer rt.Close()
	if err := rt.CheckFinite(context.Background()); err != nil {
		return fmt.Errorf("model verify %s: %w", fs.Arg(0), err)
	}
	info := rt.Info()
	golden := 0
	if b.Manifest.Golden != nil {
		golden = len(b.Manifest.Golden.Cases)
	}
	fmt.Fprintf(stdout, "verify: ok: %s %s signed by key %s, %d files match their sha256, model sha256 %s, loads on %s, golden set %d/%d within tolerance\n",
		b.Manifest.Name, b.Manifest.Version, b.KeyID, len(b.Manifest.Files), info.Model.SHA256[:12], info.Provider, golden, golden)
	if info.Degraded {
		fmt.Fprintf(stdout, "verify: degraded: %s\n", info.Fallback)
	}
	return nil
}

// cmdModelInspect shows a plain ONNX model or a bundle (its signature is not checked: use
// takt model verify). A model is described whenever it parses, even if the station could
// not run it; --write-manifest writes the manifest its export signature implies.
func cmdModelInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model inspect", stderr)
	writeManifest := fs.String("write-manifest", "", "write the manifest for the model to FILE (then: takt model sign --manifest FILE --model MODEL.onnx ...)")
	answers := answerFlags(fs)
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	path := fs.Arg(0)
	if strings.HasSuffix(path, ".tar") {
		if *writeManifest != "" {
			return cli.Usagef("model inspect: --write-manifest takes an ONNX model, %s is a bundle", path)
		}
		return inspectBundle(path, stdout)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("model %s: %w", path, err)
	}
	h, err := bundle.InspectModel(data)
	if err != nil {
		return fmt.Errorf("model inspect %s: %w", path, err)
	}
	describeModel(stdout, path, data, h)
	rec := bundle.Recognize(h, besideModel(path))
	fmt.Fprintf(stdout, "export:    %s\n", rec.Found)
	for _, a := range rec.Assumed {
		fmt.Fprintf(stdout, "assumed:   %s\n", a)
	}
	a, err := answers(path)
	if err != nil {
		return err
	}
	m, merr := rec.Manifest(a)
	if merr != nil && *writeManifest == "" {
		fmt.Fprintf(stdout, "manifest:  %s\n", strings.ReplaceAll(merr.Error(), "\n", "\n           "))
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	if rt, err := models.LoadRuntimeData(data, models.RuntimeOptions{Warmup: -1}); err == nil {
		info := rt.Info()
		rt.Close()
		fmt.Fprintf(stdout, "station:   runs as a plain model (input %s, threshold: %g)\n", info.Input, info.Threshold)
	} else if m != nil {
		rt, err := models.NewRuntime(context.Background(), &bundle.Bundle{Manifest: m, ONNX: data}, models.RuntimeOptions{Warmup: -1})
		if err != nil {
			fmt.Fprintf(stdout, "station:   cannot run it with the manifest: %v\n", err)
			if *writeManifest != "" {
				return fmt.Errorf("model inspect %s: %w", path, err)
			}
		} else if err := rt.CheckFinite(context.Background()); err != nil {
			rt.Close()
			fmt.Fprintf(stdout, "station:   cannot run it with the manifest: %v\n", err)
			if *writeManifest != "" {
				return fmt.Errorf("model inspect %s: %w", path, err)
			}
		} else {
			info := rt.Info()
			rt.Close()
			fmt.Fprintf(stdout, "station:   runs with the manifest (task %s, input %s %s %s, threshold %g)\n", info.Task, info.Input, info.Layout, info.Color, info.Threshold)
		}
	} else {
		fmt.Fprintf(stdout, "station:   needs a manifest (as a plain model: %v)\n", err)
	}
	if *writeManifest == "" {
		return nil
	}
	if merr != nil {
		return fmt.Errorf("model inspect %s: %w", path, merr)
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := bundle.WriteFileAtomic(*writeManifest, append(js, '\n')); err != nil {
		return fmt.Errorf("model inspect: --write-manifest: %w", err)
	}
	fmt.Fprintf(stdout, "wrote:     %s (sign it: takt model sign --manifest %s --model %s --key KEY --out BUNDLE.tar)\n", *writeManifest, *writeManifest, path)
	return nil
}

// describeModel prints what the ONNX file declares: graph, opset, inputs and outputs with
// their symbolic dims, metadata and operators.
func describeModel(w io.Writer, path string, data []byte, h *bundle.ModelHeader) {
	fmt.Fprintf(w, "model:     %s\nsha256:    %s\ngraph:     %q, IR version %d, ai.onnx opset %d\n", path, bundle.SHA256Hex(data), h.GraphName(), h.IRVersion(), h.Opset())
	for _, in := range h.Inputs() {
		fmt.Fprintf(w, "input:     %s\n", in)
	}
	for _, out := range h.Outputs() {
		line := out.String()
		if op := h.ProducerOp(out.Name); op != "" {
			line += " (from " + op + ")"
		}
		fmt.Fprintf(w, "output:    %s\n", line)
	}
	meta := h.Meta()
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "metadata:  %s = %q\n", k, meta[k])
	}
	ops := h.Ops()
	names := make([]string, 0, len(ops))
	var custom []string
	for op, n := range ops {
		names = append(names, fmt.Sprintf("%s %d", op, n))
		if strings.Contains(op, ":") {
			custom = append(custom, op)
		}
	}
	slices.Sort(names)
	fmt.Fprintf(w, "operators: %s\n", strings.Join(names, ", "))
	if len(custom) > 0 {
		slices.Sort(custom)
		fmt.Fprintf(w, "custom:    %s (operators outside ai.onnx: ONNX Runtime runs them only with their library)\n", strings.Join(custom, ", "))
	}
}

func inspectBundle(path string, stdout io.Writer) error {
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	b, err := bundle.InspectBundle(path)
	if err != nil {
		return err
	}
	m := b.Manifest
	fmt.Fprintf(stdout, "bundle:    %s\nsignature: key %s (NOT verified here; run takt model verify)\n", path, orNone(b.KeyID))
	js, _ := json.MarshalIndent(m, "", "  ")
	fmt.Fprintf(stdout, "manifest:  %s\n", strings.ReplaceAll(string(js), "\n", "\n           "))
	rt, err := models.NewRuntime(context.Background(), b, models.RuntimeOptions{Warmup: -1})
	if err != nil {
		return err
	}
	info := rt.Info()
	rt.Close()
	fmt.Fprintf(stdout, "name:      %s\nversion:   %s\nsha256:    %s\ntask:      %s\ninput:     %s %s %s\nopset:     %d\n",
		info.Model.Name, info.Model.Version, info.Model.SHA256, info.Task, info.Input, info.Layout, info.Color, info.Opset)
	if info.MapWidth > 0 {
		fmt.Fprintf(stdout, "map:       %dx%d\n", info.MapWidth, info.MapHeight)
	}
	if info.Classes > 0 {
		fmt.Fprintf(stdout, "classes:   %d\n", info.Classes)
	}
	fmt.Fprintf(stdout, "threshold: %g\nprovider:  %s\nruntime:   ONNX Runtime %s\n", info.Threshold, info.Provider, models.ONNXRuntimeVersion())
	return nil
}

// answerFlags declares the flags that answer what a model does not tell; the returned
// function reads them once parsed (the name defaults to the model file's base name).
func answerFlags(fs *flag.FlagSet) func(model string) (bundle.Answers, error) {
	name := fs.String("name", "", "model name (default: the model's own, else the file name)")
	version := fs.String("version", "", "model version, semantic (default 1.0.0)")
	width := fs.Int("width", 0, "input width fed to a model with dynamic axes")
	height := fs.Int("height", 0, "input height fed to a model with dynamic axes")
	labels := fs.String("labels", "", "class names in output order, comma-separated")
	okLabel := fs.String("ok-label", "", "the class of a good part")
	failLabels := fs.String("fail-labels", "", "classes that mean FAIL, comma-separated (default: every class but --ok-label; a detector's: every class)")
	threshold := fs.Float64("threshold", 0, "FAIL threshold on the score (default: the export's own scale, see the README)")
	perClass := fs.String("class-thresholds", "", "FAIL thresholds of single classes, e.g. dent=0.6,scratch=0.4 (a class's probability, a detector's box confidence)")
	mean := fs.String("mean", "", `per-channel mean of the input normalization: "imagenet" or comma-separated values`)
	std := fs.String("std", "", `per-channel std of the input normalization: "imagenet" or comma-separated values`)
	return func(model string) (bundle.Answers, error) {
		a := bundle.Answers{Name: *name, Version: *version, Width: *width, Height: *height, OKLabel: *okLabel, Threshold: *threshold}
		if (a.Width > 0) != (a.Height > 0) {
			return a, cli.Usagef("--width and --height go together")
		}
		if *labels != "" {
			a.Labels = splitList(*labels)
		}
		if *failLabels != "" {
			a.FailLabels = splitList(*failLabels)
		}
		for _, kv := range splitList(*perClass) {
			k, v, ok := strings.Cut(kv, "=")
			t, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil || k == "" {
				return a, cli.Usagef("--class-thresholds %q: want CLASS=THRESHOLD pairs, comma-separated", *perClass)
			}
			if a.PerClass == nil {
				a.PerClass = map[string]float64{}
			}
			a.PerClass[k] = t
		}
		var err error
		if a.Mean, err = parseChannels("--mean", *mean, bundle.ImageNetMean); err != nil {
			return a, err
		}
		if a.Std, err = parseChannels("--std", *std, bundle.ImageNetStd); err != nil {
			return a, err
		}
		if a.Name == "" {
			a.Name = strings.TrimSuffix(filepath.Base(model), filepath.Ext(model))
			if a.Name == "model" { // the usual export file name says nothing: use its folder's
				a.Name = filepath.Base(filepath.Dir(model))
			}
		}
		return a, nil
	}
}

// besideModel reads the files an exporter writes next to its model (anomalib 1.x's
// metadata.json), nil when there are none.
func besideModel(model string) map[string][]byte {
	data, err := os.ReadFile(filepath.Join(filepath.Dir(model), bundle.AnomalibMetadataFile))
	if err != nil {
		return nil
	}
	return map[string][]byte{bundle.AnomalibMetadataFile: data}
}

// splitList splits a comma-separated flag value; "" is none.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		out = append(out, strings.TrimSpace(p))
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none (unsigned)"
	}
	return s
}

// parseFraction reads a share as a percentage ("1%", "0.5%") or a fraction ("0.01"),
// strictly between 0 and 1.
func parseFraction(v string) (float64, error) {
	s, pct := strings.CutSuffix(strings.TrimSpace(v), "%")
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want a percentage such as 1%% or a fraction such as 0.01", v)
	}
	if pct {
		f /= 100
	}
	if !(f > 0 && f < 1) {
		return 0, fmt.Errorf("%q: want a share strictly between 0%% and 100%%", v)
	}
	return f, nil
}

// expectedRates says what the cross-validation predicts at an operating point.
func expectedRates(op eval.OperatingPoint) string {
	s := fmt.Sprintf("false rejects %.2f%%", 100*op.FalseReject)
	if op.Budget > 0 {
		s += fmt.Sprintf(" (budget %.2g%%)", 100*op.Budget)
	}
	if !math.IsNaN(op.Escape) {
		s += fmt.Sprintf(", escapes %.1f%% of the labeled defects", 100*op.Escape)
	} else {
		s += ", escapes unknown (no labeled defects)"
	}
	if op.Rule == eval.RuleFewImages {
		s += "; too few good images for a tail fit: the threshold is a quarter over the highest good score, give at least 8"
	}
	return s
}
