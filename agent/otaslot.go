package agent

import (
	"context"
	"fmt"

	"github.com/takt-edge/takt/models"
)

var _ modelSlot = (*activeModels)(nil)

// serving lists the station models serving now.
func (h *activeModels) serving() []*stationModel { return h.snapshot() }

// swapIn wraps rt as the station model name and puts it in place of the model of that name
// at the next frame boundary (replace); the replaced runtime closes after its last part.
// On an error rt is closed.
func (h *activeModels) swapIn(name, source string, rt *models.Runtime, threshold float64) error {
	m, err := newStationModel(name, source, rt, threshold)
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
	u, err := newModelUpdater(a.cfg, a.log)
	if err != nil {
		return err
	}
	if err := u.open(); err != nil {
		return err
	}
	u.configured = func(ctx context.Context, i int) (*models.Runtime, error) {
		return a.loadModel(ctx, a.cfg.ModelConfigs()[i], fmt.Sprintf("model %d", i))
	}
	a.ota = u
	return nil
}

// loadInstalledModel loads the installed bundle of configured model i; nil when the
// configured model serves.
func (a *Agent) loadInstalledModel(ctx context.Context, i int) (*models.Runtime, string, error) {
	if a.ota == nil {
		return nil, "", nil
	}
	return a.ota.loadInstalled(ctx, i)
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
