package train

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/eval"
)

// TestCrossValidationDoesNotLeak trains on labels that carry no signal: the "defects" are
// good parts like the rest. Every method then over-fits whatever it can, and a reported
// cross-validated AUROC above chance could only come from images that a part of the model
// saw. It must agree with the AUROC on new parts within their sampling spread.
func TestCrossValidationDoesNotLeak(t *testing.T) {
	if raceEnabled {
		t.Skip("training is ~20x slower under -race; make test runs this test without it")
	}
	const nGood, nFake = 30, 15
	good := goodParts(nGood, 7000, 1)
	var fakes []LabeledFrame
	for i, f := range goodParts(nFake, 7100, 1) {
		kind := "spot"
		if i%2 == 1 {
			kind = "scratch"
		}
		fakes = append(fakes, LabeledFrame{Frame: f, Label: kind})
	}
	m, err := Train(context.Background(), TrainSet{Good: good, Defects: fakes}, TrainOptions{Name: "noise", Threads: 2, MinHeadDefects: 10})
	if err != nil {
		t.Fatal(err)
	}
	newGood, newFake := goodParts(nGood, 7200, 1), goodParts(nFake, 7300, 1)
	score := func(fs []camera.Frame) []float64 {
		out, err := scoreRaw(m.ONNX, m.Input, 2, fs)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	held := eval.EvaluateScores(score(newGood), score(newFake))
	reported := m.Metrics["cv_auroc"]
	// The AUROC of two samples of 30 and 15 with no difference between them has a standard
	// deviation of about sqrt((30+15+1)/(12*30*15)); the difference of two such, sqrt(2) of that.
	sd := math.Sqrt(2 * float64(nGood+nFake+1) / (12 * nGood * nFake))
	t.Logf("method %s supervised %v: reported cv_auroc %.3f, on new parts %.3f (spread of the difference %.3f); metrics %v",
		m.Method, m.Supervised, reported, held, sd, m.Metrics)
	if math.Abs(reported-held) > 2.5*sd {
		t.Errorf("labels without signal: reported cv_auroc %.3f, new parts %.3f: want them within %.3f of each other", reported, held, 2.5*sd)
	}
	// Every candidate's figure (the choice between methods rests on them) must be chance too.
	for k, v := range m.Metrics {
		if strings.HasPrefix(k, "cv_auroc") && v > 0.5+2.5*sd/math.Sqrt2 {
			t.Errorf("labels without signal: %s %.3f, want at most %.3f (chance within 2.5 standard deviations)", k, v, 0.5+2.5*sd/math.Sqrt2)
		}
	}
}
