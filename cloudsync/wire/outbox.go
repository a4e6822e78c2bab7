package wire

import "time"

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
