package main

import (
	"path/filepath"
	"testing"

	"github.com/takt-edge/takt/cloudsync/cli/clitest"
)

// The command-line conventions: exit 0 for help ("help COMMAND" on stdout), 1 when the agent or a
// command fails, 2 for a usage error, errors on stderr naming the flag or file.
func TestExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "agent.yaml")
	clitest.ExitCodes(t, "takt-agent", run, []clitest.Case{
		{Args: []string{"-h"}, Code: 0, Out: "config"},
		{Args: []string{"--help"}, Code: 0, Out: "-max-parts"},
		{Args: []string{"help"}, Code: 0, Out: "version"},
		{Args: []string{"model", "-h"}, Code: 0, Out: "takt-agent model install"},
		{Args: []string{"help", "config"}, Code: 0, Out: "config migrate"},
		{Args: []string{"help", "config", "migrate"}, Code: 0, Out: "-out"},
		{Args: []string{"model", "install", "--help"}, Code: 0, ErrOut: "-config"}, // a leaf's -h: its flags on stderr, as the flag package writes them,
		{Args: []string{"version"}, Code: 0, Out: "takt-agent 0.1.0 (config_version"},
		{Args: []string{"--version"}, Code: 0, Out: "takt-agent 0.1.0"},
		{Args: []string{"model"}, Code: 2, ErrOut: "usage: takt-agent model <command>"},
		{Args: []string{"frobnicate"}, Code: 2, ErrOut: `unknown command "frobnicate"`},
		{Args: []string{"--bogus"}, Code: 2, ErrOut: "flag provided but not defined: -bogus"},
		{Args: []string{"--max-parts", "x"}, Code: 2, ErrOut: `invalid value "x" for flag -max-parts`},
		{Args: []string{"--config", missing, "extra"}, Code: 2, ErrOut: `unexpected argument "extra"`},
		{Args: []string{"model", "install"}, Code: 2, ErrOut: "want one BUNDLE"},
		{Args: []string{"--config", missing}, Code: 1, ErrOut: "takt-agent: config: open " + missing},
		{Args: []string{"model", "status", "--config", missing}, Code: 1, ErrOut: missing},
	})
}
