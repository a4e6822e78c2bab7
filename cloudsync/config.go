package cloudsync

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// Config configures the [Uploader]. It is the `sync:` section of the agent's
// config file; every duration and size has a default in DefaultConfig.
type Config struct {
	// Endpoint is the S3 server: "https://host:port", "http://host:port", or
	// "host:port" (HTTPS). Empty disables sync. Env TAKT_S3_ENDPOINT.
	Endpoint string `yaml:"endpoint"`
	// Bucket receives every object. Default "takt". Env TAKT_S3_BUCKET.
	Bucket string `yaml:"bucket"`
	// Region signs requests. Default "us-east-1". Env TAKT_S3_REGION.
	Region string `yaml:"region"`
	// AccessKey and SecretKey are the credentials. Prefer the environment
	// (TAKT_S3_ACCESS_KEY, TAKT_S3_SECRET_KEY) or CredentialsFile over the
	// config file. The secret is never logged.
	AccessKey string `yaml:"access_key"`
	SecretKey Secret `yaml:"secret_key"`
	// CredentialsFile holds the credentials as KEY=VALUE lines: access_key
	// and secret_key (also TAKT_S3_ACCESS_KEY / TAKT_S3_SECRET_KEY or
	// aws_access_key_id / aws_secret_access_key). Read when the uploader is
	// created; values in it win over the config. Env TAKT_S3_CREDENTIALS_FILE.
	CredentialsFile string `yaml:"credentials_file"`
	// CAFile is a PEM bundle of CA certificates trusted for an https
	// endpoint, in addition to the system's. Env TAKT_S3_CA_FILE.
	CAFile string `yaml:"ca_file"`
	// PathStyle forces path-style bucket addressing (host/bucket/key), which
	// MinIO, versitygw and Ceph want; false lets the client choose (virtual
	// hosts on AWS).
	PathStyle bool `yaml:"path_style"`
	// CreateBucket creates the bucket when it does not exist.
	CreateBucket bool `yaml:"create_bucket"`

	// BatchSize is the most verdicts taken from the outbox at once; their
	// records go into one JSON Lines object per capture day. Default 256.
	BatchSize int `yaml:"batch_size"`
	// Concurrency is the number of uploads in flight. Default 4.
	Concurrency int `yaml:"concurrency"`
	// MaxBytesPerSecond caps the upload bandwidth of all uploads together;
	// 0 means no cap.
	MaxBytesPerSecond wire.ByteSize `yaml:"max_bytes_per_s"`
	// RequestTimeout bounds one request. Default 30s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// BackoffMin and BackoffMax bound the wait after a failure; it doubles
	// per consecutive failure, with full jitter. Defaults 500ms and 1m.
	// Errors that a retry cannot fix soon (wrong credentials, missing
	// bucket) wait BackoffMax.
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
	// PollInterval is how often an idle uploader looks for new verdicts.
	// Default 1s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// StatusInterval is how often the backlog is logged while it is not
	// empty. Default 30s.
	StatusInterval time.Duration `yaml:"status_interval"`
	// DrainTimeout is how long the agent waits, when its source ended or
	// max_parts was reached, for the backlog to upload before it stops.
	// 0 stops at once (the backlog uploads after the next start).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Sample selects the images to upload; every record is uploaded.
	Sample SampleConfig `yaml:"sample"`
}

// SampleConfig selects which kept images are uploaded. FAIL and NO_DECISION
// images always are (up to MaxRejectPerHour); a PASS image is when its score
// is within Margin of the threshold or its verdict id falls in PassFraction
// (a hash of the id, so the choice survives restarts), up to MaxPassPerHour.
type SampleConfig struct {
	// PassFraction of PASS images to upload, 0..1. Default 0.1.
	PassFraction float64 `yaml:"pass_fraction"`
	// Margin: PASS images scoring at least threshold*(1-margin) are always
	// uploaded, 0..1. Default 0.1.
	Margin float64 `yaml:"margin"`
	// MaxPassPerHour caps the PASS images uploaded per capture hour; 0 = no cap.
	MaxPassPerHour int `yaml:"max_pass_per_hour"`
	// MaxRejectPerHour caps the FAIL and NO_DECISION images uploaded per
	// capture hour; 0 = no cap.
	MaxRejectPerHour int `yaml:"max_reject_per_hour"`
}

// Secret is a string that formats as "[redacted]" wherever it is printed,
// logged or marshalled; use string(s) to read it.
type Secret string

const redacted = "[redacted]"

func (s Secret) String() string { return redacted }

// GoString keeps %#v from printing the secret.
func (s Secret) GoString() string { return redacted }

// MarshalText keeps encoders (JSON, YAML) from writing the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// UnmarshalText reads the secret as it is.
func (s *Secret) UnmarshalText(b []byte) error { *s = Secret(b); return nil }

// DefaultConfig returns the defaults: sync disabled (no endpoint).
func DefaultConfig() Config {
	return Config{
		Bucket:         "takt",
		Region:         "us-east-1",
		BatchSize:      256,
		Concurrency:    4,
		RequestTimeout: 30 * time.Second,
		BackoffMin:     500 * time.Millisecond,
		BackoffMax:     time.Minute,
		PollInterval:   time.Second,
		StatusInterval: 30 * time.Second,
		Sample:         SampleConfig{PassFraction: 0.1, Margin: 0.1},
	}
}

// Enabled reports whether an endpoint is configured.
func (c Config) Enabled() bool { return strings.TrimSpace(c.Endpoint) != "" }

// ApplyEnv overrides the endpoint, bucket, region, credentials and CA file
// from TAKT_S3_ENDPOINT, TAKT_S3_BUCKET, TAKT_S3_REGION, TAKT_S3_ACCESS_KEY,
// TAKT_S3_SECRET_KEY, TAKT_S3_CREDENTIALS_FILE and TAKT_S3_CA_FILE when they
// are set and not empty. lookup is os.LookupEnv in production.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) {
	for _, e := range []struct {
		name string
		dst  *string
	}{
		{"TAKT_S3_ENDPOINT", &c.Endpoint}, {"TAKT_S3_BUCKET", &c.Bucket}, {"TAKT_S3_REGION", &c.Region},
		{"TAKT_S3_ACCESS_KEY", &c.AccessKey}, {"TAKT_S3_CREDENTIALS_FILE", &c.CredentialsFile}, {"TAKT_S3_CA_FILE", &c.CAFile},
	} {
		if v, ok := lookup(e.name); ok && v != "" {
			*e.dst = v
		}
	}
	if v, ok := lookup("TAKT_S3_SECRET_KEY"); ok && v != "" {
		c.SecretKey = Secret(v)
	}
}

// Validate checks the config without I/O; messages name the key under
// "sync.". With no endpoint only the numbers are checked.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Enabled() {
		if _, _, err := parseEndpoint(c.Endpoint); err != nil {
			bad("sync.endpoint: %v", err)
		}
		if !validBucket(c.Bucket) {
			bad("sync.bucket: %q is not a bucket name (3-63 lowercase letters, digits, dots, hyphens)", c.Bucket)
		}
		if strings.TrimSpace(c.Region) == "" {
			bad("sync.region: must not be empty (e.g. us-east-1)")
		}
		if c.CredentialsFile == "" && (c.AccessKey == "" || c.SecretKey == "") {
			bad("sync.access_key, sync.secret_key: credentials missing; set TAKT_S3_ACCESS_KEY and TAKT_S3_SECRET_KEY, or sync.credentials_file")
		}
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		bad("sync.batch_size: %d is not in 1..10000", c.BatchSize)
	}
	if c.Concurrency < 1 || c.Concurrency > 64 {
		bad("sync.concurrency: %d is not in 1..64", c.Concurrency)
	}
	if c.MaxBytesPerSecond < 0 {
		bad("sync.max_bytes_per_s: %d must be >= 0 (0 = no cap)", c.MaxBytesPerSecond)
	} else if c.MaxBytesPerSecond > 0 && c.MaxBytesPerSecond < 1024 {
		bad("sync.max_bytes_per_s: %d is below the minimum 1KiB", c.MaxBytesPerSecond)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"request_timeout", c.RequestTimeout}, {"backoff_min", c.BackoffMin}, {"backoff_max", c.BackoffMax},
		{"poll_interval", c.PollInterval}, {"status_interval", c.StatusInterval}} {
		if d.v <= 0 {
			bad("sync.%s: %v must be > 0", d.key, d.v)
		}
	}
	if c.BackoffMax < c.BackoffMin {
		bad("sync.backoff_max: %v is below sync.backoff_min %v", c.BackoffMax, c.BackoffMin)
	}
	if c.DrainTimeout < 0 {
		bad("sync.drain_timeout: %v must be >= 0", c.DrainTimeout)
	}
	if f := c.Sample.PassFraction; !(f >= 0 && f <= 1) {
		bad("sync.sample.pass_fraction: %v is not in 0..1", f)
	}
	if m := c.Sample.Margin; !(m >= 0 && m <= 1) {
		bad("sync.sample.margin: %v is not in 0..1", m)
	}
	if c.Sample.MaxPassPerHour < 0 {
		bad("sync.sample.max_pass_per_hour: %d must be >= 0 (0 = no cap)", c.Sample.MaxPassPerHour)
	}
	if c.Sample.MaxRejectPerHour < 0 {
		bad("sync.sample.max_reject_per_hour: %d must be >= 0 (0 = no cap)", c.Sample.MaxRejectPerHour)
	}
	return errors.Join(errs...)
}

// parseEndpoint splits an endpoint into host:port and whether it uses TLS.
func parseEndpoint(ep string) (host string, secure bool, err error) {
	ep = strings.TrimSpace(ep)
	if !strings.Contains(ep, "://") {
		ep = "https://" + ep
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", false, fmt.Errorf("%q is not host:port or an http(s) URL", ep)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", false, fmt.Errorf("scheme %q, want http or https", u.Scheme)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("%q: want scheme://host[:port] without path, query or user", ep)
	}
	return u.Host, u.Scheme == "https", nil
}

func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i, r := range b {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r == '.' || r == '-') && i > 0 && i < len(b)-1
		if !ok {
			return false
		}
	}
	return true
}

// credentials returns the access key and secret, from CredentialsFile when set.
func (c Config) credentials() (access string, secret Secret, err error) {
	access, secret = c.AccessKey, c.SecretKey
	if c.CredentialsFile != "" {
		data, err := os.ReadFile(c.CredentialsFile)
		if err != nil {
			return "", "", fmt.Errorf("sync.credentials_file: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return "", "", fmt.Errorf("sync.credentials_file %s: line %d: want KEY=VALUE", c.CredentialsFile, n)
			}
			v = strings.Trim(strings.TrimSpace(v), `"'`)
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "access_key", "takt_s3_access_key", "aws_access_key_id":
				access = v
			case "secret_key", "takt_s3_secret_key", "aws_secret_access_key":
				secret = Secret(v)
			default:
				return "", "", fmt.Errorf("sync.credentials_file %s: line %d: unknown key %q (allowed: access_key, secret_key)", c.CredentialsFile, n, k)
			}
		}
	}
	if access == "" || secret == "" {
		return "", "", errors.New("sync: access key or secret key missing (TAKT_S3_ACCESS_KEY, TAKT_S3_SECRET_KEY or sync.credentials_file)")
	}
	return access, secret, nil
}
