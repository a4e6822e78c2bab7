package cloudsync

import (
	"context"
	"io"
	"time"

	"golang.org/x/time/rate"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// limiter paces the bytes of all transfers of one object store to the
// bandwidth cap; nil means no cap.
type limiter struct {
	*rate.Limiter
}

// chunk is the largest read the limited reader passes through at once; the
// burst is never smaller, so one read never waits for more than the bucket
// holds.
const chunk = 16 << 10

func newLimiter(bytesPerSecond wire.ByteSize) *limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	r := float64(bytesPerSecond)
	burst := max(int(r/10), chunk) // 100 ms of traffic, at least one chunk
	return &limiter{rate.NewLimiter(rate.Limit(r), burst)}
}

// transferTime is how long n bytes take at the bandwidth cap.
func (l *limiter) transferTime(n int) time.Duration {
	if l == nil {
		return 0
	}
	return time.Duration(float64(n) / float64(l.Limit()) * float64(time.Second))
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
		if werr := lr.l.WaitN(lr.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
