package packaging_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestBenchFigureList keeps testdata/bench-figures.txt, the figures `make bench` requires,
// in step with the BENCH lines the figure tests print.
func TestBenchFigureList(t *testing.T) {
	printed := map[string]bool{}
	bench := regexp.MustCompile(`"BENCH ([a-z0-9_]+)=`)
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != ".." || d.Name() == "demo") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range bench.FindAllStringSubmatch(string(src), -1) {
			if m[1] != "name" { // the doc comments say "BENCH name=value"
				printed[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	listed := expectedFigures(t)
	for name := range printed {
		if !slices.Contains(listed, name) {
			t.Errorf("figure %s is printed by a figure test but not listed in testdata/bench-figures.txt", name)
		}
	}
	for _, name := range listed {
		if !printed[name] {
			t.Errorf("testdata/bench-figures.txt lists %s, which no figure test prints", name)
		}
	}
}

// TestBenchCheck runs bench-check.sh on logs with every figure, one missing and a failed test.
func TestBenchCheck(t *testing.T) {
	listed := expectedFigures(t)
	var all strings.Builder
	for _, name := range listed {
		all.WriteString("BENCH " + name + "=1\n")
	}
	dir := t.TempDir()
	check := func(log string) (string, error) {
		path := filepath.Join(dir, "bench.log")
		if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("./bench-check.sh", "../testdata/bench-figures.txt", path).CombinedOutput()
		return string(out), err
	}
	if out, err := check(all.String()); err != nil {
		t.Errorf("every figure printed: %v\n%s", err, out)
	}
	missing := strings.Replace(all.String(), "BENCH "+listed[0]+"=1\n", "", 1)
	if out, err := check(missing); err == nil || !strings.Contains(out, "1 expected figure(s) not printed: "+listed[0]) {
		t.Errorf("%s missing: %v, want a failure naming it\n%s", listed[0], err, out)
	}
	if out, err := check(all.String() + "--- FAIL: TestFiguresTrainer (1.00s)\n"); err == nil || !strings.Contains(out, "a figure test failed") {
		t.Errorf("a failed figure test: %v, want a failure\n%s", err, out)
	}
}

func expectedFigures(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../testdata/bench-figures.txt")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			names = append(names, line)
		}
	}
	if len(names) == 0 {
		t.Fatal("testdata/bench-figures.txt lists no figure")
	}
	return names
}
