package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/takt-edge/takt/agent"
)

const modelUsage = `usage:
  takt-agent model install [-config FILE] BUNDLE   install a signed bundle: a .tar file on this
                                                  station or an object key (models/NAME/VERSION/bundle.tar)
  takt-agent model status  [-config FILE]          show the model update state

The running agent does the work (verify, validate, shadow, swap, watch) through its HTTP
API (http.listen, with http.token or http.user when set); progress is on GET /model/update
and MQTT model/status.`

// modelCmd runs `takt-agent model ...` and returns the exit code.
func modelCmd(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, modelUsage)
		return 2
	}
	fs := flag.NewFlagSet("model "+args[0], flag.ContinueOnError)
	configPath := fs.String("config", "/etc/takt/agent.yaml", "configuration file (YAML)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg, err := agent.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "takt-agent:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch {
	case args[0] == "install" && fs.NArg() == 1:
		if err := agent.InstallModel(ctx, cfg, fs.Arg(0)); err != nil {
			fmt.Fprintln(os.Stderr, "takt-agent:", err)
			return 1
		}
		fmt.Printf("queued %s; follow it with: takt-agent model status\n", fs.Arg(0))
	case args[0] == "status" && fs.NArg() == 0:
		out, err := agent.ModelUpdateState(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "takt-agent:", err)
			return 1
		}
		os.Stdout.Write(out)
	default:
		fmt.Fprintln(os.Stderr, modelUsage)
		return 2
	}
	return 0
}
