package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

// The figures of `make bench` (TAKT_FIGURES=1): each measures Takt and its
// baseline in the same run and prints "BENCH name=value".

func figures(t *testing.T) {
	if os.Getenv("TAKT_FIGURES") != "1" {
		t.Skip("figures run under make bench (TAKT_FIGURES=1)")
	}
}

// concurrently runs fn(i) for i in [0, n) from workers goroutines and
// returns the elapsed time.
func concurrently(workers, n int, fn func(i int)) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				fn(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// groupCommitWriters is the concurrency of the group commit figure: a
// station with four cameras, each inspecting with two parts in flight
// (capture and inference of the next part overlap the commit of the last),
// plus PLC, MQTT and HTTP triggers answered while those commits run: 16
// Commit calls in flight at the busiest moment.
const groupCommitWriters = 16

// Durable verdicts per second with group commit from groupCommitWriters
// goroutines, and the speedup over the same store committing one fsync'd
// transaction per verdict (maxBatch 1: same Commit path, same record encoding
// and outbox entries) from the same goroutines in the same run. The disk of a
// shared machine changes speed several-fold within seconds, so the two modes run
// in short alternating rounds (the order flips every round) on their own
// stores, after one warm-up round each (a fresh bbolt file grows, with an
// extra fsync, on most early transactions); the speedup is the median of the
// rounds' ratios, so a stall of the shared disk or CPU in one round does not
// decide the figure (the log shows every round and the ratio of totals). A
// bare bbolt Put per transaction is reported too, as the floor of what one
// transaction costs.
func TestFiguresStoreGroupCommit(t *testing.T) {
	figures(t)
	const workers, rounds, perRound = groupCommitWriters, 12, 200
	ctx := context.Background()
	run := func(s *Store) time.Duration {
		return concurrently(workers, perRound, func(i int) {
			if err := s.Commit(ctx, newVerdict(Pass, fmt.Sprint(i)), nil); err != nil {
				t.Error(err)
			}
		})
	}
	group := openWith(t, t.TempDir(), Options{})
	single := openWith(t, t.TempDir(), Options{})
	single.maxBatch = 1
	base := openWith(t, t.TempDir(), Options{})
	data, _ := json.Marshal(newVerdict(Pass, "baseline"))
	bare := func(r int) time.Duration {
		return concurrently(workers, perRound, func(i int) {
			err := base.db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketVerdicts).Put(idKey(uint64(r*perRound+i+1)), data)
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	run(group)
	run(single)
	bare(rounds)
	warmTx, warmV := group.Stats().Transactions, group.Stats().Verdicts
	var groupT, singleT, bareT time.Duration
	var ratios []float64
	for r := range rounds {
		var g, s time.Duration
		if r%2 == 0 {
			g, s = run(group), run(single)
		} else {
			s, g = run(single), run(group)
		}
		b := bare(r)
		t.Logf("round %d: %d verdicts: group commit %v, one tx per verdict %v (%.1fx), bare bbolt Put per tx %v",
			r, perRound, g, s, s.Seconds()/g.Seconds(), b)
		groupT, singleT, bareT = groupT+g, singleT+s, bareT+b
		ratios = append(ratios, s.Seconds()/g.Seconds())
	}
	st, sst := group.Stats(), single.Stats()
	if sst.Transactions != sst.Verdicts {
		t.Fatalf("baseline: %d transactions for %d verdicts, want one each", sst.Transactions, sst.Verdicts)
	}
	n := rounds * perRound
	perTx := float64(st.Verdicts-warmV) / float64(st.Transactions-warmTx)
	slices.Sort(ratios)
	median := (ratios[rounds/2-1] + ratios[rounds/2]) / 2
	t.Logf("group commit: %d verdicts in %v (%.1f verdicts per transaction); one tx per verdict: %v (%.1fx in total, %.1fx the median round); bare bbolt Put per tx: %v",
		n, groupT, perTx, singleT, singleT.Seconds()/groupT.Seconds(), median, bareT)
	fmt.Printf("BENCH group_commit_writers=%d\n", workers)
	fmt.Printf("BENCH durable_verdicts_per_s=%.0f\n", float64(n)/groupT.Seconds())
	fmt.Printf("BENCH group_commit_verdicts_per_tx=%.1f\n", perTx)
	fmt.Printf("BENCH group_commit_speedup=%.1f\n", median)
	fmt.Printf("BENCH group_commit_speedup_vs_bare_bbolt=%.1f\n", bareT.Seconds()/groupT.Seconds())
}

// How many times faster than a 10 parts/s production rate a backlog of
// images (about 60 kB each, like the demo's JPEGs) drains to the local S3
// server with the default uploader settings.
func TestFiguresStoreBacklogDrain(t *testing.T) {
	figures(t)
	const n, size, productionRate = 400, 60_000, 10.0
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	s := openWith(t, t.TempDir(), Options{})
	for i := range n {
		v := newVerdict([]string{Pass, Fail}[i%2], fmt.Sprint(i))
		if err := s.Commit(context.Background(), v, &Image{Data: randomImage(size), Ext: "jpg"}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := syncConfig(s3, s3.Endpoint, bucket)
	def := cfg
	def.BatchSize, def.Concurrency = 256, 4 // the defaults
	start := time.Now()
	u, stop := runUploader(t, def, s)
	waitDrained(t, s, u, 5*time.Minute)
	elapsed := time.Since(start)
	stop()
	drainRate := float64(n) / elapsed.Seconds()
	t.Logf("%d images of %d bytes drained in %v: %.0f parts/s; %+v", n, size, elapsed, drainRate, u.Status())
	fmt.Printf("BENCH backlog_drain_ratio=%.1f\n", drainRate/productionRate)
}

// BenchmarkPendingAck measures one uploader round trip on the store: seal a
// set of 256 verdicts, read it, acknowledge it.
func BenchmarkPendingAck(b *testing.B) {
	s := openWith(b, b.TempDir(), Options{})
	ctx := context.Background()
	const set = 256
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		concurrently(16, set, func(i int) {
			if err := s.Commit(ctx, newVerdict(Pass, "b"), nil); err != nil {
				b.Fatal(err)
			}
		})
		b.StartTimer()
		items, err := s.Pending(ctx, set)
		if err != nil || len(items) != set {
			b.Fatalf("Pending: %d items, %v", len(items), err)
		}
		ids := make([]uint64, len(items))
		for i, it := range items {
			ids[i] = it.ID
		}
		if err := s.Ack(ctx, ids); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*set), "ns/verdict")
}

// BenchmarkSyncDrain measures draining a backlog of 64 kB images to the local
// S3 server, per image.
func BenchmarkSyncDrain(b *testing.B) {
	s3 := cloudtest.StartS3(b)
	bucket := s3.NewBucket(b, "takt")
	s := openWith(b, b.TempDir(), Options{})
	img := randomImage(64 << 10)
	for range b.N {
		if err := s.Commit(context.Background(), newVerdict(Fail, "b"), &Image{Data: img, Ext: "jpg"}); err != nil {
			b.Fatal(err)
		}
	}
	cfg := syncConfig(s3, s3.Endpoint, bucket)
	b.ReportAllocs()
	b.ResetTimer()
	u, stop := runUploaderB(b, cfg, s)
	for {
		bl, _ := s.Backlog()
		if bl.Count == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	stop()
	b.ReportMetric(float64(u.Status().Bytes)/b.Elapsed().Seconds()/1e6, "MB/s")
}

// Online compaction of a store that holds 10 000 verdicts after a backlog
// of 100 MB passed through it (MQTT messages, acknowledged), on an idle line
// that resumes at the worst moment: a commit issued right when the swap takes
// the store's lock. How much the file shrinks, how long the copy runs (commits
// would go on, and abandon it), how long the swap holds commits (and what that
// commit saw), against the time commits are impossible with the offline
// compaction (close, takt store compact, open) of the same file in the same
// run.
func TestFiguresStoreCompaction(t *testing.T) {
	figures(t)
	const verdicts, messages = 10_000, 25_000
	dirOnline, dirOffline := t.TempDir(), t.TempDir()
	online := openWith(t, dirOnline, Options{})
	offline := openWith(t, dirOffline, Options{})
	for _, s := range []*Store{online, offline} {
		fillAndFree(t, s, verdicts, messages)
	}
	var commitWait time.Duration
	done := make(chan struct{})
	online.hookCompact = func(step string) {
		if step != "locked" {
			return
		}
		go func() {
			defer close(done)
			start := time.Now()
			if err := online.Commit(context.Background(), newVerdict(Pass, "resumed"), nil); err != nil {
				t.Error(err)
			}
			commitWait = time.Since(start)
		}()
	}
	res, err := online.CompactOnline()
	if err != nil || !res.Compacted {
		t.Fatalf("CompactOnline = %+v, %v; want compacted", res, err)
	}
	<-done
	mustCheck(t, online)

	offStart := time.Now()
	offline.Close()
	before, after, err := Compact(dirOffline, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	reopened := openWith(t, dirOffline, Options{})
	downtime := time.Since(offStart)
	mustCheck(t, reopened)
	t.Logf("online: %d -> %d bytes (%d free), copy %v, pause %v, a commit issued at the swap took %v; offline: %d -> %d bytes, commits impossible for %v",
		res.Before, res.After, res.Free, res.Copy, res.Pause, commitWait, before, after, downtime)
	fmt.Printf("BENCH store_compact_shrink_ratio=%.1f\n", float64(res.Before)/float64(res.After))
	fmt.Printf("BENCH store_compact_copy_ms=%.0f\n", float64(res.Copy.Microseconds())/1000)
	fmt.Printf("BENCH store_compact_pause_ms=%.1f\n", float64(res.Pause.Microseconds())/1000)
	fmt.Printf("BENCH store_compact_commit_at_swap_ms=%.1f\n", float64(commitWait.Microseconds())/1000)
	fmt.Printf("BENCH store_compact_offline_downtime_vs_online_pause=%.1f\n", downtime.Seconds()/res.Pause.Seconds())
}
