// Package cameratest starts real video servers for tests: GStreamer's RTSP server (through
// testdata/camera/rtsp-server.py) on a free loopback port. A missing package fails the test
// with a message naming packaging/install-deps.sh; nothing is skipped.
package cameratest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// InstallHint says how to get what the camera tests need.
const InstallHint = "run packaging/install-deps.sh (it installs the GStreamer RTSP server and ffmpeg the camera tests use)"

// FreePort returns a TCP port free on 127.0.0.1 now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RTSPServer serves a live 320x240 H.264 test pattern at 15 fps at URL().
type RTSPServer struct {
	t    testing.TB
	Port int
	cmd  *exec.Cmd
}

// URL is rtsp://127.0.0.1:PORT/cam.
func (r *RTSPServer) URL() string { return fmt.Sprintf("rtsp://127.0.0.1:%d/cam", r.Port) }

const python = "/usr/bin/python3" // Debian's, which python3-gi belongs to

func script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "camera", "rtsp-server.py")
}

// StartRTSP starts the server on port (0 picks a free one) and waits until it listens. The
// server is killed at the test's cleanup.
func StartRTSP(t testing.TB, port int) *RTSPServer {
	t.Helper()
	check := exec.Command(python, "-c", `import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer`)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("the GStreamer RTSP server for Python is missing (%v: %s); %s", err, strings.TrimSpace(string(out)), InstallHint)
	}
	if port == 0 {
		port = FreePort(t)
	}
	r := &RTSPServer{t: t, Port: port}
	for attempt := 0; ; attempt++ {
		cmd := exec.Command(python, script(), fmt.Sprint(port))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start RTSP server: %v", err)
		}
		ready := make(chan bool, 1)
		go func() { sc := bufio.NewScanner(out); ready <- sc.Scan() && sc.Text() == "ready" }()
		select {
		case ok := <-ready:
			if ok {
				r.cmd = cmd
				t.Cleanup(r.Kill)
				return r
			}
		case <-time.After(15 * time.Second):
		}
		cmd.Process.Kill()
		cmd.Wait()
		if attempt == 20 { // a killed server's port stays busy for a moment
			t.Fatalf("RTSP server on port %d did not start; %s", port, InstallHint)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Freeze stops the server process (SIGSTOP): connections stay open, no data flows, as when
// a camera hangs.
func (r *RTSPServer) Freeze() { r.signal(syscall.SIGSTOP) }

// Kill ends the server (SIGKILL) and waits for it.
func (r *RTSPServer) Kill() {
	if r.cmd != nil && r.cmd.ProcessState == nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

// Restart kills the server and starts a new one on the same port.
func (r *RTSPServer) Restart() {
	r.t.Helper()
	r.Kill()
	*r = *StartRTSP(r.t, r.Port)
}

func (r *RTSPServer) signal(sig syscall.Signal) {
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("signal %v to the RTSP server: %v", sig, err)
	}
}
