//go:build cgo

package bundle_test

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/internal/modeltest"
)

// TestKeyRotation walks the documented rotation: old key trusted; old and new trusted;
// old revoked. Each step is checked against bundles signed by both keys.
func TestKeyRotation(t *testing.T) {
	oldPub, oldPriv := modeltest.NewKey(t)
	newPub, newPriv := modeltest.NewKey(t)
	onnx := modeltest.TinyModel(t, modeltest.MeanModel(4, 4))
	m := modeltest.MeanManifest()
	byOld := modeltest.BuildBundle(t, m, onnx, nil, oldPriv)
	m.Version = "1.1.0"
	byNew := modeltest.BuildBundle(t, m, onnx, nil, newPriv)

	only := func(keys ...ed25519.PublicKey) bundle.TrustedKeys {
		k := bundle.TrustedKeys{}
		for _, p := range keys {
			k.Add(p)
		}
		return k
	}
	steps := []struct {
		name           string
		keys           bundle.TrustedKeys
		revoked        []string
		oldErr, newErr error // nil: accepted
	}{
		{"before: old key only", only(oldPub), nil, nil, bundle.ErrBadSignature},
		{"overlap: old and new trusted", only(oldPub, newPub), nil, nil, nil},
		{"after: old revoked, still listed", only(oldPub, newPub), []string{bundle.KeyID(oldPub)}, bundle.ErrRevokedKey, nil},
		{"after: old revoked and removed", only(newPub), []string{bundle.KeyID(oldPub)}, bundle.ErrRevokedKey, nil},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			p, err := bundle.NewTrustPolicy(s.keys, s.revoked)
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
	pub, _ := modeltest.NewKey(t)
	keys := bundle.TrustedKeys{}
	keys.Add(pub)
	for _, c := range []struct {
		revoked []string
		want    string
	}{
		{[]string{"ABCDEF0123456789"}, "16 lowercase hex"},
		{[]string{"123"}, "16 lowercase hex"},
		{[]string{bundle.KeyID(pub)}, "every trusted key is revoked"},
	} {
		_, err := bundle.NewTrustPolicy(keys, c.revoked)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewTrustPolicy(revoked %q): %v, want an error containing %q", c.revoked, err, c.want)
		}
	}
}

// TestTrustPolicyRefusesBadBundles: each bad bundle fails with the sentinel a caller
// branches on and a message naming the problem.
func TestTrustPolicyRefusesBadBundles(t *testing.T) {
	pub, priv := modeltest.NewKey(t)
	_, otherPriv := modeltest.NewKey(t)
	keys := bundle.TrustedKeys{}
	keys.Add(pub)
	p, err := bundle.NewTrustPolicy(keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	onnx := modeltest.TinyModel(t, modeltest.MeanModel(4, 4))
	good := modeltest.BuildBundle(t, modeltest.MeanManifest(), onnx, nil, priv)
	tamperedModel := append([]byte(nil), onnx...)
	tamperedModel[len(tamperedModel)-1] ^= 1
	m := modeltest.WithFiles(modeltest.MeanManifest(), map[string][]byte{"model.onnx": onnx})
	tamperedManifest := modeltest.MustJSON(t, m)
	cases := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"unsigned", modeltest.TarOf(t, modeltest.MustJSON(t, m), map[string][]byte{"model.onnx": onnx}, nil), bundle.ErrBadSignature, "unsigned"},
		{"wrong key", modeltest.BuildBundle(t, modeltest.MeanManifest(), onnx, nil, otherPriv), bundle.ErrBadSignature, "not trusted"},
		{"tampered model file", modeltest.SignedTar(t, m, map[string][]byte{"model.onnx": tamperedModel}, priv), bundle.ErrBadBundle, "sha256"},
		{"tampered manifest", func() []byte {
			// signed over one manifest, shipped with another (threshold raised)
			signed := modeltest.TarOf(t, tamperedManifest, map[string][]byte{"model.onnx": onnx}, priv)
			members, err := bundle.ReadTarMembers(strings.NewReader(string(signed)))
			if err != nil {
				t.Fatal(err)
			}
			m2 := m
			m2.Thresholds.Fail = 0.99
			var buf strings.Builder
			if err := bundle.WriteSignedTar(&buf, modeltest.MustJSON(t, m2), map[string][]byte{"model.onnx": onnx}, members["signature"]); err != nil {
				t.Fatal(err)
			}
			return []byte(buf.String())
		}(), bundle.ErrBadSignature, "does not match"},
		{"truncated", good[:len(good)/2], bundle.ErrBadBundle, "truncated"},
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
	if b, err := p.OpenBundle(path); err != nil || b.KeyID != bundle.KeyID(pub) {
		t.Fatalf("OpenBundle(good): %v, key %v; want accepted by %s", err, b, bundle.KeyID(pub))
	}
}

func TestCheckInstall(t *testing.T) {
	at := func(v string, rollback bool, minAgent string) *bundle.Manifest {
		m := modeltest.MeanManifest()
		m.Version, m.Rollback, m.MinAgentVersion = v, rollback, minAgent
		return &m
	}
	other := at("2.0.0", false, "")
	other.Name = "other"
	cases := []struct {
		name          string
		running, next *bundle.Manifest
		want          error // nil: allowed
	}{
		{"first install", nil, at("1.0.0", false, ""), nil},
		{"upgrade", at("1.0.0", false, ""), at("1.0.1", false, ""), nil},
		{"same version", at("1.0.0", false, ""), at("1.0.0", false, ""), bundle.ErrDowngrade},
		{"downgrade", at("1.2.0", false, ""), at("1.1.0", false, ""), bundle.ErrDowngrade},
		{"pre-release below its release", at("1.2.0", false, ""), at("1.2.0-rc.1", false, ""), bundle.ErrDowngrade},
		{"signed rollback", at("1.2.0", false, ""), at("1.1.0", true, ""), nil},
		{"agent too old", nil, at("1.0.0", false, "9.0.0"), bundle.ErrBadBundle},
		{"other model", at("1.0.0", false, ""), other, bundle.ErrBadBundle},
	}
	for _, c := range cases {
		err := bundle.CheckInstall(c.running, c.next, "0.1.0")
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
