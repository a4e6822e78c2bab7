package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/takt-edge/takt/agent"
)

const modelHelp = `  takt-agent model install [-config FILE] BUNDLE   BUNDLE: a .tar file on this station or an
                                                  object key (models/NAME/VERSION/bundle.tar)
  takt-agent model status  [-config FILE]

The running agent does the work (verify, validate, shadow, swap, watch) through its HTTP
API (http.listen, with http.token or http.user when set); progress is on GET /model/update
and MQTT model/status.`

func cmdModelInstall(args []string, stdout, stderr io.Writer) error {
	fs, configPath := leafFlags("model install", stderr)
	if err := parseArgs(fs, args, 1, "one BUNDLE"); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agent.InstallModel(ctx, cfg, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "queued %s; follow it with: takt-agent model status\n", fs.Arg(0))
	return nil
}

func cmdModelStatus(args []string, stdout, stderr io.Writer) error {
	fs, configPath := leafFlags("model status", stderr)
	if err := parseArgs(fs, args, 0, "no argument"); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out, err := agent.ModelUpdateState(ctx, cfg)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}
