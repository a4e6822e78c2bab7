package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/cloudsync/cli"
)

// The command-line conventions: exit 0 for help ("help COMMAND" on stdout), 1 for a failure, 2 for
// a usage error, errors on stderr naming the flag or file.
func TestExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "cloud.yaml")
	tests := []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"-h"}, 0, "train", ""},
		{[]string{"help", "train"}, 0, "-model", ""},
		{[]string{"jobs", "--help"}, 0, "", "-server"}, // a leaf's -h: its flags on stderr, as the flag package writes them,
		{[]string{"version"}, 0, "takt-cloud ", ""},
		{[]string{"--version"}, 0, "takt-cloud ", ""},
		{nil, 2, "", "usage: takt-cloud <command>"},
		{[]string{"fly"}, 2, "", `unknown command "fly"`},
		{[]string{"run", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"train", "--server", "http://127.0.0.1:1"}, 2, "", "--model is required"},
		{[]string{"check", "--config", missing, "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"check", "--config", missing}, 1, "", "takt-cloud: config: open " + missing},
		{[]string{"jobs", "--server", "http://127.0.0.1:1"}, 1, "", "connection refused"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := cli.ExitCode("takt-cloud", run(tt.args, &out, &errOut), &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errOut.String(), tt.errOut) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, %q on stdout, %q on stderr",
					code, out.String(), errOut.String(), tt.code, tt.out, tt.errOut)
			}
		})
	}
}
