package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/takt-edge/takt/models"
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

// validate checks the model keys; the messages name the key.
func (m ModelConfig) validate() []error {
	var errs []error
	path, bundle := strings.TrimSpace(m.Path) != "", strings.TrimSpace(m.Bundle) != ""
	switch {
	case !path && !bundle:
		errs = append(errs, errors.New("model.path: must name an ONNX model file (or set model.bundle to a signed bundle)"))
	case path && bundle:
		errs = append(errs, errors.New("model.path and model.bundle: set one, not both"))
	case bundle && len(m.TrustedKeys) == 0:
		errs = append(errs, errors.New("model.trusted_keys: a bundle needs at least one trusted public key file (takt model keygen writes KEYFILE.pub)"))
	case path && len(m.TrustedKeys) > 0:
		errs = append(errs, errors.New("model.trusted_keys: only for model.bundle; a plain model.path is not signed"))
	}
	if err := m.providerOptions("").Validate(); err != nil {
		errs = append(errs, fmt.Errorf("model.%w", err))
	}
	if m.GPU.DeviceID < 0 {
		errs = append(errs, fmt.Errorf("model.gpu.device_id: %d must be >= 0", m.GPU.DeviceID))
	}
	if m.GPU.WorkspaceMB < 0 {
		errs = append(errs, fmt.Errorf("model.gpu.workspace_mb: %d must be >= 0", m.GPU.WorkspaceMB))
	}
	return errs
}

// resolvePaths makes the model's relative paths relative to base, the config's folder.
func (m *ModelConfig) resolvePaths(base string) {
	ps := []*string{&m.Bundle, &m.GPU.EngineCache, &m.GPU.TimingCache}
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

// loadModel opens the configured model on the configured provider chain: a signed bundle
// (model.bundle, verified against model.trusted_keys, golden set replayed) or a plain ONNX
// file (model.path). A fallback to a later provider is logged as degraded.
func (a *Agent) loadModel(ctx context.Context) (*models.Runtime, error) {
	opts := models.RuntimeOptions{Providers: a.cfg.Model.providerOptions(a.cfg.DataDir), Logger: a.log}
	var rt *models.Runtime
	if a.cfg.Model.Bundle == "" {
		r, err := models.LoadRuntime(a.cfg.Model.Path, opts)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", a.cfg.Model.Path, err)
		}
		rt = r
	} else {
		keys, err := models.LoadTrustedKeys(a.cfg.Model.TrustedKeys...)
		if err != nil {
			return nil, fmt.Errorf("model.trusted_keys: %w", err)
		}
		b, err := models.OpenBundle(a.cfg.Model.Bundle, keys)
		if err != nil {
			return nil, fmt.Errorf("model %w", err)
		}
		if err := b.Manifest.CheckAgent(Version); err != nil {
			return nil, fmt.Errorf("model %s: %w", a.cfg.Model.Bundle, err)
		}
		r, err := models.NewRuntime(ctx, b, opts)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", a.cfg.Model.Bundle, err)
		}
		rt = r
		a.log.Info().Str("bundle", a.cfg.Model.Bundle).Str("key_id", b.KeyID).Int("golden", goldenCases(b)).
			Msg("model bundle verified")
	}
	if info := rt.Info(); info.Degraded {
		a.log.Warn().Str("provider", info.Provider).Str("fallback", info.Fallback).Msg("degraded: model runs on a fallback execution provider")
	}
	return rt, nil
}

func goldenCases(b *models.Bundle) int {
	if b.Manifest.Golden == nil {
		return 0
	}
	return len(b.Manifest.Golden.Cases)
}
