package cloudsync

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Errors the uploader reports (in Status and its log), matched with errors.Is.
var (
	// ErrAuth: the server refused the credentials (wrong key or secret, no
	// permission). Retried only every sync.backoff_max.
	ErrAuth = errors.New("object store refused the credentials")
	// ErrNoBucket: the bucket does not exist. Retried every sync.backoff_max.
	ErrNoBucket = errors.New("bucket does not exist")
	// ErrConflict: an object with the same key but other content exists. The
	// uploader then writes the content under the key with a "-conflict-" and
	// content hash suffix instead.
	ErrConflict = errors.New("object exists with other content")
)

// putOutcome says how a conditional PUT ended.
type putOutcome int

const (
	putCreated putOutcome = iota // the object was written
	putExisted                   // an identical object was already there
)

// objectStore is the S3 bucket, behind minio-go.
type objectStore struct {
	client    *minio.Client
	transport *http.Transport
	bucket    string
	region    string
	timeout   time.Duration
	limit     *limiter
}

const metaSHA256 = "Sha256" // user metadata key: X-Amz-Meta-Sha256

func newObjectStore(cfg Config) (*objectStore, error) {
	host, secure, err := parseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("sync.endpoint: %w", err)
	}
	access, secret, err := cfg.credentials()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   cfg.Concurrency + 2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.RequestTimeout,
		ExpectContinueTimeout: time.Second,
	}
	if secure {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("sync.ca_file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("sync.ca_file: %s holds no PEM certificate", cfg.CAFile)
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(access, string(secret), ""),
		Secure:       secure,
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   1, // the uploader retries with its own backoff
	})
	if err != nil {
		return nil, fmt.Errorf("sync.endpoint: %w", err)
	}
	return &objectStore{client: c, transport: tr, bucket: cfg.Bucket, region: cfg.Region,
		timeout: cfg.RequestTimeout, limit: newLimiter(cfg.MaxBytesPerSecond)}, nil
}

// ensureBucket creates the bucket if it does not exist.
func (o *objectStore) ensureBucket(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	ok, err := o.client.BucketExists(ctx, o.bucket)
	if err != nil {
		return classify(err)
	}
	if ok {
		return nil
	}
	err = o.client.MakeBucket(ctx, o.bucket, minio.MakeBucketOptions{Region: o.region})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", o.bucket, classify(err))
	}
	return nil
}

// put writes data under key unless the key exists (If-None-Match: *). An
// existing object with the same content counts as success (putExisted); one
// with other content is an error matching ErrConflict.
func (o *objectStore) put(ctx context.Context, key string, data []byte, contentType string) (putOutcome, error) {
	sum := sha256.Sum256(data)
	shaHex := hex.EncodeToString(sum[:])
	opts := minio.PutObjectOptions{
		ContentType:      contentType,
		UserMetadata:     map[string]string{metaSHA256: shaHex},
		DisableMultipart: true,
	}
	opts.SetMatchETagExcept("*")
	rctx, cancel := context.WithTimeout(ctx, o.timeout+o.limit.transferTime(len(data)))
	defer cancel()
	var r interface{ Read([]byte) (int, error) } = bytes.NewReader(data)
	if o.limit != nil {
		r = &limitedReader{ctx: rctx, r: r, l: o.limit}
	}
	_, err := o.client.PutObject(rctx, o.bucket, key, r, int64(len(data)), opts)
	if err == nil {
		return putCreated, nil
	}
	resp := minio.ToErrorResponse(err)
	if resp.StatusCode != http.StatusPreconditionFailed {
		return 0, fmt.Errorf("put %s: %w", key, classify(err))
	}
	// The key exists: identical content is success.
	sctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	info, err := o.client.StatObject(sctx, o.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return 0, fmt.Errorf("put %s: exists; stat: %w", key, classify(err))
	}
	if info.Size != int64(len(data)) {
		return 0, fmt.Errorf("put %s: %w (%d bytes there, %d to upload)", key, ErrConflict, info.Size, len(data))
	}
	if got := metaValue(info, metaSHA256); got != "" {
		if !strings.EqualFold(got, shaHex) {
			return 0, fmt.Errorf("put %s: %w (sha256 %s there, %s to upload)", key, ErrConflict, got, shaHex)
		}
		return putExisted, nil
	}
	// No checksum metadata (written by someone else): a single-part ETag is
	// the MD5 of the content.
	m := md5.Sum(data)
	if !strings.EqualFold(strings.Trim(info.ETag, `"`), hex.EncodeToString(m[:])) {
		return 0, fmt.Errorf("put %s: %w (etag %s there)", key, ErrConflict, info.ETag)
	}
	return putExisted, nil
}

// metaValue finds a user metadata value whatever case the server used.
func metaValue(info minio.ObjectInfo, key string) string {
	for k, v := range info.UserMetadata {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return info.Metadata.Get("X-Amz-Meta-" + key)
}

// classify wraps a client error in ErrAuth or ErrNoBucket when it is one.
func classify(err error) error {
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken":
		return fmt.Errorf("%w: %s: %s", ErrAuth, resp.Code, resp.Message)
	case "NoSuchBucket":
		return fmt.Errorf("%w: %s", ErrNoBucket, resp.Message)
	}
	if resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%w: %v", ErrAuth, err)
	}
	return err
}
