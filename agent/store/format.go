package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The store's format version, kept in the meta bucket, works like SQLite's file format
// read/write version numbers: "format" says which migration steps a store has had;
// "min_reader" is the oldest format a reader must understand to open it. A step that only
// adds (a bucket, a record field older readers ignore) keeps min_reader; a step that changes
// what older readers rely on raises it, and older agents then refuse the store with
// ErrFormat instead of misreading it.
//
// Rollbacks: the firmware updater keeps the previous release in the other slot, and a
// rollback starts it on the store the newer agent wrote. A release must therefore keep
// min_reader at or below the format of the release before it (expand, then contract one
// release later), so that the previous release still opens every store the new one wrote.

var (
	bucketMeta     = []byte("meta")
	keyFormat      = []byte("format")     // 8-byte big-endian
	keyMinReader   = []byte("min_reader") // 8-byte big-endian
	keyFormatSteps = []byte("history")    // JSON []FormatChange, the migrations this store had
)

// ErrFormat: the store was written by a newer agent in a format this one cannot read (its
// min_reader is above this package's format); nothing was changed.
var ErrFormat = errors.New("store format is newer than this agent reads")

// formatStep migrates a store from format to-1 to format to.
type formatStep struct {
	to uint64
	// minReader is the oldest format that still reads a store after this step.
	minReader uint64
	name      string
	// apply changes the store inside the migration's transaction; nil for a step that
	// only records the format.
	apply func(tx *bolt.Tx) error
}

// formatSteps are every migration, in order; formatSteps[i].to == i+1. Stores created
// before formats were recorded have no meta bucket and count as format 0: step 1 has
// nothing to change in them, it records the format.
var formatSteps = []formatStep{
	{to: 1, minReader: 1, name: "record format and min_reader in meta"},
}

// CurrentFormat is the store format this package writes: a store opened by it is migrated
// to this format.
func CurrentFormat() uint64 { return formatSteps[len(formatSteps)-1].to }

// FormatInfo is a store's format, as [Store.Format] reports it.
type FormatInfo struct {
	// Format is the store's format; it is above Reader when a newer agent migrated the store
	// in a way this one can still read.
	Format uint64 `json:"format"`
	// MinReader is the oldest format that can open the store.
	MinReader uint64 `json:"min_reader"`
	// Reader is this package's format (CurrentFormat).
	Reader uint64 `json:"reader"`
	// History lists the migrations the store had, oldest first.
	History []FormatChange `json:"history,omitempty"`
}

// FormatChange is one migration a store had.
type FormatChange struct {
	From uint64    `json:"from"`
	To   uint64    `json:"to"`
	Step string    `json:"step"`
	Time time.Time `json:"time"`
}

// readFormat reads the meta bucket (zero values when there is none).
func readFormat(tx *bolt.Tx) (FormatInfo, error) {
	fi := FormatInfo{Reader: CurrentFormat()}
	mb := tx.Bucket(bucketMeta)
	if mb == nil {
		return fi, nil
	}
	fi.Format, fi.MinReader = getCounter(mb, keyFormat), getCounter(mb, keyMinReader)
	if h := mb.Get(keyFormatSteps); h != nil {
		if err := json.Unmarshal(h, &fi.History); err != nil {
			return fi, fmt.Errorf("store meta history: %w", err)
		}
	}
	return fi, nil
}

// checkFormat refuses a store this package cannot read. It runs first in Open's
// transaction, before anything is written.
func checkFormat(tx *bolt.Tx) (FormatInfo, error) {
	fi, err := readFormat(tx)
	if err != nil {
		return fi, err
	}
	if fi.MinReader > fi.Reader {
		return fi, fmt.Errorf("%w: the store has format %d and needs a reader of format %d or later; this agent reads format %d "+
			"(a newer agent migrated it: run that release again)", ErrFormat, fi.Format, fi.MinReader, fi.Reader)
	}
	return fi, nil
}

// migrate applies the steps above the store's format, in the caller's transaction (Open's),
// so a store is either migrated completely or not at all. A store of a newer, readable
// format is left as it is: the format is never lowered.
func migrate(tx *bolt.Tx, fi FormatInfo, now time.Time) (FormatInfo, error) {
	if fi.Format >= CurrentFormat() {
		return fi, nil
	}
	mb, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fi, err
	}
	for _, step := range formatSteps {
		if step.to <= fi.Format {
			continue
		}
		if step.apply != nil {
			if err := step.apply(tx); err != nil {
				return fi, fmt.Errorf("migrate store format %d -> %d (%s): %w", step.to-1, step.to, step.name, err)
			}
		}
		fi.History = append(fi.History, FormatChange{From: fi.Format, To: step.to, Step: step.name, Time: now.UTC()})
		fi.Format, fi.MinReader = step.to, max(fi.MinReader, step.minReader)
	}
	hist, err := json.Marshal(fi.History)
	if err != nil {
		return fi, err
	}
	for k, v := range map[string][]byte{string(keyFormat): be64(fi.Format), string(keyMinReader): be64(fi.MinReader), string(keyFormatSteps): hist} {
		if err := mb.Put([]byte(k), v); err != nil {
			return fi, err
		}
	}
	return fi, nil
}

func be64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// Format returns the store's format, its min_reader and its migrations.
func (s *Store) Format() (FormatInfo, error) {
	var fi FormatInfo
	err := s.view(func(tx *bolt.Tx) (err error) {
		fi, err = readFormat(tx)
		return err
	})
	if err != nil {
		return FormatInfo{}, fmt.Errorf("read store format: %w", err)
	}
	return fi, nil
}

// CurrentMinReader is the min_reader of a store this package migrated: the oldest format
// that still opens it.
func CurrentMinReader() uint64 {
	var mr uint64
	for _, s := range formatSteps {
		mr = max(mr, s.minReader)
	}
	return mr
}
