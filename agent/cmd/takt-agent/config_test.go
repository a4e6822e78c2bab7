package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/cloudsync/cli"
)

// The contract the firmware updater relies on: "config check" and "config migrate" exit 0
// for a file this agent runs with, 1 with the key and line for one it refuses, 2 for usage.
func TestConfigCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "station: st-1\nmodel: {path: m.onnx}\ncamera: {path: images}\n")
	unknown := write("unknown.yaml", "station: st-1\nmodel: {path: m.onnx}\ncamera: {path: images}\nline_position: 4\n")
	newer := write("newer.yaml", "config_version: 5\nstation: st-1\nline_position: 4\n")
	out := filepath.Join(dir, "out", "agent.yaml")
	os.Mkdir(filepath.Dir(out), 0o755)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"check", "-config", good}, 0, "ok for takt-agent"},
		{[]string{"check", "-config", unknown}, 1, "line 4: unknown key line_position"},
		{[]string{"check", "-config", newer}, 1, "config_version 5, this agent reads config versions up to 1"},
		{[]string{"check", "-config", filepath.Join(dir, "missing.yaml")}, 1, "no such file"},
		{[]string{"migrate", "-config", good, "-out", out}, 0, "written to " + out},
		{[]string{"migrate", "-config", good}, 0, "unchanged"},
		{[]string{"migrate", "-config", unknown, "-out", out + ".x"}, 1, "unknown key line_position"},
		{[]string{"bogus"}, 2, "usage"},
		{[]string{"check", "extra"}, 2, "usage"},
	}
	for _, c := range cases {
		var stdout, stderr strings.Builder
		code := cli.ExitCode("takt-agent", run(append([]string{"config"}, c.args...), &stdout, &stderr), &stderr)
		if code != c.code || !strings.Contains(stdout.String()+stderr.String(), c.want) {
			t.Errorf("config %v: exit %d, output %q %q; want exit %d and %q", c.args, code, stdout.String(), stderr.String(), c.code, c.want)
		}
	}
	if a, b := mustRead(t, good), mustRead(t, out); a != b {
		t.Errorf("migrate of a current file wrote %q, want the file unchanged %q", b, a)
	}
	if _, err := os.Stat(out + ".x"); !os.IsNotExist(err) {
		t.Errorf("migrate of a refused file wrote its output (stat: %v)", err)
	}
	var stdout strings.Builder
	if run([]string{"version", "--json"}, &stdout, io.Discard); !strings.Contains(stdout.String(), `"config_version":1,"store_format":1,"store_min_reader":1`) {
		t.Errorf("version --json: %q", stdout.String())
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
