package cli

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func tree(ran *[]string) *Command {
	leaf := func(name string) *Command {
		return &Command{Name: name, Summary: name + " things", Run: func(args []string, stdout, stderr io.Writer) error {
			fs := flag.NewFlagSet(name, flag.ContinueOnError)
			fs.SetOutput(stderr)
			fail := fs.Bool("fail", false, "fail at run time")
			if err := Parse(fs, args); err != nil {
				return err
			}
			if *fail {
				return errors.New("it failed")
			}
			*ran = append(*ran, name)
			return nil
		}}
	}
	return &Command{Name: "prog", Subs: []*Command{
		leaf("one"),
		{Name: "group", Subs: []*Command{leaf("two")}},
		VersionCommand("prog", func() string { return "1.2.3" }),
	}}
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		args        []string
		code        int
		ran         string
		out, errOut string
	}{
		{[]string{"one"}, 0, "one", "", ""},
		{[]string{"group", "two"}, 0, "two", "", ""},
		{[]string{"-h"}, 0, "", "group two", ""},
		{[]string{"help", "group"}, 0, "", "usage: prog group <command>", ""},
		{[]string{"help", "group", "two"}, 0, "", "-fail", ""},
		{[]string{"group", "--help"}, 0, "", "two things", ""},
		{[]string{"group", "two", "-h"}, 0, "", "", "-fail"},
		{[]string{"version"}, 0, "", "prog 1.2.3", ""},
		{nil, 2, "", "", "usage: prog <command>"},
		{[]string{"group"}, 2, "", "", "usage: prog group <command>"},
		{[]string{"three"}, 2, "", "", `prog: unknown command "three"`},
		{[]string{"help", "group", "three"}, 2, "", "", `prog group: unknown command "three"`},
		{[]string{"one", "--bogus"}, 2, "", "", "flag provided but not defined: -bogus"},
		{[]string{"one", "--fail"}, 1, "", "", "prog: it failed\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var ran []string
			var out, errOut bytes.Buffer
			code := ExitCode("prog", Dispatch(tree(&ran), tt.args, &out, &errOut), &errOut)
			if code != tt.code || strings.Join(ran, ",") != tt.ran || !strings.Contains(out.String(), tt.out) || !strings.Contains(errOut.String(), tt.errOut) {
				t.Errorf("exit %d, ran %q, stdout %q, stderr %q; want exit %d, ran %q, %q on stdout, %q on stderr",
					code, ran, out.String(), errOut.String(), tt.code, tt.ran, tt.out, tt.errOut)
			}
		})
	}
}

// A usage error the flag package already wrote is not written twice; others are.
func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		code int
		want string
	}{
		{nil, 0, ""},
		{flag.ErrHelp, 0, ""},
		{Usagef("--out is required"), 2, "p: --out is required\n"},
		{&UsageError{Err: errors.New("bad flag"), Reported: true}, 2, ""},
		{errors.New("disk full"), 1, "p: disk full\n"},
	} {
		var stderr bytes.Buffer
		if code := ExitCode("p", tt.err, &stderr); code != tt.code || stderr.String() != tt.want {
			t.Errorf("ExitCode(%v) = %d, %q; want %d, %q", tt.err, code, stderr.String(), tt.code, tt.want)
		}
	}
}

func TestVersion(t *testing.T) {
	got := Version("prog", "1.2.3")
	if !strings.HasPrefix(got, "prog 1.2.3") {
		t.Errorf("Version = %q, want it to start with prog 1.2.3", got)
	}
	if b := ReadBuild(); b.GoVersion != "" && !strings.Contains(got, b.GoVersion) {
		t.Errorf("Version = %q, want the Go version %s in it", got, b.GoVersion)
	}
}
