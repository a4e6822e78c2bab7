package store

// Operator labels travel to the cloud as their own immutable objects, with a
// real store, the real uploader and a real versitygw.

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// waitSynced waits until neither verdicts nor label entries are pending.
func waitSynced(t *testing.T, s *Store, u *cloudsync.Uploader, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := s.Backlog()
		if err != nil {
			t.Fatal(err)
		}
		if b.Count == 0 && b.Labels == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog after %v: %+v, want no verdicts and no labels; uploader %+v", timeout, b, u.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// bucketKeys lists the bucket's keys by kind ("verdicts", "labels", ...) and
// fails on any conflict object.
func bucketKeys(t *testing.T, s3 *cloudtest.S3, bucket string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, o := range s3.Objects(t, bucket, "") {
		if strings.Contains(o.Key, "-conflict-") {
			t.Errorf("conflict object %s, want none", o.Key)
		}
		kind, _, _ := strings.Cut(o.Key, "/")
		out[kind] = append(out[kind], o.Key)
	}
	return out
}

// wantLabelObject checks the label object of verdict v with sequence seq.
func wantLabelObject(t *testing.T, s3 *cloudtest.S3, bucket string, v *Verdict, seq uint64, label string) {
	t.Helper()
	key := wire.LabelKey(v.Station, v.Time, v.ID, seq)
	if want := "labels/st-1/2025/03/07/"; !strings.HasPrefix(key, want) {
		t.Fatalf("label key %s, want under %s", key, want)
	}
	var r wire.LabelRecord
	if err := json.Unmarshal(s3.Get(t, bucket, key), &r); err != nil {
		t.Fatalf("label object %s: %v", key, err)
	}
	if r.Schema != wire.LabelSchema || r.VerdictID != v.ID || r.Seq != seq || r.Station != v.Station ||
		r.Serial != v.Serial || r.Label != label || !r.CapturedAt.Equal(v.Time) || r.LabeledAt.IsZero() {
		t.Errorf("label object %s = %+v, want schema %d, verdict %d, seq %d, station %s, serial %s, label %q, captured %v, labeled_at set",
			key, r, wire.LabelSchema, v.ID, seq, v.Station, v.Serial, label, v.Time)
	}
}

// batchRecords parses a verdict batch object.
func batchRecords(t *testing.T, data []byte) []Verdict {
	t.Helper()
	var out []Verdict
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var v Verdict
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("batch line %q: %v", line, err)
		}
		out = append(out, v)
	}
	return out
}

func commitOne(t *testing.T, s *Store, decision, serial string) *Verdict {
	t.Helper()
	v := newVerdict(decision, serial)
	if err := s.Commit(context.Background(), v, nil); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return v
}

func wantLabel(t *testing.T, s *Store, id uint64, want string) Verdict {
	t.Helper()
	v := mustGet(t, s, id)
	if v.Label != want {
		t.Errorf("Get(%d).Label = %q, want %q", id, v.Label, want)
	}
	all, err := s.List(id-1, 1)
	if err != nil || len(all) != 1 || all[0].Label != want {
		t.Errorf("List label of %d = %+v (%v), want %q", id, all, err, want)
	}
	return v
}

func TestSyncLabels(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	ctx := context.Background()

	t.Run("before upload", func(t *testing.T) {
		bucket := s3.NewBucket(t, "label-before")
		s := openWith(t, t.TempDir(), Options{})
		v := commitOne(t, s, Fail, "p1")
		if err := s.SetLabel(ctx, v.ID, "false_reject"); err != nil {
			t.Fatal(err)
		}
		u, stop := runUploader(t, syncConfig(s3, s3.Endpoint, bucket), s)
		waitSynced(t, s, u, 10*time.Second)
		stop()
		keys := bucketKeys(t, s3, bucket)
		if len(keys["verdicts"]) != 1 || len(keys["labels"]) != 1 || len(keys) != 2 {
			t.Fatalf("bucket keys %v, want one batch and one label object", keys)
		}
		wantLabelObject(t, s3, bucket, v, 1, "false_reject")
		recs := batchRecords(t, s3.Get(t, bucket, keys["verdicts"][0]))
		if len(recs) != 1 || recs[0].ID != v.ID || recs[0].Label != "false_reject" {
			t.Errorf("batch records %+v, want verdict %d with label false_reject", recs, v.ID)
		}
		if got := wantLabel(t, s, v.ID, "false_reject"); got.SyncedAt == nil {
			t.Errorf("verdict %d: SyncedAt nil after upload", v.ID)
		}
		mustCheck(t, s)
	})

	t.Run("after upload and relabel", func(t *testing.T) {
		bucket := s3.NewBucket(t, "label-after")
		s := openWith(t, t.TempDir(), Options{})
		v := commitOne(t, s, Fail, "p2")
		u, stop := runUploader(t, syncConfig(s3, s3.Endpoint, bucket), s)
		waitSynced(t, s, u, 10*time.Second)
		keys := bucketKeys(t, s3, bucket)
		if len(keys["verdicts"]) != 1 || len(keys) != 1 {
			t.Fatalf("bucket keys before labelling %v, want one batch", keys)
		}
		batchKey := keys["verdicts"][0]
		batch := s3.Get(t, bucket, batchKey)

		if err := s.SetLabel(ctx, v.ID, "false_reject"); err != nil {
			t.Fatal(err)
		}
		if b, _ := s.Backlog(); b.Count != 0 || b.Labels != 1 {
			t.Errorf("backlog after labelling a synced verdict = %+v, want 0 verdicts, 1 label", b)
		}
		waitSynced(t, s, u, 10*time.Second)
		wantLabelObject(t, s3, bucket, v, 1, "false_reject")
		wantLabel(t, s, v.ID, "false_reject")

		// Relabel: a second object; the latest wins locally.
		if err := s.SetLabel(ctx, v.ID, ""); err != nil {
			t.Fatal(err)
		}
		waitSynced(t, s, u, 10*time.Second)
		stop()
		wantLabelObject(t, s3, bucket, v, 1, "false_reject")
		wantLabelObject(t, s3, bucket, v, 2, "")
		wantLabel(t, s, v.ID, "")
		keys = bucketKeys(t, s3, bucket)
		if len(keys["verdicts"]) != 1 || len(keys["labels"]) != 2 || len(keys) != 2 {
			t.Errorf("bucket keys %v, want the one batch and two label objects", keys)
		}
		if got := s3.Get(t, bucket, batchKey); !bytes.Equal(got, batch) {
			t.Errorf("batch %s changed after labelling:\ngot  %s\nwant %s", batchKey, got, batch)
		}
		if st := u.Status(); st.Conflicts != 0 {
			t.Errorf("uploader conflicts = %d, want 0", st.Conflicts)
		}
		mustCheck(t, s)
	})

	t.Run("during a sealed set", func(t *testing.T) {
		bucket := s3.NewBucket(t, "label-sealed")
		dir := t.TempDir()
		s := openWith(t, dir, Options{})
		var vs []*Verdict
		for _, serial := range []string{"a", "b", "c"} {
			vs = append(vs, commitOne(t, s, Fail, serial))
		}
		cfg := syncConfig(s3, s3.Endpoint, bucket)
		// The batch goes up, the Ack is lost: the set stays sealed.
		u, stop := runUploader(t, cfg, ackFails{s})
		for deadline := time.Now().Add(10 * time.Second); u.Status().Objects < 1; {
			if time.Now().After(deadline) {
				t.Fatalf("first uploader: %+v, want the batch written", u.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
		stop()
		sealed, err := s.Pending(ctx, 10)
		if err != nil || len(sealed) != 3 {
			t.Fatalf("Pending = %d items (%v), want the sealed 3", len(sealed), err)
		}
		// Relabel twice while sealed: the latest label wins, the record keeps its bytes.
		for _, l := range []string{"x", "false_reject"} {
			if err := s.SetLabel(ctx, vs[1].ID, l); err != nil {
				t.Fatal(err)
			}
		}
		wantLabel(t, s, vs[1].ID, "false_reject")
		mustCheck(t, s)
		again, err := s.Pending(ctx, 10)
		if err != nil || len(again) != 3 {
			t.Fatalf("Pending after SetLabel = %d items (%v), want 3", len(again), err)
		}
		for i := range again {
			if !bytes.Equal(again[i].Record, sealed[i].Record) {
				t.Errorf("sealed record %d changed by SetLabel:\ngot  %s\nwant %s", again[i].ID, again[i].Record, sealed[i].Record)
			}
		}
		// A restart of the uploader retries the same set.
		s.Close()
		s = openWith(t, dir, Options{})
		wantLabel(t, s, vs[1].ID, "false_reject")
		u, stop = runUploader(t, cfg, s)
		waitSynced(t, s, u, 10*time.Second)
		stop()
		if st := u.Status(); st.Conflicts != 0 || st.Existed != 1 {
			t.Errorf("retry: %d conflicts, %d existed; want 0 and 1 (the identical batch)", st.Conflicts, st.Existed)
		}
		keys := bucketKeys(t, s3, bucket)
		if len(keys["verdicts"]) != 1 || len(keys["labels"]) != 2 || len(keys) != 2 {
			t.Fatalf("bucket keys %v, want exactly one batch and two label objects", keys)
		}
		recs := batchRecords(t, s3.Get(t, bucket, keys["verdicts"][0]))
		if len(recs) != 3 {
			t.Errorf("batch holds %d records, want 3", len(recs))
		}
		wantLabelObject(t, s3, bucket, vs[1], 1, "x")
		wantLabelObject(t, s3, bucket, vs[1], 2, "false_reject")
		// After the Ack the record itself carries the label.
		if got := wantLabel(t, s, vs[1].ID, "false_reject"); got.SyncedAt == nil {
			t.Errorf("verdict %d: SyncedAt nil after the Ack", vs[1].ID)
		}
		s.Close()
		s = openWith(t, dir, Options{})
		wantLabel(t, s, vs[1].ID, "false_reject")
		mustCheck(t, s)
	})

	t.Run("restart before upload", func(t *testing.T) {
		bucket := s3.NewBucket(t, "label-restart")
		dir := t.TempDir()
		s := openWith(t, dir, Options{})
		v := commitOne(t, s, Pass, "p4")
		if err := s.Ack(ctx, []uint64{v.ID}); err != nil { // synced long ago
			t.Fatal(err)
		}
		if err := s.SetLabel(ctx, v.ID, "false_accept"); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = openWith(t, dir, Options{})
		if b, _ := s.Backlog(); b.Labels != 1 {
			t.Fatalf("label entries after restart = %d, want 1", b.Labels)
		}
		u, stop := runUploader(t, syncConfig(s3, s3.Endpoint, bucket), s)
		waitSynced(t, s, u, 10*time.Second)
		stop()
		keys := bucketKeys(t, s3, bucket)
		if len(keys["labels"]) != 1 || len(keys) != 1 {
			t.Fatalf("bucket keys %v, want the one label object", keys)
		}
		wantLabelObject(t, s3, bucket, v, 1, "false_accept")
		wantLabel(t, s, v.ID, "false_accept")
		mustCheck(t, s)
	})
}
