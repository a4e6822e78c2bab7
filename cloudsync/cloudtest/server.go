package cloudtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds on waiting for a server. Startup is typically well under a second;
// the bounds leave room for a loaded 2-core CI machine running -race.
const (
	readyTimeout   = 15 * time.Second // from exec to serving
	probeTimeout   = time.Second      // one readiness probe
	probeInterval  = 20 * time.Millisecond
	stopTimeout    = 5 * time.Second  // SIGTERM to exit, then SIGKILL
	restartTimeout = 10 * time.Second // waiting for the old port to be free again
	freePortTries  = 5                // fresh ports tried on a collision at first start
	logTailBytes   = 32 << 10         // printed when a test fails
	startTailLines = 40               // quoted in a startup error
)

// errPortInUse means the server could not bind its port: another process took
// it between freePort and the server's own bind.
var errPortInUse = errors.New("port already in use")

// server is one external server process owned by a test: it listens on a
// loopback port, logs to a file in the test's temp dir, is stopped at cleanup
// (with its whole process group) and can be stopped and started again on the
// same port.
type server struct {
	t       testing.TB
	name    string // binary's short name, for messages
	bin     string
	dir     string
	logPath string
	env     []string // nil: inherit
	secrets []string // masked where cloudtest writes the command line

	// args returns the command line that makes the server listen on
	// 127.0.0.1:port; it may write config files into dir.
	args func(port int) ([]string, error)
	// probe returns nil once the server started by this launch serves on port.
	// logSince is what the server logged since this launch.
	probe func(ctx context.Context, port int, logSince []byte) error
	// onStop runs after the process is gone (e.g. to drop idle client connections).
	onStop func()

	mu   sync.Mutex
	port int
	proc *proc // nil while stopped
}

// proc is one run of the server binary.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited; err is set before
	err  error         // from cmd.Wait
}

// startFresh starts the server on a free port, picking a new port when another
// process took the chosen one first, and registers cleanup. It fails the test
// if the server does not come up.
func (s *server) startFresh() {
	s.t.Helper()
	s.t.Cleanup(s.printLogIfFailed) // registered first, so it runs after stop
	s.t.Cleanup(s.stop)

	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for range freePortTries {
		var port int
		port, err = freePort()
		if err != nil {
			s.t.Fatalf("cloudtest: %v", err)
		}
		if err = s.launch(port); err == nil {
			s.port = port
			return
		}
		if !errors.Is(err, errPortInUse) {
			break
		}
	}
	s.t.Fatalf("cloudtest: start %s: %v", s.name, err)
}

// restart starts the server again on its port after stop.
func (s *server) restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.t.Fatalf("cloudtest: start %s on port %d: already running", s.name, s.port)
	}
	deadline := time.Now().Add(restartTimeout)
	for {
		err := s.launch(s.port)
		if err == nil {
			return
		}
		if !errors.Is(err, errPortInUse) || time.Now().After(deadline) {
			s.t.Fatalf("cloudtest: restart %s on port %d: %v", s.name, s.port, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// launch runs the binary for port and waits until probe succeeds. On failure
// the process is gone when launch returns. s.mu is held.
func (s *server) launch(port int) error {
	args, err := s.args(port)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	cmdline := strings.Join(args, " ")
	for _, secret := range s.secrets {
		cmdline = strings.ReplaceAll(cmdline, secret, "<secret>")
	}
	fmt.Fprintf(logf, "=== cloudtest %s: %s %s\n", time.Now().Format(time.RFC3339Nano), s.bin, cmdline)
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}

	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Env = s.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // own group, so cleanup kills helpers too
		Pdeathsig: syscall.SIGKILL, // and the kernel kills it if the test binary dies
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", s.bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	s.proc = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	deadline := time.Now().Add(readyTimeout)
	var probeErr error
	for {
		select {
		case <-p.done:
			since := s.logSince(logStart)
			s.proc = nil
			killGroup(cmd.Process.Pid)
			if bytes.Contains(bytes.ToLower(since), []byte("address already in use")) {
				return fmt.Errorf("127.0.0.1:%d: %w", port, errPortInUse)
			}
			return fmt.Errorf("%s exited during startup (%v); log %s:\n%s", s.name, p.err, s.logPath, lastLines(since, startTailLines))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		probeErr = s.probe(ctx, port, s.logSince(logStart))
		cancel()
		if probeErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("%s not ready on 127.0.0.1:%d after %v: %v; log %s:\n%s",
				s.name, port, readyTimeout, probeErr, s.logPath, lastLines(s.logSince(logStart), startTailLines))
		}
		time.Sleep(probeInterval)
	}
}

// stop stops the server if it runs: SIGTERM (a clean shutdown, so Mosquitto
// saves its persistence file), SIGKILL to the process group after stopTimeout.
func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *server) stopLocked() {
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
		s.t.Logf("cloudtest: %s had exited on its own before Stop: %v (log %s)", s.name, p.err, s.logPath)
	default:
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			s.t.Logf("cloudtest: %s did not exit %v after SIGTERM; sending SIGKILL", s.name, stopTimeout)
			killGroup(pid)
			<-p.done
		}
	}
	killGroup(pid) // anything the server left behind in its group
	if s.onStop != nil {
		s.onStop()
	}
}

// killGroup sends SIGKILL to process group pgid; a group already gone is fine.
func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// logSince returns what was logged after offset off of the log file.
func (s *server) logSince(off int64) []byte {
	f, err := os.Open(s.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, off, 1<<40))
	return b
}

// printLogIfFailed prints the end of the server's log when the test failed.
func (s *server) printLogIfFailed() {
	if !s.t.Failed() {
		return
	}
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		s.t.Logf("cloudtest: %s log: %v", s.name, err)
		return
	}
	note := ""
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		note = fmt.Sprintf(", last %d bytes", logTailBytes)
	}
	s.t.Logf("cloudtest: %s log %s%s:\n%s", s.name, s.logPath, note, b)
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort returns a loopback TCP port that was free a moment ago. Another
// process may take it before the server binds it; callers retry on errPortInUse.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// findBinary returns the path of a server binary: the file named by the
// environment variable env if set, else the first of the candidates found
// (bare names are looked up on PATH). It fails the test with what is missing
// and how to install it.
func findBinary(t testing.TB, what, env string, candidates ...string) string {
	t.Helper()
	const install = "run packaging/install-deps.sh (or make test) to install the test servers"
	if p := os.Getenv(env); p != "" {
		if err := isExecutable(p); err != nil {
			t.Fatalf("cloudtest: %s=%q: %v; fix or unset %s, or %s", env, p, err, env, install)
		}
		return p
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if !strings.ContainsRune(c, filepath.Separator) {
			if p, err := exec.LookPath(c); err == nil {
				return p
			}
			continue
		}
		if isExecutable(c) == nil {
			return c
		}
	}
	t.Fatalf("cloudtest: %s not found (looked at $%s, then %s); %s",
		what, env, strings.Join(nonEmpty(candidates), ", "), install)
	return ""
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("not an executable file")
	}
	return nil
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// repoRoot returns the nearest folder at or above the working directory that
// holds a go.mod, or "" if there is none.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
