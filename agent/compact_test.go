package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/store"
)

// The agent's compactor compacts the store once it has been idle for
// store.compact_idle with enough free pages, and stops with its context.
func TestAgentCompactsTheStoreWhenIdle(t *testing.T) {
	policy := store.Policy{CompactIdle: 100 * time.Millisecond, CompactMinFree: 1 << 20, CompactMinFreeRatio: 0.5}
	st, err := store.Open(t.TempDir(), store.Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Free pages: 2000 messages of 2 kB through the MQTT outbox.
	ctx := context.Background()
	var msgs []store.MQTTMessage
	for i := range 2000 {
		msgs = append(msgs, store.MQTTMessage{ID: fmt.Sprint(i), Kind: store.MQTTAlert, Topic: "t", Payload: make([]byte, 2048)})
	}
	if _, err := st.EnqueueMQTT(ctx, store.MQTTEnqueue{Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	pending, err := st.PendingMQTT(len(msgs))
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]uint64, len(pending))
	for i, m := range pending {
		seqs[i] = m.Seq
	}
	if err := st.AckMQTT(seqs); err != nil {
		t.Fatal(err)
	}
	_, before, err := st.FreeSpace()
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{Store: policy}, log: zerolog.Nop()}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.compact(runCtx, st) }()
	deadline := time.Now().Add(20 * time.Second)
	for st.Stats().Compactions == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("compact returned %v, want nil after cancel", err)
	}
	ss := st.Stats()
	_, after, _ := st.FreeSpace()
	if ss.Compactions != 1 || after >= before || ss.CompactedBytes != before-after {
		t.Errorf("after idling: %d compactions, file %d -> %d bytes, %d reported; want 1 compaction shrinking the file", ss.Compactions, before, after, ss.CompactedBytes)
	}
}
