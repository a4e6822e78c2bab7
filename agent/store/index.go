package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Image states in the eviction index: done images (uploaded, or not to be
// uploaded) sort before pending ones of the same class.
const (
	stateDone    byte = 0
	statePending byte = 1
)

// recordOverhead is what one record costs in the database beyond its JSON:
// its key and its outbox and image index entries (approximately).
const recordOverhead = 96

func recordCost(jsonLen int) int64 { return int64(jsonLen) + recordOverhead }

// outboxEntry is the value of a verdict in the outbox bucket.
type outboxEntry struct {
	image    bool  // the image is still to be uploaded
	recBytes int64 // record JSON bytes
	imgBytes int64 // image bytes, 0 when image is false
	time     time.Time
}

func (e outboxEntry) encode() []byte {
	b := make([]byte, 25)
	if e.image {
		b[0] = 1
	}
	binary.BigEndian.PutUint64(b[1:], uint64(e.recBytes))
	binary.BigEndian.PutUint64(b[9:], uint64(e.imgBytes))
	binary.BigEndian.PutUint64(b[17:], uint64(e.time.UnixNano()))
	return b
}

func decodeOutbox(b []byte) (outboxEntry, error) {
	if len(b) != 25 {
		return outboxEntry{}, fmt.Errorf("outbox entry of %d bytes, want 25", len(b))
	}
	return outboxEntry{
		image:    b[0]&1 != 0,
		recBytes: int64(binary.BigEndian.Uint64(b[1:])),
		imgBytes: int64(binary.BigEndian.Uint64(b[9:])),
		time:     time.Unix(0, int64(binary.BigEndian.Uint64(b[17:]))).UTC(),
	}, nil
}

// imageEntry is the value of an image in the images bucket.
type imageEntry struct {
	class byte
	state byte
	size  int64
	time  time.Time // capture time
}

func (e imageEntry) encode() []byte {
	b := make([]byte, 18)
	b[0], b[1] = e.class, e.state
	binary.BigEndian.PutUint64(b[2:], uint64(e.size))
	binary.BigEndian.PutUint64(b[10:], uint64(e.time.UnixNano()))
	return b
}

func decodeImage(b []byte) (imageEntry, error) {
	if len(b) != 18 || b[0] > 2 || b[1] > 1 {
		return imageEntry{}, fmt.Errorf("image entry %x is malformed", b)
	}
	return imageEntry{
		class: b[0], state: b[1],
		size: int64(binary.BigEndian.Uint64(b[2:])),
		time: time.Unix(0, int64(binary.BigEndian.Uint64(b[10:]))).UTC(),
	}, nil
}

func evictKey(class, state byte, id uint64) []byte {
	k := make([]byte, 10)
	k[0], k[1] = class, state
	binary.BigEndian.PutUint64(k[2:], id)
	return k
}

func putImage(tx *bolt.Tx, id uint64, e imageEntry) error {
	if err := tx.Bucket(bucketImages).Put(idKey(id), e.encode()); err != nil {
		return err
	}
	return tx.Bucket(bucketEvict).Put(evictKey(e.class, e.state, id), nil)
}

// dropImage removes an image from the index and the counters; the caller
// removes the file after the transaction committed. It also clears the image
// from the verdict's outbox entry, so the uploader does not look for it.
func dropImage(tx *bolt.Tx, id uint64, e imageEntry) error {
	k := idKey(id)
	if err := tx.Bucket(bucketImages).Delete(k); err != nil {
		return err
	}
	if err := tx.Bucket(bucketEvict).Delete(evictKey(e.class, e.state, id)); err != nil {
		return err
	}
	sb := tx.Bucket(bucketStats)
	if err := addSigned(sb, keyImageBytes, -e.size); err != nil {
		return err
	}
	ob := tx.Bucket(bucketOutbox)
	if raw := ob.Get(k); raw != nil {
		oe, err := decodeOutbox(raw)
		if err != nil {
			return err
		}
		if oe.image {
			if err := addSigned(sb, keyOutboxBytes, -oe.imgBytes); err != nil {
				return err
			}
			oe.image, oe.imgBytes = false, 0
			if err := ob.Put(k, oe.encode()); err != nil {
				return err
			}
		}
	}
	return nil
}

// setImageState moves an image to state in the eviction index.
func setImageState(tx *bolt.Tx, id uint64, e imageEntry, state byte) error {
	if e.state == state {
		return nil
	}
	if err := tx.Bucket(bucketEvict).Delete(evictKey(e.class, e.state, id)); err != nil {
		return err
	}
	e.state = state
	return putImage(tx, id, e)
}

// buildIndex fills the outbox and image index for records written by a store
// without them (schema before the outbox): unsynced records are queued when
// the outbox is on, present images are indexed.
func (s *Store) buildIndex(tx *bolt.Tx) error {
	sb := tx.Bucket(bucketStats)
	var recBytes, imgBytes, outCount, outBytes int64
	err := tx.Bucket(bucketVerdicts).ForEach(func(k, data []byte) error {
		var v Verdict
		if err := json.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("verdict %d: %w", binary.BigEndian.Uint64(k), err)
		}
		recBytes += recordCost(len(data))
		var size int64
		if p := s.ImagePath(v); p != "" {
			fi, err := os.Stat(p)
			switch {
			case err == nil:
				size = fi.Size()
				st := stateDone
				if v.SyncedAt == nil && s.outbox {
					st = statePending
				}
				if err := putImage(tx, v.ID, imageEntry{class: classOf(v.Decision, false), state: st, size: size, time: v.Time}); err != nil {
					return err
				}
				imgBytes += size
			case !errors.Is(err, fs.ErrNotExist):
				return err
			}
		}
		if v.SyncedAt == nil && s.outbox {
			e := outboxEntry{image: size > 0, recBytes: int64(len(data)), imgBytes: size, time: v.Time}
			if err := tx.Bucket(bucketOutbox).Put(k, e.encode()); err != nil {
				return err
			}
			outCount++
			outBytes += e.recBytes + e.imgBytes
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("index existing records: %w", err)
	}
	for _, kv := range []struct {
		key []byte
		n   int64
	}{{keyRecordBytes, recBytes}, {keyImageBytes, imgBytes}, {keyOutboxCount, outCount}, {keyOutboxBytes, outBytes}} {
		if err := addSigned(sb, kv.key, kv.n); err != nil {
			return err
		}
	}
	return sb.Put(keyIndexed, []byte{1})
}

// loadUsage reads the image bytes counter into memory.
func (s *Store) loadUsage() error {
	return s.db.View(func(tx *bolt.Tx) error {
		s.imgUsed = int64(getCounter(tx.Bucket(bucketStats), keyImageBytes))
		return nil
	})
}

// imagePathOf is the absolute path of a record's image, "" when it has none.
func (s *Store) imagePathOf(data []byte) string {
	var v struct {
		ImageRef string `json:"image_ref"`
	}
	if json.Unmarshal(data, &v) != nil {
		return ""
	}
	return s.ImagePath(Verdict{ImageRef: v.ImageRef})
}

// removeFiles removes image files whose index entries are gone (a file a
// crash leaves behind is removed by the next Open).
func removeFiles(paths []string) {
	for _, p := range paths {
		if p != "" {
			os.Remove(p)
		}
	}
}
