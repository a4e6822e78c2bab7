package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/cloudsync/cli"
)

// The command-line conventions: exit 0 for help ("help COMMAND" on stdout), 1 when the agent or a
// command fails, 2 for a usage error, errors on stderr naming the flag or file.
func TestExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "agent.yaml")
	tests := []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"-h"}, 0, "config", ""},
		{[]string{"--help"}, 0, "-max-parts", ""},
		{[]string{"help"}, 0, "version", ""},
		{[]string{"model", "-h"}, 0, "takt-agent model install", ""},
		{[]string{"help", "config"}, 0, "config migrate", ""},
		{[]string{"help", "config", "migrate"}, 0, "-out", ""},
		{[]string{"model", "install", "--help"}, 0, "", "-config"}, // a leaf's -h: its flags on stderr, as the flag package writes them,
		{[]string{"version"}, 0, "takt-agent 0.1.0 (config_version", ""},
		{[]string{"--version"}, 0, "takt-agent 0.1.0", ""},
		{[]string{"model"}, 2, "", "usage: takt-agent model <command>"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"--max-parts", "x"}, 2, "", `invalid value "x" for flag -max-parts`},
		{[]string{"--config", missing, "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"model", "install"}, 2, "", "want one BUNDLE"},
		{[]string{"--config", missing}, 1, "", "takt-agent: config: open " + missing},
		{[]string{"model", "status", "--config", missing}, 1, "", missing},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := cli.ExitCode("takt-agent", run(tt.args, &out, &errOut), &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errOut.String(), tt.errOut) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, %q on stdout, %q on stderr",
					code, out.String(), errOut.String(), tt.code, tt.out, tt.errOut)
			}
		})
	}
}
