package companion

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
	"github.com/takt-edge/takt/models/bundle"
)

// env is a test's cloud: a real versitygw bucket, optionally a real
// Mosquitto, a signing key and a state folder.
type env struct {
	t      *testing.T
	s3     *cloudtest.S3
	bucket *cloudsync.Bucket
	broker *cloudtest.Broker
	cfg    Config
	dir    string
}

func newEnv(t *testing.T, withBroker bool) *env {
	t.Helper()
	e := &env{t: t, s3: cloudtest.StartS3(t), dir: t.TempDir()}
	bucket := e.s3.NewBucket(t, "takt")
	keyFile := filepath.Join(e.dir, "signing.key")
	if _, err := bundle.WriteKeyPair(keyFile); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(e.dir, "state")
	cfg.Listen = "127.0.0.1:0"
	cfg.SigningKey = keyFile
	cfg.S3 = S3Config{Endpoint: "http://" + e.s3.Endpoint, Bucket: bucket, Region: e.s3.Region, AccessKey: e.s3.AccessKey,
		SecretKey: cloudsync.Secret(e.s3.SecretKey), PathStyle: true, RequestTimeout: 10 * time.Second}
	cfg.Ingest.Interval, cfg.Ingest.FullScanInterval = time.Hour, time.Hour
	cfg.Training.MinGood = 6
	if withBroker {
		e.broker = cloudtest.StartMosquitto(t)
		cfg.MQTT.Broker = e.broker.URL
		cfg.MQTT.ReconnectMin, cfg.MQTT.ReconnectMax = 50*time.Millisecond, 200*time.Millisecond
	}
	cfg.Models = []ModelConfig{testModel("part")}
	e.cfg = cfg
	b, err := cloudsync.OpenBucket(cfg.S3.syncConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	e.bucket = b
	return e
}

// testModel is a model section with the default triggers and a small
// template experiment (the synthetic parts' marking region ignored).
func testModel(name string) ModelConfig {
	m := defaultModel()
	m.Name = name
	m.Targets = []Target{{Site: "plant", Line: "line1"}}
	m.Experiments = []trainer.ExperimentConfig{builtinExp("template-64", "template", map[string]any{"width": 64, "ignore": []map[string]float64{markingFractions()}})}
	return m
}

func builtinExp(name, method string, opts map[string]any) trainer.ExperimentConfig {
	var n yaml.Node
	if err := n.Encode(opts); err != nil {
		panic(err)
	}
	return trainer.ExperimentConfig{Name: name, Trainer: trainer.TrainerBuiltin, Method: method, Options: n}
}

const partW, partH = 256, 192

func markingFractions() map[string]float64 {
	r := synth.MarkingRegion(synth.RenderOptions{Seed: 7, Width: partW, Height: partH})
	return map[string]float64{"x0": max(0, float64(r.Min.X)/partW), "y0": max(0, float64(r.Min.Y)/partH),
		"x1": min(1, float64(r.Max.X)/partW), "y1": min(1, float64(r.Max.Y)/partH)}
}

var (
	partsMu sync.Mutex
	parts   = map[string][]byte{}
)

// partPNG renders synthetic part index (good with defect None) as PNG,
// cached across the tests of the package.
func partPNG(t *testing.T, index int, defect synth.Defect) []byte {
	t.Helper()
	k := fmt.Sprintf("%d/%s", index, defect)
	partsMu.Lock()
	defer partsMu.Unlock()
	if b, ok := parts[k]; ok {
		return b
	}
	f, _, err := synth.RenderPart(synth.RenderOptions{Seed: 7, Width: partW, Height: partH}, index, defect)
	if err != nil {
		t.Fatal(err)
	}
	b, err := camera.Encode(f, "png", 0)
	if err != nil {
		t.Fatal(err)
	}
	parts[k] = b
	return b
}

// stationRecord is a verdict record as a station's store writes it (the
// fields the companion reads and a few it ignores).
type stationRecord struct {
	Schema    int       `json:"schema"`
	ID        uint64    `json:"id"`
	Station   string    `json:"station"`
	CameraID  string    `json:"camera_id"`
	Serial    string    `json:"serial"`
	Time      time.Time `json:"time"`
	Decision  string    `json:"decision"`
	Score     *float64  `json:"score"`
	Threshold float64   `json:"threshold"`
	Model     struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		SHA256  string `json:"sha256"`
	} `json:"model"`
	ImageRef string `json:"image_ref"`
	Label    string `json:"label"`
}

// part is one verdict a fake station uploads.
type part struct {
	id       uint64
	decision string
	score    float64
	image    []byte // PNG; nil: no image uploaded
	version  string
}

// upload writes what a station's uploader writes: images, then the records
// in one batch per call, under the keys of cloudsync.
func (e *env) upload(station, model string, day time.Time, ps []part) {
	e.t.Helper()
	ctx := context.Background()
	var body bytes.Buffer
	for _, p := range ps {
		r := stationRecord{Schema: 1, ID: p.id, Station: station, CameraID: "cam0", Serial: fmt.Sprintf("SN-%d", p.id),
			Time: day.Add(time.Duration(p.id) * time.Second).UTC(), Decision: p.decision, Threshold: 1}
		s := p.score
		r.Score = &s
		r.Model.Name, r.Model.Version = model, p.version
		if r.Model.Version == "" {
			r.Model.Version = "0.9.0"
		}
		if p.image != nil {
			key := wire.ImageKey(station, r.Time, p.id, "png")
			if _, err := e.bucket.PutNew(ctx, key, p.image, "image/png"); err != nil {
				e.t.Fatal(err)
			}
		}
		js, _ := json.Marshal(r)
		body.Write(js)
		body.WriteByte('\n')
	}
	key := wire.VerdictBatchKey(station, day, ps[0].id, ps[len(ps)-1].id)
	if _, err := e.bucket.PutNew(ctx, key, body.Bytes(), "application/x-ndjson"); err != nil {
		e.t.Fatal(err)
	}
}

// label writes an operator label object as a station's uploader does.
func (e *env) label(station string, day time.Time, verdictID, seq uint64, label string) {
	e.t.Helper()
	captured := day.Add(time.Duration(verdictID) * time.Second).UTC()
	rec, _ := json.Marshal(wire.LabelRecord{Schema: wire.LabelSchema, VerdictID: verdictID, Seq: seq, Station: station,
		CapturedAt: captured, Label: label, LabeledAt: time.Now().UTC()})
	if _, err := e.bucket.PutNew(context.Background(), wire.LabelKey(station, captured, verdictID, seq), rec, "application/json"); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) newCompanion(cfg Config) *Companion {
	e.t.Helper()
	c, err := New(cfg, testLogger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// run starts Run and returns a stop function that waits for it.
func (e *env) run(c *Companion) (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-done:
		cancel()
		e.t.Fatalf("Run ended at once: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// waitJob polls until job id ended.
func waitJob(t *testing.T, c *Companion, id string, timeout time.Duration) Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		j, _, ok := c.Job(id)
		if ok && !j.Active() {
			return j
		}
		time.Sleep(50 * time.Millisecond)
	}
	j, log, _ := c.Job(id)
	t.Fatalf("job %s still %s after %v; log:\n%s", id, j.State, timeout, log)
	return Job{}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) zerolog.Logger {
	if os.Getenv("TAKT_TEST_LOG") != "" {
		return zerolog.New(zerolog.ConsoleWriter{Out: testWriter{t}, NoColor: true}).Level(zerolog.DebugLevel)
	}
	return zerolog.New(io.Discard)
}

// subscriber collects the messages of one topic filter.
type subscriber struct{ ch chan cloudsync.Received }

func subscribe(t *testing.T, broker, filter string) *subscriber {
	t.Helper()
	s := &subscriber{ch: make(chan cloudsync.Received, 16)}
	cfg := cloudsync.DefaultMQTTConfig()
	cfg.Broker, cfg.ClientID = broker, "test-sub-"+t.Name()
	conn, err := cloudsync.NewConn(cfg, cloudsync.ConnOptions{Logger: testLogger(t),
		Subscriptions: map[string]func(cloudsync.Received){filter: func(r cloudsync.Received) { s.ch <- r }}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { conn.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := conn.WaitConnected(wctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *subscriber) next(t *testing.T, timeout time.Duration) cloudsync.Received {
	t.Helper()
	m, ok := s.poll(timeout)
	if !ok {
		t.Fatalf("no message within %v", timeout)
	}
	return m
}

func (s *subscriber) poll(timeout time.Duration) (cloudsync.Received, bool) {
	select {
	case m := <-s.ch:
		return m, true
	case <-time.After(timeout):
		return cloudsync.Received{}, false
	}
}
