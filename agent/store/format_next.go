//go:build takt_next_format

package store

import bolt "go.etcd.io/bbolt"

// A test fixture, compiled only with -tags takt_next_format: it plays the next release's
// format step, read-compatible with this one (min_reader unchanged), so that the firmware
// tests run a store migrated by a "newer" agent through a rollback to this one.
func init() {
	prev := formatSteps[len(formatSteps)-1]
	formatSteps = append(formatSteps, formatStep{
		to: prev.to + 1, minReader: prev.minReader, name: "test fixture: the next release adds a bucket older agents ignore",
		apply: func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists([]byte("next_release"))
			return err
		},
	})
}
