package ota

import (
	"math"
	"testing"
)

func TestBinomialUpperTail(t *testing.T) {
	for _, c := range []struct {
		k, n int
		p    float64
		want float64
	}{
		{7, 200, 0.01, 0.004295542328851562},
		{6, 200, 0.01, 0.016022906909177518},
		{5, 200, 0.01, 0.0517462636307858},
		{14, 190, 0.01, 1.0841651983080805e-08},
		{30, 1000, 0.02, 0.02069651867323916},
		{1, 10, 0.5, 1 - 1.0/1024},
		{0, 10, 0.3, 1},
		{11, 10, 0.3, 0},
		{10, 10, 1, 1},
		{1, 10, 0, 0},
	} {
		if got := binomialUpperTail(c.k, c.n, c.p); math.Abs(got-c.want) > 1e-9*math.Max(1e-9, c.want)+1e-15 {
			t.Errorf("P(X >= %d | n=%d, p=%g) = %.12g, want %.12g", c.k, c.n, c.p, got, c.want)
		}
	}
}

// The false-reject test at 1% significance: a share that is clearly above the expected
// rate is, a share within sampling noise of it is not, and neither are too few parts.
func TestRateTest(t *testing.T) {
	rt := rateTest{significance: 0.01, minParts: 30}
	for _, c := range []struct {
		name     string
		k, n     int
		expected float64
		above    bool
	}{
		{"7 of 200 at 1% expected is clearly above (p=0.004)", 7, 200, 0.01, true},
		{"6 of 200 at 1% expected could be noise (p=0.016)", 6, 200, 0.01, false},
		{"5 of 200 at 1% is 2.5x the rate but could be noise (p=0.05)", 5, 200, 0.01, false},
		{"none of 1000", 0, 1000, 0.01, false},
		{"everything FAILs, but only 10 parts", 10, 10, 0.01, false},
		{"8 of 40 at 1% is clearly above", 8, 40, 0.01, true},
		{"2 of 40 at 1% could be noise", 2, 40, 0.01, false},
		{"an expected 0 is floored: 1 of 200 is no proof", 1, 200, 0, false},
		{"an expected 0 is floored: 5 of 200 is", 5, 200, 0, true},
		{"30 of 1000 at 2% is not below 1% significance (p=0.021)", 30, 1000, 0.02, false},
	} {
		v := rt.judge(c.k, c.n, c.expected)
		if v.above != c.above {
			t.Errorf("%s: above %v (%s), want %v", c.name, v.above, v, c.above)
		}
	}
}
