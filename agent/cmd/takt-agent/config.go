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
	"github.com/takt-edge/takt/models/bundle"
)

const configUsage = `usage:
  takt-agent config check   [-config FILE]             would this agent start with FILE? (an older
                                                      config_version is migrated in memory)
  takt-agent config migrate [-config FILE] [-out OUT]  write FILE migrated to this agent's
                                                      config_version to OUT (default: FILE itself)

Both exit 1, naming the key and line, when this agent would refuse the file. The firmware
updater runs the new release's "config migrate" before it switches slots.`

// configCmd runs `takt-agent config ...` and returns the exit code.
func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "check" && args[0] != "migrate") {
		fmt.Fprintln(stderr, configUsage)
		return 2
	}
	fs := flag.NewFlagSet("config "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "/etc/takt/agent.yaml", "configuration file (YAML)")
	out := fs.String("out", "", "where config migrate writes the migrated file (default: -config itself)")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
		fmt.Fprintln(stderr, configUsage)
		return 2
	}
	if err := configRun(args[0], *configPath, *out, stdout); err != nil {
		fmt.Fprintln(stderr, "takt-agent:", err)
		return 1
	}
	return 0
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

// versionCmd prints the agent's version and the formats it reads and writes.
func versionCmd(args []string, stdout io.Writer) int {
	v := struct {
		Agent          string `json:"agent"`
		ConfigVersion  int    `json:"config_version"`
		StoreFormat    uint64 `json:"store_format"`
		StoreMinReader uint64 `json:"store_min_reader"`
	}{agent.Version, agent.CurrentConfigVersion(), store.CurrentFormat(), store.CurrentMinReader()}
	if len(args) > 0 && args[0] == "-json" || len(args) > 0 && args[0] == "--json" {
		b, _ := json.Marshal(v)
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	fmt.Fprintf(stdout, "takt-agent %s (config_version %d, store format %d, min_reader %d)\n", v.Agent, v.ConfigVersion, v.StoreFormat, v.StoreMinReader)
	return 0
}
