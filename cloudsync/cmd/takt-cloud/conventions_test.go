package main

import (
	"path/filepath"
	"testing"

	"github.com/takt-edge/takt/cloudsync/cli/clitest"
)

// The command-line conventions: exit 0 for help ("help COMMAND" on stdout), 1 for a failure, 2 for
// a usage error, errors on stderr naming the flag or file.
func TestExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "cloud.yaml")
	clitest.ExitCodes(t, "takt-cloud", run, []clitest.Case{
		{Args: []string{"-h"}, Code: 0, Out: "train"},
		{Args: []string{"help", "train"}, Code: 0, Out: "-model"},
		{Args: []string{"jobs", "--help"}, Code: 0, ErrOut: "-server"}, // a leaf's -h: its flags on stderr, as the flag package writes them,
		{Args: []string{"version"}, Code: 0, Out: "takt-cloud "},
		{Args: []string{"--version"}, Code: 0, Out: "takt-cloud "},
		{Code: 2, ErrOut: "usage: takt-cloud <command>"},
		{Args: []string{"fly"}, Code: 2, ErrOut: `unknown command "fly"`},
		{Args: []string{"run", "--bogus"}, Code: 2, ErrOut: "flag provided but not defined: -bogus"},
		{Args: []string{"train", "--server", "http://127.0.0.1:1"}, Code: 2, ErrOut: "--model is required"},
		{Args: []string{"check", "--config", missing, "extra"}, Code: 2, ErrOut: `unexpected argument "extra"`},
		{Args: []string{"check", "--config", missing}, Code: 1, ErrOut: "takt-cloud: config: open " + missing},
		{Args: []string{"jobs", "--server", "http://127.0.0.1:1"}, Code: 1, ErrOut: "connection refused"},
	})
}
