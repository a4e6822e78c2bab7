package bundle

import (
	"errors"
	"strings"
	"testing"
)

func validManifest() Manifest {
	return Manifest{
		Format: BundleFormat, Name: "bracket", Version: "1.2.0", Task: TaskAnomaly,
		Input:      InputSpec{Layout: LayoutNCHW, Color: ColorGray},
		Outputs:    OutputSpec{Score: "score"},
		Thresholds: Thresholds{Fail: 2.5},
		Opset:      17,
		Files:      map[string]string{"model.onnx": strings.Repeat("ab", 32)},
	}
}

func TestManifestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(m *Manifest)
		want   string // "" for valid
	}{
		{"valid", func(m *Manifest) {}, ""},
		{"missing keys", func(m *Manifest) { m.Name, m.Input.Layout, m.Thresholds.Fail = "", "", 0 },
			"missing keys: name, input.layout, thresholds.fail"},
		{"no model file", func(m *Manifest) { m.Files = nil }, "missing keys: files[model.onnx]"},
		{"classifier without labels", func(m *Manifest) { m.Task = TaskClassification }, "missing keys: outputs.labels, outputs.ok_label"},
		{"wrong format", func(m *Manifest) { m.Format = "takt-bundle/9" }, `format "takt-bundle/9"`},
		{"bad version", func(m *Manifest) { m.Version = "1.2" }, `version: "1.2" is not a semantic version`},
		{"bad task", func(m *Manifest) { m.Task = "segmentation" }, `task "segmentation"`},
		{"bad layout", func(m *Manifest) { m.Input.Layout = "CHW" }, `input.layout "CHW"`},
		{"bad color", func(m *Manifest) { m.Input.Color = "hsv" }, `input.color "hsv"`},
		{"only width", func(m *Manifest) { m.Input.Width = 64 }, "give both"},
		{"bad resize", func(m *Manifest) { m.Input.Resize = "fill" }, `input.resize "fill"`},
		{"std zero", func(m *Manifest) { m.Input.Std = []float64{0} }, "input.std: 0 is not a finite number > 0"},
		{"two means for rgb", func(m *Manifest) { m.Input.Color, m.Input.Mean = ColorRGB, []float64{0.1, 0.2} }, "input.mean has 2 values: want 1 or 3"},
		{"negative threshold", func(m *Manifest) { m.Thresholds.Fail = -1 }, "thresholds.fail: -1 must be"},
		{"opset too new", func(m *Manifest) { m.Opset = 26 }, "opset 26: unsupported, want 7..25"},
		{"roi outside", func(m *Manifest) { m.ROIs = []ROI{{Name: "a", Region: Region{0, 0, 1.5, 1}}} }, `rois[0] "a"`},
		{"roi names repeat", func(m *Manifest) {
			m.ROIs = []ROI{{Name: "a", Region: Region{0, 0, 1, 1}}, {Name: "a", Region: Region{0, 0, 1, 1}}}
		}, `rois[1]: empty or repeated name "a"`},
		{"path traversal", func(m *Manifest) { m.Files["../etc/passwd"] = strings.Repeat("0", 64) }, `path "../etc/passwd"`},
		{"bad sha", func(m *Manifest) { m.Files["golden/a.png"] = "xyz" }, `files[golden/a.png]: "xyz" is not a lowercase hex sha256`},
		{"golden not listed", func(m *Manifest) { m.Golden = &GoldenSet{Cases: []GoldenCase{{File: "golden/a.png"}}} }, "must be under golden/ and listed"},
		{"labels on anomaly", func(m *Manifest) { m.Outputs.Labels = []string{"a"} }, "only for task classification"},
		{"ok label unknown", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.OKLabel = TaskClassification, []string{"good", "bad"}, "fine"
		}, `outputs.ok_label "fine" is not one of`},
		{"normalized twice", func(m *Manifest) {
			m.Input.Color, m.Input.InGraph, m.Input.Mean = ColorRGB, []string{InGraphResize, InGraphNormalize}, ImageNetMean
		}, "normalized twice"},
		{"normalization without a range", func(m *Manifest) {
			m.Outputs.Normalize = &ScoreNormalization{ImageThreshold: 1, Min: 2, Max: 2}
		}, "max 2 must be above min 2"},
		{"normalization of a classifier", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.OKLabel, m.Thresholds.Fail = TaskClassification, []string{"ok", "dent"}, "ok", 0.5
			m.Outputs.Normalize = &ScoreNormalization{Min: 0, Max: 1}
		}, "outputs.normalize: only for task anomaly"},
		{"per-class threshold on an anomaly model", func(m *Manifest) { m.Thresholds.PerClass = map[string]float64{"dent": 0.5} }, "thresholds.per_class: only for"},
		{"per-class threshold of the ok class", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.OKLabel, m.Thresholds.Fail = TaskClassification, []string{"ok", "dent"}, "ok", 0.5
			m.Thresholds.PerClass = map[string]float64{"ok": 0.5}
		}, `thresholds.per_class: "ok" is not a FAIL class`},
		{"per-class threshold above 1", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.OKLabel, m.Thresholds.Fail = TaskClassification, []string{"ok", "dent"}, "ok", 0.5
			m.Thresholds.PerClass = map[string]float64{"dent": 1.5}
		}, "thresholds.per_class[dent] 1.5"},
		{"per-class threshold below a detector's boxes", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.BoxLayout, m.Thresholds.Fail = TaskDetection, []string{"dent"}, BoxLayoutCXCYWH, 0.5
			m.Thresholds.PerClass = map[string]float64{"dent": 0.1}
		}, "thresholds.per_class[dent] 0.1 is below outputs.min_confidence"},
		{"unknown in-graph step", func(m *Manifest) { m.Input.InGraph = []string{"crop"} }, `input.in_graph "crop"`},
		{"threshold on another scale", func(m *Manifest) { m.Outputs.ScoreRange = []float64{0, 1} }, "outside outputs.score_range"},
		{"fail label unknown", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.OKLabel, m.Thresholds.Fail = TaskClassification, []string{"ok", "dent"}, "ok", 0.5
			m.Outputs.FailLabels = []string{"scratch"}
		}, `outputs.fail_labels: "scratch" is not one of`},
		{"ok label fails", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.OKLabel, m.Thresholds.Fail = TaskClassification, []string{"ok", "dent"}, "ok", 0.5
			m.Outputs.FailLabels = []string{"ok"}
		}, `"ok" is outputs.ok_label`},
		{"detector without layout", func(m *Manifest) { m.Task, m.Outputs.Labels = TaskDetection, []string{"dent"} }, "missing keys: outputs.box_layout"},
		{"detector threshold below its boxes", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.BoxLayout, m.Thresholds.Fail = TaskDetection, []string{"dent"}, BoxLayoutCXCYWH, 0.1
		}, "below outputs.min_confidence 0.25"},
		{"detector with rois", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.BoxLayout, m.Thresholds.Fail = TaskDetection, []string{"dent"}, BoxLayoutCXCYWH, 0.5
			m.ROIs = []ROI{{Name: "a", Region: Region{X1: 1, Y1: 1}}}
		}, "rois: not supported for task detection"},
		{"boxes on a classifier", func(m *Manifest) {
			m.Task, m.Outputs.Labels, m.Outputs.OKLabel, m.Thresholds.Fail = TaskClassification, []string{"ok", "dent"}, "ok", 0.5
			m.Outputs.NMSIoU = 0.5
		}, "only for task detection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest()
			tt.change(&m)
			err := m.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: got %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate:\n got %v\nwant ErrBadBundle containing %q", err, tt.want)
			}
		})
	}
}

func TestParseManifestStrict(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"unknown key", `{"format":"takt-bundle/1","nme":"x"}`, `unknown field "nme"`},
		{"trailing data", `{"format":"takt-bundle/1"} {}`, "data after the JSON object"},
		{"not json", `name: x`, "invalid character"},
		{"missing everything", `{}`, "missing keys: format, name, version, task, input.layout, input.color, outputs.score, thresholds.fail, opset, files[model.onnx]"},
	}
	for _, tt := range tests {
		_, err := ParseManifest([]byte(tt.json))
		if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParseManifest:\n got %v\nwant ErrBadBundle containing %q", tt.name, err, tt.want)
		}
	}
}

func TestSemver(t *testing.T) {
	order := []string{"0.9.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "v2.0.0"}
	for i := range order {
		for j := range order {
			a, err := ParseSemver(order[i])
			if err != nil {
				t.Fatalf("ParseSemver(%q): %v", order[i], err)
			}
			b, _ := ParseSemver(order[j])
			if got, want := a.Compare(b), cmpInt(i, j); got != want {
				t.Errorf("%s vs %s: got %d, want %d", order[i], order[j], got, want)
			}
		}
	}
	for _, bad := range []string{"", "1", "1.2", "01.2.3", "1.2.3-", "x.y.z"} {
		if _, err := ParseSemver(bad); err == nil {
			t.Errorf("ParseSemver(%q): got nil error, want one", bad)
		}
	}
}

func TestCheckUpgradeAndAgent(t *testing.T) {
	run := validManifest()
	next := validManifest()
	next.Version = "1.1.9"
	if err := CheckUpgrade(&run, &next); !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), "not above the running 1.2.0") {
		t.Errorf("downgrade: got %v, want ErrBadBundle naming the running version", err)
	}
	next.Rollback = true
	if err := CheckUpgrade(&run, &next); err != nil {
		t.Errorf("signed rollback: got %v, want nil", err)
	}
	next.Version, next.Rollback = "1.3.0", false
	if err := CheckUpgrade(&run, &next); err != nil {
		t.Errorf("upgrade: got %v, want nil", err)
	}
	next.Name = "other"
	if err := CheckUpgrade(&run, &next); err == nil {
		t.Errorf("other model: got nil, want an error")
	}
	next.MinAgentVersion = "0.3.0"
	if err := next.CheckAgent("0.2.9"); !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), "needs agent 0.3.0 or newer") {
		t.Errorf("CheckAgent old agent: got %v", err)
	}
	if err := next.CheckAgent("0.3.0"); err != nil {
		t.Errorf("CheckAgent: got %v, want nil", err)
	}
}
