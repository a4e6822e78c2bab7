// Package stationtest holds what the tests of agent and its packages share: an MQTT
// subscriber that collects what a station publishes, as an operator's console or a MES
// would, and polling for a condition.
//
// # Caveats
//
// Only tests import it. The subscriber is a real paho client; it needs a running broker
// (cloudsync/cloudtest starts one).
package stationtest

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// Subscriber is an independent MQTT client (paho, auto-reconnect) that collects what the
// station publishes under takt/v1/.
type Subscriber struct {
	mu       sync.Mutex
	got      Received
	statusAt []time.Time
	c        mqtt.Client
}

// Received is what a Subscriber has collected.
type Received struct {
	Alerts   map[string]wire.AlertMsg   // by id
	Dupes    int                        // alerts received again with an id already seen
	Verdicts map[string]wire.VerdictMsg // by msg_id
	Errors   []wire.ErrorMsg
	Status   []wire.StatusMsg
	Bad      []string // topics or payloads that did not decode
}

// NewSubscriber connects to the broker at url as client id and subscribes to
// takt/v1/#; with persistent, its session outlives a disconnect. It disconnects when the
// test ends.
func NewSubscriber(t *testing.T, url, id string, persistent bool) *Subscriber {
	t.Helper()
	s := &Subscriber{got: Received{Alerts: map[string]wire.AlertMsg{}, Verdicts: map[string]wire.VerdictMsg{}}}
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

func (s *Subscriber) add(topic string, payload []byte) {
	_, name, err := wire.ParseTopic(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.got.Bad = append(s.got.Bad, topic)
		return
	}
	switch name {
	case wire.TopicAlert:
		var a wire.AlertMsg
		if err := wire.Decode(payload, &a); err != nil {
			s.got.Bad = append(s.got.Bad, fmt.Sprintf("%s: %v", payload, err))
			return
		}
		if _, ok := s.got.Alerts[a.ID]; ok {
			s.got.Dupes++
		}
		s.got.Alerts[a.ID] = a
	case wire.TopicVerdict:
		var v wire.VerdictMsg
		if err := wire.Decode(payload, &v); err != nil {
			s.got.Bad = append(s.got.Bad, fmt.Sprintf("%s: %v", payload, err))
			return
		}
		s.got.Verdicts[v.MsgID] = v
	case wire.TopicError:
		var e wire.ErrorMsg
		if err := wire.Decode(payload, &e); err != nil {
			s.got.Bad = append(s.got.Bad, fmt.Sprintf("%s: %v", payload, err))
			return
		}
		s.got.Errors = append(s.got.Errors, e)
	case wire.TopicStatus:
		var st wire.StatusMsg
		if err := wire.Decode(payload, &st); err != nil {
			s.got.Bad = append(s.got.Bad, fmt.Sprintf("%s: %v", payload, err))
			return
		}
		s.got.Status = append(s.got.Status, st)
		s.statusAt = append(s.statusAt, time.Now())
	}
}

// Received returns a copy of what has been collected so far.
func (s *Subscriber) Received() Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Received{
		Alerts:   maps.Clone(s.got.Alerts),
		Dupes:    s.got.Dupes,
		Verdicts: maps.Clone(s.got.Verdicts),
		Errors:   slices.Clone(s.got.Errors),
		Status:   slices.Clone(s.got.Status),
		Bad:      slices.Clone(s.got.Bad),
	}
}

// AlertTexts returns the messages of the distinct alerts received.
func (s *Subscriber) AlertTexts() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for _, a := range s.got.Alerts {
		out[a.Message] = true
	}
	return out
}

// LastStatus returns the last status message and when it arrived; ok is false before
// the first.
func (s *Subscriber) LastStatus() (st wire.StatusMsg, at time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got.Status) == 0 {
		return wire.StatusMsg{}, time.Time{}, false
	}
	return s.got.Status[len(s.got.Status)-1], s.statusAt[len(s.statusAt)-1], true
}

// Publish sends payload to topic at QoS 1, not retained, and waits for the broker.
func (s *Subscriber) Publish(topic, payload string) error {
	tok := s.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(5 * time.Second) {
		return fmt.Errorf("publish %s: no answer from the broker", topic)
	}
	return tok.Error()
}

// WaitUntil polls cond until it holds and fails the test when it does not within
// timeout; what names the condition in that failure.
func WaitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
