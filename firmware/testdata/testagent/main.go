// Command testagent stands in for takt-agent in the firmware tests: it reads
// <exe>/../etc/agent.yaml ("version: X" and "ready: true|false" lines), writes its version
// to $TAKT_TEST_STATE_DIR/version, and serves GET /readyz (200 when ready, else 503) and
// GET /version on $TAKT_TEST_LISTEN until SIGTERM.
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
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		os.Exit(1)
	}
}

func run() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(filepath.Dir(exe), "..", "etc", "agent.yaml"))
	if err != nil {
		return err
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			cfg[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	f.Close()
	version, ready := cfg["version"], cfg["ready"] == "true"
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
	go serve(l, version, ready)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return l.Close()
}

// serve answers each connection's first request (a minimal HTTP/1.1 server: net/http would
// make the binary, which every test release carries, five times larger).
func serve(l net.Listener, version string, ready bool) {
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
			}
			fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", code, len(body), body)
		}()
	}
}
