package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

func mqttMsg(kind string, i int) MQTTMessage {
	return MQTTMessage{ID: fmt.Sprintf("%s-%d", kind, i), Kind: kind, Topic: "takt/v1/s/l/st/" + kind, Payload: []byte(fmt.Sprintf(`{"n":%d}`, i))}
}

// Messages are durable once EnqueueMQTT returns, come back oldest first until
// acknowledged, survive a reopen, and the cursor only moves up.
func TestMQTTOutboxEnqueuePendingAck(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if n, cur, err := s.MQTTBacklog(); err != nil || n != 0 || cur != 0 {
		t.Fatalf("MQTTBacklog of a new store = %d, %d, %v; want 0, 0, nil", n, cur, err)
	}
	if p, err := s.PendingMQTT(10); err != nil || len(p) != 0 {
		t.Fatalf("PendingMQTT of a new store = %v, %v; want none", p, err)
	}
	var msgs []MQTTMessage
	for i := range 5 {
		msgs = append(msgs, mqttMsg(MQTTAlert, i))
	}
	if _, err := s.EnqueueMQTT(ctx, MQTTEnqueue{Messages: msgs, Cursor: 7}); err != nil {
		t.Fatalf("EnqueueMQTT: %v", err)
	}
	if _, err := s.EnqueueMQTT(ctx, MQTTEnqueue{Cursor: 3}); err != nil {
		t.Fatalf("EnqueueMQTT cursor only: %v", err)
	}
	p, err := s.PendingMQTT(3)
	if err != nil || len(p) != 3 {
		t.Fatalf("PendingMQTT(3) = %d messages, %v; want 3", len(p), err)
	}
	for i, m := range p {
		if m.ID != msgs[i].ID || string(m.Payload) != string(msgs[i].Payload) || m.Seq == 0 {
			t.Errorf("pending[%d] = %+v, want id %s payload %s and a seq", i, m, msgs[i].ID, msgs[i].Payload)
		}
	}
	if err := s.AckMQTT([]uint64{p[0].Seq, p[2].Seq, 9999}); err != nil {
		t.Fatalf("AckMQTT: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, cur, err := s.MQTTBacklog()
	if err != nil || n != 3 || cur != 7 {
		t.Errorf("MQTTBacklog after reopen = %d, %d, %v; want 3, 7 (the cursor never moves down), nil", n, cur, err)
	}
	p, _ = s.PendingMQTT(10)
	var ids []string
	for _, m := range p {
		ids = append(ids, m.ID)
	}
	if got, want := fmt.Sprint(ids), "[alert-1 alert-3 alert-4]"; got != want {
		t.Errorf("pending after ack and reopen = %s, want %s", got, want)
	}
	if _, err := s.EnqueueMQTT(ctx, MQTTEnqueue{Messages: []MQTTMessage{{ID: "x", Kind: "other", Topic: "t"}}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("EnqueueMQTT of kind other = %v, want ErrInvalid", err)
	}
}

// A full outbox drops the oldest verdict messages first, then alerts.
func TestMQTTOutboxMaxDropsVerdictsFirst(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	var msgs []MQTTMessage
	for i := range 4 {
		msgs = append(msgs, mqttMsg(MQTTAlert, i), mqttMsg(MQTTVerdict, i))
	}
	dropped, err := s.EnqueueMQTT(ctx, MQTTEnqueue{Messages: msgs, Max: 5})
	if err != nil || dropped != 3 {
		t.Fatalf("EnqueueMQTT = %d dropped, %v; want 3, nil", dropped, err)
	}
	dropped, err = s.EnqueueMQTT(ctx, MQTTEnqueue{Messages: []MQTTMessage{mqttMsg(MQTTAlert, 9), mqttMsg(MQTTAlert, 10)}, Max: 5})
	if err != nil || dropped != 2 {
		t.Fatalf("EnqueueMQTT = %d dropped, %v; want 2, nil", dropped, err)
	}
	p, _ := s.PendingMQTT(100)
	var ids []string
	for _, m := range p {
		ids = append(ids, m.ID)
	}
	if got, want := fmt.Sprint(ids), "[alert-1 alert-2 alert-3 alert-9 alert-10]"; got != want {
		t.Errorf("pending = %s, want %s", got, want)
	}
	if n, _, _ := s.MQTTBacklog(); n != 5 {
		t.Errorf("backlog = %d, want 5", n)
	}
}

// Concurrent enqueues share transactions and lose nothing.
func TestMQTTOutboxConcurrent(t *testing.T) {
	s := openTestStore(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if _, err := s.EnqueueMQTT(context.Background(), MQTTEnqueue{Messages: []MQTTMessage{mqttMsg(MQTTAlert, g*100+i)}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	p, err := s.PendingMQTT(1000)
	if err != nil || len(p) != 200 {
		t.Fatalf("pending = %d, %v; want 200", len(p), err)
	}
	seen := map[string]bool{}
	for _, m := range p {
		if seen[m.ID] {
			t.Errorf("message %s twice", m.ID)
		}
		seen[m.ID] = true
	}
	if n, _, _ := s.MQTTBacklog(); n != 200 {
		t.Errorf("backlog counter = %d, want 200", n)
	}
}

func openTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
