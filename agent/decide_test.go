package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/store"
)

func TestDecide(t *testing.T) {
	const deadline = 100 * time.Millisecond
	tests := []struct {
		name       string
		score      float64
		err        error
		elapsed    time.Duration
		want       string
		wantReason string
	}{
		{"below threshold", 1.0, nil, time.Millisecond, store.Pass, ""},
		{"at threshold passes", 2.0, nil, time.Millisecond, store.Pass, ""},
		{"above threshold", 2.5, nil, time.Millisecond, store.Fail, "score 2.5 > threshold 2"},
		{"NaN", math.NaN(), nil, time.Millisecond, store.NoDecision, "score is NaN"},
		{"+Inf", math.Inf(1), nil, time.Millisecond, store.NoDecision, "score is +Inf"},
		{"-Inf", math.Inf(-1), nil, time.Millisecond, store.NoDecision, "score is -Inf"},
		{"late answer with a good score", 0.1, nil, 150 * time.Millisecond, store.NoDecision, "over deadline"},
		{"deadline error", 0, fmt.Errorf("run: %w", context.DeadlineExceeded), 100 * time.Millisecond, store.NoDecision, "over deadline"},
		{"inference error", 0, errors.New("session gone"), time.Millisecond, store.NoDecision, "inference failed: session gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := decide(tt.score, tt.err, 2.0, tt.elapsed, deadline)
			if string(got) != tt.want || !strings.Contains(reason, tt.wantReason) { // the wire form stays PASS, FAIL, NO_DECISION
				t.Fatalf("decide: got %s (%q), want %s (%q)", got, reason, tt.want, tt.wantReason)
			}
		})
	}
}

// The run's latency statistics hold a bounded sample and are exact for short runs.
func TestLatencyStatsBounded(t *testing.T) {
	var s latencyStats
	for i := range 100 {
		s.add(time.Duration(i+1) * time.Millisecond)
	}
	if p50, p99 := s.percentile(0.5), s.percentile(0.99); p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("100 parts: p50, p99 = %s, %s; want 50ms, 99ms", p50, p99)
	}
	for range 10 * latencySample {
		s.add(time.Millisecond)
	}
	if len(s.sample) != latencySample {
		t.Errorf("sample holds %d latencies, want at most %d", len(s.sample), latencySample)
	}
	if p50 := s.percentile(0.5); p50 != time.Millisecond {
		t.Errorf("p50 after a long run of 1ms parts = %s, want 1ms", p50)
	}
}
