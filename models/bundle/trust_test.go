//go:build cgo

package bundle

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyRotation walks the documented rotation: old key trusted; old and new trusted;
// old revoked. Each step is checked against bundles signed by both keys.
func TestKeyRotation(t *testing.T) {
	oldPub, oldPriv := newKey(t)
	newPub, newPriv := newKey(t)
	onnx := tinyModel(t, meanModel(4, 4))
	m := meanManifest()
	byOld := buildBundle(t, m, onnx, nil, oldPriv)
	m.Version = "1.1.0"
	byNew := buildBundle(t, m, onnx, nil, newPriv)

	only := func(keys ...ed25519.PublicKey) TrustedKeys {
		k := TrustedKeys{}
		for _, p := range keys {
			k.Add(p)
		}
		return k
	}
	steps := []struct {
		name           string
		keys           TrustedKeys
		revoked        []string
		oldErr, newErr error // nil: accepted
	}{
		{"before: old key only", only(oldPub), nil, nil, ErrBadSignature},
		{"overlap: old and new trusted", only(oldPub, newPub), nil, nil, nil},
		{"after: old revoked, still listed", only(oldPub, newPub), []string{KeyID(oldPub)}, ErrRevokedKey, nil},
		{"after: old revoked and removed", only(newPub), []string{KeyID(oldPub)}, ErrRevokedKey, nil},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			p, err := NewTrustPolicy(s.keys, s.revoked)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				who  string
				data []byte
				want error
			}{{"old", byOld, s.oldErr}, {"new", byNew, s.newErr}} {
				_, err := p.ReadBundle(c.data)
				if c.want == nil && err != nil {
					t.Errorf("bundle by %s key: %v, want accepted", c.who, err)
				}
				if c.want != nil && !errors.Is(err, c.want) {
					t.Errorf("bundle by %s key: error %v, want %v", c.who, err, c.want)
				}
			}
		})
	}
}

func TestTrustPolicyErrors(t *testing.T) {
	pub, _ := newKey(t)
	keys := TrustedKeys{}
	keys.Add(pub)
	for _, c := range []struct {
		revoked []string
		want    string
	}{
		{[]string{"ABCDEF0123456789"}, "16 lowercase hex"},
		{[]string{"123"}, "16 lowercase hex"},
		{[]string{KeyID(pub)}, "every trusted key is revoked"},
	} {
		_, err := NewTrustPolicy(keys, c.revoked)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewTrustPolicy(revoked %q): %v, want an error containing %q", c.revoked, err, c.want)
		}
	}
}

// TestTrustPolicyRefusesBadBundles: each bad bundle fails with the sentinel a caller
// branches on and a message naming the problem.
func TestTrustPolicyRefusesBadBundles(t *testing.T) {
	pub, priv := newKey(t)
	_, otherPriv := newKey(t)
	keys := TrustedKeys{}
	keys.Add(pub)
	p, err := NewTrustPolicy(keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	onnx := tinyModel(t, meanModel(4, 4))
	good := buildBundle(t, meanManifest(), onnx, nil, priv)
	tamperedModel := append([]byte(nil), onnx...)
	tamperedModel[len(tamperedModel)-1] ^= 1
	m := withFiles(meanManifest(), map[string][]byte{"model.onnx": onnx})
	tamperedManifest := mustJSON(t, m)
	cases := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"unsigned", tarOf(t, mustJSON(t, m), map[string][]byte{"model.onnx": onnx}, nil), ErrBadSignature, "unsigned"},
		{"wrong key", buildBundle(t, meanManifest(), onnx, nil, otherPriv), ErrBadSignature, "not trusted"},
		{"tampered model file", signedTar(t, m, map[string][]byte{"model.onnx": tamperedModel}, priv), ErrBadBundle, "sha256"},
		{"tampered manifest", func() []byte {
			// signed over one manifest, shipped with another (threshold raised)
			signed := tarOf(t, tamperedManifest, map[string][]byte{"model.onnx": onnx}, priv)
			members, err := ReadTarMembers(strings.NewReader(string(signed)))
			if err != nil {
				t.Fatal(err)
			}
			m2 := m
			m2.Thresholds.Fail = 0.99
			var buf strings.Builder
			if err := WriteSignedTar(&buf, mustJSON(t, m2), map[string][]byte{"model.onnx": onnx}, members[signatureFile]); err != nil {
				t.Fatal(err)
			}
			return []byte(buf.String())
		}(), ErrBadSignature, "does not match"},
		{"truncated", good[:len(good)/2], ErrBadBundle, "truncated"},
	}
	for _, c := range cases {
		_, err := p.ReadBundle(c.data)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v containing %q", c.name, err, c.want, c.msg)
		}
	}
	path := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := p.OpenBundle(path); err != nil || b.KeyID != KeyID(pub) {
		t.Fatalf("OpenBundle(good): %v, key %v; want accepted by %s", err, b, KeyID(pub))
	}
}

func TestCheckInstall(t *testing.T) {
	at := func(v string, rollback bool, minAgent string) *Manifest {
		m := meanManifest()
		m.Version, m.Rollback, m.MinAgentVersion = v, rollback, minAgent
		return &m
	}
	other := at("2.0.0", false, "")
	other.Name = "other"
	cases := []struct {
		name          string
		running, next *Manifest
		want          error // nil: allowed
	}{
		{"first install", nil, at("1.0.0", false, ""), nil},
		{"upgrade", at("1.0.0", false, ""), at("1.0.1", false, ""), nil},
		{"same version", at("1.0.0", false, ""), at("1.0.0", false, ""), ErrDowngrade},
		{"downgrade", at("1.2.0", false, ""), at("1.1.0", false, ""), ErrDowngrade},
		{"pre-release below its release", at("1.2.0", false, ""), at("1.2.0-rc.1", false, ""), ErrDowngrade},
		{"signed rollback", at("1.2.0", false, ""), at("1.1.0", true, ""), nil},
		{"agent too old", nil, at("1.0.0", false, "9.0.0"), ErrBadBundle},
		{"other model", at("1.0.0", false, ""), other, ErrBadBundle},
	}
	for _, c := range cases {
		err := CheckInstall(c.running, c.next, "0.1.0")
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
