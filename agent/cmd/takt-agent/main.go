// Command takt-agent is the station agent: it inspects every part the camera sees and
// records each verdict durably. See agent/README.md for the configuration reference.
//
// Without a command it runs the agent; "model", "config" and "version" are its tools. It
// exits 0 on success and on help, 1 when the agent or a command fails, 2 on a usage error.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent"
	"github.com/takt-edge/takt/cloudsync/cli"
)

func main() { cli.Main("takt-agent", run) }

func commands() *cli.Command {
	return &cli.Command{Name: "takt-agent", Help: runHelp(), Subs: []*cli.Command{
		{Name: "model", Summary: "install a signed model bundle through the running agent, or show the update state",
			Help: modelHelp, Subs: []*cli.Command{
				{Name: "install", Summary: "queue a bundle: a .tar file on this station or an object key", Run: cmdModelInstall},
				{Name: "status", Summary: "show the model update state", Run: cmdModelStatus},
			}},
		{Name: "config", Summary: "check a config file, or migrate it to this agent's config_version",
			Help: configHelp, Subs: []*cli.Command{
				{Name: "check", Summary: "would this agent start with the file? (an older config_version is migrated in memory)", Run: cmdConfigCheck},
				{Name: "migrate", Summary: "write the file migrated to this agent's config_version", Run: cmdConfigMigrate},
			}},
		{Name: "version", Summary: "print the version, the formats it reads and writes, and build information (--json)", Run: cmdVersion},
	}}
}

// run runs a command, or the agent when the first argument is a flag (or there is none).
func run(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 1 && (args[0] == "--version" || args[0] == "-version"):
		return cmdVersion(nil, stdout, stderr)
	case len(args) == 0 || strings.HasPrefix(args[0], "-") && !cli.IsHelp(args[0]):
		return runAgent(args, stderr)
	}
	return cli.Dispatch(commands(), args, stdout, stderr)
}

type runFlags struct {
	config, logFormat string
	maxParts          int
}

func newRunFlags(out io.Writer) (*flag.FlagSet, *runFlags) {
	fs := flag.NewFlagSet("takt-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	var f runFlags
	fs.StringVar(&f.config, "config", "/etc/takt/agent.yaml", "configuration file (YAML)")
	fs.IntVar(&f.maxParts, "max-parts", -1, "stop after this many parts (overrides max_parts; 0 runs until stopped)")
	fs.StringVar(&f.logFormat, "log-format", "", "console or json (overrides log.format)")
	return fs, &f
}

// runHelp describes the agent's own flags under the list of commands.
func runHelp() string {
	var b bytes.Buffer
	fs, _ := newRunFlags(&b)
	b.WriteString("Without a command, takt-agent runs the station agent until SIGINT or SIGTERM:\n" +
		"  takt-agent [--config FILE] [--max-parts N] [--log-format console|json]\n")
	fs.PrintDefaults()
	return b.String()
}

func runAgent(args []string, stderr io.Writer) error {
	fs, f := newRunFlags(stderr)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return cli.Usagef("unexpected argument %q (the commands are model, config, version; see takt-agent -h)", fs.Arg(0))
	}
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"

	cfg, err := agent.LoadConfig(f.config)
	if err != nil {
		return err
	}
	if f.maxParts >= 0 {
		cfg.MaxParts = f.maxParts
	}
	if f.logFormat != "" {
		cfg.Log.Format = f.logFormat
	}
	a, err := agent.New(cfg, agent.NewLogger(cfg.Log, stderr))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

// leafFlags is the flag set of a tool command, with its -config flag.
func leafFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("takt-agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [flags]\n", fs.Name())
		fs.PrintDefaults()
	}
	return fs, fs.String("config", "/etc/takt/agent.yaml", "configuration file (YAML)")
}

// parseArgs parses and checks the number of positional arguments.
func parseArgs(fs *flag.FlagSet, args []string, want int, what string) error {
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != want {
		fs.Usage()
		return &cli.UsageError{Err: fmt.Errorf("%s: want %s, got %d argument(s)", strings.TrimPrefix(fs.Name(), "takt-agent "), what, fs.NArg())}
	}
	return nil
}
