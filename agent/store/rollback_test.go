package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A record written by a newer agent keeps the fields this version does not know when this
// version labels it or marks it synced (an agent rolled back by a firmware update).
func TestUpdatesKeepFieldsOfNewerAgents(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	var ids []uint64
	for i := range 2 {
		score := 0.7
		v := &Verdict{Station: "st", CameraID: "cam0", Serial: "p", Time: time.Now().Add(time.Duration(i) * time.Millisecond),
			Decision: Fail, Score: &score, Threshold: 0.5}
		if err := s.Commit(ctx, v, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
	}
	raw := func(id uint64) (rec map[string]json.RawMessage) {
		t.Helper()
		if err := s.view(func(tx *bolt.Tx) error { return json.Unmarshal(tx.Bucket(bucketVerdicts).Get(idKey(id)), &rec) }); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	// What a newer agent would have written: a field this version has never heard of.
	for _, id := range ids {
		rec := raw(id)
		rec["cycle_counter"] = json.RawMessage(`{"press":41,"tool":"T7"}`)
		data, _ := json.Marshal(rec)
		if err := s.update(func(tx *bolt.Tx) error {
			old := tx.Bucket(bucketVerdicts).Get(idKey(id))
			if err := addSigned(tx.Bucket(bucketStats), keyRecordBytes, int64(len(data)-len(old))); err != nil {
				return err
			}
			return tx.Bucket(bucketVerdicts).Put(idKey(id), data)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetLabel(ctx, ids[0], "false_reject"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, ids); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		rec := raw(id)
		if string(rec["cycle_counter"]) != `{"press":41,"tool":"T7"}` {
			t.Fatalf("verdict %d: the newer agent's field became %s after label and sync, want it kept", id, rec["cycle_counter"])
		}
		v, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if v.SyncedAt == nil || (i == 0 && v.Label != "false_reject") {
			t.Fatalf("verdict %d: synced_at %v label %q, want synced and (first) labelled", id, v.SyncedAt, v.Label)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}
