package cloudsync

import "github.com/takt-edge/takt/cloudsync/wire"

// sampler decides which images to upload (see SampleConfig). It is used by
// one goroutine.
type sampler struct {
	cfg    SampleConfig
	counts map[hourClass]int // images chosen per capture hour and class
}

type hourClass struct {
	hour   int64 // unix hour
	reject bool
}

func newSampler(cfg SampleConfig) *sampler {
	return &sampler{cfg: cfg, counts: map[hourClass]int{}}
}

// choose reports whether it's image is uploaded and why; cap is true when
// an hourly cap refused it.
func (s *sampler) choose(it wire.Item) (upload bool, capped bool) {
	reject := it.Decision != "PASS"
	switch {
	case reject:
	case it.Score != nil && it.Threshold > 0 && *it.Score >= it.Threshold*(1-s.cfg.Margin):
	case idFraction(it.ID) < s.cfg.PassFraction:
	default:
		return false, false
	}
	limit := s.cfg.MaxPassPerHour
	if reject {
		limit = s.cfg.MaxRejectPerHour
	}
	k := hourClass{it.Time.Unix() / 3600, reject}
	if limit > 0 && s.counts[k] >= limit {
		return false, true
	}
	s.counts[k]++
	if len(s.counts) > 512 { // forget hours long past
		for old := range s.counts {
			if old.hour < k.hour-48 {
				delete(s.counts, old)
			}
		}
	}
	return true, false
}

// idFraction maps an id to [0, 1) by a hash (the splitmix64 finalizer), the
// same in every process.
func idFraction(id uint64) float64 {
	z := id + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}
