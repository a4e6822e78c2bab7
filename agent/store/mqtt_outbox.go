package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The MQTT outbox: alert and verdict messages waiting for the broker's PUBACK.
// It is separate from the upload outbox (bucketOutbox) and created on first use.
var (
	bucketMQTT     = []byte("mqtt_outbox") // 8-byte seq -> mqttEntry (JSON)
	bucketMQTTMeta = []byte("mqtt_meta")   // counters and the verdict cursor

	keyMQTTCount  = []byte("count")
	keyMQTTCursor = []byte("verdict_cursor")
)

// MQTT message kinds, in the order a full outbox drops them.
const (
	MQTTVerdict = "verdict"
	MQTTAlert   = "alert"
)

// MQTTMessage is one message in the MQTT outbox.
type MQTTMessage struct {
	// Seq is the message's key in the outbox, set by EnqueueMQTT; AckMQTT
	// takes it.
	Seq uint64 `json:"-"`
	// ID is the message's unique id, the one in its payload that consumers
	// de-duplicate by.
	ID       string `json:"id"`
	Kind     string `json:"kind"` // MQTTVerdict or MQTTAlert
	Topic    string `json:"topic"`
	Payload  []byte `json:"payload"`
	Retained bool   `json:"retained,omitempty"`
}

// MQTTEnqueue is one EnqueueMQTT call.
type MQTTEnqueue struct {
	Messages []MQTTMessage
	// Cursor, when > 0, is stored as the MQTT verdict cursor (the highest
	// verdict id whose messages are queued) in the same transaction.
	Cursor uint64
	// Max bounds the outbox (0: no bound). Beyond it the oldest verdict
	// messages are dropped first, then the oldest alerts.
	Max int
}

// EnqueueMQTT adds messages to the MQTT outbox and returns after they are
// durable, with the number of older messages dropped to stay within Max.
// Concurrent calls share transactions (bbolt's Batch). Errors: ErrInvalid
// (nothing written), ErrClosed, ctx's error, or a transaction error.
func (s *Store) EnqueueMQTT(ctx context.Context, e MQTTEnqueue) (dropped int, err error) {
	for _, m := range e.Messages {
		if m.ID == "" || m.Topic == "" || (m.Kind != MQTTVerdict && m.Kind != MQTTAlert) {
			return 0, fmt.Errorf("%w: mqtt message id %q kind %q topic %q: want an id, a topic and kind verdict or alert", ErrInvalid, m.ID, m.Kind, m.Topic)
		}
	}
	if e.Max < 0 {
		return 0, fmt.Errorf("%w: mqtt outbox max %d, want >= 0", ErrInvalid, e.Max)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if s.isClosed() {
		return 0, ErrClosed
	}
	err = s.batch(func(tx *bolt.Tx) error {
		dropped = 0
		b, meta, err := mqttBuckets(tx)
		if err != nil {
			return err
		}
		count := getCounter(meta, keyMQTTCount)
		for _, m := range e.Messages {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			data, err := json.Marshal(&m)
			if err != nil {
				return err
			}
			if err := b.Put(idKey(seq), data); err != nil {
				return err
			}
			count++
		}
		if e.Max > 0 && count > uint64(e.Max) {
			n, err := dropOldest(b, count-uint64(e.Max))
			if err != nil {
				return err
			}
			count -= uint64(n)
			dropped = n
		}
		if e.Cursor > getCounter(meta, keyMQTTCursor) {
			if err := putCounter(meta, keyMQTTCursor, e.Cursor); err != nil {
				return err
			}
		}
		return putCounter(meta, keyMQTTCount, count)
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	if err != nil {
		return 0, fmt.Errorf("enqueue mqtt messages: %w", err)
	}
	return dropped, nil
}

// dropOldest deletes n entries: the oldest verdict messages, then the oldest alerts.
func dropOldest(b *bolt.Bucket, n uint64) (int, error) {
	var del [][]byte
	for _, kind := range []string{MQTTVerdict, MQTTAlert} {
		c := b.Cursor()
		for k, v := c.First(); k != nil && uint64(len(del)) < n; k, v = c.Next() {
			var m MQTTMessage
			if err := json.Unmarshal(v, &m); err == nil && m.Kind != kind {
				continue // an unreadable entry goes with the verdicts
			} else if err != nil && kind != MQTTVerdict {
				continue
			}
			del = append(del, append([]byte(nil), k...))
		}
	}
	for _, k := range del {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(del), nil
}

// PendingMQTT returns up to n messages of the MQTT outbox, oldest first. A
// message stays there, and is returned again, until AckMQTT removes it.
func (s *Store) PendingMQTT(n int) ([]MQTTMessage, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: pending mqtt n %d, want > 0", ErrInvalid, n)
	}
	var out []MQTTMessage
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMQTT)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			var m MQTTMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("mqtt outbox entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			m.Seq = binary.BigEndian.Uint64(k)
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pending mqtt messages: %w", err)
	}
	return out, nil
}

// AckMQTT removes messages the broker acknowledged and returns after the
// change is durable. Unknown sequence numbers are ignored.
func (s *Store) AckMQTT(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	if s.isClosed() {
		return ErrClosed
	}
	err := s.batch(func(tx *bolt.Tx) error {
		b, meta, err := mqttBuckets(tx)
		if err != nil {
			return err
		}
		count := getCounter(meta, keyMQTTCount)
		for _, seq := range seqs {
			k := idKey(seq)
			if b.Get(k) == nil {
				continue
			}
			if err := b.Delete(k); err != nil {
				return err
			}
			if count > 0 {
				count--
			}
		}
		return putCounter(meta, keyMQTTCount, count)
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	if err != nil {
		return fmt.Errorf("ack mqtt messages: %w", err)
	}
	return nil
}

// MQTTBacklog returns the number of messages in the MQTT outbox and the
// verdict cursor (0 when none was ever stored).
func (s *Store) MQTTBacklog() (count int, cursor uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMQTTMeta); meta != nil {
			count, cursor = int(getCounter(meta, keyMQTTCount)), getCounter(meta, keyMQTTCursor)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("mqtt backlog: %w", err)
	}
	return count, cursor, nil
}

// LastID returns the highest verdict id handed out so far (0 for an empty store).
func (s *Store) LastID() uint64 { return s.lastID.Load() }

func mqttBuckets(tx *bolt.Tx) (*bolt.Bucket, *bolt.Bucket, error) {
	b, err := tx.CreateBucketIfNotExists(bucketMQTT)
	if err != nil {
		return nil, nil, err
	}
	meta, err := tx.CreateBucketIfNotExists(bucketMQTTMeta)
	if err != nil {
		return nil, nil, err
	}
	return b, meta, nil
}

func putCounter(b *bolt.Bucket, key []byte, v uint64) error {
	buf := make([]byte, 8)
	binary.BigEndian.PutUint64(buf, v)
	return b.Put(key, buf)
}
