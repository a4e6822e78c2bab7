package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Check verifies the store: bbolt's own page-level check of the file, then
// the store's invariants: every queued or sealed verdict has a record, the
// outbox and image counters equal what the buckets hold, labels held beside
// records belong to sealed ones, label entries decode, the eviction index
// matches the image index, and every indexed image file exists with its
// size. It returns every problem found, joined; nil means consistent. It
// holds one read transaction for the whole check and stats every image file.
func (s *Store) Check() error {
	var errs []error
	add := func(format string, args ...any) {
		if len(errs) < 100 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	err := s.view(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			add("bbolt: %v", err)
		}
		vb, ob, sealed, images, evict, sb := tx.Bucket(bucketVerdicts), tx.Bucket(bucketOutbox), tx.Bucket(bucketSealed),
			tx.Bucket(bucketImages), tx.Bucket(bucketEvict), tx.Bucket(bucketStats)
		var outCount, outBytes, imgBytes, recBytes int64
		_ = vb.ForEach(func(k, v []byte) error {
			recBytes += recordCost(len(v))
			return nil
		})
		_ = ob.ForEach(func(k, v []byte) error {
			id := binary.BigEndian.Uint64(k)
			e, err := decodeOutbox(v)
			if err != nil {
				add("outbox %d: %v", id, err)
				return nil
			}
			outCount++
			outBytes += e.recBytes + e.imgBytes
			if vb.Get(k) == nil {
				add("outbox %d: no record", id)
			}
			if e.image && images.Get(k) == nil {
				add("outbox %d: image queued but not indexed", id)
			}
			return nil
		})
		_ = sealed.ForEach(func(k, _ []byte) error {
			if ob.Get(k) == nil {
				add("sealed %d: not in the outbox", binary.BigEndian.Uint64(k))
			}
			return nil
		})
		_ = tx.Bucket(bucketHeldLabels).ForEach(func(k, _ []byte) error {
			if sealed.Get(k) == nil {
				add("held label %d: verdict not sealed", binary.BigEndian.Uint64(k))
			}
			return nil
		})
		lb := tx.Bucket(bucketLabels)
		_ = lb.ForEach(func(k, v []byte) error {
			if _, err := decodeLabel(k, v); err != nil {
				add("%v", err)
			}
			return nil
		})
		if k, _ := lb.Cursor().Last(); k != nil && binary.BigEndian.Uint64(k) > lb.Sequence() {
			add("label entry %d above the label sequence %d", binary.BigEndian.Uint64(k), lb.Sequence())
		}
		nImages := 0
		_ = images.ForEach(func(k, v []byte) error {
			id := binary.BigEndian.Uint64(k)
			e, err := decodeImage(v)
			if err != nil {
				add("image %d: %v", id, err)
				return nil
			}
			nImages++
			imgBytes += e.size
			if evict.Get(evictKey(e.class, e.state, id)) == nil {
				add("image %d: not in the eviction index", id)
			}
			data := vb.Get(k)
			if data == nil {
				add("image %d: no record", id)
				return nil
			}
			p := s.imagePathOf(data)
			fi, err := os.Stat(p)
			switch {
			case err != nil:
				add("image %d: %v", id, err)
			case fi.Size() != e.size:
				add("image %d: %s is %d bytes, index says %d", id, p, fi.Size(), e.size)
			}
			return nil
		})
		if n := evict.Stats().KeyN; n != nImages {
			add("eviction index holds %d entries, image index %d", n, nImages)
		}
		for _, c := range []struct {
			name string
			key  []byte
			want int64
		}{{"outbox_count", keyOutboxCount, outCount}, {"outbox_bytes", keyOutboxBytes, outBytes},
			{"image_bytes", keyImageBytes, imgBytes}, {"record_bytes", keyRecordBytes, recBytes}} {
			if got := int64(getCounter(sb, c.key)); got != c.want {
				add("counter %s = %d, buckets hold %d", c.name, got, c.want)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check store %s: %w", s.dir, err)
	}
	return errors.Join(errs...)
}

// Compact rewrites the bbolt file of the store in dir without its free pages
// (bbolt never shrinks a file by itself) and returns its size before and
// after. The store must not be open: like Open it waits timeout for the file
// lock and then fails with an error matching ErrLocked. The copy is written to
// a temp file in dir, fsync'd and renamed over takt.db, so a crash leaves
// either the old or the new file.
func Compact(dir string, timeout time.Duration) (before, after int64, err error) {
	path := filepath.Join(dir, dbFile)
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	before = fi.Size()
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	src, err := bolt.Open(path, 0o640, &bolt.Options{Timeout: timeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return 0, 0, &lockedError{path: path}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("compact: open %s: %w", path, err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(dir, compactPrefix+"*")
	if err != nil {
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	tmpPath := tmp.Name()
	err = tmp.Chmod(0o640) // takt.db's mode (CreateTemp makes 0600)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmpPath)
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmpPath)
		}
	}()
	dst, err := bolt.Open(tmpPath, 0o640, &bolt.Options{Timeout: timeout})
	if err != nil {
		return 0, 0, fmt.Errorf("compact: open %s: %w", tmpPath, err)
	}
	if err := bolt.Compact(dst, src, 64<<20); err != nil {
		dst.Close()
		return 0, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	if err := dst.Close(); err != nil {
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	fi, err = os.Stat(tmpPath)
	if err != nil {
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	after = fi.Size()
	if err := os.Rename(tmpPath, path); err != nil {
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	if err := syncDirs(dir); err != nil {
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	return before, after, nil
}
