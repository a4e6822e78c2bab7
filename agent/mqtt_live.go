package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/takt-edge/takt/agent/stationmqtt"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// RaiseAlert reports a degraded state of the station: it is shown on the
// operator page and, with MQTT configured, published on alert through the
// durable outbox (rate-limited per kind, see mqtt.alert_burst). kind is one of
// the cloudsync.Alert* kinds (camera_stalled, provider_fallback, disk_quota,
// sync_backlog, degraded, ...). It returns after the alert is durable (an
// fsync) or folded by the rate limit; do not call it from the inspection loop's
// hot path. Errors: ErrNotRunning, or the store's.
func (a *Agent) RaiseAlert(ctx context.Context, kind, message string) error {
	l := a.live.Load()
	if l == nil {
		return ErrNotRunning
	}
	return l.raiseAlert(ctx, kind, message)
}

func (l *live) raiseAlert(ctx context.Context, kind, message string) error {
	l.alerts.Add(kind, message)
	if l.mqtt == nil {
		return nil
	}
	if err := wire.ValidLevel(kind); err != nil {
		return fmt.Errorf("alert kind: %w", err)
	}
	return l.mqtt.Raise(ctx, kind, message)
}

// alertReq is an alert waiting for the alert goroutine.
type alertReq struct{ kind, message string }

// alertAsync raises an alert without blocking the caller (the store's quota
// enforcement, the PLC's answer path): the alert goroutine makes it durable.
// When 64 alerts are already waiting, the page still shows it and the log
// keeps it; the MQTT rate limit would fold such a burst anyway.
func (l *live) alertAsync(kind, message string) {
	select {
	case l.alertq <- alertReq{kind, message}:
	default:
		l.alerts.Add(kind, message)
		l.log.Warn().Str("kind", kind).Str("alert", message).Msg("alert queue full: shown on the page only")
	}
}

// startAlerts runs the goroutine that raises the alerts of alertAsync.
func (l *live) startAlerts(context.Context) (func(context.Context) error, error) {
	l.alertq = make(chan alertReq, 64)
	return func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				// Alerts still queued go to the durable outbox; the next run sends them.
				for {
					select {
					case r := <-l.alertq:
						if err := l.raiseAlert(context.WithoutCancel(ctx), r.kind, r.message); err != nil {
							l.log.Error().Err(err).Str("kind", r.kind).Msg("raise alert")
						}
					default:
						return nil
					}
				}
			case r := <-l.alertq:
				if err := l.raiseAlert(ctx, r.kind, r.message); err != nil && ctx.Err() == nil {
					l.log.Error().Err(err).Str("kind", r.kind).Msg("raise alert")
				}
			}
		}
	}, nil
}

// startMQTT starts the station's MQTT roles (mqtt.broker is set).
func (l *live) startMQTT(context.Context) (func(context.Context) error, error) {
	deps := stationmqtt.Deps{
		Store: l.st, Station: l, CanTrigger: l.trig != nil, Camera: l.cameraState,
		Link: func(state string) { l.setLink("mqtt", state) },
	}
	if l.cfg.Sync.Enabled() {
		deps.SyncBacklog = l.st.Backlog
	}
	if u := l.a.ota; u != nil {
		deps.Models = u
	}
	rc := l.cfg.MQTT.roleConfig(l.cfg.Station)
	rc.Sparkplug = l.cfg.MQTT.sparkplug(l.cfg.Station, l.cfg.Camera.ID, filepath.Join(l.cfg.DataDir, "sparkplug_bdseq"))
	r, err := stationmqtt.New(rc, l.cfg.Station, deps, l.log)
	if err != nil {
		return nil, err
	}
	if u := l.a.ota; u != nil {
		u.SetPublisher(func(m wire.ModelStatusMsg) { r.PublishModelStatus(context.Background(), m) })
	}
	l.mqtt = r
	l.observe(func(store.Verdict, camera.Frame, time.Duration, *heatmap) { r.VerdictCommitted() })
	l.setLink("mqtt", cloudsync.ConnConnecting)
	// The roles stop when the inspection loop has stopped (stop closes l.stopped),
	// not when Run's context ends, so the last verdict committed while the loop
	// winds down is still queued and sent.
	return func(ctx context.Context) error {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		go func() {
			select {
			case <-l.done():
			case <-rctx.Done():
			}
			cancel()
		}()
		return r.Run(rctx)
	}, nil
}

var _ stationmqtt.Station = (*live)(nil)

// FillStatus fills the station's part of the MQTT status message.
func (l *live) FillStatus(m *wire.StatusMsg) {
	mi := l.primary().info.Model
	m.Model = &wire.ModelRef{Name: mi.Name, Version: mi.Version, SHA256: mi.SHA256}
	m.Provider = l.provider()
	m.AgentVersion = Version
	m.Camera = l.cameraState()
}

// roleConfig is the MQTT roles' part of the mqtt settings of station.
func (m MQTTConfig) roleConfig(station string) stationmqtt.Config {
	return stationmqtt.Config{
		Conn: m.conn(station), Site: m.Site, Line: m.Line, Verdicts: m.Verdicts, StatusInterval: m.StatusInterval,
		AlertBurst: m.AlertBurst, AlertWindow: m.AlertWindow, SyncBacklogAge: m.SyncBacklogAge, OutboxMax: m.OutboxMax,
		DrainTimeout: m.DrainTimeout, PublishTimeout: m.PublishTimeout,
	}
}
