package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// evictStats are the eviction counters, guarded by quotaMu.
type evictStats struct{ Stats }

// victim is an image chosen for eviction.
type victim struct {
	id    uint64
	entry imageEntry
}

// maxPerTx bounds the deletions of one eviction or prune transaction.
const maxPerTx = 4096

// reserve makes room for an image of size bytes and class under the image
// quota, evicting images if it must. It returns false when there is no room
// the policy allows it to make: the image is then not stored.
func (s *Store) reserve(size int64, class byte) (bool, error) {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	quota := int64(s.policy.ImagesMaxBytes)
	if quota <= 0 || s.imgUsed+size <= quota {
		s.imgUsed += size
		return true, nil
	}
	if size <= quota {
		need := s.imgUsed + size - quota
		// Evict a little more than needed so the next commits find room
		// without another eviction transaction.
		slack := quota / 20
		if s.evictSlack >= 0 {
			slack = s.evictSlack
		}
		if err := s.evictForRoom(need, need+slack, class); err != nil {
			return false, err
		}
	}
	if s.imgUsed+size > quota {
		s.ev.ImagesDropped++
		s.degraded(fmt.Sprintf("image quota %d bytes full with images that may not be evicted: new %s image dropped", quota, classNames[class]))
		return false, nil
	}
	s.imgUsed += size
	return true, nil
}

// release gives back a reservation whose image was not committed.
func (s *Store) release(size int64) {
	if size == 0 {
		return
	}
	s.quotaMu.Lock()
	s.imgUsed -= size
	s.quotaMu.Unlock()
}

// evictForRoom evicts images in eviction order (lowest class first; within
// a class synced before unsynced, then oldest first), never of a class above
// maxClass and never unsynced ones the policy protects, until at least target
// bytes are freed. If fewer than need bytes can be freed it evicts nothing.
func (s *Store) evictForRoom(need, target int64, maxClass byte) error {
	var victims []victim
	var total int64
	err := s.view(func(tx *bolt.Tx) error {
		images := tx.Bucket(bucketImages)
		c := tx.Bucket(bucketEvict).Cursor()
		for k, _ := c.First(); k != nil && total < target && len(victims) < maxPerTx; {
			class, state := k[0], k[1]
			if class > maxClass {
				break
			}
			if state == statePending && !s.unsyncedOK[class] {
				k, _ = c.Seek([]byte{class + 1}) // the rest of this class is protected
				continue
			}
			id := binary.BigEndian.Uint64(k[2:])
			e, err := decodeImage(images.Get(idKey(id)))
			if err != nil {
				return fmt.Errorf("image %d: %w", id, err)
			}
			victims = append(victims, victim{id, e})
			total += e.size
			k, _ = c.Next()
		}
		return nil
	})
	if err != nil || total < need {
		return err
	}
	return s.evict(victims)
}

// evict removes victims from the index in one transaction, then their files.
// The caller holds quotaMu.
func (s *Store) evict(victims []victim) error {
	var paths []string
	var freed int64
	err := s.update(func(tx *bolt.Tx) error {
		paths, freed = paths[:0], 0
		vb := tx.Bucket(bucketVerdicts)
		for _, v := range victims {
			if err := dropImage(tx, v.id, v.entry); err != nil {
				return fmt.Errorf("evict image %d: %w", v.id, err)
			}
			paths = append(paths, s.imagePathOf(vb.Get(idKey(v.id))))
			freed += v.entry.size
		}
		return nil
	})
	if err != nil {
		return err
	}
	removeFiles(paths)
	s.imgUsed -= freed
	var unsynced, reject uint64
	for _, v := range victims {
		s.ev.ImagesEvicted++
		s.ev.ImageBytesEvicted += uint64(v.entry.size)
		if v.entry.state == statePending {
			unsynced++
		}
		if v.entry.class == 2 {
			reject++
		}
	}
	s.ev.ImagesEvictedUnsynced += unsynced
	s.ev.ImagesEvictedReject += reject
	if unsynced > 0 {
		s.degraded(fmt.Sprintf("evicted %d images that were not yet uploaded", unsynced))
	}
	s.log.Debug().Int("images", len(victims)).Int64("bytes", freed).Uint64("unsynced", unsynced).Msg("evicted images")
	return nil
}

func (s *Store) degraded(reason string) {
	s.log.Warn().Str("reason", reason).Msg("store degraded")
	if s.onDegraded != nil {
		s.onDegraded(reason)
	}
}

// PruneResult says what one Prune removed.
type PruneResult struct {
	ImagesEvicted int // images past images_max_age
	RecordsPruned int // synced records past records_max_age or over records_max_bytes
}

// Prune applies the age limits and the records quota of the policy as of now:
// it evicts images captured before now-ImagesMaxAge (synced ones, and
// unsynced ones of the classes in EvictUnsynced), removes synced records (and
// any image they still have) captured before now-RecordsMaxAge, and removes
// the oldest synced records while the records exceed RecordsMaxBytes. The
// image quota needs no Prune: Commit enforces it. Run it periodically (the
// agent does, every minute).
func (s *Store) Prune(now time.Time) (PruneResult, error) {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	var res PruneResult
	if age := s.policy.ImagesMaxAge; age > 0 {
		cutoff := now.Add(-age)
		for {
			var victims []victim
			err := s.view(func(tx *bolt.Tx) error {
				c := tx.Bucket(bucketImages).Cursor()
				for k, raw := c.First(); k != nil && len(victims) < maxPerTx; k, raw = c.Next() {
					e, err := decodeImage(raw)
					if err != nil {
						return err
					}
					if !e.time.Before(cutoff) {
						break // ids follow capture time closely enough
					}
					if e.state == stateDone || s.unsyncedOK[e.class] {
						victims = append(victims, victim{binary.BigEndian.Uint64(k), e})
					}
				}
				return nil
			})
			if err == nil && len(victims) > 0 {
				err = s.evict(victims)
			}
			if err != nil {
				return res, fmt.Errorf("prune images: %w", err)
			}
			res.ImagesEvicted += len(victims)
			if len(victims) < maxPerTx {
				break
			}
		}
	}
	var cutoff time.Time
	if s.policy.RecordsMaxAge > 0 {
		cutoff = now.Add(-s.policy.RecordsMaxAge)
	}
	quota := int64(s.policy.RecordsMaxBytes)
	for {
		n, over, err := s.pruneRecords(cutoff, quota)
		res.RecordsPruned += n
		if err != nil {
			return res, fmt.Errorf("prune records: %w", err)
		}
		if n < maxPerTx {
			if over > 0 {
				s.degraded(fmt.Sprintf("records exceed store.records_max_bytes by %d bytes and none left is synced", over))
			}
			break
		}
	}
	return res, nil
}

// pruneRecords removes up to maxPerTx synced records, oldest first, that are
// older than cutoff or while the records exceed quota. It returns how many it
// removed and by how much the records still exceed the quota.
func (s *Store) pruneRecords(cutoff time.Time, quota int64) (n int, over int64, err error) {
	if cutoff.IsZero() && quota <= 0 {
		return 0, 0, nil
	}
	var paths []string
	var freed int64
	err = s.update(func(tx *bolt.Tx) error {
		n, over, paths, freed = 0, 0, paths[:0], 0
		vb, ob, images, sb := tx.Bucket(bucketVerdicts), tx.Bucket(bucketOutbox), tx.Bucket(bucketImages), tx.Bucket(bucketStats)
		used := int64(getCounter(sb, keyRecordBytes))
		var dels [][]byte
		c := vb.Cursor()
		for k, data := c.First(); k != nil && n < maxPerTx; k, data = c.Next() {
			overQuota := quota > 0 && used > quota
			if !overQuota {
				var t struct {
					Time time.Time `json:"time"`
				}
				if cutoff.IsZero() || json.Unmarshal(data, &t) != nil || !t.Time.Before(cutoff) {
					break
				}
			}
			if ob.Get(k) != nil {
				continue // not synced: never removed
			}
			if raw := images.Get(k); raw != nil {
				e, err := decodeImage(raw)
				if err != nil {
					return err
				}
				if err := dropImage(tx, binary.BigEndian.Uint64(k), e); err != nil {
					return err
				}
				paths = append(paths, s.imagePathOf(data))
				freed += e.size
			}
			used -= recordCost(len(data))
			dels = append(dels, append([]byte(nil), k...))
			n++
		}
		for _, k := range dels {
			if err := vb.Delete(k); err != nil {
				return err
			}
		}
		if quota > 0 && used > quota {
			over = used - quota
		}
		return addSigned(sb, keyRecordBytes, used-int64(getCounter(sb, keyRecordBytes)))
	})
	if err != nil {
		return 0, 0, err
	}
	removeFiles(paths)
	s.imgUsed -= freed
	s.ev.RecordsPruned += uint64(n)
	return n, over, nil
}
