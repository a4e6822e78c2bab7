package camera

import (
	"math"
	"time"
)

// streamClockDrift is how far a camera's clock may fall behind the host's, as a share of
// elapsed time, before streamClock dates its frames too early.
const streamClockDrift = 1e-3

// streamClock dates the frames of a network stream by their presentation timestamps, so a
// frame that FFmpeg buffered and handed over late keeps the time it was sent at, not the
// time it arrived: a trigger must never be answered with a frame of the part before it.
// The offset between the host's clock and the stream's is the smallest delivery time minus
// timestamp seen so far (the promptest delivery), let grow by streamClockDrift so a camera
// clock running slow does not date frames ever earlier; a frame's time is its timestamp
// plus that offset, never later than its delivery. Timestamps that are missing or do not
// advance (some HTTP MJPEG servers, a restarted stream) start it over: that frame keeps
// its delivery time.
type streamClock struct {
	valid   bool
	lastPTS time.Duration
	lastAt  time.Time
	offset  int64 // host Unix nanoseconds minus the timestamp
}

// at is the time of a frame delivered at now with presentation timestamp ptsMs (OpenCV's
// position in milliseconds).
func (c *streamClock) at(now time.Time, ptsMs float64) time.Time {
	if math.IsNaN(ptsMs) || math.IsInf(ptsMs, 0) || ptsMs <= 0 {
		c.valid = false
		return now
	}
	pts := time.Duration(ptsMs * float64(time.Millisecond))
	delivered := now.UnixNano() - int64(pts)
	if !c.valid || pts <= c.lastPTS {
		c.valid, c.lastPTS, c.lastAt, c.offset = true, pts, now, delivered
		return now
	}
	relaxed := c.offset + int64(streamClockDrift*float64(now.Sub(c.lastAt)))
	c.offset = min(relaxed, delivered)
	c.lastPTS, c.lastAt = pts, now
	return time.Unix(0, int64(pts)+c.offset)
}
