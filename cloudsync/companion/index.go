package companion

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The dataset index (state_dir/index.db, bbolt):
//
//	seen      object key -> {}               every ingested object: a pass never applies one twice
//	cursor    "verdicts/{station}/" -> key   the last key ingested under a station's prefix
//	samples   station \0 id(8, BE) -> Sample one per verdict, merged from its record, image and labels
//	bymodel/  {model}/ station \0 id -> {}   the samples of each model name
//	models    name -> ModelStats             counters, versions seen, recent PASS scores
//	meta      "jobseq" (NextSequence), "fullscan" -> RFC 3339
//	announce  model -> ModelAvailableMsg     promotions not yet acknowledged by the broker
var (
	bucketSeen     = []byte("seen")
	bucketCursor   = []byte("cursor")
	bucketSamples  = []byte("samples")
	bucketByModel  = []byte("bymodel")
	bucketModels   = []byte("models")
	bucketMeta     = []byte("meta")
	bucketAnnounce = []byte("announce")
)

// Sample is what the index knows about one verdict of a station.
type Sample struct {
	Station   string    `json:"station"`
	ID        uint64    `json:"id"`
	Time      time.Time `json:"time,omitzero"`
	Decision  string    `json:"decision,omitempty"` // PASS, FAIL, NO_DECISION; "" until the record arrived
	Score     *float64  `json:"score,omitempty"`
	Threshold float64   `json:"threshold,omitempty"`
	Model     string    `json:"model,omitempty"`
	Version   string    `json:"version,omitempty"`
	// Outcomes are each model's outcome on the part (one entry for a
	// station with one model): decision, score and version per model name.
	Outcomes map[string]Outcome `json:"outcomes,omitempty"`
	Image    string             `json:"image,omitempty"` // object key of the image, "" when none was uploaded
	// Label is the operator label (false_reject, false_accept, "" none);
	// LabelSeq the sequence of the label object it came from (0: from the
	// record's copy). LabelCounted: the label was counted for its model.
	Label        string `json:"label,omitempty"`
	LabelSeq     uint64 `json:"label_seq,omitempty"`
	LabelCounted bool   `json:"label_counted,omitempty"`
}

// Outcome is one model's result on a part.
type Outcome struct {
	Version   string   `json:"version"`
	Decision  string   `json:"decision"`
	Score     *float64 `json:"score,omitempty"`
	Threshold float64  `json:"threshold,omitempty"`
}

// forModel is the sample as model name saw it: its decision, score and
// version in place of the part's (the part's label stays).
func (s Sample) forModel(name string) Sample {
	if o, ok := s.Outcomes[name]; ok {
		s.Model, s.Version, s.Decision, s.Score, s.Threshold = name, o.Version, o.Decision, o.Score, o.Threshold
	}
	return s
}

// ModelStats are the per-model counters of the index.
type ModelStats struct {
	Verdicts   int `json:"verdicts"`
	Pass       int `json:"pass"`
	Fail       int `json:"fail"`
	NoDecision int `json:"no_decision"`
	Images     int `json:"images"`
	// Labels counts operator label objects for the model's verdicts;
	// LabelsAtTrain is Labels when the last training job took its dataset.
	Labels        int `json:"labels"`
	LabelsAtTrain int `json:"labels_at_train"`
	// Versions seen in the stations' verdicts, with their verdict counts.
	Versions map[string]int `json:"versions,omitempty"`
	// Recent holds the latest PASS scores per model version (at most
	// maxRecent each), in ingest order: the drift watch reads them.
	Recent map[string][]float64 `json:"recent,omitempty"`
	// ImageQueue holds the image keys of PASS parts whose image statistics
	// are not computed yet (at most maxRecentImages, oldest dropped); the
	// ingest pass downloads them and moves their statistics to RecentImages.
	ImageQueue []string `json:"image_queue,omitempty"`
	// RecentImages are the statistics of the latest PASS images of the
	// model (any version, at most maxRecentImages), in ingest order.
	RecentImages []ImageStats `json:"recent_images,omitempty"`
	// DriftHandled lists versions whose drift already started a job.
	DriftHandled []string `json:"drift_handled,omitempty"`
	// LastAutoTrain is when a trigger last started a job.
	LastAutoTrain time.Time `json:"last_auto_train,omitzero"`
}

const maxRecent = 2000

// maxRecentImages bounds ModelStats.ImageQueue and RecentImages.
const maxRecentImages = 1000

// queueImage queues a PASS image for its statistics.
func (s *ModelStats) queueImage(key string) {
	s.ImageQueue = append(s.ImageQueue, key)
	if n := len(s.ImageQueue); n > maxRecentImages {
		s.ImageQueue = slices.Clone(s.ImageQueue[n-maxRecentImages:])
	}
}

// addImageStats appends statistics to RecentImages, keeping the newest.
func (s *ModelStats) addImageStats(st ...ImageStats) {
	s.RecentImages = append(s.RecentImages, st...)
	if n := len(s.RecentImages); n > maxRecentImages {
		s.RecentImages = slices.Clone(s.RecentImages[n-maxRecentImages:])
	}
}

// index wraps the bbolt file.
type index struct {
	db *bolt.DB
}

func openIndex(path string) (*index, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("index %s: %w (is another takt-cloud using this state_dir?)", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSeen, bucketCursor, bucketSamples, bucketByModel, bucketModels, bucketMeta, bucketAnnounce} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	return &index{db: db}, nil
}

func (x *index) Close() error { return x.db.Close() }

func sampleKey(station string, id uint64) []byte {
	k := make([]byte, 0, len(station)+9)
	k = append(k, station...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, id)
}

func getJSON[T any](b *bolt.Bucket, k []byte) (T, bool, error) {
	var v T
	data := b.Get(k)
	if data == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, false, fmt.Errorf("index: %q: %w", k, err)
	}
	return v, true, nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

// stats returns the stats of model name (zero when unknown).
func (x *index) stats(name string) (ModelStats, error) {
	var s ModelStats
	err := x.db.View(func(tx *bolt.Tx) error {
		var err error
		s, _, err = getJSON[ModelStats](tx.Bucket(bucketModels), []byte(name))
		return err
	})
	return s, err
}

// updateStats changes the stats of model name in one transaction.
func (x *index) updateStats(name string, fn func(*ModelStats)) error {
	return x.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketModels)
		s, _, err := getJSON[ModelStats](b, []byte(name))
		if err != nil {
			return err
		}
		fn(&s)
		return putJSON(b, []byte(name), s)
	})
}

// samples returns every sample of model name.
func (x *index) samples(name string) ([]Sample, error) {
	var out []Sample
	err := x.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketByModel).Bucket([]byte(name))
		if mb == nil {
			return nil
		}
		sb := tx.Bucket(bucketSamples)
		return mb.ForEach(func(k, _ []byte) error {
			s, ok, err := getJSON[Sample](sb, k)
			if err != nil || !ok {
				return err
			}
			out = append(out, s.forModel(name))
			return nil
		})
	})
	return out, err
}

// counts returns the number of seen objects and samples (for tests and /models).
func (x *index) counts() (seen, samples int) {
	x.db.View(func(tx *bolt.Tx) error {
		seen = tx.Bucket(bucketSeen).Stats().KeyN
		samples = tx.Bucket(bucketSamples).Stats().KeyN
		return nil
	})
	return seen, samples
}

// nextJobSeq returns a new job sequence number, durably.
func (x *index) nextJobSeq() (uint64, error) {
	var n uint64
	err := x.db.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.Bucket(bucketMeta).NextSequence()
		return err
	})
	return n, err
}

// cursor returns the last key ingested under prefix.
func (x *index) cursor(prefix string) string {
	var v string
	x.db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketCursor).Get([]byte(prefix)))
		return nil
	})
	return v
}

// unseen returns the keys of keys not ingested yet.
func (x *index) unseen(keys []string) []string {
	var out []string
	x.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSeen)
		for _, k := range keys {
			if b.Get([]byte(k)) == nil {
				out = append(out, k)
			}
		}
		return nil
	})
	return out
}

// fetched is one object read by an ingest pass, ready to apply.
type fetched struct {
	key      string
	verdicts []verdictRecord // verdict batch
	label    *labelRecord    // label object
	image    *imageRef       // image object
}

// apply records fetched objects in one transaction: samples merged, stats
// counted, keys marked seen, the prefix's cursor moved to last. Objects
// already seen are skipped, so applying twice changes nothing.
func (x *index) apply(items []fetched, prefix, last string) (verdicts, images, labels int, err error) {
	err = x.db.Update(func(tx *bolt.Tx) error {
		verdicts, images, labels = 0, 0, 0
		seen := tx.Bucket(bucketSeen)
		ap := applier{tx: tx, samples: tx.Bucket(bucketSamples), models: tx.Bucket(bucketModels), stats: map[string]*ModelStats{}}
		for _, it := range items {
			if seen.Get([]byte(it.key)) != nil {
				continue
			}
			switch {
			case it.verdicts != nil:
				for _, r := range it.verdicts {
					if err := ap.verdict(r); err != nil {
						return err
					}
					verdicts++
				}
			case it.label != nil:
				if err := ap.label(*it.label); err != nil {
					return err
				}
				labels++
			case it.image != nil:
				if err := ap.image(*it.image); err != nil {
					return err
				}
				images++
			}
			if err := seen.Put([]byte(it.key), nil); err != nil {
				return err
			}
		}
		if err := ap.flush(); err != nil {
			return err
		}
		if last != "" {
			cb := tx.Bucket(bucketCursor)
			if string(cb.Get([]byte(prefix))) < last {
				return cb.Put([]byte(prefix), []byte(last))
			}
		}
		return nil
	})
	return verdicts, images, labels, err
}

// applier merges objects into samples within one transaction, keeping the
// model stats it touched in memory until flush.
type applier struct {
	tx      *bolt.Tx
	samples *bolt.Bucket
	models  *bolt.Bucket
	stats   map[string]*ModelStats
}

func (a *applier) stat(model string) (*ModelStats, error) {
	if s := a.stats[model]; s != nil {
		return s, nil
	}
	s, _, err := getJSON[ModelStats](a.models, []byte(model))
	if err != nil {
		return nil, err
	}
	a.stats[model] = &s
	return &s, nil
}

func (a *applier) flush() error {
	for name, s := range a.stats {
		if err := putJSON(a.models, []byte(name), s); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) load(station string, id uint64) (Sample, []byte, error) {
	k := sampleKey(station, id)
	s, ok, err := getJSON[Sample](a.samples, k)
	if !ok {
		s = Sample{Station: station, ID: id}
	}
	return s, k, err
}

func (a *applier) verdict(r verdictRecord) error {
	s, k, err := a.load(r.Station, r.ID)
	if err != nil {
		return err
	}
	if s.Decision != "" {
		return nil // the same verdict in another batch (a -conflict- copy)
	}
	s.Time, s.Decision, s.Score, s.Threshold = r.Time, r.Decision, r.Score, r.Threshold
	s.Model, s.Version = r.Model.Name, r.Model.Version
	if s.Model == "" {
		s.Model = "unnamed"
	}
	s.Outcomes = r.outcomes()
	if s.LabelSeq == 0 && r.Label != "" {
		s.Label = r.Label // the record's copy; a label object, when it comes, wins
	}
	countLabel := s.LabelSeq > 0 && !s.LabelCounted
	for _, name := range slices.Sorted(maps.Keys(s.Outcomes)) {
		o := s.Outcomes[name]
		st, err := a.stat(name)
		if err != nil {
			return err
		}
		st.Verdicts++
		switch o.Decision {
		case "PASS":
			st.Pass++
			if s.Image != "" {
				st.queueImage(s.Image)
			}
			if o.Score != nil {
				if st.Recent == nil {
					st.Recent = map[string][]float64{}
				}
				rs := append(st.Recent[o.Version], *o.Score)
				if len(rs) > maxRecent {
					rs = slices.Clone(rs[len(rs)-maxRecent:])
				}
				st.Recent[o.Version] = rs
			}
		case "FAIL":
			st.Fail++
		default:
			st.NoDecision++
		}
		if st.Versions == nil {
			st.Versions = map[string]int{}
		}
		st.Versions[o.Version]++
		if s.Image != "" {
			st.Images++
		}
		if countLabel {
			st.Labels++
		}
		mb, err := a.tx.Bucket(bucketByModel).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		if err := mb.Put(k, nil); err != nil {
			return err
		}
	}
	if countLabel {
		s.LabelCounted = true
	}
	return putJSON(a.samples, k, s)
}

// models are the model names of a sample whose record arrived.
func (s Sample) models() []string {
	return slices.Sorted(maps.Keys(s.Outcomes))
}

func (a *applier) label(r labelRecord) error {
	s, k, err := a.load(r.Station, r.VerdictID)
	if err != nil {
		return err
	}
	if r.Seq > s.LabelSeq {
		s.Label, s.LabelSeq = r.Label, r.Seq
	}
	for _, name := range s.models() {
		st, err := a.stat(name)
		if err != nil {
			return err
		}
		st.Labels++ // every label object counts, also a correction
		s.LabelCounted = true
	}
	return putJSON(a.samples, k, s)
}

func (a *applier) image(r imageRef) error {
	s, k, err := a.load(r.Station, r.ID)
	if err != nil {
		return err
	}
	if s.Image != "" {
		return nil
	}
	s.Image = r.Key
	for _, name := range s.models() {
		st, err := a.stat(name)
		if err != nil {
			return err
		}
		st.Images++
		if s.Outcomes[name].Decision == "PASS" {
			st.queueImage(s.Image)
		}
	}
	return putJSON(a.samples, k, s)
}

// announcement is a pending model/available publication.
type announcement struct {
	Topics  []string `json:"topics"`
	Payload []byte   `json:"payload"`
}

func (x *index) putAnnouncement(model string, a announcement) error {
	return x.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketAnnounce), []byte(model), a) })
}

func (x *index) announcements() (map[string]announcement, error) {
	out := map[string]announcement{}
	err := x.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAnnounce).ForEach(func(k, v []byte) error {
			var a announcement
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out[string(k)] = a
			return nil
		})
	})
	return out, err
}

// doneAnnouncement removes model's announcement if it is still payload.
func (x *index) doneAnnouncement(model string, payload []byte) error {
	return x.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAnnounce)
		var a announcement
		if v := b.Get([]byte(model)); v == nil || json.Unmarshal(v, &a) != nil || string(a.Payload) != string(payload) {
			return nil
		}
		return b.Delete([]byte(model))
	})
}
