package agent

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/takt-edge/takt/agent/web"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
)

var _ web.Station = (*live)(nil)

// startHTTP binds http.listen and returns the server's run function.
func (l *live) startHTTP(context.Context) (func(context.Context) error, error) {
	c := l.cfg.HTTP
	cfg := web.Config{Listen: c.listenAddr(), TLSCert: c.TLSCert, TLSKey: c.TLSKey, Token: c.Token, User: c.User,
		Password: c.Password, Station: l.cfg.Station, Recent: c.Recent, ImagesKeep: l.cfg.Images.Keep,
		TriggerWait: l.cfg.PLC.answerTimeout(l.cfg.Deadline) + l.cfg.Camera.ReadTimeout + 2*time.Second}
	deps := web.Deps{Store: l.st, Recent: l.recent, Metrics: promhttp.HandlerFor(l.m.reg, promhttp.HandlerOpts{Registry: l.m.reg}),
		Healthy: l.healthy, Ready: l.readiness, Done: l.done()}
	if u := l.a.ota; u != nil {
		deps.Models = u
	}
	srv, run, err := web.Start(cfg, l, deps, l.log)
	if err != nil {
		return nil, err
	}
	l.http = srv
	return run, nil
}

// HTTPAddr returns the address the HTTP server listens on while Run is running, or "".
func (a *Agent) HTTPAddr() string {
	if l := a.live.Load(); l != nil && l.http != nil {
		return l.http.Addr()
	}
	return ""
}

// Status is the station's status as GET /status and the page's header show it.
func (l *live) Status() web.Status {
	var s web.Status
	s.Station, s.Time, s.Started = l.cfg.Station, time.Now().UTC(), l.started.UTC()
	s.Ready, s.Checks = l.readiness()
	s.Healthy, _ = l.healthy()
	for _, m := range l.models.snapshot() {
		s.Models = append(s.Models, web.ModelStatus{Name: m.info.Model.Name, Version: m.info.Model.Version, SHA256: m.info.Model.SHA256,
			Provider: m.provider(), Threshold: m.threshold, Station: m.name, EngineBuild: engineBuildStatus(m.rt.EngineBuild()),
			Operating: m.op, Seen: m.seenRates()})
	}
	s.Model = s.Models[0]
	s.Camera.State = l.cameraState()
	var ids, kinds, modes []string
	for _, c := range l.cams {
		st, cc := c.Stats(), c.Config()
		ids, kinds, modes = append(ids, cc.ID), append(kinds, cc.Kind), append(modes, cc.Mode)
		s.Camera.Frames += st.Frames
		s.Camera.Stalls += st.Stalls
		s.Camera.Reconnects += st.Reconnects
	}
	s.Camera.ID, s.Camera.Kind, s.Camera.Mode = strings.Join(ids, ", "), strings.Join(kinds, ", "), strings.Join(modes, ", ")
	s.Totals, _ = l.st.Counts()
	s.Yield = l.yield.Spans(8)
	if b, err := l.st.Backlog(); err == nil {
		s.Backlog = &struct {
			Count  int       `json:"count"`
			Bytes  int64     `json:"bytes"`
			Oldest time.Time `json:"oldest"`
		}{b.Count, b.Bytes, b.Oldest}
	}
	s.Sync, s.MQTT = l.link("s3"), l.link("mqtt")
	s.PLC = l.plcStatus()
	s.Alerts = l.alerts.Recent()
	s.AlertsTo = "local only (MQTT " + l.link("mqtt") + ")"
	s.Auth = l.cfg.HTTP.authOn()
	return s
}

func engineBuildStatus(b models.BuildStatus) *web.EngineBuildStatus {
	if b.Started.IsZero() {
		return nil
	}
	st := &web.EngineBuildStatus{State: "building", ElapsedSeconds: b.Elapsed.Seconds(), Error: b.Err, CacheDir: b.CacheDir}
	switch {
	case b.Err != "":
		st.State = "failed"
	case b.Done:
		st.State = "done"
	}
	return st
}

// startRenderer runs the goroutine that encodes recent parts' images and heatmaps, and
// watches the camera state for the alert log.
func (l *live) startRenderer(context.Context) (func(context.Context) error, error) {
	return func(ctx context.Context) error {
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.recent.Run(ctx)
		}()
		defer func() { <-done }()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
				l.watchCamera()
			}
		}
	}, nil
}

func (l *live) watchCamera() {
	st := camera.State(l.cameraState())
	l.trigMu.Lock()
	prev := l.lastCam
	l.lastCam = st
	l.trigMu.Unlock()
	if prev != "" && prev != st {
		kind := "camera"
		if st != camera.StateConnected {
			kind = "degraded"
		}
		l.alerts.Add(kind, "camera "+l.cfg.Camera.ID+" is "+string(st))
	}
}
