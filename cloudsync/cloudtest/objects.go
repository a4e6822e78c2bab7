package cloudtest

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// Object is one object listed by [S3.Objects].
type Object struct {
	Key  string
	Size int64
}

// Objects lists every object in bucket under prefix, in key order. It fails
// the test on an error; call it from the test's goroutine.
func (s *S3) Objects(t testing.TB, bucket, prefix string) []Object {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []Object
	for o := range s.client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("cloudtest: list %s/%s: %v", bucket, prefix, o.Err)
		}
		out = append(out, Object{Key: o.Key, Size: o.Size})
	}
	return out
}

// Get returns an object's content. It fails the test on an error.
func (s *S3) Get(t testing.TB, bucket, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := s.client.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("cloudtest: get %s/%s: %v", bucket, key, err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("cloudtest: get %s/%s: %v", bucket, key, err)
	}
	return b
}

// Put writes an object (as a publisher such as takt-cloud would). It fails the test on an
// error.
func (s *S3) Put(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.client.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("cloudtest: put %s/%s: %v", bucket, key, err)
	}
}
