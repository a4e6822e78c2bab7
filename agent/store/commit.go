package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// request is one verdict handed to the committer.
type request struct {
	id       uint64
	decision string
	time     time.Time  // capture time
	data     []byte     // the JSON record
	img      string     // absolute image path, "" when none
	imgSize  int64      // its size, reserved against the image quota
	class    byte       // its eviction class
	outbox   bool       // queue the verdict for upload
	done     chan error // cap 1; receives the outcome
}

// Commit stores v and its image (nil for none) durably and returns only after
// both are fsync'd. The image file is written and fsync'd here, concurrently
// with other callers and with the committer's transaction; the committer
// fsyncs the folders of a group's images once, then commits their records. On success it sets v.ID, v.ImageRef and v.Schema and
// stores v.Time in UTC; on error v is unchanged. The caller must not modify v
// or img during the call.
//
// Concurrent calls share bbolt transactions (see the package doc). If ctx is
// done before the verdict was handed to the committer, Commit returns
// ctx.Err() and nothing is written; after that it waits for the outcome
// whatever ctx does. Errors: ErrInvalid (nothing written), ErrClosed, ctx's
// error, or an I/O or transaction error; a failed transaction fails every
// verdict in it.
func (s *Store) Commit(ctx context.Context, v *Verdict, img *Image) error {
	if v == nil {
		return fmt.Errorf("%w: verdict is nil", ErrInvalid)
	}
	rec := *v
	if err := rec.normalize(); err != nil {
		return err
	}
	if img != nil {
		if err := img.check(); err != nil {
			return err
		}
	}
	if s.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	rec.ID = s.lastID.Add(1)
	rec.ImageRef = ""
	r := &request{id: rec.ID, decision: rec.Decision, time: rec.Time, outbox: s.outbox, done: make(chan error, 1)}
	if img != nil {
		r.class = classOf(rec.Decision, img.Debug)
		ok, err := s.reserve(int64(len(img.Data)), r.class)
		if err != nil {
			return fmt.Errorf("commit verdict %d: make room for the image: %w", rec.ID, err)
		}
		if ok {
			r.imgSize = int64(len(img.Data))
		} else {
			img, rec.ImageDropped = nil, true
		}
	}
	if img != nil {
		rec.ImageRef = imageRef(&rec, img.Ext)
		r.img = filepath.Join(s.dir, filepath.FromSlash(rec.ImageRef))
		if err := s.writeImage(r.img, img.Data); err != nil {
			s.release(r.imgSize)
			return fmt.Errorf("commit verdict %d: write image %s: %w", rec.ID, r.img, err)
		}
	}
	data, err := json.Marshal(&rec)
	if err != nil { // normalize rules this out; stay safe anyway
		removeImage(r.img)
		s.release(r.imgSize)
		return fmt.Errorf("commit verdict %d: %w", rec.ID, err)
	}
	r.data = data

	if err := s.enqueue(ctx, r); err != nil {
		removeImage(r.img)
		s.release(r.imgSize)
		return err
	}
	if err := <-r.done; err != nil {
		s.release(r.imgSize)
		return fmt.Errorf("commit verdict %d: %w", rec.ID, err)
	}
	*v = rec
	return nil
}

// enqueue hands r to the committer unless the store is closed or ctx is done.
func (s *Store) enqueue(ctx context.Context, r *request) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.queue = append(s.queue, r)
	wake := len(s.queue) >= s.want // while gathering, only a complete batch wakes the committer
	s.mu.Unlock()
	if wake {
		s.signal()
	}
	return nil
}

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// queued returns the number of requests waiting for the committer.
func (s *Store) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Gathering: the committer waits a little before a transaction for the
// writers it just answered, when there were more than one. Without the wait,
// the callers just answered re-join one by one and the first of them gets a
// transaction of its own: with 16 writers the batches alternate between 1 and
// 15 verdicts (or settle in two cohorts of 8), and every verdict pays half a
// transaction. The committer expects as many requests as were in flight when
// the last transaction ended: its batch plus those that queued meanwhile. The
// wait ends as soon as that many are queued and lasts at most gatherFraction
// of the last transaction's time (at most maxGather), so a lone writer (one in
// flight) is never delayed and a writer that left costs one short wait, after
// which the expectation adapts.
const (
	gatherFraction = 4 // wait at most 1/gatherFraction of the last transaction
	maxGather      = 2 * time.Millisecond
)

// run is the committer: it takes everything queued (after gathering, see
// above), commits it in one transaction, answers each request, and repeats.
// After Close it drains the queue and exits.
func (s *Store) run() {
	defer close(s.done)
	var spare []*request
	expect := 1                       // the size of the last batch
	var lastTx time.Duration          // how long the last transaction took
	timer := time.NewTimer(time.Hour) // the gathering deadline
	timer.Stop()
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			<-s.wake
			continue
		}
		if len(s.queue) < expect && !s.closed {
			s.want = expect
			s.mu.Unlock()
			wait := min(lastTx/gatherFraction, maxGather)
			if s.gatherWait > 0 {
				wait = s.gatherWait
			}
			timer.Reset(wait)
			for gathering := true; gathering; {
				select {
				case <-s.wake:
					s.mu.Lock()
					gathering = len(s.queue) < expect && !s.closed
					s.mu.Unlock()
				case <-timer.C:
					gathering = false
					s.gatherTimeouts.Add(1)
				}
			}
			timer.Stop() // Go >= 1.23: no stale tick survives Stop or Reset
			s.mu.Lock()
			s.want = 0
		}
		var batch []*request
		if s.maxBatch > 0 && len(s.queue) > s.maxBatch {
			batch = append(spare[:0], s.queue[:s.maxBatch]...)
			s.queue = append(s.queue[:0], s.queue[s.maxBatch:]...)
		} else {
			// Swap buffers: the queue continues in the spare one.
			batch = s.queue
			s.queue = spare[:0]
		}
		s.mu.Unlock()
		start := time.Now()
		queued := s.commitBatch(batch)
		lastTx = time.Since(start)
		expect = len(batch) + queued
		clear(batch)
		spare = batch
	}
}

// commitBatch commits batch in one transaction and answers its callers. It
// returns how many requests were queued when the transaction ended, counted
// before the answers go out: a caller that re-joins at once must not count
// twice in the committer's expectation.
func (s *Store) commitBatch(batch []*request) (queued int) {
	batch = s.syncFolders(batch)
	if len(batch) == 0 {
		return s.queued()
	}
	if s.hookBeforeTx != nil {
		s.hookBeforeTx(len(batch))
	}
	if s.hookTxImages != nil {
		var imgs []string
		for _, r := range batch {
			if r.img != "" {
				imgs = append(imgs, r.img)
			}
		}
		s.hookTxImages(imgs)
	}
	fnFailed := false
	s.dbMu.RLock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		err := apply(tx, batch)
		fnFailed = err != nil
		return err
	})
	s.dbMu.RUnlock()
	s.txs.Add(1)
	if err == nil {
		s.verdicts.Add(uint64(len(batch)))
		s.wrote()
	}
	queued = s.queued()
	for _, r := range batch {
		if err != nil && fnFailed {
			// Rolled back before anything reached the disk: the images are
			// orphans. When Commit itself failed (write or fsync) the outcome
			// is unknown, so the images stay; Open removes them if their
			// records are missing.
			removeImage(r.img)
		}
		r.done <- err
	}
	return queued
}

// apply writes a batch of records with their image index and outbox entries,
// raises the sequence to the largest id and updates the counters.
func apply(tx *bolt.Tx, batch []*request) error {
	vb := tx.Bucket(bucketVerdicts)
	var maxID uint64
	var c Counts
	var recBytes, imgBytes, outCount, outBytes int64
	for _, r := range batch {
		k := idKey(r.id)
		if err := vb.Put(k, r.data); err != nil {
			return fmt.Errorf("put verdict %d: %w", r.id, err)
		}
		recBytes += recordCost(len(r.data))
		if r.img != "" {
			state := stateDone
			if r.outbox {
				state = statePending
			}
			if err := putImage(tx, r.id, imageEntry{class: r.class, state: state, size: r.imgSize, time: r.time}); err != nil {
				return fmt.Errorf("index image %d: %w", r.id, err)
			}
			imgBytes += r.imgSize
		}
		if r.outbox {
			e := outboxEntry{image: r.img != "", recBytes: int64(len(r.data)), imgBytes: r.imgSize, time: r.time}
			if err := tx.Bucket(bucketOutbox).Put(k, e.encode()); err != nil {
				return fmt.Errorf("queue verdict %d: %w", r.id, err)
			}
			outCount++
			outBytes += e.recBytes + e.imgBytes
		}
		maxID = max(maxID, r.id)
		c.add(r.decision)
	}
	if maxID > vb.Sequence() {
		if err := vb.SetSequence(maxID); err != nil {
			return fmt.Errorf("set sequence: %w", err)
		}
	}
	sb := tx.Bucket(bucketStats)
	for _, kv := range []struct {
		key []byte
		n   uint64
	}{{keyTotal, c.Total}, {keyPass, c.Pass}, {keyFail, c.Fail}, {keyNoDecision, c.NoDecision}} {
		if err := addCounter(sb, kv.key, kv.n); err != nil {
			return fmt.Errorf("update counter %s: %w", kv.key, err)
		}
	}
	for _, kv := range []struct {
		key []byte
		n   int64
	}{{keyRecordBytes, recBytes}, {keyImageBytes, imgBytes}, {keyOutboxCount, outCount}, {keyOutboxBytes, outBytes}} {
		if err := addSigned(sb, kv.key, kv.n); err != nil {
			return fmt.Errorf("update counter %s: %w", kv.key, err)
		}
	}
	return nil
}

// imageRef is "images/{yyyy}/{mm}/{dd}/{id}.{ext}" by capture date (UTC).
func imageRef(v *Verdict, ext string) string {
	return path.Join(imagesDir, v.Time.Format("2006/01/02"), strconv.FormatUint(v.ID, 10)+"."+ext)
}

// syncFolders makes the names of batch's images durable before the
// transaction that points to them: it fsyncs each folder they were renamed
// into once for the whole group (their contents were fsync'd by writeImage).
// A request whose folder could not be synced is answered with the error, its
// image removed, and left out of the batch it returns (the same slice,
// filtered in place).
func (s *Store) syncFolders(batch []*request) []*request {
	var dirErr map[string]error
	failed := 0
	for _, r := range batch {
		if r.img == "" {
			continue
		}
		dir := filepath.Dir(r.img)
		err, synced := dirErr[dir]
		if !synced {
			if s.hookSyncFolder != nil {
				err = s.hookSyncFolder(dir)
			}
			if err == nil {
				err = syncDirs(dir)
			}
			if dirErr == nil {
				dirErr = map[string]error{}
			}
			dirErr[dir] = err
		}
		if err != nil {
			failed++
		}
	}
	if failed == 0 {
		return batch
	}
	kept := batch[:0]
	for _, r := range batch {
		if r.img != "" {
			if err := dirErr[filepath.Dir(r.img)]; err != nil {
				removeImage(r.img)
				r.done <- err
				continue
			}
		}
		kept = append(kept, r)
	}
	clear(batch[len(kept):])
	return kept
}

// writeImage writes data to name atomically: temp file in the same folder,
// write, fsync, rename. Its folder is fsync'd by the committer, once for the
// group of verdicts it commits (see syncFolders): until then a crash may lose
// the name, never leave it with partial content, and the record naming it is
// not committed either.
func (s *Store) writeImage(name string, data []byte) (err error) {
	dir := filepath.Dir(name)
	if err := s.ensureDir(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if errors.Is(err, fs.ErrNotExist) {
		// Someone removed the folder since we made it (an emptied day).
		s.dirMu.Lock()
		delete(s.dirs, dir)
		s.dirMu.Unlock()
		if err := s.ensureDir(dir); err != nil {
			return err
		}
		f, err = os.CreateTemp(dir, tmpPrefix+"*")
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o640); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// ensureDir creates dir (images/{yyyy}/{mm}/{dd}) and fsyncs the parent of
// each level, once per folder and process: a folder that already exists may
// still be only in the page cache, left by a process that crashed before its
// fsync.
func (s *Store) ensureDir(dir string) error {
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	if s.dirs[dir] {
		return nil
	}
	root := filepath.Join(s.dir, imagesDir)
	rel, err := filepath.Rel(root, dir)
	if err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("image folder %s is outside %s", dir, root)
	}
	parent := root
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		d := filepath.Join(parent, part)
		if err := os.Mkdir(d, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := syncDirs(parent); err != nil {
			return err
		}
		parent = d
	}
	s.dirs[dir] = true
	return nil
}

func removeImage(name string) {
	if name != "" {
		os.Remove(name)
	}
}
