//go:build cgo

package train

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

var trainedAt = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// fixture trains one template model on 10 good gray parts, once per test binary.
var fixture struct {
	once  sync.Once
	good  []camera.Frame
	model *TrainedModel
	err   error
}

func trainedFixture(t testing.TB) ([]camera.Frame, *TrainedModel) {
	t.Helper()
	fixture.once.Do(func() {
		fixture.good = goodParts(10, 1, 1)
		fixture.model, fixture.err = TrainTemplate(context.Background(), fixture.good,
			TemplateOptions{Name: "bracket", Version: "1.2.0", Width: 128, Threads: 1, TrainedAt: trainedAt})
	})
	if fixture.err != nil {
		t.Fatalf("TrainTemplate: %v", fixture.err)
	}
	return fixture.good, fixture.model
}

func TestTrainTemplateSeparatesGoodFromDefects(t *testing.T) {
	_, m := trainedFixture(t)
	t.Logf("threshold %.3f, cross-validated good scores %.3f, train scores %.3f", m.Threshold, m.GoodScores, m.TrainScores)
	if m.Folds != 10 || len(m.GoodScores) != 10 || len(m.TrainScores) != 10 {
		t.Fatalf("folds %d, %d good scores, %d train scores: want 10 each", m.Folds, len(m.GoodScores), len(m.TrainScores))
	}
	r, err := models.LoadRuntimeData(m.ONNX, models.RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("LoadRuntimeData: %v", err)
	}
	defer r.Close()
	tests := []struct {
		name      string
		spec      partSpec
		anomalous bool
	}{
		{"held-out good 1", partSpec{seed: 101}, false},
		{"held-out good 2", partSpec{seed: 102}, false},
		{"held-out good 3", partSpec{seed: 103}, false},
		{"held-out good 4", partSpec{seed: 104}, false},
		{"held-out good 5", partSpec{seed: 105}, false},
		{"held-out good 6", partSpec{seed: 106}, false},
		{"held-out good BGR", partSpec{seed: 107, channels: 3}, false},
		{"dark spot", partSpec{seed: 201, defect: darkSpot}, true},
		{"dark spot BGR", partSpec{seed: 202, defect: darkSpot, channels: 3}, true},
		{"scratch", partSpec{seed: 203, defect: scratch}, true},
		{"scratch 2", partSpec{seed: 204, defect: scratch}, true},
		{"missing hole", partSpec{seed: 205, defect: missingHole}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.spec
			s.width, s.height = 640, 480
			if s.channels == 0 {
				s.channels = 1
			}
			res, err := r.Infer(context.Background(), makePart(s))
			if err != nil {
				t.Fatalf("Infer: %v", err)
			}
			t.Logf("score %.3f (threshold %.3f)", res.Score, m.Threshold)
			if got := res.Score > m.Threshold; got != tt.anomalous {
				t.Errorf("score %.3f > threshold %.3f: got %v, want %v", res.Score, m.Threshold, got, tt.anomalous)
			}
		})
	}
}

func TestTrainTemplateMetadata(t *testing.T) {
	_, m := trainedFixture(t)
	h, err := bundle.InspectModel(m.ONNX)
	if err != nil {
		t.Fatalf("InspectModel: %v", err)
	}
	want := map[string]string{
		"takt.task":           "anomaly",
		"takt.name":           "bracket",
		"takt.version":        "1.2.0",
		"takt.input":          "gray 1x1x96x128 scale=1/255",
		"takt.threshold":      strconv.FormatFloat(m.Threshold, 'g', -1, 64),
		"takt.trained_images": "10",
		"takt.trained_at":     "2025-03-14T09:26:53Z",
	}
	for k, v := range want {
		if got := h.Meta()[k]; got != v {
			t.Errorf("metadata %s: got %q, want %q", k, got, v)
		}
	}
	if got := (bundle.InputShape{Channels: 1, Height: 96, Width: 128}); m.Input != got {
		t.Errorf("input: got %v, want %v", m.Input, got)
	}
	var mp onnxpb.ModelProto
	if err := proto.Unmarshal(m.ONNX, &mp); err != nil {
		t.Fatalf("unmarshal model: %v", err)
	}
	if mp.GetGraph().GetName() != "bracket" || mp.GetIrVersion() != 8 {
		t.Errorf("graph name %q, IR version %d: want bracket, 8", mp.GetGraph().GetName(), mp.GetIrVersion())
	}
	op, err := eval.ChooseThreshold(m.GoodScores, nil, eval.RuleFalseReject, eval.DefaultFalseReject, MinThreshold)
	if err != nil || m.Threshold != op.Threshold || m.Operating.Threshold != op.Threshold || m.Operating.FalseReject != op.FalseReject {
		t.Errorf("threshold: got %v (%+v), want %+v from the cross-validated good scores (%v)", m.Threshold, m.Operating, op, err)
	}
	man, err := m.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if th := man.Thresholds; th.Rule != m.Operating.Rule || th.FalseRejectBudget != eval.DefaultFalseReject ||
		th.ExpectedFalseReject == nil || *th.ExpectedFalseReject != m.Operating.FalseReject || th.ExpectedEscape != nil {
		t.Errorf("manifest thresholds %+v: want rule %s, budget %v, expected false reject %v, no expected escape (no defects)",
			th, m.Operating.Rule, eval.DefaultFalseReject, m.Operating.FalseReject)
	}
}

func TestTrainTemplateSmallSets(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		wantFolds int
	}{
		{"two images, leave-one-out", 2, 2},
		{"three images, leave-one-out", 3, 3},
		{"twelve images, 10 folds", 12, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Quarter-size frames keep this fast; the model input follows at 128x96.
			good := make([]camera.Frame, tt.n)
			for i := range good {
				good[i] = makePart(partSpec{width: 160, height: 120, channels: 1, seed: uint64(300 + i)})
			}
			m, err := TrainTemplate(context.Background(), good, TemplateOptions{Width: 64, Threads: 1})
			if err != nil {
				t.Fatalf("TrainTemplate: %v", err)
			}
			if m.Folds != tt.wantFolds {
				t.Errorf("folds: got %d, want %d", m.Folds, tt.wantFolds)
			}
			if m.Input != (bundle.InputShape{Channels: 1, Height: 48, Width: 64}) {
				t.Errorf("input: got %v, want 1x48x64", m.Input)
			}
			if !(m.Threshold >= MinThreshold) {
				t.Errorf("threshold: got %v, want >= %v", m.Threshold, MinThreshold)
			}
		})
	}
}

func TestTrainTemplateErrors(t *testing.T) {
	good := goodParts(3, 1, 1)
	wide := makePart(partSpec{width: 640, height: 240, channels: 1, seed: 9})
	bad := good[1]
	bad.Pix = bad.Pix[:100]
	tests := []struct {
		name string
		good []camera.Frame
		opts TemplateOptions
		want string
	}{
		{"no images", nil, TemplateOptions{}, "0 good images, need at least 2"},
		{"one image", good[:1], TemplateOptions{}, "1 good images, need at least 2"},
		{"mixed aspect", []camera.Frame{good[0], good[1], wide}, TemplateOptions{},
			"good image 2 is 640x240 (aspect 2.67) but image 0 is 640x480 (aspect 1.33)"},
		{"bad frame", []camera.Frame{good[0], bad}, TemplateOptions{}, "good image 1: bad frame"},
		{"even map_smooth", good, TemplateOptions{MapSmooth: 4}, "map_smooth 4: want an odd number"},
		{"blur too wide", good, TemplateOptions{Width: 12, BlurSigma: 3}, "blur_sigma 3 needs a 9 px border, too wide for 12x9"},
		{"min_std above 1", good, TemplateOptions{MinStd: 2}, "min_std 2"},
		{"negative pose_jitter", good, TemplateOptions{PoseJitter: -1}, "pose_jitter -1"},
		{"false_reject above 1", good, TemplateOptions{FalseReject: 1.5}, "false_reject 1.5: want a fraction"},
		{"tiny input", good, TemplateOptions{Width: 4, Height: 3}, "input size 4x3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := TrainTemplate(context.Background(), tt.good, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("TrainTemplate error: got %v, want it to contain %q", err, tt.want)
			}
		})
	}
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := TrainTemplate(ctx, good, TemplateOptions{Width: 32})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("TrainTemplate error: got %v, want context.Canceled", err)
		}
	})
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.onnx")
	for i, data := range [][]byte{[]byte("first"), []byte("second, longer")} {
		m := &TrainedModel{ONNX: data}
		if err := m.WriteFile(path); err != nil {
			t.Fatalf("WriteFile %d: %v", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != string(data) {
			t.Fatalf("file after write %d: got %q (%v), want %q", i, got, err, data)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries after writing, want 1 (no temp files left)", len(entries))
	}
	m := &TrainedModel{ONNX: []byte("x")}
	if err := m.WriteFile(filepath.Join(dir, "missing", "model.onnx")); err == nil {
		t.Errorf("WriteFile into a missing folder: got nil error, want one")
	}
}

func TestThresholdRule(t *testing.T) {
	many := make([]float64, 40)
	for i := range many {
		many[i] = 2 + float64(i)/40
	}
	tests := []struct {
		name   string
		scores []float64
		budget float64
		want   float64
		rule   string
	}{
		{"few images: a quarter over the max", []float64{4, 10, 6}, 0.01, 12.5, eval.RuleFewImages},
		{"floor for identical images", []float64{0, 0}, 0.01, MinThreshold, eval.RuleFewImages},
		{"budget within the scores: their quantile", many, 0.3, many[27], eval.RuleFalseReject},
	}
	for _, tt := range tests {
		got, err := calibrate(tt.scores, tt.budget)
		if err != nil || math.Abs(got.Threshold-tt.want) > 1e-12 || got.Rule != tt.rule {
			t.Errorf("%s: calibrate(%v, %v): got %+v, %v, want threshold %v by %s", tt.name, tt.scores, tt.budget, got, err, tt.want, tt.rule)
		}
	}
	// A 1% budget lies beyond the highest of 40 scores: the tail fit extrapolates.
	if got, err := calibrate(many, 0.01); err != nil || got.Threshold <= many[39] || got.FalseReject > 0.011 {
		t.Errorf("calibrate(40 scores, 1%%): got %+v, %v; want a threshold above the highest score, expected false rejects <= 1%%", got, err)
	}
	if _, err := calibrate([]float64{1, math.NaN()}, 0.1); err == nil {
		t.Errorf("calibrate with a NaN score: got nil error, want one")
	}
}

func TestPixelStats(t *testing.T) {
	near := func(got []float32, want ...float64) bool {
		for i := range want {
			if math.Abs(float64(got[i])-want[i]) > 1e-6 {
				return false
			}
		}
		return true
	}
	// Two pixels, three images used, a fourth ignored; no jitter term.
	blurred := [][]float32{{0.5, 0.1}, {0.5, 0.3}, {0.5, 0.5}, {9, 9}}
	mean, std := pixelStats(blurred, bundle.InputShape{Channels: 1, Height: 1, Width: 2}, func(i int) bool { return i < 3 }, 0.02, 0)
	if !near(mean, 0.5, 0.3) || !near(std, 0.02, 0.2) {
		t.Errorf("mean, std: got %v, %v, want [0.5 0.3], [0.02 (floor) 0.2]", mean, std)
	}
	// A ramp, identical images: std is the floor combined with jitter * gradient.
	ramp := [][]float32{{0, 0.5, 1}, {0, 0.5, 1}}
	_, std = pixelStats(ramp, bundle.InputShape{Channels: 1, Height: 1, Width: 3}, func(int) bool { return true }, 0.02, 2)
	if !near(std, math.Sqrt(0.0004+4*0.0625), math.Sqrt(0.0004+4*0.25), math.Sqrt(0.0004+4*0.0625)) {
		t.Errorf("std of a ramp with jitter 2: got %v, want sqrt(0.02^2 + 2^2 * gradient^2) with gradients 0.25, 0.5, 0.25", std)
	}
	var sum float64
	for _, w := range gaussian1D(1.3) {
		sum += float64(w)
	}
	if len(gaussian1D(1.3)) != 2*4+1 || math.Abs(sum-1) > 1e-6 {
		t.Errorf("gaussian1D(1.3): %d taps summing to %v, want 9 taps summing to 1", len(gaussian1D(1.3)), sum)
	}
}
