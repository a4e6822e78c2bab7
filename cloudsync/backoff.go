package cloudsync

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is exponential with full jitter: the n-th consecutive failure waits
// a random time in [min, min(max, min*2^n)]. The uploader, the fetcher and
// the MQTT reconnect loop share it.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	ceil := b.min << min(b.n, 30)
	if ceil <= 0 || ceil > b.max {
		ceil = b.max
	}
	b.n++
	return b.min + rand.N(ceil-b.min+1)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
