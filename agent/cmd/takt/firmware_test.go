package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The release workflow of "takt firmware": pack unsigned, sign, verify, re-sign as a
// rollback, status of an empty root; and the refusals (unsigned, wrong key, tampered).
func TestFirmwareCLI(t *testing.T) {
	dir := t.TempDir()
	key, other := filepath.Join(dir, "release.key"), filepath.Join(dir, "other.key")
	bin, cfg := filepath.Join(dir, "agent-bin"), filepath.Join(dir, "agent.yaml")
	os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(cfg, []byte("station: st-1\n"), 0o644)
	notes := filepath.Join(dir, "NOTES.md")
	os.WriteFile(notes, []byte("store format unchanged\n"), 0o644)
	rel := filepath.Join(dir, "release.tar")
	steps := []struct {
		args []string
		want string // in the output; "!" prefix: the command must fail
	}{
		{[]string{"model", "keygen", "--out", key}, ""},
		{[]string{"model", "keygen", "--out", other}, ""},
		{[]string{"firmware", "pack", "--binary", bin, "--config", cfg, "--version", "1.2.0", "--migration", notes, rel}, "unsigned"},
		{[]string{"firmware", "verify", "--key", key + ".pub", rel}, "!unsigned"},
		{[]string{"firmware", "sign", "--key", key, rel}, "release 1.2.0 signed"},
		{[]string{"firmware", "verify", "--key", key + ".pub", rel}, "rollback false"},
		{[]string{"firmware", "verify", "--key", other + ".pub", rel}, "!not trusted"},
		{[]string{"firmware", "sign", "--key", key, "--rollback", "--out", rel + ".rb", rel}, "rollback true"},
		{[]string{"firmware", "verify", "--key", key + ".pub", rel + ".rb"}, "store format unchanged"},
		{[]string{"firmware", "pack", "--binary", bin, rel + ".x"}, "!required"},
		{[]string{"firmware", "install", "--key", key + ".pub", "--supervisor", "upstart", rel}, "!want systemd or process"},
		{[]string{"firmware", "bogus"}, "!unknown command"},
	}
	for _, s := range steps {
		out, err := takt(t, s.args...)
		want, fail := strings.CutPrefix(s.want, "!")
		if (err != nil) != fail || !strings.Contains(out+errString(err), want) {
			t.Errorf("takt %s: error %v, output %q; want failure %v and %q", strings.Join(s.args, " "), err, out, fail, want)
		}
	}
	out, err := takt(t, "firmware", "status", "--root", filepath.Join(dir, "root"))
	var st struct {
		Current string            `json:"current"`
		Slots   map[string]string `json:"slots"`
		State   struct{ Phase string }
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.State.Phase != "idle" || st.Current != "" {
		t.Errorf("firmware status of an empty root: %v, %q; want idle, no current slot", err, out)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
