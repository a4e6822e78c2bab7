package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"

	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
)

// Score is a model's result on a job's validation set.
type Score struct {
	// AUROC of good against defect images; NaN (null in JSON) without defects.
	AUROC float64 `json:"auroc"`
	// F1 of the defect class at the bundle's threshold (0 without defects).
	F1 float64 `json:"f1"`
	// FPR is the fraction of good images above the threshold (false rejects).
	FPR float64 `json:"fpr"`
	// Margin is the mean good score over the threshold: lower leaves more
	// room before a good part is rejected.
	Margin    float64 `json:"margin"`
	Threshold float64 `json:"threshold"`
	Good      int     `json:"good"`
	Defect    int     `json:"defect"`
	// GoodScores are the validation goods' scores (the drift baseline when
	// the trainer gave none).
	GoodScores []float64 `json:"-"`
}

// Metrics are the score as manifest metrics (no AUROC without defects).
func (s Score) Metrics() map[string]float64 {
	m := map[string]float64{"val_f1": s.F1, "val_fpr": s.FPR, "val_margin": s.Margin,
		"val_good": float64(s.Good), "val_defect": float64(s.Defect)}
	if !math.IsNaN(s.AUROC) {
		m["val_auroc"] = s.AUROC
	}
	return m
}

// CompareScores orders two results on the same validation set: higher AUROC
// (when there are defects), then higher F1, then lower FPR, then lower
// margin. It returns > 0 when a is better, 0 when equal.
func CompareScores(a, b Score) int {
	const eps = 1e-9
	cmp := func(x, y float64) int {
		switch {
		case x > y+eps:
			return 1
		case x < y-eps:
			return -1
		}
		return 0
	}
	if !math.IsNaN(a.AUROC) && !math.IsNaN(b.AUROC) {
		if c := cmp(a.AUROC, b.AUROC); c != 0 {
			return c
		}
	}
	if c := cmp(a.F1, b.F1); c != 0 {
		return c
	}
	if c := cmp(b.FPR, a.FPR); c != 0 {
		return c
	}
	return cmp(b.Margin, a.Margin)
}

// Evaluate runs a signed bundle on the validation folder (good/ and
// defect/) on the CPU and scores it.
func Evaluate(ctx context.Context, data []byte, keys bundle.TrustedKeys, val string) (Score, error) {
	b, err := bundle.ReadBundle(bytes.NewReader(data), keys)
	if err != nil {
		return Score{}, err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return Score{}, err
	}
	rt, err := models.NewRuntime(ctx, b, models.RuntimeOptions{Warmup: -1, Threads: 1})
	if err != nil {
		return Score{}, err
	}
	defer rt.Close()
	score := func(dir string) ([]float64, error) {
		frames, err := ReadImages(dir)
		if err != nil {
			return nil, err
		}
		out := make([]float64, 0, len(frames))
		for _, f := range frames {
			r, err := rt.Infer(ctx, f)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Origin, err)
			}
			if math.IsNaN(r.Score) {
				r.Score = math.Inf(1) // NO_DECISION: never counts as a pass
			}
			out = append(out, r.Score)
		}
		return out, nil
	}
	good, err := score(filepath.Join(val, ClassGood))
	if err != nil {
		return Score{}, err
	}
	defect, err := score(filepath.Join(val, ClassDefect))
	if err != nil {
		return Score{}, err
	}
	th := rt.Info().Threshold
	s := Score{AUROC: math.NaN(), Threshold: th, Good: len(good), Defect: len(defect), GoodScores: good}
	c := eval.ConfusionAt(good, defect, th)
	if len(defect) > 0 {
		s.AUROC = eval.EvaluateScores(good, defect)
		s.F1 = c.F1()
	}
	if len(good) > 0 {
		s.FPR = float64(c.FP) / float64(len(good))
		for _, v := range good {
			s.Margin += min(v/th, 10) / float64(len(good))
		}
	}
	return s, nil
}

type scoreJSON struct {
	AUROC     *float64 `json:"auroc"`
	F1        float64  `json:"f1"`
	FPR       float64  `json:"fpr"`
	Margin    float64  `json:"margin"`
	Threshold float64  `json:"threshold"`
	Good      int      `json:"good"`
	Defect    int      `json:"defect"`
}

// MarshalJSON writes a NaN AUROC (no defects) as null.
func (s Score) MarshalJSON() ([]byte, error) {
	j := scoreJSON{F1: s.F1, FPR: s.FPR, Margin: s.Margin, Threshold: s.Threshold, Good: s.Good, Defect: s.Defect}
	if !math.IsNaN(s.AUROC) {
		j.AUROC = &s.AUROC
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Score) UnmarshalJSON(data []byte) error {
	var j scoreJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*s = Score{AUROC: math.NaN(), F1: j.F1, FPR: j.FPR, Margin: j.Margin, Threshold: j.Threshold, Good: j.Good, Defect: j.Defect}
	if j.AUROC != nil {
		s.AUROC = *j.AUROC
	}
	return nil
}
