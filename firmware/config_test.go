package firmware

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// statuses keeps every Status an updater reports and runs hooks on chosen steps.
type statuses struct {
	mu    sync.Mutex
	all   []Status
	hooks map[string]func()
}

func (r *statuses) Report(s Status) {
	r.mu.Lock()
	r.all = append(r.all, s)
	hook := r.hooks[s.Step]
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
}

func (r *statuses) last(step string) (Status, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.all) - 1; i >= 0; i-- {
		if r.all[i].Step == step {
			return r.all[i], true
		}
	}
	return Status{}, false
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestConfigAcrossUpdates: the station config through a refused release, a rollback and a
// commit. 1.0.0 reads config version 1 ("position"); 1.1.x reads version 2, which renames
// it "line_position", a key 1.0.0 refuses.
func TestConfigAcrossUpdates(t *testing.T) {
	t.Parallel()
	k := newKey(t)
	rels := t.TempDir()
	s := newStation(t)
	const original, migrated = "station: st-1\nposition: 4\n", "config_version: 2\nstation: st-1\nline_position: 4\n"
	const edit = "note: edited during the test\n"
	if err := os.WriteFile(s.live, []byte(original), 0o640); err != nil {
		t.Fatal(err)
	}
	rec := &statuses{hooks: map[string]func(){}}
	u, err := New(s.config(1500*time.Millisecond), k.keys, s.sup, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := u.Install(ctx, makeRelease(t, rels, k.priv, "1.0.0", relOpts{})); err != nil {
		t.Fatal(err)
	}
	pid := readString(t, filepath.Join(s.root, "agent.pid"))

	// A release whose agent refuses the station's config is refused before the switch:
	// the running agent is never stopped, nothing changes.
	err = u.Install(ctx, makeRelease(t, rels, k.priv, "1.0.9", relOpts{keys: "station note"}))
	if !errors.Is(err, ErrConfigRejected) || !strings.Contains(err.Error(), "unknown key position") {
		t.Fatalf("release refusing the config: %v, want ErrConfigRejected naming the key", err)
	}
	if st, _ := rec.last(StepFailed); !strings.Contains(st.Err, "refuses this station's config") {
		t.Errorf("failed status %+v, want the config refusal", st)
	}
	if got := readString(t, filepath.Join(s.root, "agent.pid")); got != pid || s.running(t) != "1.0.0" || CurrentSlot(s.root) != "a" {
		t.Errorf("after the refusal: pid %s (was %s), agent %s, slot %s; want 1.0.0 untouched on a", got, pid, s.running(t), CurrentSlot(s.root))
	}
	if got := readString(t, s.live); got != original {
		t.Errorf("live config after the refusal %q, want %q", got, original)
	}

	// 1.1.0 migrates the config and is unhealthy: the rollback restores the config 1.0.0
	// ran with, and keeps the operator's edit made during the test window aside.
	rec.hooks[StepRestarted] = func() {
		f, err := os.OpenFile(s.live, os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			f.WriteString(edit)
			f.Close()
		}
	}
	err = u.Install(ctx, makeRelease(t, rels, k.priv, "1.1.0", relOpts{unready: true, configVersion: 2}))
	delete(rec.hooks, StepRestarted)
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("unhealthy 1.1.0: %v, want rolled back", err)
	}
	if st, _ := rec.last(StepConfigChecked); st.Config != "config migrated by 1.1.0; takes effect at the switch" {
		t.Errorf("config-checked status %+v, want the migration said", st)
	}
	rolled, _ := rec.last(StepRolledBack)
	kept := s.live + ".edited-1.1.0"
	if !strings.Contains(rolled.Config, "config restored from the snapshot slot a ran with") || !strings.Contains(rolled.Config, kept) {
		t.Errorf("rolled-back status config %q, want the restore and %s named", rolled.Config, kept)
	}
	if got := readString(t, s.live); got != original {
		t.Errorf("live config after the rollback %q, want the snapshot %q", got, original)
	}
	if got := readString(t, kept); got != migrated+edit {
		t.Errorf("edits kept aside %q, want %q", got, migrated+edit)
	}
	if got := s.get(t, "/config"); s.running(t) != "1.0.0" || got != original {
		t.Errorf("after the rollback the agent is %s with config %q, want 1.0.0 with %q", s.running(t), got, original)
	}
	// Without the snapshot, 1.0.0 would not have started on the migrated config.
	out, err := exec.Command(filepath.Join(s.root, "slots", "a", "bin", "takt-agent"), "config", "check", "-config", filepath.Join(s.root, "config", "b.yaml")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "config_version 2, this agent reads config versions up to 1") {
		t.Errorf("1.0.0 checking the migrated config: %v %s, want it refused", err, out)
	}

	// 1.1.1 commits: the migrated config is live, the snapshot of slot a is the original.
	if err := u.Install(ctx, makeRelease(t, rels, k.priv, "1.1.1", relOpts{configVersion: 2})); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, s.live); got != migrated || s.get(t, "/config") != migrated || s.running(t) != "1.1.1" {
		t.Errorf("after the commit: live %q, agent %s with %q; want 1.1.1 with %q", got, s.running(t), s.get(t, "/config"), migrated)
	}
	if got := readString(t, filepath.Join(s.root, "config", "a.yaml")); got != original {
		t.Errorf("snapshot of slot a %q, want %q", got, original)
	}
	if fi, err := os.Stat(s.live); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("live config mode %v (%v), want 0640 kept", fi.Mode(), err)
	}

	// A release from before config checks (no config_version in its manifest) is not asked:
	// its agent would take "config migrate" for a normal start. The config stays as it is.
	legacy := makeRelease(t, rels, k.priv, "1.1.2", relOpts{legacy: true, configVersion: 2})
	if err := u.Install(ctx, legacy); err != nil {
		t.Fatalf("legacy release: %v", err)
	}
	if st, _ := rec.last(StepConfigChecked); !strings.Contains(st.Config, "config kept unchecked") {
		t.Errorf("legacy release config status %q, want kept unchecked", st.Config)
	}
	if got := readString(t, s.live); got != migrated || s.get(t, "/config") != migrated {
		t.Errorf("after the legacy release: live %q, agent runs with %q; want %q", got, s.get(t, "/config"), migrated)
	}

	// A release whose store min_reader the committed release does not read is refused.
	err = u.Install(ctx, makeRelease(t, rels, k.priv, "2.0.0", relOpts{configVersion: 2, storeFormat: 3, storeMinReader: 3}))
	if !errors.Is(err, ErrBadRelease) || !strings.Contains(err.Error(), "a rollback could not open the store") {
		t.Errorf("release with store min_reader 3 over 1.1.1: %v, want refused", err)
	}
	if err := u.Install(ctx, makeRelease(t, rels, k.priv, "1.2.0", relOpts{configVersion: 2, storeFormat: 3, storeMinReader: 1})); err != nil {
		t.Errorf("release with store format 3 readable by format 1: %v, want committed", err)
	}
}
