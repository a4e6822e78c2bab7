package companion

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/takt-edge/takt/cloudsync/strictyaml"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
)

// Config is takt-cloud's config file. Every key has a default in
// DefaultConfig; unknown keys are errors.
type Config struct {
	// StateDir holds the dataset index (index.db), the jobs with their logs
	// (jobs/), the image cache and the training folders. Env TAKT_CLOUD_STATE_DIR.
	StateDir string `yaml:"state_dir"`
	// Listen is the HTTP API's address; "" turns it off. Default
	// 127.0.0.1:8090. Env TAKT_CLOUD_LISTEN. An address other hosts can
	// reach needs APIToken.
	Listen string `yaml:"listen"`
	// APIToken, when set, is the bearer token POST /train and POST /ingest
	// require (reads stay open). Env TAKT_CLOUD_API_TOKEN.
	APIToken cloudsync.Secret `yaml:"api_token"`
	// SigningKey is the ed25519 private key (takt model keygen) new bundles
	// are signed with. Env TAKT_CLOUD_SIGNING_KEY.
	SigningKey string `yaml:"signing_key"`
	// S3 is the bucket the stations upload to; the registry lives there too.
	S3 S3Config `yaml:"s3"`
	// MQTT is the broker model/available is published on; without a broker
	// nothing is announced (the registry is still written).
	MQTT     cloudsync.MQTTConfig `yaml:"mqtt"`
	Ingest   IngestConfig         `yaml:"ingest"`
	Training TrainingConfig       `yaml:"training"`
	Cache    CacheConfig          `yaml:"cache"`
	// Models are the model names takt-cloud trains, with their triggers,
	// experiments and announce targets. Verdicts of other models are indexed
	// but not trained on.
	Models []ModelConfig `yaml:"models"`
}

// S3Config is the object store: the same keys as the agent's sync section.
// Secrets come from TAKT_S3_ACCESS_KEY / TAKT_S3_SECRET_KEY (or
// credentials_file); TAKT_S3_ENDPOINT, TAKT_S3_BUCKET, TAKT_S3_REGION and
// TAKT_S3_CA_FILE override the file.
type S3Config struct {
	Endpoint        string           `yaml:"endpoint"`
	Bucket          string           `yaml:"bucket"`
	Region          string           `yaml:"region"`
	AccessKey       string           `yaml:"access_key"`
	SecretKey       cloudsync.Secret `yaml:"secret_key"`
	CredentialsFile string           `yaml:"credentials_file"`
	CAFile          string           `yaml:"ca_file"`
	PathStyle       bool             `yaml:"path_style"`
	CreateBucket    bool             `yaml:"create_bucket"`
	RequestTimeout  time.Duration    `yaml:"request_timeout"`
}

// IngestConfig tunes how the bucket is read.
type IngestConfig struct {
	// Interval between ingest passes. Default 10s.
	Interval time.Duration `yaml:"interval"`
	// FullScanInterval: every so often a pass lists every station from the
	// start instead of after its cursor, to find objects written late under
	// keys that sort before the cursor (a station's clock went back).
	// Already ingested keys are skipped. Default 1h.
	FullScanInterval time.Duration `yaml:"full_scan_interval"`
	// Concurrency is the number of objects fetched at once. Default 8.
	Concurrency int `yaml:"concurrency"`
}

// TrainingConfig applies to every training job.
type TrainingConfig struct {
	// Parallel is the number of experiments trained at once, over all jobs.
	// Default 2.
	Parallel int `yaml:"parallel"`
	// Timeout bounds one experiment (an external trainer is killed). Default 30m.
	Timeout time.Duration `yaml:"timeout"`
	// MinGood is the fewest good images a job needs (training plus
	// validation). Default 6.
	MinGood int `yaml:"min_good"`
	// MaxGood caps the good images used, newest first. Default 300.
	MaxGood int `yaml:"max_good"`
	// Holdout is the fraction of good images kept out of training for the
	// validation set (chosen by a hash of station and verdict id, so the
	// split is stable). Default 0.3; at least 2 images are held out.
	Holdout float64 `yaml:"holdout"`
	// TrustFail counts a FAIL verdict without a false_reject label as a
	// defect (the operator labels mistakes; an unlabeled reject stands).
	// false: only false_accept labels make defects. Default true.
	TrustFail bool `yaml:"trust_fail"`
	// KeepJobs is how many finished job folders (dataset, outputs) are kept
	// on disk; job records and logs are always kept. Default 20.
	KeepJobs int `yaml:"keep_jobs"`
}

// CacheConfig bounds state_dir/cache, the images downloaded for training
// jobs and for the image statistics of the drift watch. Images are pruned
// least recently used first (a job or the drift watch using an image marks
// it used), never one that a running job or a model's current validation
// set needs (cloudsync/README.md, "Image cache").
type CacheConfig struct {
	// MaxBytes caps the cache's size; 0 = no size limit. Default 10GiB.
	MaxBytes wire.ByteSize `yaml:"max_bytes"`
	// MaxAge removes images not used for this long; 0 = no age limit.
	// Default 720h (30 days).
	MaxAge time.Duration `yaml:"max_age"`
}

// ModelConfig is one model name takt-cloud looks after.
type ModelConfig struct {
	Name string `yaml:"name"`
	// Targets are the topics model/available is published on after a
	// promotion: a line (site and line) or one station (site, line, station).
	Targets  []Target       `yaml:"targets"`
	Triggers TriggersConfig `yaml:"triggers"`
	// Experiments run in parallel per job; the best on the validation set
	// wins. At least one.
	Experiments []trainer.ExperimentConfig `yaml:"experiments"`
}

// Target is an announce topic: takt/v1/{site}/{line}/model/available, or
// with a station takt/v1/{site}/{line}/{station}/model/available.
type Target struct {
	Site    string `yaml:"site"`
	Line    string `yaml:"line"`
	Station string `yaml:"station"`
}

// Topic is the model/available topic of the target.
func (t Target) Topic() string {
	tp := wire.Topics{Site: t.Site, Line: t.Line, Station: t.Station}
	if t.Station == "" {
		return tp.LineModelAvailable()
	}
	return tp.Topic(wire.TopicModelAvailable)
}

// TriggersConfig says when a model is retrained by itself.
type TriggersConfig struct {
	// Labels: train when this many operator labels arrived for the model
	// since its last training started; 0 turns it off. Default 5.
	Labels int `yaml:"labels"`
	// Drift watches the recent PASS scores (see DriftConfig).
	Drift DriftConfig `yaml:"drift"`
	// Cooldown is the least time between two automatic trainings of the
	// model. Default 10m.
	Cooldown time.Duration `yaml:"cooldown"`
}

// DriftConfig configures the drift trigger: the population stability index
// of the recent PASS scores of the promoted version against the decile
// baseline of its good scores in the registry, and of each image statistic
// of the recent PASS images against the promoted version's image baseline
// (cloudsync/README.md, "Triggers and drift").
type DriftConfig struct {
	// Threshold on the scores' PSI; 0 turns score drift off. Default 0.25 (a
	// common reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted).
	Threshold float64 `yaml:"threshold"`
	// ImageThreshold on the PSI of each image statistic (brightness,
	// contrast, sharpness); 0 turns image drift off (and the download of
	// PASS images at ingest it needs). Default 0.5: the baseline is fitted
	// to a few dozen training images, whose estimation error alone gives a
	// PSI around 0.1-0.2 on an unchanged line.
	ImageThreshold float64 `yaml:"image_threshold"`
	// Window is the number of most recent PASS scores (and PASS images)
	// compared. Default 200.
	Window int `yaml:"window"`
	// MinSamples is the fewest PASS scores (images) needed to judge. Default 50.
	MinSamples int `yaml:"min_samples"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	mq := cloudsync.DefaultMQTTConfig()
	mq.ClientID = "takt-cloud"
	return Config{
		StateDir: "/var/lib/takt-cloud",
		Listen:   "127.0.0.1:8090",
		S3:       S3Config{Bucket: "takt", Region: "us-east-1", RequestTimeout: 30 * time.Second},
		MQTT:     mq,
		Ingest:   IngestConfig{Interval: 10 * time.Second, FullScanInterval: time.Hour, Concurrency: 8},
		Training: TrainingConfig{Parallel: 2, Timeout: 30 * time.Minute, MinGood: 6, MaxGood: 300, Holdout: 0.3,
			TrustFail: true, KeepJobs: 20},
		Cache: CacheConfig{MaxBytes: 10 << 30, MaxAge: 30 * 24 * time.Hour},
	}
}

// defaultModel fills the defaults of a model section.
func defaultModel() ModelConfig {
	return ModelConfig{Triggers: TriggersConfig{Labels: 5, Cooldown: 10 * time.Minute,
		Drift: DriftConfig{Threshold: 0.25, ImageThreshold: 0.5, Window: 200, MinSamples: 50}}}
}

// LoadConfig reads the YAML file at path over DefaultConfig, resolves
// relative paths against the file's folder, applies the TAKT_* environment
// and validates.
func LoadConfig(path string, lookup func(string) (string, bool)) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.ApplyEnv(lookup)
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	for _, p := range []*string{&cfg.StateDir, &cfg.SigningKey, &cfg.S3.CredentialsFile, &cfg.S3.CAFile,
		&cfg.MQTT.TLS.CA, &cfg.MQTT.TLS.Cert, &cfg.MQTT.TLS.Key} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	for i := range cfg.Models {
		for j := range cfg.Models[i].Experiments {
			c := cfg.Models[i].Experiments[j].Command
			// A command given relative to the config file ("./train.sh") runs from there.
			if len(c) > 0 && strings.HasPrefix(c[0], "./") {
				c[0] = filepath.Join(base, c[0])
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML over DefaultConfig strictly: unknown keys are
// errors naming the line. It does not validate.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	if len(bytes.TrimSpace(data)) == 0 {
		return Config{}, errors.New("empty file")
	}
	if err := strictyaml.Unmarshal(data, &cfg); err != nil {
		return Config{}, err
	}
	// Model defaults: decode each model again over defaultModel so unset
	// trigger keys keep their defaults.
	var raw struct {
		Models []yaml.Node `yaml:"models"`
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return Config{}, err
	}
	for i := range raw.Models {
		m := defaultModel()
		if err := strictyaml.Decode(&raw.Models[i], &m); err != nil {
			return Config{}, fmt.Errorf("models[%d]: %w", i, err)
		}
		cfg.Models[i] = m
	}
	return cfg, nil
}

// ApplyEnv applies the TAKT_* environment: S3 and MQTT endpoints and
// secrets, TAKT_CLOUD_STATE_DIR, TAKT_CLOUD_LISTEN, TAKT_CLOUD_SIGNING_KEY.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) {
	sc := c.S3.syncConfig()
	sc.ApplyEnv(lookup)
	c.S3.Endpoint, c.S3.Bucket, c.S3.Region, c.S3.AccessKey, c.S3.SecretKey = sc.Endpoint, sc.Bucket, sc.Region, sc.AccessKey, sc.SecretKey
	c.S3.CredentialsFile, c.S3.CAFile = sc.CredentialsFile, sc.CAFile
	c.MQTT.ApplyEnv(lookup)
	for _, e := range []struct {
		name string
		dst  *string
	}{{"TAKT_CLOUD_STATE_DIR", &c.StateDir}, {"TAKT_CLOUD_LISTEN", &c.Listen}, {"TAKT_CLOUD_SIGNING_KEY", &c.SigningKey}} {
		if v, ok := lookup(e.name); ok && v != "" {
			*e.dst = v
		}
	}
	if v, ok := lookup("TAKT_CLOUD_API_TOKEN"); ok && v != "" {
		c.APIToken = cloudsync.Secret(v)
	}
}

// syncConfig is the uploader config with the same endpoint and credentials,
// which cloudsync.OpenBucket takes.
func (s S3Config) syncConfig() cloudsync.Config {
	c := cloudsync.DefaultConfig()
	c.Endpoint, c.Bucket, c.Region, c.AccessKey, c.SecretKey = s.Endpoint, s.Bucket, s.Region, s.AccessKey, s.SecretKey
	c.CredentialsFile, c.CAFile, c.PathStyle, c.CreateBucket = s.CredentialsFile, s.CAFile, s.PathStyle, s.CreateBucket
	if s.RequestTimeout > 0 {
		c.RequestTimeout = s.RequestTimeout
	}
	return c
}

// Validate checks every key without I/O and names each one that is wrong.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if strings.TrimSpace(c.StateDir) == "" {
		bad("state_dir: must not be empty")
	}
	if c.Listen != "" {
		host, _, err := net.SplitHostPort(c.Listen)
		ip := net.ParseIP(host)
		switch {
		case err != nil:
			bad("listen: %q is not host:port (e.g. 127.0.0.1:8090)", c.Listen)
		case host != "localhost" && (ip == nil || !ip.IsLoopback()) && c.APIToken == "":
			bad("listen: %s is reachable from other hosts: set api_token (TAKT_CLOUD_API_TOKEN), which POST /train and /ingest then require", c.Listen)
		}
	}
	if strings.TrimSpace(c.SigningKey) == "" {
		bad("signing_key: missing; give the private key file (takt model keygen) or TAKT_CLOUD_SIGNING_KEY")
	}
	if strings.TrimSpace(c.S3.Endpoint) == "" {
		bad("s3.endpoint: missing (or TAKT_S3_ENDPOINT)")
	} else if err := c.S3.syncConfig().Validate(); err != nil {
		// The uploader's checks name its keys "sync.": here they are "s3.".
		bad("%s", strings.ReplaceAll(err.Error(), "sync.", "s3."))
	}
	if c.S3.RequestTimeout <= 0 {
		bad("s3.request_timeout: %v must be > 0", c.S3.RequestTimeout)
	}
	if err := c.MQTT.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Ingest.Interval <= 0 {
		bad("ingest.interval: %v must be > 0", c.Ingest.Interval)
	}
	if c.Ingest.FullScanInterval < c.Ingest.Interval {
		bad("ingest.full_scan_interval: %v is below ingest.interval %v", c.Ingest.FullScanInterval, c.Ingest.Interval)
	}
	if c.Ingest.Concurrency < 1 || c.Ingest.Concurrency > 64 {
		bad("ingest.concurrency: %d is not in 1..64", c.Ingest.Concurrency)
	}
	t := c.Training
	if t.Parallel < 1 || t.Parallel > 32 {
		bad("training.parallel: %d is not in 1..32", t.Parallel)
	}
	if t.Timeout <= 0 {
		bad("training.timeout: %v must be > 0", t.Timeout)
	}
	if t.MinGood < 3 {
		bad("training.min_good: %d, want at least 3 (2 to train, 1 to validate)", t.MinGood)
	}
	if t.MaxGood < t.MinGood {
		bad("training.max_good: %d is below training.min_good %d", t.MaxGood, t.MinGood)
	}
	if !(t.Holdout > 0 && t.Holdout < 1) {
		bad("training.holdout: %v is not in (0, 1)", t.Holdout)
	}
	if t.KeepJobs < 1 {
		bad("training.keep_jobs: %d must be >= 1", t.KeepJobs)
	}
	if c.Cache.MaxBytes < 0 {
		bad("cache.max_bytes: %d must be >= 0 (0 = no size limit)", c.Cache.MaxBytes)
	} else if c.Cache.MaxBytes > 0 && c.Cache.MaxBytes < 1<<20 {
		bad("cache.max_bytes: %d is below 1MiB; too small to hold a training set (0 = no size limit)", c.Cache.MaxBytes)
	}
	if c.Cache.MaxAge < 0 {
		bad("cache.max_age: %v must be >= 0 (0 = no age limit)", c.Cache.MaxAge)
	}
	if len(c.Models) == 0 {
		bad("models: none configured; add at least one {name, experiments}")
	}
	names := map[string]bool{}
	for i, m := range c.Models {
		p := fmt.Sprintf("models[%d]", i)
		if err := wire.ValidLevel(m.Name); err != nil {
			bad("%s.name: %v", p, err)
		} else if names[m.Name] {
			bad("%s.name: %q is configured twice", p, m.Name)
		}
		names[m.Name] = true
		for j, tg := range m.Targets {
			for _, lv := range []struct{ k, v string }{{"site", tg.Site}, {"line", tg.Line}} {
				if err := wire.ValidLevel(lv.v); err != nil {
					bad("%s.targets[%d].%s: %v", p, j, lv.k, err)
				}
			}
			if tg.Station != "" {
				if err := wire.ValidLevel(tg.Station); err != nil {
					bad("%s.targets[%d].station: %v", p, j, err)
				}
			}
		}
		tr := m.Triggers
		if tr.Labels < 0 {
			bad("%s.triggers.labels: %d must be >= 0 (0 = off)", p, tr.Labels)
		}
		if tr.Cooldown < 0 {
			bad("%s.triggers.cooldown: %v must be >= 0", p, tr.Cooldown)
		}
		if d := tr.Drift; d.Threshold < 0 || d.ImageThreshold < 0 {
			bad("%s.triggers.drift: threshold %v and image_threshold %v must be >= 0 (0 = off)", p, d.Threshold, d.ImageThreshold)
		} else if (d.Threshold > 0 || d.ImageThreshold > 0) && (d.MinSamples < 10 || d.Window < d.MinSamples) {
			bad("%s.triggers.drift: min_samples %d must be >= 10 and window %d >= min_samples", p, d.MinSamples, d.Window)
		}
		if len(m.Experiments) == 0 {
			bad("%s.experiments: none; add at least one (e.g. {name: template, trainer: builtin, method: template})", p)
		}
		exps := map[string]bool{}
		for j, e := range m.Experiments {
			if err := e.Validate(); err != nil {
				bad("%s.experiments[%d]: %v", p, j, err)
			}
			if exps[e.Name] {
				bad("%s.experiments[%d].name: %q is used twice", p, j, e.Name)
			}
			exps[e.Name] = true
		}
	}
	return errors.Join(errs...)
}

// model returns the config of model name.
func (c Config) model(name string) (ModelConfig, bool) {
	for _, m := range c.Models {
		if m.Name == name {
			return m, true
		}
	}
	return ModelConfig{}, false
}
