package models

import (
	"fmt"
	"math"

	"github.com/takt-edge/takt/models/onnxgraph"
)

// The supervised head: when labeled defects are given, a logistic regression on an
// image-level vector of the memory-bank model turns its score into a defect probability.
// The vector, built in the graph from the same features, is
//
//	[GlobalMaxPool(patch_std) (D), GlobalAveragePool(patch_std) (D),
//	 map score, max(map), mean(map)]
//
// so the head sees both how far the worst patches are from the good ones and what the
// image's texture is like overall (a crack and a stain can be equally far from the bank
// but differ in their filter responses). It is standardized, then
// score = Sigmoid(v . w + b).

// headDim is the head's input length for d standardized patch features.
func headDim(d int) int { return 2*d + 3 }

// linearHead is a trained logistic regression on the standardized head vector.
type linearHead struct {
	mean, std []float32 // per input
	w         []float32
	b         float32
}

// addHeadInput adds "head_in" [1, headDim(d)] from "patch_std", "anomaly_map" and "map_score".
func addHeadInput(g *onnxgraph.Graph, d int) {
	g.Node("GlobalMaxPool", []string{"patch_std"}, []string{"hf_max4"})
	g.Node("GlobalAveragePool", []string{"patch_std"}, []string{"hf_avg4"})
	g.Node("Flatten", []string{"hf_max4"}, []string{"hf_max"}, onnxgraph.Int("axis", 1))
	g.Node("Flatten", []string{"hf_avg4"}, []string{"hf_avg"}, onnxgraph.Int("axis", 1))
	g.InitializerInt64("hf_one", []int64{2}, []int64{1, 1})
	g.Node("Reshape", []string{"map_score", "hf_one"}, []string{"hf_score"})
	g.Node("ReduceMax", []string{"anomaly_map"}, []string{"hf_mapmax4"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
	g.Node("Reshape", []string{"hf_mapmax4", "hf_one"}, []string{"hf_mapmax"})
	g.Node("ReduceMean", []string{"anomaly_map"}, []string{"hf_mapmean4"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
	g.Node("Reshape", []string{"hf_mapmean4", "hf_one"}, []string{"hf_mapmean"})
	g.Node("Concat", []string{"hf_max", "hf_avg", "hf_score", "hf_mapmax", "hf_mapmean"}, []string{"head_in"}, onnxgraph.Int("axis", 1))
}

// addHead turns "head_in" into "score" [1], the head's defect probability.
func addHead(g *onnxgraph.Graph, h *linearHead) {
	n := int64(len(h.w))
	g.Initializer("head_mean", []int64{1, n}, h.mean)
	g.Initializer("head_std", []int64{1, n}, h.std)
	g.Initializer("head_w", []int64{n, 1}, h.w)
	g.Initializer("head_b", []int64{1}, []float32{h.b})
	g.Node("Sub", []string{"head_in", "head_mean"}, []string{"head_centered"})
	g.Node("Div", []string{"head_centered", "head_std"}, []string{"head_x"})
	g.Node("MatMul", []string{"head_x", "head_w"}, []string{"head_dot"})
	g.Node("Add", []string{"head_dot", "head_b"}, []string{"head_logit"})
	g.Node("Sigmoid", []string{"head_logit"}, []string{"head_p"})
	g.InitializerInt64("head_shape", []int64{1}, []int64{1})
	g.Node("Reshape", []string{"head_p", "head_shape"}, []string{"score"})
}

// fitHead fits a logistic regression with an L2 penalty lambda on rows x (each of equal
// length) with labels y (true = defect), classes weighted to balance, by full-batch
// gradient descent on standardized inputs (a few hundred rows of ~80 values: milliseconds).
func fitHead(x [][]float32, y []bool, lambda float64) (*linearHead, error) {
	if len(x) == 0 || len(x) != len(y) {
		return nil, fmt.Errorf("fit head: %d rows, %d labels", len(x), len(y))
	}
	n, f := len(x), len(x[0])
	var pos int
	for _, v := range y {
		if v {
			pos++
		}
	}
	if pos == 0 || pos == n {
		return nil, fmt.Errorf("fit head: need both good and defective rows, got %d of %d defective", pos, n)
	}
	h := &linearHead{mean: make([]float32, f), std: make([]float32, f), w: make([]float32, f)}
	xs := make([][]float64, n)
	for j := range f {
		var s, sq float64
		for i := range n {
			v := float64(x[i][j])
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("fit head: row %d input %d is %v", i, j, v)
			}
			s += v
			sq += v * v
		}
		m := s / float64(n)
		h.mean[j] = float32(m)
		h.std[j] = float32(math.Sqrt(max(sq/float64(n)-m*m, 1e-8)))
	}
	for i := range n {
		xs[i] = make([]float64, f)
		for j := range f {
			xs[i][j] = (float64(x[i][j]) - float64(h.mean[j])) / float64(h.std[j])
		}
	}
	wPos, wNeg := float64(n)/(2*float64(pos)), float64(n)/(2*float64(n-pos))
	w := make([]float64, f)
	var b float64
	grad := make([]float64, f)
	const steps, lr = 2000, 0.1
	for range steps {
		clear(grad)
		var gb float64
		for i, row := range xs {
			z := b
			for j, v := range row {
				z += w[j] * v
			}
			p := 1 / (1 + math.Exp(-z))
			t, wt := 0.0, wNeg
			if y[i] {
				t, wt = 1, wPos
			}
			e := wt * (p - t)
			gb += e
			for j, v := range row {
				grad[j] += e * v
			}
		}
		for j := range w {
			w[j] -= lr * (grad[j]/float64(n) + lambda*w[j])
		}
		b -= lr * gb / float64(n)
	}
	for j := range w {
		h.w[j] = float32(w[j])
	}
	h.b = float32(b)
	return h, nil
}

// prob is the head's output for one raw input row, as the graph computes it.
func (h *linearHead) prob(x []float32) float64 {
	z := float64(h.b)
	for j, v := range x {
		z += float64(h.w[j]) * (float64(v) - float64(h.mean[j])) / float64(h.std[j])
	}
	return 1 / (1 + math.Exp(-z))
}
