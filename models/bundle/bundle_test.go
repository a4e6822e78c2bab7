//go:build cgo

package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/onnxgraph"
)

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// meanModel: input "image" [1,1,h,w], score = mean of the image, anomaly_map = the image
// itself, so tests can read back exactly what preprocessing wrote.
func meanModel(h, w int64) func(g *onnxgraph.Graph) {
	return func(g *onnxgraph.Graph) {
		g.Input("image", 1, 1, h, w)
		g.Node("ReduceMean", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Node("Identity", []string{"image"}, []string{"anomaly_map"})
		g.Output("score", 1)
		g.Output("anomaly_map", 1, 1, h, w)
	}
}

func meanManifest() Manifest {
	return Manifest{Name: "mean", Version: "1.0.0", Task: TaskAnomaly,
		Input:   InputSpec{Layout: LayoutNCHW, Color: ColorGray},
		Outputs: OutputSpec{Score: "score", Map: "anomaly_map"}, Thresholds: Thresholds{Fail: 0.5}, Opset: 17}
}

func buildBundle(t testing.TB, m Manifest, onnx []byte, files map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := BuildBundle(&buf, m, onnx, files, key); err != nil {
		t.Fatalf("BuildBundle: %v", err)
	}
	return buf.Bytes()
}

// signedTar writes manifest.json (m marshaled, with Files as given), the members, and a
// signature by key.
func signedTar(t testing.TB, m Manifest, members map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	manifest, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return tarOf(t, manifest, members, key)
}

func tarOf(t testing.TB, manifest []byte, members map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add(manifestFile, manifest)
	for name, data := range members {
		add(name, data)
	}
	if key != nil {
		sig, _ := json.Marshal(signatureDoc{Algorithm: "ed25519", KeyID: KeyID(key.Public().(ed25519.PublicKey)),
			Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, manifest))})
		add(signatureFile, sig)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func withFiles(m Manifest, files map[string][]byte) Manifest {
	m.Format = BundleFormat
	m.Files = map[string]string{}
	for name, data := range files {
		m.Files[name] = SHA256Hex(data)
	}
	return m
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestKeyPairFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "line3.key")
	pub, err := WriteKeyPair(path)
	if err != nil {
		t.Fatalf("WriteKeyPair: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: mode %v, %v, want 0600", st.Mode().Perm(), err)
	}
	priv, err := ReadPrivateKey(path)
	if err != nil {
		t.Fatalf("ReadPrivateKey: %v", err)
	}
	keys, err := LoadTrustedKeys(path + ".pub")
	if err != nil {
		t.Fatalf("LoadTrustedKeys: %v", err)
	}
	if !priv.Public().(ed25519.PublicKey).Equal(pub) || keys[KeyID(pub)] == nil {
		t.Fatalf("the key files do not hold the pair WriteKeyPair returned")
	}
	if _, err := WriteKeyPair(path); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Fatalf("WriteKeyPair over an existing key: got %v, want a refusal", err)
	}
	if _, err := LoadTrustedKeys(path); err == nil || !strings.Contains(err.Error(), "not a PEM PUBLIC KEY") {
		t.Fatalf("LoadTrustedKeys of a private key: got %v, want an error", err)
	}
}

// tinyModel builds a graph with build and returns it serialized.
func tinyModel(t testing.TB, build func(g *onnxgraph.Graph)) []byte {
	t.Helper()
	g := onnxgraph.New("tiny")
	build(g)
	data, err := g.Marshal()
	if err != nil {
		t.Fatalf("build test model: %v", err)
	}
	return data
}
