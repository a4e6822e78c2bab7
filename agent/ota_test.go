package agent

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/ota"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models/bundle"
)

// otaConfig is a test station whose model scores a part by its mean gray level (threshold
// 1: every part PASSes), bundle 0.2.0 signed by the line key, with model updates on and
// short policies. A tiny model keeps the bundles small and the checks fast.
func otaConfig(t *testing.T, line signer) Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model-0.2.0.tar")
	if err := bundle.WriteBundleFile(path, graphManifest("0.2.0", 1), meanGraph(t, 1), nil, line.priv); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Model = ModelConfig{Bundle: path, TrustedKeys: []string{line.pub}}
	cfg.Camera.Loop = true
	cfg.Deadline = time.Second
	cfg.ModelUpdate.Enabled = true
	// The latency budget is 300 ms: the mean model takes well under it even with the spikes
	// of a loaded machine, the slow one well over it (more so under -race).
	cfg.ModelUpdate.Validate = ValidatePolicy{LatencyRuns: 10, LatencyFraction: 0.3}
	cfg.ModelUpdate.Shadow.Parts, cfg.ModelUpdate.Shadow.MinParts = 8, 8
	cfg.ModelUpdate.Watch.Parts, cfg.ModelUpdate.Watch.MinParts = 8, 4
	return cfg
}

// servedBy waits for 3 parts on version after the newest verdict so far and returns the
// parts from the first one on version on: a part in flight at a swap or rollback may still
// finish on the model it started on.
func servedBy(t *testing.T, r *running, version string) []store.Verdict {
	t.Helper()
	last := r.a.live.Load().st.LastID()
	after := func() []store.Verdict {
		vs := verdictsAfter(t, r, last)
		for i, v := range vs {
			if v.Model.Version == version {
				return vs[i:]
			}
		}
		return nil
	}
	waitFor(t, "parts on "+version, 30*time.Second, func() bool { return len(after()) >= 3 })
	return after()
}

// lastVerdicts returns the verdicts committed after id.
func verdictsAfter(t *testing.T, r *running, id uint64) []store.Verdict {
	t.Helper()
	l := r.a.live.Load()
	if l == nil {
		t.Fatal("agent not running")
	}
	vs, err := l.st.List(id, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestModelUpdateOverMQTT announces bad bundles one after the other, then a good one, as
// takt-cloud would (bundle in S3, retained model/available): each bad one ends rejected with
// a reason naming its fault while the station inspects on, the good one is shadowed,
// promoted, watched, and inspects.
func TestModelUpdateOverMQTT(t *testing.T) {
	keys := t.TempDir()
	line, stranger, retired := newSigner(t, keys, "line"), newSigner(t, keys, "stranger"), newSigner(t, keys, "retired")
	broker := cloudtest.StartMosquitto(t)
	s3 := cloudtest.StartS3(t)
	bk := newBucket(t, s3, "takt")
	cfg := otaConfig(t, line)
	cfg.MQTT = testMQTTConfig(broker.URL)
	bk.syncTo(&cfg)
	cfg.ModelUpdate.TrustedKeys = []string{line.pub, retired.pub}
	cfg.ModelUpdate.RevokedKeys = []string{retired.id}
	w := newStationWatcher(t, broker.URL, cfg)
	r := startAgent(t, cfg)
	defer r.stop()

	mean := meanGraph(t, 1)
	bundle := func(v string, key signer) []byte { return buildTestBundle(t, graphManifest(v, 1), mean, key.priv) }
	good := bundle("0.9.0", line)
	unsigned := tamper(t, bundle("0.3.1", line), func(m map[string][]byte) { delete(m, "signature") })
	tamperedModel := tamper(t, bundle("0.3.4", line), func(m map[string][]byte) {
		mod := bytes.Clone(m["model.onnx"])
		mod[len(mod)/2] ^= 0xff
		m["model.onnx"] = mod
	})
	tamperedManifest := tamper(t, bundle("0.3.5", line), func(m map[string][]byte) {
		m["manifest.json"] = bytes.Replace(m["manifest.json"], []byte(`"fail": 1`), []byte(`"fail": 100`), 1)
	})
	cases := []struct {
		name, version string
		bundle        []byte
		announce      func(m *wire.ModelAvailableMsg) // changes the announcement
		line          bool                            // announced on the line's topic
		want          string                          // in the rejection reason
		limit         string                          // the figures' limit; "" for a refusal without figures
	}{
		{"unsigned", "0.3.1", unsigned, nil, false, "unsigned", ""},
		{"wrong key", "0.3.2", bundle("0.3.2", stranger), nil, true, "not trusted", ""},
		{"revoked key", "0.3.3", bundle("0.3.3", retired), nil, false, "revoked", ""},
		{"tampered model file", "0.3.4", tamperedModel, nil, false, "sha256", ""},
		{"tampered manifest", "0.3.5", tamperedManifest, nil, false, "does not match manifest.json", ""},
		{"downgrade", "0.1.0", bundle("0.1.0", line), nil, false, "downgrade", ""},
		{"truncated download", "0.3.6", bundle("0.3.6", line), func(m *wire.ModelAvailableMsg) {
			m.Size++ // the object in the bucket is shorter than announced
		}, false, "download", ""},
		{"NaN scores", "0.3.7", buildTestBundle(t, graphManifest("0.3.7", 0.5), nanGraph(t), line.priv), nil, false, "score NaN", "validate.errors"},
		{"FAIL rate jumps", "0.3.9", buildTestBundle(t, graphManifest("0.3.9", 0.01), meanGraph(t, 1), line.priv), nil, false, "shadow: agreement", "shadow.min_agreement"},
	}
	for _, c := range cases {
		key := fmt.Sprintf("models/fixture-part/%s/bundle.tar", c.version)
		bk.put(t, key, c.bundle)
		m := wire.ModelAvailableMsg{Name: "fixture-part", Version: c.version, Key: key, SHA256: sha256Of(c.bundle), Size: int64(len(c.bundle))}
		if c.announce != nil {
			c.announce(&m)
		}
		w.announce(t, c.line, m)
		final, steps := w.waitFinal(t, c.version, 60*time.Second)
		if final.State != wire.ModelRejected || !strings.Contains(final.Reason, c.want) {
			t.Errorf("%s: final status %s %q (steps %v), want rejected with a reason containing %q", c.name, final.State, final.Reason, steps, c.want)
		} else {
			t.Logf("%s: %s: %s", c.name, final.State, final.Reason)
		}
		if got := final.Figures; (c.limit == "") != (got == nil) || got != nil && got.Limit != c.limit {
			t.Errorf("%s: figures %+v, want limit %q", c.name, got, c.limit)
		}
	}
	// The FAIL-rate model's shadow figures, as typed fields.
	if f := w.statuses("0.3.9"); len(f) == 0 || f[len(f)-1].Figures == nil {
		t.Errorf("0.3.9: no figures in %+v", f)
	} else if fig := f[len(f)-1].Figures; fig.Step != wire.FiguresShadow || fig.Parts != 8 || fig.Agreement != 0 ||
		fig.CandidateFailRate != 1 || fig.BaselineFailRate != 0 || fig.Errors != 0 || fig.CandidateP99Ms <= 0 {
		t.Errorf("0.3.9 shadow figures %+v: want 8 parts, agreement 0, FAIL rate 1 vs 0, no errors, a measured p99", fig)
	}

	// The station inspected on 0.2.0 all along.
	last := r.a.live.Load().st.LastID()
	waitFor(t, "parts after the bad bundles", 30*time.Second, func() bool { return len(verdictsAfter(t, r, last)) >= 3 })
	for _, v := range verdictsAfter(t, r, last) {
		if v.Model.Version != "0.2.0" {
			t.Fatalf("verdict %d on model %s, want 0.2.0 (no bad bundle may serve)", v.ID, v.Model.Version)
		}
	}

	key := "models/fixture-part/0.9.0/bundle.tar"
	bk.put(t, key, good)
	w.announce(t, false, wire.ModelAvailableMsg{Name: "fixture-part", Version: "0.9.0", Key: key, SHA256: sha256Of(good), Size: int64(len(good))})
	final, steps := w.waitFinal(t, "0.9.0", 90*time.Second)
	if final.State != wire.ModelActive {
		t.Fatalf("good bundle: final status %s %q (steps %v), want active", final.State, final.Reason, steps)
	}
	if got := strings.Join(steps, ","); !strings.HasPrefix(got, "downloading,validating,validating,shadow,active") {
		t.Errorf("good bundle steps %s, want downloading,validating (verify),validating,shadow,active", got)
	}
	if fig := final.Figures; fig == nil || fig.Step != wire.FiguresShadow || fig.Parts != 8 || fig.Agreement != 1 || fig.Limit != "" {
		t.Errorf("promotion figures %+v: want the shadow run's, 8 parts, agreement 1, no limit crossed", fig)
	}
	waitFor(t, "the watch to pass", 60*time.Second, func() bool {
		for _, s := range w.statuses("0.9.0") {
			if s.State == wire.ModelRolledBack {
				t.Fatalf("good bundle rolled back: %s", s.Reason)
			}
			if strings.HasPrefix(s.Reason, "watch passed") {
				if fig := s.Figures; fig == nil || fig.Step != wire.FiguresWatch || fig.Parts != 8 || fig.Limit != "" || fig.CandidateFailRate != 0 {
					t.Errorf("watch passed figures %+v: want the watch's 8 parts, no FAIL, no limit", fig)
				}
				return true
			}
		}
		return false
	})
	last = r.a.live.Load().st.LastID()
	waitFor(t, "parts on the new model", 30*time.Second, func() bool { return len(verdictsAfter(t, r, last)) >= 3 })
	for _, v := range verdictsAfter(t, r, last) {
		if v.Model.Version != "0.9.0" || v.Decision == store.NoDecision {
			t.Fatalf("verdict %d: model %s %s %q, want 0.9.0 deciding", v.ID, v.Model.Version, v.Decision, v.Reason)
		}
	}
	st := r.a.ota.Snapshot()
	m := st.Models["fixture-part"]
	if m == nil || m.Active == nil || m.Active.Version != "0.9.0" || m.Previous != nil || st.Candidate != nil {
		t.Fatalf("state %+v: want 0.9.0 active over the configured model, no candidate", st)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// A restart resumes on 0.9.0.
	r2 := startAgent(t, cfg)
	defer r2.stop()
	waitFor(t, "parts after the restart", 30*time.Second, func() bool { return len(verdictsAfter(t, r2, 0)) > 0 })
	last = r2.a.live.Load().st.LastID()
	waitFor(t, "more parts after the restart", 30*time.Second, func() bool { return len(verdictsAfter(t, r2, last)) >= 2 })
	for _, v := range verdictsAfter(t, r2, last) {
		if v.Model.Version != "0.9.0" {
			t.Fatalf("after a restart: verdict on %s, want 0.9.0", v.Model.Version)
		}
	}
}

// TestModelUpdateRejectsSlowModel installs a model whose measured latency is over 10x the
// station's budget (15 ms here: a low budget, not a model that takes seconds): validation
// refuses it after two timed runs, not latency_runs, model/status on a real Mosquitto says
// why with typed figures, and the station inspects on its model all along.
func TestModelUpdateRejectsSlowModel(t *testing.T) {
	keys := t.TempDir()
	line := newSigner(t, keys, "line")
	broker := cloudtest.StartMosquitto(t)
	cfg := otaConfig(t, line)
	cfg.MQTT = testMQTTConfig(broker.URL)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.ModelUpdate.Validate = ValidatePolicy{LatencyRuns: 30, LatencyFraction: 0.015} // 15 ms of the 1 s deadline
	w := newStationWatcher(t, broker.URL, cfg)
	r := startAgent(t, cfg)
	defer r.stop()
	waitFor(t, "first parts", 30*time.Second, func() bool { return len(verdictsAfter(t, r, 0)) >= 2 })

	// 150 rounds of ~0.2 GFLOP: far over the 15 ms budget on any core, slower when loaded.
	slow := buildTestBundle(t, graphManifest("0.4.0", 0.5), slowGraph(t, 150), line.priv)
	path := filepath.Join(t.TempDir(), "slow.tar")
	if err := bundle.WriteFileAtomic(path, slow); err != nil {
		t.Fatal(err)
	}
	client := cfg
	client.HTTP.Listen = strings.TrimPrefix(r.base, "http://")
	if err := InstallModel(context.Background(), client, path); err != nil {
		t.Fatalf("InstallModel: %v", err)
	}
	final, steps := w.waitFinal(t, "0.4.0", 60*time.Second)
	fig := final.Figures
	if final.State != wire.ModelRejected || !strings.Contains(final.Reason, "validate: latency p99") || fig == nil {
		t.Fatalf("slow model: %s %q (steps %v) figures %+v, want rejected by validation's latency check with figures", final.State, final.Reason, steps, fig)
	}
	ratio := fig.CandidateP99Ms / fig.BudgetMs
	t.Logf("slow model: %s (p99 %.1f ms = %.1fx the %.1f ms budget, %d timed runs)", final.Reason, fig.CandidateP99Ms, ratio, fig.BudgetMs, fig.Parts)
	if fig.Step != wire.FiguresValidate || fig.Limit != "validate.latency_fraction" || fig.BudgetMs != 15 {
		t.Errorf("figures %+v: want step validate, limit validate.latency_fraction, budget 15 ms", fig)
	}
	if ratio < 10 {
		t.Errorf("measured latency %.1f ms is %.1fx the budget %.1f ms; the test wants a model >= 10x over it", fig.CandidateP99Ms, ratio, fig.BudgetMs)
	}
	if fig.Parts != 2 {
		t.Errorf("validation timed %d runs of a model 10x over its budget, want 2 (it stops once two runs in a row are over)", fig.Parts)
	}
	var validating time.Time
	for _, s := range w.statuses("0.4.0") {
		if s.State == wire.ModelValidating {
			validating = s.Time
		}
	}
	if took := final.Time.Sub(validating); took > 20*time.Second {
		t.Errorf("validation took %s to refuse the slow model, want seconds", took)
	}

	// The station inspects on 0.2.0, deciding, and its state names no candidate.
	last := r.a.live.Load().st.LastID()
	waitFor(t, "parts after the slow model", 30*time.Second, func() bool { return len(verdictsAfter(t, r, last)) >= 3 })
	for _, v := range verdictsAfter(t, r, last) {
		if v.Model.Version != "0.2.0" || v.Decision != store.Pass {
			t.Fatalf("verdict %d: %s on %s, want PASS on 0.2.0", v.ID, v.Decision, v.Model.Version)
		}
	}
	if st := r.a.ota.Snapshot(); st.Candidate != nil || st.Last == nil || st.Last.Figures == nil || st.Last.State != wire.ModelRejected {
		t.Errorf("state %+v: want no candidate and the rejection with its figures", st)
	}
}

// writeGrayParts (re)writes the camera folder's parts, all of gray level v, each by an
// atomic rename so that the camera never reads half a file.
func writeGrayParts(t *testing.T, dir string, v uint8) {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 256, 192))
	for i := range img.Pix {
		img.Pix[i] = v
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := bundle.WriteFileAtomic(filepath.Join(dir, fmt.Sprintf("part-%d.png", i)), buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestModelUpdateWatchRollsBackSlowModel promotes a model that validates within the
// budget on the dark parts of the moment and turns slow (~100x) when the parts turn bright
// after its promotion: the watch rolls it back on its latency p99 and model/status, on a
// real Mosquitto, carries the watch's figures.
func TestModelUpdateWatchRollsBackSlowModel(t *testing.T) {
	keys := t.TempDir()
	line := newSigner(t, keys, "line")
	broker := cloudtest.StartMosquitto(t)
	parts := t.TempDir()
	writeGrayParts(t, parts, 0)
	cfg := otaConfig(t, line)
	cfg.Camera.Path = parts
	cfg.MQTT = testMQTTConfig(broker.URL)
	cfg.HTTP.Listen = "127.0.0.1:0"
	// 150 ms: the dark parts stay under it on a loaded machine under -race; the bright
	// parts, a hundred times dearer, are over it and over 3x the configured model's p99.
	cfg.ModelUpdate.Validate = ValidatePolicy{LatencyRuns: 10, LatencyFraction: 0.15}
	cfg.ModelUpdate.Shadow.Parts = 0
	cfg.ModelUpdate.Watch.Parts, cfg.ModelUpdate.Watch.MinParts = 100000, 5
	w := newStationWatcher(t, broker.URL, cfg)
	r := startAgent(t, cfg)
	defer r.stop()
	waitFor(t, "first parts", 30*time.Second, func() bool { return len(verdictsAfter(t, r, 0)) >= 3 })

	path := filepath.Join(t.TempDir(), "bright-slow.tar")
	if err := bundle.WriteBundleFile(path, graphManifest("0.5.0", 2), brightSlowGraph(t), nil, line.priv); err != nil {
		t.Fatal(err)
	}
	client := cfg
	client.HTTP.Listen = strings.TrimPrefix(r.base, "http://")
	if err := InstallModel(context.Background(), client, path); err != nil {
		t.Fatalf("InstallModel: %v", err)
	}
	if final, steps := w.waitFinal(t, "0.5.0", 60*time.Second); final.State != wire.ModelActive {
		t.Fatalf("0.5.0: %s %q (steps %v), want active: on dark parts it is within the budget", final.State, final.Reason, steps)
	}
	writeGrayParts(t, parts, 250) // the parts turn bright: the new model turns ~100x slower
	var rolled wire.ModelStatusMsg
	waitFor(t, "the watch to roll 0.5.0 back", 60*time.Second, func() bool {
		for _, s := range w.statuses("0.5.0") {
			if s.State == wire.ModelRolledBack {
				rolled = s
				return true
			}
		}
		return false
	})
	fig := rolled.Figures
	t.Logf("rolled back: %s; figures %+v", rolled.Reason, fig)
	if !strings.Contains(rolled.Reason, "watch: inference p99") || !strings.Contains(rolled.Reason, "back on the configured model") {
		t.Errorf("rollback reason %q: want the watch's latency p99 and the model it went back to", rolled.Reason)
	}
	if fig == nil || fig.Step != wire.FiguresWatch || fig.Limit != "watch.max_latency_ratio" || fig.CandidateP99Ms <= fig.BudgetMs ||
		fig.CandidateP99Ms <= 3*fig.BaselineP99Ms || fig.BudgetMs != 150 {
		t.Errorf("rollback figures %+v: want the watch's, limit watch.max_latency_ratio, p99 over the 150 ms budget and 3x the baseline", fig)
	}
	for _, v := range servedBy(t, r, "0.2.0") {
		if v.Model.Version != "0.2.0" || v.Decision != store.Pass {
			t.Fatalf("after the rollback: verdict %d %s on %s, want PASS on 0.2.0", v.ID, v.Decision, v.Model.Version)
		}
	}
}

// TestModelUpdateWatchRollsBack installs over HTTP a bundle that passes the checks before
// promotion (shadow off) but FAILs every part: the watch rolls back to the previous bundle.
func TestModelUpdateWatchRollsBack(t *testing.T) {
	keys := t.TempDir()
	line := newSigner(t, keys, "line")
	cfg := otaConfig(t, line)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.ModelUpdate.Shadow.Parts = 0
	cfg.ModelUpdate.Watch.Parts, cfg.ModelUpdate.Watch.MinParts = 20, 5
	r := startAgent(t, cfg)
	defer r.stop()

	// Installs go through the client takt-agent model install uses.
	client := cfg
	client.HTTP.Listen = strings.TrimPrefix(r.base, "http://")
	install := func(version string, data []byte) {
		t.Helper()
		path := filepath.Join(t.TempDir(), version+".tar")
		if err := bundle.WriteFileAtomic(path, data); err != nil {
			t.Fatal(err)
		}
		if err := InstallModel(context.Background(), client, path); err != nil {
			t.Fatalf("InstallModel: %v", err)
		}
	}
	state := func() ota.State {
		var st ota.State
		getJSON(t, http.DefaultClient, r.base+"/model/update", http.StatusOK, &st)
		return st
	}
	lastState := func(version, want string) bool {
		l := state().Last
		return l != nil && l.Version == version && l.State == want
	}
	install("0.5.0", buildTestBundle(t, graphManifest("0.5.0", 1), meanGraph(t, 1), line.priv))
	waitFor(t, "0.5.0 active", 60*time.Second, func() bool { return lastState("0.5.0", wire.ModelActive) })
	waitFor(t, "0.5.0 watch passed", 60*time.Second, func() bool {
		st := state()
		return st.Models["fixture-part"] != nil && st.Models["fixture-part"].Watch == nil
	})
	install("0.6.0", buildTestBundle(t, graphManifest("0.6.0", 0.01), meanGraph(t, 1), line.priv))
	waitFor(t, "0.6.0 rolled back", 60*time.Second, func() bool { return lastState("0.6.0", wire.ModelRolledBack) })
	st := state()
	if !strings.Contains(st.Last.Reason, "FAIL rate") || !strings.Contains(st.Last.Reason, "back on 0.5.0") {
		t.Errorf("rollback reason %q: want the FAIL rate and the version it went back to", st.Last.Reason)
	}
	if m := st.Models["fixture-part"]; m == nil || m.Active == nil || m.Active.Version != "0.5.0" {
		t.Fatalf("state after rollback %+v: want 0.5.0 active", st.Models["fixture-part"])
	}
	for _, v := range servedBy(t, r, "0.5.0") {
		if v.Model.Version != "0.5.0" || v.Decision == store.NoDecision {
			t.Fatalf("after the rollback: verdict on %s %s, want 0.5.0 deciding", v.Model.Version, v.Decision)
		}
	}
	// The model that was rolled back is not installed again.
	install("0.6.0", buildTestBundle(t, graphManifest("0.6.0", 0.01), meanGraph(t, 1), line.priv))
	waitFor(t, "0.6.0 refused", 30*time.Second, func() bool { return lastState("0.6.0", wire.ModelRejected) })
	if st := state(); !strings.Contains(st.Last.Reason, "rolled back") {
		t.Errorf("re-install of a rolled-back model: %q, want a reason saying it was rolled back", st.Last.Reason)
	}
}
