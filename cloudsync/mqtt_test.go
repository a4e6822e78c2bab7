package cloudsync

import (
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

const mqttWait = 10 * time.Second

func testMQTTConfig(broker, id string) MQTTConfig {
	c := DefaultMQTTConfig()
	c.Broker, c.ClientID = broker, id
	c.ReconnectMin, c.ReconnectMax = 50*time.Millisecond, 400*time.Millisecond
	c.ConnectTimeout, c.PublishTimeout = 3*time.Second, 3*time.Second
	c.KeepAlive = 2 * time.Second
	return c
}

// runConn runs a Conn until the test ends.
func runConn(t *testing.T, cfg MQTTConfig, opts ConnOptions) *Conn {
	t.Helper()
	opts.Logger = zerolog.New(zerolog.NewTestWriter(t))
	c, err := NewConn(cfg, opts)
	if err != nil {
		t.Fatalf("NewConn: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func waitConnected(t *testing.T, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mqttWait)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("not connected after %v: state %+v", mqttWait, c.State())
	}
}

// waitState polls until cond holds for the Conn's state, or fails.
func waitState(t *testing.T, c *Conn, what string, cond func(ConnState) bool) ConnState {
	t.Helper()
	deadline := time.Now().Add(mqttWait)
	for {
		st := c.State()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %+v after %v", what, st, mqttWait)
		}
		select {
		case <-c.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestMQTTConfigValidate(t *testing.T) {
	ok := testMQTTConfig("tcp://127.0.0.1:1883", "st-1")
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	tests := []struct {
		change  func(*MQTTConfig)
		wantErr string
	}{
		{func(c *MQTTConfig) { c.Broker = "http://h:1" }, `mqtt.broker: "http://h:1": scheme "http" is not one of`},
		{func(c *MQTTConfig) { c.Broker = "tcp://h" }, "has no port"},
		{func(c *MQTTConfig) { c.Broker = "tcp://u:p@h:1883" }, "holds credentials"},
		{func(c *MQTTConfig) { c.ClientID = "" }, "mqtt.client_id: must not be empty"},
		{func(c *MQTTConfig) { c.Password = "x" }, "mqtt.password: set, but mqtt.username is empty"},
		{func(c *MQTTConfig) { c.TLS.Cert = "c.pem" }, "mqtt.tls.cert, mqtt.tls.key: give both or neither"},
		{func(c *MQTTConfig) { c.KeepAlive = 0 }, "mqtt.keepalive: 0s, want at least 1s"},
		{func(c *MQTTConfig) { c.ReconnectMax = 10 * time.Millisecond }, "mqtt.reconnect_max: 10ms is below mqtt.reconnect_min"},
	}
	for _, tt := range tests {
		c := ok
		tt.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
		}
	}
	for _, u := range []string{"mqtt://h:1883", "ssl://h:8883", "mqtts://h:8883", "ws://h/mqtt", "wss://h:443/mqtt"} {
		c := ok
		c.Broker = u
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%s): %v", u, err)
		}
	}
	// The password never shows in formatted config.
	c := ok
	c.Username, c.Password = "u", "hunter2"
	for _, s := range []string{strings.Join([]string{c.Password.String()}, ""), fmt.Sprintf("%v %+v %#v", c, c, c)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password printed: %s", s)
		}
	}
}

// Publish waits for PUBACK; a stopped broker gives ErrNotConnected, and the
// Conn reconnects with the subscriptions when it is back.
func TestConnPublishReconnect(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	got := make(chan Received, 16)
	sub := runConn(t, testMQTTConfig(b.URL, "sub"), ConnOptions{Subscriptions: map[string]func(Received){
		"takt/v1/+/+/+/alert": func(m Received) { got <- m },
	}})
	pub := runConn(t, testMQTTConfig(b.URL, "pub"), ConnOptions{})
	waitConnected(t, sub)
	waitConnected(t, pub)

	ctx := context.Background()
	topic := "takt/v1/s/l/st/alert"
	if err := pub.Publish(ctx, Publication{Topic: topic, Payload: []byte("one")}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	recv(t, got, "one")

	b.Stop()
	waitState(t, pub, "disconnected after the broker stopped", func(s ConnState) bool { return s.State != ConnConnected })
	if err := pub.Publish(ctx, Publication{Topic: topic, Payload: []byte("lost")}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish while the broker is down: %v, want ErrNotConnected", err)
	}
	b.Start()
	waitConnected(t, pub)
	waitConnected(t, sub)
	if err := pub.Publish(ctx, Publication{Topic: topic, Payload: []byte("two")}); err != nil {
		t.Fatalf("Publish after restart: %v", err)
	}
	recv(t, got, "two")
	if st := pub.State(); st.Connects < 2 {
		t.Errorf("Connects = %d, want >= 2", st.Connects)
	}
}

func recv(t *testing.T, ch <-chan Received, want string) {
	t.Helper()
	select {
	case m := <-ch:
		if string(m.Payload) != want {
			t.Errorf("received %q, want %q", m.Payload, want)
		}
	case <-time.After(mqttWait):
		t.Fatalf("nothing received after %v, want %q", mqttWait, want)
	}
}

// mosquittoPasswd writes a Mosquitto password file line ($6$: salted SHA-512).
func mosquittoPasswd(t *testing.T, user, pass string) string {
	t.Helper()
	salt := make([]byte, 12)
	_, _ = rand.Read(salt)
	h := sha512.Sum512(append([]byte(pass), salt...))
	line := user + ":$6$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(h[:]) + "\n"
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Wrong credentials: a ConnectError that says so, retried with backoff (no
// busy loop); the right password connects.
func TestConnWrongCredentials(t *testing.T) {
	b := cloudtest.StartMosquitto(t, cloudtest.WithConfigLines("password_file "+mosquittoPasswd(t, "station", "s3cret")))
	cfg := testMQTTConfig(b.URL, "st-bad")
	cfg.Username, cfg.Password = "station", "wrong"
	cfg.ReconnectMin, cfg.ReconnectMax = 200*time.Millisecond, time.Second
	start := time.Now()
	c := runConn(t, cfg, ConnOptions{})
	st := waitState(t, c, "connect error", func(s ConnState) bool { return s.Err != nil })
	var ce *ConnectError
	if !errors.As(st.Err, &ce) || !strings.Contains(ce.Error(), "check mqtt.username and TAKT_MQTT_PASSWORD") {
		t.Fatalf("error = %v, want a ConnectError hinting at the credentials", st.Err)
	}
	if strings.Contains(ce.Error(), "wrong") {
		t.Errorf("error %q shows the password", ce.Error())
	}
	// With backoff doubling from 200ms to 1s, 3 s allow at most ~6 attempts.
	time.Sleep(3*time.Second - time.Since(start))
	st = c.State()
	if elapsed := time.Since(start); st.Attempts < 2 || float64(st.Attempts) > 2+elapsed.Seconds()*2.5 {
		t.Errorf("%d connection attempts in %v, want 2..%d (backoff, no busy loop)", st.Attempts, elapsed, int(2+elapsed.Seconds()*2.5))
	}
	if st.State == ConnConnected || st.Connects != 0 {
		t.Errorf("state %+v, want never connected", st)
	}

	good := cfg
	good.ClientID, good.Password = "st-good", "s3cret"
	waitConnected(t, runConn(t, good, ConnOptions{}))
}

// TLS: a listener with a certificate from a test CA. Right CA connects; a
// wrong CA, TLS to the plain port and plain to the TLS port fail with a hint.
func TestConnTLS(t *testing.T) {
	dir := t.TempDir()
	caPEM, certPEM, keyPEM := cloudtest.Certs(t)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, cert, key := write("ca.pem", caPEM), write("server.pem", certPEM), write("server.key", keyPEM)
	otherCA, _, _ := cloudtest.Certs(t)
	wrongCA := write("other-ca.pem", otherCA)
	port := freePort(t)
	b := cloudtest.StartMosquitto(t, cloudtest.WithConfigLines(
		"listener "+strconv.Itoa(port)+" 127.0.0.1", "cafile "+ca, "certfile "+cert, "keyfile "+key))
	tlsURL := "ssl://127.0.0.1:" + strconv.Itoa(port)

	okCfg := testMQTTConfig(tlsURL, "tls-ok")
	okCfg.TLS.CA = ca
	c := runConn(t, okCfg, ConnOptions{})
	waitConnected(t, c)
	if err := c.Publish(context.Background(), Publication{Topic: "takt/v1/s/l/st/alert", Payload: []byte("x")}); err != nil {
		t.Errorf("Publish over TLS: %v", err)
	}

	tests := []struct {
		name   string
		broker string
		ca     string
		hint   string
	}{
		{"wrong CA", tlsURL, wrongCA, "not signed by mqtt.tls.ca"},
		{"TLS to plain port", "ssl://" + b.Addr, ca, "may not speak TLS on this port"},
		{"plain to TLS port", "tcp://127.0.0.1:" + strconv.Itoa(port), "", "may want TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testMQTTConfig(tt.broker, "tls-bad")
			cfg.TLS.CA = tt.ca
			c := runConn(t, cfg, ConnOptions{})
			st := waitState(t, c, "connect error", func(s ConnState) bool { return s.Err != nil })
			var ce *ConnectError
			if !errors.As(st.Err, &ce) || !strings.Contains(ce.Hint, tt.hint) {
				t.Errorf("error = %v, want a ConnectError with hint %q", st.Err, tt.hint)
			}
		})
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
