package firmware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/takt-edge/takt/models/bundle"
)

// Supervisor restarts the station agent.
//
// Restart stops the running agent, if any, and starts the one that <root>/current names; it
// returns once the old agent is gone and the new one was started (health is checked
// separately). It blocks at most until ctx is done. An error means the agent could not be
// (re)started; the updater then rolls back.
type Supervisor interface {
	Restart(ctx context.Context) error
}

// Systemd restarts a systemd unit with "systemctl restart" (production). For a Type=notify
// unit systemctl returns when the agent reported READY=1 or failed.
type Systemd struct {
	Unit      string // default "takt-agent.service"
	Systemctl string // default "systemctl"
}

var _ Supervisor = Systemd{}

// Restart runs systemctl restart Unit.
func (s Systemd) Restart(ctx context.Context) error {
	unit, bin := s.Unit, s.Systemctl
	if unit == "" {
		unit = "takt-agent.service"
	}
	if bin == "" {
		bin = "systemctl"
	}
	out, err := exec.CommandContext(ctx, bin, "restart", unit).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl restart %s: %w: %s", unit, err, bytes.TrimSpace(out))
	}
	return nil
}

// Process is a plain process supervisor (tests, demos, boxes without systemd): it runs
// <Root>/current/bin/takt-agent with Args and Env as a child process, logs to LogFile and
// records its pid in PIDFile, so that a Process in another updater process (after a crash)
// can stop it. The agent outlives the updater, as it would under systemd.
type Process struct {
	Root    string   // the updater's root
	Args    []string // agent arguments
	Env     []string // extra environment (KEY=value), added to the updater's
	LogFile string   // default <Root>/agent.log
	PIDFile string   // default <Root>/agent.pid
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL. Default 5s.
	StopTimeout time.Duration

	mu      sync.Mutex
	reapers map[int]chan struct{} // children of this process: closed when reaped
}

var _ Supervisor = (*Process)(nil)

func (p *Process) pidFile() string {
	if p.PIDFile != "" {
		return p.PIDFile
	}
	return filepath.Join(p.Root, "agent.pid")
}

// Restart stops the agent named by PIDFile and starts <Root>/current/bin/takt-agent.
func (p *Process) Restart(ctx context.Context) error {
	if err := p.Stop(ctx); err != nil {
		return err
	}
	logName := p.LogFile
	if logName == "" {
		logName = filepath.Join(p.Root, "agent.log")
	}
	logf, err := os.OpenFile(logName, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	defer logf.Close()
	root, err := filepath.Abs(p.Root)
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	var cmd *exec.Cmd
	// A binary just written can be briefly "busy" (ETXTBSY) when another goroutine forked
	// while its write descriptor was open (golang/go#22315): retry a few times.
	for attempt := 0; ; attempt++ {
		cmd = exec.Command(filepath.Join(root, "current", filepath.FromSlash(AgentFile)), p.Args...)
		cmd.Env = append(os.Environ(), p.Env...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		err := cmd.Start()
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ETXTBSY) || attempt == 20 {
			return fmt.Errorf("supervisor: start agent: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	done := make(chan struct{})
	p.mu.Lock()
	if p.reapers == nil {
		p.reapers = map[int]chan struct{}{}
	}
	p.reapers[cmd.Process.Pid] = done
	p.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	if err := bundle.WriteFileAtomic(p.pidFile(), []byte(strconv.Itoa(cmd.Process.Pid)+"\n")); err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("supervisor: %w", err)
	}
	return nil
}

// Stop stops the agent named by PIDFile, if it runs: SIGTERM, then SIGKILL after
// StopTimeout. A pid whose command line does not name Root is not ours and is left alone.
func (p *Process) Stop(ctx context.Context) error {
	data, err := os.ReadFile(p.pidFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return os.Remove(p.pidFile())
	}
	if !p.ours(pid) {
		return os.Remove(p.pidFile())
	}
	timeout := p.StopTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(timeout)
	killed := false
	for p.alive(pid) {
		if !killed && time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			killed = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("supervisor: stop agent %d: %w", pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return os.Remove(p.pidFile())
}

// ours reports whether pid runs a program under Root.
func (p *Process) ours(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	root, _ := filepath.Abs(p.Root)
	return bytes.HasPrefix(cmdline, []byte(root+string(filepath.Separator)))
}

// alive reports whether pid still runs (a zombie does not).
func (p *Process) alive(pid int) bool {
	p.mu.Lock()
	done, mine := p.reapers[pid]
	p.mu.Unlock()
	if mine {
		select {
		case <-done:
			p.mu.Lock()
			delete(p.reapers, pid)
			p.mu.Unlock()
			return false
		default:
			return true
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || (stat[i+2] != 'Z' && stat[i+2] != 'X')
}
