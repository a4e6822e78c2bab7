// Package stationconfig is the station config of the firmware tests' stand-in agents
// (testagent, storeagent): "key: value" lines in $TAKT_TEST_CONFIG, checked like takt-agent
// checks its own. A release's properties (<exe>/../etc/agent.yaml) say which config version
// it reads ("config_version: N", default 1) and, optionally, which keys ("keys: k1 k2");
// config version 2 renamed "position" to "line_position". Cmd is takt-agent's
// "config check|migrate -config FILE [-out OUT]" contract for the firmware updater.
package stationconfig

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Release reads the release's own properties from <exe>/../etc/agent.yaml.
func Release() (map[string]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(filepath.Dir(exe), "..", "etc", "agent.yaml"))
	if err != nil {
		return nil, err
	}
	cfg, _ := Parse(data)
	return cfg, nil
}

// Parse reads "key: value" lines and returns them with the keys in file order.
func Parse(data []byte) (map[string]string, []string) {
	cfg := map[string]string{}
	var order []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			k = strings.TrimSpace(k)
			cfg[k] = strings.TrimSpace(v)
			order = append(order, k)
		}
	}
	return cfg, order
}

// Migrate migrates station config data to the release's config version and checks its keys.
func Migrate(rel map[string]string, data []byte) ([]byte, error) {
	reads := 1
	if v := rel["config_version"]; v != "" {
		reads, _ = strconv.Atoi(v)
	}
	keys := strings.Fields(rel["keys"])
	if len(keys) == 0 {
		keys = []string{"station", "note", "position"}
		if reads >= 2 {
			keys = []string{"station", "note", "line_position"}
		}
	}
	cfg, order := Parse(data)
	version := 1
	if v, ok := cfg["config_version"]; ok {
		var err error
		if version, err = strconv.Atoi(v); err != nil || version < 1 {
			return nil, fmt.Errorf("config_version: %q is not a version number", v)
		}
	}
	if version > reads {
		return nil, fmt.Errorf("config is for a newer agent: config_version %d, this agent reads config versions up to %d", version, reads)
	}
	var out strings.Builder
	if version < reads {
		fmt.Fprintf(&out, "config_version: %d\n", reads)
	}
	for _, k := range order {
		v := cfg[k]
		if k == "config_version" {
			if version == reads {
				fmt.Fprintf(&out, "%s: %s\n", k, v)
			}
			continue
		}
		if k == "position" && version < 2 && reads >= 2 {
			k = "line_position"
		}
		if !slices.Contains(keys, k) {
			return nil, fmt.Errorf("unknown key %s (allowed: config_version, %s)", k, strings.Join(keys, ", "))
		}
		fmt.Fprintf(&out, "%s: %s\n", k, v)
	}
	return []byte(out.String()), nil
}

// Cmd is "config check|migrate -config FILE [-out OUT]".
func Cmd(args []string) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "migrate") {
		return errors.New("usage: AGENT config check|migrate -config FILE [-out OUT]")
	}
	var in, out string
	for i := 1; i+1 < len(args); i += 2 {
		switch args[i] {
		case "-config", "--config":
			in = args[i+1]
		case "-out", "--out":
			out = args[i+1]
		}
	}
	rel, err := Release()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	migrated, err := Migrate(rel, data)
	if err != nil {
		return fmt.Errorf("config %s: %w", in, err)
	}
	if args[0] == "check" {
		return nil
	}
	if out == "" {
		out = in
	}
	return os.WriteFile(out, migrated, 0o644)
}

// Load reads, migrates in memory and checks the station config in $TAKT_TEST_CONFIG for the
// release rel; nil when the variable is not set.
func Load(rel map[string]string) ([]byte, error) {
	path := os.Getenv("TAKT_TEST_CONFIG")
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	station, err := Migrate(rel, data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return station, nil
}
