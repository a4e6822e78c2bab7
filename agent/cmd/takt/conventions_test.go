package main

import (
	"path/filepath"
	"testing"

	"github.com/takt-edge/takt/cloudsync/cli/clitest"
)

// The command-line conventions: exit 0 for help ("help COMMAND" on stdout) at every level, 1 for a
// failure, 2 for a usage error, errors on stderr naming the flag or file.
func TestExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.onnx")
	clitest.ExitCodes(t, "takt", run, []clitest.Case{
		{Args: []string{"-h"}, Code: 0, Out: "model train"},
		{Args: []string{"--help"}, Code: 0, Out: "firmware"},
		{Args: []string{"help"}, Code: 0, Out: "store counts"},
		{Args: []string{"model", "-h"}, Code: 0, Out: "usage: takt model <command>"},
		{Args: []string{"help", "model"}, Code: 0, Out: "import-tfjs"},
		{Args: []string{"help", "model", "train"}, Code: 0, Out: "-data"},
		{Args: []string{"model", "train", "-h"}, Code: 0, ErrOut: "-data"},         // a leaf's -h: its flags on stderr, as the flag package writes them,
		{Args: []string{"firmware", "install", "--help"}, Code: 0, ErrOut: "-key"}, // a leaf's -h: its flags on stderr, as the flag package writes them,
		{Args: []string{"version"}, Code: 0, Out: "takt 0.1.0"},
		{Args: []string{"--version"}, Code: 0, Out: "takt 0.1.0"},
		{Code: 2, ErrOut: "usage: takt <command>"},
		{Args: []string{"model"}, Code: 2, ErrOut: "usage: takt model <command>"},
		{Args: []string{"frobnicate"}, Code: 2, ErrOut: `unknown command "frobnicate"`},
		{Args: []string{"help", "frobnicate"}, Code: 2, ErrOut: `unknown command "frobnicate"`},
		{Args: []string{"model", "frobnicate"}, Code: 2, ErrOut: `takt model: unknown command "frobnicate"`},
		{Args: []string{"synth", "--bogus"}, Code: 2, ErrOut: "flag provided but not defined: -bogus"},
		{Args: []string{"synth", "--good", "x"}, Code: 2, ErrOut: `invalid value "x" for flag -good`},
		{Args: []string{"model", "train", "--out", "x.onnx"}, Code: 2, ErrOut: "--data and --out are required"},
		{Args: []string{"model", "inspect"}, Code: 2, ErrOut: "want 1 argument(s), got 0"},
		{Args: []string{"version", "extra"}, Code: 2, ErrOut: `unexpected argument "extra"`},
		{Args: []string{"model", "inspect", missing}, Code: 1, ErrOut: "takt: model " + missing},
	})
}
