package companion

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
	"github.com/takt-edge/takt/models/bundle"
)

// ErrBusy: the model already has a queued or running job.
var ErrBusy = errors.New("a training job for this model is already queued or running")

// ErrUnknownModel: the model is not in the config's models.
var ErrUnknownModel = errors.New("model is not configured")

// Companion is takt-cloud: ingest, triggers, training jobs, registry and
// announcements. Create it with New, run it with Run.
type Companion struct {
	cfg      Config
	log      zerolog.Logger
	bucket   *cloudsync.Bucket
	key      ed25519.PrivateKey
	keys     bundle.TrustedKeys
	trainers map[string]map[string]trainer.Trainer // model -> experiment -> trainer
	index    *index
	jobs     *jobStore
	conn     *cloudsync.Conn

	queue      chan string   // job ids to run
	sem        chan struct{} // experiment slots (training.parallel)
	ingestMu   sync.Mutex    // one ingest pass at a time
	announceMu sync.Mutex    // one announcePending at a time
	lastFull   time.Time
	closeOnce  sync.Once

	cacheMu   sync.Mutex     // one prune or statistics download at a time
	pinMu     sync.Mutex     // guards pinned
	pinned    map[string]int // image keys running jobs need -> count
	lastPrune time.Time      // watch loop only

	mu          sync.Mutex
	cacheStatus CacheStatus
	lastIngest  IngestResult
	ingestErr   string
	httpAddr    string
	ready       chan struct{} // closed when Run has started its loops
}

// New validates cfg, reads the signing key, opens the index and the job
// records in state_dir (local files only, no network I/O). Jobs that were
// running when the last process stopped are queued again.
func New(cfg Config, log zerolog.Logger) (*Companion, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, err := bundle.ReadPrivateKey(cfg.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("signing_key: %w", err)
	}
	keys := bundle.TrustedKeys{}
	keys.Add(key.Public().(ed25519.PublicKey))
	bucket, err := cloudsync.OpenBucket(cfg.S3.syncConfig())
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	c := &Companion{
		cfg: cfg, log: log.With().Str("component", "cloud").Logger(), bucket: bucket, key: key, keys: keys,
		trainers: map[string]map[string]trainer.Trainer{},
		queue:    make(chan string, 1024), sem: make(chan struct{}, cfg.Training.Parallel),
		ready: make(chan struct{}), pinned: map[string]int{},
	}
	for _, m := range cfg.Models {
		c.trainers[m.Name] = map[string]trainer.Trainer{}
		for _, e := range m.Experiments {
			t, err := trainer.New(e, cfg.StateDir, cfg.Training.Timeout)
			if err != nil {
				return nil, fmt.Errorf("models %s experiment %s: %w", m.Name, e.Name, err)
			}
			c.trainers[m.Name][e.Name] = t
		}
	}
	if cfg.MQTT.Enabled() {
		if c.conn, err = cloudsync.NewConn(cfg.MQTT, cloudsync.ConnOptions{Logger: c.log,
			OnConnect: func(ctx context.Context) { c.announcePending(ctx) }}); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	if c.index, err = openIndex(filepath.Join(cfg.StateDir, "index.db")); err != nil {
		return nil, err
	}
	if c.jobs, err = openJobStore(filepath.Join(cfg.StateDir, "jobs")); err != nil {
		c.index.Close()
		return nil, fmt.Errorf("state_dir jobs: %w", err)
	}
	for _, j := range c.jobs.list() {
		if j.State == JobRunning {
			j.State, j.Attempt = JobQueued, j.Attempt+1
			if l, err := c.jobs.openLog(j.ID); err == nil {
				l.Printf("takt-cloud stopped while this job ran; it runs again (attempt %d)", j.Attempt)
				l.Close()
			}
			if err := c.jobs.save(j); err != nil {
				return nil, err
			}
		}
		if j.State == JobQueued {
			c.queue <- j.ID
		}
	}
	return c, nil
}

// Close closes the index; Run calls it when it returns.
func (c *Companion) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.bucket.Close()
		err = c.index.Close()
	})
	return err
}

// Addr is the HTTP API's address once Run listens ("" before, or without).
func (c *Companion) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.httpAddr
}

// Ready is closed once Run has started.
func (c *Companion) Ready() <-chan struct{} { return c.ready }

// Run ingests every ingest.interval, starts jobs on the triggers, runs the
// job queue, serves the HTTP API and keeps the MQTT connection, until ctx
// is done. It closes the Companion before it returns.
func (c *Companion) Run(ctx context.Context) error {
	defer c.Close()
	if c.cfg.S3.CreateBucket {
		if err := c.bucket.Ensure(ctx); err != nil {
			return fmt.Errorf("s3 bucket %s: %w", c.bucket.Name(), err)
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	if c.cfg.Listen != "" {
		ln, err := net.Listen("tcp", c.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		c.mu.Lock()
		c.httpAddr = ln.Addr().String()
		c.mu.Unlock()
		srv := &http.Server{Handler: c.handler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	if c.conn != nil {
		g.Go(func() error { return c.conn.Run(ctx) })
	}
	g.Go(func() error { return c.worker(ctx) })
	g.Go(func() error { return c.watch(ctx) })
	c.log.Info().Str("bucket", c.bucket.Name()).Str("http", c.Addr()).Int("models", len(c.cfg.Models)).Msg("takt-cloud started")
	close(c.ready)
	err := g.Wait()
	c.log.Info().Msg("takt-cloud stopped")
	return err
}

// watch is the ingest loop: a pass, then the triggers, then the pending
// announcements, every ingest.interval. Errors are logged and retried.
func (c *Companion) watch(ctx context.Context) error {
	for {
		if _, err := c.Ingest(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("ingest failed; retrying at the next interval")
		} else if ctx.Err() == nil {
			if err := c.CheckTriggers(ctx); err != nil {
				c.log.Warn().Err(err).Msg("trigger check failed")
			}
		}
		c.announcePending(ctx)
		if time.Since(c.lastPrune) >= cachePruneEvery && ctx.Err() == nil {
			c.lastPrune = time.Now()
			if _, err := c.PruneCache(); err != nil {
				c.log.Warn().Err(err).Msg("image cache prune failed")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.cfg.Ingest.Interval):
		}
	}
}

// Ingest runs one ingest pass now (a full scan when full_scan_interval has
// passed since the last one).
func (c *Companion) Ingest(ctx context.Context) (IngestResult, error) {
	c.ingestMu.Lock()
	defer c.ingestMu.Unlock()
	full := time.Since(c.lastFull) >= c.cfg.Ingest.FullScanInterval
	res, err := c.ingest(ctx, full)
	if err == nil {
		if n, serr := c.updateImageStats(ctx); serr != nil {
			c.log.Warn().Err(serr).Msg("image statistics not computed yet; retrying at the next pass")
		} else if n > 0 {
			c.log.Debug().Int("images", n).Msg("image statistics computed")
		}
	}
	c.mu.Lock()
	if err == nil {
		c.lastIngest, c.ingestErr = res, ""
		if full {
			c.lastFull = time.Now()
		}
	} else {
		c.ingestErr = err.Error()
	}
	c.mu.Unlock()
	if err == nil && res.Objects > 0 {
		c.log.Info().Int("verdicts", res.Verdicts).Int("images", res.Images).Int("labels", res.Labels).
			Int("skipped", res.Skipped).Bool("full", full).Dur("took", res.Elapsed).Msg("ingested")
	}
	return res, err
}

// CheckTriggers starts a job for each model whose label count or drift
// calls for one (and that has no job queued or running, and is out of its
// cooldown).
func (c *Companion) CheckTriggers(ctx context.Context) error {
	for _, m := range c.cfg.Models {
		if _, busy := c.jobs.active(m.Name); busy {
			continue
		}
		st, err := c.index.stats(m.Name)
		if err != nil {
			return err
		}
		if !st.LastAutoTrain.IsZero() && time.Since(st.LastAutoTrain) < m.Triggers.Cooldown {
			continue
		}
		trigger, reason := "", ""
		if n := st.Labels - st.LabelsAtTrain; m.Triggers.Labels > 0 && n >= m.Triggers.Labels {
			trigger, reason = TriggerLabels, fmt.Sprintf("%d new operator labels (triggers.labels %d)", n, m.Triggers.Labels)
		} else if m.Triggers.Drift.Threshold > 0 || m.Triggers.Drift.ImageThreshold > 0 {
			d, err := c.Drift(ctx, m.Name)
			if err != nil {
				return err
			}
			if d.Drifted && !slices.Contains(st.DriftHandled, d.Version) {
				var why []string
				if d.scoreDrifted() {
					why = append(why, fmt.Sprintf("PSI %.3f of %d recent PASS scores of %s over %.3f", d.PSI, d.Samples, d.Version, d.Threshold))
				}
				if ds := driftedStats(d.Images); len(ds) > 0 {
					why = append(why, fmt.Sprintf("image statistics of %d recent PASS images against %s's training images over %.3f: %s",
						d.Images[0].Samples, d.Version, m.Triggers.Drift.ImageThreshold, strings.Join(ds, ", ")))
				}
				trigger, reason = TriggerDrift, strings.Join(why, "; ")
			}
		}
		if trigger == "" {
			continue
		}
		if _, err := c.Enqueue(m.Name, trigger, reason); err != nil && !errors.Is(err, ErrBusy) {
			return err
		}
	}
	return nil
}

// Drift judges the promoted version of model against its baseline.
func (c *Companion) Drift(ctx context.Context, model string) (DriftStatus, error) {
	m, ok := c.cfg.model(model)
	if !ok {
		return DriftStatus{}, fmt.Errorf("%w: %q", ErrUnknownModel, model)
	}
	idx, _, err := c.readIndex(ctx, model)
	if err != nil {
		return DriftStatus{}, err
	}
	st, err := c.index.stats(model)
	if err != nil {
		return DriftStatus{}, err
	}
	if idx.Promoted == "" {
		return DriftStatus{Threshold: m.Triggers.Drift.Threshold, Reason: "no promoted version in the registry"}, nil
	}
	var baseline []float64
	var images map[string]StatBaseline
	for _, v := range idx.Versions {
		if v.Version == idx.Promoted {
			baseline, images = v.Baseline, v.ImageBaseline
		}
	}
	d := driftOf(m.Triggers.Drift, idx.Promoted, baseline, st.Recent[idx.Promoted])
	d.Drifted = d.scoreDrifted()
	if m.Triggers.Drift.ImageThreshold > 0 {
		d.Images = imageDriftOf(m.Triggers.Drift, images, st.RecentImages)
		for _, x := range d.Images {
			d.Drifted = d.Drifted || x.Drifted
		}
	}
	return d, nil
}

// Enqueue creates a queued job for model. ErrBusy when one is queued or
// running already; ErrUnknownModel for a model not in the config.
func (c *Companion) Enqueue(model, trigger, reason string) (Job, error) {
	if _, ok := c.cfg.model(model); !ok {
		return Job{}, fmt.Errorf("%w: %q (configured: %s)", ErrUnknownModel, model, strings.Join(c.modelNames(), ", "))
	}
	if j, busy := c.jobs.active(model); busy {
		return j, fmt.Errorf("%w: job %s", ErrBusy, j.ID)
	}
	seq, err := c.index.nextJobSeq()
	if err != nil {
		return Job{}, err
	}
	j := Job{ID: fmt.Sprintf("%06d", seq), Model: model, Trigger: trigger, Reason: reason, State: JobQueued,
		Attempt: 1, Created: time.Now().UTC()}
	if err := c.jobs.save(j); err != nil {
		return Job{}, err
	}
	if trigger != TriggerManual {
		if err := c.index.updateStats(model, func(s *ModelStats) { s.LastAutoTrain = time.Now().UTC() }); err != nil {
			return Job{}, err
		}
	}
	if l, err := c.jobs.openLog(j.ID); err == nil {
		l.Printf("queued: model %s, trigger %s %s", model, trigger, reason)
		l.Close()
	}
	c.log.Info().Str("job", j.ID).Str("model", model).Str("trigger", trigger).Str("reason", reason).Msg("training job queued")
	c.queue <- j.ID
	return j, nil
}

func (c *Companion) modelNames() []string {
	var out []string
	for _, m := range c.cfg.Models {
		out = append(out, m.Name)
	}
	return out
}

// Job returns a job and its log.
func (c *Companion) Job(id string) (Job, string, bool) {
	j, ok := c.jobs.get(id)
	if !ok {
		return Job{}, "", false
	}
	return j, c.jobs.readLog(id), true
}

// Jobs returns every job, oldest first.
func (c *Companion) Jobs() []Job { return c.jobs.list() }

// worker runs the queued jobs one after the other.
func (c *Companion) worker(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-c.queue:
			j, ok := c.jobs.get(id)
			if !ok || j.State != JobQueued {
				continue
			}
			c.runJob(ctx, j)
		}
	}
}

// runJob runs a job to its end. A job stopped by ctx (shutdown) stays
// "running" on disk, so the next start runs it again.
func (c *Companion) runJob(ctx context.Context, j Job) {
	l, err := c.jobs.openLog(j.ID)
	if err != nil {
		c.log.Error().Err(err).Str("job", j.ID).Msg("job log")
		return
	}
	defer l.Close()
	j.State, j.Started = JobRunning, time.Now().UTC()
	j.Experiments, j.Error = nil, ""
	if err := c.jobs.save(j); err != nil {
		c.log.Error().Err(err).Str("job", j.ID).Msg("save job")
		return
	}
	l.Printf("running (attempt %d)", j.Attempt)
	err = c.train(ctx, &j, l)
	if ctx.Err() != nil {
		l.Printf("stopped by shutdown; the job runs again at the next start")
		return
	}
	j.Finished = time.Now().UTC()
	if err != nil {
		j.State, j.Error = JobFailed, err.Error()
		l.Printf("failed: %v", err)
		c.log.Warn().Err(err).Str("job", j.ID).Str("model", j.Model).Msg("training job failed")
	} else {
		j.State = JobSucceeded
		l.Printf("done: %s %s promoted=%v (%s)", j.Model, j.Version, j.Promoted, j.Decision)
		c.log.Info().Str("job", j.ID).Str("model", j.Model).Str("version", j.Version).Bool("promoted", j.Promoted).
			Str("decision", j.Decision).Msg("training job done")
	}
	if err := c.jobs.save(j); err != nil {
		c.log.Error().Err(err).Str("job", j.ID).Msg("save job")
	}
	c.pruneJobDirs()
	if _, err := c.PruneCache(); err != nil {
		c.log.Warn().Err(err).Msg("image cache prune failed")
	}
}

// trained is one experiment's signed candidate and score.
type trained struct {
	exp    string
	cand   *trainer.Candidate
	bundle []byte
	score  trainer.Score
}

// train builds the dataset, trains every experiment (training.parallel at
// once), picks the best on the validation set, compares it with the
// promoted version on the same set, registers it and announces a promotion.
func (c *Companion) train(ctx context.Context, j *Job, l *jobLog) error {
	mc, ok := c.cfg.model(j.Model)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownModel, j.Model)
	}
	st, err := c.index.stats(j.Model)
	if err != nil {
		return err
	}
	labelsNow := st.Labels
	samples, err := c.index.samples(j.Model)
	if err != nil {
		return err
	}
	plan, err := planDataset(samples, c.cfg.Training)
	if err != nil {
		return fmt.Errorf("dataset: %w", err)
	}
	j.Dataset = plan.summary()
	l.Printf("dataset: %d samples indexed; train %d good + %d defect, validation %d good + %d defect, %d labelled",
		len(samples), j.Dataset.TrainGood, j.Dataset.TrainDefect, j.Dataset.ValGood, j.Dataset.ValDefect, j.Dataset.Labels)
	work := filepath.Join(c.jobs.jobDir(j.ID), "work")
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	// The job's images stay in the cache until it ends (PruneCache).
	all := slices.Concat(plan.TrainGood, plan.TrainDefect, plan.ValGood, plan.ValDefect)
	c.pin(all)
	defer c.unpin(all)
	data, val, err := c.materialize(ctx, j.Model, j.ID, work, plan)
	if err != nil {
		return fmt.Errorf("dataset: %w", err)
	}
	// The labels seen so far are spent on this job, as is the drift of the
	// running version, whatever the outcome: a failing job is not retried
	// in a loop by its trigger.
	idx, _, err := c.readIndex(ctx, j.Model)
	if err != nil {
		return err
	}
	if err := c.index.updateStats(j.Model, func(s *ModelStats) {
		s.LabelsAtTrain = labelsNow
		if j.Trigger == TriggerDrift && idx.Promoted != "" && !slices.Contains(s.DriftHandled, idx.Promoted) {
			s.DriftHandled = append(s.DriftHandled, idx.Promoted)
		}
	}); err != nil {
		return err
	}
	j.Version = nextVersion(idx, st.Versions)
	dataset := fmt.Sprintf("takt-cloud job %s: %d good, %d defect", j.ID, j.Dataset.TrainGood, j.Dataset.TrainDefect)
	l.Printf("candidate version %s; %d experiments, %d at once", j.Version, len(mc.Experiments), cap(c.sem))

	results := make([]*trained, len(mc.Experiments))
	j.Experiments = make([]ExperimentResult, len(mc.Experiments))
	for i, e := range mc.Experiments {
		j.Experiments[i] = ExperimentResult{Name: e.Name, Trainer: e.Trainer, State: JobQueued}
	}
	var mu sync.Mutex // guards j from here until wg.Wait
	var wg sync.WaitGroup
	for i, e := range mc.Experiments {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case c.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-c.sem }()
			mu.Lock()
			j.Experiments[i].State = JobRunning
			c.jobs.save(*j)
			mu.Unlock()
			start := time.Now()
			el := l.with(e.Name)
			r, err := c.experiment(ctx, j, e, data, val, dataset, el)
			el.flush()
			mu.Lock()
			defer mu.Unlock()
			res := &j.Experiments[i]
			res.Seconds = math.Round(time.Since(start).Seconds()*100) / 100
			if err != nil {
				res.State, res.Error = JobFailed, err.Error()
				l.Printf("experiment %s failed: %v", e.Name, err)
			} else {
				res.State, res.Score = JobSucceeded, &r.score
				results[i] = r
				l.Printf("experiment %s: auroc %s f1 %.3f fpr %.3f margin %.3f on %d good + %d defect (%.1fs)",
					e.Name, fmtAUROC(r.score.AUROC), r.score.F1, r.score.FPR, r.score.Margin, r.score.Good, r.score.Defect, res.Seconds)
			}
			c.jobs.save(*j)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var best *trained
	for _, r := range results {
		if r != nil && (best == nil || trainer.CompareScores(r.score, best.score) > 0) {
			best = r
		}
	}
	if best == nil {
		return errors.New("every experiment failed")
	}
	j.Winner = best.exp

	// The promotion rule: the winner must be at least as good as the
	// promoted version on the same validation set.
	curEntry, curBundle, err := c.promotedBundle(ctx, idx)
	if err != nil {
		return err
	}
	promote := true
	j.Decision = "no version promoted yet"
	if curBundle != nil {
		cur, err := trainer.Evaluate(ctx, curBundle, c.keys, val)
		if err != nil {
			return fmt.Errorf("evaluate the promoted version %s: %w", curEntry.Version, err)
		}
		j.CurrentVersion, j.Current = curEntry.Version, &cur
		l.Printf("promoted %s on the same set: auroc %s f1 %.3f fpr %.3f margin %.3f",
			curEntry.Version, fmtAUROC(cur.AUROC), cur.F1, cur.FPR, cur.Margin)
		if trainer.CompareScores(best.score, cur) >= 0 {
			j.Decision = fmt.Sprintf("%s is at least as good as %s on the validation set", best.exp, curEntry.Version)
		} else {
			promote = false
			j.Decision = fmt.Sprintf("%s is worse than the promoted %s on the validation set; kept but not promoted", best.exp, curEntry.Version)
		}
	}

	// The final bundle carries the validation metrics and the drift baseline.
	baseScores := best.cand.GoodScores
	if len(baseScores) < 10 {
		baseScores = append(slices.Clone(baseScores), best.score.GoodScores...)
	}
	metrics := best.score.Metrics()
	var baseline []float64
	if b, err := deciles(baseScores); err == nil {
		baseline = b
		for i, k := range baselineMetricKeys {
			metrics[k] = b[i]
		}
	} else {
		l.Printf("no drift baseline: %v", err)
	}
	var imgBase map[string]StatBaseline
	if stats, err := c.cachedImageStats(slices.Concat(plan.TrainGood, plan.ValGood)); err != nil {
		l.Printf("no image drift baseline: %v", err)
	} else if imgBase, err = imageBaseline(stats); err != nil {
		l.Printf("no image drift baseline: %v", err)
	} else {
		for _, name := range imageStatNames {
			metrics["image_"+name+"_mean"], metrics["image_"+name+"_sd"] = imgBase[name].Mean, imgBase[name].SD
		}
	}
	bundle, err := signBundle(best.cand, j.Model, j.Version, dataset, metrics, c.key)
	if err != nil {
		return err
	}
	allMetrics := maps.Clone(best.cand.Manifest.Metrics)
	if allMetrics == nil {
		allMetrics = map[string]float64{}
	}
	maps.Copy(allMetrics, metrics)
	entry := VersionEntry{Version: j.Version, Job: j.ID, Experiment: best.exp, Trigger: j.Trigger, Metrics: allMetrics,
		Baseline: baseline, ImageBaseline: imgBase, Decision: j.Decision}
	if _, err := c.publishVersion(ctx, j.Model, bundle, entry, promote); err != nil {
		return err
	}
	j.Promoted = promote
	l.Printf("registered %s (%d bytes) promoted=%v", BundleKey(j.Model, j.Version), len(bundle), promote)
	if promote {
		c.announce(ctx, mc, j.Version, bundle, l)
	}
	return nil
}

func fmtAUROC(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", v)
}

// experiment trains, signs and evaluates one experiment.
func (c *Companion) experiment(ctx context.Context, j *Job, e trainer.ExperimentConfig, data, val, dataset string, l *jobLog) (*trained, error) {
	out := filepath.Join(filepath.Dir(data), "out-"+e.Name)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, c.cfg.Training.Timeout)
	defer cancel()
	threads := max(1, 2/cap(c.sem))
	cand, err := c.trainers[j.Model][e.Name].Train(tctx, trainer.TrainInput{Data: data, Out: out, Name: j.Model, Version: j.Version,
		Job: j.ID, Threads: threads}, l)
	if err != nil {
		if errors.Is(tctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, fmt.Errorf("training.timeout %v reached: %w", c.cfg.Training.Timeout, err)
		}
		return nil, err
	}
	bundle, err := signBundle(cand, j.Model, j.Version, dataset, nil, c.key)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	s, err := trainer.Evaluate(ctx, bundle, c.keys, val)
	if err != nil {
		return nil, fmt.Errorf("validation: %w", err)
	}
	return &trained{exp: e.Name, cand: cand, bundle: bundle, score: s}, nil
}

// announce records the model/available message for the model's targets and
// publishes it (retained, QoS 1) when the broker is reachable; the watch
// loop retries until the broker acknowledged it.
func (c *Companion) announce(ctx context.Context, mc ModelConfig, version string, bundle []byte, l *jobLog) {
	if len(mc.Targets) == 0 {
		l.Printf("no targets configured: not announced")
		return
	}
	msg := &wire.ModelAvailableMsg{Schema: wire.MessageSchema, Name: mc.Name, Version: version,
		Key: BundleKey(mc.Name, version), SHA256: sha256Hex(bundle), Size: int64(len(bundle))}
	payload, err := wire.Encode(msg)
	if err != nil {
		l.Printf("announce: %v", err)
		return
	}
	var topics []string
	for _, t := range mc.Targets {
		topics = append(topics, t.Topic())
	}
	if err := c.index.putAnnouncement(mc.Name, announcement{Topics: topics, Payload: payload}); err != nil {
		l.Printf("announce: %v", err)
		return
	}
	l.Printf("announcing %s %s on %s", mc.Name, version, strings.Join(topics, ", "))
	c.announcePending(ctx)
}

// announcePending publishes the recorded announcements and forgets those
// the broker acknowledged.
func (c *Companion) announcePending(ctx context.Context) {
	if c.conn == nil {
		return
	}
	c.announceMu.Lock()
	defer c.announceMu.Unlock()
	pending, err := c.index.announcements()
	if err != nil || len(pending) == 0 {
		return
	}
	for model, a := range pending {
		var ps []cloudsync.Publication
		for _, t := range a.Topics {
			ps = append(ps, cloudsync.Publication{Topic: t, Payload: a.Payload, Retained: true})
		}
		if err := errors.Join(c.conn.PublishAll(ctx, ps)...); err != nil {
			c.log.Warn().Err(err).Str("model", model).Msg("model/available not published yet; retrying")
			continue
		}
		c.index.doneAnnouncement(model, a.Payload)
		c.log.Info().Str("model", model).Strs("topics", a.Topics).Msg("model/available published")
	}
}

// pruneJobDirs removes the work folders of all but the newest keep_jobs
// finished jobs (their job.json and log.txt stay).
func (c *Companion) pruneJobDirs() {
	var done []Job
	for _, j := range c.jobs.list() {
		if !j.Active() {
			done = append(done, j)
		}
	}
	for i := 0; i < len(done)-c.cfg.Training.KeepJobs; i++ {
		os.RemoveAll(filepath.Join(c.jobs.jobDir(done[i].ID), "work"))
	}
}
