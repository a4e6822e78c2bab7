package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/takt-edge/takt/cloudsync/wire"
)

func TestLoadConfigStoreAndSync(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	yaml := `model: {path: m.onnx}
camera: {path: images}
store:
  images_max_bytes: 2GiB
  records_max_bytes: 100MB
  images_max_age: 72h
  records_max_age: 2160h
  evict_unsynced: [debug]
  compact_idle: 30m
  compact_min_free: 256MiB
  compact_min_free_ratio: 0.25
sync:
  endpoint: https://s3.example.com
  bucket: line-3
  ca_file: ca.pem
  credentials_file: s3.env
  max_bytes_per_s: 1MiB
  sample: {pass_fraction: 0.5, margin: 0.2, max_pass_per_hour: 100}
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TAKT_S3_ENDPOINT", "")
	t.Setenv("TAKT_S3_REGION", "eu-central-1")
	t.Setenv("TAKT_S3_CREDENTIALS_FILE", "")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"store.images_max_bytes", cfg.Store.ImagesMaxBytes, wire.ByteSize(2 << 30)},
		{"store.records_max_bytes", cfg.Store.RecordsMaxBytes, wire.ByteSize(100_000_000)},
		{"store.records_max_age", cfg.Store.RecordsMaxAge, 90 * 24 * time.Hour},
		{"store.evict_unsynced", len(cfg.Store.EvictUnsynced), 1},
		{"store.compact_idle", cfg.Store.CompactIdle, 30 * time.Minute},
		{"store.compact_min_free", cfg.Store.CompactMinFree, wire.ByteSize(256 << 20)},
		{"store.compact_min_free_ratio", cfg.Store.CompactMinFreeRatio, 0.25},
		{"sync.endpoint", cfg.Sync.Endpoint, "https://s3.example.com"},
		{"sync.bucket", cfg.Sync.Bucket, "line-3"},
		{"sync.region from env", cfg.Sync.Region, "eu-central-1"},
		{"sync.ca_file resolved", cfg.Sync.CAFile, filepath.Join(dir, "ca.pem")},
		{"sync.credentials_file resolved", cfg.Sync.CredentialsFile, filepath.Join(dir, "s3.env")},
		{"sync.max_bytes_per_s", cfg.Sync.MaxBytesPerSecond, wire.ByteSize(1 << 20)},
		{"sync.sample.max_pass_per_hour", cfg.Sync.Sample.MaxPassPerHour, 100},
		{"sync.batch_size default", cfg.Sync.BatchSize, 256},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	def := DefaultConfig()
	if def.Sync.Enabled() {
		t.Errorf("default config has sync enabled, want off without an endpoint")
	}
}
