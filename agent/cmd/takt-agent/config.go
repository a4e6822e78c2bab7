package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/takt-edge/takt/agent"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/models/bundle"
)

const configHelp = `  takt-agent config check   [-config FILE]
  takt-agent config migrate [-config FILE] [-out OUT]   OUT defaults to FILE itself

Both exit 1, naming the key and line, when this agent would refuse the file. The firmware
updater runs the new release's "config migrate" before it switches slots.`

func cmdConfigCheck(args []string, stdout, stderr io.Writer) error {
	fs, configPath := leafFlags("config check", stderr)
	if err := parseArgs(fs, args, 0, "no argument"); err != nil {
		return err
	}
	return configRun("check", *configPath, "", stdout)
}

func cmdConfigMigrate(args []string, stdout, stderr io.Writer) error {
	fs, configPath := leafFlags("config migrate", stderr)
	out := fs.String("out", "", "where the migrated file goes (default: -config itself)")
	if err := parseArgs(fs, args, 0, "no argument"); err != nil {
		return err
	}
	return configRun("migrate", *configPath, *out, stdout)
}

func configRun(cmd, path, out string, stdout io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	migrated, m, err := agent.MigrateConfig(data)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	// Check what this agent would run with: the migrated data, its relative paths resolved
	// against the original file's folder.
	if _, err := agent.LoadConfigData(migrated, path); err != nil {
		return err
	}
	change := fmt.Sprintf("config_version %d", m.To)
	if m.From != m.To {
		change = fmt.Sprintf("config_version %d -> %d", m.From, m.To)
	}
	if cmd == "check" {
		fmt.Fprintf(stdout, "config %s: ok for takt-agent %s (%s)\n", path, agent.Version, change)
		return nil
	}
	if out == "" {
		out = path
	}
	same, _ := filepath.Abs(path)
	dst, _ := filepath.Abs(out)
	if same == dst && bytes.Equal(migrated, data) {
		fmt.Fprintf(stdout, "config %s: already %s; unchanged\n", path, change)
		return nil
	}
	// The migrated file keeps the original's mode and owner (the .deb's is root:takt 0640).
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := bundle.WriteFileAtomicLike(out, migrated, fi); err != nil {
		return fmt.Errorf("config migrate: %w", err)
	}
	fmt.Fprintf(stdout, "config %s: %s, written to %s\n", path, change, out)
	return nil
}

// cmdVersion prints the agent's version, the formats it reads and writes, and the build
// information. The first line is the one release tooling reads.
func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("takt-agent version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parseArgs(fs, args, 0, "no argument"); err != nil {
		return err
	}
	v := struct {
		Agent          string    `json:"agent"`
		ConfigVersion  int       `json:"config_version"`
		StoreFormat    uint64    `json:"store_format"`
		StoreMinReader uint64    `json:"store_min_reader"`
		Build          cli.Build `json:"build"`
	}{agent.Version, agent.CurrentConfigVersion(), store.CurrentFormat(), store.CurrentMinReader(), cli.ReadBuild()}
	if *asJSON {
		b, _ := json.Marshal(v)
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	fmt.Fprintf(stdout, "takt-agent %s (config_version %d, store format %d, min_reader %d)\n", v.Agent, v.ConfigVersion, v.StoreFormat, v.StoreMinReader)
	if b := v.Build.String(); b != "" {
		fmt.Fprintf(stdout, "build: %s\n", b)
	}
	return nil
}
