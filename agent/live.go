package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/plc"
	"github.com/takt-edge/takt/agent/station"
	"github.com/takt-edge/takt/agent/stationmqtt"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/agent/web"
	"github.com/takt-edge/takt/agent/yield"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// Operator labels a verdict can get (Agent.Label, POST /verdicts/{id}/label, MQTT cmd/label).
const (
	// LabelFalseReject: the part was FAILed (or got NO_DECISION) but is good.
	LabelFalseReject = station.LabelFalseReject
	// LabelFalseAccept: the part PASSed but is defective.
	LabelFalseAccept = station.LabelFalseAccept
)

// Errors of the station's live operations (Label, Trigger); see package station.
var (
	// ErrNotRunning: the agent is not inside Run (or is shutting down).
	ErrNotRunning = station.ErrNotRunning
	// ErrBadLabel: the label is not one of the known labels or does not fit the verdict.
	ErrBadLabel = station.ErrBadLabel
	// ErrNoTrigger: the camera cannot be triggered (not in triggered mode, too many
	// triggers waiting, closed).
	ErrNoTrigger = station.ErrNoTrigger
)

// hooks is the part of Agent that the services (HTTP, PLC, systemd) reach through while
// Run is inside its loop.
type hooks struct {
	live atomic.Pointer[live]
	// onCommit, when set (tests only, before Run), sees every committed part with its frame.
	onCommit func(v store.Verdict, f camera.Frame)
}

// live is what the services see of a running agent. It is created by Run after the model,
// store and camera are open, and torn down before they close.
type live struct {
	a       *Agent
	log     zerolog.Logger
	cfg     Config
	models  *activeModels
	st      *store.Store
	cams    []*camera.Camera
	trig    func(camera.Trigger) error // nil when the source cannot be triggered
	started time.Time

	m      *metrics
	recent *web.Recent
	yield  *yield.Book
	alerts *web.AlertLog

	busySince  atomic.Int64 // unix nanos when the loop took a frame; 0 while it waits for one
	lastCommit atomic.Int64 // unix nanos of the last commit
	loopDone   atomic.Bool

	trigMu  sync.Mutex
	trigSeq uint64
	waiters []*waiter
	lastCam camera.State
	links   sync.Map // link name -> state string (mqtt, s3)

	http    *web.Server       // nil when http.listen is empty
	plc     *plc.Handshake    // nil when plc.mode is off
	mqtt    *stationmqtt.Role // nil when mqtt.broker is empty
	alertq  chan alertReq     // alerts raised where the caller must not block (store, PLC)
	stopped chan struct{}     // closed by stop

	observers []partObserver // of committed parts, registered while wiring; the loop calls them

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type waiter struct {
	serial string
	ch     chan store.Verdict // cap 1
}

// startServices makes the live view of this Run and starts the configured servers. The
// servers bind here, so a bad address fails Run at once. stop must be called before the
// store, model and camera close.
func (a *Agent) startServices(ctx context.Context, active *activeModels, st *store.Store, src cameraControl) (*live, error) {
	l := &live{
		a: a, log: a.log, cfg: a.cfg, models: active, st: st,
		started: time.Now(), stopped: make(chan struct{}),
		cams: src.Cameras(), trig: src.Trigger,
	}
	l.m = newMetrics(l)
	l.recent = web.NewRecent(a.cfg.HTTP.Recent)
	shifts, _ := parseShifts(a.cfg.HTTP.Shifts) // validated
	l.yield = yield.NewBook(shifts)
	l.alerts = web.NewAlertLog(20)
	l.seedYield()
	l.observeParts()
	l.links.Store("mqtt", "not configured")
	l.links.Store("s3", "not configured")
	if a.cfg.Sync.Enabled() {
		l.links.Store("s3", "configured")
	}
	sctx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	var starters []func(context.Context) (func(context.Context) error, error)
	if a.cfg.HTTP.Listen != "" {
		starters = append(starters, l.startHTTP)
	}
	if a.cfg.PLC.Mode != PLCOff {
		starters = append(starters, l.startPLC)
	}
	if a.cfg.MQTT.Enabled() {
		starters = append(starters, l.startMQTT)
	}
	starters = append(starters, l.startRenderer, l.startSystemd, l.startAlerts)
	for _, start := range starters {
		run, err := start(sctx)
		if err != nil {
			cancel()
			l.wg.Wait()
			return nil, err
		}
		if run == nil {
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// A service that fails stops serving; the inspection goes on (and /readyz or the
			// PLC's heartbeat tell).
			if err := run(sctx); err != nil && sctx.Err() == nil {
				l.log.Error().Err(err).Msg("service stopped")
			}
		}()
	}
	l.observeRecent()
	if u := a.ota; u != nil {
		l.observe(func(v store.Verdict, f camera.Frame, _ time.Duration, _ *heatmap) { u.Observe(f, &v) })
	}
	a.live.Store(l)
	for _, m := range active.snapshot() {
		if m.info.Degraded {
			l.alertAsync(wire.AlertProviderFallback, fmt.Sprintf("model %s runs on %s, not the first provider of its providers: %s",
				m.name, m.info.Provider, m.info.Fallback))
		}
	}
	return l, nil
}

// stop stops the servers and waits for them; Label and Trigger fail with ErrNotRunning
// from now on.
func (l *live) stop() {
	l.loopDone.Store(true)
	l.a.live.Store(nil)
	close(l.stopped)
	l.cancel()
	l.wg.Wait()
	l.trigMu.Lock()
	for _, w := range l.waiters {
		close(w.ch)
	}
	l.waiters = nil
	l.trigMu.Unlock()
}

func (l *live) done() <-chan struct{} { return l.stopped }

// begin is called by the loop when it has a frame and starts inspecting it.
func (l *live) begin() { l.busySince.Store(time.Now().UnixNano()) }

// partObserver sees each committed part: its verdict, its frame, the capture-to-commit
// time and the deciding model's anomaly map (nil when none). Observers run on the
// inspection loop, between parts, in the order they were registered: they must not block,
// and must not keep the frame's pixels past the call (the loop recycles the buffer).
type partObserver func(v store.Verdict, f camera.Frame, total time.Duration, heat *heatmap)

// observe registers o for every committed part. Call it only while the services are wired
// (startServices), before the loop runs.
func (l *live) observe(o partObserver) { l.observers = append(l.observers, o) }

// observeParts registers the station's own observers of committed parts: metrics, yield,
// the page's alert log, trigger waiters and the recent parts of the live view. The MQTT
// roles and the model updater register theirs when they are wired.
func (l *live) observeParts() {
	l.observe(func(v store.Verdict, _ camera.Frame, total time.Duration, _ *heatmap) { l.m.observe(v, total) })
	l.observe(func(v store.Verdict, _ camera.Frame, _ time.Duration, _ *heatmap) {
		l.yield.Add(v.Time, v.Decision)
		if v.Decision == store.NoDecision {
			l.alerts.Add("no_decision", fmt.Sprintf("part %s: %s", v.Serial, v.Reason)) // MQTT raises its own per verdict
		}
	})
	if h := l.a.onCommit; h != nil {
		l.observe(func(v store.Verdict, f camera.Frame, _ time.Duration, _ *heatmap) { h(v, f) })
	}
	l.observe(func(v store.Verdict, _ camera.Frame, _ time.Duration, _ *heatmap) { l.deliver(v) })
}

// observeRecent registers the live view's recent parts, last: the frame is copied for the
// renderer only when the page is served.
func (l *live) observeRecent() {
	l.observe(func(v store.Verdict, f camera.Frame, _ time.Duration, heat *heatmap) {
		if heat == nil {
			heat = &heatmap{}
		}
		if f.Pix != nil && l.cfg.HTTP.Listen != "" {
			f.Pix = append([]byte(nil), f.Pix...) // the loop recycles the frame's buffer after this call
		} else {
			f.Pix = nil
		}
		l.recent.Add(v, f, heat.values, heat.width, heat.height)
	})
}

// committed is called by the loop after each commit; it hands the part to every observer.
// It must not block: the loop calls it between parts.
func (l *live) committed(v store.Verdict, f camera.Frame, total time.Duration, heat *heatmap) {
	l.busySince.Store(0)
	l.lastCommit.Store(time.Now().UnixNano())
	for _, o := range l.observers {
		o(v, f, total, heat)
	}
}

// healthy reports whether the loop is not wedged: no part has been in inspection for
// longer than wedgeAfter.
func (l *live) healthy() (bool, string) {
	if since := l.busySince.Load(); since != 0 {
		if d := time.Since(time.Unix(0, since)); d > l.wedgeAfter() {
			return false, fmt.Sprintf("inspection loop stuck on one part for %s (limit %s)", d.Round(time.Millisecond), l.wedgeAfter())
		}
	}
	if l.loopDone.Load() {
		return false, "inspection loop stopped"
	}
	return true, "ok"
}

// wedgeAfter is how long one part may take before the loop counts as wedged.
func (l *live) wedgeAfter() time.Duration { return max(10*l.cfg.Deadline, 10*time.Second) }

// readiness checks that the model is loaded, the store answers and the camera produces.
func (l *live) readiness() (bool, []web.Check) {
	var notes []string
	for _, m := range l.models.snapshot() {
		notes = append(notes, m.info.Model.Name+" "+m.info.Model.Version+" on "+m.provider())
	}
	cs := []web.Check{{Name: "model", OK: len(notes) > 0, Note: strings.Join(notes, ", ")}}
	if _, err := l.st.Counts(); err != nil {
		cs = append(cs, web.Check{Name: "store", Note: err.Error()})
	} else {
		cs = append(cs, web.Check{Name: "store", OK: true, Note: l.cfg.DataDir})
	}
	state := l.cameraState()
	cs = append(cs, web.Check{Name: "camera", OK: state == string(camera.StateConnected), Note: state})
	ok, why := l.healthy()
	cs = append(cs, web.Check{Name: "loop", OK: ok, Note: why})
	all := true
	for _, c := range cs {
		all = all && c.OK
	}
	return all, cs
}

// cameraState is the camera's state, or for several cameras "connected" when all are and
// else each camera's state.
func (l *live) cameraState() string {
	if len(l.cams) == 0 {
		return "unknown"
	}
	if len(l.cams) == 1 {
		return string(l.cams[0].State())
	}
	var parts []string
	all := true
	for _, c := range l.cams {
		st := c.State()
		all = all && st == camera.StateConnected
		parts = append(parts, c.ID()+" "+string(st))
	}
	if all {
		return string(camera.StateConnected)
	}
	return strings.Join(parts, ", ")
}

// Label sets the operator label of verdict id: LabelFalseReject (for a FAIL or
// NO_DECISION verdict), LabelFalseAccept (for a PASS), or "" to clear it. It is the one path
// for the operator page, the HTTP API and MQTT cmd/label. Errors: ErrNotRunning,
// ErrBadLabel, or the store's (store.ErrNotFound for an unknown id).
func (a *Agent) Label(ctx context.Context, id uint64, label string) error {
	l := a.live.Load()
	if l == nil {
		return ErrNotRunning
	}
	return l.Label(ctx, id, label)
}

func (l *live) Label(ctx context.Context, id uint64, label string) error {
	v, err := l.st.Get(id)
	if err != nil {
		return err
	}
	switch label {
	case "":
	case LabelFalseReject:
		if v.Decision == store.Pass {
			return fmt.Errorf("%w: %s is for FAIL and NO_DECISION parts; verdict %d is PASS", ErrBadLabel, label, id)
		}
	case LabelFalseAccept:
		if v.Decision != store.Pass {
			return fmt.Errorf("%w: %s is for PASS parts; verdict %d is %s", ErrBadLabel, label, id, v.Decision)
		}
	default:
		return fmt.Errorf("%w: %q is not one of %s, %s or empty", ErrBadLabel, label, LabelFalseReject, LabelFalseAccept)
	}
	if err := l.st.SetLabel(ctx, id, label); err != nil {
		return err
	}
	l.models.countLabel(&v, v.Label, label)
	l.m.labels.WithLabelValues(labelName(label)).Inc()
	l.recent.SetLabel(id, label)
	l.log.Info().Uint64("id", id).Str("serial", v.Serial).Str("label", label).Msg("verdict labelled")
	return nil
}

func labelName(l string) string {
	if l == "" {
		return "cleared"
	}
	return l
}

// Trigger asks the camera for the part in place now and waits until its verdict is
// committed or ctx is done. An empty serial gets one made up ("T000001"...). Errors:
// ErrNotRunning, ErrNoTrigger (wrapping the camera's reason) or ctx's error.
func (a *Agent) Trigger(ctx context.Context, serial string) (store.Verdict, error) {
	l := a.live.Load()
	if l == nil {
		return store.Verdict{}, ErrNotRunning
	}
	ch, cancel, err := l.Trigger(serial, time.Now())
	if err != nil {
		return store.Verdict{}, err
	}
	select {
	case v, ok := <-ch:
		if !ok {
			return store.Verdict{}, ErrNotRunning
		}
		return v, nil
	case <-ctx.Done():
		cancel()
		return store.Verdict{}, ctx.Err()
	}
}

// trigger queues a camera trigger and returns the channel its verdict arrives on (closed
// if the agent stops first) and a cancel that forgets the waiter.
func (l *live) Trigger(serial string, at time.Time) (<-chan store.Verdict, func(), error) {
	if l.trig == nil {
		return nil, nil, fmt.Errorf("%w: the camera source has no trigger", ErrNoTrigger)
	}
	if l.loopDone.Load() {
		return nil, nil, ErrNotRunning
	}
	l.trigMu.Lock()
	if serial == "" {
		l.trigSeq++
		serial = fmt.Sprintf("T%06d", l.trigSeq)
	}
	w := &waiter{serial: serial, ch: make(chan store.Verdict, 1)}
	l.waiters = append(l.waiters, w)
	l.trigMu.Unlock()
	if err := l.trig(camera.Trigger{Serial: serial, Time: at}); err != nil {
		l.forget(w)
		if errors.Is(err, camera.ErrNotTriggered) {
			return nil, nil, fmt.Errorf("%w: %v; set camera.mode: triggered", ErrNoTrigger, err)
		}
		return nil, nil, fmt.Errorf("%w: %v", ErrNoTrigger, err)
	}
	l.m.triggers.Inc()
	return w.ch, func() { l.forget(w) }, nil
}

func (l *live) forget(w *waiter) {
	l.trigMu.Lock()
	defer l.trigMu.Unlock()
	for i, x := range l.waiters {
		if x == w {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return
		}
	}
}

// deliver hands a committed verdict to the first trigger waiting for its serial.
func (l *live) deliver(v store.Verdict) {
	l.trigMu.Lock()
	defer l.trigMu.Unlock()
	for i, w := range l.waiters {
		if w.serial == v.Serial {
			w.ch <- v
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return
		}
	}
}

// primary is the station's first model: the one status and metrics name when a single
// model is asked for.
func (l *live) primary() *stationModel { return l.models.snapshot()[0] }

// provider is the execution provider serving the first model now: it changes when a
// TensorRT engine that was built in the background takes over from the fallback.
func (l *live) provider() string { return l.primary().provider() }

// setLink records the state of an outside link ("mqtt", "s3") for the page and metrics.
func (l *live) setLink(name, state string) { l.links.Store(name, state) }

func (l *live) link(name string) string {
	if up := l.a.uploader.Load(); name == "s3" && up != nil {
		st := up.Status()
		if st.LastError != "" && st.State == cloudsync.StateBackoff {
			return st.State + ": " + st.LastError
		}
		return fmt.Sprintf("%s, backlog %d", st.State, st.Backlog.Count)
	}
	v, _ := l.links.Load(name)
	s, _ := v.(string)
	return s
}

// seedYield fills the yield book from the verdicts of the last day in the store, so a
// restart does not reset the shift's yield.
func (l *live) seedYield() {
	c, err := l.st.Counts()
	if err != nil || c.Total == 0 {
		return
	}
	const maxSeed = 50000
	after := uint64(0)
	if c.Total > maxSeed {
		after = c.Total - maxSeed
	}
	cutoff := time.Now().Add(-25 * time.Hour)
	for {
		vs, err := l.st.List(after, 1000)
		if err != nil || len(vs) == 0 {
			return
		}
		for _, v := range vs {
			if v.Time.After(cutoff) {
				l.yield.Add(v.Time, v.Decision)
			}
			after = v.ID
		}
	}
}

// dbBytes is the size of the bbolt file.
func (l *live) dbBytes() int64 {
	fi, err := os.Stat(filepath.Join(l.cfg.DataDir, "takt.db"))
	if err != nil {
		return 0
	}
	return fi.Size()
}
