package ota

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models"
)

// partOutcome is what the updater sees of one part, for the model it updates.
type partOutcome struct {
	Decision string  // store.Pass, store.Fail or store.NoDecision
	Score    float64 // NaN when there is none
	// ModelErr: the model failed this part (inference error or a score that is not a
	// finite number), not the camera or the deadline.
	ModelErr bool
	InferMs  float64
}

// sampleFrame returns a recent live frame, or a mid-gray 640x480 frame before the first part.
func (u *Updater) sampleFrame() camera.Frame {
	u.frameMu.Lock()
	defer u.frameMu.Unlock()
	if u.lastFrame.f.Pix != nil {
		f := u.lastFrame.f
		f.Pix = slices.Clone(f.Pix)
		return f
	}
	pix := make([]byte, 640*480*3)
	for i := range pix {
		pix[i] = 128
	}
	return camera.Frame{Width: 640, Height: 480, Channels: 3, Pix: pix, Time: time.Now()}
}

// frameCopy holds a copy of a frame in a buffer it reuses.
type frameCopy struct {
	f  camera.Frame
	at time.Time
}

func (c *frameCopy) copyFrom(f camera.Frame) {
	buf := c.f.Pix[:0]
	c.f = f
	c.f.Pix = append(buf, f.Pix...)
	c.at = time.Now()
}

// recentParts keeps the serving model's last parts: the baseline a promotion is watched
// against when no shadow run measured one.
type recentParts struct {
	mu   sync.Mutex
	ring []partOutcome
	next int
	full bool
}

func (r *recentParts) init(n int) { r.ring = make([]partOutcome, n) }

func (r *recentParts) add(o partOutcome) {
	r.mu.Lock()
	r.ring[r.next] = o
	r.next = (r.next + 1) % len(r.ring)
	r.full = r.full || r.next == 0
	r.mu.Unlock()
}

func (r *recentParts) reset() {
	r.mu.Lock()
	r.next, r.full = 0, false
	r.mu.Unlock()
}

func (r *recentParts) baseline() otaBaseline {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.ring)
	}
	var b otaBaseline
	lat := make([]float64, 0, n)
	for _, o := range r.ring[:n] {
		b.Parts++
		if o.Decision == store.Fail {
			b.FailRate++
		}
		if o.ModelErr {
			b.ErrorRate++
		} else {
			lat = append(lat, o.InferMs)
		}
	}
	if b.Parts > 0 {
		b.FailRate /= float64(b.Parts)
		b.ErrorRate /= float64(b.Parts)
	}
	b.InferP99 = quantile(lat, 0.99)
	return b
}

// shadowRun scores live frames with the candidate on its own goroutine. The inspection loop
// offers frames after the part was answered; a frame that finds no free buffer is dropped
// (counted), so the active path never waits for the candidate. The worker rests after each
// inference so that it runs at most maxBusy of the time: on a station whose cores the active
// model already uses, the shadow's share of them is bounded, not whatever it can take.
type shadowRun struct {
	rt        *models.Runtime
	threshold float64
	maxBusy   float64
	q         chan shadowItem
	free      chan []byte
	cancel    context.CancelFunc
	done      chan struct{}
	want      int // parts to compare
	dropped   atomic.Int64

	mu  sync.Mutex
	fig ShadowFigures
	lat []float64 // candidate inference ms
	act []float64 // active inference ms
	cs  []float64 // candidate scores
	as  []float64 // active scores
	// enough is closed when want parts were compared.
	enough chan struct{}
}

type shadowItem struct {
	f   camera.Frame
	buf []byte
	o   partOutcome
}

// ShadowFigures are the outcome of a shadow run, as model/status reports it.
type ShadowFigures struct {
	Compared       int
	Agree          int
	Dropped        int64
	CandErrors     int
	Agreement      float64
	CandP50        float64 // candidate inference ms
	CandP99        float64
	ActiveP99      float64 // active inference ms on the same parts
	CandFailRate   float64
	ActiveFailRate float64
	CandScoreP50   float64
	ActiveScoreP50 float64
	CandScoreP99   float64
	ActiveScoreP99 float64
	// ActivePassed are the compared parts the serving model PASSed and the candidate
	// scored: good parts by the station's current judgement. CandFailOfPassed are those
	// the candidate would FAIL: the false rejects it would add.
	ActivePassed     int
	CandFailOfPassed int
	// ExpectedFalseReject is the candidate's expected false-reject rate (its manifest's);
	// nil when its bundle states none.
	ExpectedFalseReject *float64
}

func (f ShadowFigures) String() string {
	s := fmt.Sprintf("parts %d, agreement %.3f, candidate errors %d, dropped %d, infer p99 %.2f ms vs %.2f ms, FAIL rate %.3f vs %.3f, score p50 %.4g vs %.4g, p99 %.4g vs %.4g",
		f.Compared, f.Agreement, f.CandErrors, f.Dropped, f.CandP99, f.ActiveP99, f.CandFailRate, f.ActiveFailRate,
		f.CandScoreP50, f.ActiveScoreP50, f.CandScoreP99, f.ActiveScoreP99)
	if f.ExpectedFalseReject != nil {
		s += ", false rejects " + f.falseRejects().String()
	}
	return s
}

// falseRejects is the candidate's FAILs among the parts the serving model PASSed, against
// its expected false-reject rate (untested: rateVerdict.above is left false).
func (f ShadowFigures) falseRejects() rateVerdict {
	e := 0.0
	if f.ExpectedFalseReject != nil {
		e = *f.ExpectedFalseReject
	}
	return rateTest{}.judge(f.CandFailOfPassed, f.ActivePassed, e)
}

// wire is f as model/status carries it; limit is the policy key crossed, "" for none.
func (f ShadowFigures) wire(limit string, budgetMs float64) *wire.ModelFigures {
	w := &wire.ModelFigures{Step: wire.FiguresShadow, Parts: f.Compared, Agreement: f.Agreement, Dropped: f.Dropped,
		Errors: f.CandErrors, CandidateP50Ms: f.CandP50, CandidateP99Ms: f.CandP99, BaselineP99Ms: f.ActiveP99, BudgetMs: budgetMs,
		CandidateFailRate: f.CandFailRate, BaselineFailRate: f.ActiveFailRate, Limit: limit}
	if f.ExpectedFalseReject != nil {
		v := f.falseRejects()
		setFalseRejects(w, *f.ExpectedFalseReject, v)
	}
	return w
}

// setFalseRejects puts a false-reject test's figures into w.
func setFalseRejects(w *wire.ModelFigures, expected float64, v rateVerdict) {
	obs, p := v.observed(), v.p
	w.ExpectedFalseReject, w.ObservedFalseReject, w.FalseRejectParts, w.FalseRejectP = &expected, &obs, v.n, &p
}

func newShadowRun(rt *models.Runtime, threshold, maxBusy float64, queue, want int) *shadowRun {
	s := &shadowRun{rt: rt, threshold: threshold, maxBusy: maxBusy, q: make(chan shadowItem, queue), free: make(chan []byte, queue),
		done: make(chan struct{}), want: want, enough: make(chan struct{})}
	for range queue {
		s.free <- nil
	}
	return s
}

// offer copies f into a free buffer and queues it; without a free buffer it drops it.
func (s *shadowRun) offer(f camera.Frame, o partOutcome) {
	if f.Pix == nil {
		return
	}
	select {
	case buf := <-s.free:
		buf = append(buf[:0], f.Pix...)
		g := f
		g.Pix = buf
		s.q <- shadowItem{f: g, buf: buf, o: o} // never blocks: one buffer per queue slot
	default:
		s.dropped.Add(1)
	}
}

// run scores queued frames until ctx is done, resting after each so that it is busy at
// most maxBusy of the time.
func (s *shadowRun) run(ctx context.Context) {
	defer close(s.done)
	rest := time.NewTimer(time.Hour)
	rest.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-s.q:
			start := time.Now()
			res, err := s.rt.Infer(ctx, it.f)
			busy := time.Since(start)
			s.free <- it.buf
			if ctx.Err() != nil {
				return
			}
			s.record(it.o, res, err)
			if s.maxBusy < 1 {
				rest.Reset(time.Duration(float64(busy) * (1 - s.maxBusy) / s.maxBusy))
				select {
				case <-ctx.Done():
					return
				case <-rest.C:
				}
			}
		}
	}
}

func (s *shadowRun) record(o partOutcome, res models.Result, err error) {
	if o.ModelErr || o.Decision == store.NoDecision {
		return // nothing to compare with
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &s.fig
	f.Compared++
	candFail := false
	if err != nil || math.IsNaN(res.Score) || math.IsInf(res.Score, 0) {
		f.CandErrors++
	} else {
		candFail = res.Score > s.threshold
		s.lat = append(s.lat, ms(res.Timings.Total))
		s.cs = append(s.cs, res.Score)
		if candFail {
			f.CandFailRate++
		}
		if o.Decision == store.Pass {
			f.ActivePassed++
			if candFail {
				f.CandFailOfPassed++
			}
		}
		if candFail == (o.Decision == store.Fail) {
			f.Agree++
		}
	}
	s.act = append(s.act, o.InferMs)
	if !math.IsNaN(o.Score) {
		s.as = append(s.as, o.Score)
	}
	if o.Decision == store.Fail {
		f.ActiveFailRate++
	}
	if f.Compared == s.want {
		close(s.enough)
	}
}

// figures computes the figures so far.
func (s *shadowRun) figures() ShadowFigures {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fig
	f.Dropped = s.dropped.Load()
	if f.Compared > 0 {
		f.Agreement = float64(f.Agree) / float64(f.Compared)
		f.CandFailRate /= float64(f.Compared)
		f.ActiveFailRate /= float64(f.Compared)
	}
	f.CandP50, f.CandP99, f.ActiveP99 = quantile(s.lat, 0.5), quantile(s.lat, 0.99), quantile(s.act, 0.99)
	f.CandScoreP50, f.CandScoreP99 = quantile(s.cs, 0.5), quantile(s.cs, 0.99)
	f.ActiveScoreP50, f.ActiveScoreP99 = quantile(s.as, 0.5), quantile(s.as, 0.99)
	return f
}

func (s *shadowRun) stop() {
	s.cancel()
	<-s.done
}

// runShadow runs the candidate beside the active model until shadow.parts parts were
// compared or shadow.duration passed.
func (u *Updater) runShadow(ctx context.Context, name string, rt *models.Runtime, threshold float64) (ShadowFigures, error) {
	u.target.Store(&name)
	s := newShadowRun(rt, threshold, u.cfg.Shadow.MaxBusy, u.cfg.Shadow.Queue, u.cfg.Shadow.Parts)
	sctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go s.run(sctx)
	u.shadow.Store(s)
	var timeout <-chan time.Time
	if d := u.cfg.Shadow.Duration; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
	case <-s.enough:
	case <-timeout:
	}
	u.shadow.CompareAndSwap(s, nil)
	s.stop()
	if ctx.Err() != nil {
		return ShadowFigures{}, ctx.Err()
	}
	return s.figures(), nil
}

// judgeShadow returns why the figures fail the policy and the policy key crossed, or "".
func (u *Updater) judgeShadow(f ShadowFigures) (why, limit string) {
	p := u.cfg.Shadow
	switch {
	case f.Compared < min(p.MinParts, p.Parts):
		return fmt.Sprintf("only %d parts compared, policy needs %d", f.Compared, min(p.MinParts, p.Parts)), "shadow.min_parts"
	case f.CandErrors > 0:
		return fmt.Sprintf("the candidate failed %d of %d parts (NaN or error)", f.CandErrors, f.Compared), "shadow.errors"
	case f.ExpectedFalseReject != nil && u.shadowFalseRejects(f).above:
		v := u.shadowFalseRejects(f)
		return fmt.Sprintf("false rejects: the candidate would FAIL %d of the %d parts the serving model PASSed (%.2f%%), clearly above the %.2f%% its manifest expects (one-sided binomial p=%.2g < %g)",
			v.k, v.n, 100*v.observed(), 100*v.expected, v.p, p.FalseRejectSignificance), "shadow.false_reject_significance"
	case f.Agreement < p.MinAgreement:
		return fmt.Sprintf("agreement %.3f below the policy's %.3f", f.Agreement, p.MinAgreement), "shadow.min_agreement"
	case f.CandP99 > p.MaxLatencyRatio*f.ActiveP99 && f.CandP99 > u.latencyBudget():
		return fmt.Sprintf("inference p99 %.2f ms is over %.1fx the active model's %.2f ms and over the latency budget %.1f ms",
			f.CandP99, p.MaxLatencyRatio, f.ActiveP99, u.latencyBudget()), "shadow.max_latency_ratio"
	}
	return "", ""
}

// shadowFalseRejects tests the candidate's FAILs among the parts the serving model PASSed
// against its expected false-reject rate.
func (u *Updater) shadowFalseRejects(f ShadowFigures) rateVerdict {
	p := u.cfg.Shadow
	return rateTest{significance: p.FalseRejectSignificance, minParts: p.FalseRejectMinParts}.judge(f.CandFailOfPassed, f.ActivePassed, *f.ExpectedFalseReject)
}

// watchRun counts a promoted model's parts against the previous model's baseline. add
// reports when the watch passed; crossing a limit sends the reason on rollback once.
type watchRun struct {
	name     string  // the station model watched
	floorMs  float64 // latency below it never rolls back: the validation budget
	p        WatchPolicy
	base     otaBaseline
	expected *float64 // the model's expected false-reject rate; nil when unknown
	rollback chan<- string

	mu           sync.Mutex
	parts, fails int
	errs         int
	lat          []float64
	ended        bool
	limit        string // the policy key crossed
}

func newWatchRun(name string, p WatchPolicy, base otaBaseline, expected *float64, floorMs float64, rollback chan<- string) *watchRun {
	return &watchRun{name: name, p: p, base: base, expected: clonePtr(expected), floorMs: floorMs, rollback: rollback}
}

// falseRejects tests the FAIL share against the expected false-reject rate plus the
// previous model's FAIL share (the defects the line makes, as the station judged them
// before); w.mu held, w.expected set.
func (w *watchRun) falseRejects() rateVerdict {
	t := rateTest{significance: w.p.FalseRejectSignificance, minParts: w.p.FalseRejectMinParts}
	return t.judge(w.fails, w.parts, *w.expected+w.base.FailRate)
}

// add counts one part; it returns true once, when the watch passed.
func (w *watchRun) add(o partOutcome) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return false
	}
	w.parts++
	if o.ModelErr {
		w.errs++
	} else {
		w.lat = append(w.lat, o.InferMs)
	}
	if o.Decision == store.Fail {
		w.fails++
	}
	if why, limit := w.crossed(); why != "" {
		w.ended, w.limit = true, limit
		select {
		case w.rollback <- why:
		default:
		}
		return false
	}
	if w.parts >= w.p.Parts {
		w.ended = true
		return true
	}
	return false
}

// crossed returns the limit the watch crossed and its policy key, or ""; w.mu held.
func (w *watchRun) crossed() (why, limit string) {
	n := float64(w.parts)
	// Errors are judged from the first part (counted over at least min_parts): a model that
	// yields NaN must not serve min_parts parts first.
	if allowed := (w.p.MaxErrorRate + w.base.ErrorRate) * max(n, float64(w.p.MinParts)); float64(w.errs) > allowed {
		return fmt.Sprintf("watch: %d of %d parts had a NaN score or an inference error (limit %.3f)", w.errs, w.parts, w.p.MaxErrorRate),
			"watch.max_error_rate"
	}
	if w.parts < w.p.MinParts {
		return "", ""
	}
	if fr := float64(w.fails) / n; fr > w.base.FailRate+w.p.MaxFailRateIncrease {
		return fmt.Sprintf("watch: FAIL rate %.3f over %d parts, previous model %.3f (limit +%.3f)", fr, w.parts, w.base.FailRate, w.p.MaxFailRateIncrease),
			"watch.max_fail_rate_increase"
	}
	if w.expected != nil {
		if v := w.falseRejects(); v.above {
			return fmt.Sprintf("watch: false rejects: FAIL share %.2f%% (%d of %d parts) clearly above the %.2f%% expected false rejects plus the previous model's %.2f%% FAIL share (one-sided binomial p=%.2g < %g)",
				100*v.observed(), v.k, v.n, 100**w.expected, 100*w.base.FailRate, v.p, w.p.FalseRejectSignificance), "watch.false_reject_significance"
		}
	}
	if p99 := quantile(w.lat, 0.99); w.base.InferP99 > 0 && p99 > w.p.MaxLatencyRatio*w.base.InferP99 && p99 > w.floorMs {
		return fmt.Sprintf("watch: inference p99 %.2f ms, previous model %.2f ms (limit %.1fx and the latency budget %.1f ms)",
			p99, w.base.InferP99, w.p.MaxLatencyRatio, w.floorMs), "watch.max_latency_ratio"
	}
	return "", ""
}

func (w *watchRun) figures() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := max(1, float64(w.parts))
	s := fmt.Sprintf("%d parts, FAIL rate %.3f (previous %.3f), errors %d, inference p99 %.2f ms (previous %.2f ms)",
		w.parts, float64(w.fails)/n, w.base.FailRate, w.errs, quantile(w.lat, 0.99), w.base.InferP99)
	if w.expected != nil {
		s += fmt.Sprintf(", FAIL share %.2f%% against %.2f%% expected false rejects plus the previous %.2f%%",
			100*float64(w.fails)/n, 100**w.expected, 100*w.base.FailRate)
	}
	return s
}

// wire is the watch's figures as model/status carries them, with the limit it crossed.
func (w *watchRun) wire() *wire.ModelFigures {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := max(1, float64(w.parts))
	f := &wire.ModelFigures{Step: wire.FiguresWatch, Parts: w.parts, Errors: w.errs,
		CandidateP50Ms: quantile(w.lat, 0.5), CandidateP99Ms: quantile(w.lat, 0.99), BaselineP99Ms: w.base.InferP99, BudgetMs: w.floorMs,
		CandidateFailRate: float64(w.fails) / n, BaselineFailRate: w.base.FailRate, Limit: w.limit}
	if w.expected != nil {
		setFalseRejects(f, *w.expected, w.falseRejects())
	}
	return f
}

// quantile is the q-quantile (nearest rank) of xs; 0 for none.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(q*float64(len(s))))-1)]
}

// MeasureShadow runs rt in shadow beside station model name, at maxBusy and without a part
// limit, until ctx is done; wait returns after it stopped. It is there for the shadow's
// overhead figures (make bench); it must not run beside an install.
func (u *Updater) MeasureShadow(ctx context.Context, name string, rt *models.Runtime, threshold, maxBusy float64) (figures func() ShadowFigures, wait func()) {
	u.cfg.Shadow.Parts, u.cfg.Shadow.MaxBusy = 1<<30, maxBusy
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.runShadow(ctx, name, rt, threshold)
	}()
	for u.shadow.Load() == nil && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	return func() ShadowFigures {
		if s := u.shadow.Load(); s != nil {
			return s.figures()
		}
		return ShadowFigures{}
	}, func() { <-done }
}
