package eval

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// DefaultFalseReject is the share of good parts a plant accepts to reject when it says
// nothing else: one in a hundred.
const DefaultFalseReject = 0.01

// TailFit is a generalized Pareto distribution fitted to the highest good scores: the
// exceedances over Threshold, which a fraction Share of the good scores pass. Quantiles
// beyond the largest score seen come from it rather than from one or two extreme images.
type TailFit struct {
	Threshold float64 // u: the scores above it are the tail
	Share     float64 // fraction of the good scores above u
	Scale     float64 // sigma of the GPD
	Shape     float64 // xi of the GPD (0 an exponential tail, < 0 a bounded one)
}

// Tail fit limits: at least minTail exceedances (else the fit is noise), a quarter of the
// scores otherwise; the shape is clamped where probability-weighted moments stay sane.
const (
	minTail       = 5
	tailShare     = 0.25
	maxTailShape  = 0.5
	minTailShape  = -0.5
	minTailScores = 8
	// tailUncertainty widens the fitted scale by (1 + tailUncertainty/k) for k
	// exceedances: a quantile read off a fit to few points lies too low on average (the
	// plug-in estimate ignores the fit's own error). The factor is set by simulation so
	// that the mean false-reject rate at the chosen threshold stays near the budget from 8
	// to 200 good scores drawn from normal, exponential and lognormal laws
	// (TestFalseRejectThresholdKeepsBudget).
	tailUncertainty = 3
)

// FitTail fits the upper tail of the good scores by probability-weighted moments
// (Hosking and Wallis, 1987), which stay stable with a few dozen exceedances. It needs at
// least minTailScores finite scores.
func FitTail(good []float64) (TailFit, error) {
	s := finiteSorted(good)
	if len(s) < minTailScores {
		return TailFit{}, fmt.Errorf("tail fit: %d good scores, need at least %d", len(s), minTailScores)
	}
	k := max(minTail, int(math.Round(tailShare*float64(len(s)))))
	k = min(k, len(s)-1)
	u := s[len(s)-k-1]
	y := make([]float64, k)
	for i := range y {
		y[i] = s[len(s)-k+i] - u
	}
	// y ascending; a0 = E[Y], a1 = E[Y (1 - F(Y))] with plotting positions (i+0.65)/k.
	var a0, a1 float64
	for i, v := range y {
		a0 += v
		a1 += v * (1 - (float64(i)+0.65)/float64(k))
	}
	a0 /= float64(k)
	a1 /= float64(k)
	fit := TailFit{Threshold: u, Share: float64(k) / float64(len(s))}
	if a0 <= 0 || a0-2*a1 <= 0 {
		// All exceedances equal (or degenerate): no spread beyond u to extrapolate.
		fit.Scale = a0
		return fit, nil
	}
	fit.Shape = min(maxTailShape, max(minTailShape, 2-a0/(a0-2*a1)))
	fit.Scale = 2 * a0 * a1 / (a0 - 2*a1)
	if fit.Shape != 2-a0/(a0-2*a1) {
		// Clamped shape: keep the tail's mean, E[Y] = sigma / (1 - xi).
		fit.Scale = a0 * (1 - fit.Shape)
	}
	fit.Scale *= 1 + tailUncertainty/float64(k)
	return fit, nil
}

// Quantile is the score that a fraction p of good parts exceed under the fit (p within
// the tail); for p at or above Share it is the tail's own threshold.
func (f TailFit) Quantile(p float64) float64 {
	if p >= f.Share {
		return f.Threshold
	}
	r := p / f.Share
	if math.Abs(f.Shape) < 1e-9 {
		return f.Threshold - f.Scale*math.Log(r)
	}
	return f.Threshold + f.Scale/f.Shape*(math.Pow(r, -f.Shape)-1)
}

// Exceedance is the fraction of good parts expected to score above t under the fit.
func (f TailFit) Exceedance(t float64) float64 {
	if t <= f.Threshold {
		return f.Share
	}
	y := t - f.Threshold
	if f.Scale <= 0 {
		return 0
	}
	if math.Abs(f.Shape) < 1e-9 {
		return f.Share * math.Exp(-y/f.Scale)
	}
	z := 1 + f.Shape*y/f.Scale
	if z <= 0 {
		return 0
	}
	return f.Share * math.Pow(z, -1/f.Shape)
}

// FalseRejectThreshold is the threshold at which a fraction budget of good parts is
// expected to be rejected (score above it), from cross-validated good scores: the tail
// fit's quantile where the budget lies beyond the upper quarter of the scores, the
// empirical quantile otherwise.
func FalseRejectThreshold(good []float64, budget float64) (float64, error) {
	if !(budget > 0 && budget < 1) {
		return 0, fmt.Errorf("false-reject budget %g: want a fraction between 0 and 1 (e.g. 0.01 for 1%%)", budget)
	}
	fit, err := FitTail(good)
	if err != nil {
		return 0, err
	}
	if budget < fit.Share {
		return fit.Quantile(budget), nil
	}
	return EmpiricalThreshold(good, budget), nil
}

// EmpiricalThreshold is the lowest score threshold that rejects at most a fraction
// budget of the given good scores (a score above it is rejected).
func EmpiricalThreshold(good []float64, budget float64) float64 {
	s := finiteSorted(good)
	if len(s) == 0 {
		return math.Inf(1)
	}
	allowed := int(math.Floor(budget * float64(len(s))))
	if allowed >= len(s) {
		return math.Inf(-1)
	}
	return s[len(s)-1-allowed]
}

// Rates at a threshold: the fraction of good scores above it (rejected) and of defect
// scores at or below it (passed).
func Rates(good, defect []float64, threshold float64) (falseReject, escape float64) {
	var fr, es int
	for _, v := range good {
		if v > threshold {
			fr++
		}
	}
	for _, v := range defect {
		if !(v > threshold) {
			es++
		}
	}
	return frac(fr, len(good)), frac(es, len(defect))
}

// CatchAtFalseReject is the fraction of defects caught when the threshold rejects at most
// a fraction budget of these good scores.
func CatchAtFalseReject(good, defect []float64, budget float64) float64 {
	_, escape := Rates(good, defect, EmpiricalThreshold(good, budget))
	return 1 - escape
}

// FalseRejectToCatch is the smallest fraction of these good scores rejected by a threshold
// that catches at least a fraction catch of the defects.
func FalseRejectToCatch(good, defect []float64, catch float64) float64 {
	d := finiteSorted(defect)
	if len(d) == 0 {
		return math.NaN()
	}
	// The highest threshold catching ceil(catch*n) defects sits just below the
	// ceil(catch*n)-th highest defect score.
	need := int(math.Ceil(catch*float64(len(d)) - 1e-9))
	need = max(1, min(need, len(d)))
	t := math.Nextafter(d[len(d)-need], math.Inf(-1))
	fr, _ := Rates(good, nil, t)
	return fr
}

func finiteSorted(v []float64) []float64 {
	s := make([]float64, 0, len(v))
	for _, x := range v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			s = append(s, x)
		}
	}
	slices.Sort(s)
	return s
}

func frac(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Rules a FAIL threshold is chosen by.
const (
	// RuleFalseReject keeps the expected share of good parts rejected within the budget;
	// with labeled defects that lowest threshold is also the one that catches the most.
	RuleFalseReject = "false-reject"
	// RuleBestF1 maximizes F1 on the cross-validated defects (needs labeled defects).
	RuleBestF1 = "best-f1"
	// RuleFewImages is the fallback with fewer good scores than a tail fit needs: a
	// margin of smallSetMargin over the highest score.
	RuleFewImages = "few-images"
)

// smallSetMargin is the fallback's margin over the highest good score.
const smallSetMargin = 0.25

// OperatingPoint is a FAIL threshold with the rule that chose it and the rates the
// cross-validated scores predict at it.
type OperatingPoint struct {
	Threshold float64
	Rule      string
	// Budget is the false-reject budget the rule kept (RuleFalseReject).
	Budget float64
	// FalseReject is the expected share of good parts scoring above Threshold (the tail
	// fit beyond the scores seen, their empirical share within them).
	FalseReject float64
	// Escape is the share of the defects' scores at or below Threshold; NaN without them.
	Escape float64
}

// ChooseThreshold picks the FAIL threshold from cross-validated scores: good (each from a
// model that did not see the image) and defect (may be empty). rule is RuleFalseReject
// (budget a fraction, e.g. DefaultFalseReject) or RuleBestF1; the threshold is at least
// floor. With fewer good scores than the tail fit needs, RuleFalseReject falls back to
// RuleFewImages.
func ChooseThreshold(good, defect []float64, rule string, budget, floor float64) (OperatingPoint, error) {
	s := finiteSorted(good)
	if len(s) != len(good) || len(s) == 0 {
		return OperatingPoint{}, fmt.Errorf("choose threshold: %d of %d good scores are finite, want all (and at least one)", len(s), len(good))
	}
	op := OperatingPoint{Rule: rule, Escape: math.NaN()}
	switch rule {
	case RuleBestF1:
		if len(defect) == 0 {
			return OperatingPoint{}, errors.New("choose threshold: best-f1 needs labeled defects")
		}
		th, _ := BestF1Threshold(good, defect)
		op.Threshold = th
	case RuleFalseReject:
		if !(budget > 0 && budget < 1) {
			return OperatingPoint{}, fmt.Errorf("false-reject budget %g: want a fraction between 0 and 1 (e.g. 0.01 for 1%%)", budget)
		}
		op.Budget = budget
		if len(s) < minTailScores {
			op.Rule = RuleFewImages
			op.Threshold = s[len(s)-1] * (1 + smallSetMargin)
			break
		}
		th, err := FalseRejectThreshold(good, budget)
		if err != nil {
			return OperatingPoint{}, err
		}
		op.Threshold = th
	default:
		return OperatingPoint{}, fmt.Errorf("threshold rule %q: want %s or %s", rule, RuleFalseReject, RuleBestF1)
	}
	if math.IsInf(op.Threshold, 0) || math.IsNaN(op.Threshold) {
		op.Threshold = s[len(s)-1] * (1 + smallSetMargin)
	}
	op.Threshold = max(op.Threshold, floor)
	op.FalseReject = ExpectedFalseReject(good, op.Threshold)
	if len(defect) > 0 {
		_, op.Escape = Rates(nil, defect, op.Threshold)
	}
	return op, nil
}

// ExpectedFalseReject is the share of good parts expected to score above t, from
// cross-validated good scores: the tail fit beyond the upper quarter of them, their
// empirical share below that (and with too few scores for a fit).
func ExpectedFalseReject(good []float64, t float64) float64 {
	fit, err := FitTail(good)
	if err != nil || t <= fit.Threshold {
		fr, _ := Rates(good, nil, t)
		return fr
	}
	return fit.Exceedance(t)
}

// ChooseProbabilityThreshold is ChooseThreshold for scores that are probabilities (0..1):
// the tail is fitted to their log-odds, where it is unbounded, and the threshold turned
// back into a probability, so it never lies beyond 1 where no part can reach it.
func ChooseProbabilityThreshold(good, defect []float64, rule string, budget float64) (OperatingPoint, error) {
	op, err := ChooseThreshold(logits(good), logits(defect), rule, budget, math.Inf(-1))
	if err != nil {
		return op, err
	}
	op.Threshold = 1 / (1 + math.Exp(-op.Threshold))
	return op, nil
}

// logits maps probabilities to log-odds, clamped a hair inside 0..1 so that 0 and 1 stay
// finite; NaN stays NaN.
func logits(p []float64) []float64 {
	const eps = 1e-9
	out := make([]float64, len(p))
	for i, v := range p {
		v = min(1-eps, max(eps, v))
		out[i] = math.Log(v / (1 - v))
	}
	return out
}
