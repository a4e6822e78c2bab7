package agent

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

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/models"
)

// Over-the-air model updates, station side. One goroutine (modelUpdater.Run) takes install
// requests (model/available on MQTT, POST /model/install) one at a time through these steps,
// recording each in <data_dir>/models/state.json before it acts so that a restart at any
// point resumes or discards the step, and reporting each on model/status:
//
//	downloading -> verifying -> validating -> shadow -> swapping -> active (watched)
//	      \             \             \           \                     \
//	       rejected      rejected      rejected    rejected              rolled-back
//
// The inspection loop never waits for the updater: it hands it each part's outcome
// (observe), which feeds the shadow worker through a bounded queue that drops rather than
// blocks, and the watch after a promotion.

// modelSlot is what the updater needs of the inference path: the model it updates and a
// way to replace it at a frame boundary.
type modelSlot interface {
	// replace makes rt (with threshold) the model that scores the next frames, atomically
	// between two frames; the runtime it replaces is closed once no inference uses it.
	replace(rt *models.Runtime, threshold float64) error
}

// installRequest is one bundle to install: an object key in the bucket or a local file.
type installRequest struct {
	Name, Version string
	Key           string // object key (model/available, or POST /model/install {"key"})
	File          string // local bundle file (POST /model/install {"file"})
	SHA256        string // announced sha256 of the bundle tar; "" when unknown
	Size          int64
	Rollback      bool
	From          string // mqtt, http: for the log
}

func (r installRequest) id() string {
	if r.SHA256 != "" {
		return r.SHA256
	}
	return r.Name + "@" + r.Version
}

// errRejected wraps why a candidate was refused; the updater reports it and goes on.
type errRejected struct{ reason string }

func (e *errRejected) Error() string { return e.reason }

func rejectf(format string, args ...any) error {
	return &errRejected{reason: fmt.Sprintf(format, args...)}
}

// modelUpdater runs the model update lifecycle; see the comment above.
type modelUpdater struct {
	cfg       ModelUpdateConfig
	dir       string // <data_dir>/models
	station   string
	deadline  time.Duration
	threshold float64 // model.threshold (0: the bundle's own)
	policy    models.TrustPolicy
	fetcher   *cloudsync.Fetcher // nil without sync.endpoint: object keys cannot be fetched
	rtOpts    models.RuntimeOptions
	log       zerolog.Logger
	now       func() time.Time

	reqs     chan installRequest // cap 1: the newest request waits, an older one is replaced
	rollback chan string         // cap 1: the watch asks for a rollback, with the reason

	mu       sync.Mutex // guards st, running, publish
	st       otaState
	running  *models.Manifest // manifest of the serving bundle; nil: a plain model
	servingF string           // "active", "previous" or "config": what boot loaded
	publish  func(cloudsync.ModelStatusMsg)
	slot     modelSlot
	// configured loads the configured model (model.bundle or model.path), the last resort of
	// a rollback; set by the agent before Run.
	configured func(ctx context.Context) (*models.Runtime, *models.Manifest, float64, error)

	shadow atomic.Pointer[shadowRun]
	watch  atomic.Pointer[watchRun]
	recent recentParts // the serving model's last parts: the watch's baseline

	frameMu   sync.Mutex
	lastFrame frameCopy // a recent live frame, for the latency check
}

// newModelUpdater validates the update settings of cfg and loads the trusted keys; it does
// no network I/O.
func newModelUpdater(cfg Config, log zerolog.Logger) (*modelUpdater, error) {
	u := cfg.Model.Update
	keys, err := models.LoadTrustedKeys(u.keys(cfg.Model.TrustedKeys)...)
	if err != nil {
		return nil, fmt.Errorf("model.update.trusted_keys: %w", err)
	}
	policy, err := models.NewTrustPolicy(keys, u.RevokedKeys)
	if err != nil {
		return nil, fmt.Errorf("model.update: %w", err)
	}
	m := &modelUpdater{
		cfg: u, dir: filepath.Join(cfg.DataDir, "models"), station: cfg.Station, deadline: cfg.Deadline,
		threshold: cfg.Model.Threshold, policy: policy,
		rtOpts: models.RuntimeOptions{Providers: cfg.Model.providerOptions(cfg.DataDir), Logger: log},
		log:    log.With().Str("component", "model-update").Logger(), now: time.Now,
		reqs: make(chan installRequest, 1), rollback: make(chan string, 1),
	}
	m.recent.init(max(u.Watch.Parts, 50))
	if cfg.Sync.Enabled() {
		if m.fetcher, err = cloudsync.NewFetcher(cfg.Sync); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// boot reads the state, removes what an interrupted step left behind, counts this start
// against a candidate or a watched promotion (crash loops), and loads the bundle to serve:
// the active one, else the previous one, else nil (the configured model). It never fails
// for a bad bundle: the station must inspect, on the best model it has.
func (u *modelUpdater) boot(ctx context.Context) (*models.Runtime, *models.Bundle, error) {
	for _, d := range []string{u.dir, filepath.Join(u.dir, "bundles"), filepath.Join(u.dir, "staging")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, fmt.Errorf("model update: %w", err)
		}
	}
	st, err := readOTAState(u.dir)
	if err != nil {
		// A state file that does not parse cannot be trusted for anything: start over on the
		// configured model rather than not at all.
		u.log.Error().Err(err).Msg("model update state unreadable; starting from the configured model")
		st = otaState{}
	}
	u.st = st
	if c := u.st.Candidate; c != nil {
		c.Restarts++
		if c.Restarts > u.cfg.Watch.MaxRestarts {
			u.finishCandidate(cloudsync.ModelRejected, fmt.Sprintf("crash loop: the agent restarted %d times while %s %s was %s",
				c.Restarts, c.Name, c.Version, c.Phase))
		}
	}
	if w := u.st.Watch; w != nil && u.st.Active != nil {
		w.Restarts++
		if w.Restarts > u.cfg.Watch.MaxRestarts {
			a := u.st.Active
			u.st.reject(a.SHA256)
			u.st.Active, u.st.Previous, u.st.Watch = u.st.Previous, nil, nil
			u.setLast(a.Name, a.Version, cloudsync.ModelRolledBack,
				fmt.Sprintf("crash loop: the agent restarted %d times while %s %s was watched", w.Restarts, a.Name, a.Version))
			os.Remove(filepath.Join(u.dir, a.File))
		}
	}
	u.cleanStaging()
	if err := writeOTAState(u.dir, u.st); err != nil {
		return nil, nil, err
	}
	for _, which := range []string{"active", "previous"} {
		b := u.st.Active
		if which == "previous" {
			b = u.st.Previous
		}
		if b == nil {
			continue
		}
		rt, bundle, err := u.load(ctx, filepath.Join(u.dir, b.File))
		if err == nil {
			if which == "previous" {
				bad := u.st.Active
				u.st.reject(bad.SHA256)
				u.st.Active, u.st.Previous, u.st.Watch = u.st.Previous, nil, nil
				u.setLast(bad.Name, bad.Version, cloudsync.ModelRolledBack, "the active bundle does not load any more; serving the previous one")
				if err := writeOTAState(u.dir, u.st); err != nil {
					rt.Close()
					return nil, nil, err
				}
			}
			u.running, u.servingF = bundle.Manifest, which
			return rt, bundle, nil
		}
		u.log.Error().Err(err).Str("bundle", b.File).Msgf("%s model bundle does not load", which)
	}
	if u.st.Active != nil {
		// Neither loads: the configured model serves; forget the installed ones.
		u.setLast(u.st.Active.Name, u.st.Active.Version, cloudsync.ModelRolledBack,
			"no installed bundle loads; serving the configured model")
		u.st.Active, u.st.Previous, u.st.Watch = nil, nil, nil
		if err := writeOTAState(u.dir, u.st); err != nil {
			return nil, nil, err
		}
	}
	u.servingF = "config"
	return nil, nil, nil
}

// setRunning records the configured model's manifest (nil for a plain ONNX model) when boot
// loaded no installed bundle: updates are checked against it.
func (u *modelUpdater) setRunning(m *models.Manifest) {
	u.mu.Lock()
	u.running = m
	u.mu.Unlock()
}

// cleanStaging removes every staging file the candidate does not name.
func (u *modelUpdater) cleanStaging() {
	keep := ""
	if c := u.st.Candidate; c != nil {
		keep = filepath.Join(u.dir, c.Staged)
	}
	ents, _ := os.ReadDir(filepath.Join(u.dir, "staging"))
	for _, e := range ents {
		p := filepath.Join(u.dir, "staging", e.Name())
		if p != keep && p != keep+".part" {
			os.RemoveAll(p)
		}
	}
	keepB := map[string]bool{}
	for _, b := range []*otaBundle{u.st.Active, u.st.Previous} {
		if b != nil {
			keepB[filepath.Join(u.dir, b.File)] = true
		}
	}
	ents, _ = os.ReadDir(filepath.Join(u.dir, "bundles"))
	for _, e := range ents {
		if p := filepath.Join(u.dir, "bundles", e.Name()); !keepB[p] {
			os.RemoveAll(p)
		}
	}
}

// load verifies the bundle file with the trust policy and loads it on the provider chain
// (golden set replayed).
func (u *modelUpdater) load(ctx context.Context, path string) (*models.Runtime, *models.Bundle, error) {
	b, err := u.policy.OpenBundle(path)
	if err != nil {
		return nil, nil, err
	}
	if err := b.Manifest.CheckAgent(Version); err != nil {
		return nil, nil, err
	}
	rt, err := models.NewRuntime(ctx, b, u.rtOpts)
	if err != nil {
		return nil, nil, err
	}
	return rt, b, nil
}

// request queues an install. A request waiting behind the current install is replaced by a
// newer one. It never blocks.
func (u *modelUpdater) request(r installRequest) error {
	if r.Key == "" && r.File == "" {
		return errors.New("model install: give a bundle file or an object key")
	}
	if r.Key != "" && u.fetcher == nil {
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
func (u *modelUpdater) onAvailable(m cloudsync.ModelAvailableMsg) {
	u.mu.Lock()
	seen := u.st.rejected(m.SHA256)
	busy := u.st.Candidate != nil && u.st.Candidate.SHA256 == m.SHA256
	active := u.st.Active != nil && u.st.Active.Name == m.Name && u.st.Active.Version == m.Version
	u.mu.Unlock()
	switch {
	case seen:
		u.log.Info().Str("name", m.Name).Str("version", m.Version).Msg("model/available: this bundle was rejected before; ignored")
		return
	case busy || active:
		return // the retained announcement of what is being installed or serves
	}
	if err := u.request(installRequest{Name: m.Name, Version: m.Version, Key: m.Key, SHA256: m.SHA256, Size: m.Size,
		Rollback: m.Rollback, From: "mqtt"}); err != nil {
		u.log.Warn().Err(err).Msg("model/available ignored")
	}
}

// Run takes install requests until ctx is done. It first resumes a candidate an earlier run
// left in flight. slot is the inference path's model holder.
func (u *modelUpdater) Run(ctx context.Context, slot modelSlot) error {
	u.mu.Lock()
	u.slot = slot
	c := u.st.Candidate
	last := u.st.Last
	u.mu.Unlock()
	if last != nil {
		u.emit(*last)
	}
	if c != nil {
		u.log.Info().Str("name", c.Name).Str("version", c.Version).Str("phase", c.Phase).Int("restarts", c.Restarts).
			Msg("resuming a model update interrupted by a restart")
		u.install(ctx, installRequest{Name: c.Name, Version: c.Version, Key: c.Key, File: c.Source, SHA256: c.SHA256,
			Size: c.Size, Rollback: c.Rollback, From: "resume"}, true)
	}
	for {
		select {
		case <-ctx.Done():
			u.stopShadow()
			return nil
		case r := <-u.reqs:
			u.install(ctx, r, false)
		case reason := <-u.rollback:
			u.rollBack(ctx, reason)
		}
	}
}

// install runs one request through the steps; a refusal is reported, not returned.
func (u *modelUpdater) install(ctx context.Context, r installRequest, resume bool) {
	err := u.runSteps(ctx, r, resume)
	if err == nil || ctx.Err() != nil {
		return // promoted, or stopped: the state resumes it at the next start
	}
	var rej *errRejected
	reason := err.Error()
	if errors.As(err, &rej) {
		reason = rej.reason
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.st.reject(r.id())
	u.finishCandidate(cloudsync.ModelRejected, reason)
	if err := writeOTAState(u.dir, u.st); err != nil {
		u.log.Error().Err(err).Msg("model update state not saved")
	}
}

// finishCandidate drops the candidate and its staged file and reports state; u.mu held (or
// boot).
func (u *modelUpdater) finishCandidate(state, reason string) {
	c := u.st.Candidate
	if c == nil {
		return
	}
	os.Remove(filepath.Join(u.dir, c.Staged))
	os.Remove(filepath.Join(u.dir, c.Staged) + ".part")
	u.st.Candidate = nil
	u.setLast(c.Name, c.Version, state, reason)
}

// setLast records and publishes a status; u.mu held (or boot, before Run).
func (u *modelUpdater) setLast(name, version, state, reason string) {
	l := otaLast{Name: name, Version: version, State: state, Reason: reason, Time: u.now().UTC()}
	u.st.Last = &l
	ev := u.log.Info()
	if state == cloudsync.ModelRejected || state == cloudsync.ModelRolledBack {
		ev = u.log.Warn()
	}
	ev.Str("name", name).Str("version", version).Str("state", state).Str("reason", reason).Msg("model update")
	if u.publish != nil {
		go u.publish(u.statusMsg(l))
	}
}

func (u *modelUpdater) statusMsg(l otaLast) cloudsync.ModelStatusMsg {
	return cloudsync.ModelStatusMsg{Schema: cloudsync.MessageSchema, Station: u.station, Name: l.Name, Version: l.Version,
		State: l.State, Reason: l.Reason, Time: l.Time}
}

func (u *modelUpdater) emit(l otaLast) {
	u.mu.Lock()
	p := u.publish
	u.mu.Unlock()
	if p != nil {
		p(u.statusMsg(l))
	}
}

// setPublisher sets where statuses go (the MQTT role) and returns the last status to
// publish at once (retained), or nil.
func (u *modelUpdater) setPublisher(p func(cloudsync.ModelStatusMsg)) *cloudsync.ModelStatusMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.publish = p
	if u.st.Last == nil {
		return nil
	}
	m := u.statusMsg(*u.st.Last)
	return &m
}

// snapshot is a copy of the state, for GET /model/update.
func (u *modelUpdater) snapshot() otaState {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.st
	st.Rejected = append([]string(nil), st.Rejected...)
	if st.Active != nil {
		a := *st.Active
		st.Active = &a
	}
	if st.Previous != nil {
		p := *st.Previous
		st.Previous = &p
	}
	if st.Candidate != nil {
		c := *st.Candidate
		st.Candidate = &c
	}
	if st.Watch != nil {
		w := *st.Watch
		st.Watch = &w
	}
	if st.Last != nil {
		l := *st.Last
		st.Last = &l
	}
	return st
}

// lastStatus is the status to repeat at every MQTT connect; nil before any update.
func (u *modelUpdater) lastStatus() *cloudsync.ModelStatusMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Last == nil {
		return nil
	}
	m := u.statusMsg(*u.st.Last)
	return &m
}

// step records the candidate's new phase durably, then reports it.
func (u *modelUpdater) step(phase, state, reason string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := u.st.Candidate
	c.Phase = phase
	if err := writeOTAState(u.dir, u.st); err != nil {
		return err
	}
	if state != "" {
		u.setLast(c.Name, c.Version, state, reason)
	}
	return nil
}

func (u *modelUpdater) runSteps(ctx context.Context, r installRequest, resume bool) error {
	u.mu.Lock()
	if !resume {
		if u.st.Candidate != nil {
			// A request while another is in flight cannot happen (one goroutine); a stale
			// candidate from a restart was resumed first.
			u.finishCandidate(cloudsync.ModelRejected, "superseded")
		}
		name := r.Name
		if name == "" {
			name = "bundle"
		}
		u.st.Candidate = &otaCandidate{Name: r.Name, Version: r.Version, Key: r.Key, Source: r.File, SHA256: r.SHA256,
			Size: r.Size, Rollback: r.Rollback, Started: u.now().UTC(), Phase: phaseDownloading,
			Staged: filepath.Join("staging", safeName(name+"-"+r.Version+"-"+shortHash(r.id()))+".tar")}
	}
	c := u.st.Candidate
	if err := writeOTAState(u.dir, u.st); err != nil {
		u.mu.Unlock()
		return err
	}
	u.mu.Unlock()
	staged := filepath.Join(u.dir, c.Staged)

	// 1. Receive.
	if c.Phase == phaseDownloading {
		if err := u.step(phaseDownloading, cloudsync.ModelDownloading, "from "+firstNonEmpty(r.Key, r.File)); err != nil {
			return err
		}
		if err := u.receive(ctx, r, staged); err != nil {
			return err
		}
		if err := u.step(phaseVerifying, "", ""); err != nil {
			return err
		}
	}
	// 2. Verify (again after a restart: the staged file is re-read, never trusted blindly).
	if err := u.step(phaseVerifying, cloudsync.ModelValidating, "verifying signature, files and version"); err != nil {
		return err
	}
	b, err := u.policy.OpenBundle(staged)
	if err != nil {
		return rejectf("verify: %v", err)
	}
	u.mu.Lock()
	running := u.running
	u.mu.Unlock()
	if err := models.CheckInstall(running, b.Manifest, Version); err != nil {
		return rejectf("verify: %v", err)
	}
	if r.Rollback && !b.Manifest.Rollback {
		return rejectf("verify: announced as a rollback, but the signed manifest does not say \"rollback\": true")
	}
	u.mu.Lock()
	c.Name, c.Version = b.Manifest.Name, b.Manifest.Version
	u.mu.Unlock()

	// 3. Validate.
	if err := u.step(phaseValidating, cloudsync.ModelValidating, "golden set and latency on "+strings.Join(u.rtOpts.Providers.Chain, ",")); err != nil {
		return err
	}
	rt, err := models.NewRuntime(ctx, b, u.rtOpts)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return rejectf("validate: %v", err)
	}
	threshold := b.Manifest.Thresholds.Fail
	if u.threshold > 0 {
		threshold = u.threshold
	}
	if err := u.checkLatency(ctx, rt); err != nil {
		rt.Close()
		return err
	}

	// 4. Shadow.
	var baseline *otaBaseline
	if u.cfg.Shadow.Parts > 0 {
		if err := u.step(phaseShadow, cloudsync.ModelShadow, fmt.Sprintf("beside the active model for %d parts", u.cfg.Shadow.Parts)); err != nil {
			rt.Close()
			return err
		}
		fig, err := u.runShadow(ctx, rt, threshold)
		if err != nil {
			rt.Close()
			return err
		}
		if why := u.judgeShadow(fig); why != "" {
			rt.Close()
			return rejectf("shadow: %s (%s)", why, fig)
		}
		u.log.Info().Str("figures", fig.String()).Msg("shadow passed")
		baseline = &otaBaseline{Parts: fig.Compared, FailRate: fig.ActiveFailRate, ErrorRate: 0, InferP99: fig.ActiveP99}
	}

	// 5. Swap.
	return u.promote(ctx, b, rt, threshold, staged, baseline)
}

// receive puts the bundle into staging: a download from the bucket or a copy of a file.
func (u *modelUpdater) receive(ctx context.Context, r installRequest, staged string) error {
	budget := int64(u.cfg.StagingBudget)
	if r.Key != "" {
		if u.fetcher == nil {
			return rejectf("download %s: no object store configured (sync.endpoint)", r.Key)
		}
		err := u.fetcher.Fetch(ctx, cloudsync.FetchRequest{Key: r.Key, Path: staged, Size: r.Size, SHA256: r.SHA256, MaxBytes: budget}, nil)
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
		return rejectf("install %s: %d bytes exceed model.update.staging_budget %d", r.File, st.Size(), budget)
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
// part) and refuses it when its p99 exceeds validate.latency_fraction of the deadline.
func (u *modelUpdater) checkLatency(ctx context.Context, rt *models.Runtime) error {
	f := u.sampleFrame()
	runs := u.cfg.Validate.LatencyRuns
	lat := make([]float64, 0, runs)
	for range runs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res, err := rt.Infer(ctx, f)
		if err != nil {
			return rejectf("validate: inference on a live frame: %v", err)
		}
		if math.IsNaN(res.Score) || math.IsInf(res.Score, 0) {
			return rejectf("validate: score %v on a live frame", res.Score)
		}
		lat = append(lat, ms(res.Timings.Total))
	}
	p99 := quantile(lat, 0.99)
	limit := u.cfg.Validate.LatencyFraction * ms(u.deadline)
	if p99 > limit {
		return rejectf("validate: latency p99 %.1f ms over %d runs exceeds %.0f%% of the deadline %s (%.1f ms)",
			p99, runs, u.cfg.Validate.LatencyFraction*100, u.deadline, limit)
	}
	u.log.Info().Float64("p99_ms", p99).Float64("limit_ms", limit).Msg("candidate latency within budget")
	return nil
}

// promote swaps the candidate in and makes it the active bundle, the active one the
// previous (kept for rollback), and starts the watch.
func (u *modelUpdater) promote(ctx context.Context, b *models.Bundle, rt *models.Runtime, threshold float64, staged string, baseline *otaBaseline) error {
	if err := u.step(phaseSwapping, "", ""); err != nil {
		rt.Close()
		return err
	}
	file := filepath.Join("bundles", safeName(b.Manifest.Name+"-"+b.Manifest.Version+"-"+b.SHA256()[:12])+".tar")
	if err := os.Rename(staged, filepath.Join(u.dir, file)); err != nil {
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
	slot := u.slot
	old := u.st.Previous
	u.st.Previous = u.st.Active
	u.st.Active = &otaBundle{Name: b.Manifest.Name, Version: b.Manifest.Version, SHA256: b.SHA256(), File: file}
	u.st.Candidate = nil
	if u.cfg.Watch.Parts > 0 {
		u.st.Watch = &otaWatch{Since: u.now().UTC(), Baseline: *baseline}
	} else {
		u.st.Watch = nil
	}
	prevRunning := u.running
	u.running = b.Manifest
	err := writeOTAState(u.dir, u.st)
	u.mu.Unlock()
	if err != nil {
		rt.Close()
		return err
	}
	// The state says the new bundle is active: from here a crash boots on it.
	if err := slot.replace(rt, threshold); err != nil {
		// The frame path refused it (it is stopping): the next start serves the new bundle.
		return err
	}
	u.recent.reset()
	if old != nil && (u.st.Active == nil || old.File != u.st.Active.File) {
		os.Remove(filepath.Join(u.dir, old.File))
	}
	u.mu.Lock()
	reason := "promoted"
	if prevRunning != nil {
		reason = "promoted over " + prevRunning.Version
	}
	if u.cfg.Watch.Parts > 0 {
		w := newWatchRun(u.cfg.Watch, *baseline, u.rollback)
		u.watch.Store(w)
		reason += fmt.Sprintf("; watched for %d parts", u.cfg.Watch.Parts)
	}
	u.setLast(b.Manifest.Name, b.Manifest.Version, cloudsync.ModelActive, reason)
	err = writeOTAState(u.dir, u.st)
	u.mu.Unlock()
	return err
}

// watchPassed ends a watch that saw its parts without crossing a limit.
func (u *modelUpdater) watchPassed(w *watchRun) {
	if !u.watch.CompareAndSwap(w, nil) {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.st.Watch = nil
	if a := u.st.Active; a != nil {
		u.setLast(a.Name, a.Version, cloudsync.ModelActive, "watch passed: "+w.figures())
	}
	if err := writeOTAState(u.dir, u.st); err != nil {
		u.log.Error().Err(err).Msg("model update state not saved")
	}
}

// rollBack puts the previous bundle (or the configured model) back after the watch crossed
// a limit.
func (u *modelUpdater) rollBack(ctx context.Context, reason string) {
	u.watch.Store(nil)
	u.mu.Lock()
	bad, prev, slot := u.st.Active, u.st.Previous, u.slot
	u.mu.Unlock()
	if bad == nil {
		return
	}
	var rt *models.Runtime
	var m *models.Manifest
	threshold := 0.0
	if prev != nil {
		r, b, err := u.load(ctx, filepath.Join(u.dir, prev.File))
		if err != nil {
			u.log.Error().Err(err).Msg("rollback: the previous bundle does not load; the configured model takes over")
		} else {
			rt, m, threshold = r, b.Manifest, b.Manifest.Thresholds.Fail
		}
	}
	if rt == nil {
		r, mf, th, err := u.loadConfigured(ctx)
		if err != nil {
			u.log.Error().Err(err).Msg("rollback impossible: no previous model loads; keeping the new one")
			return
		}
		rt, m, threshold = r, mf, th
		prev = nil
	}
	if u.threshold > 0 {
		threshold = u.threshold
	}
	u.mu.Lock()
	u.st.reject(bad.SHA256)
	u.st.Active, u.st.Previous, u.st.Watch = prev, nil, nil
	u.running = m
	err := writeOTAState(u.dir, u.st)
	u.mu.Unlock()
	if err != nil {
		rt.Close()
		u.log.Error().Err(err).Msg("rollback: state not saved")
		return
	}
	if err := slot.replace(rt, threshold); err != nil {
		u.log.Error().Err(err).Msg("rollback: swap refused")
		return
	}
	u.recent.reset()
	os.Remove(filepath.Join(u.dir, bad.File))
	u.mu.Lock()
	back := "the configured model"
	if prev != nil {
		back = prev.Version
	}
	u.setLast(bad.Name, bad.Version, cloudsync.ModelRolledBack, reason+"; back on "+back)
	u.mu.Unlock()
}

var errNoConfigured = errors.New("no configured model")

func (u *modelUpdater) loadConfigured(ctx context.Context) (*models.Runtime, *models.Manifest, float64, error) {
	if u.configured == nil {
		return nil, nil, 0, errNoConfigured
	}
	return u.configured(ctx)
}

// stopShadow stops a shadow run (the agent stops).
func (u *modelUpdater) stopShadow() {
	if s := u.shadow.Swap(nil); s != nil {
		s.stop()
	}
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
