package firmware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models/bundle"
)

// DefaultWatchBudget caps one release download (the agent binary and its config).
const DefaultWatchBudget = 512 << 20

// WatchConfig says where a station hears of agent releases and where it fetches them.
type WatchConfig struct {
	// Topics are the station's topics: firmware/available is read on the station's topic and
	// on the line's (takt/v1/{site}/{line}/firmware/available); firmware/status is written
	// on the station's.
	Topics wire.Topics
	// MQTT is the broker the station's agent uses.
	MQTT cloudsync.MQTTConfig
	// Sync is the object store releases are fetched from (firmware/{version}/release.tar).
	Sync cloudsync.Config
	// MaxBytes caps one download; 0 is DefaultWatchBudget.
	MaxBytes int64
	Logger   zerolog.Logger
}

// Watcher installs the agent releases announced on firmware/available: it downloads each
// (resuming after cuts), hands it to the Updater (verify, A/B install, health-gated commit,
// rollback) and reports every step on firmware/status, retained. It runs beside the agent
// (takt firmware watch), not in it, because the update restarts the agent.
type Watcher struct {
	cfg   WatchConfig
	u     *Updater
	fetch *cloudsync.Fetcher
	conn  *cloudsync.Conn
	log   zerolog.Logger

	mu      sync.Mutex
	next    *wire.FirmwareAvailableMsg // the latest announcement not yet handled
	wake    chan struct{}
	last    *wire.FirmwareStatusMsg // published again on every reconnect
	current string                  // the announcement being installed, for status
}

// handled is what the watcher remembers across restarts: the announcements it already
// acted on (the last handledKept), so a retained message is not installed again after a
// rollback or a refusal.
type handled struct {
	Key    string `json:"key"`
	SHA256 string `json:"sha256"`
	Result string `json:"result"`
}

const handledKept = 32

// NewWatcher validates cfg and returns a Watcher that installs with an Updater built from
// updaterCfg, keys and sup; it does no I/O.
func NewWatcher(cfg WatchConfig, newUpdater func(Reporter) (*Updater, error)) (*Watcher, error) {
	if _, err := wire.NewTopics(cfg.Topics.Site, cfg.Topics.Line, cfg.Topics.Station); err != nil {
		return nil, fmt.Errorf("firmware watch: %w", err)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultWatchBudget
	}
	w := &Watcher{cfg: cfg, wake: make(chan struct{}, 1), log: cfg.Logger.With().Str("component", "firmware").Logger()}
	u, err := newUpdater(ReporterFunc(w.report))
	if err != nil {
		return nil, err
	}
	w.u = u
	if w.fetch, err = cloudsync.NewFetcher(cfg.Sync); err != nil {
		return nil, fmt.Errorf("firmware watch: %w", err)
	}
	line := cfg.Topics.LineTopic(wire.TopicFirmwareAvailable)
	w.conn, err = cloudsync.NewConn(cfg.MQTT, cloudsync.ConnOptions{
		Subscriptions: map[string]func(cloudsync.Received){
			cfg.Topics.Topic(wire.TopicFirmwareAvailable): w.announced,
			line: w.announced,
		},
		OnConnect: w.republish,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("firmware watch: %w", err)
	}
	return w, nil
}

func (w *Watcher) handledPath() string { return filepath.Join(w.u.cfg.Root, "watch.json") }
func (w *Watcher) staging() string     { return filepath.Join(w.u.cfg.Root, "staging") }

// announced takes a firmware/available message; a malformed one is logged and dropped.
func (w *Watcher) announced(m cloudsync.Received) {
	var msg wire.FirmwareAvailableMsg
	if err := wire.Decode(m.Payload, &msg); err != nil {
		w.log.Warn().Err(err).Str("topic", m.Topic).Msg("firmware/available: malformed message dropped")
		return
	}
	w.mu.Lock()
	w.next = &msg
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run finishes an update a crash interrupted, then installs announced releases one at a
// time until ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	if err := os.MkdirAll(w.staging(), 0o755); err != nil {
		return fmt.Errorf("firmware watch: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	connDone := make(chan error, 1)
	go func() { connDone <- w.conn.Run(ctx) }()
	connRunning := true
	defer func() {
		cancel()
		if connRunning {
			<-connDone
		}
	}()
	if err := w.u.Recover(ctx); err != nil {
		w.log.Error().Err(err).Msg("recover interrupted update")
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-connDone:
			connRunning = false
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("firmware watch: mqtt: %w", err)
		case <-w.wake:
		}
		w.mu.Lock()
		msg := w.next
		w.next = nil
		w.mu.Unlock()
		if msg != nil {
			w.install(ctx, msg)
		}
	}
}

// install downloads and installs one announced release, unless it was handled before or is
// the committed version.
func (w *Watcher) install(ctx context.Context, msg *wire.FirmwareAvailableMsg) {
	for _, h := range w.readHandled() {
		if h.Key == msg.Key && h.SHA256 == msg.SHA256 {
			return // a retained announcement heard again after a restart or reconnect
		}
	}
	if st, err := ReadState(w.u.cfg.Root); err == nil && st.Version == msg.Version && st.Phase == PhaseIdle {
		w.remember(msg, StepCommitted)
		return
	}
	w.mu.Lock()
	w.current = msg.Version
	w.mu.Unlock()
	w.publish(wire.FirmwareDownloading, msg.Version, "")
	path := filepath.Join(w.staging(), "release-"+msg.SHA256[:16]+".tar")
	err := w.fetch.Fetch(ctx, cloudsync.FetchRequest{Key: msg.Key, Path: path, Size: msg.Size, SHA256: msg.SHA256, MaxBytes: w.cfg.MaxBytes}, nil)
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down; the partial download resumes next time
		}
		w.publish(wire.FirmwareRejected, msg.Version, "download: "+err.Error())
		w.remember(msg, "download failed")
		return
	}
	err = w.u.Install(ctx, path)
	os.Remove(path)
	result := StepCommitted
	switch {
	case errors.Is(err, ErrRolledBack):
		result = StepRolledBack
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return // stopped mid-update: Recover finishes it on the next start
	case err != nil:
		result = StepFailed
	}
	w.remember(msg, result)
}

// report turns the updater's steps into firmware/status messages.
func (w *Watcher) report(s Status) {
	LogReporter{Log: w.log}.Report(s)
	w.mu.Lock()
	version := w.current
	w.mu.Unlock()
	if s.Version != "" {
		version = s.Version
	}
	errText := s.Err
	if s.Config != "" { // what happened to the station config: migrated, restored, edits kept aside
		errText = strings.TrimPrefix(errText+"; "+s.Config, "; ")
	}
	switch s.Step {
	case StepCommitted:
		w.publish(wire.FirmwareCommitted, version, "")
	case StepRolledBack:
		w.publish(wire.FirmwareRolledBack, version, errText)
	case StepFailed:
		w.publish(wire.FirmwareRejected, version, s.Err)
	case StepUnhealthy, StepRollingBack, StepRecovering, StepAbandoned:
		w.publish(wire.FirmwareInstalling, version, s.Step+": "+errText)
	case StepConfigChecked:
		w.publish(wire.FirmwareInstalling, version, s.Step+": "+s.Config)
	default:
		w.publish(wire.FirmwareInstalling, version, s.Step)
	}
}

// publish sends a retained firmware/status; when the broker is away, the last status
// goes out on the next connection.
func (w *Watcher) publish(state, version, reason string) {
	msg := &wire.FirmwareStatusMsg{Schema: wire.MessageSchema, Station: w.cfg.Topics.Station,
		Version: version, State: state, Reason: reason, Time: time.Now().UTC()}
	w.mu.Lock()
	w.last = msg
	w.mu.Unlock()
	w.send(context.Background(), msg)
}

func (w *Watcher) republish(ctx context.Context) {
	w.mu.Lock()
	msg := w.last
	w.mu.Unlock()
	if msg != nil {
		w.send(ctx, msg)
	}
}

func (w *Watcher) send(ctx context.Context, msg *wire.FirmwareStatusMsg) {
	data, err := json.Marshal(msg)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.conn.Publish(ctx, cloudsync.Publication{Topic: w.cfg.Topics.Topic(wire.TopicFirmwareStatus), Payload: data, Retained: true}); err != nil {
		w.log.Debug().Err(err).Str("state", msg.State).Msg("firmware/status not sent now; sent on reconnect")
	}
}

func (w *Watcher) readHandled() []handled {
	var hs []handled
	if data, err := os.ReadFile(w.handledPath()); err == nil {
		if err := json.Unmarshal(data, &hs); err != nil {
			w.log.Warn().Err(err).Str("file", w.handledPath()).Msg("unreadable; announcements may be handled again")
		}
	}
	return hs
}

func (w *Watcher) remember(msg *wire.FirmwareAvailableMsg, result string) {
	hs := append(w.readHandled(), handled{Key: msg.Key, SHA256: msg.SHA256, Result: result})
	if len(hs) > handledKept {
		hs = hs[len(hs)-handledKept:]
	}
	data, _ := json.Marshal(hs)
	if err := bundle.WriteFileAtomic(w.handledPath(), data); err != nil {
		w.log.Error().Err(err).Msg("remember handled release")
	}
}
