package cloudtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a versitygw S3 gateway owned by one test: plain HTTP on a loopback
// port, path-style buckets, the posix backend in the test's temp dir (objects
// survive Stop and Start), one root account with keys made for this test.
type S3 struct {
	// Endpoint is "127.0.0.1:PORT", as minio.New wants it (Secure: false).
	Endpoint string
	// AccessKey and SecretKey are the root account's credentials.
	AccessKey string
	SecretKey string
	// Region is the region the gateway reports and signs with: "us-east-1".
	Region string

	srv       *server
	client    *minio.Client // for readiness and NewBucket
	transport *http.Transport
}

// StartS3 starts versitygw for the test and returns once it answers an
// authenticated ListBuckets. The gateway is stopped, with its process group,
// when the test and its subtests end; its log is printed if the test failed.
//
// The binary is $TAKT_VERSITYGW if set, else versitygw on PATH, else
// .deps/bin/versitygw in the repository root (the nearest folder with a go.mod
// at or above the working directory); if none is found the test fails (never
// skips) and says to run packaging/install-deps.sh.
//
// The command line, for versitygw v1.8.0:
//
//	versitygw --port 127.0.0.1:PORT --access KEY --secret SECRET --region us-east-1 posix DIR/data
//
// run with VGW_*, ROOT_* and other versitygw variables removed from its
// environment, so a developer's settings do not change the tests.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	candidates := []string{"versitygw"}
	if root := repoRoot(); root != "" {
		candidates = append(candidates, filepath.Join(root, ".deps", "bin", "versitygw"))
	}
	bin := findBinary(t, "versitygw (S3 server)", "TAKT_VERSITYGW", candidates...)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatalf("cloudtest: %v", err)
	}
	s := &S3{
		AccessKey: "TAKT" + rand.Text()[:16],        // 20 characters, A-Z and 2-7
		SecretKey: (rand.Text() + rand.Text())[:40], // 40 characters
		Region:    "us-east-1",
	}
	s.transport = &http.Transport{
		Proxy:               nil, // loopback: never through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	s.srv = &server{
		t:       t,
		name:    "versitygw",
		bin:     bin,
		dir:     dir,
		logPath: filepath.Join(dir, "versitygw.log"),
		env:     versitygwEnv(os.Environ()),
		secrets: []string{s.SecretKey},
		args: func(port int) ([]string, error) {
			if err := s.setEndpoint(port); err != nil {
				return nil, err
			}
			return []string{
				"--port", s.Endpoint,
				"--access", s.AccessKey,
				"--secret", s.SecretKey,
				"--region", s.Region,
				"posix", data,
			}, nil
		},
		probe: func(ctx context.Context, _ int, _ []byte) error {
			// Keys are new for this test, so an answer from another test's
			// gateway that took the port would be an access-denied error.
			_, err := s.client.ListBuckets(ctx)
			return err
		},
		onStop: func() { s.transport.CloseIdleConnections() },
	}
	t.Cleanup(s.transport.CloseIdleConnections)
	s.srv.startFresh()
	return s
}

func (s *S3) setEndpoint(port int) error {
	endpoint := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if s.client != nil && s.Endpoint == endpoint {
		return nil
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:     s.Region,
		Transport:  s.transport,
		MaxRetries: 1, // readiness polls on its own
	})
	if err != nil {
		return fmt.Errorf("minio client for %s: %w", endpoint, err)
	}
	s.Endpoint, s.client = endpoint, c
	return nil
}

// NewBucket creates a bucket and returns its name. name must be a valid S3
// bucket name (3-63 lowercase letters, digits, dots, hyphens). It fails the
// test if the bucket cannot be created.
func (s *S3) NewBucket(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatalf("cloudtest: create bucket %q on %s: %v", name, s.Endpoint, err)
	}
	return name
}

// Stop stops the gateway (SIGTERM; SIGKILL after 5 s). Requests fail with
// connection refused until Start. Stop on a stopped gateway does nothing.
func (s *S3) Stop() { s.srv.stop() }

// Start starts a stopped gateway again on the same port with the same data
// and keys, and returns once it answers. It fails the test (t.Fatalf) if the
// gateway is running or does not come up, so call it from the test's goroutine.
func (s *S3) Start() {
	s.srv.t.Helper()
	s.srv.restart()
}

// versitygwEnv returns env without the variables that configure versitygw
// (see versitygw --help), so only the command line does.
func versitygwEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "VGW_"), strings.HasPrefix(k, "ROOT_"),
			k == "LOGFILE", k == "WEBHOOK":
			continue
		}
		out = append(out, kv)
	}
	return out
}
