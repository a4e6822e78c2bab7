package bundle_test

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/bundle"
)

func TestKeyPairFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "line3.key")
	pub, err := bundle.WriteKeyPair(path)
	if err != nil {
		t.Fatalf("WriteKeyPair: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: mode %v, %v, want 0600", st.Mode().Perm(), err)
	}
	priv, err := bundle.ReadPrivateKey(path)
	if err != nil {
		t.Fatalf("ReadPrivateKey: %v", err)
	}
	keys, err := bundle.LoadTrustedKeys(path + ".pub")
	if err != nil {
		t.Fatalf("LoadTrustedKeys: %v", err)
	}
	if !priv.Public().(ed25519.PublicKey).Equal(pub) || keys[bundle.KeyID(pub)] == nil {
		t.Fatalf("the key files do not hold the pair WriteKeyPair returned")
	}
	if _, err := bundle.WriteKeyPair(path); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Fatalf("WriteKeyPair over an existing key: got %v, want a refusal", err)
	}
	if _, err := bundle.LoadTrustedKeys(path); err == nil || !strings.Contains(err.Error(), "not a PEM PUBLIC KEY") {
		t.Fatalf("LoadTrustedKeys of a private key: got %v, want an error", err)
	}
}
