package companion

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
)

// testdata/config/good.yml loads, with paths resolved against its folder
// and secrets from the environment; each *.bad.yml fails with every error
// its "# error:" lines name.
func TestConfigFiles(t *testing.T) {
	env := map[string]string{"TAKT_S3_SECRET_KEY": "from-env", "TAKT_MQTT_PASSWORD": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := LoadConfig("testdata/config/good.yml", lookup)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("testdata/config")
	if cfg.StateDir != filepath.Join(abs, "state") || cfg.SigningKey != filepath.Join(abs, "signing.key") {
		t.Errorf("paths = %q, %q; want them under %s", cfg.StateDir, cfg.SigningKey, abs)
	}
	if string(cfg.S3.SecretKey) != "from-env" {
		t.Errorf("secret key not taken from TAKT_S3_SECRET_KEY")
	}
	if js, _ := json.Marshal(cfg.S3); strings.Contains(string(js), "from-env") {
		t.Errorf("the secret leaks into JSON: %s", js)
	}
	m := cfg.Models[0]
	if m.Triggers.Labels != 10 || m.Triggers.Drift.Threshold != 0.2 || m.Triggers.Drift.Window != 200 || m.Triggers.Cooldown != 10*time.Minute {
		t.Errorf("triggers = %+v; want labels 10, threshold 0.2 and the defaults window 200, cooldown 10m", m.Triggers)
	}
	if m.Triggers.Drift.ImageThreshold != 0.8 || cfg.Cache.MaxBytes != 2<<30 || cfg.Cache.MaxAge != 168*time.Hour {
		t.Errorf("image_threshold %v, cache %+v; want 0.8, 2GiB and 168h", m.Triggers.Drift.ImageThreshold, cfg.Cache)
	}
	if d := DefaultConfig().Cache; d.MaxBytes != 10<<30 || d.MaxAge != 720*time.Hour || defaultModel().Triggers.Drift.ImageThreshold != 0.5 {
		t.Errorf("defaults: cache %+v, image_threshold %v; want 10GiB, 720h, 0.5", d, defaultModel().Triggers.Drift.ImageThreshold)
	}
	if got := m.Targets[0].Topic(); got != "takt/v1/plant1/line2/model/available" {
		t.Errorf("line target topic = %q", got)
	}
	if got := m.Targets[1].Topic(); got != "takt/v1/plant1/line3/st7/model/available" {
		t.Errorf("station target topic = %q", got)
	}
	if c := m.Experiments[2].Command[0]; c != filepath.Join(abs, "train-anomalib.sh") {
		t.Errorf("relative command = %q, want it resolved against the config folder", c)
	}
	if r := m.Experiments[3].Runtime; r != trainer.RuntimePodman {
		t.Errorf("docker experiment runtime = %q, want podman", r)
	}

	bad, _ := filepath.Glob("testdata/config/*.bad.yml")
	if len(bad) < 4 {
		t.Fatalf("found %d bad configs", len(bad))
	}
	for _, f := range bad {
		data, _ := os.ReadFile(f)
		var want []string
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if w, ok := strings.CutPrefix(sc.Text(), "# error: "); ok {
				want = append(want, w)
			}
		}
		_, err := LoadConfig(f, func(string) (string, bool) { return "", false })
		if err == nil {
			t.Errorf("%s: loaded, want errors %q", f, want)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error\n%v\ndoes not say %q", f, err, w)
			}
		}
	}
}
