package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
)

// signedFixture writes the fixture model as a bundle signed by a new key and returns the
// bundle and public key paths.
func signedFixture(t *testing.T) (bundlePath, pub string) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "line.key")
	if _, err := bundle.WriteKeyPair(key); err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.ReadPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := models.LoadRuntime(fixture.model, models.RuntimeOptions{Warmup: -1})
	if err != nil {
		t.Fatal(err)
	}
	info := rt.Info()
	rt.Close()
	onnx, err := os.ReadFile(fixture.model)
	if err != nil {
		t.Fatal(err)
	}
	m := bundle.Manifest{Name: "fixture-part", Version: "0.2.0", Task: bundle.TaskAnomaly, Opset: info.Opset,
		Input:      bundle.InputSpec{Layout: bundle.LayoutNCHW, Color: bundle.ColorGray},
		Outputs:    bundle.OutputSpec{Score: "score", Map: "anomaly_map"},
		Thresholds: bundle.Thresholds{Fail: info.Threshold}, MinAgentVersion: "0.1.0"}
	bundlePath = filepath.Join(dir, "model.tar")
	if err := bundle.WriteBundleFile(bundlePath, m, onnx, nil, priv); err != nil {
		t.Fatal(err)
	}
	return bundlePath, key + ".pub"
}

func TestRunSignedBundleOnProviderChain(t *testing.T) {
	bundlePath, pub := signedFixture(t)
	cfg := testConfig(t)
	cfg.Model = ModelConfig{Bundle: bundlePath, TrustedKeys: []string{pub}, Providers: []string{"tensorrt", "cuda", "cpu"}}
	cfg.MaxParts = 6
	sum, err := runAgent(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if sum.Parts != 6 {
		t.Fatalf("got %d parts, want 6", sum.Parts)
	}
	vs, err := openStore(t, cfg.DataDir).List(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Provider != models.ProviderCPU || v.Model.Version != "0.2.0" || v.Decision == "NO_DECISION" {
			t.Fatalf("verdict %d: provider %q model %+v decision %s, want cpu (TensorRT and CUDA fell back), bundle version 0.2.0, a decision",
				v.ID, v.Provider, v.Model, v.Decision)
		}
	}
}

func TestRunRejectsBadBundles(t *testing.T) {
	bundlePath, pub := signedFixture(t)
	_, otherPub := signedFixture(t)
	tests := []struct {
		name   string
		change func(m *ModelConfig)
		want   string
	}{
		{"untrusted key", func(m *ModelConfig) { m.TrustedKeys = []string{otherPub} }, "which is not trusted"},
		{"required tensorrt missing", func(m *ModelConfig) { m.Providers, m.Require = []string{"tensorrt", "cpu"}, "tensorrt" }, "required execution provider unavailable: tensorrt"},
		{"key file missing", func(m *ModelConfig) { m.TrustedKeys = []string{pub + ".nope"} }, "model.trusted_keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Model = ModelConfig{Bundle: bundlePath, TrustedKeys: []string{pub}}
			tt.change(&cfg.Model)
			_, err := runAgent(t, cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
