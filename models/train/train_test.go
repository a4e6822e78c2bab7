package train

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
)

func TestFitHeadSeparates(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var x [][]float32
	var y []bool
	for i := range 200 {
		bad := i%4 == 0 // unbalanced, as labels are
		row := make([]float32, 6)
		for j := range row {
			row[j] = float32(rng.NormFloat64()*3 + 10) // noise features, large offset
		}
		if bad {
			row[2] += 6 // the one informative feature
		}
		x, y = append(x, row), append(y, bad)
	}
	h, err := fitHead(x, y, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	var good, defect []float64
	for i, row := range x {
		if y[i] {
			defect = append(defect, h.prob(row))
		} else {
			good = append(good, h.prob(row))
		}
	}
	if a := eval.EvaluateScores(good, defect); a < 0.85 {
		t.Errorf("head AUROC on its training rows %.3f, want >= 0.85", a)
	}
	for j, w := range h.w {
		if j != 2 && abs32(w) >= abs32(h.w[2]) {
			t.Errorf("weight %d = %.3f, informative weight 2 = %.3f: want the informative one largest", j, w, h.w[2])
		}
	}
	if _, err := fitHead(x[:3], []bool{false, false, false}, 0.01); err == nil || !strings.Contains(err.Error(), "both good and defective") {
		t.Errorf("fitHead with one class: %v, want an error naming both classes", err)
	}
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

func TestPseudoDefectChangesAPatch(t *testing.T) {
	f := camera.Frame{Width: 80, Height: 60, Channels: 3, Pix: make([]byte, 80*60*3)}
	for i := range f.Pix {
		f.Pix[i] = 128
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for k := range 20 {
		p := pseudoDefect(f, rng)
		changed := 0
		for i := range p.Pix {
			if p.Pix[i] != 128 {
				changed++
			}
		}
		if changed == 0 || changed > len(p.Pix)/4 {
			t.Errorf("pseudo-defect %d changed %d of %d values: want a small flaw", k, changed, len(p.Pix))
		}
	}
	for _, v := range f.Pix {
		if v != 128 {
			t.Fatal("pseudoDefect changed its input frame")
		}
	}
}

func TestTrainOptionsErrors(t *testing.T) {
	good := []camera.Frame{{Width: 64, Height: 48, Channels: 1, Pix: make([]byte, 64*48)}, {Width: 64, Height: 48, Channels: 1, Pix: make([]byte, 64*48)}}
	tests := []struct {
		name string
		set  TrainSet
		opts TrainOptions
		want string
	}{
		{"method", TrainSet{Good: good}, TrainOptions{Method: "svm"}, `method "svm"`},
		{"one good", TrainSet{Good: good[:1]}, TrainOptions{}, "1 good images"},
		{"bad defect", TrainSet{Good: good, Defects: []LabeledFrame{{Frame: camera.Frame{Width: 4, Height: 4, Channels: 1}, Label: "crack"}}}, TrainOptions{}, "defect image 0 (crack)"},
		{"lambda", TrainSet{Good: good}, TrainOptions{HeadLambda: -1}, "head_lambda"},
	}
	for _, tt := range tests {
		if _, err := trainPlan(tt.set, tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: trainPlan error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	o, err := trainPlan(TrainSet{Good: good}, TrainOptions{Name: "n", Ignore: []bundle.Region{{X0: 0, Y0: 0, X1: 0.5, Y1: 0.5}}})
	if err != nil {
		t.Fatal(err)
	}
	if o.Method != MethodAuto || o.Template.Width != 128 || o.PatchCore.K != 3 || o.PatchCore.Name != "n" || len(o.Template.Ignore) != 1 || o.HeadLambda != 0.001 {
		t.Errorf("defaults: method %q template width %d patchcore k %d name %q ignore %v head lambda %g", o.Method, o.Template.Width, o.PatchCore.K, o.PatchCore.Name, o.Template.Ignore, o.HeadLambda)
	}
}
