// Package clitest checks a command's main against the command-line conventions of package
// cli: exit 0 for success and help, 1 for a failure, 2 for a usage error, messages of a
// failing command on stderr only. Tests import it; commands do not.
package clitest

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/takt-edge/takt/cloudsync/cli"
)

// Case is one command line and what it must give: the exit code, a string stdout holds
// and a string stderr holds (empty: anything).
type Case struct {
	Args        []string
	Code        int
	Out, ErrOut string
}

// ExitCodes runs every case through run as prog's main does (cli.ExitCode on its error)
// and reports each case that breaks the conventions.
func ExitCodes(t *testing.T, prog string, run func(args []string, stdout, stderr io.Writer) error, cases []Case) {
	t.Helper()
	for _, tt := range cases {
		t.Run(strings.Join(tt.Args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := cli.ExitCode(prog, run(tt.Args, &out, &errOut), &errOut)
			if code != tt.Code || !strings.Contains(out.String(), tt.Out) || !strings.Contains(errOut.String(), tt.ErrOut) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, %q on stdout, %q on stderr",
					code, out.String(), errOut.String(), tt.Code, tt.Out, tt.ErrOut)
			}
			if tt.Code != 0 && out.Len() > 0 {
				t.Errorf("exit %d with stdout %q, want the message on stderr only", code, out.String())
			}
		})
	}
}
