package agent

import (
	"context"
	"errors"
	"time"

	"github.com/takt-edge/takt/agent/store"
)

// compactEvery is how often the agent asks the store whether an online
// compaction is due: a quarter of store.compact_idle, between 1 s and 1 min.
func compactEvery(idle time.Duration) time.Duration {
	return min(max(idle/4, time.Second), time.Minute)
}

// compact compacts the store's bbolt file online whenever the policy calls
// for it (store.compact_idle without a write, store.compact_min_free and
// store.compact_min_free_ratio of free pages) until ctx is done. Failures are
// logged, not fatal: the store keeps working with a larger file.
func (a *Agent) compact(ctx context.Context, st *store.Store) error {
	if a.cfg.Store.CompactIdle <= 0 {
		return nil
	}
	log := a.log.With().Str("component", "store").Logger()
	t := time.NewTicker(compactEvery(a.cfg.Store.CompactIdle))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		res, err := st.MaybeCompact(time.Now())
		switch {
		case errors.Is(err, store.ErrClosed):
			return nil
		case err != nil:
			log.Warn().Err(err).Msg("store compaction failed")
		case res.Compacted:
			log.Info().Int64("bytes_before", res.Before).Int64("bytes_after", res.After).
				Dur("copy", res.Copy).Dur("pause", res.Pause).Msg("store compacted")
		case res.Abandoned:
			// Due, but a write came during the copy: the next idle period retries.
			log.Debug().Str("reason", res.Skipped).Msg("store compaction abandoned")
		}
	}
}
