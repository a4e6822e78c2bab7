// Command testagent stands in for takt-agent in the firmware tests: it reads
// <exe>/../etc/agent.yaml, its release's properties ("version: X", "ready: true|false",
// "config_version: N" (default 1), "keys: k1 k2 ..." (the station config keys it accepts;
// default by config_version)), writes its version to $TAKT_TEST_STATE_DIR/version, and
// serves GET /readyz (200 when ready, else 503), GET /version and GET /config (the
// station config it runs with) on $TAKT_TEST_LISTEN until SIGTERM.
//
// The station config ($TAKT_TEST_CONFIG, "key: value" lines) is checked like takt-agent
// checks its own: a newer config_version or an unknown key stops the agent at start. Config
// version 2 renamed "position" to "line_position". "testagent config check|migrate -config
// FILE [-out OUT]" is takt-agent's contract for the firmware updater.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "config" {
		if err := configCmd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "testagent:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		os.Exit(1)
	}
}

// release reads the release's own properties from <exe>/../etc/agent.yaml.
func release() (map[string]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(filepath.Dir(exe), "..", "etc", "agent.yaml"))
	if err != nil {
		return nil, err
	}
	cfg, _ := parse(data)
	return cfg, nil
}

// parse reads "key: value" lines and returns them with the keys in file order.
func parse(data []byte) (map[string]string, []string) {
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

// migrate migrates station config data to the release's config version and checks its keys.
func migrate(rel map[string]string, data []byte) ([]byte, error) {
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
	cfg, order := parse(data)
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

// configCmd is "config check|migrate -config FILE [-out OUT]".
func configCmd(args []string) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "migrate") {
		return errors.New("usage: testagent config check|migrate -config FILE [-out OUT]")
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
	rel, err := release()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	migrated, err := migrate(rel, data)
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

func run() error {
	cfg, err := release()
	if err != nil {
		return err
	}
	version, ready := cfg["version"], cfg["ready"] == "true"
	var station []byte
	if path := os.Getenv("TAKT_TEST_CONFIG"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if station, err = migrate(cfg, data); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	if dir := os.Getenv("TAKT_TEST_STATE_DIR"); dir != "" {
		tmp := filepath.Join(dir, fmt.Sprintf(".version.%d", os.Getpid()))
		if err := os.WriteFile(tmp, []byte(version+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, "version")); err != nil {
			return err
		}
	}
	l, err := net.Listen("tcp", os.Getenv("TAKT_TEST_LISTEN"))
	if err != nil {
		return err
	}
	go serve(l, version, ready, string(station))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return l.Close()
}

// serve answers each connection's first request (a minimal HTTP/1.1 server: net/http would
// make the binary, which every test release carries, five times larger).
func serve(l net.Listener, version string, ready bool, station string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			for { // read the headers, so that closing does not reset the connection
				h, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if strings.TrimSpace(h) == "" {
					break
				}
			}
			code, body := "404 Not Found", "not found"
			switch f := strings.Fields(line); {
			case len(f) >= 2 && f[1] == "/readyz" && ready:
				code, body = "200 OK", "ok"
			case len(f) >= 2 && f[1] == "/readyz":
				code, body = "503 Service Unavailable", "not ready"
			case len(f) >= 2 && f[1] == "/version":
				code, body = "200 OK", version
			case len(f) >= 2 && f[1] == "/config":
				code, body = "200 OK", station
			}
			fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", code, len(body), body)
		}()
	}
}
