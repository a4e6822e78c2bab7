package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
	"unicode"

	bolt "go.etcd.io/bbolt"

	"github.com/takt-edge/takt/cloudsync/wire"
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
// In one transaction SetLabel queues a label entry (a [wire.LabelRecord],
// uploaded as its own immutable object, also when the verdict was uploaded
// long ago) and updates the record, its outbox entry (if it is still queued)
// and the byte counters; a verdict already synced is not queued again. A
// record in the sealed set that Pending returns keeps its bytes until that
// set is acknowledged (a retried batch must be identical): its new label is
// held beside it, merged by Get and List, and written into the record by Ack.
// With Options.DisableOutbox no label entry is queued.
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
	now := time.Now().UTC()
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
		held := tx.Bucket(bucketHeldLabels)
		current := v.Label
		if h := held.Get(k); h != nil {
			current = string(h)
		}
		if current == label {
			return nil
		}
		if s.outbox {
			if err := queueLabel(tx, &v, label, now); err != nil {
				return err
			}
		}
		if tx.Bucket(bucketSealed).Get(k) != nil {
			// Sealed: the record stays as the uploader read it.
			if label == v.Label {
				return held.Delete(k)
			}
			return held.Put(k, []byte(label))
		}
		v.Label = label
		updated, err := patchRecord(data, map[string]any{"label": label})
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

// queueLabel appends the label entry of v getting label to the label outbox.
func queueLabel(tx *bolt.Tx, v *Verdict, label string, now time.Time) error {
	lb := tx.Bucket(bucketLabels)
	seq, err := lb.NextSequence()
	if err != nil {
		return err
	}
	rec, err := json.Marshal(&wire.LabelRecord{
		Schema: wire.LabelSchema, VerdictID: v.ID, Seq: seq, Station: v.Station, Serial: v.Serial,
		CapturedAt: v.Time.UTC(), Label: label, LabeledAt: now,
	})
	if err != nil {
		return err
	}
	return lb.Put(idKey(seq), rec)
}

// heldLabel applies a label held beside a sealed record to v.
func heldLabel(tx *bolt.Tx, k []byte, v *Verdict) {
	if h := tx.Bucket(bucketHeldLabels).Get(k); h != nil {
		v.Label = string(h)
	}
}

// PendingLabels returns up to n label entries not yet acknowledged, lowest
// sequence first, for the uploader. Entries never change, so nothing is
// sealed: a later call returns the same entries until they are acknowledged.
func (s *Store) PendingLabels(ctx context.Context, n int) ([]wire.Label, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: pending labels limit %d, want > 0", ErrInvalid, n)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []wire.Label
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLabels).Cursor()
		for k, raw := c.First(); k != nil && len(out) < n; k, raw = c.Next() {
			l, err := decodeLabel(k, raw)
			if err != nil {
				return err
			}
			out = append(out, l)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pending labels: %w", err)
	}
	return out, nil
}

func decodeLabel(k, raw []byte) (wire.Label, error) {
	seq := binary.BigEndian.Uint64(k)
	var r wire.LabelRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return wire.Label{}, fmt.Errorf("label entry %d: %w", seq, err)
	}
	if r.Seq != seq {
		return wire.Label{}, fmt.Errorf("label entry %d: holds seq %d", seq, r.Seq)
	}
	return wire.Label{Seq: seq, VerdictID: r.VerdictID, Station: r.Station, Time: r.CapturedAt,
		Record: append([]byte(nil), raw...)}, nil
}

// AckLabels removes label entries once the object store confirmed them.
// Unknown and already acknowledged sequences are ignored. It returns after
// the change is durable.
func (s *Store) AckLabels(ctx context.Context, seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.update(func(tx *bolt.Tx) error {
		lb := tx.Bucket(bucketLabels)
		for _, seq := range seqs {
			if err := lb.Delete(idKey(seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ack %d labels: %w", len(seqs), err)
	}
	return nil
}
