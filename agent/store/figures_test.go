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

// figureImageSize is the image the store figures commit at the default
// configuration (every image kept): a small JPEG's worth.
const figureImageSize = 64 << 10

// Durable verdicts per second with group commit from groupCommitWriters
// goroutines, and the speedup over the same store committing one fsync'd
// transaction per verdict (maxBatch 1: same Commit path, same record encoding
// and outbox entries) from the same goroutines in the same run; both without
// images and with a 64 KiB image per verdict at the default policy (every
// image kept, as the default configuration does). The disk of a shared
// machine changes speed several-fold within seconds, so the four modes run in
// short rounds whose order rotates every round, each on its own store, after
// one warm-up round each (a fresh bbolt file grows, with an extra fsync, on
// most early transactions); the speedups are the medians of the rounds'
// ratios, so a stall of the shared disk or CPU in one round does not decide
// the figure (the log shows every round and the ratio of totals). A bare bbolt
// Put per transaction is reported too, as the floor of what one transaction
// costs.
func TestFiguresStoreGroupCommit(t *testing.T) {
	figures(t)
	const workers, rounds, perRound = groupCommitWriters, 12, 200
	ctx := context.Background()
	img := randomImage(figureImageSize)
	type mode struct {
		name   string
		s      *Store
		images bool
		total  time.Duration
		warmTx uint64
		warmV  uint64
	}
	open := func(name string, images bool, maxBatch int) *mode {
		s := openWith(t, t.TempDir(), Options{Policy: DefaultPolicy()})
		s.maxBatch = maxBatch
		return &mode{name: name, s: s, images: images}
	}
	group, single := open("group commit", false, 0), open("one tx per verdict", false, 1)
	groupImg, singleImg := open("group commit, images", true, 0), open("one tx per verdict, images", true, 1)
	modes := []*mode{group, single, groupImg, singleImg}
	run := func(m *mode) time.Duration {
		return concurrently(workers, perRound, func(i int) {
			var im *Image
			if m.images {
				im = &Image{Data: img, Ext: "jpg"}
			}
			v := newVerdict(Pass, fmt.Sprint(i))
			if err := m.s.Commit(ctx, v, im); err != nil {
				t.Error(err)
			} else if m.images && (v.ImageRef == "" || v.ImageDropped) {
				t.Errorf("%s: verdict %d kept no image (%+v), want every image kept", m.name, v.ID, v)
			}
		})
	}
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
	for _, m := range modes {
		run(m)
		st := m.s.Stats()
		m.warmTx, m.warmV = st.Transactions, st.Verdicts
	}
	bare(rounds)
	var bareT time.Duration
	var ratios, ratiosImg []float64
	for r := range rounds {
		took := map[*mode]time.Duration{}
		for k := range modes {
			m := modes[(r+k)%len(modes)]
			took[m] = run(m)
			m.total += took[m]
		}
		b := bare(r)
		bareT += b
		ratio := took[single].Seconds() / took[group].Seconds()
		ratioImg := took[singleImg].Seconds() / took[groupImg].Seconds()
		ratios, ratiosImg = append(ratios, ratio), append(ratiosImg, ratioImg)
		t.Logf("round %d: %d verdicts each: group commit %v, one tx per verdict %v (%.1fx); with images %v and %v (%.1fx); bare bbolt Put per tx %v",
			r, perRound, took[group], took[single], ratio, took[groupImg], took[singleImg], ratioImg, b)
	}
	n := rounds * perRound
	perTx := func(m *mode) float64 {
		st := m.s.Stats()
		return float64(st.Verdicts-m.warmV) / float64(st.Transactions-m.warmTx)
	}
	for _, m := range []*mode{single, singleImg} {
		if st := m.s.Stats(); st.Transactions != st.Verdicts {
			t.Fatalf("baseline %s: %d transactions for %d verdicts, want one each", m.name, st.Transactions, st.Verdicts)
		}
	}
	for _, m := range []*mode{groupImg, singleImg} {
		mustCheck(t, m.s)
		if st := m.s.Stats(); st.ImagesDropped != 0 || st.ImagesEvicted != 0 {
			t.Fatalf("%s: %d images dropped, %d evicted; want every image kept", m.name, st.ImagesDropped, st.ImagesEvicted)
		}
	}
	median := func(xs []float64) float64 {
		xs = slices.Clone(xs)
		slices.Sort(xs)
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	speedup, speedupImg := median(ratios), median(ratiosImg)
	for _, m := range modes {
		t.Logf("%s: %d verdicts in %v (%.0f/s, %.1f verdicts per transaction)", m.name, n, m.total, float64(n)/m.total.Seconds(), perTx(m))
	}
	t.Logf("speedup of group commit: %.1fx the median round (%.1fx in total), with images %.1fx (%.1fx in total); bare bbolt Put per tx: %v",
		speedup, single.total.Seconds()/group.total.Seconds(), speedupImg, singleImg.total.Seconds()/groupImg.total.Seconds(), bareT)
	if speedup <= 1 || speedupImg <= 1 {
		t.Errorf("group commit speedup %.2f, with images %.2f: want both above 1 (batches must beat one transaction per verdict)", speedup, speedupImg)
	}
	if perTx(groupImg) < 2 {
		t.Errorf("group commit with images: %.1f verdicts per transaction from %d writers, want several", perTx(groupImg), workers)
	}
	fmt.Printf("BENCH group_commit_writers=%d\n", workers)
	fmt.Printf("BENCH durable_verdicts_per_s=%.0f\n", float64(n)/group.total.Seconds())
	fmt.Printf("BENCH durable_verdicts_with_images_per_s=%.0f\n", float64(n)/groupImg.total.Seconds())
	fmt.Printf("BENCH group_commit_verdicts_per_tx=%.1f\n", perTx(group))
	fmt.Printf("BENCH group_commit_verdicts_per_tx_with_images=%.1f\n", perTx(groupImg))
	fmt.Printf("BENCH group_commit_speedup=%.1f\n", speedup)
	fmt.Printf("BENCH group_commit_speedup_with_images=%.1f\n", speedupImg)
	fmt.Printf("BENCH group_commit_speedup_vs_bare_bbolt=%.1f\n", bareT.Seconds()/group.total.Seconds())
}

// How many times faster than it was produced a backlog of images (about
// 60 kB each, like the demo's JPEGs) drains to the local S3 server with the
// default uploader settings. The production rate is measured in the same run:
// the backlog is committed by one writer at the default policy, as fast as
// the store takes it, which is what a one-camera station that spent no time
// capturing and inferring would produce; a real line is slower, so the ratio
// is a floor.
func TestFiguresStoreBacklogDrain(t *testing.T) {
	figures(t)
	const n, size = 400, 60_000
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	s := openWith(t, t.TempDir(), Options{Policy: DefaultPolicy()})
	images := make([][]byte, n)
	for i := range images {
		images[i] = randomImage(size)
	}
	produceStart := time.Now()
	for i := range n {
		v := newVerdict([]string{Pass, Fail}[i%2], fmt.Sprint(i))
		if err := s.Commit(context.Background(), v, &Image{Data: images[i], Ext: "jpg"}); err != nil {
			t.Fatal(err)
		}
	}
	produced := time.Since(produceStart)
	productionRate := float64(n) / produced.Seconds()
	cfg := syncConfig(s3, s3.Endpoint, bucket)
	def := cfg
	def.BatchSize, def.Concurrency = 256, 4 // the defaults
	start := time.Now()
	u, stop := runUploader(t, def, s)
	waitDrained(t, s, u, 5*time.Minute)
	elapsed := time.Since(start)
	stop()
	if st := u.Status(); st.Bytes < uint64(n*size) || st.ImagesMissing+st.ImagesSkipped != 0 {
		t.Fatalf("uploader sent %d bytes (%d images missing, %d skipped), want every image (%d bytes); %+v",
			st.Bytes, st.ImagesMissing, st.ImagesSkipped, n*size, st)
	}
	drainRate := float64(n) / elapsed.Seconds()
	ratio := drainRate / productionRate
	t.Logf("%d images of %d bytes committed by one writer in %v (%.0f parts/s), drained in %v (%.0f parts/s); %+v",
		n, size, produced, productionRate, elapsed, drainRate, u.Status())
	if ratio <= 1 {
		t.Errorf("backlog drains at %.0f parts/s, produced at %.0f parts/s: a station would never catch up", drainRate, productionRate)
	}
	fmt.Printf("BENCH backlog_drain_ratio=%.1f\n", ratio)
	fmt.Printf("BENCH backlog_drain_parts_per_s=%.0f\n", drainRate)
	fmt.Printf("BENCH backlog_production_parts_per_s=%.0f\n", productionRate)
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
