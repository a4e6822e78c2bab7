package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/agent/web"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models"
)

// stationModel is one loaded model of the station with the threshold it decides by.
// Its runtime is closed when the last holder releases it: the active set holds one
// reference, and every part in inspection holds one more.
type stationModel struct {
	name      string // the config's models[].name, else the model's own name
	source    string // bundle or ONNX file it came from
	rt        *models.Runtime
	info      models.Info
	threshold float64
	// op is how the threshold was chosen and the rates the trainer expects there (the
	// bundle's manifest); nil when unknown. A configured threshold that overrides the
	// bundle's is one set by hand, with no expected rates.
	op    *wire.OperatingPoint
	since time.Time // when it started serving (this agent start, or its swap)
	seen  seenCounts
	refs  atomic.Int32
}

// seenCounts is what the station saw of one model since it started serving.
type seenCounts struct {
	decided, failed atomic.Int64 // parts it PASSed or FAILed; those it FAILed
	// Operator labels on its parts: a FAIL (or NO_DECISION) that is good, a PASS that is
	// defective.
	falseRejects, falseAccepts atomic.Int64
}

func (c *seenCounts) count(decision string) {
	switch decision {
	case store.Fail:
		c.failed.Add(1)
		c.decided.Add(1)
	case store.Pass:
		c.decided.Add(1)
	}
}

// seenRates is what the station saw of m since it started serving.
func (m *stationModel) seenRates() web.SeenRates {
	c := &m.seen
	r := web.SeenRates{Since: m.since.UTC(), Parts: c.decided.Load(), Fail: c.failed.Load(),
		LabelledFalseRejects: c.falseRejects.Load(), LabelledFalseAccepts: c.falseAccepts.Load()}
	if r.Parts > 0 {
		r.FailShare = float64(r.Fail) / float64(r.Parts)
		r.LabelledFalseRejectShare = float64(r.LabelledFalseRejects) / float64(r.Parts)
	}
	if defective := r.Fail - r.LabelledFalseRejects + r.LabelledFalseAccepts; defective > 0 {
		r.LabelledEscapeShare = float64(r.LabelledFalseAccepts) / float64(defective)
	}
	return r
}

// newStationModel wraps a loaded runtime; threshold 0 takes the model's own. op is the
// operating point its bundle records, nil when unknown.
func newStationModel(name, source string, rt *models.Runtime, threshold float64, op *wire.OperatingPoint) (*stationModel, error) {
	info := rt.Info()
	if threshold <= 0 {
		threshold = info.Threshold
	}
	if threshold <= 0 {
		return nil, fmt.Errorf("model %s carries no threshold; set its threshold in the config", source)
	}
	if name == "" {
		name = info.Model.Name
	}
	if op != nil && op.Threshold != threshold {
		op = &wire.OperatingPoint{Threshold: threshold}
	}
	m := &stationModel{name: name, source: source, rt: rt, info: info, threshold: threshold, op: op, since: time.Now()}
	m.refs.Store(1)
	return m, nil
}

// countLabel moves verdict v's operator label from old to label in the counts of the model
// that decided it, when that model serves now and decided it since it started serving.
func (h *activeModels) countLabel(v *store.Verdict, old, label string) {
	if old == label {
		return
	}
	for _, m := range h.snapshot() {
		decision, ok := v.Decision, v.Model.SHA256 == m.info.Model.SHA256 && len(v.Models) == 0
		for _, o := range v.Models {
			if o.Name == m.name && o.Model.SHA256 == m.info.Model.SHA256 {
				decision, ok = o.Decision, true
			}
		}
		if !ok || v.Time.Before(m.since) {
			continue
		}
		for l, d := range map[string]int64{old: -1, label: 1} {
			switch {
			case l == LabelFalseReject && decision == store.Fail:
				m.seen.falseRejects.Add(d)
			case l == LabelFalseAccept && decision == store.Pass:
				m.seen.falseAccepts.Add(d)
			}
		}
	}
}

func (m *stationModel) hold() { m.refs.Add(1) }

// release drops one reference; the last one closes the runtime and has the freed C heap
// returned to the system (trimHeapSoon).
func (m *stationModel) release() {
	if m.refs.Add(-1) == 0 {
		m.rt.Close()
		trimHeapSoon()
	}
}

// heapTrims counts trims asked for and not yet started or running.
var heapTrims atomic.Int32

// trimHeapSoon returns the C heap's free pages to the system on a goroutine of its own:
// ONNX Runtime frees a closed session's memory to glibc, which keeps it, so without a trim
// RSS grows with every swap; the trim takes milliseconds and the last release may be the
// inspection loop's. Requests made while a trim runs fold into one more run.
func trimHeapSoon() {
	if heapTrims.Add(1) > 1 {
		return // the running trimmer sees this request
	}
	go func() {
		for {
			n := heapTrims.Load()
			models.TrimHeap()
			if heapTrims.Add(-n) == 0 {
				return
			}
		}
	}()
}

// provider is the execution provider serving now (a TensorRT build finishing in the
// background changes it).
func (m *stationModel) provider() string { return m.rt.Info().Provider }

// record names the model as verdicts store it.
func (m *stationModel) record() store.Model {
	return store.Model{Name: m.info.Model.Name, Version: m.info.Model.Version, SHA256: m.info.Model.SHA256}
}

// outcome is m's entry in a part's per-model outcomes, before it ran.
func (m *stationModel) outcome() store.ModelScore {
	return store.ModelScore{Name: m.name, Model: m.record(), Threshold: m.threshold, Provider: m.info.Provider}
}

// modelSet is the models that score every frame, in config order. A part PASSes only when
// every model passes it. A set is never changed; a swap makes a new one.
type modelSet struct {
	models []*stationModel
}

// activeModels is the model set serving now. The inspection loop acquires it once per part;
// a model update replaces one model at a frame boundary, and the replaced runtime closes
// when the last part that was using it released it.
type activeModels struct {
	mu  sync.Mutex
	set *modelSet
}

func newActiveModels(ms []*stationModel) *activeModels {
	return &activeModels{set: &modelSet{models: ms}}
}

// acquire returns the set serving now and the func that releases it; every model in the
// set stays open until then.
func (h *activeModels) acquire() (*modelSet, func()) {
	h.mu.Lock()
	s := h.set
	for _, m := range s.models {
		m.hold()
	}
	h.mu.Unlock()
	return s, func() {
		for _, m := range s.models {
			m.release()
		}
	}
}

// snapshot returns the models serving now for status and metrics. Their info and threshold
// may be read; their runtime only through provider, which is safe after close.
func (h *activeModels) snapshot() []*stationModel {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.set.models
}

// replace puts next in place of the model named name; the next part acquired uses it. The
// replaced model is returned; its runtime closes after its last in-flight part.
func (h *activeModels) replace(name string, next *stationModel) (*stationModel, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := make([]*stationModel, len(h.set.models))
	copy(ms, h.set.models)
	for i, m := range ms {
		if m.name == name {
			ms[i] = next
			h.set = &modelSet{models: ms}
			m.release()
			return m, nil
		}
	}
	return nil, fmt.Errorf("no active model named %q", name)
}

// close releases the set's references; runtimes close as their last parts finish. The
// set's info stays readable for a status asked late.
func (h *activeModels) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.set.models {
		m.release()
	}
}

// heatmap is a copy of the anomaly map of the part's deciding model, for the operator page.
type heatmap struct {
	values        []float32
	width, height int
}

// score runs every model of the set on the frame within the part's deadline and fills v's
// decision. FAIL from any model rejects the part; otherwise a NO_DECISION from any model
// makes the part NO_DECISION; the part PASSes only when every model passes it. The verdict's
// score, threshold and model are those of the model that decided: the failing (or undecided)
// one with the highest score over threshold, or for a PASS the one closest to its threshold.
func (s *modelSet) score(ctx context.Context, f camera.Frame, deadline time.Duration, wantMap bool, v *store.Verdict) *heatmap {
	captured := f.Time
	partCtx, cancel := context.WithDeadline(ctx, captured.Add(deadline))
	defer cancel()
	outs := make([]store.ModelScore, len(s.models))
	decider := -1
	for i, m := range s.models {
		res, err := m.rt.Infer(partCtx, f)
		elapsed := time.Since(captured)
		o := &outs[i]
		*o = m.outcome()
		if res.Provider != "" {
			o.Provider = res.Provider // changes when a background TensorRT build completes
		}
		d, reason := decide(res.Score, err, m.threshold, elapsed, deadline)
		o.Decision, o.Reason = string(d), reason
		m.seen.count(o.Decision)
		if err == nil && !math.IsNaN(res.Score) && !math.IsInf(res.Score, 0) {
			score := res.Score
			o.Score = &score
		}
		if err == nil {
			o.Class, o.Confidence = res.Class, res.Confidence
			for _, b := range res.Boxes { // the runtime reuses res.Boxes: copy
				o.Boxes = append(o.Boxes, store.Box{Class: b.Class, Confidence: b.Confidence, X0: b.X0, Y0: b.Y0, X1: b.X1, Y1: b.Y1})
			}
		}
		v.Latency.PreprocessMs += ms(res.Timings.Preprocess)
		v.Latency.InferMs += ms(res.Timings.Infer)
		if decider < 0 || outranks(o, &outs[decider]) {
			decider = i
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// The part is late: the models left cannot decide it in time either.
			for j := i + 1; j < len(s.models); j++ {
				outs[j] = s.models[j].outcome()
				outs[j].Decision, outs[j].Reason = store.NoDecision, "not run: the part's deadline passed"
			}
			break
		}
	}
	v.Latency.DecideMs = ms(time.Since(captured))
	d := outs[decider]
	v.Decision, v.Reason, v.Score, v.Threshold, v.Model, v.Provider = d.Decision, d.Reason, d.Score, d.Threshold, d.Model, d.Provider
	v.Class, v.Confidence, v.Boxes = d.Class, d.Confidence, d.Boxes
	if len(s.models) > 1 {
		v.Models = outs
		if v.Decision != store.Pass {
			v.Reason = d.Name + ": " + v.Reason
		}
	}
	m := s.models[decider]
	if !wantMap || v.Score == nil || m.info.MapWidth == 0 || f.Pix == nil {
		return nil
	}
	// The runtime still holds this part's map: the set is held, and only this loop infers.
	return &heatmap{values: m.rt.CopyMap(nil), width: m.info.MapWidth, height: m.info.MapHeight}
}

// outranks says whether model outcome a decides the part rather than b: FAIL over
// NO_DECISION over PASS, then the higher score relative to its threshold.
func outranks(a, b *store.ModelScore) bool {
	rank := func(d string) int {
		switch d {
		case store.Fail:
			return 2
		case store.NoDecision:
			return 1
		}
		return 0
	}
	if ra, rb := rank(a.Decision), rank(b.Decision); ra != rb {
		return ra > rb
	}
	return relScore(a) > relScore(b)
}

func relScore(o *store.ModelScore) float64 {
	if o.Score == nil || o.Threshold <= 0 {
		return math.Inf(-1)
	}
	return *o.Score / o.Threshold
}
