package companion

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// The drift statistic (cloudsync/README.md, "Triggers and drift").
//
// A version's baseline is the deciles of its good-image scores at training:
// scores of good images the model did not train on (the cross-validated
// scores of the builtin trainers, or the held-out validation goods), nine cut
// points b1 <= ... <= b9 that split the baseline into ten bins of 10% each.
// The stations' recent PASS scores of that version fall into the same ten
// bins with fractions a1..a10; the population stability index
//
//	PSI = sum_i (a_i - e_i) * ln(a_i / e_i),  e_i = 0.1,  a_i floored at psiFloor
//
// is 0 when the recent scores spread like the baseline and grows as they
// move: a common reading is < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted.
// PSI sees a shift of the whole distribution (lighting, a new batch of
// material, a dirty lens) long before parts start to FAIL, and it needs no
// labels. It is computed from PASS scores only, as FAILs are what the model
// is meant to find.

// baselineMetricKeys are the manifest metrics the deciles are also stored
// under, so a bundle carries its own baseline.
var baselineMetricKeys = []string{"score_p10", "score_p20", "score_p30", "score_p40", "score_p50",
	"score_p60", "score_p70", "score_p80", "score_p90"}

const psiFloor = 1e-4

// deciles returns the nine cut points of scores (linear interpolation).
func deciles(scores []float64) ([]float64, error) {
	if len(scores) < 2 {
		return nil, fmt.Errorf("baseline: %d scores, need at least 2", len(scores))
	}
	s := slices.Clone(scores)
	for _, v := range s {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, errors.New("baseline: a score is not finite")
		}
	}
	slices.Sort(s)
	out := make([]float64, 9)
	for i := range out {
		p := float64(i+1) / 10 * float64(len(s)-1)
		lo := int(math.Floor(p))
		hi := min(lo+1, len(s)-1)
		out[i] = s[lo] + (p-float64(lo))*(s[hi]-s[lo])
	}
	return out, nil
}

// psi is the population stability index of recent against the baseline
// deciles (see above).
func psi(cuts, recent []float64) (float64, error) {
	if len(cuts) != 9 {
		return 0, fmt.Errorf("drift: baseline has %d cut points, want 9", len(cuts))
	}
	if len(recent) == 0 {
		return 0, errors.New("drift: no recent scores")
	}
	var counts [10]int
	for _, v := range recent {
		// Bin i holds cuts[i-1] < v <= cuts[i]; ties at a cut go left, as the
		// baseline's own deciles put them.
		i, _ := slices.BinarySearch(cuts, v)
		counts[i]++
	}
	var sum float64
	for _, c := range counts {
		a := max(float64(c)/float64(len(recent)), psiFloor)
		sum += (a - 0.1) * math.Log(a/0.1)
	}
	return sum, nil
}

// DriftStatus is the drift watch's view of one model version: PSI,
// Samples, Threshold and Reason are those of the scores; Images has one
// entry per image statistic (when image drift is on); Drifted is true when
// the scores or any image statistic drifted.
type DriftStatus struct {
	Version   string       `json:"version"`
	PSI       float64      `json:"psi"`
	Samples   int          `json:"samples"`
	Threshold float64      `json:"threshold"`
	Drifted   bool         `json:"drifted"`
	Reason    string       `json:"reason,omitempty"` // why the scores could not be judged
	Images    []ImageDrift `json:"images,omitempty"`
}

// scoreDrifted reports whether the scores (not the images) drifted.
func (d DriftStatus) scoreDrifted() bool {
	return d.Reason == "" && d.Threshold > 0 && d.PSI > d.Threshold
}

// driftOf judges the latest window PASS scores of version against baseline.
func driftOf(cfg DriftConfig, version string, baseline, recent []float64) DriftStatus {
	st := DriftStatus{Version: version, Threshold: cfg.Threshold}
	if len(recent) > cfg.Window {
		recent = recent[len(recent)-cfg.Window:]
	}
	st.Samples = len(recent)
	switch {
	case len(baseline) != 9:
		st.Reason = "no baseline deciles for this version"
		return st
	case len(recent) < cfg.MinSamples:
		st.Reason = fmt.Sprintf("%d PASS scores, need %d", len(recent), cfg.MinSamples)
		return st
	}
	v, err := psi(baseline, recent)
	if err != nil {
		st.Reason = err.Error()
		return st
	}
	st.PSI = v
	st.Drifted = cfg.Threshold > 0 && v > cfg.Threshold
	return st
}
