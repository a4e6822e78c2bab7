package store

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// Image classes, lowest first: when the image quota is full the lowest class is
// evicted first. Class names are used in [Policy.EvictUnsynced].
const (
	ClassDebug  = "debug"  // debug frames ([Image.Debug])
	ClassPass   = "pass"   // PASS images
	ClassReject = "reject" // FAIL and NO_DECISION images
)

var classNames = []string{ClassDebug, ClassPass, ClassReject} // index = class byte

// Policy bounds what the store keeps on disk. The zero value keeps everything
// forever and never evicts an image that is not yet synced.
type Policy struct {
	// ImagesMaxBytes is the quota for image files (the sum of their sizes).
	// A commit that would exceed it first evicts images (see the package doc);
	// if nothing may be evicted the new image is dropped and the verdict is
	// stored without it. 0 means no quota.
	ImagesMaxBytes wire.ByteSize `yaml:"images_max_bytes"`
	// RecordsMaxBytes bounds the verdict records in the database (their JSON
	// plus a fixed overhead per record). Above it the oldest synced records
	// are removed. Unsynced records are never removed; if they alone exceed
	// the quota the store reports degraded. 0 means no quota.
	RecordsMaxBytes wire.ByteSize `yaml:"records_max_bytes"`
	// ImagesMaxAge removes images captured longer ago than this (synced ones,
	// and unsynced ones of the classes in EvictUnsynced). 0 keeps them until
	// the quota needs the room.
	ImagesMaxAge time.Duration `yaml:"images_max_age"`
	// RecordsMaxAge removes synced verdict records (and their images)
	// captured longer ago than this. 0 keeps them until the quota needs the
	// room. Must be 0 or at least ImagesMaxAge: records outlive images.
	RecordsMaxAge time.Duration `yaml:"records_max_age"`
	// EvictUnsynced lists the image classes (debug, pass, reject) that may be
	// evicted before they are uploaded. Unsynced reject (FAIL, NO_DECISION)
	// images are evicted only if listed here.
	EvictUnsynced []string `yaml:"evict_unsynced"`
	// DeleteSyncedImages deletes an image as soon as its verdict is synced
	// instead of keeping it until the quota or its age needs it gone.
	DeleteSyncedImages bool `yaml:"delete_synced_images"`

	// CompactIdle turns on online compaction of takt.db (bbolt never shrinks
	// its file): after this long without a write, if the free pages reach
	// CompactMinFree bytes and CompactMinFreeRatio of the file, the file is
	// rewritten without them (see Store.MaybeCompact). 0 turns it off.
	CompactIdle time.Duration `yaml:"compact_idle"`
	// CompactMinFree is the least free space (bytes) worth a compaction.
	CompactMinFree wire.ByteSize `yaml:"compact_min_free"`
	// CompactMinFreeRatio is the least share of the file (0..1, below 1)
	// that must be free pages for a compaction.
	CompactMinFreeRatio float64 `yaml:"compact_min_free_ratio"`
}

// DefaultPolicy is the policy of a station with the default config: 8 GiB of
// images kept up to 30 days, 1 GiB of records kept up to a year, unsynced
// debug and PASS images evictable, FAIL and NO_DECISION images never before
// they are uploaded; takt.db compacted after 5 idle minutes once at least
// 64 MiB and half of it are free pages.
func DefaultPolicy() Policy {
	return Policy{
		ImagesMaxBytes:  8 << 30,
		RecordsMaxBytes: 1 << 30,
		ImagesMaxAge:    30 * 24 * time.Hour,
		RecordsMaxAge:   365 * 24 * time.Hour,
		EvictUnsynced:   []string{ClassDebug, ClassPass},

		CompactIdle:         5 * time.Minute,
		CompactMinFree:      64 << 20,
		CompactMinFreeRatio: 0.5,
	}
}

// Validate checks the policy; messages name the key under "store.".
func (p Policy) Validate() error {
	var errs []error
	if p.ImagesMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("store.images_max_bytes: %d must be >= 0 (0 = no quota)", p.ImagesMaxBytes))
	}
	if p.RecordsMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("store.records_max_bytes: %d must be >= 0 (0 = no quota)", p.RecordsMaxBytes))
	}
	if p.ImagesMaxAge < 0 {
		errs = append(errs, fmt.Errorf("store.images_max_age: %v must be >= 0 (0 = keep until the quota needs room)", p.ImagesMaxAge))
	}
	if p.RecordsMaxAge < 0 {
		errs = append(errs, fmt.Errorf("store.records_max_age: %v must be >= 0 (0 = keep until the quota needs room)", p.RecordsMaxAge))
	}
	if p.RecordsMaxAge > 0 && (p.ImagesMaxAge == 0 || p.ImagesMaxAge > p.RecordsMaxAge) {
		errs = append(errs, fmt.Errorf("store.records_max_age: %v is shorter than store.images_max_age (%v, 0 = forever); records must be kept at least as long as images", p.RecordsMaxAge, p.ImagesMaxAge))
	}
	if p.CompactIdle < 0 {
		errs = append(errs, fmt.Errorf("store.compact_idle: %v must be >= 0 (0 = no online compaction)", p.CompactIdle))
	}
	if p.CompactMinFree < 0 {
		errs = append(errs, fmt.Errorf("store.compact_min_free: %d must be >= 0", p.CompactMinFree))
	}
	if math.IsNaN(p.CompactMinFreeRatio) || p.CompactMinFreeRatio < 0 || p.CompactMinFreeRatio >= 1 {
		errs = append(errs, fmt.Errorf("store.compact_min_free_ratio: %v must be at least 0 and below 1 (0.5 = half the file free)", p.CompactMinFreeRatio))
	}
	for _, c := range p.EvictUnsynced {
		if !slices.Contains(classNames, c) {
			errs = append(errs, fmt.Errorf("store.evict_unsynced: %q is not one of debug, pass, reject", c))
		}
	}
	return errors.Join(errs...)
}

// evictUnsynced returns, per class byte, whether unsynced images may go.
func (p Policy) evictUnsynced() [3]bool {
	var out [3]bool
	for i, name := range classNames {
		out[i] = slices.Contains(p.EvictUnsynced, name)
	}
	return out
}

// classOf is the eviction class byte of an image.
func classOf(decision string, debug bool) byte {
	switch {
	case debug:
		return 0
	case decision == Pass:
		return 1
	}
	return 2
}
