package agent

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
)

// A unixgram socket stands in for systemd: the agent reports READY=1, pets the watchdog
// while the loop is healthy, stops petting it when the loop is wedged, and says STOPPING=1.
func TestSystemdNotifyAndWatchdog(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000") // 100ms: a ping every 50ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string, within time.Duration) string {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %q datagram within %s", want, within)
			}
		}
	}

	cfg := httpConfig(t)
	cfg.Camera.Mode = camera.ModeTriggered // the loop waits for triggers: idle, not wedged
	r := startAgent(t, cfg)
	if m := next("READY=1", 5*time.Second); !strings.Contains(m, "STATUS=") {
		t.Errorf("READY datagram %q carries no STATUS", m)
	}
	for range 3 {
		next("WATCHDOG=1", time.Second)
	}
	resp, err := http.Get(r.base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz while idle: %v %v, want 200", resp.StatusCode, err)
	}
	resp.Body.Close()

	// Wedge the loop: a part in inspection for an hour.
	l := r.a.live.Load()
	l.busySince.Store(time.Now().Add(-time.Hour).UnixNano())
	next("STATUS=unhealthy", time.Second)
	drain := time.After(300 * time.Millisecond)
	for done := false; !done; {
		select {
		case m := <-msgs:
			if strings.Contains(m, "WATCHDOG=1") {
				t.Fatalf("watchdog petted while the loop is wedged: %q", m)
			}
		case <-drain:
			done = true
		}
	}
	resp, err = http.Get(r.base + "/healthz")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("GET /healthz while wedged: got %v %v, want 503", resp.StatusCode, err)
	}
	resp.Body.Close()
	l.busySince.Store(0)
	next("WATCHDOG=1", time.Second)

	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	next("STOPPING=1", time.Second)
}
