package cloudsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/minio/minio-go/v7"
)

// Errors Fetch returns that retrying will not cure, matched with errors.Is.
var (
	// ErrNoObject: the key does not exist in the bucket.
	ErrNoObject = errors.New("object does not exist")
	// ErrTooLarge: the object is larger than the request's budget.
	ErrTooLarge = errors.New("object exceeds the download budget")
	// ErrChecksum: the downloaded bytes do not have the announced size or sha256 (a
	// truncated or replaced object). The partial file is removed.
	ErrChecksum = errors.New("downloaded object does not match its announced size or sha256")
)

// Fetcher downloads objects (model bundles) from the sync bucket into files, resuming an
// interrupted download where it stopped. Create it with NewFetcher; Fetch may be called from
// several goroutines for different files.
type Fetcher struct {
	os         *objectStore
	backoffMin time.Duration
	backoffMax time.Duration
	// onAttempt, when set (tests only), sees the bytes on disk as each GET begins.
	onAttempt func(have int64)
}

// NewFetcher validates cfg (the station's sync settings: endpoint, bucket, credentials,
// timeouts, backoff and bandwidth cap) and returns a Fetcher. It does no network I/O.
func NewFetcher(cfg Config) (*Fetcher, error) {
	if !cfg.Enabled() {
		return nil, errors.New("sync.endpoint: model downloads need the object store; set sync.endpoint")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o, err := newObjectStore(cfg)
	if err != nil {
		return nil, err
	}
	return &Fetcher{os: o, backoffMin: cfg.BackoffMin, backoffMax: cfg.BackoffMax}, nil
}

// FetchRequest names what to download and where.
type FetchRequest struct {
	Key string // object key
	// Path is the finished file. The download goes to Path+".part" first, which a later
	// Fetch resumes (also after a restart); Path appears only complete and checked.
	Path string
	// Size, when > 0, is the announced size; SHA256, when set, the announced hex sha256.
	Size   int64
	SHA256 string
	// MaxBytes, when > 0, bounds the object's size (the staging disk budget).
	MaxBytes int64
}

// Progress reports a download's bytes so far and its total (0 when not yet known).
type Progress func(done, total int64)

// Fetch downloads req.Key to req.Path, retrying with exponential backoff (sync.backoff_min
// .. sync.backoff_max) after network errors and server faults and resuming from the bytes
// already on disk, until it succeeds, ctx is done (the .part file is kept for a later
// Fetch), or a permanent error: ErrNoObject, ErrTooLarge, ErrChecksum, ErrAuth,
// ErrNoBucket. progress may be nil.
func (f *Fetcher) Fetch(ctx context.Context, req FetchRequest, progress Progress) error {
	if req.Key == "" || req.Path == "" {
		return errors.New("fetch: empty key or path")
	}
	if req.MaxBytes > 0 && req.Size > req.MaxBytes {
		return fmt.Errorf("fetch %s: %w: announced %d bytes, budget %d", req.Key, ErrTooLarge, req.Size, req.MaxBytes)
	}
	if err := os.MkdirAll(filepath.Dir(req.Path), 0o755); err != nil {
		return fmt.Errorf("fetch %s: %w", req.Key, err)
	}
	bo := backoff{min: f.backoffMin, max: f.backoffMax}
	for {
		progressed, err := f.fetchOnce(ctx, req, progress)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fetch %s: %w", req.Key, ctx.Err())
		}
		if permanent(err) {
			if errors.Is(err, ErrNoObject) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrChecksum) {
				os.Remove(req.Path + ".part") // nothing to resume
			}
			return fmt.Errorf("fetch %s: %w", req.Key, err)
		}
		if progressed {
			bo.reset()
		}
		if !sleep(ctx, bo.next()) {
			return fmt.Errorf("fetch %s: %w (last error: %v)", req.Key, ctx.Err(), err)
		}
	}
}

func permanent(err error) bool {
	for _, e := range []error{ErrNoObject, ErrTooLarge, ErrChecksum, ErrAuth, ErrNoBucket} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// fetchOnce makes one GET for the bytes after those in the .part file and appends them. It
// reports whether it wrote any byte.
func (f *Fetcher) fetchOnce(ctx context.Context, req FetchRequest, progress Progress) (bool, error) {
	part := req.Path + ".part"
	out, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer out.Close()
	st, err := out.Stat()
	if err != nil {
		return false, err
	}
	have := st.Size()

	sctx, cancel := context.WithTimeout(ctx, f.os.timeout)
	info, err := f.os.client.StatObject(sctx, f.os.bucket, req.Key, minio.StatObjectOptions{})
	cancel()
	if err != nil {
		return false, notFound(err)
	}
	total := info.Size
	if req.MaxBytes > 0 && total > req.MaxBytes {
		os.Remove(part)
		return false, fmt.Errorf("%w: %d bytes, budget %d", ErrTooLarge, total, req.MaxBytes)
	}
	if req.Size > 0 && total != req.Size {
		os.Remove(part)
		return false, fmt.Errorf("%w: the object has %d bytes, announced %d", ErrChecksum, total, req.Size)
	}
	if have > total {
		// A different object than the one the .part file began: start over.
		if err := out.Truncate(0); err != nil {
			return false, err
		}
		have = 0
	}
	if progress != nil {
		progress(have, total)
	}
	if f.onAttempt != nil {
		f.onAttempt(have)
	}
	wrote := false
	if have < total {
		opts := minio.GetObjectOptions{}
		if have > 0 {
			if err := opts.SetRange(have, 0); err != nil {
				return false, err
			}
		}
		// Pin the version we stat'ed: a replaced object must not be spliced onto the first.
		if info.ETag != "" {
			if err := opts.SetMatchETag(info.ETag); err != nil {
				return false, err
			}
		}
		gctx, cancel := context.WithCancel(ctx)
		defer cancel()
		obj, err := f.os.client.GetObject(gctx, f.os.bucket, req.Key, opts)
		if err != nil {
			return false, notFound(err)
		}
		defer obj.Close()
		var r io.Reader = &stallReader{r: obj, cancel: cancel, idle: f.os.timeout}
		if f.os.limit != nil {
			r = &limitedReader{ctx: gctx, r: r, l: f.os.limit}
		}
		n, err := io.Copy(out, &progressReader{r: r, done: have, total: total, fn: progress})
		wrote = n > 0
		if err != nil {
			if minio.ToErrorResponse(err).StatusCode == http.StatusPreconditionFailed {
				out.Truncate(0)
				return wrote, fmt.Errorf("the object changed during the download; starting over")
			}
			return wrote, notFound(err)
		}
	}
	if err := out.Sync(); err != nil {
		return wrote, err
	}
	if err := out.Close(); err != nil {
		return wrote, err
	}
	if err := checkFile(part, total, req.SHA256); err != nil {
		os.Remove(part)
		return wrote, err
	}
	if err := os.Rename(part, req.Path); err != nil {
		return wrote, err
	}
	syncDir(filepath.Dir(req.Path))
	return wrote, nil
}

func notFound(err error) error {
	if resp := minio.ToErrorResponse(err); resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket" {
		return fmt.Errorf("%w: %s", ErrNoObject, resp.Message)
	}
	return classify(err)
}

func checkFile(path string, size int64, sha string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%w: %d bytes on disk, the object has %d", ErrChecksum, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); sha != "" && got != sha {
		return fmt.Errorf("%w: sha256 %s, announced %s", ErrChecksum, got, sha)
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// progressReader reports progress as bytes go through.
type progressReader struct {
	r           io.Reader
	done, total int64
	fn          Progress
	last        time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if p.fn != nil && (time.Since(p.last) > 200*time.Millisecond || err != nil) {
		p.last = time.Now()
		p.fn(p.done, p.total)
	}
	return n, err
}

// stallReader cancels the GET when no byte arrived for idle: a broker or object store that
// vanished without closing the TCP connection must not hang the download forever.
type stallReader struct {
	r      io.Reader
	cancel context.CancelFunc
	idle   time.Duration
	timer  *time.Timer
}

func (s *stallReader) Read(b []byte) (int, error) {
	if s.timer == nil {
		s.timer = time.AfterFunc(s.idle, s.cancel)
	} else {
		s.timer.Reset(s.idle)
	}
	n, err := s.r.Read(b)
	if err != nil {
		s.timer.Stop()
	}
	return n, err
}
