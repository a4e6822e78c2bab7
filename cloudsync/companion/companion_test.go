package companion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/cloudsync/wire"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/train"
)

var day = time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)

// Ingest reads verdict batches, images and labels of two stations into the
// index, counts them per model, and does not read anything twice: not in a
// second pass, not after a restart (a new Companion on the same state
// folder), not in a full scan; what arrives later is added.
func TestIngestIncrementalAcrossRestarts(t *testing.T) {
	e := newEnv(t, false)
	img := []byte("\x89PNG not decoded at ingest")
	var a, b []part
	for i := uint64(1); i <= 40; i++ {
		p := part{id: i, decision: "PASS", score: 0.3}
		if i%10 == 0 {
			p.decision, p.score = "FAIL", 2
		}
		if i%2 == 0 {
			p.image = img
		}
		a = append(a, p)
		b = append(b, part{id: i, decision: "PASS", score: 0.4})
	}
	e.upload("st-a", "part", day, a[:20])
	e.upload("st-a", "part", day.Add(24*time.Hour), a[20:])
	e.upload("st-b", "other", day, b)
	e.label("st-a", day, 10, 1, "false_reject")
	e.label("st-a", day, 3, 2, "false_accept")
	e.label("st-a", day, 99, 3, "false_reject") // its verdict comes later

	ctx := context.Background()
	c := e.newCompanion(e.cfg)
	res, err := c.Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdicts != 80 || res.Images != 20 || res.Labels != 3 {
		t.Errorf("first pass = %+v, want 80 verdicts, 20 images, 3 labels", res)
	}
	st, _ := c.index.stats("part")
	if st.Verdicts != 40 || st.Pass != 36 || st.Fail != 4 || st.Images != 20 || st.Labels != 2 || st.Versions["0.9.0"] != 40 {
		t.Errorf("stats of part = %+v; want 40 verdicts (36 PASS, 4 FAIL), 20 images, 2 labels counted", st)
	}
	if len(st.Recent["0.9.0"]) != 36 {
		t.Errorf("recent PASS scores = %d, want 36", len(st.Recent["0.9.0"]))
	}
	if other, _ := c.index.stats("other"); other.Verdicts != 40 {
		t.Errorf("stats of other = %+v, want 40 verdicts", other)
	}
	res, err = c.Ingest(ctx)
	if err != nil || res.Objects != 0 {
		t.Errorf("second pass = %+v, %v; want nothing new", res, err)
	}
	seen, samples := c.index.counts()
	c.Close()

	// A restart: cursors and seen keys come from the index file.
	c = e.newCompanion(e.cfg)
	defer c.Close()
	c.lastFull = time.Now() // an incremental pass first
	if res, err = c.Ingest(ctx); err != nil || res.Objects != 0 {
		t.Errorf("pass after restart = %+v, %v; want nothing new", res, err)
	}
	c.lastFull = time.Time{} // then a full scan: lists everything, applies nothing twice
	if res, err = c.Ingest(ctx); err != nil || res.Objects != 0 {
		t.Errorf("full scan after restart = %+v, %v; want nothing new", res, err)
	}
	if s2, n2 := c.index.counts(); s2 != seen || n2 != samples {
		t.Errorf("index holds %d keys, %d samples after restart; want %d, %d", s2, n2, seen, samples)
	}

	// New uploads, the late verdict 99 among them: its early label counts now.
	e.upload("st-a", "part", day.Add(48*time.Hour), []part{{id: 99, decision: "FAIL", score: 3, image: img}})
	e.label("st-a", day, 3, 4, "") // a cleared label still counts as an operator action
	c.lastFull = time.Now()
	if res, err = c.Ingest(ctx); err != nil || res.Verdicts != 1 || res.Images != 1 || res.Labels != 1 {
		t.Errorf("pass after new uploads = %+v, %v; want 1 verdict, 1 image, 1 label", res, err)
	}
	st, _ = c.index.stats("part")
	if st.Verdicts != 41 || st.Labels != 4 || st.Images != 21 {
		t.Errorf("stats after new uploads = %+v; want 41 verdicts, 4 labels, 21 images", st)
	}
	samplesPart, _ := c.index.samples("part")
	for _, s := range samplesPart {
		if s.Station == "st-a" && s.ID == 3 && (s.Label != "" || s.LabelSeq != 4) {
			t.Errorf("verdict 3: label %q seq %d, want cleared by seq 4", s.Label, s.LabelSeq)
		}
		if s.Station == "st-a" && s.ID == 99 && (s.Label != "false_reject" || s.Image == "") {
			t.Errorf("verdict 99 = %+v, want its early label and image", s)
		}
	}
}

// The PSI of a sample against its own deciles is small; a shift by half a
// spread, or a wider spread, is over 0.25.
func TestDriftStatistic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	normal := func(n int, mean, sd float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = mean + sd*rng.NormFloat64()
		}
		return out
	}
	base, err := deciles(normal(400, 1, 0.2))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DriftConfig{Threshold: 0.25, Window: 200, MinSamples: 50}
	for _, tc := range []struct {
		name    string
		recent  []float64
		drifted bool
	}{
		{"same distribution", normal(200, 1, 0.2), false},
		{"shifted by half a spread", normal(200, 1.1+0.05, 0.2), true},
		{"wider spread", normal(200, 1, 0.45), true},
		{"too few samples", normal(20, 3, 0.2), false},
	} {
		d := driftOf(cfg, "1.0.0", base, tc.recent)
		if d.Drifted != tc.drifted {
			t.Errorf("%s: PSI %.3f on %d samples drifted=%v (%s), want %v", tc.name, d.PSI, d.Samples, d.Drifted, d.Reason, tc.drifted)
		}
		if tc.name == "same distribution" && d.PSI > 0.1 {
			t.Errorf("same distribution: PSI %.3f, want < 0.1", d.PSI)
		}
	}
}

// putIndex writes a registry index whose promoted version has a baseline.
func (e *env) putIndex(model, version string, baseline []float64) {
	e.t.Helper()
	idx := RegistryIndex{Name: model, Promoted: version, Versions: []VersionEntry{{Version: version, Key: BundleKey(model, version),
		SHA256: strings.Repeat("0", 64), Baseline: baseline, Promoted: true}}}
	data, _ := json.Marshal(idx)
	if err := e.bucket.PutIfMatch(context.Background(), IndexKey(model), data, "application/json", ""); err != nil {
		e.t.Fatal(err)
	}
}

// The triggers: recent PASS scores of the promoted version shifted from its
// baseline start a drift job, unshifted ones do not; enough new operator
// labels start a labels job, fewer do not; a model with an active job gets
// no second one.
func TestTriggers(t *testing.T) {
	e := newEnv(t, false)
	rng := rand.New(rand.NewPCG(3, 4))
	var good []float64
	for range 300 {
		good = append(good, 1+0.2*rng.NormFloat64())
	}
	base, _ := deciles(good)
	stable, drifting := testModel("stable"), testModel("drifting")
	stable.Triggers.Labels, drifting.Triggers.Labels = 0, 0
	labelled := testModel("labelled")
	labelled.Triggers.Labels, labelled.Triggers.Drift.Threshold = 3, 0
	cfg := e.cfg
	cfg.Models = []ModelConfig{stable, drifting, labelled}
	for _, m := range []string{"stable", "drifting"} {
		e.putIndex(m, "1.0.0", base)
	}
	var ps, pd []part
	for i := uint64(1); i <= 120; i++ {
		ps = append(ps, part{id: i, decision: "PASS", score: 1 + 0.2*rng.NormFloat64(), version: "1.0.0"})
		pd = append(pd, part{id: i, decision: "PASS", score: 1.25 + 0.2*rng.NormFloat64(), version: "1.0.0"})
	}
	e.upload("s1", "stable", day, ps)
	e.upload("s2", "drifting", day, pd)
	var pl []part
	for i := uint64(1); i <= 10; i++ {
		pl = append(pl, part{id: i, decision: "FAIL", score: 2})
	}
	e.upload("s3", "labelled", day, pl)
	e.label("s3", day, 1, 1, "false_reject")
	e.label("s3", day, 2, 2, "false_reject")

	ctx := context.Background()
	c := e.newCompanion(cfg)
	defer c.Close()
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckTriggers(ctx); err != nil {
		t.Fatal(err)
	}
	byModel := func() map[string]Job {
		m := map[string]Job{}
		for _, j := range c.Jobs() {
			m[j.Model] = j
		}
		return m
	}
	jobs := byModel()
	ds, _ := c.Drift(ctx, "stable")
	dd, _ := c.Drift(ctx, "drifting")
	if _, ok := jobs["stable"]; ok || ds.Drifted {
		t.Errorf("stable: PSI %.3f drifted=%v, job %+v; want no drift and no job", ds.PSI, ds.Drifted, jobs["stable"])
	}
	if j, ok := jobs["drifting"]; !ok || j.Trigger != TriggerDrift || !dd.Drifted {
		t.Errorf("drifting: PSI %.3f drifted=%v, job %+v; want a drift job", dd.PSI, dd.Drifted, j)
	}
	if _, ok := jobs["labelled"]; ok {
		t.Errorf("labelled: a job after 2 labels, want none before 3")
	}
	e.label("s3", day, 3, 3, "false_reject")
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckTriggers(ctx); err != nil {
		t.Fatal(err)
	}
	jobs = byModel()
	if j, ok := jobs["labelled"]; !ok || j.Trigger != TriggerLabels || j.State != JobQueued {
		t.Errorf("labelled after 3 labels: job %+v, want a queued labels job", j)
	}
	if n := len(c.Jobs()); n != 2 {
		t.Errorf("%d jobs, want 2 (the checks must not queue a second job for a busy model)", n)
	}
	if _, err := c.Enqueue("drifting", TriggerManual, ""); !errors.Is(err, ErrBusy) {
		t.Errorf("manual job while one is queued: %v, want ErrBusy", err)
	}
	if _, err := c.Enqueue("nope", TriggerManual, ""); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("job for an unknown model: %v, want ErrUnknownModel", err)
	}
}

// uploadParts uploads good parts as PASS and defective ones as FAIL, with
// their images, and returns the highest id.
func (e *env) uploadParts(station, model string, good int, defects []synth.Defect) uint64 {
	var ps []part
	id := uint64(0)
	for i := 1; i <= good; i++ {
		id++
		ps = append(ps, part{id: id, decision: "PASS", score: 0.5, image: partPNG(e.t, i, synth.None)})
	}
	for i, d := range defects {
		id++
		ps = append(ps, part{id: id, decision: "FAIL", score: 2, image: partPNG(e.t, 100+i, d)})
	}
	e.upload(station, model, day, ps)
	return id
}

func postTrain(t *testing.T, addr, model, token string) Job {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/train", strings.NewReader(`{"model":"`+model+`"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var j Job
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /train = %s, %v", resp.Status, err)
	}
	return j
}

// End to end against real versitygw and Mosquitto: stations' uploads are
// ingested, POST /train trains two builtin experiments in parallel, the best
// is signed, registered and promoted, and announced retained on the line's
// model/available. After a restart (new process state from the same
// folder) an external trainer (the command backend running
// testdata/copy-trainer.sh on the dataset folder contract) delivers a worse
// model: it is registered with the next version but not promoted, and
// nothing new is announced.
func TestTrainPromoteAnnounceAndRefuseWorse(t *testing.T) {
	e := newEnv(t, true)
	cfg := e.cfg
	m := testModel("part")
	m.Experiments = append(m.Experiments, builtinExp("template-48", "template", map[string]any{"width": 48, "ignore": []map[string]float64{markingFractions()}}))
	cfg.Models = []ModelConfig{m}
	cfg.APIToken = "op-token"
	e.uploadParts("st1", "part", 10, []synth.Defect{synth.Scratch, synth.MissingHole, synth.Spot, synth.Crack})

	sub := subscribe(t, e.broker.URL, "takt/v1/plant/line1/model/available")
	c := e.newCompanion(cfg)
	stop := e.run(c)
	if _, err := c.Ingest(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+c.Addr()+"/train", "application/json", strings.NewReader(`{"model":"part"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(c.Jobs()) != 0 {
		t.Errorf("POST /train without the token = %s, %d jobs; want 401 and none", resp.Status, len(c.Jobs()))
	}
	j := postTrain(t, c.Addr(), "part", "op-token")
	j = waitJob(t, c, j.ID, 2*time.Minute)
	_, log, _ := c.Job(j.ID)
	if j.State != JobSucceeded || !j.Promoted || j.Version != "0.9.1" || len(j.Experiments) != 2 {
		t.Fatalf("job = %+v, want succeeded, 0.9.1 (above the stations' 0.9.0) promoted, 2 experiments; log:\n%s", j, log)
	}
	for _, x := range j.Experiments {
		if x.State != JobSucceeded || x.Score == nil || x.Score.Defect == 0 || x.Score.Good < 2 {
			t.Errorf("experiment %+v: want succeeded, scored on goods and defects", x)
		}
	}
	if j.Dataset.ValDefect == 0 || j.Dataset.TrainGood < 4 {
		t.Errorf("dataset %+v: want validation defects and training goods", j.Dataset)
	}
	// The registry: the bundle verifies with the signing key's public half.
	idx, _, err := c.readIndex(context.Background(), "part")
	if err != nil || idx.Promoted != "0.9.1" || len(idx.Versions) != 1 || len(idx.Versions[0].Baseline) != 9 {
		t.Fatalf("index = %+v, %v; want 0.9.1 promoted with a baseline", idx, err)
	}
	data, _, err := e.bucket.Get(context.Background(), BundleKey("part", "0.9.1"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := bundle.LoadTrustedKeys(cfg.SigningKey + ".pub")
	b, err := bundle.ReadBundle(bytes.NewReader(data), pub)
	if err != nil {
		t.Fatalf("bundle does not verify: %v", err)
	}
	if b.Manifest.Version != "0.9.1" || b.Manifest.Metrics["score_p50"] == 0 || b.Manifest.Golden == nil {
		t.Errorf("manifest = %+v; want version 0.9.1, baseline deciles and a golden set", b.Manifest)
	}
	msg := sub.next(t, 10*time.Second)
	var av wire.ModelAvailableMsg
	if err := wire.Decode(msg.Payload, &av); err != nil || av.Version != "0.9.1" || av.Key != BundleKey("part", "0.9.1") ||
		av.SHA256 != idx.Versions[0].SHA256 {
		t.Errorf("model/available = %s, %v; want 0.9.1 with the bundle's key and sha256", msg.Payload, err)
	}
	// A station that subscribes later gets it as the retained message.
	late := subscribe(t, e.broker.URL, "takt/v1/plant/line1/model/available")
	if got := late.next(t, 10*time.Second); !got.Retained || !bytes.Equal(got.Payload, msg.Payload) {
		t.Errorf("late subscriber got %s retained=%v, want the announcement retained", got.Payload, got.Retained)
	}
	stop()

	// The worse model: a template trained on the defects, handed over by a
	// script through the external trainer contract.
	bad := filepath.Join(e.dir, "bad.onnx")
	writeWorseModel(t, bad)
	script, _ := filepath.Abs("testdata/copy-trainer.sh")
	cfg.Models[0].Experiments = []trainer.ExperimentConfig{{Name: "external", Trainer: trainer.TrainerCommand, Command: []string{script, "{data}", "{out}"},
		Env: map[string]string{"MODEL_FILE": bad}}}
	c = e.newCompanion(cfg)
	if jobs := c.Jobs(); len(jobs) != 1 || jobs[0].ID != j.ID || jobs[0].State != JobSucceeded {
		t.Errorf("jobs after restart = %+v, want the first job, succeeded", jobs)
	}
	e.run(c)
	j2 := postTrain(t, c.Addr(), "part", "op-token")
	j2 = waitJob(t, c, j2.ID, 2*time.Minute)
	_, log, _ = c.Job(j2.ID)
	if j2.State != JobSucceeded || j2.Promoted || j2.Version != "0.9.2" || j2.CurrentVersion != "0.9.1" {
		t.Fatalf("job 2 = %+v; want 0.9.2 registered, not promoted over 0.9.1; log:\n%s", j2, log)
	}
	if !strings.Contains(log, "contract ok: good/ 7 images") || !strings.Contains(j2.Decision, "worse") {
		t.Errorf("job 2 log does not show the script's contract check, or decision %q is not 'worse'; log:\n%s", j2.Decision, log)
	}
	idx, _, _ = c.readIndex(context.Background(), "part")
	if idx.Promoted != "0.9.1" || len(idx.Versions) != 2 || idx.Versions[1].Promoted {
		t.Errorf("index after the worse model = %+v; want 0.9.1 still promoted, 0.9.2 listed", idx)
	}
	for {
		msg, ok := late.poll(500 * time.Millisecond)
		if !ok {
			break
		}
		if strings.Contains(string(msg.Payload), "0.9.2") {
			t.Errorf("announced %s for a model that was not promoted", msg.Payload)
		}
	}
	// GET /models/part shows the registry and the dataset.
	resp, err = http.Get("http://" + c.Addr() + "/models/part")
	if err != nil {
		t.Fatal(err)
	}
	var mv struct {
		Registry RegistryIndex `json:"registry"`
		Dataset  ModelStats    `json:"dataset"`
	}
	json.NewDecoder(resp.Body).Decode(&mv)
	resp.Body.Close()
	if mv.Registry.Promoted != "0.9.1" || mv.Dataset.Verdicts != 14 {
		t.Errorf("GET /models/part = %+v, want promoted 0.9.1 and 14 verdicts", mv)
	}
}

// writeWorseModel trains a template on defect images only: good parts look
// anomalous to it, so it ranks worse than a model trained on good parts.
func writeWorseModel(t *testing.T, path string) {
	t.Helper()
	dir := t.TempDir()
	for i, d := range []synth.Defect{synth.Scratch, synth.Spot, synth.Crack, synth.MissingHole, synth.Scratch, synth.Spot} {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d.png", i)), partPNG(t, 200+i, d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	frames, err := trainer.ReadImages(dir)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := train.TrainTemplate(context.Background(), frames, train.TemplateOptions{Width: 48, Name: "x", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tm.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".threshold", []byte(fmt.Sprint(tm.Threshold)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A job that was running when the process died is queued again at the
// next start, with a line in its log, and then runs.
func TestInterruptedJobRunsAgain(t *testing.T) {
	e := newEnv(t, false)
	e.uploadParts("st1", "part", 8, nil)
	c := e.newCompanion(e.cfg)
	if _, err := c.Ingest(context.Background()); err != nil {
		t.Fatal(err)
	}
	j, err := c.Enqueue("part", TriggerManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	j.State, j.Started = JobRunning, time.Now() // as if the process died mid-job
	if err := c.jobs.save(j); err != nil {
		t.Fatal(err)
	}
	c.Close()

	c = e.newCompanion(e.cfg)
	got, log, _ := c.Job(j.ID)
	if got.State != JobQueued || got.Attempt != 2 || !strings.Contains(log, "runs again") {
		t.Fatalf("after restart: %+v, log %q; want queued, attempt 2", got, log)
	}
	e.run(c)
	got = waitJob(t, c, j.ID, 2*time.Minute)
	if got.State != JobSucceeded || !got.Promoted || math.IsNaN(got.Experiments[0].Score.FPR) {
		_, log, _ = c.Job(j.ID)
		t.Errorf("job = %+v, want it done and promoted; log:\n%s", got, log)
	}
}

// A station that runs several models on a frame uploads each model's
// outcome in "models": each model name gets the part in its dataset with
// its own decision, score and version; the part's label applies to all.
func TestIngestSeveralModelsPerPart(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	batch := `{"schema":1,"id":7,"station":"st-m","time":"2026-11-20T08:00:07Z","decision":"FAIL","score":3,"threshold":1,` +
		`"model":{"name":"holes","version":"2.0.0"},"models":[` +
		`{"name":"a","model":{"name":"surface","version":"1.1.0"},"decision":"PASS","score":0.2,"threshold":1,"provider":"cpu"},` +
		`{"name":"b","model":{"name":"holes","version":"2.0.0"},"decision":"FAIL","score":3,"threshold":1,"provider":"cpu"}]}` + "\n"
	if _, err := e.bucket.PutNew(ctx, wire.VerdictBatchKey("st-m", day, 7, 7), []byte(batch), "application/x-ndjson"); err != nil {
		t.Fatal(err)
	}
	e.label("st-m", day, 7, 1, "false_reject")
	c := e.newCompanion(e.cfg)
	defer c.Close()
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model, decision, version string
		pass, fail               int
	}{{"surface", "PASS", "1.1.0", 1, 0}, {"holes", "FAIL", "2.0.0", 0, 1}} {
		st, _ := c.index.stats(tc.model)
		if st.Verdicts != 1 || st.Pass != tc.pass || st.Fail != tc.fail || st.Labels != 1 || st.Versions[tc.version] != 1 {
			t.Errorf("stats of %s = %+v; want 1 verdict (%s %s) and 1 label", tc.model, st, tc.decision, tc.version)
		}
		ss, _ := c.index.samples(tc.model)
		if len(ss) != 1 || ss[0].Decision != tc.decision || ss[0].Version != tc.version || ss[0].Label != "false_reject" ||
			classOf(ss[0], true) != trainer.ClassGood {
			t.Errorf("samples of %s = %+v; want the part as %s %s, labelled false_reject, so good", tc.model, ss, tc.decision, tc.version)
		}
	}
	if st, _ := c.index.stats("surface"); len(st.Recent["1.1.0"]) != 1 {
		t.Errorf("recent PASS scores of surface 1.1.0 = %v, want its own score", st.Recent)
	}
}
