package agent

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// TestFiguresMQTT measures, on a loopback Mosquitto:
//   - alert_publish_p99_ms: from raising an alert (the decision) to the
//     broker's PUBACK and the outbox entry's removal, one alert at a time; it
//     includes the outbox commit (fsync) before sending;
//   - verdict_msgs_per_s: verdict messages drained from the outbox with QoS 1
//     (publish, PUBACK, durable removal), sustained over 5000 messages;
//   - verdict_msgs_per_s_bare_paho: the same messages published by a bare
//     paho client with QoS 1 and nothing durable, as the baseline.
func TestFiguresMQTT(t *testing.T) {
	if os.Getenv("TAKT_FIGURES") != "1" {
		t.Skip("figures run with TAKT_FIGURES=1 (make bench)")
	}
	b := cloudtest.StartMosquitto(t)
	st := openStore(t, t.TempDir())
	cfg := testMQTTConfig(b.URL)
	r, err := newMQTTRole(cfg, "st-1", st, mqttHooks{}, testLogger(t).Level(3))
	if err != nil {
		t.Fatal(err)
	}
	ackCh := make(chan int, 16)
	r.onAcked = func(ids []string) { ackCh <- len(ids) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	if err := r.conn.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}

	// Latency: one alert at a time; the outbox is empty before each, so the
	// next acknowledgement is this alert's.
	const n = 300
	var lat []time.Duration
	for i := range n {
		start := time.Now()
		if err := r.raise(ctx, wire.AlertDegraded, fmt.Sprintf("figure %d", i)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ackCh:
		case <-time.After(10 * time.Second):
			t.Fatalf("alert %d not acknowledged within 10s", i)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	fmt.Printf("BENCH alert_publish_p99_ms=%.2f\n", float64(p99.Microseconds())/1000)
	t.Logf("alert raise to PUBACK over %d alerts: p50 %v, p99 %v", n, lat[len(lat)/2], p99)

	// Throughput: stop the sender, fill the outbox, restart, time the drain.
	cancel()
	<-done
	stopped = true
	const m = 5000
	var msgs []store.MQTTMessage
	payload := make([]byte, 0, 400)
	for i := range m {
		v := wire.VerdictMsg{Schema: 1, MsgID: fmt.Sprintf("fig-%d", i), ID: uint64(i + 1), Station: "st-1", Serial: fmt.Sprintf("SN-%06d", i),
			Time: time.Now().UTC(), Verdict: "PASS", Threshold: 1.5, Model: wire.ModelRef{Name: "m", Version: "1.0.0"}, LatencyMs: 23.5}
		payload, _ = wire.Encode(&v)
		msgs = append(msgs, store.MQTTMessage{ID: v.MsgID, Kind: store.MQTTVerdict, Topic: r.topics.Topic(wire.TopicVerdict), Payload: payload})
		if len(msgs) == 500 {
			if _, err := st.EnqueueMQTT(context.Background(), store.MQTTEnqueue{Messages: msgs}); err != nil {
				t.Fatal(err)
			}
			msgs = nil
		}
	}
	r2, err := newMQTTRole(cfg, "st-1", st, mqttHooks{}, testLogger(t).Level(3))
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	start := time.Now()
	go func() { done2 <- r2.Run(ctx2) }()
	defer func() { cancel2(); <-done2 }()
	deadline := time.Now().Add(120 * time.Second)
	for {
		c, _, _ := st.MQTTBacklog()
		if c == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d of %d after 120s", c, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
	rate := float64(m) / time.Since(start).Seconds()
	fmt.Printf("BENCH verdict_msgs_per_s=%.0f\n", rate)

	// Baseline: bare paho, QoS 1, all in flight, nothing durable.
	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL).SetClientID("bare").SetProtocolVersion(4))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cl.Disconnect(0)
	start = time.Now()
	toks := make([]mqtt.Token, 0, mqttBatch)
	for i := 0; i < m; i++ {
		toks = append(toks, cl.Publish(r.topics.Topic(wire.TopicVerdict), 1, false, payload))
		if len(toks) == mqttBatch || i == m-1 {
			for _, tok := range toks {
				tok.Wait()
			}
			toks = toks[:0]
		}
	}
	bare := float64(m) / time.Since(start).Seconds()
	fmt.Printf("BENCH verdict_msgs_per_s_bare_paho=%.0f\n", bare)
	t.Logf("verdict messages: %.0f/s through the outbox, %.0f/s bare paho in batches of %d (ratio %.2f)", rate, bare, mqttBatch, rate/bare)
}
