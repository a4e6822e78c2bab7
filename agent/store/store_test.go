package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var testTime = time.Date(2025, 3, 7, 14, 5, 6, 789, time.FixedZone("CET", 3600))

func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{OpenTimeout: time.Second})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newVerdict(decision, serial string) *Verdict {
	score := 0.42
	return &Verdict{
		Station:   "st-1",
		CameraID:  "cam-0",
		Serial:    serial,
		Time:      testTime,
		Decision:  decision,
		Reason:    "score vs threshold",
		Score:     &score,
		Threshold: 0.5,
		Model:     Model{Name: "bracket", Version: "1.2.0", SHA256: strings.Repeat("ab", 32)},
		Provider:  "cpu",
		Latency:   Latency{CaptureMs: 1.5, PreprocessMs: 2, InferMs: 10.25, DecideMs: 0.1, TotalMs: 13.85},
	}
}

func ptr[T any](v T) *T { return &v }

// tempFiles lists leftover image temp files under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(filepath.Join(dir, imagesDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
			found = append(found, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestCommitGetRoundtrip(t *testing.T) {
	tests := []struct {
		name      string
		v         *Verdict
		img       *Image
		wantRef   string // "" for no image; %d is the id
		wantScore *float64
	}{
		{"pass with jpg", newVerdict(Pass, "A1"), &Image{Data: []byte("jpeg bytes"), Ext: "jpg"}, "images/2025/03/07/%d.jpg", ptr(0.42)},
		{"fail with png", newVerdict(Fail, "A2"), &Image{Data: bytes.Repeat([]byte{0x89, 'P'}, 5000), Ext: "png"}, "images/2025/03/07/%d.png", ptr(0.42)},
		{"no decision without image", newVerdict(NoDecision, ""), nil, "", ptr(0.42)},
		{"NaN score stored as nil", func() *Verdict { v := newVerdict(NoDecision, "A3"); v.Score = ptr(math.NaN()); return v }(), nil, "", nil},
		{"Inf score stored as nil", func() *Verdict { v := newVerdict(Fail, "A4"); v.Score = ptr(math.Inf(1)); return v }(), nil, "", nil},
		{"nil score", func() *Verdict { v := newVerdict(NoDecision, "A5"); v.Score = nil; return v }(), nil, "", nil},
		{"detector boxes, a NaN one dropped", func() *Verdict {
			v := newVerdict(Fail, "A6")
			v.Class, v.Confidence = "dent", 0.9
			v.Boxes = []Box{{Class: "dent", Confidence: 0.9, X0: 1, Y0: 2, X1: 3, Y1: 4}, {Class: "dent", Confidence: 0.5, X0: math.NaN(), Y1: 1}}
			return v
		}(), nil, "", ptr(0.42)},
	}
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.v
			if err := s.Commit(ctx, v, tt.img); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			if v.ID == 0 {
				t.Fatalf("Commit left ID 0")
			}
			wantRef := ""
			if tt.wantRef != "" {
				wantRef = fmt.Sprintf(tt.wantRef, v.ID)
			}
			if v.ImageRef != wantRef {
				t.Errorf("ImageRef = %q, want %q", v.ImageRef, wantRef)
			}
			if v.Time.Location() != time.UTC || !v.Time.Equal(testTime) {
				t.Errorf("Time = %v, want %v in UTC", v.Time, testTime)
			}
			if v.Schema != SchemaVersion {
				t.Errorf("Schema = %d, want %d", v.Schema, SchemaVersion)
			}
			if !reflect.DeepEqual(v.Score, tt.wantScore) {
				t.Errorf("Score = %v, want %v", v.Score, tt.wantScore)
			}
			for _, b := range v.Boxes {
				if !finite(b.X0) {
					t.Errorf("Boxes keep %+v: JSON cannot hold NaN", b)
				}
			}
			got, err := s.Get(v.ID)
			if err != nil {
				t.Fatalf("Get(%d): %v", v.ID, err)
			}
			if !reflect.DeepEqual(got, *v) {
				t.Errorf("Get(%d) =\n%+v\nwant\n%+v", v.ID, got, *v)
			}
			if tt.img == nil {
				if p := s.ImagePath(got); p != "" {
					t.Errorf("ImagePath = %q, want \"\"", p)
				}
				return
			}
			p := s.ImagePath(got)
			if want := filepath.Join(dir, filepath.FromSlash(wantRef)); p != want {
				t.Errorf("ImagePath = %q, want %q", p, want)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("read image: %v", err)
			}
			if !bytes.Equal(data, tt.img.Data) {
				t.Errorf("image content = %d bytes %q..., want %d bytes %q...", len(data), data[:min(8, len(data))], len(tt.img.Data), tt.img.Data[:8])
			}
		})
	}
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Errorf("temp files left: %v, want none", tmp)
	}
	if _, err := s.Get(9999); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(9999) error = %v, want ErrNotFound", err)
	}
}

func TestList(t *testing.T) {
	s := openStore(t, t.TempDir())
	var ids []uint64
	for i := range 5 {
		v := newVerdict(Pass, fmt.Sprint("S", i))
		if err := s.Commit(context.Background(), v, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
	}
	tests := []struct {
		after uint64
		limit int
		want  []uint64
	}{
		{0, 100, ids},
		{0, 2, ids[:2]},
		{ids[1], 2, ids[2:4]},
		{ids[3], 10, ids[4:]},
		{ids[4], 10, nil},
		{math.MaxUint64, 10, nil},
	}
	for _, tt := range tests {
		got, err := s.List(tt.after, tt.limit)
		if err != nil {
			t.Fatalf("List(%d, %d): %v", tt.after, tt.limit, err)
		}
		var gotIDs []uint64
		for i, v := range got {
			gotIDs = append(gotIDs, v.ID)
			if v.Serial != fmt.Sprint("S", v.ID-ids[0]) {
				t.Errorf("List(%d, %d)[%d].Serial = %q, want %q", tt.after, tt.limit, i, v.Serial, fmt.Sprint("S", v.ID-ids[0]))
			}
		}
		if !reflect.DeepEqual(gotIDs, tt.want) {
			t.Errorf("List(%d, %d) ids = %v, want %v", tt.after, tt.limit, gotIDs, tt.want)
		}
	}
	if _, err := s.List(0, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("List(0, 0) error = %v, want ErrInvalid", err)
	}
}

func TestIDsIncreaseAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	var ids []uint64
	commitN := func(s *Store, n int) {
		for range n {
			v := newVerdict(Pass, "x")
			if err := s.Commit(context.Background(), v, &Image{Data: []byte("img"), Ext: "jpg"}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, v.ID)
		}
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	commitN(s, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	commitN(s, 3)
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Errorf("ids = %v, want strictly increasing", ids)
			break
		}
	}
	// The committing transaction raised the sequence to the last id.
	var seq uint64
	if err := s.db.View(func(tx *bolt.Tx) error { seq = tx.Bucket(bucketVerdicts).Sequence(); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := ids[len(ids)-1]; seq != want {
		t.Errorf("bucket sequence = %d, want %d", seq, want)
	}
}

// A crash can leave a gap (ids allocated, never committed) and a sequence
// raised by an earlier transaction; ids must resume above the sequence, not
// above the last key.
func TestIDsResumeFromSequence(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := newVerdict(Pass, "x")
	if err := s.Commit(context.Background(), v, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketVerdicts).SetSequence(1000) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	v = newVerdict(Pass, "y")
	if err := s.Commit(context.Background(), v, nil); err != nil {
		t.Fatal(err)
	}
	if v.ID != 1001 {
		t.Errorf("id after reopen = %d, want 1001", v.ID)
	}
}

func TestConcurrentCommits(t *testing.T) {
	const goroutines, perG = 20, 10
	dir := t.TempDir()
	s := openStore(t, dir)
	// Hold the first transaction until the other writers have queued, so the
	// test does not depend on fsync speed to see batching.
	var once sync.Once
	s.hookBeforeTx = func(n int) {
		once.Do(func() {
			deadline := time.Now().Add(10 * time.Second)
			for n+s.queued() < goroutines && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		})
	}
	decisions := []string{Pass, Fail, NoDecision}
	type result struct {
		id     uint64
		serial string
		err    error
	}
	results := make(chan result, goroutines*perG)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				serial := fmt.Sprintf("g%d-%d", g, i)
				v := newVerdict(decisions[(g*perG+i)%3], serial)
				err := s.Commit(context.Background(), v, &Image{Data: []byte(serial), Ext: "jpg"})
				results <- result{v.ID, serial, err}
			}
		})
	}
	wg.Wait()
	close(results)

	want := map[uint64]string{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("Commit(%s): %v", r.serial, r.err)
		}
		if prev, dup := want[r.id]; dup {
			t.Fatalf("id %d given to %s and %s", r.id, prev, r.serial)
		}
		want[r.id] = r.serial
	}
	if len(want) != goroutines*perG {
		t.Fatalf("distinct ids = %d, want %d", len(want), goroutines*perG)
	}
	st := s.Stats()
	if st.Verdicts != goroutines*perG {
		t.Errorf("Stats().Verdicts = %d, want %d", st.Verdicts, goroutines*perG)
	}
	if st.Transactions >= st.Verdicts {
		t.Errorf("Stats().Transactions = %d, want fewer than %d commits", st.Transactions, st.Verdicts)
	}
	t.Logf("%d verdicts in %d transactions", st.Verdicts, st.Transactions)

	// Durable: all there after reopening.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	for id, serial := range want {
		v, err := s.Get(id)
		if err != nil {
			t.Fatalf("Get(%d): %v", id, err)
		}
		if v.Serial != serial {
			t.Errorf("Get(%d).Serial = %q, want %q", id, v.Serial, serial)
		}
		if data, err := os.ReadFile(s.ImagePath(v)); err != nil || string(data) != serial {
			t.Errorf("image of %d = %q, %v; want %q", id, data, err, serial)
		}
	}
	c, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	wantCounts := Counts{Total: 200, Pass: 67, Fail: 67, NoDecision: 66}
	if c != wantCounts {
		t.Errorf("Counts() = %+v, want %+v", c, wantCounts)
	}
}

func TestCounts(t *testing.T) {
	tests := []struct {
		name      string
		decisions []string
		want      Counts
	}{
		{"empty", nil, Counts{}},
		{"one pass", []string{Pass}, Counts{Total: 1, Pass: 1}},
		{"mixed", []string{Pass, Fail, Fail, NoDecision, Pass, Pass}, Counts{Total: 6, Pass: 3, Fail: 2, NoDecision: 1}},
		{"only no decision", []string{NoDecision, NoDecision}, Counts{Total: 2, NoDecision: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range tt.decisions {
				if err := s.Commit(context.Background(), newVerdict(d, ""), nil); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := s.Counts(); err != nil || got != tt.want {
				t.Errorf("Counts() = %+v, %v; want %+v", got, err, tt.want)
			}
			s.Close()
			s = openStore(t, dir)
			if got, err := s.Counts(); err != nil || got != tt.want {
				t.Errorf("Counts() after reopen = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestCommitInvalid(t *testing.T) {
	img := &Image{Data: []byte("x"), Ext: "jpg"}
	tests := []struct {
		name string
		edit func(*Verdict)
		img  *Image
	}{
		{"empty decision", func(v *Verdict) { v.Decision = "" }, img},
		{"lowercase decision", func(v *Verdict) { v.Decision = "pass" }, img},
		{"zero time", func(v *Verdict) { v.Time = time.Time{} }, img},
		{"NaN threshold", func(v *Verdict) { v.Threshold = math.NaN() }, img},
		{"Inf latency", func(v *Verdict) { v.Latency.InferMs = math.Inf(1) }, img},
		{"ext with dot", nil, &Image{Data: []byte("x"), Ext: ".jpg"}},
		{"ext with slash", nil, &Image{Data: []byte("x"), Ext: "../x"}},
		{"empty ext", nil, &Image{Data: []byte("x")}},
		{"empty image", nil, &Image{Ext: "png"}},
	}
	dir := t.TempDir()
	s := openStore(t, dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerdict(Pass, "bad")
			if tt.edit != nil {
				tt.edit(v)
			}
			before := fmt.Sprintf("%+v", *v) // %v, as NaN != NaN
			err := s.Commit(context.Background(), v, tt.img)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Commit error = %v, want ErrInvalid", err)
			}
			if after := fmt.Sprintf("%+v", *v); after != before {
				t.Errorf("Commit changed v on error: %s, want %s", after, before)
			}
		})
	}
	if err := s.Commit(context.Background(), nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Commit(nil) error = %v, want ErrInvalid", err)
	}
	if c, _ := s.Counts(); c.Total != 0 {
		t.Errorf("Counts().Total = %d, want 0", c.Total)
	}
	assertNoImages(t, dir)
}

func assertNoImages(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(filepath.Join(dir, imagesDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("file %s exists, want no image files", p)
		}
		return err
	})
}

func TestCommitCanceledContext(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v := newVerdict(Fail, "c")
	if err := s.Commit(ctx, v, &Image{Data: []byte("x"), Ext: "jpg"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit error = %v, want context.Canceled", err)
	}
	if v.ID != 0 {
		t.Errorf("v.ID = %d after a cancelled Commit, want 0", v.ID)
	}
	if c, _ := s.Counts(); c.Total != 0 {
		t.Errorf("Counts().Total = %d, want 0", c.Total)
	}
	assertNoImages(t, dir)
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	s1, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s2, err := Open(dir, Options{OpenTimeout: 100 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open succeeded, want a lock error")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open error = %v, want ErrLocked", err)
	}
	if want := "store " + filepath.Join(dir, dbFile) + " is locked by another process"; err.Error() != want {
		t.Errorf("second Open error = %q, want %q", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %s, want about the 100ms timeout", d)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err = Open(dir, Options{OpenTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s2.Close()
}

func TestOpenOptionsInvalid(t *testing.T) {
	tests := []struct {
		name string
		dir  string
		opts Options
	}{
		{"empty dir", "", Options{}},
		{"negative timeout", t.TempDir(), Options{OpenTimeout: -time.Second}},
	}
	for _, tt := range tests {
		if s, err := Open(tt.dir, tt.opts); !errors.Is(err, ErrInvalid) {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: Open error = %v, want ErrInvalid", tt.name, err)
		}
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := newVerdict(Pass, "a")
	if err := s.Commit(context.Background(), v, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"Commit", func() error { return s.Commit(context.Background(), newVerdict(Pass, "b"), nil) }},
		{"Get", func() error { _, err := s.Get(v.ID); return err }},
		{"List", func() error { _, err := s.List(0, 10); return err }},
		{"Counts", func() error { _, err := s.Counts(); return err }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close error = %v, want ErrClosed", c.name, err)
		}
	}
}

// Close while writers are busy: every Commit either succeeded (and its
// verdict is there after reopening) or failed with ErrClosed.
func TestCloseDrainsPending(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		committed []uint64
		wg        sync.WaitGroup
	)
	started := make(chan struct{}, 8)
	for range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				v := newVerdict(Pass, "d")
				err := s.Commit(context.Background(), v, &Image{Data: []byte("d"), Ext: "jpg"})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Commit: %v", err)
					return
				}
				mu.Lock()
				committed = append(committed, v.ID)
				mu.Unlock()
				if i == 0 {
					started <- struct{}{}
				}
			}
		})
	}
	for range 8 {
		<-started
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s = openStore(t, dir)
	for _, id := range committed {
		v, err := s.Get(id)
		if err != nil {
			t.Errorf("Get(%d) after Close and reopen: %v", id, err)
			continue
		}
		if _, err := os.Stat(s.ImagePath(v)); err != nil {
			t.Errorf("image of %d: %v", id, err)
		}
	}
	if c, _ := s.Counts(); c.Total != uint64(len(committed)) {
		t.Errorf("Counts().Total = %d, want %d (one per successful Commit)", c.Total, len(committed))
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := newVerdict(Pass, "keep")
	if err := s.Commit(context.Background(), v, &Image{Data: []byte("keep"), Ext: "jpg"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	day := filepath.Dir(filepath.Join(dir, filepath.FromSlash(v.ImageRef)))
	files := []struct {
		name     string
		wantKept bool
	}{
		{fmt.Sprintf("%d.jpg", v.ID), true},    // committed
		{tmpPrefix + "123456", false},          // interrupted write
		{fmt.Sprintf("%d.jpg", v.ID+1), false}, // image without record
		{fmt.Sprintf("%d.png", v.ID+7), false}, // image without record, later id
		{"notes.txt", true},                    // not ours to judge
	}
	for _, f := range files[1:] {
		if err := os.WriteFile(filepath.Join(day, f.name), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	otherDay := filepath.Join(dir, imagesDir, "2020", "01", "01")
	os.MkdirAll(otherDay, 0o750)
	os.WriteFile(filepath.Join(otherDay, tmpPrefix+"x"), nil, 0o640)

	s = openStore(t, dir)
	for _, f := range files {
		_, err := os.Stat(filepath.Join(day, f.name))
		if kept := err == nil; kept != f.wantKept {
			t.Errorf("%s kept = %v, want %v", f.name, kept, f.wantKept)
		}
	}
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Errorf("temp files after Open: %v, want none", tmp)
	}
	// The next id reuses the orphan's id; its image is the new one.
	v2 := newVerdict(Fail, "new")
	if err := s.Commit(context.Background(), v2, &Image{Data: []byte("new"), Ext: "jpg"}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(s.ImagePath(*v2)); string(data) != "new" {
		t.Errorf("image of %d = %q, want %q", v2.ID, data, "new")
	}
}

func TestImagePathRejectsEscapes(t *testing.T) {
	s := openStore(t, t.TempDir())
	for _, ref := range []string{"../etc/passwd", "/etc/passwd", "images/../../x"} {
		if p := s.ImagePath(Verdict{ImageRef: ref}); p != "" {
			t.Errorf("ImagePath(%q) = %q, want \"\"", ref, p)
		}
	}
}

// TestCommitGathersTheWritersOfTheLastBatch checks the committer's wait
// policy: with 16 writers committing in a loop, every transaction after the
// first carries all 16 verdicts (without gathering they alternate 1 and 15),
// and a lone writer is never held back waiting for company.
func TestCommitGathersTheWritersOfTheLastBatch(t *testing.T) {
	const writers, perWriter = 16, 8
	s := openStore(t, t.TempDir())
	// A generous bound, so the check does not depend on the speed of this
	// machine: in production it is a quarter of the last transaction.
	s.gatherWait = time.Second
	var mu sync.Mutex
	var sizes []int
	s.hookBeforeTx = func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range perWriter {
				if err := s.Commit(context.Background(), newVerdict(Pass, fmt.Sprintf("w%d-%d", w, i)), nil); err != nil {
					t.Error(err)
				}
			}
		})
	}
	// The first batch is whoever queued first; hold it until all writers
	// queued so the test sees the steady state from the second one on.
	var once sync.Once
	first := s.hookBeforeTx
	s.hookBeforeTx = func(n int) {
		once.Do(func() {
			deadline := time.Now().Add(10 * time.Second)
			for n+s.queued() < writers && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		})
		first(n)
	}
	close(start)
	wg.Wait()
	mu.Lock()
	got := slices.Clone(sizes)
	mu.Unlock()
	// Batch 0 is whoever queued first (k writers), batch 1 the others (held
	// above); from then on all 16 re-join before each transaction, until the
	// last batch: the k writers of batch 0 finishing (after one bounded wait).
	total := 0
	for i, n := range got {
		if i >= 2 && i < len(got)-1 && n != writers {
			t.Errorf("batch %d carried %d verdicts, want %d (all writers); batches %v", i, n, writers, got)
			break
		}
	}
	total = 0
	for _, n := range got {
		total += n
	}
	if total != writers*perWriter {
		t.Fatalf("batches carried %d verdicts, want %d", total, writers*perWriter)
	}
	// A lone writer: the last batch (16) makes the first lone commit wait
	// for company up to the bound; then the expectation drops to one and
	// no later commit waits.
	s.gatherWait = 300 * time.Millisecond
	timeouts := s.gatherTimeouts.Load()
	for i := range 6 {
		if err := s.Commit(context.Background(), newVerdict(Fail, fmt.Sprint("lone-", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if slow := s.gatherTimeouts.Load() - timeouts; slow > 1 {
		t.Errorf("%d of 6 lone commits waited for company, want at most the first", slow)
	}
}
