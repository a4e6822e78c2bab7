package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check validates a config file and names what is wrong; an unknown
// command says so and shows the usage.
func TestCheckAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"check", "--config", "../../companion/testdata/config/good.yml"}, &out, &errOut); err != nil ||
		!strings.Contains(out.String(), "ok (1 models)") {
		t.Errorf("check good.yml = %v, %q", err, out.String())
	}
	bad := filepath.Join(t.TempDir(), "cloud.yaml")
	os.WriteFile(bad, []byte("signing_key: k\ns3: {endpoint: \"http://x:9000\", access_key: a, secret_key: b}\nmodels: []\nlisten: 0.0.0.0:1\n"), 0o644)
	err := run([]string{"check", "--config", bad}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "models: none configured") || !strings.Contains(err.Error(), "api_token") {
		t.Errorf("check of a bad config = %v, want the errors named", err)
	}
	if err := run([]string{"fly"}, &out, &errOut); err == nil || !strings.Contains(errOut.String(), "usage:") {
		t.Errorf("unknown command = %v, %q, want the usage", err, errOut.String())
	}
	if err := run([]string{"train", "--server", "http://127.0.0.1:1"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--model is required") {
		t.Errorf("train without --model = %v", err)
	}
}
