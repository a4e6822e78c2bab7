package camera

import (
	"math"
	"testing"
	"time"
)

func TestStreamClock(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	ms := func(d float64) time.Duration { return time.Duration(d * float64(time.Millisecond)) }
	var c streamClock
	// 25 frames a second, delivered 30 ms after they were sent, then three frames held
	// back 400 ms by the network and handed over in a burst.
	for i := 1; i <= 10; i++ {
		sent := t0.Add(ms(float64(40 * i)))
		if got := c.at(sent.Add(ms(30)), float64(1000+40*i)); i > 1 && !got.Equal(sent.Add(ms(30))) {
			t.Fatalf("frame %d delivered on time: dated %v, want its delivery %v", i, got.Sub(t0), sent.Add(ms(30)).Sub(t0))
		}
	}
	burst := t0.Add(ms(40*13 + 430))
	for i := 11; i <= 13; i++ {
		sent := t0.Add(ms(float64(40 * i)))
		got := c.at(burst, float64(1000+40*i))
		if d := got.Sub(sent.Add(ms(30))); math.Abs(float64(d)) > float64(time.Millisecond) {
			t.Errorf("frame %d delivered %v late: dated %v after it was sent, want 30ms (as the prompt ones)", i, burst.Sub(sent), got.Sub(sent))
		}
		if got.After(burst) {
			t.Errorf("frame %d dated after its delivery", i)
		}
	}
	// Timestamps that stop advancing or vanish: each frame keeps its delivery time.
	for _, pts := range []float64{1000 + 40*13, 1000 + 40*13, 0, math.NaN()} {
		now := burst.Add(time.Second)
		if got := c.at(now, pts); !got.Equal(now) {
			t.Errorf("timestamp %v not advancing: dated %v, want the delivery time", pts, got.Sub(now))
		}
	}
	// A camera clock running 0.05% slow is followed: frames are never dated more than a
	// few milliseconds before their prompt delivery.
	var slow streamClock
	for i := 1; i <= 1500; i++ { // one minute at 25 frames a second
		host := t0.Add(ms(float64(40 * i)))
		got := slow.at(host, float64(40*i)*(1-0.0005))
		if lag := host.Sub(got); lag > 5*time.Millisecond || lag < 0 {
			t.Fatalf("frame %d of a slow camera clock: dated %v before its delivery, want at most 5ms", i, lag)
		}
	}
}
