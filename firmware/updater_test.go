package firmware

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/takt-edge/takt/models/bundle"
)

// TestInstallUpdateRollbackCommit runs the story with real processes: install 1.0.0,
// update to an unhealthy 1.1.0 (automatic rollback to 1.0.0), update to 1.1.1 (committed),
// refuse downgrades, then accept a signed rollback to 1.0.0.
func TestInstallUpdateRollbackCommit(t *testing.T) {
	k := newKey(t)
	rels := t.TempDir()
	s := newStation(t)
	rec := &recorder{}
	u, err := New(s.config(1500*time.Millisecond), k.keys, s.sup, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	type want struct {
		err     error
		slot    string
		version string // committed and running
		last    string
		steps   []string
	}
	steps := []struct {
		name    string
		release string
		want    want
	}{
		{"install 1.0.0", makeRelease(t, rels, k.priv, "1.0.0", relOpts{}), want{nil, "a", "1.0.0", StepCommitted,
			[]string{StepVerified, StepInstalling, StepExtracting, StepInstalled, StepConfigChecked, StepSwitching, StepSwitched, StepRestarted, StepHealthy, StepCommitted}}},
		{"unhealthy 1.1.0 rolls back", makeRelease(t, rels, k.priv, "1.1.0", relOpts{unready: true}), want{ErrRolledBack, "a", "1.0.0", StepRolledBack,
			[]string{StepVerified, StepInstalling, StepExtracting, StepInstalled, StepConfigChecked, StepSwitching, StepSwitched, StepRestarted, StepUnhealthy, StepRollingBack, StepSwitching, StepRolledBack}}},
		{"update 1.1.1 commits", makeRelease(t, rels, k.priv, "1.1.1", relOpts{}), want{nil, "b", "1.1.1", StepCommitted,
			[]string{StepVerified, StepInstalling, StepExtracting, StepInstalled, StepConfigChecked, StepSwitching, StepSwitched, StepRestarted, StepHealthy, StepCommitted}}},
		{"downgrade 1.0.5 refused", makeRelease(t, rels, k.priv, "1.0.5", relOpts{}), want{ErrDowngrade, "b", "1.1.1", StepCommitted, []string{StepFailed}}},
		{"same version refused", filepath.Join(rels, "1.1.1.tar"), want{ErrDowngrade, "b", "1.1.1", StepCommitted, []string{StepFailed}}},
		{"signed rollback to 1.0.0", makeRelease(t, rels, k.priv, "1.0.0", relOpts{rollback: true}), want{nil, "a", "1.0.0", StepCommitted,
			[]string{StepVerified, StepInstalling, StepExtracting, StepInstalled, StepConfigChecked, StepSwitching, StepSwitched, StepRestarted, StepHealthy, StepCommitted}}},
	}
	for _, step := range steps {
		err := u.Install(ctx, step.release)
		if !errors.Is(err, step.want.err) || (err != nil) != (step.want.err != nil) {
			t.Fatalf("%s: Install error %v, want %v", step.name, err, step.want.err)
		}
		if got := rec.take(); !slices.Equal(got, step.want.steps) {
			t.Errorf("%s: steps\n got %v\nwant %v", step.name, got, step.want.steps)
		}
		if got := checkBootable(t, s.root, k.keys); got != step.want.slot {
			t.Errorf("%s: current slot %s, want %s", step.name, got, step.want.slot)
		}
		st := mustState(t, s.root)
		if st.Phase != PhaseIdle || st.Slot != step.want.slot || st.Version != step.want.version || st.Last != step.want.last {
			t.Errorf("%s: state %+v, want idle on slot %s version %s last %s", step.name, st, step.want.slot, step.want.version, step.want.last)
		}
		if got := s.running(t); got != step.want.version {
			t.Errorf("%s: running agent %s, want %s", step.name, got, step.want.version)
		}
		if got := s.versionFile(t); got != step.want.version {
			t.Errorf("%s: version file %s, want %s", step.name, got, step.want.version)
		}
	}
}

// TestReleaseRejected: tampered, unsigned, untrusted, foreign-architecture and
// downgraded releases are refused by Install, and nothing on the station changes.
func TestReleaseRejected(t *testing.T) {
	k := newKey(t)
	rels := t.TempDir()
	s := newStation(t)
	u, err := New(s.config(5*time.Second), k.keys, s.sup, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := u.Install(ctx, makeRelease(t, rels, k.priv, "2.0.0", relOpts{})); err != nil {
		t.Fatal(err)
	}
	write := func(name string, manifest []byte, files map[string][]byte, sig []byte) string {
		p := filepath.Join(rels, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := bundle.WriteSignedTar(f, manifest, files, sig); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, err := OpenRelease(makeRelease(t, rels, k.priv, "2.1.0", relOpts{}), k.keys)
	if err != nil {
		t.Fatal(err)
	}
	tamperedBin := map[string][]byte{AgentFile: append(slices.Clone(good.Files[AgentFile]), 0), ConfigFile: good.Files[ConfigFile]}
	tamperedManifest := []byte(string(good.ManifestJSON[:len(good.ManifestJSON)-1]) + " \n")
	extra := map[string][]byte{AgentFile: good.Files[AgentFile], ConfigFile: good.Files[ConfigFile], "bin/extra": []byte("x")}

	cases := []struct {
		name string
		path string
		want error
	}{
		{"tampered binary", write("t1.tar", good.ManifestJSON, tamperedBin, good.Signature), ErrBadRelease},
		{"tampered manifest", write("t2.tar", tamperedManifest, good.Files, good.Signature), bundle.ErrBadSignature},
		{"unlisted member", write("t3.tar", good.ManifestJSON, extra, good.Signature), ErrBadRelease},
		{"unsigned", write("t4.tar", good.ManifestJSON, good.Files, nil), bundle.ErrBadSignature},
		{"untrusted key", makeRelease(t, t.TempDir(), otherKey(t), "2.2.0", relOpts{}), bundle.ErrBadSignature},
		{"other architecture", makeRelease(t, t.TempDir(), k.priv, "2.3.0", relOpts{arch: "riscv64"}), ErrBadRelease},
		{"downgrade", makeRelease(t, rels, k.priv, "1.9.9", relOpts{}), ErrDowngrade},
		{"rollback flag not signed", write("t5.tar", []byte(string(good.ManifestJSON[:len(good.ManifestJSON)-2])+",\n\"rollback\": true}\n"), good.Files, good.Signature), bundle.ErrBadSignature},
		{"not a tar", func() string { p := filepath.Join(rels, "junk.tar"); os.WriteFile(p, []byte("junk"), 0o644); return p }(), ErrBadRelease},
	}
	before, err := os.ReadFile(filepath.Join(s.root, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		err := u.Install(ctx, c.path)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Install error %v, want %v", c.name, err, c.want)
		}
		after, _ := os.ReadFile(filepath.Join(s.root, "state.json"))
		if string(after) != string(before) {
			t.Errorf("%s: state changed:\n%s\nwant\n%s", c.name, after, before)
		}
		if got := CurrentSlot(s.root); got != "a" {
			t.Errorf("%s: current slot %s, want a", c.name, got)
		}
		if _, err := os.Stat(filepath.Join(s.root, "slots", "b")); !os.IsNotExist(err) {
			t.Errorf("%s: slot b written: stat error %v, want not exist", c.name, err)
		}
	}
	if got := s.running(t); got != "2.0.0" {
		t.Errorf("running agent %s, want 2.0.0", got)
	}
}
