// Package cli holds the command-line conventions the three Takt commands (takt, takt-agent,
// takt-cloud) share: a tree of commands with -h, --help and "help COMMAND" at every level;
// exit status 0 on success and on help, 1 on a runtime failure, 2 on a usage error; and a
// version line with the build information Go records in the binary.
//
// # Caveats
//
// It imports the standard library only, so that cloudsync/cmd and agent/cmd can both use it
// without linking each other's client libraries. Flags stay with each command's main
// package (the standard flag package); Parse only classifies their errors as usage errors.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"text/tabwriter"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError is a command line the command cannot run: an unknown command or flag, a
// missing required flag, a wrong number of arguments. Reported is true when the message
// (and usage) were already written, as the flag package does.
type UsageError struct {
	Err      error
	Reported bool
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message; name the flag or argument in it.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Parse parses args into fs. A bad flag is a UsageError (the flag package has already
// written it with the flag's usage to fs's output); -h and --help return flag.ErrHelp.
func Parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &UsageError{Err: err, Reported: true}
}

// ExitCode writes err to stderr as "prog: err" (unless it was already written) and returns
// the exit status for it.
func ExitCode(prog string, err error, stderr io.Writer) int {
	var ue *UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		if !ue.Reported {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		}
		return ExitUsage
	}
	fmt.Fprintf(stderr, "%s: %v\n", prog, err)
	return ExitFailure
}

// IsHelp reports whether arg asks for help.
func IsHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// Command is a node of a command tree: a leaf with Run, or a group with Subs.
type Command struct {
	Name    string
	Summary string
	// Run runs the leaf with the arguments after its name. It parses its flags with Parse
	// into a flag set writing to stderr, so that "-h" prints the flags and returns
	// flag.ErrHelp.
	Run  func(args []string, stdout, stderr io.Writer) error
	Subs []*Command
	// Help, when set, follows the list of commands in a group's usage.
	Help string
}

// Dispatch runs the command that args name below root (whose Name is the program's name).
// "-h", "--help" and "help [COMMAND...]" print usage to stdout at any level and return
// flag.ErrHelp; a missing or unknown command is a UsageError after the usage on stderr.
func Dispatch(root *Command, args []string, stdout, stderr io.Writer) error {
	return dispatch(root, root.Name, args, stdout, stderr)
}

func dispatch(c *Command, path string, args []string, stdout, stderr io.Writer) error {
	if c.Run != nil {
		return c.Run(args, stdout, stderr)
	}
	if len(args) == 0 {
		writeUsage(stderr, c, path)
		return &UsageError{Err: fmt.Errorf("%s: a command is required", path), Reported: true}
	}
	if IsHelp(args[0]) {
		writeUsage(stdout, c, path)
		return flag.ErrHelp
	}
	if args[0] == "help" {
		return help(c, path, args[1:], stdout, stderr)
	}
	sub := c.find(args[0])
	if sub == nil {
		fmt.Fprintf(stderr, "%s: unknown command %q\n\n", path, args[0])
		writeUsage(stderr, c, path)
		return &UsageError{Err: fmt.Errorf("unknown command %q", path+" "+args[0]), Reported: true}
	}
	return dispatch(sub, path+" "+sub.Name, args[1:], stdout, stderr)
}

// help prints the usage of the command that names lead to: a group's list, a leaf's flags
// (its Run with -h, writing to stdout).
func help(c *Command, path string, names []string, stdout, stderr io.Writer) error {
	for _, n := range names {
		if c.Run != nil {
			break
		}
		sub := c.find(n)
		if sub == nil {
			fmt.Fprintf(stderr, "%s: unknown command %q\n\n", path, n)
			writeUsage(stderr, c, path)
			return &UsageError{Err: fmt.Errorf("unknown command %q", path+" "+n), Reported: true}
		}
		c, path = sub, path+" "+sub.Name
	}
	if c.Run != nil {
		if err := c.Run([]string{"-h"}, stdout, stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
			return err
		}
		return flag.ErrHelp
	}
	writeUsage(stdout, c, path)
	return flag.ErrHelp
}

func (c *Command) find(name string) *Command {
	for _, s := range c.Subs {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// writeUsage lists a group's commands, nested groups flattened ("model train").
func writeUsage(w io.Writer, c *Command, path string) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", path)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var walk func(c *Command, prefix string)
	walk = func(c *Command, prefix string) {
		for _, s := range c.Subs {
			if s.Run == nil && len(s.Subs) > 0 && s.Summary == "" {
				walk(s, prefix+s.Name+" ")
				continue
			}
			fmt.Fprintf(tw, "  %s%s\t%s\n", prefix, s.Name, s.Summary)
		}
	}
	walk(c, "")
	tw.Flush()
	fmt.Fprintf(w, "\nRun \"%s help <command>\" or \"%s <command> -h\" for a command's flags.\n", path, path)
	if c.Help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.Help, "\n"))
	}
}

// VersionCommand is the "version" leaf: it prints Version(prog, version).
func VersionCommand(prog string, version func() string) *Command {
	return &Command{Name: "version", Summary: "print the version and build information",
		Run: func(args []string, stdout, stderr io.Writer) error {
			fs := flag.NewFlagSet(prog+" version", flag.ContinueOnError)
			fs.SetOutput(stderr)
			if err := Parse(fs, args); err != nil {
				return err
			}
			if fs.NArg() != 0 {
				return Usagef("version: unexpected argument %q", fs.Arg(0))
			}
			fmt.Fprintln(stdout, Version(prog, version()))
			return nil
		}}
}

// Version returns "prog VERSION (module vM, go1.X, vcs REV TIME[ modified])". version is
// the one the build set with -ldflags -X (empty: the module's version from the build
// information); the rest comes from runtime/debug.ReadBuildInfo.
func Version(prog, version string) string {
	b := ReadBuild()
	if version == "" {
		version, b.Module = b.Module, ""
	}
	if version == "" {
		version = "(devel)"
	}
	if s := b.String(); s != "" {
		return fmt.Sprintf("%s %s (%s)", prog, version, s)
	}
	return prog + " " + version
}

// Build is what the Go toolchain recorded in the binary.
type Build struct {
	Module    string `json:"module,omitempty"` // main module version, "(devel)" for a source build
	GoVersion string `json:"go,omitempty"`
	Revision  string `json:"vcs_revision,omitempty"`
	Time      string `json:"vcs_time,omitempty"`
	Modified  bool   `json:"vcs_modified,omitempty"`
}

// String is "module vM, go1.X, vcs REV TIME[ modified]", leaving out what is unknown.
func (b Build) String() string {
	var parts []string
	if b.Module != "" {
		parts = append(parts, "module "+b.Module)
	}
	if b.GoVersion != "" {
		parts = append(parts, b.GoVersion)
	}
	if b.Revision != "" {
		vcs := "vcs " + b.Revision
		if b.Time != "" {
			vcs += " " + b.Time
		}
		if b.Modified {
			vcs += " modified"
		}
		parts = append(parts, vcs)
	}
	return strings.Join(parts, ", ")
}

// ReadBuild returns the binary's build information (zero when it has none, as in tests).
func ReadBuild() Build {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Build{}
	}
	b := Build{Module: info.Main.Version, GoVersion: info.GoVersion}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// Main runs run with the process's arguments and exits with its status.
func Main(prog string, run func(args []string, stdout, stderr io.Writer) error) {
	os.Exit(ExitCode(prog, run(os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}
