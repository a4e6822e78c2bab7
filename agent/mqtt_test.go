package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/takt-edge/takt/agent/store"
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

// subscriber is an independent MQTT client (paho, auto-reconnect) that
// collects what the station publishes.
type subscriber struct {
	mu       sync.Mutex
	alerts   map[string]wire.AlertMsg // by id
	dupes    int
	verdicts map[string]wire.VerdictMsg // by msg_id
	errs     []wire.ErrorMsg
	status   []wire.StatusMsg
	statusAt []time.Time
	bad      []string
	c        mqtt.Client
}

func newSubscriber(t *testing.T, url, id string, persistent bool) *subscriber {
	t.Helper()
	s := &subscriber{alerts: map[string]wire.AlertMsg{}, verdicts: map[string]wire.VerdictMsg{}}
	handler := func(_ mqtt.Client, m mqtt.Message) { s.add(m.Topic(), m.Payload()) }
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(!persistent).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond).SetResumeSubs(true).SetOrderMatters(false).
		SetDefaultPublishHandler(handler)
	s.c = mqtt.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	if tok := s.c.Subscribe("takt/v1/#", 1, handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(100) })
	return s
}

func (s *subscriber) add(topic string, payload []byte) {
	_, name, err := wire.ParseTopic(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.bad = append(s.bad, topic)
		return
	}
	switch name {
	case wire.TopicAlert:
		var a wire.AlertMsg
		if err := wire.Decode(payload, &a); err != nil {
			s.bad = append(s.bad, fmt.Sprintf("%s: %v", payload, err))
			return
		}
		if _, ok := s.alerts[a.ID]; ok {
			s.dupes++
		}
		s.alerts[a.ID] = a
	case wire.TopicVerdict:
		var v wire.VerdictMsg
		if err := wire.Decode(payload, &v); err != nil {
			s.bad = append(s.bad, fmt.Sprintf("%s: %v", payload, err))
			return
		}
		s.verdicts[v.MsgID] = v
	case wire.TopicError:
		var e wire.ErrorMsg
		if err := wire.Decode(payload, &e); err != nil {
			s.bad = append(s.bad, fmt.Sprintf("%s: %v", payload, err))
			return
		}
		s.errs = append(s.errs, e)
	case wire.TopicStatus:
		var st wire.StatusMsg
		if err := wire.Decode(payload, &st); err != nil {
			s.bad = append(s.bad, fmt.Sprintf("%s: %v", payload, err))
			return
		}
		s.status = append(s.status, st)
		s.statusAt = append(s.statusAt, time.Now())
	}
}

// alertTexts returns the messages of the distinct alerts received.
func (s *subscriber) alertTexts() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for _, a := range s.alerts {
		out[a.Message] = true
	}
	return out
}

func (s *subscriber) lastStatus() (wire.StatusMsg, time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.status) == 0 {
		return wire.StatusMsg{}, time.Time{}, false
	}
	return s.status[len(s.status)-1], s.statusAt[len(s.statusAt)-1], true
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testMQTTConfig(broker string) MQTTConfig {
	c := defaultMQTTConfig()
	c.Broker, c.Site, c.Line = broker, "plant", "line-1"
	c.KeepAlive, c.ReconnectMin, c.ReconnectMax = 2*time.Second, 50*time.Millisecond, 300*time.Millisecond
	c.ConnectTimeout, c.PublishTimeout = 3*time.Second, 3*time.Second
	c.AlertBurst, c.AlertWindow = 10000, time.Minute
	return c
}

// startRole runs the station's MQTT roles on a store in dir until the test ends
// (or stop is called).
func startRole(t *testing.T, cfg MQTTConfig, st *store.Store, hooks mqttHooks) (*mqttRole, func()) {
	t.Helper()
	r, err := newMQTTRole(cfg, "st-1", st, hooks, testLogger(t))
	if err != nil {
		t.Fatalf("newMQTTRole: %v", err)
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
	sub := newSubscriber(t, b.URL, "console-1", true)
	st := openStore(t, t.TempDir())
	r, _ := startRole(t, testMQTTConfig(b.URL), st, mqttHooks{})
	ctx := context.Background()
	if err := r.conn.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	raise := func(i int) {
		text := fmt.Sprintf("alert %03d", i)
		want[text] = true
		if err := r.raise(ctx, wire.AlertDegraded, text); err != nil {
			t.Fatalf("raise: %v", err)
		}
	}
	for i := range 10 {
		raise(i)
	}
	waitUntil(t, 10*time.Second, "first 10 alerts at the subscriber", func() bool { return len(sub.alertTexts()) == 10 })

	b.Stop()
	for i := 10; i < 40; i++ {
		raise(i)
	}
	if n, _, _ := st.MQTTBacklog(); n < 30 {
		t.Errorf("outbox holds %d messages while the broker is down, want >= 30", n)
	}
	b.Start()
	waitUntil(t, 20*time.Second, "all 40 alerts at the subscriber", func() bool { return len(sub.alertTexts()) == len(want) })
	got := sub.alertTexts()
	for text := range want {
		if !got[text] {
			t.Errorf("alert %q lost", text)
		}
	}
	waitUntil(t, 10*time.Second, "outbox empty", func() bool { n, _, _ := st.MQTTBacklog(); return n == 0 })
	sub.mu.Lock()
	t.Logf("40 alerts raised, %d distinct received, %d duplicates (de-duplicated by id)", len(sub.alerts), sub.dupes)
	if len(sub.bad) > 0 {
		t.Errorf("undecodable messages: %q", sub.bad)
	}
	sub.mu.Unlock()
}

// The rate limit lets alert_burst alerts of a kind through per window and
// then sends one summary saying how many were folded.
func TestMQTTAlertRateLimitSummary(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	sub := newSubscriber(t, b.URL, "console-rl", false)
	cfg := testMQTTConfig(b.URL)
	cfg.AlertBurst, cfg.AlertWindow = 3, 400*time.Millisecond
	r, _ := startRole(t, cfg, openStore(t, t.TempDir()), mqttHooks{})
	for i := range 10 {
		if err := r.raise(context.Background(), wire.AlertCameraStalled, fmt.Sprintf("stall %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "3 alerts and a summary", func() bool { return len(sub.alertTexts()) == 4 })
	sub.mu.Lock()
	defer sub.mu.Unlock()
	var folded, plain int
	for _, a := range sub.alerts {
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
	sub := newSubscriber(t, b.URL, "mes-1", false)
	st := openStore(t, t.TempDir())
	var r *mqttRole
	hooks := mqttHooks{
		trigger: func(serial string, at time.Time) (<-chan store.Verdict, func(), error) {
			if serial == "refuse" {
				return nil, nil, fmt.Errorf("%w: camera is stalled", ErrNoTrigger)
			}
			ch := make(chan store.Verdict, 1)
			go func() {
				v := store.Verdict{Station: "st-1", CameraID: "cam0", Serial: serial, Time: at, Decision: store.Fail, Reason: "score over threshold"}
				if err := st.Commit(context.Background(), &v, nil); err != nil {
					t.Error(err)
				}
				ch <- v
				r.verdictCommitted()
			}()
			return ch, func() {}, nil
		},
		label: func(ctx context.Context, id uint64, label string) error { return st.SetLabel(ctx, id, label) },
	}
	r, _ = startRole(t, testMQTTConfig(b.URL), st, hooks)
	if err := r.conn.WaitConnected(context.Background()); err != nil {
		t.Fatal(err)
	}
	pub := func(name, payload string) {
		t.Helper()
		tok := sub.c.Publish(r.topics.Topic(name), 1, false, payload)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", name, tok.Error())
		}
	}
	pub(wire.TopicCmdTrigger, `{"schema":1,"serial":"SN-77","correlation_id":"job-1"}`)
	var got wire.VerdictMsg
	waitUntil(t, 10*time.Second, "verdict with correlation id job-1", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		for _, v := range sub.verdicts {
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
	waitUntil(t, 10*time.Second, "fail alert for SN-77", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		for _, a := range sub.alerts {
			if a.Kind == wire.AlertFail && a.VerdictID == got.ID && a.Serial == "SN-77" {
				return true
			}
		}
		return false
	})

	pub(wire.TopicCmdLabel, fmt.Sprintf(`{"schema":1,"verdict_id":%d,"label":"false_reject"}`, got.ID))
	waitUntil(t, 10*time.Second, "label in the store", func() bool {
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
	waitUntil(t, 10*time.Second, "an error reply per malformed command", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return len(sub.errs) >= len(bad)
	})
	sub.mu.Lock()
	for _, c := range bad {
		found := false
		for _, e := range sub.errs {
			found = found || (strings.HasSuffix(e.Topic, c.topic) && strings.Contains(e.Error, c.wantErr))
		}
		if !found {
			t.Errorf("no error reply on %s containing %q; got %+v", c.topic, c.wantErr, sub.errs)
		}
	}
	for _, e := range sub.errs {
		if strings.Contains(e.Error, "camera is stalled") && e.CorrelationID != "job-2" {
			t.Errorf("error reply correlation_id = %q, want job-2", e.CorrelationID)
		}
	}
	sub.mu.Unlock()
	// Still serving after the bad input.
	pub(wire.TopicCmdTrigger, `{"schema":1,"correlation_id":"job-3"}`)
	waitUntil(t, 10*time.Second, "verdict for job-3", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		for _, v := range sub.verdicts {
			if v.CorrelationID == "job-3" && strings.HasPrefix(v.Serial, "M") {
				return true
			}
		}
		return false
	})
}

// buildAgent builds takt-agent once per test binary.
var buildAgent = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "takt-agent-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "takt-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/takt-agent").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build takt-agent: %v\n%s", err, out)
	}
	return bin, nil
})

// agentProc is a takt-agent child process with MQTT.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startAgentProc(t *testing.T, cfgPath string) *agentProc {
	t.Helper()
	bin, err := buildAgent()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"level":"error"`) {
				t.Logf("agent: %s", sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *agentProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *agentProc) term(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Errorf("agent did not stop within 20s of SIGTERM")
		p.kill()
	}
}

func writeAgentConfig(t *testing.T, dataDir, broker string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	y := fmt.Sprintf(`station: st-mqtt
data_dir: %s
camera: {kind: folder, path: %s, loop: true, fps: 40}
model: {path: %s}
deadline: 5s
log: {format: json}
mqtt:
  broker: %s
  site: plant
  line: line-1
  keepalive: 2s
  reconnect_min: 50ms
  reconnect_max: 300ms
  publish_timeout: 3s
  alert_burst: 100000
`, dataDir, fixture.line, fixture.model, broker)
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The agent is SIGKILLed while the broker is down and restarted before it is
// back: every verdict committed gets its verdict message (and every FAIL and
// NO_DECISION its alert) at a persistent-session subscriber, or still waits in
// the outbox; nothing committed before the broker came back is missing.
func TestMQTTAgentKilledDuringOutage(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	sub := newSubscriber(t, b.URL, "console-kill", true)
	dataDir := filepath.Join(t.TempDir(), "data")
	cfgPath := writeAgentConfig(t, dataDir, b.URL)

	p1 := startAgentProc(t, cfgPath)
	waitUntil(t, 30*time.Second, "first alerts from the agent", func() bool { return len(sub.alertTexts()) >= 3 })
	b.Stop()
	time.Sleep(1500 * time.Millisecond) // the agent goes on inspecting, into the outbox
	p1.kill()
	p2 := startAgentProc(t, cfgPath)
	time.Sleep(1500 * time.Millisecond)
	restarted := time.Now()
	b.Start()
	waitUntil(t, 30*time.Second, "a verdict captured after the broker came back", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		for _, v := range sub.verdicts {
			if v.Time.After(restarted) {
				return true
			}
		}
		return false
	})
	p2.term(t)

	st := openStore(t, dataDir)
	pending, err := st.PendingMQTT(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	queued := map[string]bool{}
	for _, m := range pending {
		queued[m.ID] = true
	}
	_, cursor, err := st.MQTTBacklog()
	if err != nil {
		t.Fatal(err)
	}
	vs, err := st.List(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	var fails, lost, pendingAfter int
	for _, v := range vs {
		id := fmt.Sprintf("st-mqtt-v%d-%d", v.ID, v.Time.UnixMilli())
		check := func(msgID string, got bool) {
			switch {
			case got:
			case (queued[msgID] || v.ID > cursor) && !v.Time.Before(restarted):
				pendingAfter++ // durable, sent after the next start
			default:
				lost++
				t.Errorf("message %s (verdict %d %s at %s) lost", msgID, v.ID, v.Decision, v.Time.Format(time.StampMilli))
			}
		}
		_, ok := sub.verdicts[id]
		check(id, ok)
		if v.Decision != store.Pass {
			fails++
			aid := id + "-" + map[string]string{store.Fail: "fail", store.NoDecision: "no_decision"}[v.Decision]
			_, ok := sub.alerts[aid]
			check(aid, ok)
		}
	}
	t.Logf("%d verdicts (%d FAIL/NO_DECISION) in the store; received %d verdict messages, %d alerts (%d duplicates); %d still queued; lost %d",
		len(vs), fails, len(sub.verdicts), len(sub.alerts), sub.dupes, pendingAfter, lost)
	if fails == 0 {
		t.Errorf("no FAIL verdicts in %d parts; the fixture has defective parts", len(vs))
	}
}

// Last will: the broker says offline within keepalive x 1.5 of a SIGKILL.
func TestMQTTLastWill(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	sub := newSubscriber(t, b.URL, "console-lwt", false)
	p := startAgentProc(t, writeAgentConfig(t, filepath.Join(t.TempDir(), "data"), b.URL))
	waitUntil(t, 30*time.Second, "status online", func() bool {
		s, _, ok := sub.lastStatus()
		return ok && s.State == wire.StateOnline
	})
	if s, _, _ := sub.lastStatus(); s.Station != "st-mqtt" || s.Model == nil || s.Model.Name == "" || s.Provider == "" {
		t.Errorf("birth status = %+v, want station st-mqtt, model and provider", s)
	}
	killed := time.Now()
	p.kill()
	const keepalive = 2 * time.Second
	waitUntil(t, keepalive*3/2, "status offline (last will)", func() bool {
		s, _, ok := sub.lastStatus()
		return ok && s.State == wire.StateOffline
	})
	_, at, _ := sub.lastStatus()
	t.Logf("offline %v after SIGKILL (keepalive %v)", at.Sub(killed).Round(time.Millisecond), keepalive)
}

// TAKT_MQTT_PASSWORD sets the password, which never shows when the config is printed.
func TestMQTTConfigPasswordFromEnv(t *testing.T) {
	cfg, err := ParseConfig([]byte("model: {path: m.onnx}\nmqtt: {broker: \"ssl://b:8883\", username: st, tls: {ca: ca.pem}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TAKT_MQTT_PASSWORD": "hunter2"}
	cfg.loadMQTTSettings("/etc/takt", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if string(cfg.MQTT.Password) != "hunter2" || cfg.MQTT.TLS.CA != "/etc/takt/ca.pem" {
		t.Errorf("password, ca = %q, %q; want hunter2, /etc/takt/ca.pem", string(cfg.MQTT.Password), cfg.MQTT.TLS.CA)
	}
	if s := fmt.Sprintf("%v %+v %#v", cfg.MQTT, cfg.MQTT, cfg.MQTT); strings.Contains(s, "hunter2") {
		t.Errorf("password printed: %s", s)
	}
	if got := cfg.MQTT.conn(cfg.Station).ClientID; got != "takt-station-1" {
		t.Errorf("client id = %q, want takt-station-1", got)
	}
}
