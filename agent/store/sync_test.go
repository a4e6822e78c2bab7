package store

// End-to-end tests of store and forward: the real store, the real uploader
// (cloudsync) and a real versitygw S3 server, with the network cut, the server
// stopped, failing or refusing, and the upload interrupted.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// soak is true under `make soak` (TAKT_SOAK=1): longer outages and runs.
var soak = os.Getenv("TAKT_SOAK") == "1"

func soakOr(short, long time.Duration) time.Duration {
	if soak {
		return long
	}
	return short
}

// syncConfig is a fast uploader config for endpoint (http://host:port).
func syncConfig(s3 *cloudtest.S3, endpoint, bucket string) cloudsync.Config {
	cfg := cloudsync.DefaultConfig()
	cfg.Endpoint = "http://" + endpoint
	cfg.Bucket = bucket
	cfg.Region = s3.Region
	cfg.AccessKey = s3.AccessKey
	cfg.SecretKey = cloudsync.Secret(s3.SecretKey)
	cfg.PathStyle = true
	cfg.BatchSize = 64
	cfg.RequestTimeout = 5 * time.Second
	cfg.BackoffMin = 20 * time.Millisecond
	cfg.BackoffMax = 500 * time.Millisecond
	cfg.PollInterval = 20 * time.Millisecond
	cfg.Sample.PassFraction = 1
	return cfg
}

// runUploader starts an uploader on outbox; stop cancels it and waits.
func runUploader(t *testing.T, cfg cloudsync.Config, outbox cloudsync.Outbox) (u *cloudsync.Uploader, stop func()) {
	t.Helper()
	return startUploader(t, cfg, outbox, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
}

func runUploaderB(b *testing.B, cfg cloudsync.Config, outbox cloudsync.Outbox) (u *cloudsync.Uploader, stop func()) {
	b.Helper()
	return startUploader(b, cfg, outbox, zerolog.Nop())
}

func startUploader(t testing.TB, cfg cloudsync.Config, outbox cloudsync.Outbox, log zerolog.Logger) (u *cloudsync.Uploader, stop func()) {
	t.Helper()
	u, err := cloudsync.New(cfg, outbox, log)
	if err != nil {
		t.Fatalf("cloudsync.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Uploader.Run returned %v, want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return u, stop
}

// waitDrained waits until the store's backlog is empty.
func waitDrained(t *testing.T, s *Store, u *cloudsync.Uploader, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := s.Backlog()
		if err != nil {
			t.Fatal(err)
		}
		if b.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog after %v: %+v, want empty; uploader %+v", timeout, b, u.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// randomImage is incompressible bytes, like a JPEG.
func randomImage(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// verifyBucket checks the bucket against the store: every record is in
// exactly one JSON Lines batch, unchanged; every kept FAIL image (and PASS
// image when allPass) is there with its content; nothing else is there.
func verifyBucket(t *testing.T, s3 *cloudtest.S3, bucket string, s *Store, allPass bool) (images, batches int) {
	t.Helper()
	objs := s3.Objects(t, bucket, "")
	keys := map[string]bool{}
	seen := map[uint64]string{}
	for _, o := range objs {
		if keys[o.Key] {
			t.Errorf("key %s listed twice", o.Key)
		}
		keys[o.Key] = true
		if strings.Contains(o.Key, "-conflict-") {
			t.Errorf("conflict object %s, want none", o.Key)
		}
		if !strings.HasPrefix(o.Key, "verdicts/") {
			continue
		}
		batches++
		sc := bufio.NewScanner(bytes.NewReader(s3.Get(t, bucket, o.Key)))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var v Verdict
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				t.Fatalf("%s: line %q: %v", o.Key, sc.Text(), err)
			}
			if prev, dup := seen[v.ID]; dup {
				t.Errorf("record %d in two batches: %s and %s", v.ID, prev, o.Key)
			}
			seen[v.ID] = o.Key
			want := wire.VerdictBatchKey(v.Station, v.Time, 0, 0)
			if dayPrefix := want[:strings.LastIndex(want, "/")+1]; !strings.HasPrefix(o.Key, dayPrefix) {
				t.Errorf("record %d captured %v is in %s, want under %s", v.ID, v.Time, o.Key, dayPrefix)
			}
			if v.SyncedAt != nil {
				t.Errorf("record %d uploaded with synced_at set", v.ID)
			}
		}
	}
	all, err := s.List(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range all {
		if _, ok := seen[v.ID]; !ok {
			t.Errorf("record %d missing from the bucket", v.ID)
		}
		if v.SyncedAt == nil {
			t.Errorf("record %d: SyncedAt nil after the backlog drained", v.ID)
		}
		if v.ImageRef == "" || v.ImageEvicted {
			continue
		}
		key := wire.ImageKey(v.Station, v.Time, v.ID, "jpg")
		if v.Decision != Pass || allPass {
			if !keys[key] {
				t.Errorf("image of %s verdict %d: %s missing", v.Decision, v.ID, key)
				continue
			}
			images++
			local, _ := os.ReadFile(s.ImagePath(v))
			if got := s3.Get(t, bucket, key); !bytes.Equal(got, local) {
				t.Errorf("image %s: %d bytes differ from the %d local ones", key, len(got), len(local))
			}
		}
	}
	if len(seen) != len(all) {
		t.Errorf("bucket holds %d records, store %d", len(seen), len(all))
	}
	if want := images + batches; len(objs) != want {
		t.Errorf("bucket holds %d objects, want %d images + %d batches", len(objs), images, batches)
	}
	return images, batches
}

func TestSyncUploadsLayoutAndSampling(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	s := openWith(t, t.TempDir(), Options{})
	ctx := context.Background()
	day2 := testTime.Add(24 * time.Hour)
	commit := func(dec string, score float64, when time.Time, img bool) *Verdict {
		v := newVerdict(dec, "x")
		v.Score, v.Time = &score, when
		var im *Image
		if img {
			im = &Image{Data: randomImage(2000), Ext: "jpg"}
		}
		if err := s.Commit(ctx, v, im); err != nil {
			t.Fatal(err)
		}
		return v
	}
	fail := commit(Fail, 0.9, testTime, true)
	noDec := commit(NoDecision, 0, testTime, true)
	nearPass := commit(Pass, 0.48, testTime, true) // within 10% of the threshold 0.5
	farPass := commit(Pass, 0.1, testTime, true)   // sampled out (pass_fraction 0)
	noImage := commit(Pass, 0.1, day2, false)
	nextDay := commit(Fail, 0.9, day2, true)

	cfg := syncConfig(s3, s3.Endpoint, bucket)
	cfg.Sample = cloudsync.SampleConfig{PassFraction: 0, Margin: 0.1}
	u, stop := runUploader(t, cfg, s)
	waitDrained(t, s, u, 30*time.Second)
	stop()

	var got []string
	for _, o := range s3.Objects(t, bucket, "") {
		got = append(got, o.Key)
	}
	want := []string{
		fmt.Sprintf("images/st-1/2025/03/07/%016d.jpg", fail.ID),
		fmt.Sprintf("images/st-1/2025/03/07/%016d.jpg", noDec.ID),
		fmt.Sprintf("images/st-1/2025/03/07/%016d.jpg", nearPass.ID),
		fmt.Sprintf("images/st-1/2025/03/08/%016d.jpg", nextDay.ID),
		fmt.Sprintf("verdicts/st-1/2025/03/07/%016d-%016d.jsonl", fail.ID, farPass.ID),
		fmt.Sprintf("verdicts/st-1/2025/03/08/%016d-%016d.jsonl", noImage.ID, nextDay.ID),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("bucket keys:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	st := u.Status()
	if st.Objects != uint64(len(want)) || st.ImagesSkipped != 1 || st.Existed != 0 || st.Backlog.Count != 0 {
		t.Errorf("Status = %+v, want %d objects, 1 image skipped, 0 existed, empty backlog", st, len(want))
	}
	data := s3.Get(t, bucket, want[4])
	var first Verdict
	json.Unmarshal(data[:bytes.IndexByte(data, '\n')], &first)
	if first.ID != fail.ID || first.Decision != Fail || first.Serial != "x" {
		t.Errorf("first line of %s = %+v, want verdict %d", want[4], first, fail.ID)
	}
	mustCheck(t, s)
}

// ackFails is the real store whose Ack always fails, as if the process died
// after each upload and before its Ack.
type ackFails struct{ *Store }

func (a ackFails) Ack(ctx context.Context, ids []uint64) error {
	return errors.New("simulated crash before ack")
}

// An uploader uploads a set but dies before the Ack; the next one (a restart:
// same sealed set, same keys, no memory) finds identical objects: no
// duplicate, nothing missing.
func TestSyncRetryAfterLostAckDuplicatesNothing(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	dir := t.TempDir()
	s := openWith(t, dir, Options{})
	for i := range 30 {
		dec := []string{Pass, Fail, NoDecision}[i%3]
		v := newVerdict(dec, fmt.Sprint(i))
		if err := s.Commit(context.Background(), v, &Image{Data: randomImage(3000), Ext: "jpg"}); err != nil {
			t.Fatal(err)
		}
	}
	const objects = 30 + 1 // images and one batch
	cfg := syncConfig(s3, s3.Endpoint, bucket)
	u, stop := runUploader(t, cfg, ackFails{s})
	for deadline := time.Now().Add(30 * time.Second); u.Status().Objects < objects; {
		if time.Now().After(deadline) {
			t.Fatalf("first uploader: %+v, want %d objects written", u.Status(), objects)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if b, _ := s.Backlog(); b.Count != 30 {
		t.Fatalf("backlog after the lost ack = %d, want 30", b.Count)
	}
	s.Close()
	s = openWith(t, dir, Options{})
	u, stop = runUploader(t, cfg, s)
	waitDrained(t, s, u, 30*time.Second)
	stop()
	if st := u.Status(); st.Objects != 0 || st.Existed != objects {
		t.Errorf("after restart: %d objects written, %d found existing; want 0 and %d", st.Objects, st.Existed, objects)
	}
	images, batches := verifyBucket(t, s3, bucket, s, true)
	if images+batches != objects {
		t.Errorf("bucket: %d images + %d batches, want %d objects", images, batches, objects)
	}
	mustCheck(t, s)
}

// produce commits verdicts with images at about rate per second until stop
// is closed; it returns the number committed.
func produce(t *testing.T, s *Store, rate int, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		n := 0
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				out <- n
				return
			case <-tick.C:
			}
			v := newVerdict([]string{Pass, Pass, Pass, Fail, NoDecision}[n%5], fmt.Sprint(n))
			v.Time = time.Now()
			if err := s.Commit(context.Background(), v, &Image{Data: randomImage(4000 + n%1000), Ext: "jpg"}); err != nil {
				t.Error(err)
			}
			n++
		}
	}()
	return out
}

// The TCP path to the server is cut while the station produces, then
// restored: everything arrives, once, and nothing stays pending.
func TestSyncOutageTCPCut(t *testing.T) {
	outage := soakOr(3*time.Second, 3*time.Minute)
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	proxy := cloudtest.StartProxy(t, s3.Endpoint)
	s := openWith(t, t.TempDir(), Options{})
	cfg := syncConfig(s3, proxy.Addr, bucket)
	u, stop := runUploader(t, cfg, s)

	halt := make(chan struct{})
	produced := produce(t, s, 50, halt)
	time.Sleep(500 * time.Millisecond)
	proxy.Cut()
	// The uploader alternates between backoff and a probe request while the path is
	// cut: watch the whole outage for backoff rather than sample one moment.
	var during cloudsync.Status
	sawBackoff := false
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		during = u.Status()
		if during.State == cloudsync.StateBackoff && during.LastError != "" {
			sawBackoff = true
		}
	}
	proxy.Restore()
	time.Sleep(500 * time.Millisecond)
	close(halt)
	n := <-produced
	// The soak's 3-minute outage leaves thousands of verdicts with images, which
	// drain slowly under -race on a busy machine.
	drainFrom := time.Now()
	waitDrained(t, s, u, soakOr(60*time.Second, 10*time.Minute))
	t.Logf("backlog drained in %v", time.Since(drainFrom).Round(time.Millisecond))
	stop()
	if !sawBackoff || during.Backlog.Count == 0 || during.LastError == "" {
		t.Errorf("status during the outage = %+v (backoff seen: %v), want backoff with a backlog and an error", during, sawBackoff)
	}
	t.Logf("outage %v: %d verdicts produced, backlog at the end of the outage %+v", outage, n, during.Backlog)
	verifyBucket(t, s3, bucket, s, true)
	mustCheck(t, s)
}

// The server is stopped and started again while the station produces.
func TestSyncOutageServerStop(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	s := openWith(t, t.TempDir(), Options{})
	u, stop := runUploader(t, syncConfig(s3, s3.Endpoint, bucket), s)
	halt := make(chan struct{})
	produced := produce(t, s, 50, halt)
	time.Sleep(300 * time.Millisecond)
	s3.Stop()
	time.Sleep(soakOr(2*time.Second, time.Minute))
	s3.Start()
	close(halt)
	n := <-produced
	drainFrom := time.Now()
	waitDrained(t, s, u, soakOr(60*time.Second, 10*time.Minute))
	stop()
	t.Logf("%d verdicts produced, drained in %v after the restart; uploader %+v", n, time.Since(drainFrom).Round(time.Millisecond), u.Status())
	verifyBucket(t, s3, bucket, s, true)
}

// Half the requests fail with 500 and some are slow: everything arrives once.
func TestSyncServerErrorsAndSlowResponses(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	fp := cloudtest.StartFaultProxy(t, s3.Endpoint)
	var n atomic.Int64
	fp.SetFault(func(r *http.Request) (int, time.Duration) {
		switch i := n.Add(1); {
		case i%2 == 0:
			return http.StatusInternalServerError, 0
		case i%5 == 0:
			return 0, 300 * time.Millisecond
		}
		return 0, 0
	})
	s := openWith(t, t.TempDir(), Options{})
	for i := range 40 {
		v := newVerdict([]string{Pass, Fail}[i%2], fmt.Sprint(i))
		if err := s.Commit(context.Background(), v, &Image{Data: randomImage(2000), Ext: "jpg"}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := syncConfig(s3, fp.Addr, bucket)
	cfg.BatchSize = 10
	u, stop := runUploader(t, cfg, s)
	waitDrained(t, s, u, 60*time.Second)
	stop()
	verifyBucket(t, s3, bucket, s, true)
	if objs := int64(u.Status().Objects); fp.Requests() < objs*3/2 {
		t.Errorf("%d requests for %d objects, want >= %d: the injected failures cause retries", fp.Requests(), objs, objs*3/2)
	}
}

// Wrong credentials: a clear error naming the cause, no busy loop, nothing
// acknowledged; with the right ones everything goes up.
func TestSyncWrongCredentials(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	fp := cloudtest.StartFaultProxy(t, s3.Endpoint)
	dir := t.TempDir()
	s := openWith(t, dir, Options{})
	commitN(t, s, 5, Fail, randomImage(1000))
	cfg := syncConfig(s3, fp.Addr, bucket)
	cfg.SecretKey = "not-the-secret"
	cfg.BackoffMax = time.Second
	u, stop := runUploader(t, cfg, s)
	const watch = 3 * time.Second
	time.Sleep(watch)
	stop()
	st := u.Status()
	// backoff_max 1s: about 4 attempts in 3 s, one request each.
	if got := fp.Requests(); got == 0 || got > 8 {
		t.Errorf("%d requests in %v with wrong credentials, want 1..8 (one probe per retry, no busy loop)", got, watch)
	}
	if !strings.Contains(st.LastError, "credentials") || st.State != cloudsync.StateBackoff {
		t.Errorf("status = %+v, want backoff with an error about the credentials", st)
	}
	if strings.Contains(st.LastError, "not-the-secret") || strings.Contains(st.LastError, s3.SecretKey) {
		t.Errorf("error %q contains a secret", st.LastError)
	}
	if b, _ := s.Backlog(); b.Count != 5 {
		t.Errorf("backlog after refused uploads = %d, want 5", b.Count)
	}
	if objs := s3.Objects(t, bucket, ""); len(objs) != 0 {
		t.Errorf("%d objects written with wrong credentials, want 0", len(objs))
	}
	cfg.SecretKey = cloudsync.Secret(s3.SecretKey)
	u, stop = runUploader(t, cfg, s)
	waitDrained(t, s, u, 30*time.Second)
	stop()
	verifyBucket(t, s3, bucket, s, true)
}

// The bandwidth cap holds the upload rate down.
func TestSyncBandwidthCap(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	s := openWith(t, t.TempDir(), Options{})
	const n, size, rate = 12, 50_000, 300_000
	commitN(t, s, n, Fail, randomImage(size))
	cfg := syncConfig(s3, s3.Endpoint, bucket)
	cfg.MaxBytesPerSecond = rate
	start := time.Now()
	u, stop := runUploader(t, cfg, s)
	waitDrained(t, s, u, 60*time.Second)
	elapsed := time.Since(start)
	stop()
	sent := float64(u.Status().Bytes)
	minTime := time.Duration((sent - rate/10) / rate * float64(time.Second)) // less the burst
	if elapsed < minTime {
		t.Errorf("uploaded %.0f bytes in %v at a cap of %d B/s, want >= %v", sent, elapsed, rate, minTime)
	}
	t.Logf("%.0f bytes in %v (%.0f B/s, cap %d)", sent, elapsed, sent/elapsed.Seconds(), rate)
}

// Images evicted by the quota while they wait are skipped, their records still
// go up, and the quota holds while the backlog grows offline.
func TestSyncQuotaWhileOffline(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	dir := t.TempDir()
	const quota = 40_000
	s := openWith(t, dir, Options{Policy: Policy{ImagesMaxBytes: quota, EvictUnsynced: []string{ClassDebug, ClassPass}}})
	for i := range 60 {
		dec := Pass
		if i%4 == 0 {
			dec = Fail
		}
		if err := s.Commit(context.Background(), newVerdict(dec, fmt.Sprint(i)), &Image{Data: randomImage(2000), Ext: "jpg"}); err != nil {
			t.Fatal(err)
		}
		if used, _ := imageBytesOnDisk(t, dir); used > quota {
			t.Fatalf("after %d commits: %d image bytes on disk, quota %d", i+1, used, quota)
		}
	}
	u, stop := runUploader(t, syncConfig(s3, s3.Endpoint, bucket), s)
	waitDrained(t, s, u, 30*time.Second)
	stop()
	all, _ := s.List(0, 1000)
	fails := 0
	for _, v := range all {
		if v.Decision == Fail {
			fails++
			if v.ImageEvicted || v.ImageDropped {
				t.Errorf("FAIL verdict %d lost its image offline (evicted %v dropped %v)", v.ID, v.ImageEvicted, v.ImageDropped)
			}
		}
	}
	images, _ := verifyBucket(t, s3, bucket, s, true)
	if images < fails {
		t.Errorf("%d images uploaded, want at least the %d FAIL ones", images, fails)
	}
}
