package cloudsync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

func fetchConfig(s3 *cloudtest.S3, endpoint, bucket string) Config {
	cfg := DefaultConfig()
	cfg.Endpoint = "http://" + endpoint
	cfg.Bucket = bucket
	cfg.Region = s3.Region
	cfg.AccessKey = s3.AccessKey
	cfg.SecretKey = Secret(s3.SecretKey)
	cfg.PathStyle = true
	cfg.RequestTimeout = 3 * time.Second
	cfg.BackoffMin = 20 * time.Millisecond
	cfg.BackoffMax = 200 * time.Millisecond
	return cfg
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestFetchErrors(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "fetch-errors")
	f, err := NewFetcher(fetchConfig(s3, s3.Endpoint, bucket))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(100 << 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.os.put(ctx, "models/m/1.0.0/bundle.tar", data, "application/x-tar"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ok := FetchRequest{Key: "models/m/1.0.0/bundle.tar", Path: filepath.Join(dir, "ok.tar"), Size: int64(len(data)), SHA256: shaHex(data)}
	if err := f.Fetch(ctx, ok, nil); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if got, _ := os.ReadFile(ok.Path); !bytes.Equal(got, data) {
		t.Fatalf("fetched %d bytes, want the %d of the object", len(got), len(data))
	}
	cases := []struct {
		name string
		req  FetchRequest
		want error
	}{
		{"missing key", FetchRequest{Key: "models/m/9.9.9/bundle.tar"}, ErrNoObject},
		{"over budget (announced)", FetchRequest{Key: ok.Key, Size: ok.Size, MaxBytes: 1 << 10}, ErrTooLarge},
		{"over budget (actual)", FetchRequest{Key: ok.Key, MaxBytes: 1 << 10}, ErrTooLarge},
		{"truncated: object shorter than announced", FetchRequest{Key: ok.Key, Size: ok.Size + 1}, ErrChecksum},
		{"replaced: other sha256", FetchRequest{Key: ok.Key, SHA256: shaHex([]byte("other"))}, ErrChecksum},
	}
	for i, c := range cases {
		c.req.Path = filepath.Join(dir, "case", string(rune('a'+i))+".tar")
		err := f.Fetch(ctx, c.req, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		for _, p := range []string{c.req.Path, c.req.Path + ".part"} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s: %s left on disk after a permanent error", c.name, p)
			}
		}
	}
}

// TestFetchResumesAfterCutsAndOutage cuts the TCP path mid-download, then takes the object
// store away mid-download (path cut, server stopped, then back): Fetch keeps what it has, resumes with a range request, and ends
// with the exact object.
func TestFetchResumesAfterCutsAndOutage(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "fetch-resume")
	proxy := cloudtest.StartProxy(t, s3.Endpoint)
	cfg := fetchConfig(s3, proxy.Addr, bucket)
	cfg.MaxBytesPerSecond = 160 << 10 // slow enough to cut in the middle
	f, err := NewFetcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(768 << 10)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := f.os.put(ctx, "models/m/2.0.0/bundle.tar", data, "application/x-tar"); err != nil {
		t.Fatal(err)
	}
	req := FetchRequest{Key: "models/m/2.0.0/bundle.tar", Path: filepath.Join(t.TempDir(), "b.tar"), Size: int64(len(data)), SHA256: shaHex(data)}

	var mu sync.Mutex
	var starts []int64 // bytes on disk as each GET began
	f.onAttempt = func(have int64) {
		mu.Lock()
		starts = append(starts, have)
		mu.Unlock()
	}
	errc := make(chan error, 1)
	go func() { errc <- f.Fetch(ctx, req, nil) }()
	waitPart := func(atLeast int64) {
		t.Helper()
		for {
			if st, err := os.Stat(req.Path + ".part"); err == nil && st.Size() >= atLeast {
				return
			}
			select {
			case err := <-errc:
				t.Fatalf("Fetch ended before the fault: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitPart(64 << 10)
	proxy.Cut()
	time.Sleep(300 * time.Millisecond)
	proxy.Restore()
	// The socket buffers hold ~128 KiB past the cut: wait for the resumed GET.
	var resumed int64
	for resumed == 0 {
		mu.Lock()
		if len(starts) >= 2 {
			resumed = starts[len(starts)-1]
		}
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	waitPart(resumed + 32<<10)
	// The object store goes away: the path is cut (an in-flight GET outlives a graceful
	// stop) and the server is down while the fetcher retries.
	proxy.Cut()
	s3.Stop()
	time.Sleep(300 * time.Millisecond)
	s3.Start()
	proxy.Restore()
	if err := <-errc; err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	got, err := os.ReadFile(req.Path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetched %d bytes (%v), want the exact %d-byte object", len(got), err, len(data))
	}
	mu.Lock()
	defer mu.Unlock()
	nresumed := 0
	for _, have := range starts[1:] {
		if have > 0 {
			nresumed++
		}
	}
	if starts[0] != 0 || nresumed < 2 {
		t.Fatalf("GETs began at %v bytes; want the first at 0 and >= 2 resumed (after the cut and the outage)", starts)
	}
}
