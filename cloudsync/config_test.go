package cloudsync

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/takt-edge/takt/cloudsync/wire"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Endpoint = "http://127.0.0.1:9000"
	c.AccessKey, c.SecretKey = "AK", "SK"
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v, want nil (sync disabled)", err)
	}
	if err := validConfig().Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	tests := []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Endpoint = "ftp://x:1" }, "sync.endpoint: scheme"},
		{func(c *Config) { c.Endpoint = "http://x:1/path" }, "sync.endpoint:"},
		{func(c *Config) { c.Bucket = "Bad_Bucket" }, "sync.bucket:"},
		{func(c *Config) { c.Region = "" }, "sync.region:"},
		{func(c *Config) { c.SecretKey = "" }, "sync.access_key, sync.secret_key: credentials missing"},
		{func(c *Config) { c.BatchSize = 0 }, "sync.batch_size: 0 is not in 1..10000"},
		{func(c *Config) { c.Concurrency = 100 }, "sync.concurrency: 100"},
		{func(c *Config) { c.MaxBytesPerSecond = 10 }, "sync.max_bytes_per_s: 10 is below"},
		{func(c *Config) { c.BackoffMin = 0 }, "sync.backoff_min:"},
		{func(c *Config) { c.BackoffMax = time.Millisecond }, "sync.backoff_max: 1ms is below"},
		{func(c *Config) { c.PollInterval = -1 }, "sync.poll_interval:"},
		{func(c *Config) { c.DrainTimeout = -time.Second }, "sync.drain_timeout:"},
		{func(c *Config) { c.Sample.PassFraction = 1.5 }, "sync.sample.pass_fraction: 1.5"},
		{func(c *Config) { c.Sample.Margin = -0.1 }, "sync.sample.margin:"},
		{func(c *Config) { c.Sample.MaxPassPerHour = -1 }, "sync.sample.max_pass_per_hour:"},
	}
	for _, tt := range tests {
		c := validConfig()
		tt.change(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
		}
	}
}

func TestApplyEnvAndCredentialsFile(t *testing.T) {
	env := map[string]string{
		"TAKT_S3_ENDPOINT": "https://s3.example:443", "TAKT_S3_BUCKET": "station-data",
		"TAKT_S3_ACCESS_KEY": "AKENV", "TAKT_S3_SECRET_KEY": "SKENV", "TAKT_S3_REGION": "",
	}
	c := DefaultConfig()
	c.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if c.Endpoint != "https://s3.example:443" || c.Bucket != "station-data" || c.AccessKey != "AKENV" || string(c.SecretKey) != "SKENV" || c.Region != "us-east-1" {
		t.Errorf("after ApplyEnv: %+v, want the env values and region kept", c)
	}
	file := filepath.Join(t.TempDir(), "s3.env")
	os.WriteFile(file, []byte("# station credentials\naccess_key = AKFILE\nTAKT_S3_SECRET_KEY=\"SKFILE\"\n"), 0o600)
	c.CredentialsFile = file
	ak, sk, err := c.credentials()
	if err != nil || ak != "AKFILE" || string(sk) != "SKFILE" {
		t.Errorf("credentials() = %q, %q, %v; want the file's AKFILE, SKFILE", ak, string(sk), err)
	}
	os.WriteFile(file, []byte("password=x\n"), 0o600)
	if _, _, err := c.credentials(); err == nil || !strings.Contains(err.Error(), `unknown key "password"`) {
		t.Errorf("credentials() with a bad file = %v, want unknown key", err)
	}
}

// The secret never shows in formatted, JSON or YAML output.
func TestSecretRedacted(t *testing.T) {
	c := validConfig()
	c.SecretKey = "s3cr3t-value"
	j, _ := json.Marshal(c)
	y, _ := yaml.Marshal(c)
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), string(j), string(y), c.SecretKey.String()} {
		if strings.Contains(out, "s3cr3t") {
			t.Errorf("secret in output: %s", out)
		}
	}
	var back Config
	if err := yaml.Unmarshal([]byte("secret_key: abc\n"), &back); err != nil || string(back.SecretKey) != "abc" {
		t.Errorf("yaml secret_key: got %q, %v; want abc", string(back.SecretKey), err)
	}
}

func TestConflictKey(t *testing.T) {
	if got := conflictKey("images/a/1.jpg", []byte("x")); !strings.HasPrefix(got, "images/a/1-conflict-") || !strings.HasSuffix(got, ".jpg") || got != conflictKey("images/a/1.jpg", []byte("x")) {
		t.Errorf("conflictKey = %q, want images/a/1-conflict-<hash>.jpg, deterministic", got)
	}
}

func TestSampler(t *testing.T) {
	score := func(f float64) *float64 { return &f }
	at := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	s := newSampler(SampleConfig{PassFraction: 0.25, Margin: 0.1, MaxRejectPerHour: 3})
	// Rejects: always, up to the hourly cap.
	for i := range 5 {
		up, capped := s.choose(wire.Item{ID: uint64(i), Decision: "FAIL", Time: at})
		if want := i < 3; up != want || capped == want {
			t.Errorf("reject %d: upload %v capped %v, want upload %v", i, up, capped, want)
		}
	}
	if up, _ := s.choose(wire.Item{ID: 99, Decision: "NO_DECISION", Time: at.Add(time.Hour)}); !up {
		t.Errorf("reject in the next hour not uploaded, want uploaded")
	}
	// Within the margin: always.
	if up, _ := s.choose(wire.Item{ID: 1000, Decision: "PASS", Score: score(0.46), Threshold: 0.5, Time: at}); !up {
		t.Errorf("PASS at 0.46 with threshold 0.5 and margin 0.1 not uploaded")
	}
	// Far from the threshold: about PassFraction of them, the same every time.
	n := 0
	for id := range uint64(4000) {
		it := wire.Item{ID: 10_000 + id, Decision: "PASS", Score: score(0.1), Threshold: 0.5, Time: at}
		up, _ := s.choose(it)
		if up {
			n++
		}
		if again, _ := newSampler(s.cfg).choose(it); again != up {
			t.Fatalf("sampling of id %d differs between samplers", it.ID)
		}
	}
	if n < 900 || n > 1100 {
		t.Errorf("%d of 4000 PASS images sampled with pass_fraction 0.25, want about 1000", n)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	for i := range 20 {
		d := b.next()
		ceil := min(100*time.Millisecond<<i, time.Second)
		if d < b.min || d > ceil {
			t.Errorf("attempt %d: %v, want in [%v, %v]", i, d, b.min, ceil)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %v, want <= 100ms", d)
	}
}
