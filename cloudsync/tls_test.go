package cloudsync

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

// startTLSFront terminates TLS with a certificate from a fresh CA and passes
// the bytes to target; it returns the address and the CA's PEM file.
func startTLSFront(t *testing.T, target string) (addr, caFile string) {
	t.Helper()
	caPEM, certPEM, keyPEM := cloudtest.Certs(t)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, caPEM, 0o644)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String(), caFile
}

// An https endpoint signed by a custom CA works with sync.ca_file and fails
// without it; a put is idempotent by key and an identical retry succeeds.
func TestObjectStoreTLSCustomCAAndConditionalPut(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	addr, caFile := startTLSFront(t, s3.Endpoint)
	cfg := DefaultConfig()
	cfg.Endpoint, cfg.Bucket, cfg.Region, cfg.PathStyle = "https://"+addr, bucket, s3.Region, true
	cfg.AccessKey, cfg.SecretKey = s3.AccessKey, Secret(s3.SecretKey)
	cfg.RequestTimeout = 5 * time.Second
	ctx := context.Background()

	noCA, err := newObjectStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noCA.put(ctx, "k", []byte("x"), "text/plain"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("put over TLS without the CA = %v, want a certificate error", err)
	}
	cfg.CAFile = caFile
	o, err := newObjectStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const key = "verdicts/st/2026/01/02/0000000000000001-0000000000000002.jsonl"
	for i, want := range []putOutcome{putCreated, putExisted} {
		if got, err := o.put(ctx, key, []byte("{\"id\":1}\n"), "application/x-ndjson"); err != nil || got != want {
			t.Errorf("put #%d = %v, %v; want %v", i+1, got, err, want)
		}
	}
	if _, err := o.put(ctx, key, []byte("{\"id\":2}\n"), "application/x-ndjson"); err == nil || !strings.Contains(err.Error(), ErrConflict.Error()) {
		t.Errorf("put of other content under the key = %v, want ErrConflict", err)
	}
	cfg.CAFile = filepath.Join(t.TempDir(), "none.pem")
	if _, err := newObjectStore(cfg); err == nil || !strings.Contains(err.Error(), "sync.ca_file") {
		t.Errorf("missing CA file: %v, want an error naming sync.ca_file", err)
	}
}
