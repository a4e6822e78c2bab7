package eval

import (
	"math"
	"testing"
)

func TestEvalAUROC(t *testing.T) {
	tests := []struct {
		name         string
		good, defect []float64
		want         float64
	}{
		{"separated", []float64{1, 2, 3}, []float64{4, 5}, 1},
		{"inverted", []float64{4, 5}, []float64{1, 2, 3}, 0},
		{"all tied", []float64{1, 1}, []float64{1, 1, 1}, 0.5},
		{"one swap", []float64{1, 2, 4}, []float64{3, 5}, 5.0 / 6},
		{"tie counts half", []float64{1, 3}, []float64{3, 4}, 7.0 / 8},
		{"empty", nil, []float64{1}, math.NaN()},
	}
	for _, tt := range tests {
		got := EvaluateScores(tt.good, tt.defect)
		if !(got == tt.want || math.IsNaN(got) && math.IsNaN(tt.want)) && math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("%s: EvaluateScores = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestEvalF1(t *testing.T) {
	good, defect := []float64{1, 2, 4}, []float64{3, 5, 6}
	c := ConfusionAt(good, defect, 2.5) // TP 3, FP 1, TN 2, FN 0
	if want := (Confusion{TP: 3, FP: 1, TN: 2}); c != want {
		t.Fatalf("ConfusionAt = %+v, want %+v", c, want)
	}
	if got, want := F1AtThreshold(good, defect, 2.5), 6.0/7; math.Abs(got-want) > 1e-12 {
		t.Errorf("F1AtThreshold(2.5) = %v, want %v", got, want)
	}
	if got := F1AtThreshold(good, defect, 10); got != 0 {
		t.Errorf("F1AtThreshold(10) = %v, want 0", got)
	}
	th, f1 := BestF1Threshold(good, defect)
	if th != 2.5 || math.Abs(f1-6.0/7) > 1e-12 {
		t.Errorf("BestF1Threshold = %v, %v; want 2.5, %v", th, f1, 6.0/7)
	}
}
