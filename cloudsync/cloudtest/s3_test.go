package cloudtest_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

func newMinio(t *testing.T, s *cloudtest.S3, maxRetries int) *minio.Client {
	t.Helper()
	tr, err := minio.DefaultTransport(false)
	if err != nil {
		t.Fatal(err)
	}
	tr.Proxy = nil
	t.Cleanup(tr.CloseIdleConnections)
	c, err := minio.New(s.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:     s.Region,
		Transport:  tr,
		MaxRetries: maxRetries,
	})
	if err != nil {
		t.Fatalf("minio.New(%q): %v", s.Endpoint, err)
	}
	return c
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func put(ctx context.Context, c *minio.Client, bucket, key string, data []byte, opts minio.PutObjectOptions) error {
	_, err := c.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	return err
}

func get(t *testing.T, c *minio.Client, bucket, key string) []byte {
	t.Helper()
	o, err := c.GetObject(ctxTimeout(t, waitFor), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

func TestS3PutListGet(t *testing.T) {
	s := cloudtest.StartS3(t)
	bucket := s.NewBucket(t, "takt-images")
	c := newMinio(t, s, 3)
	const key = "images/station-1/2026/01/02/0000000000000001.jpg"
	data := bytes.Repeat([]byte("takt"), 40_000) // 160 kB, one PUT

	if err := put(ctxTimeout(t, waitFor), c, bucket, key, data, minio.PutObjectOptions{ContentType: "image/jpeg"}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	var keys []string
	for o := range c.ListObjects(ctxTimeout(t, waitFor), bucket, minio.ListObjectsOptions{Prefix: "images/", Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list: %v", o.Err)
		}
		keys = append(keys, o.Key)
		if o.Size != int64(len(data)) {
			t.Errorf("list: %s size %d, want %d", o.Key, o.Size, len(data))
		}
	}
	if len(keys) != 1 || keys[0] != key {
		t.Errorf("list = %q, want [%q]", keys, key)
	}
	if got := get(t, c, bucket, key); !bytes.Equal(got, data) {
		t.Errorf("get %s: %d bytes differ from the %d put", key, len(got), len(data))
	}
}

func TestS3StopStart(t *testing.T) {
	s := cloudtest.StartS3(t)
	bucket := s.NewBucket(t, "takt")
	c := newMinio(t, s, 2)

	if err := put(ctxTimeout(t, waitFor), c, bucket, "before", []byte("1"), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put before Stop: %v", err)
	}
	s.Stop()
	if err := put(ctxTimeout(t, waitFor), c, bucket, "during", []byte("2"), minio.PutObjectOptions{}); err == nil {
		t.Fatalf("put while stopped succeeded, want an error")
	} else {
		t.Logf("put while stopped: %v", err)
	}
	s.Start()
	if err := put(ctxTimeout(t, waitFor), c, bucket, "after", []byte("3"), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put after Start: %v", err)
	}
	if got := get(t, c, bucket, "before"); string(got) != "1" {
		t.Errorf("object put before Stop = %q after Start, want %q", got, "1")
	}
}

// TestS3ConditionalPut records how versitygw answers a conditional PUT with
// If-None-Match: *, which the uploader relies on to make Put idempotent by
// key: the first PUT creates the object, a repeated one is refused with 412
// and does not overwrite.
func TestS3ConditionalPut(t *testing.T) {
	s := cloudtest.StartS3(t)
	bucket := s.NewBucket(t, "takt")
	c := newMinio(t, s, 1)
	const key = "verdicts/station-1/2026/01/02/1-64.jsonl"
	ifNoneMatch := func() minio.PutObjectOptions {
		var o minio.PutObjectOptions
		o.SetMatchETagExcept("*") // If-None-Match: *
		return o
	}

	if err := put(ctxTimeout(t, waitFor), c, bucket, key, []byte("first"), ifNoneMatch()); err != nil {
		t.Fatalf("conditional put of a new key: %v, want success", err)
	}
	for _, tc := range []struct {
		name string
		data string
	}{
		{"same content", "first"},
		{"other content", "second"},
	} {
		err := put(ctxTimeout(t, waitFor), c, bucket, key, []byte(tc.data), ifNoneMatch())
		resp := minio.ToErrorResponse(err)
		t.Logf("conditional put over an existing key, %s: status %d code %q err %v", tc.name, resp.StatusCode, resp.Code, err)
		if resp.StatusCode != http.StatusPreconditionFailed || resp.Code != "PreconditionFailed" {
			t.Errorf("conditional put over an existing key, %s: status %d code %q, want 412 PreconditionFailed", tc.name, resp.StatusCode, resp.Code)
		}
	}
	if got := get(t, c, bucket, key); string(got) != "first" {
		t.Errorf("after refused conditional puts the object is %q, want %q", got, "first")
	}
}
