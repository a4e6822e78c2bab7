package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
)

// The trainer's path end to end through the command: synthetic parts with labeled
// defects, a signed bundle trained with the supervised head allowed, verified, then
// evaluated on new parts with an HTML report; and an unsupervised model from good parts.
func TestModelTrainEval(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~20x slower under -race; make test runs this test without it")
	}
	dir := t.TempDir()
	train, test := filepath.Join(dir, "train"), filepath.Join(dir, "test")
	key, bundlePath, report := filepath.Join(dir, "key"), filepath.Join(dir, "part.tar"), filepath.Join(dir, "report.html")
	steps := [][]string{
		{"synth", "--out", train, "--good", "10", "--defective", "12", "--seed", "5"},
		{"synth", "--out", test, "--good", "12", "--defective", "12", "--seed", "5", "--first", "500"},
		{"model", "keygen", "--out", key},
	}
	for _, args := range steps {
		if out, err := takt(t, args...); err != nil {
			t.Fatalf("takt %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// A mask for one defect of the test set (the whole frame marked): pixel AUROC appears.
	kinds, err := defectFolders(test)
	if err != nil || len(kinds) == 0 {
		t.Fatalf("defect folders of %s: %v %v", test, kinds, err)
	}
	first, _ := filepath.Glob(filepath.Join(test, kinds[0], "*.png"))
	writeMask(t, filepath.Join(test, kinds[0], "masks", filepath.Base(first[0])), 64, 48)

	out, err := takt(t, "model", "train", "--data", train, "--out", bundlePath, "--key", key, "--name", "e2e-part",
		"--max-train", "8", "--ignore", "274,106,520,202", "--false-reject", "5%")
	if err != nil {
		t.Fatalf("model train: %v\n%s", err, out)
	}
	for _, want := range []string{"8 good images, 12 labeled defects", "(false-reject); expected at it: false rejects", "(budget 5%), escapes", "cv_auroc_template=", "cv_auroc_patchcore=", "cv_auroc_patchcore_head=", "wrote " + bundlePath} {
		if !strings.Contains(out, want) {
			t.Errorf("model train output lacks %q:\n%s", want, out)
		}
	}
	if out, err := takt(t, "model", "verify", "--key", key+".pub", bundlePath); err != nil || !strings.Contains(out, "golden set 3/3") {
		t.Fatalf("model verify: %v\n%s", err, out)
	}
	b, err := bundle.InspectBundle(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	m := b.Manifest.Metrics
	if m["good_images"] != 8 || m["defect_images"] != 12 || m["cv_auroc"] <= 0.5 || m["train_seconds"] <= 0 {
		js, _ := json.Marshal(m)
		t.Errorf("manifest metrics %s: want good_images 8, defect_images 12, cv_auroc > 0.5, train_seconds", js)
	}
	if th := b.Manifest.Thresholds; th.Rule != eval.RuleFalseReject || th.FalseRejectBudget != 0.05 || th.ExpectedFalseReject == nil || th.ExpectedEscape == nil {
		js, _ := json.Marshal(th)
		t.Errorf("manifest thresholds %s: want rule false-reject, budget 0.05 (--false-reject 5%%), expected false reject and escape", js)
	}

	out, err = takt(t, "model", "eval", "--bundle", bundlePath, "--key", key+".pub", "--data", test, "--report", report)
	if err != nil {
		t.Fatalf("model eval: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	mm := regexp.MustCompile(`^auroc=([0-9.]+) f1=([0-9.]+) false_reject=([0-9.]+) escape=([0-9.]+)$`).FindStringSubmatch(last)
	if mm == nil {
		t.Fatalf("model eval: last line %q, want auroc=<x> f1=<y> false_reject=<a> escape=<b>\n%s", last, out)
	}
	// The rates are the confusion matrix's, as shares of the 12 good and 12 defective parts.
	var tn, fp, fn, tp int
	if _, err := fmt.Sscanf(out[strings.Index(out, "actual good"):], "actual good %d %d\n  actual defect %d %d", &tn, &fp, &fn, &tp); err != nil {
		t.Fatalf("model eval: confusion matrix unreadable: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("%.4f", float64(fp)/12); mm[3] != want {
		t.Errorf("model eval: false_reject=%s, want %s (%d of 12 good rejected)", mm[3], want, fp)
	}
	if want := fmt.Sprintf("%.4f", float64(fn)/12); mm[4] != want {
		t.Errorf("model eval: escape=%s, want %s (%d of 12 defective passed)", mm[4], want, fn)
	}
	if mm[1] < "0.8" {
		t.Errorf("model eval: auroc %s on new synthetic parts, want >= 0.8\n%s", mm[1], out)
	}
	for _, want := range []string{"12 good, 12 defective", "pixel AUROC:", "(1 masks)", "confusion matrix", "actual defect", "report: " + report,
		"false rejects at most  1.0%: catches", "to catch 99% of defects: rejects", "at the bundle's threshold: false rejects"} {
		if !strings.Contains(out, want) {
			t.Errorf("model eval output lacks %q:\n%s", want, out)
		}
	}
	html, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(html), `src="data:image/png;base64,`); n < 1 || !strings.Contains(string(html), "ROC curve") ||
		!strings.Contains(string(html), "Worst false accepts") {
		t.Errorf("report: %d inline PNGs; want the ROC curve and sections for false accepts and rejects", n)
	}

	// Good images only: unsupervised, auto compares the methods on pseudo-defects.
	plain := filepath.Join(dir, "plain.onnx")
	os.RemoveAll(filepath.Join(dir, "goodonly"))
	if err := os.MkdirAll(filepath.Join(dir, "goodonly"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(train, "good"), filepath.Join(dir, "goodonly", "good")); err != nil {
		t.Fatal(err)
	}
	out, err = takt(t, "model", "train", "--data", filepath.Join(dir, "goodonly"), "--out", plain, "--max-train", "6")
	if err != nil || !strings.Contains(out, "(good images only: unsupervised)") || !strings.Contains(out, "supervised=0") {
		t.Fatalf("model train good only: %v\n%s", err, out)
	}
	if out, err := takt(t, "model", "train", "--data", filepath.Join(dir, "goodonly"), "--out", plain, "--false-reject", "150%"); err == nil ||
		!strings.Contains(out, `"150%": want a share strictly between 0% and 100%`) {
		t.Errorf("model train --false-reject 150%%: %v, want a usage error naming the value\n%s", err, out)
	}
	out, err = takt(t, "model", "eval", "--bundle", plain, "--data", test)
	if lines = strings.Split(strings.TrimSpace(out), "\n"); err != nil || !strings.HasPrefix(lines[len(lines)-1], "auroc=") {
		t.Fatalf("model eval of a plain model: %v\n%s", err, out)
	}
}

func writeMask(t *testing.T, path string, w, h int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	img.SetGray(0, 0, color.Gray{0})
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := png.Encode(fh, img); err != nil {
		t.Fatal(err)
	}
}

func TestModelTrainEvalErrors(t *testing.T) {
	dir := t.TempDir()
	if out, err := takt(t, "synth", "--out", dir, "--good", "3", "--seed", "2"); err != nil {
		t.Fatalf("synth: %v\n%s", err, out)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"model", "train", "--data", dir, "--out", filepath.Join(dir, "m.onnx"), "--method", "svm"}, `method "svm"`},
		{[]string{"model", "eval", "--data", dir}, "--bundle and --data are required"},
		{[]string{"model", "eval", "--bundle", filepath.Join(dir, "none.onnx"), "--data", dir}, "none.onnx"},
	}
	for _, tt := range tests {
		out, err := takt(t, tt.args...)
		if err == nil || !strings.Contains(out+err.Error(), tt.want) {
			t.Errorf("takt %s: got %q / %v, want an error containing %q", strings.Join(tt.args, " "), out, err, tt.want)
		}
	}
}

// A defect kind is a folder holding images, also when they are links to images elsewhere.
func TestDefectFoldersFollowLinks(t *testing.T) {
	dir := t.TempDir()
	elsewhere := filepath.Join(t.TempDir(), "part.png")
	writeMask(t, elsewhere, 4, 4)
	for _, d := range []string{"good", "crack", "scratch", "masks", "notes"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeMask(t, filepath.Join(dir, "scratch", "a.png"), 4, 4)
	writeMask(t, filepath.Join(dir, "masks", "a.png"), 4, 4)
	if err := os.WriteFile(filepath.Join(dir, "notes", "a.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "crack", "b.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "missing.png"), filepath.Join(dir, "notes", "dangling.png")); err != nil {
		t.Fatal(err)
	}
	got, err := defectFolders(dir)
	if err != nil || strings.Join(got, ",") != "crack,scratch" {
		t.Errorf("defectFolders = %v, %v; want crack (links to images) and scratch, not good, masks or notes (a dangling link)", got, err)
	}
}
