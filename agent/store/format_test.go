package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// withSteps adds format steps for one test (tests of this package do not run in parallel).
func withSteps(t *testing.T, steps ...formatStep) {
	t.Helper()
	saved := slices.Clone(formatSteps)
	formatSteps = append(formatSteps, steps...)
	t.Cleanup(func() { formatSteps = saved })
}

// rawDB runs fn on the store's takt.db while no Store holds it.
func rawDB(t *testing.T, dir string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o640, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func commitFormatN(t *testing.T, s *Store, n int, serial string) []uint64 {
	t.Helper()
	var ids []uint64
	for i := range n {
		v := &Verdict{Station: "st", CameraID: "cam0", Serial: serial + string(rune('a'+i)), Time: time.Now(), Decision: Pass}
		if err := s.Commit(context.Background(), v, &Image{Data: []byte("img"), Ext: "jpg"}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
	}
	return ids
}

func reopen(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A new store and a store from before formats were recorded both end at CurrentFormat,
// and the old store keeps every record.
func TestFormatRecordedAndPreFormatStoreMigrated(t *testing.T) {
	dir := t.TempDir()
	s := reopen(t, dir)
	fi, err := s.Format()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Format != CurrentFormat() || fi.MinReader != 1 || fi.Reader != CurrentFormat() || uint64(len(fi.History)) != CurrentFormat() {
		t.Fatalf("new store format %+v, want format %d, min_reader 1, one history entry per step", fi, CurrentFormat())
	}
	ids := commitFormatN(t, s, 5, "p")
	s.Close()
	// What an agent from before formats leaves: no meta bucket.
	rawDB(t, dir, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketMeta) })
	s = reopen(t, dir)
	if fi, _ = s.Format(); fi.Format != CurrentFormat() || fi.History[0].From != 0 {
		t.Fatalf("pre-format store after Open: %+v, want format %d migrated from 0", fi, CurrentFormat())
	}
	for _, id := range ids {
		if _, err := s.Get(id); err != nil {
			t.Errorf("verdict %d after migration: %v", id, err)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

// A real migration step runs once, on Open, over the records already stored: it indexes
// them by serial. Reopening does not run it again.
func TestFormatStepMigratesExistingRecords(t *testing.T) {
	dir := t.TempDir()
	s := reopen(t, dir)
	ids := commitFormatN(t, s, 4, "serial-")
	s.Close()

	bySerial := []byte("by_serial")
	runs := 0
	next := CurrentFormat() + 1
	withSteps(t, formatStep{to: next, minReader: CurrentFormat(), name: "index verdicts by serial", apply: func(tx *bolt.Tx) error {
		runs++
		idx, err := tx.CreateBucket(bySerial)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketVerdicts).ForEach(func(k, v []byte) error {
			var rec Verdict
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			return idx.Put(append([]byte(rec.Serial+"\x00"), k...), nil)
		})
	}})
	s = reopen(t, dir)
	fi, _ := s.Format()
	if fi.Format != next || fi.MinReader != next-1 || fi.History[len(fi.History)-1].Step != "index verdicts by serial" {
		t.Fatalf("format after Open %+v, want %d (min_reader %d) with the step in the history", fi, next, next-1)
	}
	var indexed []uint64
	s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bySerial).ForEach(func(k, _ []byte) error {
			indexed = append(indexed, binary.BigEndian.Uint64(k[len(k)-8:]))
			return nil
		})
	})
	if !slices.Equal(indexed, ids) {
		t.Errorf("serial index holds %v, want every record %v", indexed, ids)
	}
	s.Close()
	reopen(t, dir)
	if runs != 1 {
		t.Errorf("the step ran %d times over two Opens, want 1", runs)
	}
}

// A step that fails leaves the store as it was: the migration is one transaction.
func TestFormatStepFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s := reopen(t, dir)
	commitFormatN(t, s, 2, "p")
	s.Close()
	next := CurrentFormat() + 1
	withSteps(t, formatStep{to: next, minReader: 1, name: "half done", apply: func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("half")); err != nil {
			return err
		}
		return errors.New("disk says no")
	}})
	_, err := Open(dir, Options{})
	if want := fmt.Sprintf("migrate store format %d -> %d (half done): disk says no", next-1, next); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open with a failing step: %v, want the step named", err)
	}
	formatSteps = formatSteps[:len(formatSteps)-1]
	s = reopen(t, dir)
	fi, _ := s.Format()
	var half bool
	s.view(func(tx *bolt.Tx) error { half = tx.Bucket([]byte("half")) != nil; return nil })
	if fi.Format != CurrentFormat() || half {
		t.Errorf("after a failed step: format %d, bucket of the step present %v; want %d and absent", fi.Format, half, CurrentFormat())
	}
}

// A store a newer agent migrated: readable (min_reader at or below this format) opens and
// keeps its format and records; unreadable (min_reader above) is refused with ErrFormat and
// left untouched.
func TestFormatNewerStore(t *testing.T) {
	for _, c := range []struct {
		name              string
		format, minReader uint64
		wantErr           bool
	}{
		{"newer, readable", CurrentFormat() + 2, CurrentFormat(), false},
		{"newer, unreadable", CurrentFormat() + 2, CurrentFormat() + 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := reopen(t, dir)
			ids := commitFormatN(t, s, 3, "p")
			s.Close()
			rawDB(t, dir, func(tx *bolt.Tx) error {
				mb := tx.Bucket(bucketMeta)
				mb.Put(keyFormat, be64(c.format))
				return mb.Put(keyMinReader, be64(c.minReader))
			})
			before, _ := os.ReadFile(filepath.Join(dir, dbFile))
			s, err := Open(dir, Options{})
			if c.wantErr {
				if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "needs a reader of format") {
					t.Fatalf("Open: %v, want ErrFormat naming the formats", err)
				}
				after, _ := os.ReadFile(filepath.Join(dir, dbFile))
				if string(after) != string(before) {
					t.Errorf("a refused store was changed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			fi, _ := s.Format()
			if fi.Format != c.format || fi.MinReader != c.minReader {
				t.Errorf("format %+v, want %d/%d kept (never lowered)", fi, c.format, c.minReader)
			}
			more := commitFormatN(t, s, 2, "q")
			if err := s.Ack(context.Background(), append(ids, more...)); err != nil {
				t.Fatal(err)
			}
			if n, _ := s.Counts(); n.Total != 5 {
				t.Errorf("counts %+v, want 5 verdicts", n)
			}
		})
	}
}
