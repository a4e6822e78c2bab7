package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSetLabel(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{OpenTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []uint64
	for i, d := range []string{Fail, Pass, NoDecision} {
		score := 0.7
		v := &Verdict{Station: "st", CameraID: "cam0", Serial: "p" + d, Time: time.Now().Add(time.Duration(i) * time.Millisecond),
			Decision: d, Score: &score, Threshold: 0.5}
		if err := s.Commit(ctx, v, &Image{Data: []byte("jpeg bytes"), Ext: "jpg"}); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		ids = append(ids, v.ID)
	}
	// The first verdict leaves the outbox (synced) before it is labelled: a label on a synced
	// verdict must not queue it again.
	if err := s.Ack(ctx, ids[:1]); err != nil {
		t.Fatal(err)
	}
	before, err := s.Backlog()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		id    uint64
		label string
	}{{ids[0], "false_reject"}, {ids[1], "false_accept"}, {ids[2], "false_reject"}, {ids[2], "false_reject"}, {ids[1], ""}} {
		if err := s.SetLabel(ctx, tc.id, tc.label); err != nil {
			t.Fatalf("SetLabel(%d, %q): %v", tc.id, tc.label, err)
		}
		v, err := s.Get(tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Label != tc.label {
			t.Fatalf("verdict %d: got label %q, want %q", tc.id, v.Label, tc.label)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("Check after SetLabel(%d, %q): %v", tc.id, tc.label, err)
		}
	}
	after, err := s.Backlog()
	if err != nil {
		t.Fatal(err)
	}
	if after.Count != before.Count {
		t.Fatalf("backlog count: got %d after labelling, want %d (a label queues nothing)", after.Count, before.Count)
	}
	if want := before.Bytes + int64(len(`false_reject`)); after.Bytes != want {
		t.Fatalf("backlog bytes: got %d, want %d (the queued record grew by its label)", after.Bytes, want)
	}

	for _, tc := range []struct {
		name  string
		id    uint64
		label string
		want  error
	}{
		{"unknown id", 999, "false_reject", ErrNotFound},
		{"too long", ids[0], strings.Repeat("x", MaxLabelLen+1), ErrInvalid},
		{"control character", ids[0], "bad\nlabel", ErrInvalid},
	} {
		if err := s.SetLabel(ctx, tc.id, tc.label); !errors.Is(err, tc.want) {
			t.Errorf("%s: SetLabel: got %v, want %v", tc.name, err, tc.want)
		}
	}

	// Durable: the label survives a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLabel(ctx, ids[0], "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetLabel after Close: got %v, want ErrClosed", err)
	}
	s2, err := Open(dir, Options{OpenTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	v, err := s2.Get(ids[0])
	if err != nil || v.Label != "false_reject" || v.SyncedAt == nil {
		t.Fatalf("after reopen: got label %q synced_at %v (%v), want false_reject and still synced", v.Label, v.SyncedAt, err)
	}
}
