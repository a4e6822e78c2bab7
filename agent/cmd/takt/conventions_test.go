package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/cloudsync/cli"
)

// The command-line conventions: exit 0 for help ("help COMMAND" on stdout) at every level, 1 for a
// failure, 2 for a usage error, errors on stderr naming the flag or file.
func TestExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.onnx")
	tests := []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"-h"}, 0, "model train", ""},
		{[]string{"--help"}, 0, "firmware", ""},
		{[]string{"help"}, 0, "store counts", ""},
		{[]string{"model", "-h"}, 0, "usage: takt model <command>", ""},
		{[]string{"help", "model"}, 0, "import-tfjs", ""},
		{[]string{"help", "model", "train"}, 0, "-data", ""},
		{[]string{"model", "train", "-h"}, 0, "", "-data"},         // a leaf's -h: its flags on stderr, as the flag package writes them,
		{[]string{"firmware", "install", "--help"}, 0, "", "-key"}, // a leaf's -h: its flags on stderr, as the flag package writes them,
		{[]string{"version"}, 0, "takt 0.1.0", ""},
		{[]string{"--version"}, 0, "takt 0.1.0", ""},
		{nil, 2, "", "usage: takt <command>"},
		{[]string{"model"}, 2, "", "usage: takt model <command>"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"model", "frobnicate"}, 2, "", `takt model: unknown command "frobnicate"`},
		{[]string{"synth", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"synth", "--good", "x"}, 2, "", `invalid value "x" for flag -good`},
		{[]string{"model", "train", "--out", "x.onnx"}, 2, "", "--data and --out are required"},
		{[]string{"model", "inspect"}, 2, "", "want 1 argument(s), got 0"},
		{[]string{"version", "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"model", "inspect", missing}, 1, "", "takt: model " + missing},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := cli.ExitCode("takt", run(tt.args, &out, &errOut), &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errOut.String(), tt.errOut) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, %q on stdout, %q on stderr",
					code, out.String(), errOut.String(), tt.code, tt.out, tt.errOut)
			}
			if tt.code != 0 && out.Len() > 0 {
				t.Errorf("exit %d with stdout %q, want the message on stderr only", code, out.String())
			}
		})
	}
}
