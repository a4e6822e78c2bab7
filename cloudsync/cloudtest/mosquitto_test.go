package cloudtest_test

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

const waitFor = 5 * time.Second

// connect connects a paho client to the broker; without cleanSession the
// broker keeps its subscriptions and queued QoS 1 messages while it is away.
// Messages on topics without a subscription handler in this client (queued
// ones delivered right after connect) go to onMsg.
func connect(t *testing.T, b *cloudtest.Broker, id string, cleanSession bool, onMsg mqtt.MessageHandler) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().
		AddBroker(b.URL).
		SetClientID(id).
		SetCleanSession(cleanSession).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor).
		SetDefaultPublishHandler(onMsg)
	c := mqtt.NewClient(opts)
	wait(t, c.Connect(), "connect "+id+" to "+b.URL)
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func wait(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("%s: no answer after %v", what, waitFor)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// receive returns the next message on ch, failing the test after waitFor.
func receive(t *testing.T, ch <-chan mqtt.Message, what string) mqtt.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitFor):
		t.Fatalf("%s: nothing received after %v", what, waitFor)
		return nil
	}
}

func collect() (chan mqtt.Message, mqtt.MessageHandler) {
	ch := make(chan mqtt.Message, 16)
	return ch, func(_ mqtt.Client, m mqtt.Message) { ch <- m }
}

func TestMosquittoPubSub(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	ch, onMsg := collect()
	c := connect(t, b, "station-1", true, nil)
	const topic = "takt/v1/site/line/station-1/verdict"
	wait(t, c.Subscribe(topic, 1, onMsg), "subscribe")
	wait(t, c.Publish(topic, 1, false, `{"verdict":"PASS"}`), "publish")

	m := receive(t, ch, "verdict")
	if got, want := string(m.Payload()), `{"verdict":"PASS"}`; got != want {
		t.Errorf("payload = %q, want %q", got, want)
	}
	if m.Topic() != topic || m.Qos() != 1 {
		t.Errorf("topic, qos = %q, %d; want %q, 1", m.Topic(), m.Qos(), topic)
	}
}

// After Stop and Start the broker has its retained messages and the persistent
// session of a client that was offline, with the QoS 1 message queued for it.
func TestMosquittoRestartKeepsRetainedAndSessions(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	const (
		status = "takt/v1/site/line/station-1/status"
		alerts = "takt/v1/site/line/station-1/alert"
	)

	// A persistent subscriber, then offline.
	sub := connect(t, b, "cloud-alerts", false, nil)
	wait(t, sub.Subscribe(alerts, 1, nil), "subscribe")
	sub.Disconnect(100)

	pub := connect(t, b, "station-1", true, nil)
	wait(t, pub.Publish(status, 1, true, "online"), "publish retained")
	wait(t, pub.Publish(alerts, 1, false, "alert-1"), "publish to offline session")
	pub.Disconnect(100)

	b.Stop()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL).SetClientID("probe").
		SetAutoReconnect(false).SetConnectTimeout(time.Second))
	if tok := c.Connect(); tok.WaitTimeout(waitFor) && tok.Error() == nil {
		c.Disconnect(0)
		t.Fatalf("connect to a stopped broker succeeded")
	}
	b.Start()

	retained, onRetained := collect()
	c = connect(t, b, "operator", true, nil)
	wait(t, c.Subscribe(status, 1, onRetained), "subscribe after restart")
	m := receive(t, retained, "retained status after restart")
	if string(m.Payload()) != "online" || !m.Retained() {
		t.Errorf("after restart: payload %q retained %v, want \"online\" retained true", m.Payload(), m.Retained())
	}

	queued, onQueued := collect()
	connect(t, b, "cloud-alerts", false, onQueued)
	m = receive(t, queued, "queued alert after restart")
	if string(m.Payload()) != "alert-1" || m.Topic() != alerts {
		t.Errorf("queued message: %q on %q, want \"alert-1\" on %q", m.Payload(), m.Topic(), alerts)
	}
}
