package cloudsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"
)

// ErrNotFound: the object does not exist (Bucket.Get).
var ErrNotFound = errors.New("object not found")

// ErrPrecondition: a conditional write lost (Bucket.PutIfMatch): the object
// changed since it was read, or appeared when it should be new. Read it
// again and retry.
var ErrPrecondition = errors.New("object changed since it was read")

// Bucket is the object store as the cloud companion uses it: listing, reading
// and conditional writes on one bucket. It shares the uploader's client setup
// (TLS, credentials, path style) and keeps minio-go's types inside cloudsync.
type Bucket struct {
	store *objectStore
}

// ObjectInfo describes one listed object.
type ObjectInfo struct {
	Key  string
	Size int64
	ETag string
}

// OpenBucket validates the endpoint and credentials of cfg (the same keys as
// the uploader's config) and prepares the client; it does no network I/O.
func OpenBucket(cfg Config) (*Bucket, error) {
	if !cfg.Enabled() {
		return nil, errors.New("endpoint: empty")
	}
	st, err := newObjectStore(cfg)
	if err != nil {
		return nil, err
	}
	return &Bucket{store: st}, nil
}

// Name is the bucket's name.
func (b *Bucket) Name() string { return b.store.bucket }

// Ensure creates the bucket when it does not exist.
func (b *Bucket) Ensure(ctx context.Context) error { return b.store.ensureBucket(ctx) }

// Close frees idle connections.
func (b *Bucket) Close() { b.store.transport.CloseIdleConnections() }

// List calls fn for every object under prefix whose key sorts after
// startAfter ("" for all), in key order. With delimiter "/" it lists one
// level: common prefixes come as ObjectInfo with a Key ending in "/" and Size
// -1. An error from fn stops the listing and is returned.
func (b *Bucket) List(ctx context.Context, prefix, startAfter string, recursive bool, fn func(ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range b.store.client.ListObjects(ctx, b.store.bucket, minio.ListObjectsOptions{
		Prefix: prefix, StartAfter: startAfter, Recursive: recursive,
	}) {
		if o.Err != nil {
			return fmt.Errorf("list %s: %w", prefix, classify(o.Err))
		}
		info := ObjectInfo{Key: o.Key, Size: o.Size, ETag: strings.Trim(o.ETag, `"`)}
		if strings.HasSuffix(o.Key, "/") && o.Size == 0 && o.ETag == "" {
			info.Size = -1
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Get reads an object whole, with its ETag. A missing object is ErrNotFound.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.store.timeout)
	defer cancel()
	obj, err := b.store.client.GetObject(ctx, b.store.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, "", b.getErr(key, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		return nil, "", b.getErr(key, err)
	}
	info, err := obj.Stat()
	if err != nil {
		return nil, "", b.getErr(key, err)
	}
	return data, strings.Trim(info.ETag, `"`), nil
}

func (b *Bucket) getErr(key string, err error) error {
	if minio.ToErrorResponse(err).Code == "NoSuchKey" {
		return fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	return fmt.Errorf("get %s: %w", key, classify(err))
}

// PutNew writes data under key unless the key exists (If-None-Match: *). An
// existing identical object counts as success (existed is true); one with
// other content is an error matching ErrConflict.
func (b *Bucket) PutNew(ctx context.Context, key string, data []byte, contentType string) (existed bool, err error) {
	out, err := b.store.put(ctx, key, data, contentType)
	return out == putExisted, err
}

// PutIfMatch replaces the object at key only if its ETag is still etag (the
// one Get returned); with etag "" only if the key does not exist yet. Losing
// the race is ErrPrecondition: read again, merge, retry.
func (b *Bucket) PutIfMatch(ctx context.Context, key string, data []byte, contentType, etag string) error {
	opts := minio.PutObjectOptions{ContentType: contentType, DisableMultipart: true}
	if etag == "" {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(etag)
	}
	ctx, cancel := context.WithTimeout(ctx, b.store.timeout)
	defer cancel()
	_, err := b.store.client.PutObject(ctx, b.store.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	if err == nil {
		return nil
	}
	if st := minio.ToErrorResponse(err).StatusCode; st == http.StatusPreconditionFailed || st == http.StatusConflict {
		return fmt.Errorf("put %s: %w", key, ErrPrecondition)
	}
	return fmt.Errorf("put %s: %w", key, classify(err))
}
