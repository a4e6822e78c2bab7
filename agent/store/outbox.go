package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// Pending returns up to n verdicts that are not yet acknowledged, lowest id
// first, for the uploader. The first call seals the set it returns in the
// database (one fsync); every later call, also after a restart, returns that
// same set until each of its verdicts is acknowledged, even if n changed.
// Only then does it seal the next set. Verdicts that become visible out of id
// order (see Caveats) are never skipped: they wait in the outbox for the next
// set. With nothing pending it returns an empty slice and writes nothing.
func (s *Store) Pending(ctx context.Context, n int) ([]wire.Item, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: pending limit %d, want > 0", ErrInvalid, n)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var items []wire.Item
	var empty bool
	read := func(tx *bolt.Tx) error {
		items = items[:0]
		c := tx.Bucket(bucketSealed).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			it, ok, err := s.item(tx, k)
			if err != nil {
				return err
			}
			if ok {
				items = append(items, it)
			}
		}
		return nil
	}
	err := s.view(func(tx *bolt.Tx) error {
		if err := read(tx); err != nil {
			return err
		}
		k, _ := tx.Bucket(bucketOutbox).Cursor().First()
		empty = k == nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pending: %w", err)
	}
	if len(items) > 0 || empty {
		return items, nil
	}
	// Seal the next set.
	err = s.update(func(tx *bolt.Tx) error {
		sealed := tx.Bucket(bucketSealed)
		if k, _ := sealed.Cursor().First(); k != nil {
			return read(tx) // sealed meanwhile by a concurrent call
		}
		items = items[:0]
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, _ := c.First(); k != nil && len(items) < n; k, _ = c.Next() {
			it, ok, err := s.item(tx, k)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := sealed.Put(k, nil); err != nil {
				return err
			}
			items = append(items, it)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pending: seal: %w", err)
	}
	return items, nil
}

// item builds the outbox item of verdict k; ok is false if it is not (or no
// longer) in the outbox.
func (s *Store) item(tx *bolt.Tx, k []byte) (wire.Item, bool, error) {
	raw := tx.Bucket(bucketOutbox).Get(k)
	if raw == nil {
		return wire.Item{}, false, nil
	}
	id := binary.BigEndian.Uint64(k)
	e, err := decodeOutbox(raw)
	if err != nil {
		return wire.Item{}, false, fmt.Errorf("verdict %d: %w", id, err)
	}
	data := tx.Bucket(bucketVerdicts).Get(k)
	if data == nil {
		return wire.Item{}, false, fmt.Errorf("verdict %d is queued but has no record", id)
	}
	var v Verdict
	if err := json.Unmarshal(data, &v); err != nil {
		return wire.Item{}, false, fmt.Errorf("verdict %d: %w", id, err)
	}
	it := wire.Item{
		ID: id, Station: v.Station, Time: v.Time, Decision: v.Decision,
		Score: v.Score, Threshold: v.Threshold,
		Record: append([]byte(nil), data...),
	}
	if e.image {
		if p := s.ImagePath(v); p != "" {
			it.Image, it.ImageSize = p, e.imgBytes
			it.ImageExt = imageExt(v.ImageRef)
		}
	}
	return it, true, nil
}

func imageExt(ref string) string {
	for i := len(ref) - 1; i >= 0 && ref[i] != '/'; i-- {
		if ref[i] == '.' {
			return ref[i+1:]
		}
	}
	return ""
}

// Ack marks verdicts as synced once the object store confirmed them: it
// removes them from the outbox, sets SyncedAt in their records (and a label
// SetLabel held back while the record was sealed) and moves their
// images to the synced (evict first) side of their class, or deletes them
// with Policy.DeleteSyncedImages. Unknown and already acknowledged ids are
// ignored. It returns after the change is durable.
func (s *Store) Ack(ctx context.Context, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now().UTC()
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	var remove []string
	var freed int64
	err := s.update(func(tx *bolt.Tx) error {
		remove, freed = remove[:0], 0
		ob, sealed, vb, images := tx.Bucket(bucketOutbox), tx.Bucket(bucketSealed), tx.Bucket(bucketVerdicts), tx.Bucket(bucketImages)
		sb := tx.Bucket(bucketStats)
		for _, id := range ids {
			k := idKey(id)
			raw := ob.Get(k)
			if raw == nil {
				continue
			}
			e, err := decodeOutbox(raw)
			if err != nil {
				return fmt.Errorf("verdict %d: %w", id, err)
			}
			if err := ob.Delete(k); err != nil {
				return err
			}
			if err := sealed.Delete(k); err != nil {
				return err
			}
			if err := addSigned(sb, keyOutboxCount, -1); err != nil {
				return err
			}
			if err := addSigned(sb, keyOutboxBytes, -(e.recBytes + e.imgBytes)); err != nil {
				return err
			}
			if data := vb.Get(k); data != nil {
				var v Verdict
				if err := json.Unmarshal(data, &v); err != nil {
					return fmt.Errorf("verdict %d: %w", id, err)
				}
				v.SyncedAt = &now
				heldLabel(tx, k, &v)
				if err := tx.Bucket(bucketHeldLabels).Delete(k); err != nil {
					return err
				}
				updated, err := patchRecord(data, map[string]any{"synced_at": v.SyncedAt, "label": v.Label})
				if err != nil {
					return err
				}
				if err := vb.Put(k, updated); err != nil {
					return err
				}
				if err := addSigned(sb, keyRecordBytes, int64(len(updated)-len(data))); err != nil {
					return err
				}
				if raw := images.Get(k); raw != nil {
					ie, err := decodeImage(raw)
					if err != nil {
						return fmt.Errorf("verdict %d: %w", id, err)
					}
					if s.policy.DeleteSyncedImages {
						if err := dropImage(tx, id, ie); err != nil {
							return err
						}
						remove = append(remove, s.ImagePath(v))
						freed += ie.size
					} else if err := setImageState(tx, id, ie, stateDone); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ack %d verdicts: %w", len(ids), err)
	}
	removeFiles(remove)
	s.imgUsed -= freed
	s.ev.ImagesDeletedSynced += uint64(len(remove))
	return nil
}

// Backlog reports what the outbox holds: count, bytes (records plus kept
// images) and the capture time of the oldest verdict, and the number of
// label entries.
func (s *Store) Backlog() (wire.Backlog, error) {
	var b wire.Backlog
	err := s.view(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketStats)
		b.Count = int(getCounter(sb, keyOutboxCount))
		b.Bytes = int64(getCounter(sb, keyOutboxBytes))
		b.Labels = tx.Bucket(bucketLabels).Stats().KeyN
		if _, raw := tx.Bucket(bucketOutbox).Cursor().First(); raw != nil {
			e, err := decodeOutbox(raw)
			if err != nil {
				return err
			}
			b.Oldest = e.time
		}
		return nil
	})
	if err != nil {
		return wire.Backlog{}, fmt.Errorf("backlog: %w", err)
	}
	return b, nil
}

// update runs fn in a write transaction unless the store is closed.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	return s.write(false, fn)
}

// batch runs fn in bbolt's shared batch transaction (DB.Batch: concurrent
// callers share one fsync'd transaction; fn may run more than once).
func (s *Store) batch(fn func(*bolt.Tx) error) error { return s.write(true, fn) }

// write runs fn in a write transaction on the current file (compaction may swap it, hence
// the lock) and marks the store written.
func (s *Store) write(shared bool, fn func(*bolt.Tx) error) error {
	s.dbMu.RLock()
	var err error
	if shared {
		err = s.db.Batch(fn)
	} else {
		err = s.db.Update(fn)
	}
	s.dbMu.RUnlock()
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	if err == nil {
		s.wrote()
	}
	return err
}

// wrote notes a committed write transaction for the idle test of the
// online compaction.
func (s *Store) wrote() { s.lastWrite.Store(time.Now().UnixNano()) }
