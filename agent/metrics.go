package agent

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/takt-edge/takt/agent/store"
)

// metrics are the station's Prometheus metrics, on their own registry (no globals). Counters
// and histograms move as parts are committed; the rest is read when scraped.
type metrics struct {
	reg      *prometheus.Registry
	parts    *prometheus.CounterVec   // by verdict
	stage    *prometheus.HistogramVec // by stage
	labels   *prometheus.CounterVec   // by label
	triggers prometheus.Counter
	plcAns   *prometheus.HistogramVec // by outcome
	plcFail  prometheus.Counter
}

// Stage names of takt_stage_duration_seconds.
var stages = []string{"preprocess", "infer", "decide", "commit", "total"}

func newMetrics(l *live) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.parts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "takt_parts_total", Help: "Parts committed, by verdict (PASS, FAIL, NO_DECISION).",
	}, []string{"verdict"})
	m.stage = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "takt_stage_duration_seconds",
		Help:    "Per-part latency by stage: preprocess, infer (ONNX Run), decide (capture to decision), commit (fsync), total (capture to committed).",
		Buckets: []float64{.001, .0025, .005, .01, .02, .035, .05, .075, .1, .15, .25, .5, 1, 2.5},
	}, []string{"stage"})
	m.labels = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "takt_labels_total", Help: "Operator labels set, by label (false_reject, false_accept, cleared).",
	}, []string{"label"})
	m.triggers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "takt_triggers_total", Help: "Camera triggers queued (HTTP, PLC, MQTT).",
	})
	m.plcAns = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "takt_plc_answer_seconds", Help: "PLC trigger to answer, by outcome (verdict, fail_safe).",
		Buckets: []float64{.005, .01, .02, .035, .05, .075, .1, .15, .25, .5, 1, 2.5},
	}, []string{"outcome"})
	m.plcFail = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "takt_plc_fail_safe_total", Help: "PLC triggers answered with the fail-safe (no verdict in time, trigger rejected).",
	})
	for _, d := range []string{store.Pass, store.Fail, store.NoDecision} {
		m.parts.WithLabelValues(d)
	}
	for _, s := range stages {
		m.stage.WithLabelValues(s)
	}
	for _, l := range []string{LabelFalseReject, LabelFalseAccept, "cleared"} {
		m.labels.WithLabelValues(l)
	}
	m.plcAns.WithLabelValues("verdict")
	m.plcAns.WithLabelValues("fail_safe")
	m.reg.MustRegister(m.parts, m.stage, m.labels, m.triggers, m.plcAns, m.plcFail,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{l: l})
	return m
}

func (m *metrics) observe(v store.Verdict, total time.Duration) {
	m.parts.WithLabelValues(v.Decision).Inc()
	if v.Score == nil && v.Latency.InferMs == 0 {
		m.stage.WithLabelValues("total").Observe(total.Seconds())
		return
	}
	m.stage.WithLabelValues("preprocess").Observe(v.Latency.PreprocessMs / 1000)
	m.stage.WithLabelValues("infer").Observe(v.Latency.InferMs / 1000)
	m.stage.WithLabelValues("decide").Observe(v.Latency.DecideMs / 1000)
	m.stage.WithLabelValues("commit").Observe(max(total.Seconds()-v.Latency.TotalMs/1000, 0))
	m.stage.WithLabelValues("total").Observe(total.Seconds())
}

// stateCollector reads the station's state when scraped.
type stateCollector struct{ l *live }

var (
	descModel      = prometheus.NewDesc("takt_model_info", "The active models (value 1), one series per model of the station.", []string{"model", "name", "version", "sha256", "provider"}, nil)
	descProvider   = prometheus.NewDesc("takt_execution_provider", "The ONNX Runtime execution provider serving the first model (value 1).", []string{"provider"}, nil)
	descThreshold  = prometheus.NewDesc("takt_threshold", "The decision threshold in use, per model.", []string{"model"}, nil)
	descCamState   = prometheus.NewDesc("takt_camera_state", "Camera connection state (value 1 for the current state).", []string{"camera", "state"}, nil)
	descCamFrames  = prometheus.NewDesc("takt_camera_frames_total", "Frames captured.", []string{"camera"}, nil)
	descCamStalls  = prometheus.NewDesc("takt_camera_stalls_total", "Camera opens or reads that overran their deadline.", []string{"camera"}, nil)
	descCamRecon   = prometheus.NewDesc("takt_camera_reconnects_total", "Successful camera reopens after a stall or error.", []string{"camera"}, nil)
	descCamDrop    = prometheus.NewDesc("takt_camera_dropped_frames_total", "Frames captured but never inspected (free_run).", []string{"camera"}, nil)
	descCamMiss    = prometheus.NewDesc("takt_camera_trigger_misses_total", "Triggers that got no frame.", []string{"camera"}, nil)
	descDBBytes    = prometheus.NewDesc("takt_store_db_bytes", "Size of the verdict database file.", nil, nil)
	descImgBytes   = prometheus.NewDesc("takt_store_image_bytes", "Bytes of kept image files.", nil, nil)
	descImgQuota   = prometheus.NewDesc("takt_store_image_quota_bytes", "Image quota; 0 means none.", nil, nil)
	descEvicted    = prometheus.NewDesc("takt_store_images_evicted_total", "Images removed by the quota or their age.", nil, nil)
	descEvictedUns = prometheus.NewDesc("takt_store_images_evicted_unsynced_total", "Evicted images that were not yet uploaded.", nil, nil)
	descDropped    = prometheus.NewDesc("takt_store_images_dropped_total", "New images not stored: no room in the quota.", nil, nil)
	descPruned     = prometheus.NewDesc("takt_store_records_pruned_total", "Synced verdict records removed by age or quota.", nil, nil)
	descCompacted  = prometheus.NewDesc("takt_store_compactions_total", "Online compactions of the verdict database that swapped the file.", nil, nil)
	descCompactAb  = prometheus.NewDesc("takt_store_compactions_abandoned_total", "Online compactions given up because the store was written during the copy.", nil, nil)
	descCompactB   = prometheus.NewDesc("takt_store_compacted_bytes_total", "Bytes the online compactions took off the verdict database file.", nil, nil)
	descCompactP   = prometheus.NewDesc("takt_store_compact_pause_seconds", "How long commits waited for the last online compaction's swap.", nil, nil)
	descCompactPM  = prometheus.NewDesc("takt_store_compact_pause_max_seconds", "The longest such wait since the agent started.", nil, nil)
	descBacklog    = prometheus.NewDesc("takt_sync_backlog_verdicts", "Verdicts waiting for upload.", nil, nil)
	descBacklogB   = prometheus.NewDesc("takt_sync_backlog_bytes", "Bytes waiting for upload (records and images).", nil, nil)
	descBacklogAge = prometheus.NewDesc("takt_sync_backlog_oldest_seconds", "Age of the oldest verdict waiting for upload; 0 when none.", nil, nil)
	descLink       = prometheus.NewDesc("takt_link_state", "State of an outside link (mqtt, s3); value 1 for the current state.", []string{"link", "state"}, nil)
	descPLC        = prometheus.NewDesc("takt_plc_state", "PLC link state (value 1 for the current state).", []string{"mode", "state"}, nil)
	descReady      = prometheus.NewDesc("takt_ready", "1 when /readyz is ok.", nil, nil)
	descHealthy    = prometheus.NewDesc("takt_healthy", "1 when /healthz is ok (the loop is not wedged).", nil, nil)
	descLastCommit = prometheus.NewDesc("takt_last_commit_timestamp_seconds", "Unix time of the last committed verdict.", nil, nil)
	descStart      = prometheus.NewDesc("takt_start_timestamp_seconds", "Unix time the inspection loop started.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descModel, descProvider, descThreshold, descCamState, descCamFrames, descCamStalls,
		descCamRecon, descCamDrop, descCamMiss, descDBBytes, descImgBytes, descImgQuota, descEvicted, descEvictedUns,
		descDropped, descPruned, descCompacted, descCompactAb, descCompactB, descCompactP, descCompactPM, descBacklog, descBacklogB, descBacklogAge, descLink, descPLC, descReady, descHealthy,
		descLastCommit, descStart} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.l
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, m := range l.models.snapshot() {
		mi := m.info.Model
		gauge(descModel, 1, m.name, mi.Name, mi.Version, mi.SHA256, m.provider())
		gauge(descThreshold, m.threshold, m.name)
	}
	gauge(descProvider, 1, l.provider())
	for _, c := range l.cams {
		id, s := c.ID(), c.Stats()
		gauge(descCamState, 1, id, string(c.State()))
		counter(descCamFrames, float64(s.Frames), id)
		counter(descCamStalls, float64(s.Stalls), id)
		counter(descCamRecon, float64(s.Reconnects), id)
		counter(descCamDrop, float64(s.Dropped), id)
		counter(descCamMiss, float64(s.TriggerMisses), id)
	}
	gauge(descDBBytes, float64(l.dbBytes()))
	ss := l.st.Stats()
	gauge(descImgBytes, float64(ss.ImageBytes))
	gauge(descImgQuota, float64(l.imageQuota()))
	counter(descEvicted, float64(ss.ImagesEvicted))
	counter(descEvictedUns, float64(ss.ImagesEvictedUnsynced))
	counter(descDropped, float64(ss.ImagesDropped))
	counter(descPruned, float64(ss.RecordsPruned))
	counter(descCompacted, float64(ss.Compactions))
	counter(descCompactAb, float64(ss.CompactionsAbandoned))
	counter(descCompactB, float64(ss.CompactedBytes))
	gauge(descCompactP, ss.CompactPauseLast.Seconds())
	gauge(descCompactPM, ss.CompactPauseMax.Seconds())
	if b, err := l.st.Backlog(); err == nil {
		gauge(descBacklog, float64(b.Count))
		gauge(descBacklogB, float64(b.Bytes))
		age := 0.0
		if !b.Oldest.IsZero() {
			age = time.Since(b.Oldest).Seconds()
		}
		gauge(descBacklogAge, age)
	}
	for _, name := range []string{"mqtt", "s3"} {
		// Only the state word: details such as the backlog would make a new series each time.
		state, _, _ := strings.Cut(l.link(name), ",")
		state, _, _ = strings.Cut(state, ":")
		gauge(descLink, 1, name, state)
	}
	gauge(descPLC, 1, l.cfg.PLC.Mode, l.plcStatus())
	ready, _ := l.readiness()
	healthy, _ := l.healthy()
	gauge(descReady, b2f(ready))
	gauge(descHealthy, b2f(healthy))
	if t := l.lastCommit.Load(); t != 0 {
		gauge(descLastCommit, float64(t)/1e9)
	} else {
		gauge(descLastCommit, 0)
	}
	gauge(descStart, float64(l.started.UnixNano())/1e9)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// imageQuota is the image quota the store enforces (store.images_max_bytes); 0 is none.
func (l *live) imageQuota() int64 { return int64(l.cfg.Store.ImagesMaxBytes) }
