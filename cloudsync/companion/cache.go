package companion

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/takt-edge/takt/cloudsync"
)

// The image cache (state_dir/cache/{object key}) holds the images jobs and
// the image drift watch downloaded. A use (a job's dataset, a statistic)
// sets the file's modification time, so the oldest modification time is the
// least recently used image. PruneCache removes, least recently used first,
// what is over cache.max_age and then what is over cache.max_bytes; it never
// removes an image a running job pinned or one of a model's current
// validation set (the split planDataset makes of the index now: the next
// job's validation images, which also judge the promoted version).

// CacheStatus is the outcome of a prune.
type CacheStatus struct {
	Files        int       `json:"files"` // after the prune
	Bytes        int64     `json:"bytes"`
	Pinned       int       `json:"pinned"` // files kept because a job or a validation set needs them
	Removed      int       `json:"removed"`
	RemovedBytes int64     `json:"removed_bytes"`
	OverBudget   bool      `json:"over_budget"` // still over cache.max_bytes: the pinned files alone exceed it
	Time         time.Time `json:"time"`
}

// cachePruneEvery is how often the watch loop prunes (jobs prune when they end).
const cachePruneEvery = time.Minute

// pin marks image keys as needed by a running job until unpin.
func (c *Companion) pin(samples []Sample) {
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	for _, s := range samples {
		c.pinned[s.Image]++
	}
}

func (c *Companion) unpin(samples []Sample) {
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	for _, s := range samples {
		if c.pinned[s.Image]--; c.pinned[s.Image] <= 0 {
			delete(c.pinned, s.Image)
		}
	}
}

// touch marks a cached image used now.
func touch(p string) {
	now := time.Now()
	os.Chtimes(p, now, now)
}

// cacheFile is one file of the cache.
type cacheFile struct {
	path, key string
	size      int64
	mod       time.Time
}

// PruneCache applies cache.max_age and cache.max_bytes now.
func (c *Companion) PruneCache() (CacheStatus, error) {
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	now := time.Now()
	st := CacheStatus{Time: now.UTC()}
	keep := map[string]bool{}
	for _, m := range c.cfg.Models {
		samples, err := c.index.samples(m.Name)
		if err != nil {
			return st, err
		}
		if p, err := planDataset(samples, c.cfg.Training); err == nil {
			for _, s := range slices.Concat(p.ValGood, p.ValDefect) {
				keep[s.Image] = true
			}
		}
	}
	root := filepath.Join(c.cfg.StateDir, "cache")
	var files []cacheFile
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return fs.SkipAll
		}
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		rel, _ := filepath.Rel(root, p)
		f := cacheFile{path: p, key: filepath.ToSlash(rel), size: info.Size(), mod: info.ModTime()}
		if strings.HasPrefix(d.Name(), ".") && strings.Contains(d.Name(), ".tmp") {
			// A download a crash interrupted (writeAtomic's temp file).
			if now.Sub(f.mod) > time.Hour && os.Remove(p) == nil {
				st.Removed++
				st.RemovedBytes += f.size
			}
			return nil
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("cache: %w", err)
	}
	slices.SortFunc(files, func(a, b cacheFile) int { return cmp.Or(a.mod.Compare(b.mod), cmp.Compare(a.key, b.key)) })
	var total int64
	for _, f := range files {
		total += f.size
	}
	// remove deletes f unless it is pinned; the pin check and the removal
	// happen under pinMu, so a job that pins an image either sees it
	// removed (and downloads it again) or keeps it.
	remove := func(f cacheFile) bool {
		c.pinMu.Lock()
		defer c.pinMu.Unlock()
		if keep[f.key] || c.pinned[f.key] > 0 {
			return false
		}
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false
		}
		os.Remove(filepath.Dir(f.path)) // the day folder, once empty
		return true
	}
	pinned := map[string]bool{}
	kept := files[:0]
	for _, f := range files {
		over := c.cfg.Cache.MaxAge > 0 && now.Sub(f.mod) > c.cfg.Cache.MaxAge ||
			c.cfg.Cache.MaxBytes > 0 && total > int64(c.cfg.Cache.MaxBytes)
		if over && remove(f) {
			st.Removed++
			st.RemovedBytes += f.size
			total -= f.size
			continue
		}
		if over {
			pinned[f.key] = true
		}
		kept = append(kept, f)
	}
	st.Files, st.Bytes = len(kept), total
	c.pinMu.Lock()
	for _, f := range kept {
		if keep[f.key] || c.pinned[f.key] > 0 {
			pinned[f.key] = true
		}
	}
	c.pinMu.Unlock()
	st.Pinned = len(pinned)
	st.OverBudget = c.cfg.Cache.MaxBytes > 0 && total > int64(c.cfg.Cache.MaxBytes)
	c.mu.Lock()
	c.cacheStatus = st
	c.mu.Unlock()
	if st.Removed > 0 || st.OverBudget {
		c.log.Info().Int("removed", st.Removed).Int64("removed_bytes", st.RemovedBytes).Int("files", st.Files).
			Int64("bytes", st.Bytes).Int("pinned", st.Pinned).Bool("over_budget", st.OverBudget).Msg("image cache pruned")
	}
	return st, nil
}

// updateImageStats downloads the queued PASS images of each model with
// image drift on, computes their statistics and moves them to the model's
// RecentImages. An image deleted from the bucket meanwhile is dropped.
// It returns how many images it computed.
func (c *Companion) updateImageStats(ctx context.Context) (int, error) {
	done := 0
	for _, m := range c.cfg.Models {
		st, err := c.index.stats(m.Name)
		if err != nil {
			return done, err
		}
		queue := st.ImageQueue
		if len(queue) == 0 {
			continue
		}
		var stats []ImageStats
		if m.Triggers.Drift.ImageThreshold > 0 {
			// Only the newest window matter; older ones are dropped.
			queue = queue[max(0, len(queue)-m.Triggers.Drift.Window):]
			if stats, err = c.statsOf(ctx, queue); err != nil {
				return done, err
			}
		}
		n := len(st.ImageQueue)
		if err := c.index.updateStats(m.Name, func(s *ModelStats) {
			s.ImageQueue = slices.Clone(s.ImageQueue[min(n, len(s.ImageQueue)):])
			s.addImageStats(stats...)
		}); err != nil {
			return done, err
		}
		done += len(stats)
	}
	return done, nil
}

// statsOf fetches images into the cache and computes their statistics
// (ingest.concurrency at once), in order; images missing from the bucket, or
// that do not decode, are left out.
func (c *Companion) statsOf(ctx context.Context, keys []string) ([]ImageStats, error) {
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	stats := make([]*ImageStats, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Ingest.Concurrency)
	for i, k := range keys {
		g.Go(func() error {
			if err := c.fetchImage(gctx, k); errors.Is(err, cloudsync.ErrNotFound) {
				return nil // deleted from the bucket since it was indexed
			} else if err != nil {
				return err
			}
			s, err := imageStatsFile(c.cachePath(k))
			if err != nil {
				c.log.Warn().Err(err).Str("key", k).Msg("image statistics: image skipped")
				return nil
			}
			stats[i] = &s
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var out []ImageStats
	for _, s := range stats {
		if s != nil {
			out = append(out, *s)
		}
	}
	return out, nil
}

// cachedImageStats computes the statistics of samples' cached images (a
// job's, which it fetched).
func (c *Companion) cachedImageStats(samples []Sample) ([]ImageStats, error) {
	var out []ImageStats
	for _, s := range samples {
		st, err := imageStatsFile(c.cachePath(s.Image))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Image, err)
		}
		out = append(out, st)
	}
	return out, nil
}
