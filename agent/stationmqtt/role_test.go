package stationmqtt

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/internal/stationtest"
	"github.com/takt-edge/takt/agent/station"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
)

func TestAlertLimiter(t *testing.T) {
	l := newAlertLimiter(2, time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var allowed []bool
	for i := range 5 {
		ok, sum := l.allow("camera_stalled", t0.Add(time.Duration(i)*time.Second))
		if sum.n != 0 {
			t.Errorf("summary inside the window: %+v", sum)
		}
		allowed = append(allowed, ok)
	}
	if got, want := fmt.Sprint(allowed), "[true true false false false]"; got != want {
		t.Errorf("allowed = %s, want %s", got, want)
	}
	if ok, _ := l.allow("fail", t0); !ok {
		t.Error("another kind was limited, want its own budget")
	}
	if s := l.flush(t0.Add(59 * time.Second)); len(s) != 0 {
		t.Errorf("flush before the window ended = %+v, want none", s)
	}
	s := l.flush(t0.Add(time.Minute))
	if len(s) != 1 || s[0].kind != "camera_stalled" || s[0].n != 3 || !s[0].since.Equal(t0) {
		t.Fatalf("flush = %+v, want one summary: camera_stalled, 3 folded since %v", s, t0)
	}
	// A new window starts with the full budget; an alert after a window with
	// folded alerts brings that window's summary along.
	l.allow("disk_quota", t0)
	l.allow("disk_quota", t0)
	l.allow("disk_quota", t0)
	ok, sum := l.allow("disk_quota", t0.Add(2*time.Minute))
	if !ok || sum.n != 1 || sum.kind != "disk_quota" {
		t.Errorf("allow after the window = %v, %+v; want true and a summary of 1", ok, sum)
	}
}

func testMQTTConfig(broker string) Config {
	conn := cloudsync.DefaultMQTTConfig()
	conn.Broker, conn.ClientID = broker, "takt-st-1"
	conn.KeepAlive, conn.ReconnectMin, conn.ReconnectMax = 2*time.Second, 50*time.Millisecond, 300*time.Millisecond
	conn.ConnectTimeout, conn.PublishTimeout = 3*time.Second, 3*time.Second
	return Config{Conn: conn, Site: "plant", Line: "line-1", Verdicts: true, StatusInterval: 30 * time.Second,
		AlertBurst: 10000, AlertWindow: time.Minute, SyncBacklogAge: time.Hour, OutboxMax: 100000,
		DrainTimeout: 2 * time.Second, PublishTimeout: 3 * time.Second}
}

// testStation is a station whose trigger and label the test sets; nil trigger: the
// station cannot be triggered.
type testStation struct {
	trigger func(serial string, at time.Time) (<-chan store.Verdict, func(), error)
	label   func(ctx context.Context, id uint64, label string) error
}

func (s testStation) Trigger(serial string, at time.Time) (<-chan store.Verdict, func(), error) {
	return s.trigger(serial, at)
}

func (s testStation) Label(ctx context.Context, id uint64, label string) error {
	if s.label == nil {
		return station.ErrNotRunning
	}
	return s.label(ctx, id, label)
}

func (testStation) FillStatus(*wire.StatusMsg) {}

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// startRole runs the station's MQTT roles on a store in dir until the test ends
// (or stop is called).
func startRole(t *testing.T, cfg Config, st *store.Store, s testStation) (*Role, func()) {
	t.Helper()
	r, err := New(cfg, "st-1", Deps{Store: st, Station: s, CanTrigger: s.trigger != nil}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("mqtt role Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// Alerts raised while the broker is down wait in the outbox and all arrive at
// a persistent-session subscriber after the broker is back: 0 lost.
func TestMQTTAlertsSurviveBrokerOutage(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	sub := stationtest.NewSubscriber(t, b.URL, "console-1", true)
	st := openStore(t, t.TempDir())
	r, _ := startRole(t, testMQTTConfig(b.URL), st, testStation{})
	ctx := context.Background()
	if err := r.conn.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	raise := func(i int) {
		text := fmt.Sprintf("alert %03d", i)
		want[text] = true
		if err := r.Raise(ctx, wire.AlertDegraded, text); err != nil {
			t.Fatalf("raise: %v", err)
		}
	}
	for i := range 10 {
		raise(i)
	}
	stationtest.WaitUntil(t, 10*time.Second, "first 10 alerts at the subscriber", func() bool { return len(sub.AlertTexts()) == 10 })

	b.Stop()
	for i := 10; i < 40; i++ {
		raise(i)
	}
	if n, _, _ := st.MQTTBacklog(); n < 30 {
		t.Errorf("outbox holds %d messages while the broker is down, want >= 30", n)
	}
	b.Start()
	stationtest.WaitUntil(t, 20*time.Second, "all 40 alerts at the subscriber", func() bool { return len(sub.AlertTexts()) == len(want) })
	got := sub.AlertTexts()
	for text := range want {
		if !got[text] {
			t.Errorf("alert %q lost", text)
		}
	}
	stationtest.WaitUntil(t, 10*time.Second, "outbox empty", func() bool { n, _, _ := st.MQTTBacklog(); return n == 0 })
	rcv := sub.Received()
	t.Logf("40 alerts raised, %d distinct received, %d duplicates (de-duplicated by id)", len(rcv.Alerts), rcv.Dupes)
	if len(rcv.Bad) > 0 {
		t.Errorf("undecodable messages: %q", rcv.Bad)
	}
}

// The rate limit lets alert_burst alerts of a kind through per window and
// then sends one summary saying how many were folded.
func TestMQTTAlertRateLimitSummary(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	sub := stationtest.NewSubscriber(t, b.URL, "console-rl", false)
	cfg := testMQTTConfig(b.URL)
	cfg.AlertBurst, cfg.AlertWindow = 3, 400*time.Millisecond
	r, _ := startRole(t, cfg, openStore(t, t.TempDir()), testStation{})
	for i := range 10 {
		if err := r.Raise(context.Background(), wire.AlertCameraStalled, fmt.Sprintf("stall %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	stationtest.WaitUntil(t, 10*time.Second, "3 alerts and a summary", func() bool { return len(sub.AlertTexts()) == 4 })
	rcv := sub.Received()
	var folded, plain int
	for _, a := range rcv.Alerts {
		if a.Folded > 0 {
			folded += a.Folded
			if !strings.Contains(a.Message, "7 more camera_stalled alerts") || a.Since == nil {
				t.Errorf("summary = %+v, want it to say 7 more camera_stalled alerts and since", a)
			}
		} else {
			plain++
		}
		if a.Severity != wire.SeverityCritical {
			t.Errorf("severity = %q, want critical", a.Severity)
		}
	}
	if plain != 3 || folded != 7 {
		t.Errorf("got %d alerts and %d folded, want 3 and 7", plain, folded)
	}
}

// cmd/trigger answers on verdict with the correlation id; cmd/label labels the
// verdict in the store; malformed commands get a reply on error and change
// nothing.
func TestMQTTCommands(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	sub := stationtest.NewSubscriber(t, b.URL, "mes-1", false)
	st := openStore(t, t.TempDir())
	var r *Role
	station := testStation{
		trigger: func(serial string, at time.Time) (<-chan store.Verdict, func(), error) {
			if serial == "refuse" {
				return nil, nil, fmt.Errorf("%w: camera is stalled", station.ErrNoTrigger)
			}
			ch := make(chan store.Verdict, 1)
			go func() {
				v := store.Verdict{Station: "st-1", CameraID: "cam0", Serial: serial, Time: at, Decision: store.Fail, Reason: "score over threshold"}
				if err := st.Commit(context.Background(), &v, nil); err != nil {
					t.Error(err)
				}
				ch <- v
				r.VerdictCommitted()
			}()
			return ch, func() {}, nil
		},
		label: func(ctx context.Context, id uint64, label string) error { return st.SetLabel(ctx, id, label) },
	}
	r, _ = startRole(t, testMQTTConfig(b.URL), st, station)
	if err := r.conn.WaitConnected(context.Background()); err != nil {
		t.Fatal(err)
	}
	pub := func(name, payload string) {
		t.Helper()
		if err := sub.Publish(r.topics.Topic(name), payload); err != nil {
			t.Fatalf("publish %s: %v", name, err)
		}
	}
	pub(wire.TopicCmdTrigger, `{"schema":1,"serial":"SN-77","correlation_id":"job-1"}`)
	var got wire.VerdictMsg
	stationtest.WaitUntil(t, 10*time.Second, "verdict with correlation id job-1", func() bool {
		rcv := sub.Received()
		for _, v := range rcv.Verdicts {
			if v.CorrelationID == "job-1" {
				got = v
				return true
			}
		}
		return false
	})
	if got.Serial != "SN-77" || got.Verdict != "FAIL" || got.ID == 0 {
		t.Errorf("verdict = %+v, want serial SN-77, FAIL and an id", got)
	}
	stationtest.WaitUntil(t, 10*time.Second, "fail alert for SN-77", func() bool {
		rcv := sub.Received()
		for _, a := range rcv.Alerts {
			if a.Kind == wire.AlertFail && a.VerdictID == got.ID && a.Serial == "SN-77" {
				return true
			}
		}
		return false
	})

	pub(wire.TopicCmdLabel, fmt.Sprintf(`{"schema":1,"verdict_id":%d,"label":"false_reject"}`, got.ID))
	stationtest.WaitUntil(t, 10*time.Second, "label in the store", func() bool {
		v, err := st.Get(got.ID)
		return err == nil && v.Label == "false_reject"
	})

	bad := []struct{ topic, payload, wantErr string }{
		{wire.TopicCmdTrigger, `{"schema":1,"serial":5}`, "serial: number is not a string"},
		{wire.TopicCmdTrigger, `not json`, "want one JSON object"},
		{wire.TopicCmdTrigger, `{"schema":1,"serial":"refuse","correlation_id":"job-2"}`, "camera is stalled"},
		{wire.TopicCmdLabel, `{"schema":1,"verdict_id":999999,"label":"false_reject"}`, "verdict not found"},
		{wire.TopicCmdLabel, `{"schema":1,"label":"x","extra":1}`, `unknown field "extra"`},
		{wire.TopicCmdLabel, string([]byte{0xff, 0xfe, 0x00}), "want one JSON object"},
	}
	for _, c := range bad {
		pub(c.topic, c.payload)
	}
	stationtest.WaitUntil(t, 10*time.Second, "an error reply per malformed command", func() bool {
		rcv := sub.Received()
		return len(rcv.Errors) >= len(bad)
	})
	rcv := sub.Received()
	for _, c := range bad {
		found := false
		for _, e := range rcv.Errors {
			found = found || (strings.HasSuffix(e.Topic, c.topic) && strings.Contains(e.Error, c.wantErr))
		}
		if !found {
			t.Errorf("no error reply on %s containing %q; got %+v", c.topic, c.wantErr, rcv.Errors)
		}
	}
	for _, e := range rcv.Errors {
		if strings.Contains(e.Error, "camera is stalled") && e.CorrelationID != "job-2" {
			t.Errorf("error reply correlation_id = %q, want job-2", e.CorrelationID)
		}
	}
	// Still serving after the bad input.
	pub(wire.TopicCmdTrigger, `{"schema":1,"correlation_id":"job-3"}`)
	stationtest.WaitUntil(t, 10*time.Second, "verdict for job-3", func() bool {
		rcv := sub.Received()
		for _, v := range rcv.Verdicts {
			if v.CorrelationID == "job-3" && strings.HasPrefix(v.Serial, "M") {
				return true
			}
		}
		return false
	})
}

// A detector's verdict goes out with its class and boxes.
func TestMQTTVerdictCarriesBoxes(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	sub := stationtest.NewSubscriber(t, b.URL, "console-2", true)
	st := openStore(t, t.TempDir())
	r, _ := startRole(t, testMQTTConfig(b.URL), st, testStation{})
	ctx := context.Background()
	if err := r.conn.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	score := 0.97
	v := &store.Verdict{Station: "st-1", CameraID: "cam0", Serial: "SN-1", Time: time.Now(), Decision: store.Fail,
		Reason: "score 0.97 > threshold 0.25", Score: &score, Threshold: 0.25, Class: "dent", Confidence: 0.97,
		Boxes: []store.Box{{Class: "dent", Confidence: 0.97, X0: 1, Y0: 2, X1: 30, Y1: 40}}}
	if err := st.Commit(ctx, v, nil); err != nil {
		t.Fatal(err)
	}
	r.VerdictCommitted()
	stationtest.WaitUntil(t, 10*time.Second, "the verdict at the subscriber", func() bool { return len(sub.Received().Verdicts) == 1 })
	for _, m := range sub.Received().Verdicts {
		if m.Class != "dent" || len(m.Boxes) != 1 || m.Boxes[0] != (wire.Box{Class: "dent", Confidence: 0.97, X0: 1, Y0: 2, X1: 30, Y1: 40}) {
			t.Errorf("verdict message: class %q boxes %+v, want dent and the box", m.Class, m.Boxes)
		}
	}
}
