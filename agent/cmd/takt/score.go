package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
)

// scoreLine is what takt model score prints for one image.
type scoreLine struct {
	Image string   `json:"image"`
	Score *float64 `json:"score"` // null for a NaN score

	Decision   string       `json:"decision"`
	Threshold  float64      `json:"threshold"`
	Class      string       `json:"class,omitempty"`
	Confidence float64      `json:"confidence,omitempty"`
	Boxes      []models.Box `json:"boxes,omitempty"`
	MapMax     *float64     `json:"map_max,omitempty"`
	Provider   string       `json:"provider"`
	TimingsMS  scoreTimings `json:"timings_ms"`
}

type scoreTimings struct {
	Preprocess  float64 `json:"preprocess"`
	Infer       float64 `json:"infer"`
	Postprocess float64 `json:"postprocess"`
	Total       float64 `json:"total"`
}

// cmdModelScore runs a bundle, or an ONNX model with the manifest its export implies (or
// one given), on image files and prints one JSON line per image.
func cmdModelScore(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model score", stderr)
	bundlePath := fs.String("bundle", "", "signed bundle to run (its signature is checked when --key is given)")
	modelPath := fs.String("model", "", "ONNX model to run with the manifest takt model inspect --write-manifest would write")
	manifestPath := fs.String("manifest", "", "with --model: run it with this manifest instead")
	var keyFiles []string
	fs.Func("key", "trusted public key file to verify --bundle with (repeatable)", func(v string) error {
		keyFiles = append(keyFiles, v)
		return nil
	})
	providers := fs.String("providers", "cpu", "execution provider chain, e.g. tensorrt,cuda,cpu")
	answers := answerFlags(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if (*bundlePath == "") == (*modelPath == "") || fs.NArg() == 0 {
		fs.Usage()
		return cli.Usagef("model score: give --bundle B or --model M, and at least one image")
	}
	if *manifestPath != "" && *modelPath == "" {
		return cli.Usagef("model score: --manifest goes with --model")
	}
	b, err := scoreBundle(*bundlePath, *modelPath, *manifestPath, keyFiles, answers)
	if err != nil {
		return err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	rt, err := models.NewRuntime(context.Background(), b, models.RuntimeOptions{ReturnMap: true,
		Providers: models.ProviderOptions{Chain: strings.Split(*providers, ",")}})
	if err != nil {
		return err
	}
	defer rt.Close()
	enc := json.NewEncoder(stdout)
	for _, path := range fs.Args() {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("model score: %w", err)
		}
		f, err := models.DecodeImage(data)
		if err != nil {
			return fmt.Errorf("model score: %s: %w", path, err)
		}
		res, err := rt.Infer(context.Background(), f)
		if err != nil {
			return fmt.Errorf("model score: %s: %w", path, err)
		}
		if err := enc.Encode(scoreLineOf(path, res, rt.Info().Threshold)); err != nil {
			return err
		}
	}
	return nil
}

// scoreBundle is the bundle to score with: the file at bundlePath (verified when keys are
// given), or the model at modelPath with its manifest (given, or recognized).
func scoreBundle(bundlePath, modelPath, manifestPath string, keyFiles []string, answers func(string) (bundle.Answers, error)) (*bundle.Bundle, error) {
	if bundlePath != "" {
		if len(keyFiles) == 0 {
			return bundle.InspectBundle(bundlePath)
		}
		keys, err := bundle.LoadTrustedKeys(keyFiles...)
		if err != nil {
			return nil, err
		}
		return bundle.OpenBundle(bundlePath, keys)
	}
	data, err := os.ReadFile(modelPath)
	if err != nil {
		return nil, fmt.Errorf("model score: %w", err)
	}
	h, err := bundle.InspectModel(data)
	if err != nil {
		return nil, fmt.Errorf("model score %s: %w", modelPath, err)
	}
	var m *bundle.Manifest
	if manifestPath != "" {
		raw, err := os.ReadFile(manifestPath)
		if err != nil {
			return nil, fmt.Errorf("model score: %w", err)
		}
		m = &bundle.Manifest{}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(m); err != nil {
			return nil, fmt.Errorf("model score: manifest %s: %w", manifestPath, err)
		}
	} else {
		a, err := answers(modelPath)
		if err != nil {
			return nil, err
		}
		if m, err = bundle.Recognize(h, besideModel(modelPath)).Manifest(a); err != nil {
			return nil, fmt.Errorf("model score %s: %w", modelPath, err)
		}
	}
	m.Files = map[string]string{"model.onnx": bundle.SHA256Hex(data)}
	if m.Format == "" {
		m.Format = bundle.BundleFormat
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("model score %s: %w", modelPath, err)
	}
	return &bundle.Bundle{Manifest: m, ONNX: data}, nil
}

func scoreLineOf(path string, res models.Result, threshold float64) scoreLine {
	ms := func(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }
	score := res.Score
	l := scoreLine{Image: path, Score: &score, Threshold: threshold, Class: res.Class, Confidence: res.Confidence,
		Boxes: res.Boxes, Provider: res.Provider,
		TimingsMS: scoreTimings{ms(res.Timings.Preprocess), ms(res.Timings.Infer), ms(res.Timings.Postprocess), ms(res.Timings.Total)}}
	switch {
	case math.IsNaN(res.Score):
		l.Decision, l.Score = "NO_DECISION", nil
	case res.Score > threshold:
		l.Decision = "FAIL"
	default:
		l.Decision = "PASS"
	}
	if res.Map != nil && len(res.Map.Values) > 0 {
		hi := float64(res.Map.Values[0])
		for _, v := range res.Map.Values {
			hi = max(hi, float64(v))
		}
		l.MapMax = &hi
	}
	return l
}
