package agent

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// alertLimiter lets at most burst alerts of each kind through per window
// (fixed windows, one per kind, starting at the kind's first alert) and counts
// the rest, which flush returns as summary alerts once their window ended.
type alertLimiter struct {
	burst  int
	window time.Duration

	mu    sync.Mutex
	kinds map[string]*alertWindow
}

type alertWindow struct {
	start  time.Time
	sent   int
	folded int
}

// folded is the summary of one kind's window: n alerts held back since since.
type folded struct {
	kind  string
	n     int
	since time.Time
}

func newAlertLimiter(burst int, window time.Duration) *alertLimiter {
	return &alertLimiter{burst: burst, window: window, kinds: map[string]*alertWindow{}}
}

// allow reports whether an alert of kind raised at now may be sent; when it
// may not, it is counted as folded. A window that ended is summarized first:
// its summary comes back as sum (n == 0 when there is none).
func (l *alertLimiter) allow(kind string, now time.Time) (ok bool, sum folded) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.kinds[kind]
	if w == nil || now.Sub(w.start) >= l.window {
		if w != nil && w.folded > 0 {
			sum = folded{kind: kind, n: w.folded, since: w.start}
		}
		w = &alertWindow{start: now}
		l.kinds[kind] = w
	}
	if w.sent < l.burst {
		w.sent++
		return true, sum
	}
	w.folded++
	return false, sum
}

// flush returns the summaries of the windows that ended by now, ordered by kind.
func (l *alertLimiter) flush(now time.Time) []folded {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []folded
	for kind, w := range l.kinds {
		if now.Sub(w.start) < l.window {
			continue
		}
		if w.folded > 0 {
			out = append(out, folded{kind: kind, n: w.folded, since: w.start})
		}
		delete(l.kinds, kind)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].kind < out[j].kind })
	return out
}

// severityOf is the severity an alert kind is sent with.
func severityOf(kind string) string {
	switch kind {
	case wire.AlertCameraStalled, wire.AlertDiskQuota:
		return wire.SeverityCritical
	case wire.AlertFail, wire.AlertNoDecision, wire.AlertProviderFallback,
		wire.AlertSyncBacklog, wire.AlertDegraded:
		return wire.SeverityWarning
	}
	return wire.SeverityInfo
}

// newAlertID is a random id for an alert that no verdict names.
func newAlertID(station string) string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return station + "-a" + hex.EncodeToString(b[:])
}
