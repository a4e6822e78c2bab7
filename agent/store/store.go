package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors callers may branch on (with errors.Is).
var (
	// ErrNotFound: no verdict with that id.
	ErrNotFound = errors.New("verdict not found")
	// ErrClosed: the store was closed; nothing was written.
	ErrClosed = errors.New("store closed")
	// ErrInvalid: the verdict, image or argument was rejected; nothing was written.
	ErrInvalid = errors.New("invalid store input")
	// ErrLocked: another process (or another Open in this one) holds the store.
	ErrLocked = errors.New("store is locked by another process")
)

// DefaultOpenTimeout is how long Open waits for the file lock when
// Options.OpenTimeout is zero.
const DefaultOpenTimeout = 5 * time.Second

const (
	dbFile    = "takt.db"
	imagesDir = "images"
	tmpPrefix = ".tmp-" // image temp files; Open removes leftovers
)

var (
	bucketVerdicts = []byte("verdicts")
	bucketStats    = []byte("stats")
	bucketOutbox   = []byte("outbox") // id -> outboxEntry: verdicts not yet acknowledged by the uploader
	bucketSealed   = []byte("sealed") // id -> empty: the set Pending returns until it is acknowledged
	bucketImages   = []byte("images") // id -> imageEntry: every image file the store holds
	bucketEvict    = []byte("evict")  // class, state, id -> empty: eviction order of the images
	// id -> label: the latest label of a sealed record, written into it by Ack
	bucketHeldLabels = []byte("label_held")
	bucketLabels     = []byte("labels") // seq -> wire.LabelRecord JSON: label entries not yet acknowledged

	keyTotal       = []byte("total")
	keyPass        = []byte("pass")
	keyFail        = []byte("fail")
	keyNoDecision  = []byte("no_decision")
	keyOutboxCount = []byte("outbox_count")
	keyOutboxBytes = []byte("outbox_bytes")
	keyImageBytes  = []byte("image_bytes")
	keyRecordBytes = []byte("record_bytes")
	keyIndexed     = []byte("index_v1") // set once the outbox and image index cover every record
)

// Options configure Open.
type Options struct {
	// OpenTimeout bounds the wait for the bbolt file lock held by another
	// process. Zero means DefaultOpenTimeout; negative values are rejected.
	OpenTimeout time.Duration
	// Logger receives the store's few log lines (component=store). The zero
	// value logs nothing.
	Logger zerolog.Logger
	// Policy bounds the disk the store uses (quotas, ages, eviction). The
	// zero value keeps everything; see DefaultPolicy. Open validates it.
	Policy Policy
	// DisableOutbox stops queueing new verdicts for upload (a station without
	// sync): their images count as synced for eviction, their records may be
	// pruned. Verdicts queued earlier stay queued.
	DisableOutbox bool
	// OnDegraded, when set, is called (from the goroutine that noticed) when
	// the store gives something up to stay within its policy: an unsynced
	// image evicted, a new image dropped, unsynced records over the records
	// quota. It must not block or call back into the Store.
	OnDegraded func(reason string)
}

// Store is the durable verdict store. Its methods are safe for concurrent use.
type Store struct {
	dir string
	log zerolog.Logger

	// dbMu guards db: every transaction holds it shared; the online
	// compaction's swap of the file holds it exclusively (see compact.go).
	dbMu     sync.RWMutex
	db       *bolt.DB
	boltOpts bolt.Options // what db was opened with; the compacted copy gets the same

	lastWrite atomic.Int64 // unix nanoseconds of the last write transaction (or Open)
	compactMu sync.Mutex   // one online compaction at a time
	cst       compactStats // guarded by compactMu for writes, read with its own lock
	// hookCompact, when set (tests only), runs at each step of an online
	// compaction: "copied", "locked", "renamed", "swapped".
	hookCompact func(step string)

	lastID atomic.Uint64 // last id handed out

	mu     sync.Mutex
	queue  []*request // handed to the committer, not yet taken
	want   int        // while the committer gathers: the queue length that wakes it
	closed bool
	wake   chan struct{} // cap 1: queue has work or closed was set
	done   chan struct{} // closed when the committer has exited

	dirMu sync.Mutex
	dirs  map[string]bool // image folders made durable by this process (guarded by dirMu)

	txs      atomic.Uint64
	verdicts atomic.Uint64

	policy     Policy
	unsyncedOK [3]bool // per class: unsynced images may be evicted
	outbox     bool    // queue new verdicts for upload
	onDegraded func(string)

	// quotaMu serializes everything that removes images or records, and
	// guards imgUsed: the bytes of committed image files plus the bytes
	// reserved by commits in flight.
	quotaMu sync.Mutex
	imgUsed int64
	ev      evictStats
	// evictSlack is how many bytes beyond the need an eviction frees, so
	// the next commits find room; -1 means 5% of the quota (tests set it).
	evictSlack int64

	closeOnce sync.Once
	closeErr  error

	// maxBatch, when > 0 (figures only, before the first Commit), caps the verdicts per
	// transaction: 1 is the one-transaction-per-verdict baseline.
	maxBatch int

	// gatherWait, when > 0 (tests only, before the first Commit), replaces
	// the committer's gathering bound (see run).
	gatherWait time.Duration
	// gatherTimeouts counts gatherings that ended at their bound, without
	// the full batch (tests read it).
	gatherTimeouts atomic.Uint64

	// hookBeforeTx, when set (tests only, before the first Commit), runs in
	// the committer before each transaction with the batch size.
	hookBeforeTx func(n int)
	// hookTxImages, when set (tests only, before the first Commit), runs in
	// the committer before each transaction with the image paths it names.
	hookTxImages func(paths []string)
	// hookSyncFolder, when set (tests only, before the first Commit), runs
	// before the committer fsyncs an image folder; an error it returns stands
	// for the fsync's.
	hookSyncFolder func(dir string) error
}

// Stats are in-memory counters of this Store since Open (the eviction
// counters are meant for metrics), plus the current image usage.
type Stats struct {
	Transactions uint64 // bbolt write transactions run by the committer
	Verdicts     uint64 // verdicts committed by them

	ImageBytes int64 // bytes of image files held now (and reserved by commits in flight)

	ImagesEvicted         uint64 // image files removed by the quota or images_max_age
	ImagesEvictedUnsynced uint64 // of those, images not yet uploaded
	ImagesEvictedReject   uint64 // of those, FAIL and NO_DECISION images
	ImageBytesEvicted     uint64 // bytes of the evicted images
	ImagesDropped         uint64 // new images not stored: the quota had no evictable room
	ImagesDeletedSynced   uint64 // removed right after upload (delete_synced_images)
	RecordsPruned         uint64 // synced records removed by records_max_age or records_max_bytes

	Compactions          uint64        // online compactions that swapped the file
	CompactionsAbandoned uint64        // online compactions given up: the store was written during the copy
	CompactedBytes       int64         // bytes the online compactions took off takt.db
	CompactPauseLast     time.Duration // how long commits waited for the last swap
	CompactPauseMax      time.Duration // the longest such wait since Open
}

// lockedError names the locked file and matches ErrLocked.
type lockedError struct{ path string }

func (e *lockedError) Error() string { return "store " + e.path + " is locked by another process" }
func (e *lockedError) Unwrap() error { return ErrLocked }

// Open opens (creating if needed) the store in dir. It removes temp files left
// by interrupted image writes and images whose record was never committed.
// The returned Store must be closed.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: store dir is empty", ErrInvalid)
	}
	timeout := opts.OpenTimeout
	switch {
	case timeout == 0:
		timeout = DefaultOpenTimeout
	case timeout < 0:
		return nil, fmt.Errorf("%w: open timeout %s, want >= 0", ErrInvalid, timeout)
	}
	if err := opts.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	log := opts.Logger.With().Str("component", "store").Logger()

	_, statErr := os.Stat(dir)
	created := errors.Is(statErr, fs.ErrNotExist)
	if err := os.MkdirAll(filepath.Join(dir, imagesDir), 0o750); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, dbFile)
	boltOpts := bolt.Options{Timeout: timeout}
	db, err := bolt.Open(path, 0o640, &boltOpts)
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, &lockedError{path: path}
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// We hold the file lock now: a compaction copy left by a crash is ours
	// to remove (takt.db is complete either way; see compact.go).
	if err := removeCompactTemps(dir); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &Store{
		dir:      dir,
		db:       db,
		boltOpts: boltOpts,
		log:      log,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		dirs:     make(map[string]bool),

		policy:     opts.Policy,
		unsyncedOK: opts.Policy.evictUnsynced(),
		outbox:     !opts.DisableOutbox,
		onDegraded: opts.OnDegraded,
		evictSlack: -1,
	}
	seq, fmtBefore, fmtAfter, err := s.init()
	if err == nil {
		// Make the entries of images/ and takt.db durable, and of dir itself
		// when this Open created it.
		err = syncDirs(filepath.Join(dir, imagesDir), dir)
		if err == nil && created {
			err = syncDirs(filepath.Dir(filepath.Clean(dir)))
		}
	}
	var tmps, orphans int
	if err == nil {
		tmps, orphans, err = s.sweep(seq)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	switch {
	case fmtAfter.Format != fmtBefore.Format:
		log.Info().Uint64("from", fmtBefore.Format).Uint64("to", fmtAfter.Format).Uint64("min_reader", fmtAfter.MinReader).
			Msg("store format migrated")
	case fmtAfter.Format > fmtAfter.Reader:
		log.Warn().Uint64("format", fmtAfter.Format).Uint64("reader", fmtAfter.Reader).Uint64("min_reader", fmtAfter.MinReader).
			Msg("store written by a newer agent in a format this one reads (a rollback?)")
	}
	if tmps > 0 || orphans > 0 {
		log.Warn().Int("temp_files", tmps).Int("orphan_images", orphans).
			Msg("removed leftovers of interrupted commits")
	}
	if err := s.loadUsage(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s.lastID.Store(seq)
	s.lastWrite.Store(time.Now().UnixNano())
	go s.run()
	log.Debug().Str("dir", dir).Uint64("last_id", seq).Msg("store opened")
	return s, nil
}

// init refuses a store of a format this package cannot read, creates the buckets, migrates
// the store to CurrentFormat (all in one transaction) and returns the id the counter
// resumes from and the format before and after.
func (s *Store) init() (seq uint64, before, after FormatInfo, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if before, err = checkFormat(tx); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(bucketVerdicts)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketStats, bucketOutbox, bucketSealed, bucketImages, bucketEvict, bucketHeldLabels, bucketLabels} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		seq = b.Sequence()
		// Belt and braces: never below the largest key present.
		if k, _ := b.Cursor().Last(); len(k) == 8 {
			seq = max(seq, binary.BigEndian.Uint64(k))
		}
		if tx.Bucket(bucketStats).Get(keyIndexed) == nil {
			if err := s.buildIndex(tx); err != nil {
				return err
			}
		}
		after, err = migrate(tx, before, time.Now())
		return err
	})
	return seq, before, after, err
}

// sweep removes image temp files, images with an id above seq (written, but
// their transaction never committed) and images the index does not hold
// (evicted, but the process died before it removed the file).
func (s *Store) sweep(seq uint64) (tmps, orphans int, err error) {
	indexed := map[uint64]bool{}
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketImages).ForEach(func(k, _ []byte) error {
			indexed[binary.BigEndian.Uint64(k)] = true
			return nil
		})
	})
	if err != nil {
		return 0, 0, err
	}
	root := filepath.Join(s.dir, imagesDir)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		switch id, ok := imageID(name); {
		case strings.HasPrefix(name, tmpPrefix):
			tmps++
		case ok && (id > seq || !indexed[id]):
			// Never committed, or evicted by a transaction that committed
			// before the file was removed.
			orphans++
		default:
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	return tmps, orphans, err
}

// imageID parses "{id}.{ext}".
func imageID(name string) (uint64, bool) {
	base, _, ok := strings.Cut(name, ".")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(base, 10, 64)
	return id, err == nil
}

// Close waits for the commits already handed to the committer, stops it and
// closes the bbolt file. Later Commits fail with ErrClosed. Close is
// idempotent; every call returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.signal()
		<-s.done
		s.dbMu.Lock() // waits for an online compaction's copy
		defer s.dbMu.Unlock()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close store %s: %w", s.dir, err)
		}
	})
	return s.closeErr
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Stats returns this Store's in-memory counters.
func (s *Store) Stats() Stats {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	st := s.ev.Stats
	st.Transactions, st.Verdicts = s.txs.Load(), s.verdicts.Load()
	st.ImageBytes = s.imgUsed
	s.cst.read(&st)
	return st
}

// Get returns the verdict with id, or an error matching ErrNotFound.
func (s *Store) Get(id uint64) (Verdict, error) {
	var v Verdict
	err := s.view(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketVerdicts).Get(idKey(id))
		if data == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(data, &v); err != nil {
			return err
		}
		heldLabel(tx, idKey(id), &v)
		v.ImageEvicted = v.ImageRef != "" && tx.Bucket(bucketImages).Get(idKey(id)) == nil
		return nil
	})
	if err != nil {
		return Verdict{}, fmt.Errorf("get verdict %d: %w", id, err)
	}
	return v, nil
}

// List returns up to limit verdicts with an id above afterID, ascending.
// Under concurrent commits a smaller id may become visible after a larger
// one (see the package Caveats).
func (s *Store) List(afterID uint64, limit int) ([]Verdict, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: list limit %d, want > 0", ErrInvalid, limit)
	}
	if afterID == math.MaxUint64 {
		return nil, nil
	}
	var out []Verdict
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketVerdicts).Cursor()
		images := tx.Bucket(bucketImages)
		for k, data := c.Seek(idKey(afterID + 1)); k != nil && len(out) < limit; k, data = c.Next() {
			var v Verdict
			if err := json.Unmarshal(data, &v); err != nil {
				return fmt.Errorf("verdict %d: %w", binary.BigEndian.Uint64(k), err)
			}
			heldLabel(tx, k, &v)
			v.ImageEvicted = v.ImageRef != "" && images.Get(k) == nil
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list verdicts after %d: %w", afterID, err)
	}
	return out, nil
}

// Counts returns the running counters of all verdicts ever committed.
func (s *Store) Counts() (Counts, error) {
	var c Counts
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStats)
		c = Counts{
			Total:      getCounter(b, keyTotal),
			Pass:       getCounter(b, keyPass),
			Fail:       getCounter(b, keyFail),
			NoDecision: getCounter(b, keyNoDecision),
		}
		return nil
	})
	if err != nil {
		return Counts{}, fmt.Errorf("read counts: %w", err)
	}
	return c, nil
}

// ImagePath returns the absolute path of v's image, or "" if v has none.
func (s *Store) ImagePath(v Verdict) string {
	if v.ImageRef == "" || !filepath.IsLocal(filepath.FromSlash(v.ImageRef)) {
		return ""
	}
	return filepath.Join(s.dir, filepath.FromSlash(v.ImageRef))
}

func (s *Store) view(fn func(*bolt.Tx) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	s.dbMu.RLock()
	err := s.db.View(fn)
	s.dbMu.RUnlock()
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func idKey(id uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, id)
	return k
}

func getCounter(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func addCounter(b *bolt.Bucket, key []byte, n uint64) error {
	if n == 0 {
		return nil
	}
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, getCounter(b, key)+n)
	return b.Put(key, v)
}

// addSigned adds n (which may be negative) to a counter, flooring at zero.
func addSigned(b *bolt.Bucket, key []byte, n int64) error {
	if n == 0 {
		return nil
	}
	cur := int64(getCounter(b, key))
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, uint64(max(cur+n, 0)))
	return b.Put(key, v)
}

// syncDirs fsyncs each folder so the entries created in it are durable.
func syncDirs(dirs ...string) error {
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sync folder %s: %w", d, err)
		}
	}
	return nil
}
