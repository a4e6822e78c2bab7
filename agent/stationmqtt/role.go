package stationmqtt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/takt-edge/takt/agent/station"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

const (
	mqttBatch          = 64               // outbox messages published at once
	mqttTriggerTimeout = 30 * time.Second // a trigger command without a verdict by then gets an error
	mqttWatchInterval  = time.Second      // degraded-state checks
)

// Station is what the roles need of the running station. The roles call it from their
// own goroutines, concurrently with the inspection loop; no method may block for long.
type Station interface {
	// Trigger asks the camera for the part in place now, named serial, and returns the
	// channel its verdict arrives on once committed (closed if the station stops first)
	// and a cancel that forgets the request. Its error is answered on error.
	Trigger(serial string, at time.Time) (<-chan store.Verdict, func(), error)
	// Label sets the operator label of verdict id ("" clears it). Its error is answered
	// on error.
	Label(ctx context.Context, id uint64, label string) error
	// FillStatus fills the station's part of the online status message: model, execution
	// provider, agent version, camera state.
	FillStatus(m *wire.StatusMsg)
}

// ModelUpdates is the model updater as the roles see it (nil when updates are off).
type ModelUpdates interface {
	// OnAvailable takes a model/available announcement; it must not block.
	OnAvailable(wire.ModelAvailableMsg)
	// LastStatus is the last model update status, repeated at each connect; nil: none.
	LastStatus() *wire.ModelStatusMsg
}

// Config is the roles' part of the station's mqtt settings.
type Config struct {
	Conn           cloudsync.MQTTConfig // the broker connection
	Site, Line     string               // topic levels above the station
	Verdicts       bool                 // one message per part on verdict
	StatusInterval time.Duration        // how often the retained status is refreshed
	AlertBurst     int                  // alerts of one kind sent per AlertWindow
	AlertWindow    time.Duration
	SyncBacklogAge time.Duration // a sync_backlog alert when the oldest upload waits longer
	OutboxMax      int           // messages kept for the broker
	DrainTimeout   time.Duration // how long a stopping station keeps sending
	PublishTimeout time.Duration
	// Sparkplug, when enabled, makes the station a Sparkplug B edge node: NBIRTH,
	// DBIRTH and NDEATH replace status, DDATA replaces verdict.
	Sparkplug SparkplugConfig
}

// Deps are what the roles work with besides their configuration.
type Deps struct {
	Store   *store.Store // the verdicts to announce and the outbox
	Station Station
	// CanTrigger is false when the camera source has no trigger: cmd/trigger is refused.
	CanTrigger bool
	// Camera returns the camera state ("connected", "stalled", ...); nil: not watched.
	Camera func() string
	// SyncBacklog returns the upload backlog; nil when sync is off.
	SyncBacklog func() (wire.Backlog, error)
	// Link reports the broker connection's state ("connected", "disconnected: ...").
	Link func(state string)
	// Models is the model updater; nil when updates are off.
	Models ModelUpdates
}

// Role runs the station's MQTT roles. Create it with New, run it with Run; Raise and
// VerdictCommitted may be called from any goroutine.
type Role struct {
	cfg     Config
	station string
	topics  wire.Topics
	st      *store.Store
	deps    Deps
	log     zerolog.Logger
	conn    *cloudsync.Conn
	sp      *sparkplugNode // nil unless mqtt.sparkplug
	limiter *alertLimiter
	now     func() time.Time

	wake     chan struct{} // cap 1: the outbox has new messages
	verdicts chan struct{} // cap 1: new verdicts were committed

	corrMu   sync.Mutex
	corr     map[string]string // serial -> correlation id of a pending trigger command
	seenCorr []string          // recent correlation ids, to ignore redelivered commands
	trigSeq  atomic.Uint64

	dropped atomic.Uint64 // messages dropped because the outbox was full

	// onAcked, when set (tests only, before Run), sees the ids of the messages
	// removed from the outbox after their PUBACK.
	onAcked func(ids []string)
}

// New builds the roles of station; it does no I/O.
func New(cfg Config, station string, deps Deps, log zerolog.Logger) (*Role, error) {
	topics, err := wire.NewTopics(cfg.Site, cfg.Line, station)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	r := &Role{
		cfg: cfg, station: station, topics: topics, st: deps.Store, deps: deps,
		log:      log.With().Str("component", "mqtt").Logger(),
		limiter:  newAlertLimiter(cfg.AlertBurst, cfg.AlertWindow),
		now:      time.Now,
		wake:     make(chan struct{}, 1),
		verdicts: make(chan struct{}, 1),
		corr:     map[string]string{},
	}
	will, err := wire.Encode(&wire.StatusMsg{Schema: wire.MessageSchema, Station: station, State: wire.StateOffline, Time: time.Now().UTC()})
	if err != nil {
		return nil, err
	}
	subs := map[string]func(cloudsync.Received){
		topics.Topic(wire.TopicCmdTrigger): r.onTrigger,
		topics.Topic(wire.TopicCmdLabel):   r.onLabel,
	}
	r.modelSubscriptions(subs)
	opts := cloudsync.ConnOptions{
		Will:          &cloudsync.Will{Topic: topics.Topic(wire.TopicStatus), Payload: will, Retained: true},
		Subscriptions: subs,
		OnConnect: func(ctx context.Context) {
			if r.sp != nil {
				r.sparkplugBirth(ctx, true)
			} else {
				r.publishStatus(ctx, wire.StateOnline)
			}
			r.onConnectModel(ctx)
		},
		Logger: log,
	}
	if cfg.Sparkplug.Enabled {
		if err := cfg.Sparkplug.Validate(); err != nil {
			return nil, fmt.Errorf("mqtt: %w", err)
		}
		if r.sp, err = newSparkplugNode(cfg.Sparkplug); err != nil {
			return nil, err
		}
		opts.Will, opts.NextWill = nil, r.sp.nextWill
		subs[r.sp.topic("NCMD", "")] = r.onNodeCommand
		subs[r.sp.topic("DCMD", "+")] = r.onDeviceCommand
	}
	r.conn, err = cloudsync.NewConn(cfg.Conn, opts)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Run connects and runs the roles until ctx is done; then it sends what it
// can within mqtt.drain_timeout, publishes "offline" and disconnects.
func (r *Role) Run(ctx context.Context) error {
	if count, cursor, err := r.st.MQTTBacklog(); err != nil {
		return err
	} else if cursor == 0 {
		// First start with MQTT: announce verdicts from now on, not the history.
		if _, err := r.st.EnqueueMQTT(context.WithoutCancel(ctx), store.MQTTEnqueue{Cursor: r.st.LastID()}); err != nil {
			return err
		}
	} else if count > 0 {
		r.log.Info().Int("messages", count).Msg("mqtt outbox holds messages from before; sending them when connected")
	}
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	connDone := make(chan error, 1)
	go func() { connDone <- r.conn.Run(connCtx) }()

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	g, gctx := errgroup.WithContext(workCtx)
	g.Go(func() error { return r.enqueuer(gctx) })
	g.Go(func() error { return r.sender(gctx) })
	g.Go(func() error { r.ticker(gctx); return nil })

	select {
	case <-ctx.Done():
	case <-gctx.Done():
	}
	// Stop: last verdicts into the outbox, a short drain, goodbye.
	stopWork()
	err := g.Wait()
	r.enqueueVerdicts(context.WithoutCancel(ctx))
	r.drain()
	if r.conn.State().State == cloudsync.ConnConnected {
		pctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if r.sp != nil {
			if err := r.conn.Publish(pctx, r.sp.death()); err != nil {
				r.log.Warn().Err(err).Msg("sparkplug NDEATH not published; the broker sends the will")
			}
		} else {
			r.publishStatus(pctx, wire.StateOffline)
		}
		cancel()
	}
	stopConn()
	return errors.Join(err, <-connDone)
}

// drain sends the outbox while the broker is connected, for up to drain_timeout.
func (r *Role) drain() {
	deadline := time.Now().Add(r.cfg.DrainTimeout)
	for time.Now().Before(deadline) && r.conn.State().State == cloudsync.ConnConnected {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		n, err := r.sendBatch(ctx)
		cancel()
		if n == 0 || err != nil {
			return
		}
	}
}

// VerdictCommitted tells the enqueuer that the store has new verdicts. It
// never blocks.
func (r *Role) VerdictCommitted() {
	select {
	case r.verdicts <- struct{}{}:
	default:
	}
}

func (r *Role) wakeSender() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Raise queues an alert of kind (rate-limited per kind) and returns once it is
// durable in the outbox, or folded.
func (r *Role) Raise(ctx context.Context, kind, message string) error {
	now := r.now().UTC()
	ok, sum := r.limiter.allow(kind, now)
	var msgs []store.MQTTMessage
	if sum.n > 0 {
		m, err := r.summary(sum, now)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	if ok {
		a := wire.AlertMsg{Schema: wire.MessageSchema, ID: newAlertID(r.station), Station: r.station, Kind: kind,
			Severity: severityOf(kind), Message: message, Time: now}
		m, err := r.alertMessage(&a)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	return r.enqueue(ctx, msgs, 0)
}

func (r *Role) summary(f folded, now time.Time) (store.MQTTMessage, error) {
	since := f.since.UTC()
	a := wire.AlertMsg{Schema: wire.MessageSchema, ID: newAlertID(r.station), Station: r.station, Kind: f.kind,
		Severity: severityOf(f.kind), Time: now, Folded: f.n, Since: &since,
		Message: fmt.Sprintf("%d more %s alerts since %s were folded (rate limit %d per %s)",
			f.n, f.kind, since.Format(time.RFC3339), r.cfg.AlertBurst, r.cfg.AlertWindow)}
	return r.alertMessage(&a)
}

func (r *Role) alertMessage(a *wire.AlertMsg) (store.MQTTMessage, error) {
	data, err := wire.Encode(a)
	if err != nil {
		return store.MQTTMessage{}, err
	}
	return store.MQTTMessage{ID: a.ID, Kind: store.MQTTAlert, Topic: r.topics.Topic(wire.TopicAlert), Payload: data}, nil
}

func (r *Role) enqueue(ctx context.Context, msgs []store.MQTTMessage, cursor uint64) error {
	if len(msgs) == 0 && cursor == 0 {
		return nil
	}
	dropped, err := r.st.EnqueueMQTT(ctx, store.MQTTEnqueue{Messages: msgs, Cursor: cursor, Max: r.cfg.OutboxMax})
	if err != nil {
		return err
	}
	if dropped > 0 {
		r.dropped.Add(uint64(dropped))
		r.log.Warn().Int("dropped", dropped).Int("outbox_max", r.cfg.OutboxMax).Msg("mqtt outbox full: oldest messages dropped")
	}
	if len(msgs) > 0 {
		r.wakeSender()
	}
	return nil
}

// enqueuer turns committed verdicts into outbox messages until ctx is done.
func (r *Role) enqueuer(ctx context.Context) error {
	for {
		if n := r.enqueueVerdicts(ctx); n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.verdicts:
		}
	}
}

// enqueueVerdicts queues the messages of the verdicts after the cursor (up to
// 256) and returns how many verdicts it took.
func (r *Role) enqueueVerdicts(ctx context.Context) int {
	_, cursor, err := r.st.MQTTBacklog()
	if err != nil {
		return 0
	}
	vs, err := r.st.List(cursor, 256)
	if err != nil || len(vs) == 0 {
		if err != nil && !errors.Is(err, store.ErrClosed) {
			r.log.Warn().Err(err).Msg("mqtt: cannot read new verdicts")
		}
		return 0
	}
	var msgs []store.MQTTMessage
	now := r.now().UTC()
	for _, v := range vs {
		vid := fmt.Sprintf("%s-v%d-%d", r.station, v.ID, v.Time.UnixMilli())
		if r.sp != nil {
			// Sparkplug: every verdict is a DDATA through the outbox, whatever mqtt.verdicts says.
			if m, err := r.sp.ddata(v, vid); err != nil {
				r.log.Warn().Err(err).Uint64("id", v.ID).Msg("mqtt: verdict DDATA not encodable; skipped")
			} else {
				msgs = append(msgs, m)
			}
		} else if r.cfg.Verdicts {
			m := wire.VerdictMsg{Schema: wire.MessageSchema, MsgID: vid, ID: v.ID, Station: v.Station,
				CameraID: v.CameraID, Serial: v.Serial, Time: v.Time, Verdict: v.Decision, Reason: v.Reason, Score: v.Score,
				Threshold: v.Threshold, Model: wire.ModelRef{Name: v.Model.Name, Version: v.Model.Version, SHA256: v.Model.SHA256},
				Provider: v.Provider, LatencyMs: v.Latency.TotalMs, CorrelationID: r.takeCorrelation(v.Serial)}
			m.Class, m.Confidence = v.Class, v.Confidence
			m.Boxes = append(m.Boxes, v.Boxes...)
			if m.Station == "" {
				m.Station = r.station
			}
			data, err := wire.Encode(&m)
			if err != nil {
				r.log.Warn().Err(err).Uint64("id", v.ID).Msg("mqtt: verdict message not encodable; skipped")
			} else {
				msgs = append(msgs, store.MQTTMessage{ID: vid, Kind: store.MQTTVerdict, Topic: r.topics.Topic(wire.TopicVerdict), Payload: data})
			}
		}
		kind := ""
		switch v.Decision {
		case store.Fail:
			kind = wire.AlertFail
		case store.NoDecision:
			kind = wire.AlertNoDecision
		}
		if kind == "" {
			continue
		}
		ok, sum := r.limiter.allow(kind, now)
		if sum.n > 0 {
			if m, err := r.summary(sum, now); err == nil {
				msgs = append(msgs, m)
			}
		}
		if !ok {
			continue
		}
		text := fmt.Sprintf("part %s %s", v.Serial, v.Decision)
		switch {
		case v.Reason != "":
			text += ": " + v.Reason
		case v.Score != nil:
			text += fmt.Sprintf(" (score %.3g, threshold %.3g)", *v.Score, v.Threshold)
		}
		a := wire.AlertMsg{Schema: wire.MessageSchema, ID: vid + "-" + kind, Station: r.station, Kind: kind,
			Severity: severityOf(kind), Message: text, Time: v.Time, VerdictID: v.ID, Serial: v.Serial}
		if m, err := r.alertMessage(&a); err == nil {
			msgs = append(msgs, m)
		}
	}
	if err := r.enqueue(context.WithoutCancel(ctx), msgs, vs[len(vs)-1].ID); err != nil {
		r.log.Error().Err(err).Msg("mqtt: cannot queue verdict messages")
		return 0
	}
	return len(vs)
}

// sender publishes the outbox while connected until ctx is done.
func (r *Role) sender(ctx context.Context) error {
	retry := 100 * time.Millisecond
	for {
		if err := r.conn.WaitConnected(ctx); err != nil {
			return nil
		}
		n, err := r.sendBatch(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			r.log.Debug().Err(err).Msg("mqtt publish failed; the messages stay queued")
			select { // a lost connection changes the state; a slow broker gets time
			case <-ctx.Done():
				return nil
			case <-r.conn.Changed():
			case <-time.After(retry):
			}
			retry = min(2*retry, 5*time.Second)
			continue
		case n > 0:
			retry = 100 * time.Millisecond
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-r.conn.Changed():
		}
	}
}

// sendBatch publishes the oldest outbox messages and removes the acknowledged
// ones. It returns how many were acknowledged and the first failure.
func (r *Role) sendBatch(ctx context.Context) (int, error) {
	msgs, err := r.st.PendingMQTT(mqttBatch)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	ps := make([]cloudsync.Publication, len(msgs))
	for i, m := range msgs {
		ps[i] = cloudsync.Publication{Topic: m.Topic, Payload: m.Payload, Retained: m.Retained}
	}
	if r.sp != nil {
		// Sparkplug messages get their seq now, in publishing order, after
		// the session's births.
		r.sp.mu.Lock()
		defer r.sp.mu.Unlock()
		if !r.sp.born {
			return 0, errNotBorn
		}
		for i := range ps {
			if isSparkplug(ps[i].Topic) {
				data, err := r.sp.stamp(ps[i].Payload)
				if err != nil {
					return 0, fmt.Errorf("sparkplug outbox message %s: %w", msgs[i].ID, err)
				}
				ps[i].Payload = data
			}
		}
	}
	errs := r.conn.PublishAll(ctx, ps)
	var acked []uint64
	var first error
	for i, err := range errs {
		if err == nil {
			acked = append(acked, msgs[i].Seq)
		} else if first == nil {
			first = err
		}
	}
	if err := r.st.AckMQTT(acked); err != nil {
		return 0, err
	}
	if r.onAcked != nil {
		var ids []string
		for i, err := range errs {
			if err == nil {
				ids = append(ids, msgs[i].ID)
			}
		}
		r.onAcked(ids)
	}
	return len(acked), first
}

// ticker refreshes the status, sends rate-limit summaries and watches the
// station for degraded states until ctx is done.
func (r *Role) ticker(ctx context.Context) {
	tick := time.NewTicker(min(mqttWatchInterval, r.cfg.AlertWindow))
	defer tick.Stop()
	lastStatus := time.Now()
	lastCam, lastState := "", ""
	var syncAlerted, dropAlerted bool
	var dropped uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := r.now().UTC()
		st := r.conn.State()
		state := st.State
		if st.Err != nil {
			state += ": " + st.Err.Error()
		}
		if state != lastState && r.deps.Link != nil {
			r.deps.Link(state)
		}
		lastState = state
		var msgs []store.MQTTMessage
		for _, f := range r.limiter.flush(now) {
			if m, err := r.summary(f, now); err == nil {
				msgs = append(msgs, m)
			}
		}
		if err := r.enqueue(ctx, msgs, 0); err != nil && ctx.Err() == nil {
			r.log.Error().Err(err).Msg("mqtt: cannot queue alert summaries")
		}
		if r.deps.Camera != nil {
			cam := r.deps.Camera()
			if cam != lastCam && lastCam != "" && (cam == "stalled" || cam == "reconnecting") {
				r.raiseLogged(ctx, wire.AlertCameraStalled, "camera is "+cam)
			}
			lastCam = cam
		}
		if r.deps.SyncBacklog != nil {
			if b, err := r.deps.SyncBacklog(); err == nil {
				old := b.Age(time.Now()) > r.cfg.SyncBacklogAge
				if old && !syncAlerted {
					r.raiseLogged(ctx, wire.AlertSyncBacklog, fmt.Sprintf("%d verdicts wait for upload; the oldest for %s (limit %s)",
						b.Count, b.Age(time.Now()).Round(time.Second), r.cfg.SyncBacklogAge))
				}
				syncAlerted = old
			}
		}
		if d := r.dropped.Load(); d > dropped {
			if !dropAlerted {
				r.raiseLogged(ctx, wire.AlertDiskQuota, fmt.Sprintf("mqtt outbox full (%d messages): %d oldest messages dropped", r.cfg.OutboxMax, d-dropped))
			}
			dropped, dropAlerted = d, true
		} else {
			dropAlerted = false
		}
		if time.Since(lastStatus) >= r.cfg.StatusInterval && st.State == cloudsync.ConnConnected {
			if r.sp != nil {
				r.publishNodeData(ctx)
			} else {
				r.publishStatus(ctx, wire.StateOnline)
			}
			lastStatus = time.Now()
		}
	}
}

func (r *Role) raiseLogged(ctx context.Context, kind, msg string) {
	if err := r.Raise(ctx, kind, msg); err != nil && ctx.Err() == nil {
		r.log.Error().Err(err).Str("kind", kind).Msg("mqtt: cannot queue alert")
	}
}

// publishStatus publishes the retained status (not through the outbox: only
// the latest matters).
func (r *Role) publishStatus(ctx context.Context, state string) {
	m := wire.StatusMsg{Schema: wire.MessageSchema, Station: r.station, State: state, Time: r.now().UTC()}
	if state == wire.StateOnline {
		r.deps.Station.FillStatus(&m)
		m.OutboxBacklog, _, _ = r.st.MQTTBacklog()
		if r.deps.SyncBacklog != nil {
			if b, err := r.deps.SyncBacklog(); err == nil {
				m.SyncBacklog = b.Count
			}
		}
	}
	data, err := wire.Encode(&m)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		err = r.conn.Publish(pctx, cloudsync.Publication{Topic: r.topics.Topic(wire.TopicStatus), Payload: data, Retained: true})
		cancel()
	}
	if err != nil && ctx.Err() == nil {
		r.log.Warn().Err(err).Str("state", state).Msg("mqtt status not published")
	}
}

// onTrigger handles cmd/trigger: the camera takes a part, whose verdict message
// carries the command's correlation_id.
func (r *Role) onTrigger(msg cloudsync.Received) {
	cmd, err := wire.DecodeTriggerCmd(msg.Payload)
	if err != nil {
		r.reject(msg, "", err)
		return
	}
	if !r.deps.CanTrigger {
		r.reject(msg, cmd.CorrelationID, fmt.Errorf("%w: this station cannot be triggered", station.ErrNoTrigger))
		return
	}
	if cmd.CorrelationID != "" && r.seen(cmd.CorrelationID) {
		r.log.Info().Str("correlation_id", cmd.CorrelationID).Msg("mqtt trigger command seen before; ignored")
		return
	}
	serial := cmd.Serial
	if serial == "" {
		serial = fmt.Sprintf("M%06d", r.trigSeq.Add(1))
	}
	if cmd.CorrelationID != "" {
		r.corrMu.Lock()
		r.corr[serial] = cmd.CorrelationID
		r.corrMu.Unlock()
	}
	ch, cancel, err := r.deps.Station.Trigger(serial, r.now())
	if err != nil {
		r.takeCorrelation(serial)
		r.reject(msg, cmd.CorrelationID, err)
		return
	}
	r.log.Info().Str("serial", serial).Str("correlation_id", cmd.CorrelationID).Msg("mqtt trigger")
	go func() {
		t := time.NewTimer(mqttTriggerTimeout)
		defer t.Stop()
		select {
		case _, ok := <-ch:
			if ok {
				return
			}
		case <-t.C:
			cancel()
		}
		r.takeCorrelation(serial)
		r.reject(msg, cmd.CorrelationID, fmt.Errorf("no verdict for part %s within %s", serial, mqttTriggerTimeout))
	}()
}

// onLabel handles cmd/label.
func (r *Role) onLabel(msg cloudsync.Received) {
	cmd, err := wire.DecodeLabelCmd(msg.Payload)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = r.deps.Station.Label(ctx, cmd.VerdictID, cmd.Label)
		cancel()
	}
	if err != nil {
		r.reject(msg, cmd.CorrelationID, err)
		return
	}
	r.log.Info().Uint64("id", cmd.VerdictID).Str("label", cmd.Label).Msg("mqtt label")
}

// reject logs why a command was refused and answers on error.
func (r *Role) reject(msg cloudsync.Received, corr string, why error) {
	r.log.Warn().Str("topic", msg.Topic).Str("correlation_id", corr).Err(why).Msg("mqtt command rejected")
	payload := msg.Payload
	if len(payload) > 256 {
		payload = payload[:256]
	}
	m := wire.ErrorMsg{Schema: wire.MessageSchema, Station: r.station, Time: r.now().UTC(), Topic: msg.Topic,
		CorrelationID: corr, Error: why.Error(), Payload: strings.ToValidUTF8(string(payload), string(utf8.RuneError))}
	data, err := wire.Encode(&m)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.PublishTimeout)
		err = r.conn.Publish(ctx, cloudsync.Publication{Topic: r.topics.Topic(wire.TopicError), Payload: data})
		cancel()
	}
	if err != nil {
		r.log.Warn().Err(err).Msg("mqtt error reply not published")
	}
}

// takeCorrelation returns and forgets the correlation id waiting for serial.
func (r *Role) takeCorrelation(serial string) string {
	r.corrMu.Lock()
	defer r.corrMu.Unlock()
	c, ok := r.corr[serial]
	if ok {
		delete(r.corr, serial)
	}
	return c
}

// seen records a correlation id and reports whether it was among the last 256.
func (r *Role) seen(corr string) bool {
	r.corrMu.Lock()
	defer r.corrMu.Unlock()
	for _, c := range r.seenCorr {
		if c == corr {
			return true
		}
	}
	r.seenCorr = append(r.seenCorr, corr)
	if len(r.seenCorr) > 256 {
		r.seenCorr = r.seenCorr[1:]
	}
	return false
}
