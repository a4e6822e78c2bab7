package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// pruneInterval is how often the agent applies the store's age limits and
// records quota (the image quota is enforced by every commit).
const pruneInterval = time.Minute

// storeOptions opens the store with the configured policy; without sync the
// outbox is off, so nothing waits for an upload that never comes.
// The station store is the uploader's outbox.
var _ cloudsync.Outbox = (*store.Store)(nil)

func (a *Agent) storeOptions() store.Options {
	return store.Options{Logger: a.log, Policy: a.cfg.Store, DisableOutbox: !a.cfg.Sync.Enabled(),
		OnDegraded: func(reason string) {
			if l := a.live.Load(); l != nil {
				l.alertAsync(wire.AlertDiskQuota, "store: "+reason)
			}
		}}
}

// startSync starts what runs beside the inspection loop, before the loop's
// source opens (sinks before sources): the uploader when sync is enabled, the
// store's pruning and its online compaction (compact.go). The loop runs on the returned context, which ends when
// ctx does or when one of them fails. stop ends them and returns the first
// error; with drain (the source ended or max_parts was reached, ctx is not
// done) it first waits up to sync.drain_timeout for the backlog to upload.
func (a *Agent) startSync(ctx context.Context, st *store.Store) (context.Context, func(drain bool) error, error) {
	var up *cloudsync.Uploader
	if a.cfg.Sync.Enabled() {
		var err error
		if up, err = cloudsync.New(a.cfg.Sync, st, a.log); err != nil {
			return ctx, nil, fmt.Errorf("sync: %w", err)
		}
	} else {
		a.log.Info().Msg("sync disabled: no sync.endpoint")
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	if up != nil {
		a.uploader.Store(up)
		g.Go(func() error { return up.Run(gctx) })
	}
	g.Go(func() error { return a.prune(gctx, st) })
	g.Go(func() error { return a.compact(gctx, st) })
	stop := func(drain bool) error {
		if drain && up != nil && a.cfg.Sync.DrainTimeout > 0 && parent.Err() == nil {
			a.drain(gctx, st)
		}
		cancel()
		err := g.Wait()
		a.uploader.Store(nil)
		return err
	}
	// The loop stops when a sink fails.
	loopCtx, loopCancel := context.WithCancel(ctx)
	go func() {
		<-gctx.Done()
		loopCancel()
	}()
	return loopCtx, stop, nil
}

// drain waits until the backlog is empty, sync.drain_timeout passed or ctx is done.
func (a *Agent) drain(ctx context.Context, st *store.Store) {
	deadline := time.Now().Add(a.cfg.Sync.DrainTimeout)
	for {
		b, err := st.Backlog()
		switch {
		case err != nil:
			a.log.Warn().Err(err).Msg("sync drain: cannot read the backlog")
			return
		case b.Count == 0 && b.Labels == 0:
			a.log.Info().Msg("sync backlog drained")
			return
		case time.Now().After(deadline):
			a.log.Warn().Int("count", b.Count).Int("labels", b.Labels).Int64("bytes", b.Bytes).Dur("oldest_age", b.Age(time.Now())).
				Msg("sync drain timed out; the backlog uploads after the next start")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// prune applies the store's age limits and records quota now and every
// pruneInterval until ctx is done. Failures are logged, not fatal: the store
// keeps working without pruning.
func (a *Agent) prune(ctx context.Context, st *store.Store) error {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		res, err := st.Prune(time.Now())
		switch {
		case errors.Is(err, store.ErrClosed):
			return nil
		case err != nil:
			a.log.Warn().Err(err).Msg("store prune failed")
		case res.ImagesEvicted > 0 || res.RecordsPruned > 0:
			a.log.Info().Int("images_evicted", res.ImagesEvicted).Int("records_pruned", res.RecordsPruned).Msg("store pruned")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
