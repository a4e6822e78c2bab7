package cloudsync

import (
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// limiter is a token bucket of bytes per second shared by all uploads; nil
// means no cap.
type limiter struct {
	rate  float64 // bytes per second
	burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newLimiter(bytesPerSecond wire.ByteSize) *limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	r := float64(bytesPerSecond)
	burst := max(r/10, 16<<10) // 100 ms of traffic, at least one chunk
	return &limiter{rate: r, burst: burst, tokens: burst, last: time.Now()}
}

// chunk is the largest read the limited reader passes through at once.
const chunk = 16 << 10

// wait blocks until n bytes (n <= burst) may be sent, or ctx is done.
func (l *limiter) wait(ctx context.Context, n int) error {
	for {
		l.mu.Lock()
		now := time.Now()
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
		if l.tokens >= float64(n) {
			l.tokens -= float64(n)
			l.mu.Unlock()
			return nil
		}
		d := time.Duration((float64(n) - l.tokens) / l.rate * float64(time.Second))
		l.mu.Unlock()
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// limitedReader paces reads of r through l.
type limitedReader struct {
	ctx context.Context
	r   io.Reader
	l   *limiter
}

func (lr *limitedReader) Read(p []byte) (int, error) {
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := lr.r.Read(p)
	if n > 0 {
		if werr := lr.l.wait(lr.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// backoff is exponential with full jitter: the n-th consecutive failure waits
// a random time in [min, min(max, min*2^n)].
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
