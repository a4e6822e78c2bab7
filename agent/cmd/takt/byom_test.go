package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent"
)

// Each export of testdata/byom (made by PyTorch's own exporter) goes through the commands
// a user runs: inspect --write-manifest, sign, verify, score; the scores, decisions,
// classes and boxes equal PyTorch's within 1e-4.
func TestBringYourOwnModel(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "line.key")
	if out, err := takt(t, "model", "keygen", "--out", key); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	tests := []struct {
		name    string
		answers []string
		found   string
	}{
		{"resnet", []string{"--labels", "ok,scratch,dent", "--width", "64", "--height", "64"}, "image classifier (torchvision/timm style)"},
		{"anomalib", []string{"--width", "48", "--height", "48"}, "anomalib 2.x export"},
		{"anomalib1", []string{"--width", "48", "--height", "48"}, "anomalib 1.x export"},
		{"yolo-cls", nil, "Ultralytics YOLO classify export"},
		{"yolo-det", nil, "Ultralytics YOLO detect export"},
		{"yolo-e2e", nil, "Ultralytics YOLO end-to-end detect export"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := filepath.Join("..", "..", "..", "testdata", "byom", tt.name)
			model := filepath.Join(src, "model.onnx")
			manifest := filepath.Join(dir, tt.name+".json")
			tar := filepath.Join(dir, tt.name+".tar")
			args := append([]string{"model", "inspect", "--write-manifest", manifest}, tt.answers...)
			out, err := takt(t, append(args, model)...)
			if err != nil || !strings.Contains(out, "export:    "+tt.found) || !strings.Contains(out, "station:   runs with the manifest") {
				t.Fatalf("inspect: %v\n%s", err, out)
			}
			if out, err := takt(t, "model", "sign", "--manifest", manifest, "--model", model, "--key", key, "--out", tar); err != nil {
				t.Fatalf("sign: %v\n%s", err, out)
			}
			if out, err := takt(t, "model", "verify", "--key", key+".pub", tar); err != nil || !strings.HasPrefix(out, "verify: ok") {
				t.Fatalf("verify: %v\n%s", err, out)
			}
			var exp struct {
				Threshold float64 `json:"threshold"`
				Cases     map[string]struct {
					Score    float64 `json:"score"`
					Decision string  `json:"decision"`
					Class    string  `json:"class"`
					Boxes    []struct {
						Class      string    `json:"class"`
						Confidence float64   `json:"confidence"`
						XYXY       []float64 `json:"xyxy"`
					} `json:"boxes"`
				} `json:"cases"`
			}
			raw, err := os.ReadFile(filepath.Join(src, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &exp); err != nil {
				t.Fatal(err)
			}
			images := []string{"score", "--bundle", tar, "--key", key + ".pub"}
			for name := range exp.Cases {
				images = append(images, filepath.Join(src, name))
			}
			out, err = takt(t, append([]string{"model"}, images...)...)
			if err != nil {
				t.Fatalf("score: %v\n%s", err, out)
			}
			lines := 0
			var worst float64
			sc := bufio.NewScanner(strings.NewReader(out))
			for sc.Scan() {
				var l scoreLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatalf("score line %q: %v", sc.Text(), err)
				}
				lines++
				want := exp.Cases[filepath.Base(l.Image)]
				if l.Score == nil {
					t.Fatalf("%s: no score: %s", l.Image, sc.Text())
				}
				d := math.Abs(*l.Score - want.Score)
				worst = max(worst, d)
				if d > 1e-4 || l.Decision != want.Decision || l.Class != want.Class && want.Boxes == nil || l.Threshold != exp.Threshold {
					t.Errorf("%s: score %.6f %s class %q at threshold %g, want %.6f %s class %q at %g (PyTorch)", l.Image, *l.Score, l.Decision, l.Class, l.Threshold,
						want.Score, want.Decision, want.Class, exp.Threshold)
				}
				if len(l.Boxes) != len(want.Boxes) {
					t.Fatalf("%s: %d boxes, want %d", l.Image, len(l.Boxes), len(want.Boxes))
				}
				for i, b := range l.Boxes {
					w := want.Boxes[i]
					for j, v := range []float64{b.Confidence, b.X0, b.Y0, b.X1, b.Y1} {
						ref := append([]float64{w.Confidence}, w.XYXY...)[j]
						worst = max(worst, math.Abs(v-ref))
						if math.Abs(v-ref) > 1e-4 || b.Class != w.Class {
							t.Errorf("%s: box %d %+v, want %s %.6f %v", l.Image, i, b, w.Class, w.Confidence, w.XYXY)
						}
					}
				}
			}
			if lines != len(exp.Cases) {
				t.Fatalf("score printed %d lines for %d images:\n%s", lines, len(exp.Cases), out)
			}
			t.Logf("%s: takt model score vs PyTorch, max abs diff %.3g", tt.name, worst)

			// The station loads the same bundle as it is and decides as PyTorch's outputs say.
			fails := 0
			for _, c := range exp.Cases {
				if c.Decision == "FAIL" {
					fails++
				}
			}
			cfg := agent.DefaultConfig()
			cfg.DataDir = filepath.Join(dir, tt.name+"-station")
			cfg.Camera.Path = src
			cfg.Model.Path, cfg.Model.Bundle, cfg.Model.TrustedKeys = "", tar, []string{key + ".pub"}
			cfg.Deadline = 10e9
			a, err := agent.New(cfg, zerolog.Nop())
			if err != nil {
				t.Fatalf("agent with bundle %s: %v", tar, err)
			}
			if err := a.Run(t.Context()); err != nil {
				t.Fatalf("agent run: %v", err)
			}
			out, err = takt(t, "store", "counts", "--data-dir", cfg.DataDir)
			want := fmt.Sprintf("parts=%d pass=%d fail=%d no_decision=0", len(exp.Cases), len(exp.Cases)-fails, fails)
			if err != nil || strings.TrimSpace(out) != want {
				t.Errorf("station verdicts: %q (%v), want %q", out, err, want)
			}
			// Each verdict keeps the class or boxes that decided it.
			out, err = takt(t, "store", "list", "--data-dir", cfg.DataDir)
			if err != nil {
				t.Fatalf("store list: %v", err)
			}
			for _, c := range exp.Cases {
				switch {
				case len(c.Boxes) > 0 && !strings.Contains(out, fmt.Sprintf(`"boxes":[{"class":%q`, c.Boxes[0].Class)):
					t.Errorf("stored verdicts lack the %s box:\n%s", c.Boxes[0].Class, out)
				case c.Class != "" && !strings.Contains(out, fmt.Sprintf(`"class":%q`, c.Class)):
					t.Errorf("stored verdicts lack class %q:\n%s", c.Class, out)
				}
			}
		})
	}
}

// inspect describes a model it cannot turn into a manifest, and --write-manifest then
// fails with a question naming each manifest key and flag.
func TestInspectAsksForWhatTheModelDoesNotTell(t *testing.T) {
	model := filepath.Join("..", "..", "..", "testdata", "byom", "resnet", "model.onnx")
	manifest := filepath.Join(t.TempDir(), "m.json")
	out, err := takt(t, "model", "inspect", "--write-manifest", manifest, model)
	if err == nil {
		t.Fatalf("inspect --write-manifest without answers succeeded:\n%s", out)
	}
	for _, want := range []string{
		`input:     "input" float32 [batch_size,3,height,width]`,
		`output:    "output" float32 [batch_size,3] (from Gemm)`,
		"ai.onnx opset 17",
		"logits (a softmax is applied)",
		"outputs.labels: the model does not name its 3 classes; set --labels a,b,c",
		"input.width, input.height:",
	} {
		if !strings.Contains(out+err.Error(), want) {
			t.Errorf("inspect output lacks %q:\n%s\n%v", want, out, err)
		}
	}
	if _, statErr := os.Stat(manifest); statErr == nil {
		t.Errorf("a manifest was written although keys are open")
	}
	// score --model asks the same.
	_, err = takt(t, "model", "score", "--model", model, model)
	if err == nil || !strings.Contains(err.Error(), "outputs.labels") {
		t.Errorf("score --model without answers: %v, want the outputs.labels question", err)
	}
}
