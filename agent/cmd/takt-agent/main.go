// Command takt-agent is the station agent: it inspects every part the camera sees and
// records each verdict durably. See agent/README.md for the configuration reference.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "model":
			os.Exit(modelCmd(os.Args[2:]))
		case "config":
			os.Exit(configCmd(os.Args[2:], os.Stdout, os.Stderr))
		case "version", "-version", "--version":
			os.Exit(versionCmd(os.Args[2:], os.Stdout))
		}
	}
	configPath := flag.String("config", "/etc/takt/agent.yaml", "configuration file (YAML)")
	maxParts := flag.Int("max-parts", -1, "stop after this many parts (overrides max_parts; 0 runs until stopped)")
	logFormat := flag.String("log-format", "", "console or json (overrides log.format)")
	flag.Parse()
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"

	cfg, err := agent.LoadConfig(*configPath)
	if err != nil {
		fail(err)
	}
	if *maxParts >= 0 {
		cfg.MaxParts = *maxParts
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	a, err := agent.New(cfg, agent.NewLogger(cfg.Log, os.Stderr))
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "takt-agent:", err)
	os.Exit(1)
}
