package cloudtest

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, like the real one.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatalOf runs fn with a recorder and returns what it passed to Fatalf.
func fatalOf(t *testing.T, fn func(testing.TB)) string {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(rec)
	}()
	<-done
	return rec.msg
}

func TestMissingBinaryFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "not-there")
	for _, tc := range []struct {
		env   string
		start func(testing.TB)
	}{
		{"TAKT_MOSQUITTO", func(tb testing.TB) { StartMosquitto(tb) }},
		{"TAKT_VERSITYGW", func(tb testing.TB) { StartS3(tb) }},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, missing)
			msg := fatalOf(t, tc.start)
			for _, want := range []string{tc.env, missing, "packaging/install-deps.sh", "make test"} {
				if !strings.Contains(msg, want) {
					t.Errorf("Fatalf message %q does not mention %q", msg, want)
				}
			}
		})
	}
}

// The server processes are gone once the test that started them ended.
func TestNoProcessLeftAfterCleanup(t *testing.T) {
	var pids []int
	t.Run("servers", func(t *testing.T) {
		b := StartMosquitto(t)
		s := StartS3(t)
		b.Stop()
		b.Start()
		pids = append(pids, b.srv.proc.cmd.Process.Pid, s.srv.proc.cmd.Process.Pid)
	})
	if len(pids) != 2 {
		t.Fatalf("servers did not start")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d after cleanup: kill(0) = %v, want ESRCH", pid, err)
		}
	}
}

// A server that cannot bind its port reports errPortInUse, so the first start
// moves to another port and a restart waits.
func TestPortInUse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *server
	}{
		{"mosquitto", func(tb testing.TB) *server { return StartMosquitto(tb).srv }},
		{"versitygw", func(tb testing.TB) *server { return StartS3(tb).srv }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.start(t)
			srv.stop()
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.port)))
			if err != nil {
				t.Fatalf("take the stopped server's port: %v", err)
			}
			defer l.Close()
			srv.mu.Lock()
			err = srv.launch(srv.port)
			srv.mu.Unlock()
			if !errors.Is(err, errPortInUse) {
				t.Errorf("launch on a taken port: %v, want errPortInUse", err)
			}
		})
	}
}
