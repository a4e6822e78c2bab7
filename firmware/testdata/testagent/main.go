// Command testagent stands in for takt-agent in the firmware tests: it reads
// <exe>/../etc/agent.yaml, its release's properties ("version: X", "ready: true|false",
// "config_version: N" (default 1), "keys: k1 k2 ..." (the station config keys it accepts;
// default by config_version)), writes its version to $TAKT_TEST_STATE_DIR/version, and
// serves GET /readyz (200 when ready, else 503), GET /version and GET /config (the
// station config it runs with) on $TAKT_TEST_LISTEN until SIGTERM.
//
// The station config ($TAKT_TEST_CONFIG) is checked as package stationconfig says: a
// config it refuses stops the agent at start. "testagent config check|migrate -config FILE
// [-out OUT]" is takt-agent's contract for the firmware updater.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/takt-edge/takt/firmware/testdata/stationconfig"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "config" {
		if err := stationconfig.Cmd(os.Args[2:]); err != nil {
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

func run() error {
	cfg, err := stationconfig.Release()
	if err != nil {
		return err
	}
	version, ready := cfg["version"], cfg["ready"] == "true"
	station, err := stationconfig.Load(cfg)
	if err != nil {
		return err
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
