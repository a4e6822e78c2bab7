package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"github.com/takt-edge/takt/agent/ota"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
)

// Version is the agent's semantic version; a model bundle's min_agent_version is checked
// against it. Release builds set it with -ldflags "-X github.com/takt-edge/takt/agent.Version=...".
var Version = "0.1.0"

// GPUConfig holds the TensorRT and CUDA options of the provider chain.
type GPUConfig struct {
	// DeviceID is the CUDA device. Default 0.
	DeviceID int `yaml:"device_id"`
	// FP16 lets TensorRT use half precision. Default false.
	FP16 bool `yaml:"fp16"`
	// WorkspaceMB caps TensorRT's builder workspace; 0 is ONNX Runtime's default.
	WorkspaceMB int `yaml:"workspace_mb"`
	// EngineCache is the TensorRT engine cache folder; default <data_dir>/engines.
	EngineCache string `yaml:"engine_cache"`
	// TimingCache is TensorRT's timing cache folder; default the engine cache.
	TimingCache string `yaml:"timing_cache"`
}

// validate checks the keys of one model entry; key is its place in the config ("model" or
// "models[i]"), so the messages name the key.
func (m ModelConfig) validate(key string) []error {
	var errs []error
	path, bundle := strings.TrimSpace(m.Path) != "", strings.TrimSpace(m.Bundle) != ""
	switch {
	case !path && !bundle:
		errs = append(errs, fmt.Errorf("%s.path: must name an ONNX model file (or set %s.bundle to a signed bundle)", key, key))
	case path && bundle:
		errs = append(errs, fmt.Errorf("%s.path and %s.bundle: set one, not both", key, key))
	case bundle && len(m.TrustedKeys) == 0:
		errs = append(errs, fmt.Errorf("%s.trusted_keys: a bundle needs at least one trusted public key file (takt model keygen writes KEYFILE.pub)", key))
	case path && len(m.TrustedKeys) > 0:
		errs = append(errs, fmt.Errorf("%s.trusted_keys: only for %s.bundle; a plain %s.path is not signed", key, key, key))
	}
	if m.Threshold < 0 {
		errs = append(errs, fmt.Errorf("%s.threshold: %v must be >= 0 (0 uses the model's threshold)", key, m.Threshold))
	}
	if err := m.providerOptions("").Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%s.%w", key, err))
	}
	if m.GPU.DeviceID < 0 {
		errs = append(errs, fmt.Errorf("%s.gpu.device_id: %d must be >= 0", key, m.GPU.DeviceID))
	}
	if m.GPU.WorkspaceMB < 0 {
		errs = append(errs, fmt.Errorf("%s.gpu.workspace_mb: %d must be >= 0", key, m.GPU.WorkspaceMB))
	}
	return errs
}

// ModelConfigs lists the station's models: the entries of models, or the single model.
func (c Config) ModelConfigs() []ModelConfig {
	if len(c.Models) > 0 {
		return c.Models
	}
	return []ModelConfig{c.Model}
}

// validateModels checks model or models: one of them, each entry valid, names unique.
func (c Config) validateModels() []error {
	if len(c.Models) == 0 {
		return c.Model.validate("model")
	}
	var errs []error
	if !reflect.DeepEqual(c.Model, ModelConfig{}) {
		errs = append(errs, errors.New("model and models: set one, not both (models lists several models that score each frame)"))
	}
	seen := map[string]int{}
	for i, m := range c.Models {
		key := fmt.Sprintf("models[%d]", i)
		errs = append(errs, m.validate(key)...)
		switch {
		case !modelNameRE.MatchString(m.Name):
			errs = append(errs, fmt.Errorf("%s.name: %q must be 1-64 letters, digits, '-', '_' or '.'; each of several models needs a name", key, m.Name))
		case seen[m.Name] > 0:
			errs = append(errs, fmt.Errorf("%s.name: %q is also models[%d].name; names must be unique", key, m.Name, seen[m.Name]-1))
		}
		seen[m.Name] = i + 1
	}
	return errs
}

var modelNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// resolvePaths makes the model's relative paths relative to base, the config's folder.
func (m *ModelConfig) resolvePaths(base string) {
	ps := []*string{&m.Path, &m.Bundle, &m.GPU.EngineCache, &m.GPU.TimingCache}
	for i := range m.TrustedKeys {
		ps = append(ps, &m.TrustedKeys[i])
	}
	for _, p := range ps {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
}

func (m ModelConfig) providerOptions(dataDir string) models.ProviderOptions {
	po := models.ProviderOptions{Chain: m.Providers, Require: m.Require, DeviceID: m.GPU.DeviceID, FP16: m.GPU.FP16,
		WorkspaceMB: m.GPU.WorkspaceMB, EngineCacheDir: m.GPU.EngineCache, TimingCacheDir: m.GPU.TimingCache}
	if po.EngineCacheDir == "" && dataDir != "" {
		po.EngineCacheDir = filepath.Join(dataDir, "engines")
	}
	return po
}

// loadModels opens the station's models (model, or each entry of models) in config order.
// On an error the models already open are closed.
func (a *Agent) loadModels(ctx context.Context) (_ []*stationModel, err error) {
	var ms []*stationModel
	defer func() {
		if err != nil {
			for _, m := range ms {
				m.release()
			}
		}
	}()
	for i, mc := range a.cfg.ModelConfigs() {
		key := "model"
		if len(a.cfg.Models) > 0 {
			key = fmt.Sprintf("models[%d]", i)
		}
		source, threshold := mc.Path+mc.Bundle, mc.Threshold
		rt, installed, op, err := a.loadInstalledModel(ctx, i) // an over-the-air update, if any
		if err != nil {
			return nil, err
		}
		if rt != nil {
			source, threshold = installed, 0 // an installed bundle decides by its own threshold
		} else if rt, op, err = a.loadModel(ctx, mc, key); err != nil {
			return nil, err
		}
		m, err := newStationModel(mc.Name, source, rt, threshold, op)
		if err != nil {
			rt.Close()
			return nil, fmt.Errorf("%s.threshold: %w", key, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// loadModel opens one configured model on its provider chain: a signed bundle (bundle,
// verified against trusted_keys, golden set replayed) or a plain ONNX file (path), with the
// operating point a bundle records (nil for a plain file). A fallback to a later provider
// is logged as degraded.
func (a *Agent) loadModel(ctx context.Context, mc ModelConfig, key string) (*models.Runtime, *wire.OperatingPoint, error) {
	opts := models.RuntimeOptions{Providers: mc.providerOptions(a.cfg.DataDir), Logger: a.log}
	var rt *models.Runtime
	var op *wire.OperatingPoint
	if mc.Bundle == "" {
		r, err := models.LoadRuntime(mc.Path, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", key, mc.Path, err)
		}
		rt = r
	} else {
		keys, err := bundle.LoadTrustedKeys(mc.TrustedKeys...)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.trusted_keys: %w", key, err)
		}
		b, err := bundle.OpenBundle(mc.Bundle, keys)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %w", key, err)
		}
		if err := b.Manifest.CheckAgent(Version); err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", key, mc.Bundle, err)
		}
		r, err := models.NewRuntime(ctx, b, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", key, mc.Bundle, err)
		}
		rt, op = r, ota.OperatingPoint(b.Manifest)
		a.log.Info().Str("bundle", mc.Bundle).Str("key_id", b.KeyID).Int("golden", goldenCases(b)).
			Msg("model bundle verified")
	}
	if info := rt.Info(); info.Degraded {
		a.log.Warn().Str("model", info.Model.Name).Str("provider", info.Provider).Str("fallback", info.Fallback).
			Msg("degraded: model runs on a fallback execution provider")
	}
	return rt, op, nil
}

func goldenCases(b *bundle.Bundle) int {
	if b.Manifest.Golden == nil {
		return 0
	}
	return len(b.Manifest.Golden.Cases)
}
