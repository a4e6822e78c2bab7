package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/ota"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/models"
)

// Agent inspects parts on one station.
type Agent struct {
	cfg     Config
	log     zerolog.Logger
	summary Summary
	hooks   // the live view the HTTP, PLC and systemd services reach while Run runs
	// uploader is the S3 uploader while Run runs with sync enabled, for status and metrics.
	uploader atomic.Pointer[cloudsync.Uploader]
	// ota runs model updates while Run runs with model_update.enabled; nil otherwise.
	ota *ota.Updater
}

// Summary counts what a Run did.
type Summary struct {
	Parts      int
	Pass       int
	Fail       int
	NoDecision int
	// LatencyP50 and LatencyP99 are capture-to-commit times over the run (estimated from a
	// uniform sample of latencySample parts once the run has more).
	LatencyP50 time.Duration
	LatencyP99 time.Duration
	Elapsed    time.Duration
}

// New validates cfg; it opens nothing.
func New(cfg Config, log zerolog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &Agent{cfg: cfg, log: log.With().Str("component", "agent").Str("station", cfg.Station).Logger()}, nil
}

// Summary returns what the last Run did; call it after Run returned.
func (a *Agent) Summary() Summary { return a.summary }

// Run inspects parts until ctx is done, the source ends or MaxParts parts are committed.
// It returns nil in those cases and an error when the store, model or camera fails to open
// or the camera fails for good.
func (a *Agent) Run(ctx context.Context) (err error) {
	start := time.Now()
	if err := models.InitONNXRuntime(a.cfg.ONNXRuntimeLib); err != nil {
		return err
	}
	if err := a.openModelUpdates(); err != nil {
		return err
	}
	loaded, err := a.loadModels(ctx)
	if err != nil {
		return err
	}
	active := newActiveModels(loaded)
	defer active.close()

	st, err := store.Open(a.cfg.DataDir, a.storeOptions())
	if err != nil {
		return err
	}
	defer st.Close()

	// Sinks before sources: the uploader starts before the camera opens and stops after
	// the loop; a normal end (source ended, max_parts) first drains the backlog.
	ctx, stopSync, err := a.startSync(ctx, st)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopSync(err == nil)) }()

	src, err := a.openCameras()
	if err != nil {
		return err
	}
	defer src.Close()
	svc, err := a.startServices(ctx, active, st, src)
	if err != nil {
		return err
	}
	defer svc.stop()
	defer a.runModelUpdates(ctx, active)()

	for _, m := range loaded {
		a.log.Info().Str("name", m.name).Str("model", m.info.Model.Name).Str("model_version", m.info.Model.Version).
			Str("model_sha256", m.info.Model.SHA256).Str("provider", m.info.Provider).Float64("threshold", m.threshold).Msg("model")
	}
	a.log.Info().Int("models", len(loaded)).Str("camera", a.cfg.Camera.ID).Str("source", a.cfg.Camera.Path).
		Str("data_dir", a.cfg.DataDir).Msg("inspecting")

	var latencies latencyStats
	defer func() {
		a.summary.Elapsed = time.Since(start)
		a.summary.LatencyP50, a.summary.LatencyP99 = latencies.percentile(0.50), latencies.percentile(0.99)
		s := a.summary
		a.log.Info().Int("parts", s.Parts).Int("pass", s.Pass).Int("fail", s.Fail).Int("no_decision", s.NoDecision).
			Dur("latency_p50", s.LatencyP50).Dur("latency_p99", s.LatencyP99).Dur("elapsed", s.Elapsed).Msg("summary")
	}()

	for a.cfg.MaxParts == 0 || a.summary.Parts < a.cfg.MaxParts {
		frame, err := src.Read(ctx)
		var frameErr *camera.FrameError
		switch {
		case errors.Is(err, io.EOF):
			a.log.Info().Msg("source ended")
			return nil
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &frameErr):
			frame = camera.Frame{CameraID: frameErr.CameraID, Seq: frameErr.Seq, Time: time.Now(), Origin: frameErr.Origin, Serial: frameErr.Serial}
		case errors.Is(err, camera.ErrStalled):
			continue // no part was captured; the camera logs the outage and reconnects
		case err != nil:
			return fmt.Errorf("camera %s: %w", a.cfg.Camera.ID, err)
		}
		svc.begin()
		set, release := active.acquire()
		v, heat, lat, err := a.inspect(ctx, set, st, frame, err)
		release()
		if err != nil {
			return err
		}
		svc.committed(v, frame, lat, heat)
		src.Recycle(frame)
		latencies.add(lat)
		a.summary.Parts++
		switch decision(v.Decision) {
		case pass:
			a.summary.Pass++
		case fail:
			a.summary.Fail++
		default:
			a.summary.NoDecision++
		}
	}
	return nil
}

// inspect scores one frame with the station's models (or records why it could not) and
// commits the verdict. Neither is cancelled with ctx: a part that was captured is judged
// and recorded.
func (a *Agent) inspect(ctx context.Context, set *modelSet, st *store.Store, frame camera.Frame,
	frameErr error) (store.Verdict, *heatmap, time.Duration, error) {
	captured := frame.Time
	v := store.Verdict{
		Station:  a.cfg.Station,
		CameraID: frame.CameraID,
		Serial:   serialOf(frame),
		Time:     captured.UTC(),
	}
	var heat *heatmap
	if frameErr != nil {
		m := set.models[0]
		v.Decision, v.Reason = string(noDecision), "no frame: "+frameErr.Error()
		v.Threshold, v.Provider = m.threshold, m.info.Provider
		v.Model = m.record()
	} else {
		// A part captured before a stop is still judged, within its own deadline: stopping
		// the agent must not turn the last part on the belt into a NO_DECISION.
		heat = set.score(context.WithoutCancel(ctx), frame, a.cfg.Deadline, a.cfg.HTTP.Listen != "", &v)
	}

	var img *store.Image
	if frameErr == nil && a.keepImage(decision(v.Decision)) {
		data, err := camera.Encode(frame, a.cfg.Images.Format, a.cfg.Images.JPEGQuality)
		if err != nil {
			return v, nil, 0, err
		}
		img = &store.Image{Data: data, Ext: a.cfg.Images.Format}
	}
	// Stored latencies end where the commit starts; the log line adds the commit's fsync.
	v.Latency.TotalMs = ms(time.Since(captured))
	if err := st.Commit(context.WithoutCancel(ctx), &v, img); err != nil {
		return v, nil, 0, fmt.Errorf("commit verdict for %s: %w", v.Serial, err)
	}
	total := time.Since(captured)
	ev := a.log.Info()
	if v.Decision != store.Pass {
		ev = a.log.Warn()
	}
	ev = ev.Uint64("id", v.ID).Str("serial", v.Serial).Str("verdict", v.Decision)
	if v.Score != nil {
		ev = ev.Float64("score", *v.Score)
	}
	if v.Reason != "" {
		ev = ev.Str("reason", v.Reason)
	}
	ev.Float64("latency_ms", ms(total)).Msg("part committed")
	return v, heat, total, nil
}

func (a *Agent) keepImage(d decision) bool {
	switch a.cfg.Images.Keep {
	case KeepAll:
		return true
	case KeepFail:
		return d != pass
	}
	return false
}

// serialOf names the part: the image file name for a folder source, else camera and sequence.
func serialOf(f camera.Frame) string {
	if f.Serial != "" {
		return f.Serial
	}
	if ext := filepath.Ext(f.Origin); ext != "" && !slices.Contains([]rune(ext), '#') {
		return filepath.Base(f.Origin[:len(f.Origin)-len(ext)])
	}
	return fmt.Sprintf("%s-%06d", f.CameraID, f.Seq)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(math.Ceil(q*float64(len(s))))-1]
}
