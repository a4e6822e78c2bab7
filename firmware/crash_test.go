package firmware

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takt-edge/takt/models/bundle"
)

// Exit codes of the updater helper process.
const (
	helperCommitted  = 0
	helperRolledBack = 3
	helperFailed     = 4
)

// TestHelperUpdater is not a test: crash tests run the test binary as an updater process
// with TAKT_FW_HELPER=1. With TAKT_FW_CRASH_AT=step[#n] it SIGKILLs itself when it reports
// the n-th (default first) such step, after that step's state is durable.
func TestHelperUpdater(t *testing.T) {
	if os.Getenv("TAKT_FW_HELPER") != "1" {
		return
	}
	os.Exit(helperMain())
}

func helperMain() int {
	keys, err := bundle.LoadTrustedKeys(os.Getenv("TAKT_FW_KEY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return helperFailed
	}
	timeout, _ := time.ParseDuration(os.Getenv("TAKT_FW_TIMEOUT"))
	root := os.Getenv("TAKT_FW_ROOT")
	crashStep, nth := os.Getenv("TAKT_FW_CRASH_AT"), 1
	if s, n, ok := strings.Cut(crashStep, "#"); ok {
		crashStep = s
		nth, _ = strconv.Atoi(n)
	}
	seen := 0
	rep := ReporterFunc(func(s Status) {
		fmt.Fprintf(os.Stderr, "step %s\n", s.Step)
		if s.Step == crashStep {
			if seen++; seen == nth {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	})
	sup := &Process{Root: root, Env: strings.Split(os.Getenv("TAKT_FW_AGENT_ENV"), "\n")}
	u, err := New(Config{Root: root, HealthURL: os.Getenv("TAKT_FW_HEALTH_URL"), HealthTimeout: timeout,
		AgentConfig: os.Getenv("TAKT_FW_AGENT_CONFIG")}, keys, sup, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return helperFailed
	}
	if rel := os.Getenv("TAKT_FW_RELEASE"); rel != "" {
		err = u.Install(context.Background(), rel)
	} else {
		err = u.Recover(context.Background())
	}
	switch {
	case err == nil:
		return helperCommitted
	case errors.Is(err, ErrRolledBack):
		return helperRolledBack
	}
	fmt.Fprintln(os.Stderr, err)
	return helperFailed
}

// runHelper runs the updater helper process; release "" means Recover only.
func runHelper(t *testing.T, s *station, k testKey, timeout time.Duration, release, crashAt string) *os.ProcessState {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperUpdater$")
	cmd.Env = append(os.Environ(), "TAKT_FW_HELPER=1", "TAKT_FW_KEY="+k.pubPath, "TAKT_FW_ROOT="+s.root,
		"TAKT_FW_TIMEOUT="+timeout.String(), "TAKT_FW_HEALTH_URL=http://"+s.addr+"/readyz",
		"TAKT_FW_RELEASE="+release, "TAKT_FW_CRASH_AT="+crashAt, "TAKT_FW_AGENT_CONFIG="+s.live, "TAKT_FW_AGENT_ENV="+strings.Join(s.env(), "\n"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("updater helper: %v", err)
	}
	t.Logf("helper (release %q, crash at %q): %v\n%s", filepath.Base(release), crashAt, cmd.ProcessState, stderr.String())
	return cmd.ProcessState
}

// TestCrashAtEveryStep SIGKILLs the updater process right after each step of an update
// (and of its rollback), checks that current names a complete, signed slot, restarts the
// updater and checks that it finishes or rolls back the update and that the right agent
// serves with the station config it reads. The update migrates the station config
// (config_version 2 renames position), so each case also checks that the live config is the
// migrated one after a commit and the original after an abandon or a rollback.
func TestCrashAtEveryStep(t *testing.T) {
	k := newKey(t)
	rels := t.TempDir()
	good := makeRelease(t, rels, k.priv, "1.1.0", relOpts{configVersion: 2})
	bad := makeRelease(t, rels, k.priv, "1.1.0", relOpts{unready: true, configVersion: 2})
	const original, migrated = "station: st-1\nposition: 4\n", "config_version: 2\nstation: st-1\nline_position: 4\n"
	base := makeRelease(t, rels, k.priv, "1.0.0", relOpts{})
	const timeout = time.Second
	cases := []struct {
		release, crashAt string
		wantExit         int // of the restarted updater
		want             string
		wantLast         string
	}{
		{good, StepVerified, helperCommitted, "1.0.0", StepCommitted},
		{good, StepInstalling, helperCommitted, "1.0.0", StepAbandoned},
		{good, StepExtracting, helperCommitted, "1.0.0", StepAbandoned},
		{good, StepInstalled, helperCommitted, "1.0.0", StepAbandoned},
		{good, StepConfigChecked, helperCommitted, "1.0.0", StepAbandoned},
		{good, StepSwitching, helperCommitted, "1.0.0", StepAbandoned},
		{good, StepSwitched, helperCommitted, "1.1.0", StepCommitted},
		{good, StepRestarted, helperCommitted, "1.1.0", StepCommitted},
		{good, StepHealthy, helperCommitted, "1.1.0", StepCommitted},
		{good, StepCommitted, helperCommitted, "1.1.0", StepCommitted},
		{bad, StepRestarted, helperRolledBack, "1.0.0", StepRolledBack},
		{bad, StepUnhealthy, helperRolledBack, "1.0.0", StepRolledBack},
		{bad, StepRollingBack, helperRolledBack, "1.0.0", StepRolledBack},
		{bad, StepSwitching + "#2", helperRolledBack, "1.0.0", StepRolledBack},
		{bad, StepRolledBack, helperCommitted, "1.0.0", StepRolledBack},
	}
	for _, c := range cases {
		name := c.crashAt
		if c.release == bad {
			name = "unhealthy/" + name
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newStation(t)
			if err := os.WriteFile(s.live, []byte(original), 0o640); err != nil {
				t.Fatal(err)
			}
			u, err := New(s.config(5*time.Second), k.keys, s.sup, &recorder{})
			if err != nil {
				t.Fatal(err)
			}
			if err := u.Install(context.Background(), base); err != nil {
				t.Fatal(err)
			}
			ps := runHelper(t, s, k, timeout, c.release, c.crashAt)
			if ws, ok := ps.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("updater %v, want killed by SIGKILL at step %s", ps, c.crashAt)
			}
			checkBootable(t, s.root, k.keys)

			ps = runHelper(t, s, k, timeout, "", "")
			if got := ps.ExitCode(); got != c.wantExit {
				t.Errorf("restarted updater exit code %d, want %d", got, c.wantExit)
			}
			slot := checkBootable(t, s.root, k.keys)
			st := mustState(t, s.root)
			if st.Phase != PhaseIdle || st.Slot != slot || st.Version != c.want || st.Last != c.wantLast {
				t.Errorf("state %+v, want idle on slot %s (current) version %s last %s", st, slot, c.want, c.wantLast)
			}
			if got := slotVersion(filepath.Join(s.root, "current")); got != c.want {
				t.Errorf("current slot holds %s, want %s", got, c.want)
			}
			if got := s.running(t); got != c.want {
				t.Errorf("running agent %s, want %s", got, c.want)
			}
			wantConfig := original
			if c.want == "1.1.0" {
				wantConfig = migrated
			}
			if got, _ := os.ReadFile(s.live); string(got) != wantConfig {
				t.Errorf("live config %q, want %q", got, wantConfig)
			}
			if got := s.get(t, "/config"); got != wantConfig {
				t.Errorf("agent runs with config %q, want %q", got, wantConfig)
			}
			for _, left := range []string{".current.tmp", "slots/.a.new", "slots/.b.new"} {
				if _, err := os.Lstat(filepath.Join(s.root, left)); !os.IsNotExist(err) {
					t.Errorf("%s left behind (stat error %v)", left, err)
				}
			}
		})
	}
}
