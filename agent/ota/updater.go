package ota

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
)

// Slot is what the updater needs of the station's inference path. Both methods are safe to
// call while the inspection loop runs and never block on it.
type Slot interface {
	// Serving lists the station models serving now, in config order.
	Serving() []Served
	// SwapIn makes rt (deciding with threshold) the model named name from the next frame
	// on; the runtime it replaces closes once no inference uses it. op is the operating
	// point its bundle records (nil when unknown). On an error rt is closed.
	SwapIn(name, source string, rt *models.Runtime, threshold float64, op *wire.OperatingPoint) error
}

// InstallRequest is one bundle to install: an object key in the bucket or a local file.
type InstallRequest struct {
	Name, Version string
	Key           string // object key (model/available, or POST /model/install {"key"})
	File          string // local bundle file (POST /model/install {"file"})
	SHA256        string // announced sha256 of the bundle tar; "" when unknown
	Size          int64
	Rollback      bool
	From          string // mqtt, http, resume: for the log
}

func (r InstallRequest) id() string {
	if r.SHA256 != "" {
		return r.SHA256
	}
	return r.Name + "@" + r.Version + "@" + r.Key + r.File
}

// errRejected is a refusal of the candidate, with the reason model/status reports and the
// figures it was refused on (nil when it measured nothing).
type errRejected struct {
	reason string
	fig    *wire.ModelFigures
}

func (e *errRejected) Error() string { return e.reason }

func rejectf(format string, args ...any) error {
	return &errRejected{reason: fmt.Sprintf(format, args...)}
}

// rejectFig is rejectf with the figures the refusal rests on.
func rejectFig(fig *wire.ModelFigures, format string, args ...any) error {
	return &errRejected{reason: fmt.Sprintf(format, args...), fig: fig}
}

// Served is one station model serving now, as the updater sees it.
type Served struct {
	Name    string // the station model's name (models[].name or model.name)
	Version string // the version of the model serving under that name
}

// Configured is one model as the station's configuration names it: what a rollback falls
// back to when no installed bundle loads.
type Configured struct {
	Name      string
	Source    string // the configured bundle or model path
	Threshold float64
	Providers models.ProviderOptions
}

// Config is what the updater needs of the station's configuration (model_update and the
// configured models); the agent fills it.
type Config struct {
	Dir          string // <data_dir>/models
	Station      string
	Deadline     time.Duration
	AgentVersion string       // a bundle's minimum agent version is checked against it
	Models       []Configured // the configured models in config order
	Named        bool         // models: list (names from the config)
	Policy       bundle.TrustPolicy
	// Fetcher downloads object keys; nil without an object store, when only local bundle
	// files install.
	Fetcher       *cloudsync.Fetcher
	StagingBudget int64
	Validate      ValidatePolicy
	Shadow        ShadowPolicy
	Watch         WatchPolicy
	// LoadConfigured loads configured model i (bundle or path), the last resort of a
	// rollback, with the operating point its bundle records (nil for a plain model).
	LoadConfigured func(ctx context.Context, i int) (*models.Runtime, *wire.OperatingPoint, error)
}

// ValidatePolicy: see the agent's model_update.validate.
type ValidatePolicy struct {
	LatencyRuns     int
	LatencyFraction float64
}

// ShadowPolicy: see the agent's model_update.shadow.
type ShadowPolicy struct {
	Parts                   int
	Duration                time.Duration
	MinParts                int
	MinAgreement            float64
	MaxLatencyRatio         float64
	Queue                   int
	MaxBusy                 float64
	FalseRejectSignificance float64
	FalseRejectMinParts     int
}

// WatchPolicy: see the agent's model_update.watch.
type WatchPolicy struct {
	Parts                   int
	MinParts                int
	MaxErrorRate            float64
	MaxLatencyRatio         float64
	MaxFailRateIncrease     float64
	MaxRestarts             int
	FalseRejectSignificance float64
	FalseRejectMinParts     int
}

// Updater runs the model update lifecycle; see the package comment.
type Updater struct {
	cfg Config
	dir string // <data_dir>/models
	log zerolog.Logger
	now func() time.Time

	reqs     chan InstallRequest // cap 1: the newest request waits, an older one is replaced
	rollback chan string         // cap 1: the watch asks for a rollback, with the reason
	pubq     chan wire.ModelStatusMsg

	mu      sync.Mutex // guards st, publish, slot
	st      State
	publish func(wire.ModelStatusMsg)
	slot    Slot

	target atomic.Pointer[string] // the station model the shadow and the watch follow
	shadow atomic.Pointer[shadowRun]
	watch  atomic.Pointer[watchRun]
	recent recentParts // the target model's last parts: the watch's baseline without shadow

	frameMu   sync.Mutex
	lastFrame frameCopy // a recent live frame, for the latency check
}

// New makes the updater of cfg; it does no I/O.
func New(cfg Config, log zerolog.Logger) *Updater {
	u := &Updater{
		cfg: cfg, dir: cfg.Dir,
		log: log.With().Str("component", "model-update").Logger(), now: time.Now,
		reqs: make(chan InstallRequest, 1), rollback: make(chan string, 1), pubq: make(chan wire.ModelStatusMsg, 16),
	}
	u.recent.init(max(cfg.Watch.Parts, 50))
	return u
}

// rtOpts are the runtime options of configured model i (its provider chain).
func (u *Updater) rtOpts(i int) models.RuntimeOptions {
	return models.RuntimeOptions{Providers: u.cfg.Models[i].Providers, Logger: u.log}
}

// Open reads the state and removes what an interrupted step left behind, and counts this
// start against a candidate or a watched promotion (crash loops). Call it once, before
// loadInstalled.
func (u *Updater) Open() error {
	for _, d := range []string{u.dir, filepath.Join(u.dir, "bundles"), filepath.Join(u.dir, "staging")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("model update: %w", err)
		}
	}
	st, err := ReadState(u.dir)
	if err != nil {
		// A state that does not parse cannot be trusted for anything: start over on the
		// configured models rather than not at all.
		u.log.Error().Err(err).Msg("model update state unreadable; starting from the configured models")
		st = State{}
	}
	u.st = st
	if c := u.st.Candidate; c != nil {
		c.Restarts++
		if c.Restarts > u.cfg.Watch.MaxRestarts {
			u.st.reject(c.SHA256)
			u.finishCandidate(wire.ModelRejected, fmt.Sprintf("crash loop: the agent restarted %d times while %s %s was %s",
				c.Restarts, c.Name, c.Version, c.Phase), nil)
		}
	}
	for name, m := range u.st.Models {
		if w := m.Watch; w != nil && m.Active != nil {
			w.Restarts++
			if w.Restarts > u.cfg.Watch.MaxRestarts {
				bad := m.Active
				u.st.reject(bad.SHA256)
				m.Active, m.Previous, m.Watch = m.Previous, nil, nil
				u.setLast(bad.Name, bad.Version, wire.ModelRolledBack,
					fmt.Sprintf("crash loop: the agent restarted %d times while %s %s (%s) was watched", w.Restarts, bad.Name, bad.Version, name), nil,
					bad.Operating)
			}
		}
	}
	u.cleanFiles()
	return writeOTAState(u.dir, u.st)
}

// LoadInstalled loads the installed bundle of configured model i, if any: the active one,
// else the previous one, with the file it came from and its operating point. It returns
// nil without error when the configured model should serve. It never fails for a bad
// bundle (the station must inspect, on the best model it has); only a state that cannot be
// saved is an error.
func (u *Updater) LoadInstalled(ctx context.Context, i int) (*models.Runtime, string, *wire.OperatingPoint, error) {
	name := u.cfg.Models[i].Name
	if !u.cfg.Named {
		// A single model: its entry is the only one, whatever the model's name.
		for n := range u.st.Models {
			name = n
		}
	}
	m := u.st.Models[name]
	if m == nil {
		return nil, "", nil, nil
	}
	for _, which := range []string{"active", "previous"} {
		b := m.Active
		if which == "previous" {
			b = m.Previous
		}
		if b == nil {
			continue
		}
		rt, loaded, err := u.load(ctx, filepath.Join(u.dir, b.File), u.rtOpts(i))
		if err != nil {
			u.log.Error().Err(err).Str("model", name).Str("bundle", b.File).Msgf("%s model bundle does not load", which)
			continue
		}
		if which == "previous" {
			bad := m.Active
			u.st.reject(bad.SHA256)
			m.Active, m.Previous, m.Watch = m.Previous, nil, nil
			u.setLast(bad.Name, bad.Version, wire.ModelRolledBack, "the active bundle does not load any more; serving the previous one", nil,
				bad.Operating)
			if err := writeOTAState(u.dir, u.st); err != nil {
				rt.Close()
				return nil, "", nil, err
			}
		}
		u.log.Info().Str("model", name).Str("bundle", b.File).Str("version", b.Version).Msg("serving an installed model bundle")
		return rt, filepath.Join(u.dir, b.File), OperatingPoint(loaded.Manifest), nil
	}
	if m.Active != nil {
		u.setLast(m.Active.Name, m.Active.Version, wire.ModelRolledBack, "no installed bundle loads; serving the configured model", nil,
			m.Active.Operating)
	}
	delete(u.st.Models, name)
	return nil, "", nil, writeOTAState(u.dir, u.st)
}

// cleanFiles removes every staged or installed file the state does not name.
func (u *Updater) cleanFiles() {
	keep := map[string]bool{}
	if c := u.st.Candidate; c != nil {
		keep[filepath.Join(u.dir, c.Staged)] = true
		keep[filepath.Join(u.dir, c.Staged)+".part"] = true
	}
	for _, m := range u.st.Models {
		for _, b := range []*otaBundle{m.Active, m.Previous} {
			if b != nil {
				keep[filepath.Join(u.dir, b.File)] = true
			}
		}
	}
	for _, sub := range []string{"staging", "bundles"} {
		ents, _ := os.ReadDir(filepath.Join(u.dir, sub))
		for _, e := range ents {
			if p := filepath.Join(u.dir, sub, e.Name()); !keep[p] {
				os.RemoveAll(p)
			}
		}
	}
}

// load verifies the bundle file with the trust policy and loads it on the provider chain
// (golden set replayed).
func (u *Updater) load(ctx context.Context, path string, opts models.RuntimeOptions) (*models.Runtime, *bundle.Bundle, error) {
	b, err := u.cfg.Policy.OpenBundle(path)
	if err != nil {
		return nil, nil, err
	}
	if err := b.Manifest.CheckAgent(u.cfg.AgentVersion); err != nil {
		return nil, nil, err
	}
	rt, err := models.NewRuntime(ctx, b, opts)
	if err != nil {
		return nil, nil, err
	}
	return rt, b, nil
}

// request queues an install. A request waiting behind the current install is replaced by a
// newer one. It never blocks.
func (u *Updater) Request(r InstallRequest) error {
	if r.Key == "" && r.File == "" {
		return errors.New("model install: give a bundle file or an object key")
	}
	if r.Key != "" && u.cfg.Fetcher == nil {
		return errors.New("model install: an object key needs the object store (sync.endpoint)")
	}
	for {
		select {
		case u.reqs <- r:
			return nil
		default:
		}
		select {
		case old := <-u.reqs:
			u.log.Info().Str("name", old.Name).Str("version", old.Version).Msg("model install request superseded by a newer one")
		default:
		}
	}
}

// onAvailable handles a model/available announcement.
func (u *Updater) OnAvailable(m wire.ModelAvailableMsg) {
	u.mu.Lock()
	seen := u.st.rejected(m.SHA256)
	busy := u.st.Candidate != nil && u.st.Candidate.SHA256 == m.SHA256
	serving := false
	for _, sm := range u.st.Models {
		if a := sm.Active; a != nil && a.Name == m.Name && a.Version == m.Version {
			serving = true
		}
	}
	u.mu.Unlock()
	switch {
	case seen:
		u.log.Info().Str("name", m.Name).Str("version", m.Version).Msg("model/available: this bundle was rejected before; ignored")
		return
	case !u.serves(m.Name):
		// A line-wide announcement of a model this station does not run.
		u.log.Info().Str("name", m.Name).Str("version", m.Version).Msg("model/available: not a model of this station; ignored")
		return
	case busy || serving:
		return // the retained announcement of what is being installed or serves
	}
	if err := u.Request(InstallRequest{Name: m.Name, Version: m.Version, Key: m.Key, SHA256: m.SHA256, Size: m.Size,
		Rollback: m.Rollback, From: "mqtt"}); err != nil {
		u.log.Warn().Err(err).Msg("model/available ignored")
	}
}

// Run takes install requests until ctx is done. It first resumes a candidate an earlier run
// left in flight and the watch of a promotion it was watching. slot is the inference path.
func (u *Updater) Run(ctx context.Context, slot Slot) error {
	u.mu.Lock()
	u.slot = slot
	c := u.st.Candidate
	for name, m := range u.st.Models {
		if m.Watch != nil && m.Active != nil {
			u.startWatch(name, m.Watch.Baseline, m.Active.Operating)
		}
	}
	u.mu.Unlock()
	go u.publisher(ctx)
	if c != nil {
		u.log.Info().Str("name", c.Name).Str("version", c.Version).Str("phase", c.Phase).Int("restarts", c.Restarts).
			Msg("resuming a model update interrupted by a restart")
		u.install(ctx, InstallRequest{Name: c.Name, Version: c.Version, Key: c.Key, File: c.Source, SHA256: c.SHA256,
			Size: c.Size, Rollback: c.Rollback, From: "resume"}, true)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-u.reqs:
			u.install(ctx, r, false)
		case reason := <-u.rollback:
			u.rollBack(ctx, reason)
		}
	}
}

// install runs one request through the steps; a refusal is reported, not returned.
func (u *Updater) install(ctx context.Context, r InstallRequest, resume bool) {
	u.log.Info().Str("from", r.From).Str("name", r.Name).Str("version", r.Version).Str("source", firstNonEmpty(r.Key, r.File)).
		Msg("model install")
	err := u.runSteps(ctx, r, resume)
	if err == nil || ctx.Err() != nil {
		return // promoted, or stopped: the state resumes it at the next start
	}
	reason := err.Error()
	var fig *wire.ModelFigures
	if rej := (*errRejected)(nil); errors.As(err, &rej) {
		reason, fig = rej.reason, rej.fig
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.st.reject(r.id())
	if c := u.st.Candidate; c != nil {
		u.st.reject(c.BundleHash)
	}
	u.finishCandidate(wire.ModelRejected, reason, fig)
	if err := writeOTAState(u.dir, u.st); err != nil {
		u.log.Error().Err(err).Msg("model update state not saved")
	}
}

// finishCandidate drops the candidate and its staged file and reports state (with the
// figures, if any); u.mu held (or open, before Run).
func (u *Updater) finishCandidate(state, reason string, fig *wire.ModelFigures) {
	c := u.st.Candidate
	if c == nil {
		return
	}
	os.Remove(filepath.Join(u.dir, c.Staged))
	os.Remove(filepath.Join(u.dir, c.Staged) + ".part")
	u.st.Candidate = nil
	u.setLast(c.Name, c.Version, state, reason, fig, c.Operating)
}

// setLast records and publishes a status of the model whose operating point is op (nil
// when unknown); u.mu held (or open, before Run). The state is saved by the caller.
func (u *Updater) setLast(name, version, state, reason string, fig *wire.ModelFigures, op *wire.OperatingPoint) {
	l := otaLast{Name: name, Version: version, State: state, Reason: reason, Time: u.now().UTC(), Figures: fig, Operating: op}
	u.st.Last = &l
	ev := u.log.Info()
	if state == wire.ModelRejected || state == wire.ModelRolledBack {
		ev = u.log.Warn()
	}
	ev.Str("name", name).Str("version", version).Str("state", state).Str("reason", reason).Msg("model update")
	m := u.statusMsg(l)
	for {
		select {
		case u.pubq <- m:
			return
		default:
		}
		select {
		case <-u.pubq: // the broker is slow or away: the oldest status goes, the latest stays
		default:
		}
	}
}

// publisher publishes statuses in order until ctx is done.
func (u *Updater) publisher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-u.pubq:
			u.mu.Lock()
			p := u.publish
			u.mu.Unlock()
			if p != nil {
				p(m)
			}
		}
	}
}

func (u *Updater) statusMsg(l otaLast) wire.ModelStatusMsg {
	return wire.ModelStatusMsg{Schema: wire.MessageSchema, Station: u.cfg.Station, Name: l.Name, Version: l.Version,
		State: l.State, Reason: l.Reason, Time: l.Time, Figures: l.Figures, Operating: l.Operating}
}

// setPublisher sets where statuses go (the MQTT role).
func (u *Updater) SetPublisher(p func(wire.ModelStatusMsg)) {
	u.mu.Lock()
	u.publish = p
	u.mu.Unlock()
}

// snapshot is a copy of the state, for GET /model/update.
func (u *Updater) Snapshot() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st.clone()
}

// lastStatus is the status to repeat at every MQTT connect; nil before any update.
func (u *Updater) LastStatus() *wire.ModelStatusMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Last == nil {
		return nil
	}
	m := u.statusMsg(*u.st.Last)
	return &m
}

// step records the candidate's new phase durably, then reports it (state "" reports nothing).
func (u *Updater) step(phase, state, reason string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := u.st.Candidate
	c.Phase = phase
	if err := writeOTAState(u.dir, u.st); err != nil {
		return err
	}
	if state != "" {
		u.setLast(c.Name, c.Version, state, reason, nil, c.Operating)
	}
	u.log.Debug().Str("phase", phase).Str("name", c.Name).Str("version", c.Version).Msg("model update step")
	return nil
}

// targetOf finds the serving model a bundle of model name replaces: the one of that name
// (models[].name or model.name, else the model's own name).
func (u *Updater) targetOf(name string) (Served, int, error) {
	serving := u.slot.Serving()
	for _, m := range serving {
		if m.Name == name {
			return m, u.configIndex(m.Name, serving), nil
		}
	}
	names := make([]string, len(serving))
	for i, m := range serving {
		names[i] = m.Name
	}
	return Served{}, 0, rejectf("verify: the station has no model named %q (models: %s)", name, strings.Join(names, ", "))
}

func (u *Updater) configIndex(name string, serving []Served) int {
	for i, m := range serving {
		if m.Name == name && i < len(u.cfg.Models) {
			return i
		}
	}
	return 0
}

// serves reports whether a station model is named name (nil slot: not known yet, yes).
func (u *Updater) serves(name string) bool {
	u.mu.Lock()
	slot := u.slot
	u.mu.Unlock()
	if slot == nil {
		return true
	}
	for _, m := range slot.Serving() {
		if m.Name == name {
			return true
		}
	}
	return false
}

// runningManifest is what anti-rollback compares with: the serving model's name and
// version (nil for a plain ONNX model without a semantic version).
func runningManifest(m Served, name string) *bundle.Manifest {
	if _, err := bundle.ParseSemver(m.Version); err != nil {
		return nil
	}
	return &bundle.Manifest{Name: name, Version: m.Version}
}

func (u *Updater) runSteps(ctx context.Context, r InstallRequest, resume bool) error {
	u.mu.Lock()
	if !resume {
		if u.st.Candidate != nil {
			u.finishCandidate(wire.ModelRejected, "superseded by a newer request", nil)
		}
		name := firstNonEmpty(r.Name, "bundle")
		u.st.Candidate = &otaCandidate{Name: r.Name, Version: r.Version, Key: r.Key, Source: r.File, SHA256: r.SHA256,
			Size: r.Size, Rollback: r.Rollback, Started: u.now().UTC(), Phase: PhaseDownloading,
			Staged: filepath.Join("staging", safeName(name+"-"+r.Version+"-"+shortHash(r.id()))+".tar")}
	}
	c := u.st.Candidate
	err := writeOTAState(u.dir, u.st)
	u.mu.Unlock()
	if err != nil {
		return err
	}
	staged := filepath.Join(u.dir, c.Staged)

	// 1. Receive.
	if c.Phase == PhaseDownloading {
		if err := u.step(PhaseDownloading, wire.ModelDownloading, "from "+firstNonEmpty(r.Key, r.File)); err != nil {
			return err
		}
		if err := u.receive(ctx, r, staged); err != nil {
			return err
		}
	}
	// 2. Verify (again after a restart: the staged file is re-read, never trusted blindly).
	if err := u.step(PhaseVerifying, wire.ModelValidating, "verifying signature, files and version"); err != nil {
		return err
	}
	b, err := u.cfg.Policy.OpenBundle(staged)
	if err != nil {
		return rejectf("verify: %v", err)
	}
	u.mu.Lock()
	c.Name, c.Version, c.BundleHash = b.Manifest.Name, b.Manifest.Version, fileSHA256(staged)
	c.Operating = OperatingPoint(b.Manifest)
	rolledBack := u.st.rejected(b.SHA256())
	u.mu.Unlock()
	if rolledBack {
		return rejectf("verify: model %s %s (sha256 %.12s) was rolled back on this station before", b.Manifest.Name, b.Manifest.Version, b.SHA256())
	}
	target, idx, err := u.targetOf(b.Manifest.Name)
	if err != nil {
		return err
	}
	if err := bundle.CheckInstall(runningManifest(target, b.Manifest.Name), b.Manifest, u.cfg.AgentVersion); err != nil {
		return rejectf("verify: %v", err)
	}
	if r.Rollback && !b.Manifest.Rollback {
		return rejectf("verify: announced as a rollback, but the signed manifest does not say \"rollback\": true")
	}
	u.mu.Lock()
	c.Target = target.Name
	u.mu.Unlock()

	// 3. Validate.
	opts := u.rtOpts(idx)
	if err := u.step(PhaseValidating, wire.ModelValidating, "golden set and latency on "+providerChain(opts)); err != nil {
		return err
	}
	rt, err := models.NewRuntime(ctx, b, opts)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return rejectf("validate: %v", err)
	}
	threshold := b.Manifest.Thresholds.Fail
	if err := u.checkLatency(ctx, rt); err != nil {
		rt.Close()
		return err
	}

	// 4. Shadow.
	var baseline *otaBaseline
	var shadowed *wire.ModelFigures // the shadow run's figures, reported with the promotion
	note := ""                      // what the promotion's status adds about the shadow run
	if u.cfg.Shadow.Parts > 0 {
		if err := u.step(PhaseShadow, wire.ModelShadow, fmt.Sprintf("beside %s for %d parts", target.Name, u.cfg.Shadow.Parts)); err != nil {
			rt.Close()
			return err
		}
		fig, err := u.runShadow(ctx, target.Name, rt, threshold)
		if err != nil {
			rt.Close()
			return err
		}
		fig.ExpectedFalseReject = clonePtr(b.Manifest.Thresholds.ExpectedFalseReject)
		if why, limit := u.judgeShadow(fig); why != "" {
			rt.Close()
			return rejectFig(fig.wire(limit, u.latencyBudget()), "shadow: %s (%s)", why, fig)
		}
		u.log.Info().Str("figures", fig.String()).Msg("shadow passed")
		baseline = &otaBaseline{Parts: fig.Compared, FailRate: fig.ActiveFailRate, InferP99: fig.ActiveP99}
		shadowed = fig.wire("", u.latencyBudget())
		if fig.ExpectedFalseReject != nil {
			note = "; false rejects in shadow " + fig.falseRejects().String()
		}
	}

	// 5. Swap.
	return u.promote(b, target.Name, rt, threshold, staged, baseline, shadowed, note)
}

// receive puts the bundle into staging: a download from the bucket or a copy of a file.
func (u *Updater) receive(ctx context.Context, r InstallRequest, staged string) error {
	budget := u.cfg.StagingBudget
	if r.Key != "" {
		if u.cfg.Fetcher == nil {
			return rejectf("download %s: no object store configured (sync.endpoint)", r.Key)
		}
		err := u.cfg.Fetcher.Fetch(ctx, cloudsync.FetchRequest{Key: r.Key, Path: staged, Size: r.Size, SHA256: r.SHA256, MaxBytes: budget}, nil)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return rejectf("download: %v", err)
		}
		return nil
	}
	in, err := os.Open(r.File)
	if err != nil {
		return rejectf("install: %v", err)
	}
	defer in.Close()
	if st, err := in.Stat(); err == nil && st.Size() > budget {
		return rejectf("install %s: %d bytes exceed model_update.staging_budget %d", r.File, st.Size(), budget)
	}
	tmp := staged + ".part"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), io.LimitReader(in, budget+1))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if r.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != r.SHA256 {
		os.Remove(tmp)
		return rejectf("install %s: sha256 differs from the one given", r.File)
	}
	if err := os.Rename(tmp, staged); err != nil {
		return err
	}
	return syncDir(filepath.Dir(staged))
}

// checkLatency times the candidate on a recent live frame (a gray frame before the first
// part) and refuses it when its p99 exceeds validate.latency_fraction of the deadline. A
// first untimed run sizes the preprocessing for the camera's frames. It stops early once
// two runs in a row are over the budget: the p99 of more runs cannot come back under it,
// so a model 10x over the budget is refused after three runs, not latency_runs.
func (u *Updater) checkLatency(ctx context.Context, rt *models.Runtime) error {
	f := u.sampleFrame()
	runs := u.cfg.Validate.LatencyRuns
	lat := make([]float64, 0, runs)
	limit := u.latencyBudget()
	fig := func(errs int, key string) *wire.ModelFigures {
		return &wire.ModelFigures{Step: wire.FiguresValidate, Parts: len(lat), Errors: errs,
			CandidateP50Ms: quantile(lat, 0.5), CandidateP99Ms: quantile(lat, 0.99), BudgetMs: limit, Limit: key}
	}
	for i := -1; i < runs; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if n := len(lat); n >= 2 && lat[n-1] > limit && lat[n-2] > limit {
			break
		}
		res, err := rt.Infer(ctx, f)
		if err != nil {
			return rejectFig(fig(1, "validate.errors"), "validate: inference on a live frame: %v", err)
		}
		if math.IsNaN(res.Score) || math.IsInf(res.Score, 0) {
			return rejectFig(fig(1, "validate.errors"), "validate: score %v on a live frame", res.Score)
		}
		if i >= 0 {
			lat = append(lat, ms(res.Timings.Total))
		}
	}
	p99 := quantile(lat, 0.99)
	if p99 > limit {
		return rejectFig(fig(0, "validate.latency_fraction"), "validate: latency p99 %.1f ms over %d runs exceeds %.0f%% of the deadline %s (%.1f ms)",
			p99, len(lat), u.cfg.Validate.LatencyFraction*100, u.cfg.Deadline, limit)
	}
	u.log.Info().Float64("p99_ms", p99).Float64("limit_ms", limit).Msg("candidate latency within budget")
	return nil
}

// promote swaps the candidate in and makes it the active bundle, the active one the
// previous (kept for rollback), and starts the watch.
func (u *Updater) promote(b *bundle.Bundle, name string, rt *models.Runtime, threshold float64, staged string, baseline *otaBaseline,
	shadowed *wire.ModelFigures, note string) error {
	if err := u.step(PhaseSwapping, "", ""); err != nil {
		rt.Close()
		return err
	}
	// The bundle gets its installed name as a hard link first: until the state names it, a
	// crash leaves the staged file for the resumed candidate (and boot removes the link).
	file := filepath.Join("bundles", safeName(b.Manifest.Name+"-"+b.Manifest.Version+"-"+b.SHA256()[:12])+".tar")
	installed := filepath.Join(u.dir, file)
	os.Remove(installed)
	if err := os.Link(staged, installed); err != nil {
		rt.Close()
		return err
	}
	if err := syncDir(filepath.Join(u.dir, "bundles")); err != nil {
		rt.Close()
		return err
	}
	if baseline == nil {
		bl := u.recent.baseline()
		baseline = &bl
	}
	u.mu.Lock()
	m := u.st.model(name)
	old := m.Previous
	m.Previous = m.Active
	op := OperatingPoint(b.Manifest)
	m.Active = &otaBundle{Name: b.Manifest.Name, Version: b.Manifest.Version, SHA256: b.SHA256(), File: file, Operating: op}
	m.Watch = nil
	if u.cfg.Watch.Parts > 0 {
		m.Watch = &otaWatch{Since: u.now().UTC(), Baseline: *baseline}
	}
	u.st.Candidate = nil
	err := writeOTAState(u.dir, u.st)
	slot := u.slot
	u.mu.Unlock()
	if err != nil {
		rt.Close()
		return err
	}
	os.Remove(staged)
	// The state says the new bundle is active: from here a crash boots on it.
	from := ""
	for _, s := range slot.Serving() {
		if s.Name == name {
			from = s.Version
		}
	}
	if err := slot.SwapIn(name, filepath.Join(u.dir, file), rt, threshold, op); err != nil {
		return err // the next start serves the new bundle
	}
	if old != nil && old.File != m.Active.File && (m.Previous == nil || old.File != m.Previous.File) {
		os.Remove(filepath.Join(u.dir, old.File))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	reason := "promoted"
	if from != "" {
		reason += " over " + from
	}
	reason += note
	if u.cfg.Watch.Parts > 0 {
		u.startWatch(name, *baseline, op)
		reason += fmt.Sprintf("; watched for %d parts", u.cfg.Watch.Parts)
	}
	u.setLast(b.Manifest.Name, b.Manifest.Version, wire.ModelActive, reason, shadowed, op)
	return writeOTAState(u.dir, u.st)
}

// startWatch watches the station model name, whose bundle's operating point is op (nil when
// unknown), against baseline; u.mu held.
func (u *Updater) startWatch(name string, baseline otaBaseline, op *wire.OperatingPoint) {
	u.target.Store(&name)
	u.recent.reset()
	var expected *float64
	if op != nil {
		expected = op.ExpectedFalseReject
	}
	u.watch.Store(newWatchRun(name, u.cfg.Watch, baseline, expected, u.latencyBudget(), u.rollback))
}

// watchPassed ends a watch that saw its parts without crossing a limit.
func (u *Updater) watchPassed(w *watchRun) {
	if !u.watch.CompareAndSwap(w, nil) {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	m := u.st.Models[w.name]
	if m == nil {
		return
	}
	m.Watch = nil
	if a := m.Active; a != nil {
		u.setLast(a.Name, a.Version, wire.ModelActive, "watch passed: "+w.figures(), w.wire(), a.Operating)
	}
	if err := writeOTAState(u.dir, u.st); err != nil {
		u.log.Error().Err(err).Msg("model update state not saved")
	}
}

// rollBack puts the previous bundle (or the configured model) back after the watch crossed
// a limit.
func (u *Updater) rollBack(ctx context.Context, reason string) {
	w := u.watch.Swap(nil)
	if w == nil {
		return
	}
	name := w.name
	u.mu.Lock()
	m := u.st.Models[name]
	slot := u.slot
	var bad, prev *otaBundle
	if m != nil {
		bad, prev = m.Active, m.Previous
	}
	u.mu.Unlock()
	if bad == nil {
		return
	}
	idx := 0
	for i, c := range u.cfg.Models {
		if c.Name == name {
			idx = i
		}
	}
	var rt *models.Runtime
	var source string
	var op *wire.OperatingPoint
	threshold := 0.0
	if prev != nil {
		r, b, err := u.load(ctx, filepath.Join(u.dir, prev.File), u.rtOpts(idx))
		if err != nil {
			u.log.Error().Err(err).Msg("rollback: the previous bundle does not load; the configured model takes over")
			prev = nil
		} else {
			rt, source, threshold, op = r, filepath.Join(u.dir, prev.File), b.Manifest.Thresholds.Fail, OperatingPoint(b.Manifest)
		}
	}
	if rt == nil {
		if u.cfg.LoadConfigured == nil {
			u.log.Error().Msg("rollback impossible: no configured model loader")
			return
		}
		r, cop, err := u.cfg.LoadConfigured(ctx, idx)
		if err != nil {
			u.log.Error().Err(err).Msg("rollback impossible: the configured model does not load; keeping the new one")
			return
		}
		rt, source, threshold, op = r, u.cfg.Models[idx].Source, u.cfg.Models[idx].Threshold, cop
	}
	u.mu.Lock()
	u.st.reject(bad.SHA256)
	m.Active, m.Previous, m.Watch = prev, nil, nil
	if prev == nil {
		delete(u.st.Models, name)
	}
	err := writeOTAState(u.dir, u.st)
	u.mu.Unlock()
	if err != nil {
		rt.Close()
		u.log.Error().Err(err).Msg("rollback: state not saved")
		return
	}
	if err := slot.SwapIn(name, source, rt, threshold, op); err != nil {
		u.log.Error().Err(err).Msg("rollback: swap refused")
		return
	}
	u.recent.reset()
	os.Remove(filepath.Join(u.dir, bad.File))
	back := "the configured model"
	if prev != nil {
		back = prev.Version
	}
	u.mu.Lock()
	u.setLast(bad.Name, bad.Version, wire.ModelRolledBack, reason+"; back on "+back, w.wire(), bad.Operating)
	err = writeOTAState(u.dir, u.st)
	u.mu.Unlock()
	if err != nil {
		u.log.Error().Err(err).Msg("model update state not saved")
	}
}

// observe hands the updater one committed part, with its frame still valid (the loop
// recycles it after). It never blocks: the shadow run copies the frame into a buffer of its
// own bounded pool or drops it.
func (u *Updater) Observe(f camera.Frame, v *store.Verdict) {
	t := u.target.Load()
	if t == nil {
		serving := ""
		if len(v.Models) == 0 {
			serving = v.Model.Name
		}
		t = &serving
	}
	o, ok := outcomeOf(v, *t)
	if !ok {
		return
	}
	u.recent.add(o)
	if s := u.shadow.Load(); s != nil {
		s.offer(f, o)
	}
	if w := u.watch.Load(); w != nil && w.add(o) {
		go u.watchPassed(w)
	}
	u.frameMu.Lock()
	if f.Pix != nil && time.Since(u.lastFrame.at) > 2*time.Second {
		u.lastFrame.copyFrom(f)
	}
	u.frameMu.Unlock()
}

// outcomeOf is the outcome of station model name in v (v itself with a single model). A
// part without a frame is no outcome of any model.
func outcomeOf(v *store.Verdict, name string) (partOutcome, bool) {
	if strings.HasPrefix(v.Reason, "no frame") {
		return partOutcome{}, false
	}
	o := partOutcome{Decision: v.Decision, Score: math.NaN(), InferMs: v.Latency.PreprocessMs + v.Latency.InferMs}
	reason, score := v.Reason, v.Score
	if len(v.Models) > 0 {
		found := false
		for _, m := range v.Models {
			if m.Name == name {
				o.Decision, reason, score, found = m.Decision, m.Reason, m.Score, true
			}
		}
		if !found {
			return partOutcome{}, false
		}
	}
	if score != nil {
		o.Score = *score
	}
	o.ModelErr = o.Decision == store.NoDecision && (strings.Contains(reason, "inference failed") || strings.Contains(reason, "score is"))
	return o, true
}

// latencyBudget is validate.latency_fraction of the deadline, in ms: a model within it is
// never refused or rolled back for its latency alone.
func (u *Updater) latencyBudget() float64 {
	return u.cfg.Validate.LatencyFraction * ms(u.cfg.Deadline)
}

func providerChain(o models.RuntimeOptions) string {
	if len(o.Providers.Chain) == 0 {
		return models.ProviderCPU
	}
	return strings.Join(o.Providers.Chain, ",")
}

func fileSHA256(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
