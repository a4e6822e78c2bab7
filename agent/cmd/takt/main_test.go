package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent"
)

func takt(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(args, &out, &errOut)
	return out.String() + errOut.String(), err
}

// The operator's path: synthetic parts, a model trained from the good ones, a run of the
// agent, then counts and evaluation read back from the store.
func TestOperatorWorkflow(t *testing.T) {
	dir := t.TempDir()
	train, line := filepath.Join(dir, "train"), filepath.Join(dir, "line")
	model, data := filepath.Join(dir, "model.onnx"), filepath.Join(dir, "data")
	steps := [][]string{
		{"synth", "--out", train, "--good", "12", "--seed", "3", "--first", "1001"},
		{"synth", "--out", line, "--layout", "line", "--good", "8", "--defective", "4", "--seed", "3", "--first", "1013"},
		{"model", "train", "--data", train, "--out", model, "--name", "cli-part", "--version", "2.0.0", "--ignore", "274,106,520,202", "--method", "template"},
	}
	for _, args := range steps {
		if out, err := takt(t, args...); err != nil {
			t.Fatalf("takt %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, err := takt(t, "model", "inspect", model)
	if err != nil || !strings.Contains(out, "cli-part") || !strings.Contains(out, "2.0.0") || !strings.Contains(out, "threshold:") {
		t.Fatalf("model inspect: %v\n%s", err, out)
	}

	cfg := agent.DefaultConfig()
	cfg.DataDir = data
	cfg.Camera.Path = filepath.Join(line, "line")
	cfg.Model.Path = model
	cfg.Deadline = 10e9
	a, err := agent.New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); err != nil {
		t.Fatalf("agent run: %v", err)
	}

	out, err = takt(t, "store", "counts", "--data-dir", data)
	if err != nil || !strings.HasPrefix(out, "parts=12 ") {
		t.Fatalf("store counts: got %q (%v), want parts=12 ...", out, err)
	}
	out, err = takt(t, "eval", "--data-dir", data, "--labels", filepath.Join(line, "labels.csv"))
	if err != nil || !strings.Contains(out, "parts=12 good=8 defective=4 unlabeled=0") {
		t.Fatalf("eval: got %q (%v), want 8 good and 4 defective, all labeled", out, err)
	}
	out, err = takt(t, "store", "list", "--data-dir", data, "--limit", "2")
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, `"decision":`) {
		t.Fatalf("store list: got %q (%v), want 2 JSON lines", out, err)
	}
}

func TestCommandErrors(t *testing.T) {
	dir := t.TempDir()
	notImages := filepath.Join(dir, "data")
	os.MkdirAll(filepath.Join(notImages, "good"), 0o755)
	tests := []struct {
		args []string
		want string
	}{
		{nil, "usage: takt"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"model"}, "usage: takt"},
		{[]string{"model", "train", "--out", "x.onnx"}, "--data and --out are required"},
		{[]string{"model", "train", "--data", notImages, "--out", filepath.Join(dir, "m.onnx")}, "holds no images"},
		{[]string{"model", "inspect", filepath.Join(dir, "none.onnx")}, "none.onnx"},
		{[]string{"store", "counts", "--data-dir", dir}, "no verdict store in " + dir},
		{[]string{"synth", "--out", dir, "--layout", "grid"}, `unknown layout "grid"`},
		{[]string{"synth", "--out", dir, "--defects", "dent"}, `unknown defect kind "dent"`},
		{[]string{"eval", "--data-dir", dir, "--labels", filepath.Join(dir, "none.csv")}, "none.csv"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := takt(t, tt.args...)
			if err == nil {
				t.Fatalf("got no error, want %q", tt.want)
			}
			if !strings.Contains(out+err.Error(), tt.want) {
				t.Fatalf("got %q / %v, want %q", out, err, tt.want)
			}
		})
	}
}

func TestParseRegions(t *testing.T) {
	got, err := parseRegions([]string{"64,48,320,240"}, 640, 480)
	if err != nil || len(got) != 1 || got[0].X0 != 0.1 || got[0].Y1 != 0.5 {
		t.Fatalf("parseRegions: got %+v, %v; want x0=0.1 y1=0.5", got, err)
	}
	for _, bad := range []string{"1,2,3", "10,10,5,20", "0,0,700,10", "a,b,c,d"} {
		if _, err := parseRegions([]string{bad}, 640, 480); err == nil {
			t.Errorf("parseRegions(%q): got no error", bad)
		}
	}
}
