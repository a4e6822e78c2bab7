package cloudsync

import (
	"context"
	"time"
)

// Outbox is the station's durable queue of verdicts to upload, as the
// [Uploader] sees it. agent/store implements it; cloudsync defines it so that
// it never imports the station.
//
// Contract:
//
//   - Pending returns up to n items that are not yet acknowledged, lowest id
//     first. The set it returns is fixed durably when it is first returned:
//     every later call, also after a crash and restart, returns the same items
//     (or the first n of them) until each is acknowledged, and only then a new
//     set. A batch built from it therefore gets the same object key when it is
//     retried. It returns an empty slice, not an error, when nothing is
//     pending. It may block briefly on the disk; it honours ctx only before it
//     starts.
//   - Ack marks items done after the object store confirmed them: they are
//     never returned again and their local copies become free to evict. Ids
//     that are unknown or already acknowledged are ignored. Ack returns after
//     the change is durable.
//   - PendingLabels returns up to n operator label entries that are not yet
//     acknowledged, lowest sequence first. An entry never changes once it is
//     queued, and its object key and content follow from it alone, so no
//     set needs sealing: a retry after a crash writes the same keys with the
//     same bytes. It returns an empty slice when nothing is pending.
//   - AckLabels removes label entries (by Label.Seq) after the object store
//     confirmed them; unknown sequences are ignored. It returns after the
//     change is durable.
//   - Backlog reports what is still to upload; it is a short read.
//
// Items and Labels own their byte slices; the Uploader does not modify them.
type Outbox interface {
	Pending(ctx context.Context, n int) ([]Item, error)
	Ack(ctx context.Context, ids []uint64) error
	PendingLabels(ctx context.Context, n int) ([]Label, error)
	AckLabels(ctx context.Context, seqs []uint64) error
	Backlog() (Backlog, error)
}

// LabelSchema is the schema version of [LabelRecord].
const LabelSchema = 1

// LabelRecord is the content of one label object
// (labels/{station}/{yyyy}/{mm}/{dd}/{verdict-id}-{seq}.json): an operator
// set (or, with Label "", cleared) the label of a verdict. Label objects are
// immutable; for a verdict, the entry with the highest Seq is its label.
// The verdict batches carry the label a record had when its batch was
// built, which may be older.
type LabelRecord struct {
	Schema     int       `json:"schema"`       // LabelSchema
	VerdictID  uint64    `json:"verdict_id"`   // the verdict labelled
	Seq        uint64    `json:"seq"`          // per station, increasing: the latest wins
	Station    string    `json:"station"`      // where it was labelled
	Serial     string    `json:"serial"`       // the part's serial, may be empty
	CapturedAt time.Time `json:"captured_at"`  // the verdict's capture time (UTC); its date is in the key
	Label      string    `json:"label"`        // "" clears the label
	LabeledAt  time.Time `json:"labeled_at"`   // when the station stored the label (UTC)
	By         string    `json:"by,omitempty"` // who labelled, when known
}

// Label is one operator label entry waiting in the outbox.
type Label struct {
	// Seq is the entry's sequence, unique and increasing per station.
	Seq uint64
	// VerdictID, Station and Time (the verdict's capture time, UTC) pick
	// the object key with Seq.
	VerdictID uint64
	Station   string
	Time      time.Time
	// Record is the object content: a JSON [LabelRecord], as stored.
	Record []byte
}

// Item is one verdict waiting in the outbox: its record, and its image if the
// station still holds one.
type Item struct {
	// ID is the verdict id, unique and increasing per station.
	ID uint64
	// Station names the station; it is part of every object key.
	Station string
	// Time is the capture time in UTC; its date picks the day in the keys.
	Time time.Time
	// Decision is "PASS", "FAIL" or "NO_DECISION".
	Decision string
	// Score is the model's score, nil when there is none (NaN, error).
	Score *float64
	// Threshold is the threshold the score was compared with.
	Threshold float64
	// Record is the verdict record as stored: one JSON object, no newline.
	// It does not change while the item is pending.
	Record []byte
	// Image is the absolute path of the kept image file, "" when the verdict
	// has none (not kept, dropped or evicted). The file may be evicted after
	// Pending returned; the Uploader then uploads the record without it.
	Image string
	// ImageExt is the image's file extension without a dot ("jpg", "png").
	ImageExt string
	// ImageSize is the image file's size in bytes, 0 without an image.
	ImageSize int64
}

// Backlog is what the outbox still holds.
type Backlog struct {
	// Count is the number of verdicts not yet acknowledged.
	Count int `json:"count"`
	// Bytes is their record bytes plus the bytes of their kept images.
	Bytes int64 `json:"bytes"`
	// Oldest is the capture time of the oldest; zero when Count is 0.
	Oldest time.Time `json:"oldest"`
	// Labels is the number of operator label entries not yet acknowledged.
	Labels int `json:"labels,omitempty"`
}

// Age is how old the oldest pending verdict is at now; 0 when none is pending.
func (b Backlog) Age(now time.Time) time.Duration {
	if b.Count == 0 || b.Oldest.IsZero() {
		return 0
	}
	return max(now.Sub(b.Oldest), 0)
}
