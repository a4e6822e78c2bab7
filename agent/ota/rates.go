package ota

import (
	"fmt"
	"math"

	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models/bundle"
)

// OperatingPoint is the operating point a bundle's manifest records: how its threshold was
// chosen and the rates its trainer expects there.
func OperatingPoint(m *bundle.Manifest) *wire.OperatingPoint {
	if m == nil {
		return nil
	}
	t := m.Thresholds
	return &wire.OperatingPoint{Threshold: t.Fail, Rule: t.Rule, FalseRejectBudget: t.FalseRejectBudget,
		ExpectedFalseReject: clonePtr(t.ExpectedFalseReject), ExpectedEscape: clonePtr(t.ExpectedEscape)}
}

func clonePtr(p *float64) *float64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// minExpectedRate is the least expected false-reject rate the test assumes: a trainer's
// estimate of 0 is none seen among a few hundred good images at most, not a promise of
// none ever, and against 0 a single rejected good part would be "clearly above".
const minExpectedRate = 0.001

// rateTest is a one-sided exact binomial test of "the model rejects good parts at the
// expected rate or less" against "more". It rejects when at least minParts parts were seen
// and the probability of k or more rejections out of n at the expected rate is below
// significance.
type rateTest struct {
	significance float64
	minParts     int
}

// rateVerdict is the outcome of a rateTest.
type rateVerdict struct {
	k, n     int
	expected float64 // the rate tested against, floored at minExpectedRate
	p        float64 // P(X >= k) for X ~ Binomial(n, expected); 1 below minParts
	above    bool    // clearly above: n >= minParts and p < significance
}

func (t rateTest) judge(k, n int, expected float64) rateVerdict {
	e := math.Min(1, math.Max(expected, minExpectedRate))
	v := rateVerdict{k: k, n: n, expected: e, p: 1}
	if n <= 0 {
		return v
	}
	v.p = binomialUpperTail(k, n, e)
	v.above = n >= t.minParts && v.p < t.significance
	return v
}

func (v rateVerdict) observed() float64 {
	if v.n == 0 {
		return 0
	}
	return float64(v.k) / float64(v.n)
}

func (v rateVerdict) String() string {
	return fmt.Sprintf("%d of %d (%.2f%%) against %.2f%% expected, p=%.2g", v.k, v.n, 100*v.observed(), 100*v.expected, v.p)
}

// binomialUpperTail is P(X >= k) for X ~ Binomial(n, p), summed in log space.
func binomialUpperTail(k, n int, p float64) float64 {
	switch {
	case k <= 0:
		return 1
	case k > n:
		return 0
	case p <= 0:
		return 0
	case p >= 1:
		return 1
	}
	lgN, _ := math.Lgamma(float64(n + 1))
	lp, lq := math.Log(p), math.Log1p(-p)
	sum := 0.0
	for i := k; i <= n; i++ {
		lgI, _ := math.Lgamma(float64(i + 1))
		lgR, _ := math.Lgamma(float64(n - i + 1))
		term := math.Exp(lgN - lgI - lgR + float64(i)*lp + float64(n-i)*lq)
		sum += term
		if i > int(float64(n)*p)+1 && term < sum*1e-17 {
			break // past the mode the terms only shrink
		}
	}
	return math.Min(1, sum)
}
