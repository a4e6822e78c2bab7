package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Online compaction. bbolt reuses the pages a transaction frees but never
// gives them back to the file system, so a takt.db that once held a large
// backlog keeps its size. CompactOnline rewrites the file while the store
// stays open:
//
//  1. Copy: with the store's lock held shared (commits, acks and reads go
//     on), bolt.Compact copies one read transaction's snapshot of every
//     bucket into a temp file in the store folder (takt.db.compact-*),
//     without per-transaction fsyncs, then fsyncs it once. The snapshot's
//     transaction id is noted.
//  2. Swap: the lock is taken exclusively: new transactions (commits, reads)
//     wait, running ones finish. If any write transaction committed since
//     the snapshot, the copy is stale: it is deleted and the compaction is
//     abandoned (the next idle period tries again); nothing waits on a
//     copy. Otherwise the copy holds exactly what takt.db holds. The copy,
//     already open (so its file lock is ours), is renamed over takt.db, the
//     folder is fsync'd, and the store continues on the copy: waiting commits
//     run on the new file. Then the old file is closed.
//
// A crash at any step leaves a complete takt.db: before the rename it is the
// old file (the copy is a leftover that Open removes); after it, the copy,
// complete and fsync'd before the rename, with the same content, since no
// write ran between the snapshot and the rename. The pause the commits see is
// step 2 only: a rename and a folder fsync, measured in Stats.CompactPause*.
// The old file is closed (and its blocks freed: it is unlinked) after the
// lock is released: with the lock held, freeing a large file's blocks would
// lengthen the pause.
//
// During step 1 a long read transaction is open: bbolt cannot reuse pages
// freed meanwhile, and a commit that must grow the memory map waits for the
// copy to end. With the free space that makes a compaction due (half the
// file, by default) neither happens in practice.

const (
	compactPrefix = dbFile + ".compact-" // temp files of both compactions; Open removes leftovers
	compactTxMax  = 64 << 20             // bytes per transaction of the copy (bounds its memory)
)

// compactStats are the online compaction counters.
type compactStats struct {
	mu                  sync.Mutex
	done, abandoned     uint64
	reclaimed           int64
	pauseLast, pauseMax time.Duration
}

func (c *compactStats) read(st *Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Compactions, st.CompactionsAbandoned = c.done, c.abandoned
	st.CompactedBytes = c.reclaimed
	st.CompactPauseLast, st.CompactPauseMax = c.pauseLast, c.pauseMax
}

// CompactResult says what one online compaction did.
type CompactResult struct {
	// Compacted is true when takt.db was replaced by its compacted copy.
	Compacted bool
	// Abandoned is true when a write transaction committed during the copy:
	// the copy was stale and was deleted; nothing changed.
	Abandoned bool
	// Skipped says why not, when Compacted is false: the policy did not call
	// for it (not idle, too little free space) or the store was written
	// during the copy.
	Skipped string
	// Before and After are the sizes of takt.db (After only when Compacted).
	Before, After int64
	// Free is the free space bbolt reported before (bytes of free pages).
	Free int64
	// Copy is how long the copy took; commits went on meanwhile.
	Copy time.Duration
	// Pause is how long transactions (commits, reads) waited for the swap.
	Pause time.Duration
}

// FreeSpace returns the bytes of free pages in takt.db (pages bbolt reuses
// but never returns to the file system) and the file's size.
func (s *Store) FreeSpace() (free, size int64, err error) {
	if s.isClosed() {
		return 0, 0, ErrClosed
	}
	s.dbMu.RLock()
	free = freeBytes(s.db)
	fi, err := os.Stat(filepath.Join(s.dir, dbFile))
	s.dbMu.RUnlock()
	if err != nil {
		return 0, 0, fmt.Errorf("free space: %w", err)
	}
	return free, fi.Size(), nil
}

// freeBytes is the size of db's free and pending pages. (Stats.FreeAlloc
// stays 0 until the first write transaction after Open.)
func freeBytes(db *bolt.DB) int64 {
	st := db.Stats()
	return int64(st.FreePageN+st.PendingPageN) * int64(db.Info().PageSize)
}

// MaybeCompact compacts takt.db online (CompactOnline) when the policy calls
// for it as of now: store.compact_idle > 0, no write transaction for that
// long, and free pages of at least store.compact_min_free bytes and
// store.compact_min_free_ratio of the file. Otherwise it returns a result
// with Skipped set. Call it periodically (the agent does).
func (s *Store) MaybeCompact(now time.Time) (CompactResult, error) {
	p := s.policy
	if p.CompactIdle <= 0 {
		return CompactResult{Skipped: "online compaction is off (store.compact_idle 0)"}, nil
	}
	if idle := now.Sub(time.Unix(0, s.lastWrite.Load())); idle < p.CompactIdle {
		return CompactResult{Skipped: fmt.Sprintf("written %v ago, below store.compact_idle %v", idle.Round(time.Millisecond), p.CompactIdle)}, nil
	}
	free, size, err := s.FreeSpace()
	if err != nil {
		return CompactResult{}, err
	}
	res := CompactResult{Before: size, Free: free}
	if free < int64(p.CompactMinFree) || float64(free) < p.CompactMinFreeRatio*float64(size) {
		res.Skipped = fmt.Sprintf("%d of %d bytes free, below store.compact_min_free %d or store.compact_min_free_ratio %g",
			free, size, int64(p.CompactMinFree), p.CompactMinFreeRatio)
		return res, nil
	}
	return s.CompactOnline()
}

// CompactOnline rewrites takt.db without its free pages while the store is
// open, whatever the policy (see the comment at the top of compact.go). It
// returns Abandoned (Skipped "written during the copy") when a write
// transaction committed while it copied: nothing changed then. Commits and
// reads issued during the swap wait for it (Pause) and never fail because of
// it. One compaction runs at a time; Close waits for a running copy.
func (s *Store) CompactOnline() (res CompactResult, err error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	path := filepath.Join(s.dir, dbFile)

	// Step 1: copy a snapshot, transactions go on.
	s.dbMu.RLock()
	if s.isClosed() {
		s.dbMu.RUnlock()
		return res, ErrClosed
	}
	dst, tmp, snap, err := s.copyDB()
	s.dbMu.RUnlock()
	if err != nil {
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	res.Copy = time.Since(snap.start)
	res.Before, res.Free = snap.size, snap.free
	discard := func() {
		dst.Close()
		os.Remove(tmp)
	}
	s.hook("copied")

	// Step 2: swap, transactions wait.
	waitFrom := time.Now()
	s.dbMu.Lock()
	unlock := func() {
		s.dbMu.Unlock()
		res.Pause = time.Since(waitFrom)
	}
	s.hook("locked")
	if s.isClosed() {
		unlock()
		discard()
		return res, ErrClosed
	}
	var txid int
	if err := s.db.View(func(tx *bolt.Tx) error { txid = tx.ID(); return nil }); err != nil {
		unlock()
		discard()
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	if txid != snap.txid {
		unlock()
		discard()
		s.cst.mu.Lock()
		s.cst.abandoned++
		s.cst.mu.Unlock()
		res.Abandoned, res.Skipped = true, "written during the copy"
		return res, nil
	}
	dst.NoSync = s.boltOpts.NoSync // the copy was written without per-transaction fsyncs
	if err := os.Rename(tmp, path); err != nil {
		unlock()
		discard()
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	s.hook("renamed")
	// From here takt.db is the copy: the store continues on it whatever
	// fails. The folder's fsync makes the rename durable before any commit
	// on the copy can return.
	syncErr := syncDirs(s.dir)
	old := s.db
	s.db = dst
	s.hook("swapped")
	unlock()
	// No transaction runs on the old file any more (all ran under the lock
	// we held). Closing it frees its blocks (it is unlinked), which takes a
	// while for a large file: outside the pause.
	closeErr := old.Close()

	if fi, err := os.Stat(path); err == nil {
		res.After = fi.Size()
	}
	res.Compacted = true
	s.cst.mu.Lock()
	s.cst.done++
	s.cst.reclaimed += res.Before - res.After
	s.cst.pauseLast = res.Pause
	s.cst.pauseMax = max(s.cst.pauseMax, res.Pause)
	s.cst.mu.Unlock()
	if closeErr != nil {
		s.log.Warn().Err(closeErr).Msg("compaction: closing the old database file failed")
	}
	if syncErr != nil {
		return res, fmt.Errorf("compact %s: the compacted file is in use but its rename may not be durable: %w", path, syncErr)
	}
	return res, nil
}

// snapshot describes the state a compaction copied.
type snapshot struct {
	txid       int // transaction id of the copied state
	size, free int64
	start      time.Time
}

// copyDB copies the store's current state into a new, fsync'd bbolt file
// next to takt.db and returns it open (its file lock held), with its path.
// The caller holds dbMu shared.
func (s *Store) copyDB() (dst *bolt.DB, tmp string, snap snapshot, err error) {
	snap.start = time.Now()
	snap.free = freeBytes(s.db)
	if err := s.db.View(func(tx *bolt.Tx) error { snap.txid = tx.ID(); return nil }); err != nil {
		return nil, "", snap, err
	}
	if fi, err := os.Stat(filepath.Join(s.dir, dbFile)); err == nil {
		snap.size = fi.Size()
	}
	f, err := os.CreateTemp(s.dir, compactPrefix+"*")
	if err != nil {
		return nil, "", snap, err
	}
	tmp = f.Name()
	err = f.Chmod(0o640) // takt.db's mode (CreateTemp makes 0600)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return nil, "", snap, err
	}
	opts := s.boltOpts
	opts.NoSync = true // one fsync at the end instead of one per copy transaction
	dst, err = bolt.Open(tmp, 0o640, &opts)
	if err != nil {
		os.Remove(tmp)
		return nil, "", snap, err
	}
	// bolt.Compact reads src in one read transaction; if a write committed
	// between the View above and that one, the swap sees a newer id and
	// abandons the copy.
	if err = bolt.Compact(dst, s.db, compactTxMax); err == nil {
		err = dst.Sync()
	}
	if err != nil {
		dst.Close()
		os.Remove(tmp)
		return nil, "", snap, err
	}
	return dst, tmp, snap, nil
}

func (s *Store) hook(step string) {
	if s.hookCompact != nil {
		s.hookCompact(step)
	}
}

// removeCompactTemps removes compaction copies a crash left in dir. The
// caller holds takt.db's file lock.
func removeCompactTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), compactPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove compaction leftover: %w", err)
			}
		}
	}
	return nil
}
