package firmware

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/bundle"
)

func TestCheckUpgrade(t *testing.T) {
	cases := []struct {
		running, next string
		rollback      bool
		want          error
	}{
		{"", "0.1.0", false, nil},
		{"1.0.0", "1.0.1", false, nil},
		{"1.0.0", "1.0.0", false, ErrDowngrade},
		{"1.0.0", "0.9.9", false, ErrDowngrade},
		{"1.0.0", "1.0.0-rc.1", false, ErrDowngrade},
		{"1.0.0-rc.1", "1.0.0", false, nil},
		{"1.0.0", "0.9.9", true, nil},
	}
	for _, c := range cases {
		err := CheckUpgrade(c.running, &ReleaseManifest{Version: c.next, Rollback: c.rollback})
		if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("CheckUpgrade(%q, %q rollback %v) = %v, want %v", c.running, c.next, c.rollback, err, c.want)
		}
	}
}

// TestSystemdSupervisor runs Systemd against a stand-in systemctl (no systemd runs in the
// test container): the argument list and the error with systemctl's output.
func TestSystemdSupervisor(t *testing.T) {
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	ok := filepath.Join(dir, "systemctl-ok")
	os.WriteFile(ok, []byte("#!/bin/sh\necho \"$@\" > "+args+"\n"), 0o755)
	bad := filepath.Join(dir, "systemctl-bad")
	os.WriteFile(bad, []byte("#!/bin/sh\necho 'Job for takt-agent.service failed' >&2\nexit 1\n"), 0o755)
	if err := (Systemd{Systemctl: ok}).Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(args); strings.TrimSpace(string(got)) != "restart takt-agent.service" {
		t.Errorf("systemctl arguments %q, want %q", got, "restart takt-agent.service")
	}
	err := (Systemd{Systemctl: bad, Unit: "x.service"}).Restart(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Job for takt-agent.service failed") || !strings.Contains(err.Error(), "x.service") {
		t.Errorf("failing systemctl: error %v, want one naming x.service with systemctl's output", err)
	}
}

func FuzzReadRelease(f *testing.F) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	keys := bundle.TrustedKeys{}
	keys.Add(pub)
	var buf bytes.Buffer
	files := map[string][]byte{AgentFile: []byte("#!/bin/sh\n"), ConfigFile: []byte("version: 1.0.0\n")}
	if err := BuildRelease(&buf, manifestFor("1.0.0", relOpts{}), files, priv); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:len(buf.Bytes())/2])
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rel, err := ReadRelease(bytes.NewReader(data), keys)
		if err != nil {
			if !errors.Is(err, ErrBadRelease) && !errors.Is(err, bundle.ErrBadSignature) {
				t.Fatalf("error %v wraps neither ErrBadRelease nor bundle.ErrBadSignature", err)
			}
			return
		}
		for name, want := range rel.Manifest.Files {
			if got := sha256Hex(rel.Files[name]); got != want {
				t.Fatalf("accepted release: %s sha256 %s, manifest %s", name, got, want)
			}
		}
	})
}
