//go:build cgo

package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/eval"
	"github.com/takt-edge/takt/models/onnxgraph"
)

// kindRows are good rows around 0 in every feature and two defect kinds on opposite sides
// of feature 0, plus rare rows of a third kind on feature 1: no one hyperplane puts both
// sides of feature 0 above the good rows.
func kindRows(rng *rand.Rand) (x [][]float32, defect []bool, kind []string) {
	row := func(f0, f1 float64) []float32 {
		r := make([]float32, 5)
		for j := range r {
			r[j] = float32(rng.NormFloat64() + 20) // large offset, as raw head inputs have
		}
		r[0] += float32(f0)
		r[1] += float32(f1)
		return r
	}
	for range 80 {
		x, defect, kind = append(x, row(0, 0)), append(defect, false), append(kind, "")
	}
	for i := range 24 {
		k, f0 := "bright", 4.0
		if i%2 == 1 {
			k, f0 = "dark", -4.0
		}
		x, defect, kind = append(x, row(f0, 0)), append(defect, true), append(kind, k)
	}
	for range minKindDefects - 1 {
		x, defect, kind = append(x, row(0, 5)), append(defect, true), append(kind, "rare")
	}
	return x, defect, kind
}

func TestKindHeadsSeparateOppositeKinds(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x, defect, kind := kindRows(rng)
	kh, err := fitKindHeads(x, kind, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"bright", "dark", allKinds}; !slices.Equal(kh.kinds, want) {
		t.Errorf("heads %v, want %v: a head per kind with %d or more images, and one over all defects for the rare kind", kh.kinds, want, minKindDefects)
	}
	one, err := fitHead(x, defect, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	tx, tdefect, _ := kindRows(rng) // held out
	var kg, kd, og, od []float64
	for i, r := range tx {
		if tdefect[i] {
			kd, od = append(kd, kh.prob(r)), append(od, one.prob(r))
		} else {
			kg, og = append(kg, kh.prob(r)), append(og, one.prob(r))
		}
	}
	ka, oa := eval.EvaluateScores(kg, kd), eval.EvaluateScores(og, od)
	t.Logf("held-out AUROC: one head %.3f, a head per kind %.3f", oa, ka)
	if ka < 0.95 || ka < oa+0.1 {
		t.Errorf("held-out AUROC a head per kind %.3f, one head %.3f: want >= 0.95 and 0.1 above", ka, oa)
	}

	// One kind only: the single head, under its kind's name.
	var sx [][]float32
	var sk []string
	for i := range x {
		if kind[i] == "" || kind[i] == "bright" {
			sx, sk = append(sx, x[i]), append(sk, kind[i])
		}
	}
	if s, err := fitKindHeads(sx, sk, 0.01); err != nil || !slices.Equal(s.kinds, []string{"bright"}) {
		t.Errorf("one kind: heads %v (%v), want [bright]", s, err)
	}
	if _, err := fitKindHeads(x[:80], kind[:80], 0.01); err == nil {
		t.Error("no defect rows: want an error")
	}
}

// TestKindHeadsGraph: the graph's score (all heads in one MatMul, standardization folded
// into the weights) is the largest head probability fitKindHeads' heads give in Go.
func TestKindHeadsGraph(t *testing.T) {
	if err := models.InitONNXRuntime(""); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	x, _, kind := kindRows(rng)
	kh, err := fitKindHeads(x, kind, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	n := len(x[0])
	g := onnxgraph.New("kind-heads")
	g.Input("image", 1, 1, 1, int64(n))
	g.InitializerInt64("row_shape", []int64{2}, []int64{1, int64(n)})
	g.Node("Reshape", []string{"image", "row_shape"}, []string{"head_in"})
	addHead(g, kh)
	g.Output("score", 1)
	data, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float64, len(x))
	if err := scoreWith(data, models.RuntimeOptions{Threads: 1, Warmup: -1}, x, func(int) bool { return true }, got); err != nil {
		t.Fatal(err)
	}
	for i, r := range x {
		if want := kh.prob(r); math.Abs(got[i]-want) > 1e-4 {
			t.Fatalf("row %d: graph score %.6f, Go %.6f", i, got[i], want)
		}
	}
}
