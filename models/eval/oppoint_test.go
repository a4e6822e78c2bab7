package eval

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The threshold set for a 1% budget from 10 to 200 cross-validated good scores must reject
// about 1% of new good parts on average, for tails of several shapes; "1.25 x the largest"
// misses it by a wide margin on some of them.
func TestFalseRejectThresholdKeepsBudget(t *testing.T) {
	dists := []struct {
		name string
		draw func(*rand.Rand) float64
		sf   func(float64) float64 // P(X > x)
	}{
		{"normal", func(r *rand.Rand) float64 { return 1 + 0.1*r.NormFloat64() },
			func(x float64) float64 { return 0.5 * math.Erfc((x-1)/0.1/math.Sqrt2) }},
		{"exponential", func(r *rand.Rand) float64 { return r.ExpFloat64() },
			func(x float64) float64 { return math.Exp(-x) }},
		{"lognormal", func(r *rand.Rand) float64 { return math.Exp(0.5 * r.NormFloat64()) },
			func(x float64) float64 { return 0.5 * math.Erfc(math.Log(x)/0.5/math.Sqrt2) }},
	}
	const budget, rounds = 0.01, 400
	for _, c := range []struct {
		n      int
		lo, hi float64 // allowed mean false-reject rate, in budgets
	}{{10, 0.3, 2}, {30, 0.4, 1.6}, {100, 0.5, 1.4}, {200, 0.6, 1.3}} {
		for _, d := range dists {
			r := rand.New(rand.NewPCG(1, uint64(c.n)))
			var sumFit, sumMax float64
			for range rounds {
				good := make([]float64, c.n)
				for i := range good {
					good[i] = d.draw(r)
				}
				th, err := FalseRejectThreshold(good, budget)
				if err != nil {
					t.Fatal(err)
				}
				sumFit += d.sf(th)
				sumMax += d.sf(1.25 * maxOf(good))
			}
			fit, old := sumFit/rounds, sumMax/rounds
			t.Logf("%s, %d scores: mean false reject %.4f with the tail fit, %.4f with 1.25 x the largest", d.name, c.n, fit, old)
			if fit < c.lo*budget || fit > c.hi*budget {
				t.Errorf("%s, %d scores: mean false reject at the fitted threshold %.4f, want within [%.4f, %.4f]", d.name, c.n, fit, c.lo*budget, c.hi*budget)
			}
		}
	}
}

func TestTailFitRecoversShape(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, xi := range []float64{-0.3, 0, 0.3} {
		var sum float64
		const rounds = 200
		for range rounds {
			y := make([]float64, 400)
			for i := range y {
				u := r.Float64()
				if xi == 0 {
					y[i] = -math.Log(u)
				} else {
					y[i] = (math.Pow(u, -xi) - 1) / xi
				}
			}
			f, err := FitTail(y)
			if err != nil {
				t.Fatal(err)
			}
			sum += f.Shape
		}
		if got := sum / rounds; math.Abs(got-xi) > 0.1 {
			t.Errorf("mean fitted shape %.3f for GPD shape %.1f, want within 0.1", got, xi)
		}
	}
}

func TestOperatingPointRates(t *testing.T) {
	good := []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0}
	defect := []float64{0.55, 0.95, 1.5, 2, 3}
	if got := EmpiricalThreshold(good, 0.1); got != 0.9 {
		t.Errorf("EmpiricalThreshold 10%% = %v, want 0.9", got)
	}
	if got := EmpiricalThreshold(good, 0.05); got != 1.0 {
		t.Errorf("EmpiricalThreshold 5%% = %v, want 1.0", got)
	}
	fr, es := Rates(good, defect, 0.9)
	if fr != 0.1 || es != 0.2 {
		t.Errorf("Rates at 0.9 = %v, %v; want 0.1, 0.2", fr, es)
	}
	if got := CatchAtFalseReject(good, defect, 0.1); got != 0.8 {
		t.Errorf("CatchAtFalseReject 10%% = %v, want 0.8", got)
	}
	if got := FalseRejectToCatch(good, defect, 1); got != 0.5 {
		t.Errorf("FalseRejectToCatch 100%% = %v, want 0.5 (threshold below 0.55)", got)
	}
	if got := FalseRejectToCatch(good, defect, 0.6); got != 0 {
		t.Errorf("FalseRejectToCatch 60%% = %v, want 0", got)
	}
	if _, err := FalseRejectThreshold(good, 0); err == nil {
		t.Error("FalseRejectThreshold budget 0: want an error")
	}
	if _, err := FalseRejectThreshold(good[:3], 0.01); err == nil {
		t.Error("FalseRejectThreshold with 3 scores: want an error")
	}
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func TestChooseThreshold(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	good := make([]float64, 100)
	for i := range good {
		good[i] = 1 + 0.1*r.NormFloat64()
	}
	defect := []float64{0.9, 1.1, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2}
	op, err := ChooseThreshold(good, defect, RuleFalseReject, 0.01, 0)
	if err != nil {
		t.Fatal(err)
	}
	if op.Rule != RuleFalseReject || op.Budget != 0.01 {
		t.Errorf("rule %q budget %v, want false-reject 0.01", op.Rule, op.Budget)
	}
	if op.FalseReject <= 0 || op.FalseReject > 0.02 {
		t.Errorf("expected false reject %v at %v, want within (0, 0.02]", op.FalseReject, op.Threshold)
	}
	if op.Escape != 0.2 {
		t.Errorf("escape %v at %v, want 0.2 (the two defects inside the good scores)", op.Escape, op.Threshold)
	}
	floored, _ := ChooseThreshold(good, nil, RuleFalseReject, 0.01, 5)
	if floored.Threshold != 5 || floored.FalseReject > 1e-4 || !math.IsNaN(floored.Escape) {
		t.Errorf("floor 5: threshold %v false reject %v escape %v, want 5, below 1e-4, NaN", floored.Threshold, floored.FalseReject, floored.Escape)
	}
	few, err := ChooseThreshold([]float64{1, 2, 3}, nil, RuleFalseReject, 0.01, 0)
	if err != nil || few.Rule != RuleFewImages || few.Threshold != 3.75 {
		t.Errorf("three good scores: %+v, %v; want the few-images rule at 3.75", few, err)
	}
	f1, err := ChooseThreshold(good, defect, RuleBestF1, 0, 0)
	if want, _ := BestF1Threshold(good, defect); err != nil || f1.Threshold != want {
		t.Errorf("best-f1: %+v, %v; want threshold %v", f1, err, want)
	}
	for _, bad := range []struct {
		rule   string
		budget float64
		defect []float64
		good   []float64
	}{
		{RuleBestF1, 0, nil, good},
		{RuleFalseReject, 1.5, nil, good},
		{"median", 0.01, nil, good},
		{RuleFalseReject, 0.01, nil, []float64{1, math.NaN()}},
	} {
		if _, err := ChooseThreshold(bad.good, bad.defect, bad.rule, bad.budget, 0); err == nil {
			t.Errorf("ChooseThreshold(rule %q, budget %v): want an error", bad.rule, bad.budget)
		}
	}
}

// Probabilities whose good tail reaches towards 1 must not get a threshold beyond 1, where
// every defect would pass.
func TestChooseProbabilityThreshold(t *testing.T) {
	// A head's cross-validated probabilities for good parts: most near 0, a quarter spread
	// up towards 1 (the few good parts that look like a defect kind).
	var good []float64
	for i := range 75 {
		good = append(good, 0.005+0.0001*float64(i))
	}
	for i := range 25 {
		good = append(good, 0.2+0.78*float64(i)/24)
	}
	defect := []float64{0.2, 0.6, 0.95, 0.99, 0.999, 0.9999}
	raw, err := ChooseThreshold(good, defect, RuleFalseReject, 0.01, 0)
	if err != nil || raw.Threshold <= 1 {
		t.Fatalf("the raw tail fit gives %v (%v): the case needs one beyond 1", raw.Threshold, err)
	}
	op, err := ChooseProbabilityThreshold(good, defect, RuleFalseReject, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	if !(op.Threshold > 0.98 && op.Threshold < 1) || op.Escape >= 1 {
		t.Errorf("probability threshold %v (escape %v): want between the highest good score and 1, some defects caught", op.Threshold, op.Escape)
	}
	f1, err := ChooseProbabilityThreshold(good, defect, RuleBestF1, 0)
	if want, _ := BestF1Threshold(good, defect); err != nil || F1AtThreshold(good, defect, f1.Threshold) < F1AtThreshold(good, defect, want) {
		t.Errorf("best-f1 on probabilities: %v, %v; want the best F1 (%v at %v)", f1.Threshold, err, F1AtThreshold(good, defect, want), want)
	}
}
