package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/takt-edge/takt/agent/store"
)

// decision is the verdict on one part. Its string is the wire and JSON form the verdict
// record carries (PASS, FAIL, NO_DECISION); the zero value is no verdict at all, so nothing
// is PASSed by default.
type decision string

const (
	pass       = decision(store.Pass)
	fail       = decision(store.Fail)
	noDecision = decision(store.NoDecision)
)

// decide turns one inference outcome into a verdict. A part is never PASSed by default:
// an error, a late answer or a score that is not a finite number gives NO_DECISION.
func decide(score float64, inferErr error, threshold float64, elapsed, deadline time.Duration) (decision, string) {
	switch {
	case errors.Is(inferErr, context.DeadlineExceeded) || (inferErr == nil && elapsed > deadline):
		return noDecision, fmt.Sprintf("over deadline: %s > %s", elapsed.Round(time.Microsecond), deadline)
	case inferErr != nil:
		return noDecision, "inference failed: " + inferErr.Error()
	case math.IsNaN(score) || math.IsInf(score, 0):
		return noDecision, fmt.Sprintf("score is %v", score)
	case score > threshold:
		return fail, fmt.Sprintf("score %.4g > threshold %.4g", score, threshold)
	default:
		return pass, ""
	}
}
