package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/takt-edge/takt/agent/ota"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
)

var _ ota.Slot = (*activeModels)(nil)

// Serving lists the station models serving now.
func (h *activeModels) Serving() []ota.Served {
	ms := h.snapshot()
	out := make([]ota.Served, len(ms))
	for i, m := range ms {
		out[i] = ota.Served{Name: m.name, Version: m.info.Model.Version}
	}
	return out
}

// SwapIn wraps rt as the station model name and puts it in place of the model of that name
// at the next frame boundary (replace); the replaced runtime closes after its last part.
// On an error rt is closed.
func (h *activeModels) SwapIn(name, source string, rt *models.Runtime, threshold float64, op *wire.OperatingPoint) error {
	m, err := newStationModel(name, source, rt, threshold, op)
	if err != nil {
		rt.Close()
		return err
	}
	if _, err := h.replace(name, m); err != nil {
		m.release()
		return err
	}
	return nil
}

// openModelUpdates creates the model updater when model_update.enabled, reading its state
// (before the models load: an installed bundle replaces the configured one).
func (a *Agent) openModelUpdates() error {
	a.ota = nil
	if !a.cfg.ModelUpdate.Enabled {
		return nil
	}
	cfg, err := a.updaterConfig()
	if err != nil {
		return err
	}
	u := ota.New(cfg, a.log)
	if err := u.Open(); err != nil {
		return err
	}
	a.ota = u
	return nil
}

// loadInstalledModel loads the installed bundle of configured model i, with its file and
// operating point; nil when the configured model serves.
func (a *Agent) loadInstalledModel(ctx context.Context, i int) (*models.Runtime, string, *wire.OperatingPoint, error) {
	if a.ota == nil {
		return nil, "", nil, nil
	}
	return a.ota.LoadInstalled(ctx, i)
}

// runModelUpdates runs the updater beside the inspection loop and returns the func that
// stops it (before the models close).
func (a *Agent) runModelUpdates(ctx context.Context, active *activeModels) func() {
	if a.ota == nil {
		return func() {}
	}
	uctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.ota.Run(uctx, active); err != nil {
			a.log.Error().Err(err).Msg("model updates stopped")
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// updaterConfig is the model updater's part of the configuration, with the trusted keys
// loaded; it does no network I/O.
func (a *Agent) updaterConfig() (ota.Config, error) {
	cfg, u := a.cfg, a.cfg.ModelUpdate
	keys, err := bundle.LoadTrustedKeys(u.keys(cfg.modelKeys())...)
	if err != nil {
		return ota.Config{}, fmt.Errorf("model_update.trusted_keys: %w", err)
	}
	policy, err := bundle.NewTrustPolicy(keys, u.RevokedKeys)
	if err != nil {
		return ota.Config{}, fmt.Errorf("model_update: %w", err)
	}
	oc := ota.Config{
		Dir: filepath.Join(cfg.DataDir, "models"), Station: cfg.Station, Deadline: cfg.Deadline, AgentVersion: Version,
		Named: len(cfg.Models) > 0, Policy: policy, StagingBudget: int64(u.StagingBudget),
		Validate: ota.ValidatePolicy(u.Validate), Shadow: ota.ShadowPolicy(u.Shadow), Watch: ota.WatchPolicy(u.Watch),
		LoadConfigured: func(ctx context.Context, i int) (*models.Runtime, *wire.OperatingPoint, error) {
			return a.loadModel(ctx, a.cfg.ModelConfigs()[i], fmt.Sprintf("model %d", i))
		},
	}
	for _, m := range cfg.ModelConfigs() {
		oc.Models = append(oc.Models, ota.Configured{Name: m.Name, Source: m.Path + m.Bundle, Threshold: m.Threshold,
			Providers: m.providerOptions(cfg.DataDir)})
	}
	if cfg.Sync.Enabled() {
		if oc.Fetcher, err = cloudsync.NewFetcher(cfg.Sync); err != nil {
			return ota.Config{}, err
		}
	}
	return oc, nil
}
