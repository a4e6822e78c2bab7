package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/takt-edge/takt/agent/store"
)

// decide turns one inference outcome into a verdict. A part is never PASSed by default:
// an error, a late answer or a score that is not a finite number gives NO_DECISION.
func decide(score float64, inferErr error, threshold float64, elapsed, deadline time.Duration) (decision, reason string) {
	switch {
	case errors.Is(inferErr, context.DeadlineExceeded) || (inferErr == nil && elapsed > deadline):
		return store.NoDecision, fmt.Sprintf("over deadline: %s > %s", elapsed.Round(time.Microsecond), deadline)
	case inferErr != nil:
		return store.NoDecision, "inference failed: " + inferErr.Error()
	case math.IsNaN(score) || math.IsInf(score, 0):
		return store.NoDecision, fmt.Sprintf("score is %v", score)
	case score > threshold:
		return store.Fail, fmt.Sprintf("score %.4g > threshold %.4g", score, threshold)
	default:
		return store.Pass, ""
	}
}
