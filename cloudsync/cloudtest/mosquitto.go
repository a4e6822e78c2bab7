package cloudtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Broker is a Mosquitto broker owned by one test, listening on a loopback
// port without TLS or authentication (anonymous clients allowed), with
// persistence in the test's temp dir.
type Broker struct {
	// URL is the broker's address for paho: "tcp://127.0.0.1:PORT".
	URL string
	// Addr is "127.0.0.1:PORT".
	Addr string

	srv *server
}

// BrokerOption changes the broker StartMosquitto starts.
type BrokerOption func(*brokerConfig)

type brokerConfig struct {
	extra []string
}

// WithConfigLines appends lines to the generated mosquitto.conf, after the
// listener; e.g. "max_inflight_messages 1" or "persistent_client_expiration 1h".
func WithConfigLines(lines ...string) BrokerOption {
	return func(c *brokerConfig) { c.extra = append(c.extra, lines...) }
}

// StartMosquitto starts a Mosquitto broker for the test and returns once it
// accepts MQTT connections. The broker is stopped, with its process group,
// when the test and its subtests end; its log is printed if the test failed.
//
// The binary is $TAKT_MOSQUITTO if set, else mosquitto on PATH, else
// /usr/sbin/mosquitto; if none is found the test fails (never skips) and says
// to run packaging/install-deps.sh.
//
// Config written to mosquitto.conf in a fresh temp dir: one listener on
// 127.0.0.1 at a free port, allow_anonymous true, persistence on in the temp
// dir (retained messages, persistent sessions and their queued QoS 1/2
// messages survive Stop and Start), log to stderr which goes to mosquitto.log
// in the temp dir.
func StartMosquitto(t testing.TB, opts ...BrokerOption) *Broker {
	t.Helper()
	var cfg brokerConfig
	for _, o := range opts {
		o(&cfg)
	}
	bin := findBinary(t, "mosquitto (MQTT broker)", "TAKT_MOSQUITTO", "mosquitto", "/usr/sbin/mosquitto")
	dir := t.TempDir()
	confPath := filepath.Join(dir, "mosquitto.conf")
	srv := &server{
		t:       t,
		name:    "mosquitto",
		bin:     bin,
		dir:     dir,
		logPath: filepath.Join(dir, "mosquitto.log"),
		args: func(port int) ([]string, error) {
			conf := mosquittoConf(dir, port, cfg.extra)
			if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
				return nil, fmt.Errorf("write mosquitto.conf: %w", err)
			}
			return []string{"-c", confPath}, nil
		},
		probe: probeMosquitto,
	}
	srv.startFresh()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.port))
	return &Broker{URL: "tcp://" + addr, Addr: addr, srv: srv}
}

// Stop stops the broker cleanly (SIGTERM, so it saves its persistence file;
// SIGKILL after 5 s). Clients see their connections drop. Stop on a stopped
// broker does nothing.
func (b *Broker) Stop() { b.srv.stop() }

// Start starts a stopped broker again on the same port with the same
// persistence, and returns once it accepts connections. It fails the test
// (t.Fatalf) if the broker is running or does not come up, so call it from
// the test's goroutine.
func (b *Broker) Start() {
	b.srv.t.Helper()
	b.srv.restart()
}

func mosquittoConf(dir string, port int, extra []string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# written by cloudtest for one test; regenerated on every start")
	w("per_listener_settings false")
	w("allow_anonymous true")
	w("persistence true")
	w("persistence_location %s/", dir)
	w("persistence_file mosquitto.db")
	w("log_dest stderr")
	for _, lt := range []string{"error", "warning", "notice", "information", "subscribe", "unsubscribe"} {
		w("log_type %s", lt)
	}
	w("connection_messages true")
	w("log_timestamp true")
	w("log_timestamp_format %%Y-%%m-%%dT%%H:%%M:%%S")
	if os.Geteuid() == 0 {
		// As root, Mosquitto switches to user "mosquitto", which cannot
		// write the test's temp dir.
		w("user root")
	}
	w("listener %d 127.0.0.1", port)
	for _, l := range extra {
		w("%s", l)
	}
	return b.String()
}

// mqttConnect is an MQTT 3.1.1 CONNECT: clean session, keep-alive 10 s,
// empty client id (the broker assigns one).
var mqttConnect = []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 10, 0, 0}

// probeMosquitto succeeds when this launch's broker logged that it runs (so
// the port is ours, not another test's broker) and answers an MQTT CONNECT
// with CONNACK "accepted".
func probeMosquitto(ctx context.Context, port int, logSince []byte) error {
	if !bytes.Contains(logSince, []byte(" running")) {
		return fmt.Errorf("broker has not logged \"running\" yet")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write(mqttConnect); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
		return fmt.Errorf("CONNACK % x, want 20 02 00 00", ack)
	}
	_, _ = conn.Write([]byte{0xE0, 0}) // DISCONNECT
	return nil
}
