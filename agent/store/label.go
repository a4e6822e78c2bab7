package store

import (
	"context"
	"encoding/json"
	"fmt"
	"unicode"

	bolt "go.etcd.io/bbolt"
)

// MaxLabelLen is the longest operator label SetLabel accepts, in bytes.
const MaxLabelLen = 64

// SetLabel sets the operator label of verdict id ("" clears it) and returns
// after the change is durable. The store does not judge the label's meaning
// (the agent does); it must be at most MaxLabelLen bytes of printable
// characters. Errors: ErrInvalid (nothing written), ErrNotFound, ErrClosed,
// ctx's error, or a transaction error. Setting the label a verdict already
// has writes nothing.
//
// The record, its outbox entry (if it is still queued) and the byte counters
// change in one transaction; a verdict already synced is not queued again.
func (s *Store) SetLabel(ctx context.Context, id uint64, label string) error {
	if len(label) > MaxLabelLen {
		return fmt.Errorf("%w: label of %d bytes, want at most %d", ErrInvalid, len(label), MaxLabelLen)
	}
	for _, r := range label {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: label %q has a character that is not printable", ErrInvalid, label)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.update(func(tx *bolt.Tx) error {
		k := idKey(id)
		vb := tx.Bucket(bucketVerdicts)
		data := vb.Get(k)
		if data == nil {
			return ErrNotFound
		}
		var v Verdict
		if err := json.Unmarshal(data, &v); err != nil {
			return err
		}
		if v.Label == label {
			return nil
		}
		v.Label = label
		updated, err := json.Marshal(&v)
		if err != nil {
			return err
		}
		if err := vb.Put(k, updated); err != nil {
			return err
		}
		delta := int64(len(updated) - len(data))
		sb := tx.Bucket(bucketStats)
		if err := addSigned(sb, keyRecordBytes, delta); err != nil {
			return err
		}
		ob := tx.Bucket(bucketOutbox)
		if raw := ob.Get(k); raw != nil {
			e, err := decodeOutbox(raw)
			if err != nil {
				return err
			}
			e.recBytes += delta
			if err := ob.Put(k, e.encode()); err != nil {
				return err
			}
			if err := addSigned(sb, keyOutboxBytes, delta); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("label verdict %d: %w", id, err)
	}
	return nil
}
