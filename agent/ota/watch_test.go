package ota

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// TestWatchLimits feeds the watch parts of promoted models against a baseline and checks
// which limit, if any, it reports and when.
func TestWatchLimits(t *testing.T) {
	p := WatchPolicy{Parts: 50, MinParts: 10, MaxErrorRate: 0.02, MaxLatencyRatio: 3, MaxFailRateIncrease: 0.2, MaxRestarts: 3,
		FalseRejectSignificance: 0.05, FalseRejectMinParts: 30}
	onePercent := 0.01
	base := otaBaseline{Parts: 100, FailRate: 0.1, InferP99: 10}
	pass := partOutcome{Decision: store.Pass, Score: 0.1, InferMs: 9}
	fail := partOutcome{Decision: store.Fail, Score: 0.9, InferMs: 9}
	nan := partOutcome{Decision: store.NoDecision, Score: math.NaN(), ModelErr: true}
	slow := partOutcome{Decision: store.Pass, Score: 0.1, InferMs: 50}
	cases := []struct {
		name     string
		parts    func(i int) partOutcome
		want     string // in the rollback reason; "" passes
		within   int    // parts by which the rollback must have been asked
		expected *float64
	}{
		{"good model passes", func(i int) partOutcome {
			if i%10 == 0 {
				return fail
			}
			return pass
		}, "", 0, nil},
		{"NaN rolls back at the first part", func(int) partOutcome { return nan }, "NaN score", 1, nil},
		{"FAIL rate jump", func(i int) partOutcome {
			if i%2 == 0 {
				return fail
			}
			return pass
		}, "FAIL rate", 10, nil},
		{"slow model", func(int) partOutcome { return slow }, "inference p99", 10, nil},
		// Expected 1% false rejects over the previous model's 10% FAIL share: 20% FAILs is
		// clearly above 11% once enough parts were seen, and below the +0.2 limit.
		{"FAIL share above the expected false rejects", func(i int) partOutcome {
			if i%5 == 0 {
				return fail
			}
			return pass
		}, "false rejects: FAIL share", 50, &onePercent},
		{"FAIL share within the expected false rejects", func(i int) partOutcome {
			if i%9 == 0 {
				return fail
			}
			return pass
		}, "", 0, &onePercent},
	}
	for _, c := range cases {
		rb := make(chan string, 1)
		w := newWatchRun("m", p, base, c.expected, 20, rb)
		passed, at := false, 0
		for i := range p.Parts {
			if w.add(c.parts(i)) {
				passed = true
			}
			if len(rb) > 0 && at == 0 {
				at = i + 1
			}
		}
		if fig := w.wire(); fig.Parts != p.Parts && c.want == "" || (c.want != "") != (fig.Limit != "") {
			t.Errorf("%s: watch figures %+v: want %d parts and a limit only when one was crossed", c.name, fig, p.Parts)
		}
		switch {
		case c.want == "" && (!passed || len(rb) > 0):
			t.Errorf("%s: passed %v, rollback %v; want passed", c.name, passed, len(rb) > 0)
		case c.want != "":
			if len(rb) == 0 {
				t.Errorf("%s: no rollback, want one for %q", c.name, c.want)
				continue
			}
			reason := <-rb
			if !strings.Contains(reason, c.want) || at > c.within || passed {
				t.Errorf("%s: rollback %q after %d parts (passed %v); want %q within %d parts", c.name, reason, at, passed, c.want, c.within)
			}
		}
	}
}

func TestJudgeShadow(t *testing.T) {
	u := &Updater{cfg: Config{Deadline: 100 * time.Millisecond, // budget 50 ms
		Validate: ValidatePolicy{LatencyRuns: 30, LatencyFraction: 0.5},
		Shadow: ShadowPolicy{Parts: 200, MinParts: 20, MinAgreement: 0.95, MaxLatencyRatio: 2, Queue: 2, MaxBusy: 0.25,
			FalseRejectSignificance: 0.001, FalseRejectMinParts: 30}}}
	onePercent := 0.01
	u.cfg.Shadow.Parts, u.cfg.Shadow.MinParts = 100, 20
	good := ShadowFigures{Compared: 100, Agree: 99, Agreement: 0.99, CandP99: 12, ActiveP99: 10, ActivePassed: 95, CandFailOfPassed: 1}
	for _, c := range []struct {
		name        string
		edit        func(f *ShadowFigures)
		want, limit string
	}{
		{"good", func(*ShadowFigures) {}, "", ""},
		{"too few parts", func(f *ShadowFigures) { f.Compared = 5 }, "only 5 parts", "shadow.min_parts"},
		{"errors", func(f *ShadowFigures) { f.CandErrors = 1 }, "failed 1 of 100", "shadow.errors"},
		{"disagrees", func(f *ShadowFigures) { f.Agreement = 0.5 }, "agreement 0.500", "shadow.min_agreement"},
		{"slower, within the budget", func(f *ShadowFigures) { f.CandP99 = 25 }, "", ""},
		{"slow", func(f *ShadowFigures) { f.CandP99 = 60 }, "inference p99 60.00 ms", "shadow.max_latency_ratio"},
		{"false rejects within the expected rate", func(f *ShadowFigures) { f.ExpectedFalseReject, f.CandFailOfPassed = &onePercent, 2 }, "", ""},
		{"false rejects clearly above the expected rate", func(f *ShadowFigures) { f.ExpectedFalseReject, f.CandFailOfPassed = &onePercent, 8 },
			"FAIL 8 of the 95 parts the serving model PASSed (8.42%), clearly above the 1.00% its manifest expects", "shadow.false_reject_significance"},
		{"too few good parts to tell", func(f *ShadowFigures) {
			f.ExpectedFalseReject, f.ActivePassed, f.CandFailOfPassed, f.Agreement = &onePercent, 20, 8, 0.96
		}, "", ""},
		{"a bundle without expected rates is judged as before", func(f *ShadowFigures) { f.CandFailOfPassed = 8 }, "", ""},
	} {
		f := good
		c.edit(&f)
		got, limit := u.judgeShadow(f)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) || limit != c.limit {
			t.Errorf("%s: %q (limit %q), want %q (limit %q)", c.name, got, limit, c.want, c.limit)
		}
		// What model/status would carry is a valid message.
		m := wire.ModelStatusMsg{Schema: wire.MessageSchema, Station: "s", State: wire.ModelRejected, Figures: f.wire(limit, 50)}
		if _, err := wire.Encode(&m); err != nil {
			t.Errorf("%s: figures %+v do not encode: %v", c.name, m.Figures, err)
		}
	}
}
