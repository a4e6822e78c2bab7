package eval

import (
	"math"
	"sort"
)

// EvaluateScores is the image AUROC of anomaly scores (higher = more anomalous): the
// probability that a random defect scores above a random good image, ties counting half
// (the Mann-Whitney U statistic). It is NaN when either slice is empty or holds a NaN.
func EvaluateScores(good, defect []float64) (auroc float64) {
	if len(good) == 0 || len(defect) == 0 {
		return math.NaN()
	}
	all := labelledScores(good, defect)
	for _, a := range all {
		if math.IsNaN(a.v) {
			return math.NaN()
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v < all[j].v })
	// Sum of the (mid-)ranks of the defects.
	var rankSum float64
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].v == all[i].v {
			j++
		}
		mid := float64(i+j+1) / 2 // ranks i+1..j
		for k := i; k < j; k++ {
			if all[k].bad {
				rankSum += mid
			}
		}
		i = j
	}
	nd, ng := float64(len(defect)), float64(len(good))
	return (rankSum - nd*(nd+1)/2) / (nd * ng)
}

// ROCCurve is the ROC curve of the scores, (false positive rate, true positive rate) points
// from (0,0) over every distinct score as threshold, highest first.
func ROCCurve(good, defect []float64) [][2]float64 {
	all := labelledScores(good, defect)
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	pts := [][2]float64{{0, 0}}
	var tp, fp int
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].v == all[i].v {
			if all[j].bad {
				tp++
			} else {
				fp++
			}
			j++
		}
		pts = append(pts, [2]float64{float64(fp) / float64(len(good)), float64(tp) / float64(len(defect))})
		i = j
	}
	return pts
}

// labelledScore is one image's score and whether the image is a defect.
type labelledScore struct {
	v   float64
	bad bool
}

func labelledScores(good, defect []float64) []labelledScore {
	all := make([]labelledScore, 0, len(good)+len(defect))
	for _, v := range good {
		all = append(all, labelledScore{v, false})
	}
	for _, v := range defect {
		all = append(all, labelledScore{v, true})
	}
	return all
}

// Confusion counts decisions at a threshold: a score above it is a defect (positive).
type Confusion struct {
	TP, FP, TN, FN int
}

// ConfusionAt counts the decisions at threshold, with the Runtime's rule: a score above the
// threshold is anomalous.
func ConfusionAt(good, defect []float64, threshold float64) Confusion {
	var c Confusion
	for _, v := range good {
		if v > threshold {
			c.FP++
		} else {
			c.TN++
		}
	}
	for _, v := range defect {
		if v > threshold {
			c.TP++
		} else {
			c.FN++
		}
	}
	return c
}

// Precision, Recall and F1 of the defect class; 0 when undefined.
func (c Confusion) Precision() float64 { return ratio(c.TP, c.TP+c.FP) }
func (c Confusion) Recall() float64    { return ratio(c.TP, c.TP+c.FN) }
func (c Confusion) F1() float64        { return ratio(2*c.TP, 2*c.TP+c.FP+c.FN) }

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// F1AtThreshold is the F1 of the defect class at threshold (a score above it is a defect).
func F1AtThreshold(good, defect []float64, threshold float64) float64 {
	return ConfusionAt(good, defect, threshold).F1()
}

// BestF1Threshold is the threshold, among the midpoints between sorted distinct scores, that
// gives the highest F1, and that F1 (the lowest such threshold on ties).
func BestF1Threshold(good, defect []float64) (threshold, f1 float64) {
	vs := append(append([]float64(nil), good...), defect...)
	sort.Float64s(vs)
	threshold, f1 = math.Inf(1), -1
	cands := []float64{math.Inf(-1)}
	for i := 1; i < len(vs); i++ {
		if vs[i] != vs[i-1] {
			cands = append(cands, (vs[i]+vs[i-1])/2)
		}
	}
	for _, t := range cands {
		if f := F1AtThreshold(good, defect, t); f > f1 {
			threshold, f1 = t, f
		}
	}
	return threshold, f1
}
