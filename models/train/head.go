package train

import (
	"fmt"
	"math"
	"slices"

	"github.com/takt-edge/takt/models/onnxgraph"
)

// The supervised head: when labeled defects are given, a logistic regression on an
// image-level vector of the memory-bank model turns its score into a defect probability.
// The vector, built in the graph from the same features, is
//
//	[GlobalMaxPool(patch_std) (D), GlobalAveragePool(patch_std) (D),
//	 map score, max(map), mean(map),
//	 brightness statistics of the image before lighting normalization (headGlobalDim),
//	 max of patch_std (D) and of the bank distance (1) over the border ring of the patch
//	 grid, and the same over the interior (D + 1)]
//
// so the head sees how far the worst patches are from the good ones, what the image's
// texture is like overall (a crack and a stain can be equally far from the bank but differ
// in their filter responses), and the low-frequency light the patch features divide out
// on purpose: uneven tiles and stains are brightness over tens of pixels, which the
// unsupervised model must forgive but labels can tell apart (models/README.md, "Trainer
// results"). The border ring (headRing) is where breaks
// and frayed edges are, and where the tile's own chamfers are; pooling it apart keeps an
// edge defect from hiding behind a strong response elsewhere. It is standardized,
// then
// score = Sigmoid(v . w + b).

// headGlobalDim is the number of brightness statistics in the head vector: the image
// mean; relative to it the standard deviation and the 1st, 5th, 95th and 99th
// percentiles; and over an 8x8 grid of block means (relative to the mean) their spread,
// minimum and maximum.
const headGlobalDim = 9

// headDim is the head's input length for d standardized patch features.
func headDim(d int) int { return 4*d + 5 + headGlobalDim }

// headRing is the width, in patches, of the border ring of an h x w patch grid: an eighth
// of the grid (2 of 16 at the texture default), at least 1, leaving an interior.
func headRing(h, w int) int {
	return max(1, min(int(math.Round(float64(min(h, w))/8)), (min(h, w)-1)/2))
}

// ringPenalty is 0 on the border ring of an h x w grid and -1e4 inside, or the reverse
// with inside: added before a global max, it limits the max to one region.
func ringPenalty(h, w int, inside bool) []float32 {
	r := headRing(h, w)
	out := make([]float32, h*w)
	for y := range h {
		for x := range w {
			border := y < r || x < r || y >= h-r || x >= w-r
			if border == inside {
				out[y*w+x] = -1e4
			}
		}
	}
	return out
}

// linearHead is a trained logistic regression on the standardized head vector.
type linearHead struct {
	mean, std []float32 // per input
	w         []float32
	b         float32
}

// addHeadInput adds "head_in" [1, headDim(d)] from "patch_std" and "dist_grid" (an h x w
// grid), "anomaly_map", "map_score" and src, the image (fh x fw) the patch features start
// from.
func addHeadInput(g *onnxgraph.Graph, d, h, w int, src string, fh, fw int) {
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
	addGlobalStats(g, src, fh, fw, "hf_global")
	parts := []string{"hf_max", "hf_avg", "hf_score", "hf_mapmax", "hf_mapmean", "hf_global"}
	for _, region := range []struct {
		name   string
		inside bool
	}{{"border", false}, {"inside", true}} {
		pen := "hf_pen_" + region.name
		g.Initializer(pen, []int64{1, 1, int64(h), int64(w)}, ringPenalty(h, w, region.inside))
		for _, v := range []string{"patch_std", "dist_grid"} {
			name := "hf_" + region.name + "_" + v
			g.Node("Add", []string{v, pen}, []string{name + "_pen"})
			g.Node("GlobalMaxPool", []string{name + "_pen"}, []string{name + "_4"})
			g.Node("Flatten", []string{name + "_4"}, []string{name}, onnxgraph.Int("axis", 1))
			parts = append(parts, name)
		}
	}
	g.Node("Concat", parts, []string{"head_in"}, onnxgraph.Int("axis", 1))
}

// addGlobalStats adds out [1, headGlobalDim], the brightness statistics of src [1,1,fh,fw]
// (see headGlobalDim). Percentiles are order statistics taken with TopK: the q-quantile
// is the value at ascending index floor(q*(n-1)).
func addGlobalStats(g *onnxgraph.Graph, src string, fh, fw int, out string) {
	n := int64(fh * fw)
	all := onnxgraph.Ints("axes", 1, 2, 3)
	g.InitializerInt64("hg_shape", []int64{2}, []int64{1, 1})
	g.InitializerInt64("hg_flat", []int64{2}, []int64{1, n})
	g.Initializer("hg_floor", []int64{1}, []float32{1e-3})
	g.Node("ReduceMean", []string{src}, []string{"hg_mean4"}, all, onnxgraph.Int("keepdims", 1))
	g.Node("Max", []string{"hg_mean4", "hg_floor"}, []string{"hg_mean_floored"}) // a black image has no relative spread
	g.Node("Sub", []string{src, "hg_mean4"}, []string{"hg_dev"})
	g.Node("Mul", []string{"hg_dev", "hg_dev"}, []string{"hg_dev2"})
	g.Node("ReduceMean", []string{"hg_dev2"}, []string{"hg_var"}, all, onnxgraph.Int("keepdims", 1))
	g.Node("Sqrt", []string{"hg_var"}, []string{"hg_sd"})
	g.Node("Div", []string{"hg_sd", "hg_mean_floored"}, []string{"hg_rel_sd"})
	g.Node("Div", []string{src, "hg_mean_floored"}, []string{"hg_rel"})
	g.Node("Reshape", []string{"hg_rel", "hg_flat"}, []string{"hg_rel_flat"})
	parts := []string{"hg_mean", "hg_rel_sd_2"}
	g.Node("Reshape", []string{"hg_mean4", "hg_shape"}, []string{"hg_mean"})
	g.Node("Reshape", []string{"hg_rel_sd", "hg_shape"}, []string{"hg_rel_sd_2"})
	for i, q := range []float64{0.01, 0.05, 0.95, 0.99} {
		idx := int64(q * float64(n-1)) // ascending index
		name := fmt.Sprintf("hg_q%d", i)
		largest, k, reduce := int64(0), idx+1, "ReduceMax" // the idx+1 smallest, their largest
		if q > 0.5 {
			largest, k, reduce = 1, n-idx, "ReduceMin" // the n-idx largest, their smallest
		}
		g.InitializerInt64(name+"_k", []int64{1}, []int64{k})
		g.Node("TopK", []string{"hg_rel_flat", name + "_k"}, []string{name + "_vals", name + "_idx"}, onnxgraph.Int("axis", 1), onnxgraph.Int("largest", largest))
		g.Node(reduce, []string{name + "_vals"}, []string{name}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 1))
		parts = append(parts, name)
	}
	bh, bw := int64(max(1, fh/8)), int64(max(1, fw/8))
	g.Node("AveragePool", []string{"hg_rel"}, []string{"hg_blocks"}, onnxgraph.Ints("kernel_shape", bh, bw), onnxgraph.Ints("strides", bh, bw))
	g.Node("ReduceMean", []string{"hg_blocks"}, []string{"hg_bmean"}, all, onnxgraph.Int("keepdims", 1))
	g.Node("Sub", []string{"hg_blocks", "hg_bmean"}, []string{"hg_bdev"})
	g.Node("Mul", []string{"hg_bdev", "hg_bdev"}, []string{"hg_bdev2"})
	g.Node("ReduceMean", []string{"hg_bdev2"}, []string{"hg_bvar"}, all, onnxgraph.Int("keepdims", 1))
	g.Node("Sqrt", []string{"hg_bvar"}, []string{"hg_bsd4"})
	g.Node("ReduceMin", []string{"hg_blocks"}, []string{"hg_bmin4"}, all, onnxgraph.Int("keepdims", 1))
	g.Node("ReduceMax", []string{"hg_blocks"}, []string{"hg_bmax4"}, all, onnxgraph.Int("keepdims", 1))
	for _, b := range []string{"hg_bsd", "hg_bmin", "hg_bmax"} {
		g.Node("Reshape", []string{b + "4", "hg_shape"}, []string{b})
		parts = append(parts, b)
	}
	g.Node("Concat", parts, []string{out}, onnxgraph.Int("axis", 1))
}

// minKindDefects is the fewest labelled images of one defect kind that get a head of
// their own; rarer kinds are covered by a head over all defects.
const minKindDefects = 3

// kindHeads is the supervised head as trained: one logistic regression per defect kind
// (the good images against that kind's), and the image's defect probability the largest
// of theirs. Defect kinds look nothing alike on the tiles (an uneven tile is light over
// half the image, a crack a thin line, a break a missing corner): one hyperplane for all
// of them must trade one kind against another, one per kind need not (models/README.md,
// "Trainer results"). With rare kinds (fewer than
// minKindDefects images) or no kind of its own, a head over all defects is added: with
// labels of one kind only, it is the single head.
type kindHeads struct {
	kinds []string // per head: the defect kind, or allKinds
	heads []*linearHead
}

// allKinds names the head trained on every defect.
const allKinds = "*"

// fitKindHeads fits kindHeads on rows x: kind[i] is row i's defect kind, "" for a good
// image.
func fitKindHeads(x [][]float32, kind []string, lambda float64) (*kindHeads, error) {
	if len(x) != len(kind) {
		return nil, fmt.Errorf("fit head: %d rows, %d kinds", len(x), len(kind))
	}
	defect := make([]bool, len(kind))
	count := map[string]int{}
	for i, k := range kind {
		if defect[i] = k != ""; defect[i] {
			count[k]++
		}
	}
	var own []string
	rare := false
	for k, n := range count {
		if n >= minKindDefects {
			own = append(own, k)
		} else {
			rare = true
		}
	}
	slices.Sort(own)
	if rare || len(own) == 0 {
		own = append(own, allKinds)
	}
	kh := &kindHeads{}
	for _, k := range own {
		var tx [][]float32
		var ty []bool
		for i, row := range x {
			if !defect[i] || k == allKinds || kind[i] == k {
				tx, ty = append(tx, row), append(ty, defect[i])
			}
		}
		h, err := fitHead(tx, ty, lambda)
		if err != nil {
			return nil, fmt.Errorf("defect kind %q: %w", k, err)
		}
		kh.kinds, kh.heads = append(kh.kinds, k), append(kh.heads, h)
	}
	return kh, nil
}

// prob is the largest of the heads' probabilities for one raw input row.
func (kh *kindHeads) prob(x []float32) float64 {
	var p float64
	for _, h := range kh.heads {
		p = max(p, h.prob(x))
	}
	return p
}

// addHead turns "head_in" into "score" [1], the largest of kh's defect probabilities. Each
// head's standardization is folded into its weights, so all heads are one MatMul:
// w.(x-m)/s + b = (w/s).x + (b - sum(w*m/s)).
func addHead(g *onnxgraph.Graph, kh *kindHeads) {
	n, k := len(kh.heads[0].w), len(kh.heads)
	w := make([]float32, n*k)
	b := make([]float32, k)
	for c, h := range kh.heads {
		bias := float64(h.b)
		for j := range n {
			wj := float64(h.w[j]) / float64(h.std[j])
			w[j*k+c] = float32(wj)
			bias -= wj * float64(h.mean[j])
		}
		b[c] = float32(bias)
	}
	g.Initializer("head_w", []int64{int64(n), int64(k)}, w)
	g.Initializer("head_b", []int64{1, int64(k)}, b)
	g.Node("MatMul", []string{"head_in", "head_w"}, []string{"head_dot"})
	g.Node("Add", []string{"head_dot", "head_b"}, []string{"head_logit"})
	g.Node("Sigmoid", []string{"head_logit"}, []string{"head_p"})
	g.Node("ReduceMax", []string{"head_p"}, []string{"score"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 0))
}

// inputStats is the mean and standard deviation (at least 1e-4) of each of f inputs over n
// rows, at(i, j) being row i's input j; a NaN or infinite input is an error naming it.
func inputStats(n, f int, at func(i, j int) float32) (mean, std []float32, err error) {
	mean, std = make([]float32, f), make([]float32, f)
	for j := range f {
		var s, sq float64
		for i := range n {
			v := float64(at(i, j))
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, nil, fmt.Errorf("row %d input %d is %v", i, j, v)
			}
			s += v
			sq += v * v
		}
		m := s / float64(n)
		mean[j] = float32(m)
		std[j] = float32(math.Sqrt(max(sq/float64(n)-m*m, 1e-8)))
	}
	return mean, std, nil
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
	mean, std, err := inputStats(n, f, func(i, j int) float32 { return x[i][j] })
	if err != nil {
		return nil, fmt.Errorf("fit head: %w", err)
	}
	h := &linearHead{mean: mean, std: std, w: make([]float32, f)}
	xs := make([][]float64, n)
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
