//go:build cgo

package models

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/internal/modeltest"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

// byomExpected is a fixture's expected.json, written by testdata/byom/make-fixtures.py
// from PyTorch's own outputs.
type byomExpected struct {
	Labels []string `json:"labels"`
	Width  int      `json:"width"`
	Height int      `json:"height"`
	Cases  map[string]struct {
		Score      float64   `json:"score"`
		Decision   string    `json:"decision"`
		Class      string    `json:"class"`
		Confidence float64   `json:"confidence"`
		MapMax     float64   `json:"map_max"`
		MapMean    float64   `json:"map_mean"`
		MapCorner  []float64 `json:"map_corner"`
		MapSize    []int     `json:"map_size"`
		Boxes      []struct {
			Class      string    `json:"class"`
			Confidence float64   `json:"confidence"`
			XYXY       []float64 `json:"xyxy"`
		} `json:"boxes"`
	} `json:"cases"`
}

const byomDir = "../testdata/byom"

func readByom(t *testing.T, name string) ([]byte, byomExpected) {
	return readByomModel(t, name, "model.onnx")
}

func readByomModel(t *testing.T, name, model string) ([]byte, byomExpected) {
	t.Helper()
	onnx, err := os.ReadFile(filepath.Join(byomDir, name, model))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(byomDir, name, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exp byomExpected
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatalf("%s/expected.json: %v", name, err)
	}
	if len(exp.Cases) == 0 {
		t.Fatalf("%s/expected.json has no cases", name)
	}
	return onnx, exp
}

// The exports of testdata/byom, made by PyTorch's own exporter, load with the manifest
// Recognize writes (plus the answers the model cannot give) and reproduce PyTorch's
// scores, classes, maps and boxes within 1e-4.
func TestExportsMatchPyTorch(t *testing.T) {
	const tol = 1e-4
	tests := []struct {
		dir     string
		kind    string
		answers bundle.Answers
		task    string
		model   string // default model.onnx
	}{
		{"resnet", bundle.ExportClassifier, bundle.Answers{Name: "resnet", Labels: []string{"ok", "scratch", "dent"}, Width: 64, Height: 64}, bundle.TaskClassification, ""},
		{"anomalib", bundle.ExportAnomalib, bundle.Answers{Name: "anomalib", Width: 48, Height: 48}, bundle.TaskAnomaly, ""},
		{"anomalib1", bundle.ExportAnomalib1, bundle.Answers{Name: "anomalib1", Width: 48, Height: 48}, bundle.TaskAnomaly, ""},
		{"yolo-cls", bundle.ExportYOLOClassify, bundle.Answers{Name: "yolo-cls"}, bundle.TaskClassification, ""},
		{"yolo-det", bundle.ExportYOLODetect, bundle.Answers{Name: "yolo-det"}, bundle.TaskDetection, ""},
		{"yolo-e2e", bundle.ExportYOLODetect, bundle.Answers{Name: "yolo-e2e"}, bundle.TaskDetection, ""},
		// Exported with dynamic=True: the size comes from imgsz, the anchor count from a test run.
		{"yolo-det", bundle.ExportYOLODetect, bundle.Answers{Name: "yolo-det"}, bundle.TaskDetection, "model-dynamic.onnx"},
	}
	for _, tt := range tests {
		if tt.model == "" {
			tt.model = "model.onnx"
		}
		t.Run(tt.dir+"/"+tt.model, func(t *testing.T) {
			onnx, exp := readByomModel(t, tt.dir, tt.model)
			h, err := bundle.InspectModel(onnx)
			if err != nil {
				t.Fatal(err)
			}
			rec := bundle.Recognize(h, beside(t, tt.dir))
			if rec.Kind != tt.kind {
				t.Fatalf("Recognize: kind %q (%s), want %q", rec.Kind, rec.Found, tt.kind)
			}
			m, err := rec.Manifest(tt.answers)
			if err != nil {
				t.Fatalf("Manifest: %v", err)
			}
			if m.Task != tt.task {
				t.Fatalf("manifest task %q, want %q", m.Task, tt.task)
			}
			rt := runtimeOf(t, *m, onnx, RuntimeOptions{ReturnMap: true})
			info := rt.Info()
			var worst float64
			diff := func(what string, got, want float64) {
				t.Helper()
				d := math.Abs(got - want)
				worst = max(worst, d)
				if !(d <= tol) {
					t.Errorf("%s: got %.7g, want %.7g (PyTorch), diff %.3g > %g", what, got, want, d, tol)
				}
			}
			for name, c := range exp.Cases {
				data, err := os.ReadFile(filepath.Join(byomDir, tt.dir, name))
				if err != nil {
					t.Fatal(err)
				}
				f, err := DecodeImage(data)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				res, err := rt.Infer(context.Background(), f)
				if err != nil {
					t.Fatalf("%s: Infer: %v", name, err)
				}
				diff(name+" score", res.Score, c.Score)
				decision := "PASS"
				if res.Score > info.Threshold {
					decision = "FAIL"
				}
				if decision != c.Decision {
					t.Errorf("%s: decision %s (score %.6f, threshold %g), want %s", name, decision, res.Score, info.Threshold, c.Decision)
				}
				if c.Class != "" {
					if res.Class != c.Class {
						t.Errorf("%s: class %q, want %q", name, res.Class, c.Class)
					}
					diff(name+" confidence", res.Confidence, c.Confidence)
				}
				if c.MapSize != nil {
					if res.Map == nil || res.Map.Height != c.MapSize[0] || res.Map.Width != c.MapSize[1] {
						t.Fatalf("%s: map %+v, want %dx%d (the size the graph resizes to, learned from a test run)", name, res.Map, c.MapSize[1], c.MapSize[0])
					}
					v, w := res.Map.Values, res.Map.Width
					var sum float64
					for _, x := range v {
						sum += float64(x)
					}
					diff(name+" map max", float64(slices.Max(v)), c.MapMax)
					diff(name+" map mean", sum/float64(len(v)), c.MapMean)
					for i, idx := range []int{0, w - 1, len(v) - w, len(v) - 1} {
						diff(name+" map corner", float64(v[idx]), c.MapCorner[i])
					}
				}
				if tt.task == bundle.TaskDetection {
					if len(res.Boxes) != len(c.Boxes) {
						t.Fatalf("%s: %d boxes %+v, want %d %+v", name, len(res.Boxes), res.Boxes, len(c.Boxes), c.Boxes)
					}
					for i, b := range res.Boxes {
						want := c.Boxes[i]
						if b.Class != want.Class {
							t.Errorf("%s: box %d class %q, want %q", name, i, b.Class, want.Class)
						}
						diff(name+" box confidence", b.Confidence, want.Confidence)
						for j, got := range []float64{b.X0, b.Y0, b.X1, b.Y1} {
							diff(name+" box corner", got, want.XYXY[j])
						}
					}
				}
			}
			t.Logf("%s/%s: %d images, max abs diff against PyTorch %.3g", tt.dir, tt.model, len(exp.Cases), worst)
		})
	}
}

// What a model does not tell is asked for by manifest key, all at once.
func TestRecognizeAsksWhatTheModelDoesNotTell(t *testing.T) {
	for _, tt := range []struct {
		dir  string
		want []string
	}{
		{"resnet", []string{"outputs.labels: the model does not name its 3 classes", "--labels", "input.width, input.height:", "--width W --height H"}},
		{"anomalib", []string{"input.width, input.height:"}},
		{"anomalib1", []string{"input.width, input.height:"}},
	} {
		onnx, _ := readByom(t, tt.dir)
		h, err := bundle.InspectModel(onnx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = bundle.Recognize(h, beside(t, tt.dir)).Manifest(bundle.Answers{Name: tt.dir})
		if !errors.Is(err, bundle.ErrQuestions) {
			t.Fatalf("%s: Manifest without answers: %v, want ErrQuestions", tt.dir, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not ask %q", tt.dir, err, w)
			}
		}
	}
	// anomalib 1.x without its metadata.json: the normalization is asked for.
	onnx1, _ := readByom(t, "anomalib1")
	h1, _ := bundle.InspectModel(onnx1)
	if _, err := bundle.Recognize(h1, nil).Manifest(bundle.Answers{Name: "a", Width: 48, Height: 48}); err == nil || !strings.Contains(err.Error(), "outputs.normalize: anomalib 1.x keeps its thresholds") {
		t.Errorf("anomalib 1.x without metadata.json: %v, want a question for outputs.normalize", err)
	}
	// A class list without a good class: the ok label is asked for.
	onnx, _ := readByom(t, "resnet")
	h, _ := bundle.InspectModel(onnx)
	_, err := bundle.Recognize(h, nil).Manifest(bundle.Answers{Name: "r", Labels: []string{"a", "b", "c"}, Width: 64, Height: 64})
	if err == nil || !strings.Contains(err.Error(), "outputs.ok_label") {
		t.Errorf("labels without a good class: %v, want a question for outputs.ok_label", err)
	}
}

// beside reads a fixture's files beside its model, as takt model inspect does.
func beside(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(byomDir, dir, bundle.AnomalibMetadataFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{bundle.AnomalibMetadataFile: data}
}

// editModel changes a fixture's ModelProto and returns the new bytes.
func editModel(t *testing.T, onnx []byte, edit func(m *onnxpb.ModelProto)) []byte {
	t.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(onnx, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Broken exports are refused at load with an error that names the problem.
func TestBadExportsAreRefused(t *testing.T) {
	onnx, _ := readByom(t, "yolo-cls")
	h, err := bundle.InspectModel(onnx)
	if err != nil {
		t.Fatal(err)
	}
	good, err := bundle.Recognize(h, nil).Manifest(bundle.Answers{Name: "yolo-cls"})
	if err != nil {
		t.Fatal(err)
	}
	renameOutput := func(g *onnxpb.GraphProto, from, to string) {
		for _, n := range g.Node {
			for i, o := range n.Output {
				if o == from {
					n.Output[i] = to
				}
			}
		}
	}
	tests := []struct {
		name string
		edit func(m *onnxpb.ModelProto)
		want []string
	}{
		{"wrong rank", func(m *onnxpb.ModelProto) {
			dims := m.Graph.Input[0].Type.GetTensorType().Shape
			dims.Dim = dims.Dim[1:]
		}, []string{`input "images" float32 [3,64,64] has rank 3`}},
		{"unsupported op", func(m *onnxpb.ModelProto) {
			for _, n := range m.Graph.Node {
				if n.GetOpType() == "Softmax" {
					n.OpType, n.Domain = proto.String("FancySoftmax"), proto.String("com.example")
				}
			}
			m.OpsetImport = append(m.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: proto.String("com.example"), Version: proto.Int64(1)})
		}, []string{"FancySoftmax"}},
		{"missing score output", func(m *onnxpb.ModelProto) {
			renameOutput(m.Graph, "output0", "probs")
			m.Graph.Output[0].Name = proto.String("probs")
		}, []string{`no output "output0"`, `"probs"`}},
		{"NaN output", func(m *onnxpb.ModelProto) {
			renameOutput(m.Graph, "output0", "p")
			m.Graph.Node = append(m.Graph.Node,
				&onnxpb.NodeProto{OpType: proto.String("Sub"), Input: []string{"p", "p"}, Output: []string{"zero"}},
				&onnxpb.NodeProto{OpType: proto.String("Div"), Input: []string{"zero", "zero"}, Output: []string{"output0"}})
		}, []string{`output "output0" is NaN on a blank image`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := editModel(t, onnx, tt.edit)
			m := *good
			m.Files = map[string]string{"model.onnx": bundle.SHA256Hex(bad)}
			rt, err := NewRuntime(context.Background(), &bundle.Bundle{Manifest: &m, ONNX: bad}, RuntimeOptions{Threads: 1})
			if err == nil {
				err = rt.CheckFinite(context.Background())
				rt.Close()
			}
			if err == nil {
				t.Fatal("NewRuntime and CheckFinite accepted the broken export")
			}
			if !errors.Is(err, bundle.ErrUnsupportedModel) && !errors.Is(err, bundle.ErrInvalidModel) {
				t.Errorf("error %v wraps neither ErrUnsupportedModel nor ErrInvalidModel", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	// And the signer refuses a manifest the model does not match.
	bad := editModel(t, onnx, tests[2].edit)
	_, priv := modeltest.NewKey(t)
	if err := bundle.BuildBundle(new(strings.Builder), *good, bad, nil, priv); err == nil || !strings.Contains(err.Error(), `no output "output0"`) {
		t.Errorf("BuildBundle of a model without its score output: %v, want no output \"output0\"", err)
	}
}

// The detector keeps what Ultralytics' NMS keeps: the best class per anchor above the
// minimum confidence, then per class the strongest of boxes overlapping above the IoU.
func TestDetectorNMS(t *testing.T) {
	// Four anchors, two classes; rows cx, cy, w, h, class 0, class 1.
	out := []float32{
		10, 11, 40, 10, // cx
		10, 10, 10, 10, // cy
		10, 10, 10, 10, // w
		10, 10, 10, 10, // h
		0.9, 0.8, 0.1, 0.3, // class 0
		0.1, 0.1, 0.7, 0.2, // class 1
	}
	d := newDetector(bundle.BoxLayoutCXCYWH, 2, 4, 0.25, 0.7)
	got := d.detect(out)
	// Anchors 1 (IoU 0.82) and 3 (the same box) overlap anchor 0 in its class and go.
	if len(got) != 2 || got[0].class != 0 || got[0].conf != 0.9 || got[1].class != 1 || got[1].conf != 0.7 {
		t.Fatalf("detect: %+v, want class 0 at 0.9 and class 1 at 0.7", got)
	}
	if got := newDetector(bundle.BoxLayoutCXCYWH, 2, 4, 0.25, 0).detect(out); len(got) != 4 {
		t.Errorf("without NMS: %d boxes, want 4", len(got))
	}
	if got := newDetector(bundle.BoxLayoutCXCYWH, 2, 4, 0.5, 0).detect(out); len(got) != 3 {
		t.Errorf("minimum confidence 0.5, no NMS: %d boxes, want 3", len(got))
	}
	// An end-to-end output: rows x1, y1, x2, y2, score, class; a row below the minimum, one
	// with a class that is no index and one outside the labels are dropped.
	rows := []float32{
		1, 2, 3, 4, 0.6, 1,
		5, 6, 7, 8, 0.9, 0,
		1, 1, 2, 2, 0.1, 0,
		1, 1, 2, 2, 0.8, 0.5,
		1, 1, 2, 2, 0.8, 2,
	}
	e2e := newDetector(bundle.BoxLayoutXYXY, 2, 5, 0.25, 0).detect(rows)
	if len(e2e) != 2 || e2e[0] != (detection{5, 6, 7, 8, 0.9, 0}) || e2e[1] != (detection{1, 2, 3, 4, 0.6, 1}) {
		t.Errorf("end-to-end rows: %+v, want the 0.9 box of class 0, then the 0.6 box of class 1", e2e)
	}
}

// Per-class thresholds: a class decides on its own probability (a detector: its boxes'
// confidence) against its own threshold, and the score says so on the scale of
// thresholds.fail.
func TestPerClassThresholds(t *testing.T) {
	for _, tt := range []struct {
		dir      string
		answers  bundle.Answers
		perClass map[string]float64
		want     map[string]string // image -> decision
	}{
		// The dent box (0.998) stays below a dent threshold of 0.999; scratches still fail.
		{"yolo-det", bundle.Answers{Name: "d"}, map[string]float64{"dent": 0.999},
			map[string]string{"dent-1.png": "PASS", "scratch-1.png": "FAIL", "good-1.png": "PASS"}},
		// A scratch needs P(scratch) above 0.99999 now; a dent still fails at 0.5.
		{"resnet", bundle.Answers{Name: "r", Labels: []string{"ok", "scratch", "dent"}, Width: 64, Height: 64}, map[string]float64{"scratch": 0.99999},
			map[string]string{"dent-1.png": "FAIL", "scratch-1.png": "PASS", "good-1.png": "PASS"}},
	} {
		t.Run(tt.dir, func(t *testing.T) {
			onnx, _ := readByom(t, tt.dir)
			h, err := bundle.InspectModel(onnx)
			if err != nil {
				t.Fatal(err)
			}
			tt.answers.PerClass = tt.perClass
			m, err := bundle.Recognize(h, nil).Manifest(tt.answers)
			if err != nil {
				t.Fatal(err)
			}
			rt := runtimeOf(t, *m, onnx, RuntimeOptions{})
			for img, want := range tt.want {
				data, err := os.ReadFile(filepath.Join(byomDir, tt.dir, img))
				if err != nil {
					t.Fatal(err)
				}
				f, err := DecodeImage(data)
				if err != nil {
					t.Fatal(err)
				}
				res, err := rt.Infer(context.Background(), f)
				if err != nil {
					t.Fatal(err)
				}
				got := "PASS"
				if res.Score > m.Thresholds.Fail {
					got = "FAIL"
				}
				if got != want {
					t.Errorf("%s: %s (score %.6f, threshold %g, class %s %.6f), want %s", img, got, res.Score, m.Thresholds.Fail, res.Class, res.Confidence, want)
				}
			}
		})
	}
}
