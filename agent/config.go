package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync/strictyaml"
)

// Config is the station agent's configuration: one YAML file, decoded strictly.
type Config struct {
	// Station names this station in verdicts, logs and (later) topics and object keys.
	Station string `yaml:"station"`
	// DataDir holds the verdict store (takt.db) and kept images. Default /var/lib/takt.
	DataDir string `yaml:"data_dir"`
	// Camera is the frame source.
	Camera camera.Config `yaml:"camera"`
	// Cameras lists several cameras with distinct ids instead of Camera; see CameraConfigs.
	Cameras []camera.Config `yaml:"cameras"`
	// Model is the ONNX model that scores each part.
	Model ModelConfig `yaml:"model"`
	// Models lists several models that each score every frame instead of Model (for
	// example one per region or defect family); a part PASSes only when all pass it.
	Models []ModelConfig `yaml:"models"`
	// Deadline is the time a part may take from capture to decision; later is NO_DECISION.
	Deadline time.Duration `yaml:"deadline"`
	// Images says which part images are kept in the store.
	Images ImagesConfig `yaml:"images"`
	// Store bounds the disk the verdict store uses: quotas, ages, eviction order.
	Store StoreConfig `yaml:"store"`
	// Sync uploads verdicts and images to S3-compatible storage; off without sync.endpoint.
	Sync SyncConfig `yaml:"sync"`
	// MaxParts stops the agent after this many parts; 0 runs until stopped or the source ends.
	MaxParts int `yaml:"max_parts"`
	// ONNXRuntimeLib is the path of libonnxruntime.so; empty searches the usual places
	// ($ONNXRUNTIME_LIB, next to the binary, /usr/lib/takt/lib, /usr/lib).
	ONNXRuntimeLib string `yaml:"onnxruntime_lib"`
	// Log sets the log level and format.
	Log LogConfig `yaml:"log"`
	// HTTP serves the operator page, the API, /metrics and health; off by default.
	HTTP HTTPConfig `yaml:"http"`
	// PLC is the Modbus TCP handshake with the line; off by default.
	PLC PLCConfig `yaml:"plc"`
	// MQTT publishes status, verdicts and alerts and takes commands; off without mqtt.broker.
	MQTT MQTTConfig `yaml:"mqtt"`
	// ModelUpdate receives, checks, shadows and swaps signed model bundles over the air; off
	// by default (otaconfig.go).
	ModelUpdate ModelUpdateConfig `yaml:"model_update"`

	// ConfigVersion is the config format the file is written in (configversion.go): absent
	// means 1; an older version is migrated on load, a newer one is refused.
	ConfigVersion int `yaml:"config_version"`
}

// ModelConfig names the model and its decision threshold.
type ModelConfig struct {
	// Name names the model in verdicts, status and metrics; required in models, where it
	// tells the models apart (model updates replace a model by this name).
	Name string `yaml:"name"`
	// Path is a plain ONNX model file; set it or Bundle.
	Path string `yaml:"path"`
	// Bundle is a signed model bundle (tar); it must be signed by one of TrustedKeys.
	Bundle string `yaml:"bundle"`
	// TrustedKeys are public key files (PEM, as takt model keygen writes KEYFILE.pub).
	TrustedKeys []string `yaml:"trusted_keys"`
	// Threshold overrides the threshold stored in the model: a score above it is FAIL.
	// 0 uses the model's own.
	Threshold float64 `yaml:"threshold"`
	// Providers is the execution provider chain, tried in order; default [cpu].
	Providers []string `yaml:"providers"`
	// Require names a provider that must serve (a startup error otherwise); empty allows
	// falling back, reported as degraded.
	Require string `yaml:"require"`
	// GPU holds the TensorRT and CUDA options.
	GPU GPUConfig `yaml:"gpu"`
}

// ImagesConfig says which part images are kept and how they are encoded.
type ImagesConfig struct {
	// Keep is "all", "fail" (FAIL and NO_DECISION only) or "none". Default "all".
	Keep string `yaml:"keep"`
	// Format is "jpg" or "png". Default "jpg".
	Format string `yaml:"format"`
	// JPEGQuality is 1..100. Default 90.
	JPEGQuality int `yaml:"jpeg_quality"`
}

// LogConfig sets logging.
type LogConfig struct {
	// Level is one of trace, debug, info, warn, error. Default info.
	Level string `yaml:"level"`
	// Format is "console" (human) or "json". Default console.
	Format string `yaml:"format"`
}

// Image keep policies.
const (
	KeepAll  = "all"
	KeepFail = "fail"
	KeepNone = "none"
)

// DefaultConfig returns the defaults every key falls back to.
func DefaultConfig() Config {
	return Config{
		ConfigVersion: CurrentConfigVersion(),

		Station:  "station-1",
		DataDir:  "/var/lib/takt",
		Camera:   camera.DefaultConfig(),
		Deadline: 500 * time.Millisecond,
		Images:   ImagesConfig{Keep: KeepAll, Format: "jpg", JPEGQuality: 90},
		Store:    defaultStoreConfig(),
		Sync:     defaultSyncConfig(),
		Log:      LogConfig{Level: "info", Format: "console"},
		HTTP:     defaultHTTPConfig(),
		PLC:      defaultPLCConfig(),
		MQTT:     defaultMQTTConfig(),

		ModelUpdate: defaultModelUpdateConfig(),
	}
}

// LoadConfig reads the YAML file at path over DefaultConfig, resolves relative paths against
// the file's folder, applies TAKT_* environment overrides and validates.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return LoadConfigData(data, path)
}

// LoadConfigData is LoadConfig of data read from path (path names the file in errors and
// resolves relative paths).
func LoadConfigData(data []byte, path string) (Config, error) {
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	base := filepath.Dir(path)
	for i := range cfg.Cameras {
		if p := &cfg.Cameras[i].Path; *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	for _, p := range []*string{&cfg.DataDir, &cfg.Camera.Path, &cfg.ONNXRuntimeLib, &cfg.HTTP.TLSCert, &cfg.HTTP.TLSKey} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	cfg.Model.resolvePaths(base)
	for i := range cfg.Models {
		cfg.Models[i].resolvePaths(base)
	}
	cfg.ModelUpdate.resolvePaths(base)
	if v := os.Getenv("TAKT_DATA_DIR"); v != "" {
		cfg.DataDir = v
	}
	if v := os.Getenv("TAKT_HTTP_LISTEN"); v != "" {
		cfg.HTTP.Listen = v
	}
	if v := os.Getenv("TAKT_HTTP_TOKEN"); v != "" {
		cfg.HTTP.Token = v
	}
	if v := os.Getenv("TAKT_HTTP_PASSWORD"); v != "" {
		cfg.HTTP.Password = v
	}
	if v := os.Getenv("TAKT_STATION"); v != "" {
		cfg.Station = v
	}
	cfg.loadSyncSettings(base, os.LookupEnv)
	cfg.loadMQTTSettings(base, os.LookupEnv)
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig migrates YAML of an older config_version in memory (MigrateConfig) and decodes
// it over DefaultConfig. Unknown keys are errors that name the key, its line and the keys
// allowed there. It does not validate.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	data, _, err := MigrateConfig(data)
	if err != nil {
		return Config{}, err
	}
	if err := strictyaml.Unmarshal(data, &cfg); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks every key and names the first that is wrong.
func (c Config) Validate() error {
	var errs []error
	if c.ConfigVersion != CurrentConfigVersion() {
		errs = append(errs, fmt.Errorf("config_version: %d, this agent reads %d (run takt-agent config migrate)", c.ConfigVersion, CurrentConfigVersion()))
	}
	if strings.TrimSpace(c.Station) == "" {
		errs = append(errs, errors.New("station: must not be empty"))
	}
	if strings.TrimSpace(c.DataDir) == "" {
		errs = append(errs, errors.New("data_dir: must not be empty"))
	}
	if err := c.validateCameras(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateModels()...)
	errs = append(errs, c.ModelUpdate.validate(c.modelKeys())...)
	if c.Deadline <= 0 {
		errs = append(errs, fmt.Errorf("deadline: %v must be > 0 (e.g. 500ms)", c.Deadline))
	}
	if !slices.Contains([]string{KeepAll, KeepFail, KeepNone}, c.Images.Keep) {
		errs = append(errs, fmt.Errorf("images.keep: %q is not one of all, fail, none", c.Images.Keep))
	}
	if c.Images.Format != "jpg" && c.Images.Format != "png" {
		errs = append(errs, fmt.Errorf("images.format: %q is not one of jpg, png", c.Images.Format))
	}
	if c.Images.JPEGQuality < 1 || c.Images.JPEGQuality > 100 {
		errs = append(errs, fmt.Errorf("images.jpeg_quality: %d is not in 1..100", c.Images.JPEGQuality))
	}
	if c.MaxParts < 0 {
		errs = append(errs, fmt.Errorf("max_parts: %d must be >= 0 (0 runs until stopped)", c.MaxParts))
	}
	if !slices.Contains([]string{"trace", "debug", "info", "warn", "error"}, c.Log.Level) {
		errs = append(errs, fmt.Errorf("log.level: %q is not one of trace, debug, info, warn, error", c.Log.Level))
	}
	if c.Log.Format != "console" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format: %q is not one of console, json", c.Log.Format))
	}
	if err := c.HTTP.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.PLC.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.MQTT.validate(c.Station); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateStoreSync()...)
	return errors.Join(errs...)
}
