package agent

import (
	"math/rand/v2"
	"time"
)

// latencySample bounds the latencies a run keeps for its percentiles.
const latencySample = 8192

// latencyStats keeps a uniform sample of a run's latencies (reservoir sampling), so a run
// of any length holds at most latencySample of them. Its percentiles are exact while the
// run has no more parts than that, and estimates after. The loop alone uses it.
type latencyStats struct {
	n      uint64 // latencies seen
	sample []time.Duration
}

func (s *latencyStats) add(d time.Duration) {
	s.n++
	if len(s.sample) < latencySample {
		s.sample = append(s.sample, d)
		return
	}
	if j := rand.Uint64N(s.n); j < latencySample {
		s.sample[j] = d
	}
}

// percentile is the q-quantile (nearest rank) of the sample; 0 without latencies.
func (s *latencyStats) percentile(q float64) time.Duration { return percentile(s.sample, q) }
