package companion

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// The image cache is pruned by age and by size, least recently used first;
// it keeps the images of the model's current validation set and those a
// running job pinned, says when those alone are over the budget, and a job
// after a prune downloads what it needs again.
func TestCachePrune(t *testing.T) {
	e := newEnv(t, false)
	e.uploadParts("st1", "part", 10, []synth.Defect{synth.Scratch, synth.Spot, synth.Crack})
	var other []part
	for i := 1; i <= 6; i++ {
		other = append(other, part{id: uint64(i), decision: "PASS", score: 0.5, image: partPNG(t, i, synth.None)})
	}
	e.upload("st9", "other", day, other) // a model takt-cloud does not train: nothing pins its images
	ctx := context.Background()
	c := e.newCompanion(e.cfg)
	if _, err := c.Ingest(ctx); err != nil {
		t.Fatal(err)
	}
	parts, _ := c.index.samples("part")
	others, _ := c.index.samples("other")
	if err := c.fetchImages(ctx, slices.Concat(parts, others)); err != nil {
		t.Fatal(err)
	}
	plan, err := planDataset(parts, c.cfg.Training)
	if err != nil {
		t.Fatal(err)
	}
	val := slices.Concat(plan.ValGood, plan.ValDefect)
	train := slices.Concat(plan.TrainGood, plan.TrainDefect)
	cached := func(s Sample) bool { _, err := os.Stat(c.cachePath(s.Image)); return err == nil }
	used := func(s Sample, ago time.Duration) {
		tm := time.Now().Add(-ago)
		if err := os.Chtimes(c.cachePath(s.Image), tm, tm); err != nil {
			t.Fatal(err)
		}
	}

	// By age: unused for 2h with max_age 1h goes, unless validation needs it.
	c.cfg.Cache.MaxAge, c.cfg.Cache.MaxBytes = time.Hour, 0
	for _, s := range []Sample{others[0], others[1], train[0], val[0]} {
		used(s, 2*time.Hour)
	}
	st, err := c.PruneCache()
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 3 || cached(others[0]) || cached(others[1]) || cached(train[0]) || !cached(val[0]) || !cached(others[2]) {
		t.Errorf("age prune = %+v; want the 3 old unpinned images removed, the old validation image and the recent ones kept", st)
	}

	// By size: the least recently used unpinned images go until the cache
	// fits; a running job's pin protects the oldest.
	c.cfg.Cache.MaxAge = 0
	lru := slices.Concat(others[2:], train[1:]) // unpinned, oldest first
	for i, s := range lru {
		used(s, time.Duration(100-i)*time.Minute)
	}
	c.pin(lru[:1])
	size := func(s Sample) int64 { fi, _ := os.Stat(c.cachePath(s.Image)); return fi.Size() }
	c.cfg.Cache.MaxBytes = 0
	all, _ := c.PruneCache()
	budget := all.Bytes - size(lru[1]) - size(lru[2]) - size(lru[3]) + 1
	c.cfg.Cache.MaxBytes = wire.ByteSize(budget)
	st, err = c.PruneCache()
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 3 || !cached(lru[0]) || cached(lru[1]) || cached(lru[2]) || cached(lru[3]) || !cached(lru[4]) || st.Bytes >= budget {
		t.Errorf("size prune to %d bytes = %+v; want lru[1..3] removed (lru[0] pinned by a job, lru[4] newer)", budget, st)
	}
	c.unpin(lru[:1])

	// A budget below what validation needs: every unpinned image goes, the
	// validation set stays, and the status says it is over budget.
	c.cfg.Cache.MaxBytes = 1
	st, _ = c.PruneCache()
	for _, s := range val {
		if !cached(s) {
			t.Errorf("validation image %s removed", s.Image)
		}
	}
	if !st.OverBudget || st.Files != len(val) || st.Pinned != len(val) {
		t.Errorf("prune below the validation set = %+v; want %d files left, all pinned, over budget", st, len(val))
	}
	c.Close()

	// A job downloads the pruned images again and marks what it used.
	c = e.newCompanion(e.cfg)
	e.run(c)
	j, err := c.Enqueue("part", TriggerManual, "after a prune")
	if err != nil {
		t.Fatal(err)
	}
	if j = waitJob(t, c, j.ID, 2*time.Minute); j.State != JobSucceeded {
		_, log, _ := c.Job(j.ID)
		t.Fatalf("job after prune = %+v; log:\n%s", j, log)
	}
	for _, s := range slices.Concat(train, val) {
		fi, err := os.Stat(c.cachePath(s.Image))
		if err != nil || time.Since(fi.ModTime()) > time.Minute {
			t.Errorf("%s after the job: %v; want it cached and marked used", s.Image, err)
		}
	}
}
