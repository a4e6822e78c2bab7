package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/takt-edge/takt/cloudsync/wire"
)

func openWith(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = time.Second
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func commitN(t testing.TB, s *Store, n int, decision string, img []byte) []uint64 {
	t.Helper()
	var ids []uint64
	for i := range n {
		v := newVerdict(decision, "s")
		v.Time = testTime.Add(time.Duration(i) * time.Second)
		var im *Image
		if img != nil {
			im = &Image{Data: img, Ext: "jpg"}
		}
		if err := s.Commit(context.Background(), v, im); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		ids = append(ids, v.ID)
	}
	return ids
}

func itemIDs(items []wire.Item) []uint64 {
	var ids []uint64
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids
}

func mustCheck(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestPendingAckBacklog(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, dir, Options{})
	ctx := context.Background()
	img := bytes.Repeat([]byte("i"), 1000)
	ids := commitN(t, s, 5, Fail, img)
	ids = append(ids, commitN(t, s, 2, Pass, nil)...)

	b, err := s.Backlog()
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := s.List(0, 100)
	var recBytes int64
	for _, v := range recs {
		data, _ := json.Marshal(v)
		recBytes += int64(len(data))
	}
	if b.Count != 7 || b.Bytes != recBytes+5000 || !b.Oldest.Equal(testTime) {
		t.Errorf("Backlog = %+v, want count 7, bytes %d, oldest %v", b, recBytes+5000, testTime)
	}

	p1, err := s.Pending(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(p1); !slices.Equal(got, ids[:3]) {
		t.Fatalf("Pending(3) ids = %v, want %v", got, ids[:3])
	}
	it := p1[0]
	if it.Image == "" || it.ImageSize != 1000 || it.ImageExt != "jpg" || it.Decision != Fail || it.Station != "st-1" || !it.Time.Equal(testTime) {
		t.Errorf("item = %+v, want image of 1000 bytes, FAIL, st-1", it)
	}
	var rec Verdict
	if err := json.Unmarshal(it.Record, &rec); err != nil || rec.ID != it.ID {
		t.Errorf("item record %s: %v, want the record of %d", it.Record, err, it.ID)
	}
	// The set is sealed: a larger n and a reopen return it again.
	p2, _ := s.Pending(ctx, 100)
	if got := itemIDs(p2); !slices.Equal(got, ids[:3]) {
		t.Fatalf("second Pending ids = %v, want the sealed %v", got, ids[:3])
	}
	s.Close()
	s = openWith(t, dir, Options{})
	p3, _ := s.Pending(ctx, 1)
	if got := itemIDs(p3); !slices.Equal(got, ids[:3]) {
		t.Fatalf("Pending after reopen ids = %v, want the sealed %v", got, ids[:3])
	}
	// Partial ack: the rest of the set stays sealed.
	if err := s.Ack(ctx, []uint64{ids[0], ids[1], 999}); err != nil {
		t.Fatal(err)
	}
	p4, _ := s.Pending(ctx, 100)
	if got := itemIDs(p4); !slices.Equal(got, ids[2:3]) {
		t.Fatalf("Pending after partial ack = %v, want %v", got, ids[2:3])
	}
	if err := s.Ack(ctx, ids[2:3]); err != nil {
		t.Fatal(err)
	}
	p5, _ := s.Pending(ctx, 100)
	if got := itemIDs(p5); !slices.Equal(got, ids[3:]) {
		t.Fatalf("Pending of the next set = %v, want %v", got, ids[3:])
	}
	if err := s.Ack(ctx, ids); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Pending(ctx, 100); len(p) != 0 {
		t.Fatalf("Pending after acking all = %v, want none", itemIDs(p))
	}
	if b, _ := s.Backlog(); b.Count != 0 || b.Bytes != 0 || !b.Oldest.IsZero() {
		t.Errorf("Backlog after acking all = %+v, want zero", b)
	}
	v, _ := s.Get(ids[0])
	if v.SyncedAt == nil {
		t.Errorf("Get(%d).SyncedAt = nil after Ack, want a time", ids[0])
	}
	mustCheck(t, s)
}

// A verdict that becomes visible after a larger id was sealed and acked is
// not skipped: it comes in the next set.
func TestPendingNeverSkipsLateIDs(t *testing.T) {
	s := openWith(t, t.TempDir(), Options{})
	ctx := context.Background()
	// Id 1 is handed out, but its commit is slow: id 2 becomes visible first.
	late := newVerdict(Pass, "late")
	if err := late.normalize(); err != nil {
		t.Fatal(err)
	}
	late.ID = s.lastID.Add(1)
	ids := commitN(t, s, 1, Pass, nil)
	p, err := s.Pending(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(p); !slices.Equal(got, ids) {
		t.Fatalf("Pending = %v, want %v", got, ids)
	}
	if err := s.Ack(ctx, ids); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(late)
	r := &request{id: late.ID, decision: late.Decision, time: late.Time, data: data, outbox: true, done: make(chan error, 1)}
	if err := s.enqueue(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	p, _ = s.Pending(ctx, 10)
	if got := itemIDs(p); !slices.Equal(got, []uint64{late.ID}) {
		t.Fatalf("Pending after the late commit = %v, want [%d]", got, late.ID)
	}
	mustCheck(t, s)
}

func TestDisableOutbox(t *testing.T) {
	s := openWith(t, t.TempDir(), Options{DisableOutbox: true})
	commitN(t, s, 3, Fail, []byte("img"))
	if p, _ := s.Pending(context.Background(), 10); len(p) != 0 {
		t.Errorf("Pending with the outbox disabled = %v, want none", itemIDs(p))
	}
	if b, _ := s.Backlog(); b.Count != 0 {
		t.Errorf("Backlog.Count = %d, want 0", b.Count)
	}
	mustCheck(t, s)
}

// imageBytesOnDisk sums the sizes of the image files under dir.
func imageBytesOnDisk(t testing.TB, dir string) (total int64, n int) {
	t.Helper()
	filepath.WalkDir(filepath.Join(dir, imagesDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
				n++
			}
		}
		return nil
	})
	return total, n
}

func TestImageQuotaEvictionOrder(t *testing.T) {
	const size = 1000
	img := bytes.Repeat([]byte("x"), size)
	policy := Policy{ImagesMaxBytes: 10 * size, EvictUnsynced: []string{ClassDebug, ClassPass}}
	dir := t.TempDir()
	var reasons []string
	s := openWith(t, dir, Options{Policy: policy, OnDegraded: func(r string) { reasons = append(reasons, r) }})
	s.evictSlack = 0 // one eviction per commit, so each step shows the order
	ctx := context.Background()

	commitDebug := func() uint64 {
		v := newVerdict(Pass, "dbg")
		if err := s.Commit(ctx, v, &Image{Data: img, Ext: "jpg", Debug: true}); err != nil {
			t.Fatal(err)
		}
		return v.ID
	}
	passSynced := commitN(t, s, 2, Pass, img)
	if err := s.Ack(ctx, passSynced); err != nil {
		t.Fatal(err)
	}
	passUnsynced := commitN(t, s, 2, Pass, img)
	failSynced := commitN(t, s, 2, Fail, img)
	if err := s.Ack(ctx, failSynced); err != nil {
		t.Fatal(err)
	}
	failUnsynced := commitN(t, s, 3, Fail, img)
	debug := commitDebug() // 10 images: the quota is full

	has := func(id uint64) bool { v, _ := s.Get(id); return !v.ImageEvicted && v.ImageRef != "" }
	steps := []struct {
		name    string
		commit  func() uint64
		evicted []uint64 // evicted by this commit, in eviction order
		dropped bool
	}{
		// Slack (5% of the quota) is below one image, so each commit evicts one.
		{"debug goes first", func() uint64 { return commitN(t, s, 1, Fail, img)[0] }, []uint64{debug}, false},
		{"then synced PASS, oldest first", func() uint64 { return commitN(t, s, 1, Fail, img)[0] }, passSynced[:1], false},
		{"", func() uint64 { return commitN(t, s, 1, Fail, img)[0] }, passSynced[1:], false},
		{"then unsynced PASS", func() uint64 { return commitN(t, s, 1, Fail, img)[0] }, passUnsynced[:1], false},
		{"", func() uint64 { return commitN(t, s, 1, Fail, img)[0] }, passUnsynced[1:], false},
		{"then synced FAIL", func() uint64 { return commitN(t, s, 1, Fail, img)[0] }, failSynced[:1], false},
		{"a PASS image may not evict a FAIL one", func() uint64 { return commitN(t, s, 1, Pass, img)[0] }, nil, true},
		{"", func() uint64 { return commitN(t, s, 1, Fail, img)[0] }, failSynced[1:], false},
		{"unsynced FAIL images are never evicted", func() uint64 { return commitN(t, s, 1, Fail, img)[0] }, nil, true},
	}
	for i, st := range steps {
		before := map[uint64]bool{}
		all, _ := s.List(0, 1000)
		for _, v := range all {
			before[v.ID] = has(v.ID)
		}
		id := st.commit()
		v, _ := s.Get(id)
		if v.ImageDropped != st.dropped {
			t.Errorf("step %d %s: new image dropped = %v, want %v", i, st.name, v.ImageDropped, st.dropped)
		}
		var evicted []uint64
		for old, had := range before {
			if had && !has(old) {
				evicted = append(evicted, old)
			}
		}
		slices.Sort(evicted)
		if !slices.Equal(evicted, st.evicted) {
			t.Errorf("step %d %s: evicted %v, want %v", i, st.name, evicted, st.evicted)
		}
		if used, _ := imageBytesOnDisk(t, dir); used > int64(policy.ImagesMaxBytes) {
			t.Fatalf("step %d: %d image bytes on disk, quota %d", i, used, policy.ImagesMaxBytes)
		}
	}
	for _, id := range failUnsynced {
		if !has(id) {
			t.Errorf("unsynced FAIL image %d evicted, want kept", id)
		}
	}
	st := s.Stats()
	if st.ImagesEvicted != 7 || st.ImagesEvictedUnsynced != 3 || st.ImagesEvictedReject != 2 || st.ImagesDropped != 2 || st.ImageBytesEvicted != 7*size {
		t.Errorf("Stats = %+v, want 7 evicted (3 unsynced, 2 reject, %d bytes), 2 dropped", st, 7*size)
	}
	if st.ImageBytes != 10*size {
		t.Errorf("Stats.ImageBytes = %d, want %d", st.ImageBytes, 10*size)
	}
	if len(reasons) == 0 {
		t.Errorf("OnDegraded was not called, want calls for unsynced evictions and dropped images")
	}
	mustCheck(t, s)
}

// Concurrent committers with a small quota: the image bytes on disk never
// exceed it, checked by a watcher while they run.
func TestImageQuotaNeverExceeded(t *testing.T) {
	const quota = 50_000
	dir := t.TempDir()
	s := openWith(t, dir, Options{Policy: Policy{ImagesMaxBytes: quota, EvictUnsynced: []string{ClassDebug, ClassPass}}})
	stop := make(chan struct{})
	var maxSeen int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if used, _ := imageBytesOnDisk(t, dir); used > maxSeen {
				maxSeen = used
			}
		}
	}()
	var cw sync.WaitGroup
	for w := range 4 {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for i := range 60 {
				dec := Pass
				if (i+w)%5 == 0 {
					dec = Fail
				}
				img := bytes.Repeat([]byte{byte(i)}, 1000+(i*37)%3000)
				if err := s.Commit(context.Background(), newVerdict(dec, "q"), &Image{Data: img, Ext: "jpg"}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	cw.Wait()
	close(stop)
	wg.Wait()
	if maxSeen > quota {
		t.Errorf("image bytes on disk peaked at %d, quota %d", maxSeen, quota)
	}
	used, _ := imageBytesOnDisk(t, dir)
	if st := s.Stats(); st.ImageBytes != used || st.ImagesEvicted == 0 {
		t.Errorf("Stats: ImageBytes %d (disk %d), ImagesEvicted %d; want equal bytes and evictions > 0", st.ImageBytes, used, st.ImagesEvicted)
	}
	mustCheck(t, s)
}

func TestPruneAgesAndRecordQuota(t *testing.T) {
	dir := t.TempDir()
	policy := Policy{ImagesMaxAge: time.Hour, RecordsMaxAge: 24 * time.Hour}
	s := openWith(t, dir, Options{Policy: policy})
	ctx := context.Background()
	img := []byte("image")
	old := commitN(t, s, 3, Pass, img) // testTime
	s.Ack(ctx, old[:2])                // old[2] stays unsynced
	now := testTime.Add(2 * time.Hour)
	res, err := s.Prune(now)
	if err != nil {
		t.Fatal(err)
	}
	if res.ImagesEvicted != 2 || res.RecordsPruned != 0 {
		t.Errorf("Prune at +2h = %+v, want 2 synced images evicted, no records", res)
	}
	if v, _ := s.Get(old[2]); v.ImageEvicted {
		t.Errorf("unsynced PASS image evicted by age without evict_unsynced")
	}
	res, _ = s.Prune(testTime.Add(48 * time.Hour))
	if res.RecordsPruned != 2 {
		t.Errorf("Prune at +48h pruned %d records, want the 2 synced", res.RecordsPruned)
	}
	if _, err := s.Get(old[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(pruned %d) = %v, want ErrNotFound", old[0], err)
	}
	if _, err := s.Get(old[2]); err != nil {
		t.Errorf("unsynced record %d pruned: %v", old[2], err)
	}
	mustCheck(t, s)

	// Records quota: the oldest synced records go until the rest fit.
	s.Close()
	dir2 := t.TempDir()
	s = openWith(t, dir2, Options{})
	ids := commitN(t, s, 20, Pass, nil)
	s.Ack(ctx, ids[:15])
	data, _ := json.Marshal(mustGet(t, s, ids[0]))
	per := recordCost(len(data))
	s.Close()
	s = openWith(t, dir2, Options{Policy: Policy{RecordsMaxBytes: wire.ByteSize(10 * per)}})
	res, _ = s.Prune(time.Now())
	if res.RecordsPruned < 10 || res.RecordsPruned > 11 {
		t.Errorf("records quota of 10 records: pruned %d of 20, want 10 or 11", res.RecordsPruned)
	}
	if _, err := s.Get(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("oldest record kept, want pruned first")
	}
	for _, id := range ids[15:] {
		if _, err := s.Get(id); err != nil {
			t.Errorf("unsynced record %d pruned by the quota", id)
		}
	}
	if st := s.Stats(); int(st.RecordsPruned) != res.RecordsPruned {
		t.Errorf("Stats.RecordsPruned = %d, want %d", st.RecordsPruned, res.RecordsPruned)
	}
	mustCheck(t, s)
}

func mustGet(t testing.TB, s *Store, id uint64) Verdict {
	t.Helper()
	v, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDeleteSyncedImages(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, dir, Options{Policy: Policy{DeleteSyncedImages: true}})
	ids := commitN(t, s, 3, Fail, []byte("abc"))
	if err := s.Ack(context.Background(), ids[:2]); err != nil {
		t.Fatal(err)
	}
	if _, n := imageBytesOnDisk(t, dir); n != 1 {
		t.Errorf("%d image files after acking 2 of 3, want 1", n)
	}
	if v := mustGet(t, s, ids[0]); !v.ImageEvicted || v.SyncedAt == nil {
		t.Errorf("synced verdict: ImageEvicted %v SyncedAt %v, want true and set", v.ImageEvicted, v.SyncedAt)
	}
	if st := s.Stats(); st.ImagesDeletedSynced != 2 || st.ImageBytes != 3 {
		t.Errorf("Stats = %+v, want 2 deleted after sync, 3 image bytes left", st)
	}
	mustCheck(t, s)
}

// Open removes an image whose eviction committed but whose file stayed (a
// crash between the transaction and the unlink).
func TestOpenRemovesEvictedLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, dir, Options{})
	ids := commitN(t, s, 2, Pass, []byte("img"))
	v := mustGet(t, s, ids[0])
	path := s.ImagePath(v)
	data, _ := os.ReadFile(path)
	s.quotaMu.Lock()
	e, _ := func() (imageEntry, error) {
		var e imageEntry
		err := s.view(func(txn *bolt.Tx) error {
			var err error
			e, err = decodeImage(txn.Bucket(bucketImages).Get(idKey(ids[0])))
			return err
		})
		return e, err
	}()
	if err := s.evict([]victim{{ids[0], e}}); err != nil {
		t.Fatal(err)
	}
	s.quotaMu.Unlock()
	os.WriteFile(path, data, 0o640) // the file a crash left
	s.Close()
	s = openWith(t, dir, Options{})
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("evicted image %s still there after Open: %v", path, err)
	}
	mustCheck(t, s)
}

func TestCompact(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, dir, Options{})
	ids := commitN(t, s, 600, Pass, nil)
	ctx := context.Background()
	s.Ack(ctx, ids)
	if _, _, err := Compact(dir, 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Errorf("Compact of an open store: %v, want ErrLocked", err)
	}
	if _, err := s.Prune(testTime.Add(1000 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openWith(t, dir, Options{Policy: Policy{ImagesMaxAge: time.Hour, RecordsMaxAge: time.Hour}})
	if res, err := s2.Prune(testTime.Add(1000 * time.Hour)); err != nil || res.RecordsPruned != 600 {
		t.Fatalf("Prune = %+v, %v; want 600 records pruned", res, err)
	}
	s2.Close()
	before, after, err := Compact(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if after >= before {
		t.Errorf("Compact: %d bytes -> %d, want smaller", before, after)
	}
	s3 := openWith(t, dir, Options{})
	mustCheck(t, s3)
	c, _ := s3.Counts()
	if c.Total != 600 {
		t.Errorf("Counts after compact = %d, want 600", c.Total)
	}
}
