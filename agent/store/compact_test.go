package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fillAndFree commits n verdicts (with small images every tenth), labels a
// few, and pushes mqtt messages of 4 kB through the MQTT outbox (all
// enqueued, then all acknowledged, like a backlog after an outage): their
// pages end up free. It returns the verdict ids.
func fillAndFree(t testing.TB, s *Store, n, mqttMsgs int) []uint64 {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var ids []uint64
	concurrently(8, n, func(i int) {
		v := newVerdict([]string{Pass, Fail, NoDecision}[i%3], fmt.Sprint("fill-", i))
		var img *Image
		if i%10 == 0 {
			img = &Image{Data: []byte(v.Serial), Ext: "jpg"}
		}
		if err := s.Commit(ctx, v, img); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		ids = append(ids, v.ID)
		mu.Unlock()
	})
	for _, id := range ids[:min(len(ids), 5)] {
		if err := s.SetLabel(ctx, id, "false_reject"); err != nil {
			t.Fatal(err)
		}
	}
	// A backlog: everything queued first (the file grows), then drained.
	payload := bytes.Repeat([]byte("m"), 4096)
	for start := 0; start < mqttMsgs; start += 500 {
		var msgs []MQTTMessage
		for i := start; i < min(start+500, mqttMsgs); i++ {
			msgs = append(msgs, MQTTMessage{ID: fmt.Sprint("a-", i), Kind: MQTTAlert, Topic: "t/alert", Payload: payload})
		}
		if _, err := s.EnqueueMQTT(ctx, MQTTEnqueue{Messages: msgs, Cursor: uint64(start + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		pending, err := s.PendingMQTT(500)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 0 {
			break
		}
		seqs := make([]uint64, len(pending))
		for i, m := range pending {
			seqs[i] = m.Seq
		}
		if err := s.AckMQTT(seqs); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// dump is every bucket's sequence and every key and value of the store,
// for comparing its content before and after a compaction.
func dump(t testing.TB, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.view(func(tx *bolt.Tx) error {
		var walk func(path string, b *bolt.Bucket) error
		walk = func(path string, b *bolt.Bucket) error {
			out[path+"#seq"] = fmt.Sprint(b.Sequence())
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return walk(path+"/"+hex.EncodeToString(k), b.Bucket(k))
				}
				out[path+"/"+hex.EncodeToString(k)] = string(v)
				return nil
			})
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dbSize(t testing.TB, dir string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// compactLeftovers lists compaction temp files in dir.
func compactLeftovers(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, compactPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// An online compaction shrinks takt.db, keeps every bucket, key, value and
// sequence as it was, and the store goes on (commits, ids, check, reopen).
func TestCompactOnlineShrinksAndKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, dir, Options{})
	ids := fillAndFree(t, s, 200, 1500)
	before := dump(t, s)
	free, size, err := s.FreeSpace()
	if err != nil || free < size/2 {
		t.Fatalf("FreeSpace = %d of %d, %v; want more than half free after the mqtt acks", free, size, err)
	}
	res, err := s.CompactOnline()
	if err != nil || !res.Compacted {
		t.Fatalf("CompactOnline = %+v, %v; want compacted", res, err)
	}
	if got := dbSize(t, dir); res.After != got || res.After >= res.Before || res.Before != size {
		t.Errorf("result sizes %d -> %d, file now %d, before %d: want a smaller file", res.Before, res.After, got, size)
	}
	t.Logf("compacted %d -> %d bytes (%d free), copy %v, pause %v", res.Before, res.After, res.Free, res.Copy, res.Pause)
	if after := dump(t, s); !maps.Equal(before, after) {
		for _, k := range slices.Sorted(maps.Keys(before)) {
			if after[k] != before[k] {
				t.Errorf("key %s: %q before, %q after", k, before[k], after[k])
				break
			}
		}
		t.Fatalf("content changed: %d entries before, %d after", len(before), len(after))
	}
	mustCheck(t, s)
	if left := compactLeftovers(t, dir); len(left) != 0 {
		t.Errorf("leftovers after compaction: %v", left)
	}
	if fi, err := os.Stat(filepath.Join(dir, dbFile)); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("takt.db after compaction: %v, %v; want mode 0640 like a new one", fi.Mode(), err)
	}
	st := s.Stats()
	if st.Compactions != 1 || st.CompactedBytes != res.Before-res.After || st.CompactPauseLast != res.Pause {
		t.Errorf("Stats = %d compactions, %d bytes, pause %v; want 1, %d, %v", st.Compactions, st.CompactedBytes, st.CompactPauseLast, res.Before-res.After, res.Pause)
	}
	// The store continues on the new file, across a reopen.
	v := newVerdict(Fail, "after-compaction")
	if err := s.Commit(context.Background(), v, &Image{Data: []byte("x"), Ext: "png"}); err != nil {
		t.Fatal(err)
	}
	if v.ID != slices.Max(ids)+1 {
		t.Errorf("id after compaction = %d, want %d", v.ID, slices.Max(ids)+1)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openWith(t, dir, Options{})
	mustCheck(t, s)
	for _, id := range append(ids, v.ID) {
		if _, err := s.Get(id); err != nil {
			t.Fatalf("Get(%d) after compaction and reopen: %v", id, err)
		}
	}
	if v2 := newVerdict(Pass, "after-reopen"); s.Commit(context.Background(), v2, nil) != nil || v2.ID != v.ID+1 {
		t.Errorf("id after reopen = %d, want %d", v2.ID, v.ID+1)
	}
}

// Commits and reads that arrive during the swap wait for it and succeed, on
// the new file; the pause they saw is measured.
func TestCompactOnlineCommitsWaitForTheSwap(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, dir, Options{})
	fillAndFree(t, s, 50, 1000)
	const writers, hold = 8, 100 * time.Millisecond
	type result struct {
		id  uint64
		err error
	}
	results := make(chan result, writers+1)
	var wg sync.WaitGroup
	s.hookCompact = func(step string) {
		if step != "locked" {
			return
		}
		// Under the exclusive lock: these must wait, not fail.
		for w := range writers {
			wg.Go(func() {
				v := newVerdict(Pass, fmt.Sprint("during-swap-", w))
				err := s.Commit(context.Background(), v, nil)
				results <- result{v.ID, err}
			})
		}
		wg.Go(func() {
			_, err := s.Counts()
			results <- result{0, err}
		})
		time.Sleep(hold)
		if n := len(results); n != 0 {
			t.Errorf("%d commits or reads finished while the swap held the store, want 0", n)
		}
	}
	res, err := s.CompactOnline()
	if err != nil || !res.Compacted {
		t.Fatalf("CompactOnline = %+v, %v; want compacted", res, err)
	}
	wg.Wait()
	close(results)
	var ids []uint64
	for r := range results {
		if r.err != nil {
			t.Errorf("commit or read during the swap: %v", r.err)
		}
		if r.id != 0 {
			ids = append(ids, r.id)
		}
	}
	if res.Pause < hold {
		t.Errorf("Pause = %v, want at least the %v the test held the swap", res.Pause, hold)
	}
	if st := s.Stats(); st.CompactPauseMax != res.Pause {
		t.Errorf("Stats().CompactPauseMax = %v, want %v", st.CompactPauseMax, res.Pause)
	}
	s.Close()
	s = openWith(t, dir, Options{})
	mustCheck(t, s)
	for _, id := range ids {
		if _, err := s.Get(id); err != nil {
			t.Errorf("verdict %d committed during the swap: %v", id, err)
		}
	}
	if len(ids) != writers {
		t.Errorf("%d commits during the swap returned ids, want %d", len(ids), writers)
	}
}

// A write between the snapshot and the swap makes the copy stale: the
// compaction is abandoned, takt.db stays as it is, nothing is lost.
func TestCompactOnlineAbandonsWhenWrittenDuringTheCopy(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, dir, Options{})
	fillAndFree(t, s, 50, 1000)
	size := dbSize(t, dir)
	late := newVerdict(Fail, "during-copy")
	s.hookCompact = func(step string) {
		if step == "copied" {
			if err := s.Commit(context.Background(), late, nil); err != nil {
				t.Error(err)
			}
		}
	}
	res, err := s.CompactOnline()
	if err != nil || res.Compacted || !res.Abandoned || res.Skipped != "written during the copy" {
		t.Fatalf("CompactOnline = %+v, %v; want abandoned: written during the copy", res, err)
	}
	if got := dbSize(t, dir); got != size {
		t.Errorf("takt.db is %d bytes, want %d (untouched)", got, size)
	}
	if left := compactLeftovers(t, dir); len(left) != 0 {
		t.Errorf("leftovers after an abandoned compaction: %v", left)
	}
	if st := s.Stats(); st.Compactions != 0 || st.CompactionsAbandoned != 1 {
		t.Errorf("Stats = %d compactions, %d abandoned; want 0, 1", st.Compactions, st.CompactionsAbandoned)
	}
	if _, err := s.Get(late.ID); err != nil {
		t.Errorf("verdict committed during the copy: %v", err)
	}
	// The next try, without writes, goes through.
	s.hookCompact = nil
	if res, err := s.CompactOnline(); err != nil || !res.Compacted {
		t.Errorf("second CompactOnline = %+v, %v; want compacted", res, err)
	}
	if _, err := s.Get(late.ID); err != nil {
		t.Errorf("verdict committed during the first copy, after the second: %v", err)
	}
}

// MaybeCompact follows the policy: off, not idle, too little free space
// (in bytes or as a share of the file), then due.
func TestMaybeCompactPolicy(t *testing.T) {
	dir := t.TempDir()
	policy := Policy{CompactIdle: time.Minute, CompactMinFree: 1 << 20, CompactMinFreeRatio: 0.5}
	s := openWith(t, dir, Options{Policy: policy})
	later := func() time.Time { return time.Now().Add(2 * time.Minute) }
	fillAndFree(t, s, 20, 0)
	if res, err := s.MaybeCompact(later()); err != nil || res.Compacted || !strings.Contains(res.Skipped, "compact_min_free") {
		t.Errorf("little free space: %+v, %v; want skipped for compact_min_free", res, err)
	}
	fillAndFree(t, s, 20, 1000)
	if res, err := s.MaybeCompact(time.Now()); err != nil || res.Compacted || !strings.Contains(res.Skipped, "compact_idle") {
		t.Errorf("just written: %+v, %v; want skipped for compact_idle", res, err)
	}
	res, err := s.MaybeCompact(later())
	if err != nil || !res.Compacted {
		t.Fatalf("idle with free space: %+v, %v; want compacted", res, err)
	}
	if res, err := s.MaybeCompact(later()); err != nil || res.Compacted {
		t.Errorf("right after a compaction: %+v, %v; want skipped", res, err)
	}
	s.Close()

	// The share of the file: 1 MB free in a file that is mostly live data.
	dir2 := t.TempDir()
	policy.CompactMinFree = 0
	policy.CompactMinFreeRatio = 0.9
	s2 := openWith(t, dir2, Options{Policy: policy})
	fillAndFree(t, s2, 200, 100)
	if res, err := s2.MaybeCompact(later()); err != nil || res.Compacted || !strings.Contains(res.Skipped, "compact_min_free_ratio") {
		t.Errorf("free below the ratio: %+v, %v; want skipped", res, err)
	}
	s2.Close()

	s3 := openWith(t, t.TempDir(), Options{})
	if res, err := s3.MaybeCompact(later()); err != nil || res.Compacted || !strings.Contains(res.Skipped, "off") {
		t.Errorf("zero policy: %+v, %v; want skipped: off", res, err)
	}
}

func TestPolicyValidateCompaction(t *testing.T) {
	for _, tc := range []struct {
		p    Policy
		want string
	}{
		{Policy{CompactIdle: -time.Second}, "store.compact_idle"},
		{Policy{CompactMinFree: -1}, "store.compact_min_free:"},
		{Policy{CompactMinFreeRatio: 1}, "store.compact_min_free_ratio"},
		{Policy{CompactMinFreeRatio: -0.1}, "store.compact_min_free_ratio"},
	} {
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.p, err, tc.want)
		}
	}
	if err := DefaultPolicy().Validate(); err != nil {
		t.Errorf("DefaultPolicy().Validate() = %v", err)
	}
}
