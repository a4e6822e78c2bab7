package store

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// SchemaVersion is the version of the verdict record written by this package;
// it is stored in every record as "schema".
const SchemaVersion = 1

// Decision names, the only values [Verdict.Decision] may take.
const (
	Pass       = "PASS"
	Fail       = "FAIL"
	NoDecision = "NO_DECISION"
)

// Verdict is the record of one inspected part. It is stored as JSON.
type Verdict struct {
	Schema    int        `json:"schema"` // record schema version, set by Commit
	ID        uint64     `json:"id"`     // set by Commit
	Station   string     `json:"station"`
	CameraID  string     `json:"camera_id"`
	Serial    string     `json:"serial"`   // part serial, may be empty
	Time      time.Time  `json:"time"`     // capture time; Commit stores it in UTC
	Decision  string     `json:"decision"` // Pass, Fail or NoDecision
	Reason    string     `json:"reason"`   // why, mostly for NoDecision and Fail
	Score     *float64   `json:"score"`    // nil when there is none (NaN, error); Commit turns NaN/Inf into nil
	Threshold float64    `json:"threshold"`
	Model     Model      `json:"model"`
	Provider  string     `json:"provider"` // execution provider actually used
	Latency   Latency    `json:"latency"`
	ImageRef  string     `json:"image_ref"` // image path relative to the store dir, slash-separated; set by Commit
	Label     string     `json:"label"`     // operator label, empty when none
	SyncedAt  *time.Time `json:"synced_at"` // when the cloud confirmed it, nil until then
	// Class and Confidence are a classifier's top class and its probability, or a
	// detector's most confident box; empty for an anomaly model.
	Class      string  `json:"class,omitempty"`
	Confidence float64 `json:"confidence,omitempty"`
	// Boxes are a detector's boxes, in frame pixels.
	Boxes []Box `json:"boxes,omitempty"`
	// Models holds each model's outcome when a station runs several models on a frame;
	// Score, Threshold, Model, Provider, Class and Boxes above are those of the model that
	// decided.
	Models []ModelScore `json:"models,omitempty"`

	// ImageDropped is set by Commit when an image was given but not stored
	// because the image quota had no room it was allowed to evict.
	ImageDropped bool `json:"image_dropped,omitempty"`
	// ImageEvicted is not stored: Get and List set it when the record names
	// an image that the store has since evicted or deleted after upload.
	ImageEvicted bool `json:"image_evicted,omitempty"`
}

// Model identifies the model that produced a verdict.
type Model struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
}

// ModelScore is one model's outcome on a part scored by several models.
type ModelScore struct {
	Name      string   `json:"name"` // the station's name for the model (config models[].name)
	Model     Model    `json:"model"`
	Decision  string   `json:"decision"`
	Reason    string   `json:"reason,omitempty"`
	Score     *float64 `json:"score"` // nil when there is none
	Threshold float64  `json:"threshold"`
	Provider  string   `json:"provider"`

	Class      string  `json:"class,omitempty"`
	Confidence float64 `json:"confidence,omitempty"`
	Boxes      []Box   `json:"boxes,omitempty"`
}

// Box is one box a detector found (wire.Box: stored as the verdict messages carry it).
type Box = wire.Box

// finiteBoxes drops the boxes holding a NaN or infinite number (JSON has none), and a
// confidence that is not finite.
func finiteBoxes(conf *float64, boxes []Box) []Box {
	if !finite(*conf) {
		*conf = 0
	}
	out := boxes[:0]
	for _, b := range boxes {
		if finite(b.Confidence) && finite(b.X0) && finite(b.Y0) && finite(b.X1) && finite(b.Y1) {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Latency holds the stage timings of one verdict, in milliseconds.
type Latency struct {
	CaptureMs    float64 `json:"capture_ms"`
	PreprocessMs float64 `json:"preprocess_ms"`
	InferMs      float64 `json:"infer_ms"`
	DecideMs     float64 `json:"decide_ms"`
	TotalMs      float64 `json:"total_ms"`
}

// Image is an encoded image (the caller chooses the format) stored next to a
// verdict. Ext is the file extension without a dot, lowercase letters and
// digits only, such as "jpg" or "png".
type Image struct {
	Data []byte
	Ext  string
	// Debug marks a debug frame: the lowest eviction class, below PASS.
	Debug bool
}

var extRE = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// normalize brings a verdict into its stored form and checks it.
func (v *Verdict) normalize() error {
	switch v.Decision {
	case Pass, Fail, NoDecision:
	default:
		return fmt.Errorf("%w: decision %q, want %q, %q or %q", ErrInvalid, v.Decision, Pass, Fail, NoDecision)
	}
	if v.Time.IsZero() {
		return fmt.Errorf("%w: time is zero, want the capture time", ErrInvalid)
	}
	v.Time = v.Time.UTC()
	if y := v.Time.Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%w: time %s out of range", ErrInvalid, v.Time)
	}
	if v.Score != nil && !finite(*v.Score) {
		v.Score = nil
	}
	v.Boxes = finiteBoxes(&v.Confidence, v.Boxes)
	for i := range v.Models {
		m := &v.Models[i]
		m.Boxes = finiteBoxes(&m.Confidence, m.Boxes)
		switch m.Decision {
		case Pass, Fail, NoDecision:
		default:
			return fmt.Errorf("%w: models[%d].decision %q, want %q, %q or %q", ErrInvalid, i, m.Decision, Pass, Fail, NoDecision)
		}
		if m.Score != nil && !finite(*m.Score) {
			m.Score = nil
		}
		if !finite(m.Threshold) {
			return fmt.Errorf("%w: models[%d].threshold is %v, want a finite number", ErrInvalid, i, m.Threshold)
		}
	}
	floats := []struct {
		name string
		f    float64
	}{
		{"threshold", v.Threshold},
		{"latency.capture_ms", v.Latency.CaptureMs},
		{"latency.preprocess_ms", v.Latency.PreprocessMs},
		{"latency.infer_ms", v.Latency.InferMs},
		{"latency.decide_ms", v.Latency.DecideMs},
		{"latency.total_ms", v.Latency.TotalMs},
	}
	for _, f := range floats {
		if !finite(f.f) {
			return fmt.Errorf("%w: %s is %v, want a finite number", ErrInvalid, f.name, f.f)
		}
	}
	v.Schema = SchemaVersion
	v.SyncedAt = nil
	v.ImageDropped, v.ImageEvicted = false, false
	return nil
}

func (img *Image) check() error {
	if !extRE.MatchString(img.Ext) {
		return fmt.Errorf("%w: image ext %q, want 1-8 lowercase letters or digits without a dot", ErrInvalid, img.Ext)
	}
	if len(img.Data) == 0 {
		return fmt.Errorf("%w: image data is empty", ErrInvalid)
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// Counts are the running verdict counters of a store.
type Counts struct {
	Total      uint64 `json:"total"`
	Pass       uint64 `json:"pass"`
	Fail       uint64 `json:"fail"`
	NoDecision uint64 `json:"no_decision"`
}

func (c *Counts) add(decision string) {
	c.Total++
	switch decision {
	case Pass:
		c.Pass++
	case Fail:
		c.Fail++
	case NoDecision:
		c.NoDecision++
	}
}

// patchRecord sets fields of a stored verdict record and keeps every other field as stored,
// including fields a newer agent wrote that this version does not know: after a rollback to
// an older agent, marking a record synced or labelled loses nothing the newer one recorded.
func patchRecord(data []byte, fields map[string]any) ([]byte, error) {
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, err
	}
	for k, v := range fields {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		rec[k] = raw
	}
	return json.Marshal(rec)
}
