package agent

import (
	"context"

	"github.com/takt-edge/takt/agent/sdnotify"
)

var _ sdnotify.Station = (*live)(nil)

// Healthy reports whether the inspection loop is not stuck (healthy).
func (l *live) Healthy() (bool, string) { return l.healthy() }

// Parts is the number of verdicts in the store.
func (l *live) Parts() uint64 {
	c, _ := l.st.Counts()
	return c.Total
}

// startSystemd tells systemd the agent is ready and pets its watchdog while healthy.
func (l *live) startSystemd(context.Context) (func(context.Context) error, error) {
	n := sdnotify.New()
	if n == nil {
		return nil, nil
	}
	log := l.log.With().Str("component", "systemd").Logger()
	return func(ctx context.Context) error { return n.Run(ctx, l, log) }, nil
}
