package agent

import (
	"path/filepath"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync"
)

// StoreConfig is the `store:` section: quotas, ages and eviction of the
// verdict store (see store.Policy; keys images_max_bytes, records_max_bytes,
// images_max_age, records_max_age, evict_unsynced, delete_synced_images).
type StoreConfig = store.Policy

// SyncConfig is the `sync:` section: the uploader to S3-compatible storage
// (see cloudsync.Config). Sync is disabled while sync.endpoint is empty.
type SyncConfig = cloudsync.Config

func defaultStoreConfig() StoreConfig { return store.DefaultPolicy() }

func defaultSyncConfig() SyncConfig { return cloudsync.DefaultConfig() }

// loadSyncSettings resolves the sync file paths against the config file's
// folder base, then applies the TAKT_S3_* environment (whose paths are taken
// as they are).
func (c *Config) loadSyncSettings(base string, lookup func(string) (string, bool)) {
	for _, p := range []*string{&c.Sync.CAFile, &c.Sync.CredentialsFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	c.Sync.ApplyEnv(lookup)
}

// validateStoreSync checks the store: and sync: sections.
func (c Config) validateStoreSync() []error {
	var errs []error
	if err := c.Store.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Sync.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errs
}
