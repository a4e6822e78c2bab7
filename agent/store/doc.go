// Package store is the station's durable verdict store: one bbolt file for
// verdict records and a folder tree of image files, both under one directory.
//
// A verdict counts as done only once Commit has returned nil: by then its
// image (if any) and its record are on disk and fsync'd.
//
// # Basics
//
// The store directory holds:
//
//	takt.db                                  bbolt file: verdict records (JSON), counters, the upload
//	                                         outbox and the label outbox
//	images/{yyyy}/{mm}/{dd}/{id}.{ext}       one image per verdict that has one (capture date, UTC)
//
// [Open] takes the directory and [Options]. [Store.Commit] assigns the verdict
// its id, writes the image atomically (temp file in the same folder, write,
// fsync, rename), then hands the record to the committer, which fsyncs the
// folders of its group's images once, writes the records in a bbolt
// transaction and answers each caller after that transaction is fsync'd. The
// image is always durable, under its final name, before the record that names
// it, so a record never points to a missing image.
//
// Concurrent Commit calls share transactions: a single committer goroutine
// takes every request queued and writes them in one bbolt transaction (one
// commit, two fsyncs). Before it starts one, it waits briefly for as many
// requests as were in flight when the last one ended (at most a quarter of
// that transaction's time, see commit.go), so the callers it just answered
// join the next batch instead of trickling into batches of one. A lone writer
// is committed at once. Each caller still returns only when its own record is
// durable, with the transaction's error if it failed.
//
// Ids are 8-byte big-endian keys, unique for the life of the file: they are
// allocated in memory before the transaction (so the image can be named by id)
// and every transaction raises the bucket sequence to the largest id it wrote,
// which is where the counter resumes after a restart.
//
// [Store.Get], [Store.List] and [Store.Counts] are short read transactions;
// Counts reads running counters kept in the same transactions as the records.
//
// # Caveats
//
// One process at a time: bbolt holds an exclusive file lock. A second Open
// (another process, or the same process twice) waits [Options.OpenTimeout]
// and then fails with an error matching [ErrLocked].
//
// The bbolt file never shrinks by itself: deleted pages are reused but not
// returned to the file system. [Store.MaybeCompact] (the agent calls it
// periodically) and [Store.CompactOnline] rewrite it while the store is open;
// commits wait during the final swap only (see compact.go). [Compact] does it
// offline. Images are files, never blobs in bbolt.
//
// Ids are allocated before the commit, so concurrent commits may become
// visible out of id order (id 8 may be readable before id 7), and a commit
// that failed or was cancelled leaves a gap. Do not use "last id seen" from
// [Store.List] as a resume cursor for at-least-once processing.
//
// A crash can leave an image without a record (written, but its transaction
// never committed) and temp files from interrupted image writes. Open removes
// both (images whose id is above the committed sequence); it walks the whole
// images/ tree to do so, which takes longer the more unsynced images are kept.
//
// Labels: [Store.SetLabel] queues each label change as its own entry for the
// uploader (an immutable label object in the cloud). A record in the sealed
// upload set keeps its bytes until the set is acknowledged; its new label is
// held beside it (Get and List merge it) and Ack writes it into the record.
//
// Commit does not retry: if a transaction fails, every verdict in it fails
// with the same error and the caller decides (typically: NO_DECISION and an
// alert, since the disk is in trouble).
package store
