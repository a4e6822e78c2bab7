package train

import (
	"fmt"
	"math"
	"strings"

	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

// The filter bank beside a backbone (TrainOptions.WithFilterBank): one graph holds two
// PatchCore extractors on the same "image" input, each with its own memory bank built
// from the good images,
//
//	image [1,1,H,W] (the backbone's input size)
//	  -> fb/: AveragePool (Downsample) -> the filter-bank PatchCore at about 64 px
//	          (TexturePatchCoreOptions, as the default model) -> fb/head_in, fb/anomaly_map
//	  -> bk/: the backbone PatchCore (backbone.Options)         -> bk/head_in
//	head_in = Concat(fb/head_in, bk/head_in)  -> the supervised heads -> score (a probability)
//	anomaly_map = fb/anomaly_map
//
// and the supervised heads (head.go: one per defect kind) read both head vectors side by
// side. The anomaly map
// is the filter bank's: its distances alone separate the magnetic tiles better than the
// backbone's (models/README.md, "Trainer results"), its grid
// is finer (a 4 px step at 64 px, 8 input pixels, against the backbone's 16 at
// expanded_conv_12), and it is what the filter-bank model shows, so a station's heatmaps
// mean the same with or without the backbone. The head's probability is an image-level
// number and has no map of its own.

// comboPrefixFB and comboPrefixBB rename the two extractors' tensors in the joint graph.
const (
	comboPrefixFB = "fb/"
	comboPrefixBB = "bk/"
)

// comboFilterBankOptions is the filter-bank half's options for a joint model of input
// size in (the backbone's): the texture settings of po (PatchCore options as Train
// planned them, with the backbone) on the input averaged down to about their width.
func comboFilterBankOptions(po PatchCoreOptions, in bundle.InputShape) (PatchCoreOptions, error) {
	fb := TexturePatchCoreOptions()
	// The bank, map and score settings are the ones Train gives the backbone (the same
	// texture defaults unless a caller changed them); the feature settings are the
	// filter bank's own.
	fb.PositionWeight, fb.K, fb.ScoreTop, fb.BankSize, fb.MaxCandidates = po.PositionWeight, po.K, po.ScoreTop, po.BankSize, po.MaxCandidates
	fb.Folds, fb.FalseReject, fb.Seed, fb.Threads, fb.Ignore, fb.Color = po.Folds, po.FalseReject, po.Seed, po.Threads, po.Ignore, po.Color
	fb.Name, fb.Version, fb.TrainedAt = po.Name, po.Version, po.TrainedAt
	fb.Stride = DefaultPatchCoreOptions().Stride
	ds := max(1, int(math.Round(float64(in.Width)/float64(fb.Width))))
	step := fb.Stride * ds
	if in.Width%step != 0 || in.Height%step != 0 {
		return fb, fmt.Errorf("with filter bank: the backbone's input %dx%d is not a multiple of %d (the filter bank's %d px patch step averaged %dx%d down to about %d px): give a width and height that are",
			in.Width, in.Height, step, fb.Stride, ds, ds, fb.Width)
	}
	fb.Width, fb.Height, fb.Downsample = in.Width, in.Height, ds
	return fb, nil
}

// comboGraph is the joint model: the filter-bank PatchCore fbO with fbBank and the
// backbone PatchCore bbO with bbBank on one input in; with head, score is the head's
// probability over both head vectors, else the filter bank's map score; with headOut it
// also outputs "head_in" [1, headDim(fb)+headDim(bb)] (for training the head).
func comboGraph(in bundle.InputShape, fbO PatchCoreOptions, fbBank *patchBank, bbO PatchCoreOptions, bbBank *patchBank, head *kindHeads, headOut bool, meta [][2]string) ([]byte, error) {
	if bbO.bb == nil || fbO.bb != nil {
		return nil, fmt.Errorf("with filter bank: want a filter-bank and a backbone PatchCore")
	}
	g := onnxgraph.New(bbO.Name)
	g.SetDoc("Takt PatchCore-like anomaly model: the filter bank's and a backbone's patch features, each with its coreset memory bank, and one supervised head over both.")
	dims := []int64{1, 1, int64(in.Height), int64(in.Width)}
	g.Input("image", inputDims(in)...)
	parts := []struct {
		prefix string
		o      PatchCoreOptions
		bank   *patchBank
	}{{comboPrefixFB, fbO, fbBank}, {comboPrefixBB, bbO, bbBank}}
	var size int
	for _, p := range parts {
		data, err := patchCoreHeadGraph(in, p.o, p.bank, nil, true, nil)
		if err != nil {
			return nil, fmt.Errorf("with filter bank: %s: %w", strings.TrimSuffix(p.prefix, "/"), err)
		}
		var m onnxpb.ModelProto
		if err := proto.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("with filter bank: %w", err)
		}
		rename := func(s string) string {
			if s == "" || s == "image" {
				return s
			}
			return p.prefix + s
		}
		for _, t := range m.Graph.Initializer {
			t.Name = proto.String(rename(t.GetName()))
		}
		for _, n := range m.Graph.Node {
			for i := range n.Input {
				n.Input[i] = rename(n.Input[i])
			}
			for i := range n.Output {
				n.Output[i] = rename(n.Output[i])
			}
		}
		g.Import(m.Graph.Node, m.Graph.Initializer)
		_, _, d := patchDims(in, p.o)
		size += headDim(d)
	}
	g.Node("Concat", []string{comboPrefixFB + "head_in", comboPrefixBB + "head_in"}, []string{"head_in"}, onnxgraph.Int("axis", 1))
	if head != nil {
		if n := len(head.heads[0].w); n != size {
			return nil, fmt.Errorf("with filter bank: head has %d inputs, the two head vectors %d", n, size)
		}
		addHead(g, head)
	} else {
		g.Node("Identity", []string{comboPrefixFB + "map_score"}, []string{"score"})
	}
	g.Node("Identity", []string{comboPrefixFB + "anomaly_map"}, []string{"anomaly_map"})
	if headOut {
		g.Output("head_in", 1, int64(size))
	}
	g.Output("score", 1)
	g.Output("anomaly_map", dims...)
	for _, kv := range meta {
		g.Meta(kv[0], kv[1])
	}
	return g.Marshal()
}

// comboMeta is the joint model's metadata: the backbone PatchCore's, with the filter
// bank's settings and the head appended to takt.method.
func comboMeta(fbO, bbO PatchCoreOptions, in bundle.InputShape, threshold float64, images, fbBank, bbBank, defects int, kinds []string, lambda float64) [][2]string {
	meta := patchCoreMeta(bbO, in, threshold, images, bbBank)
	for i := range meta {
		if meta[i][0] == bundle.MetaMethod {
			meta[i][1] += fmt.Sprintf(" with_filter_bank downsample=%d sigmas=%v lighting_sigma=%g stride=%d pool=%s bank=%d head=logistic defects=%d kinds=%s lambda=%g map=filter_bank",
				fbO.Downsample, fbO.Sigmas, fbO.LightingSigma, fbO.Stride, fbO.Pool, fbBank, defects, strings.Join(kinds, ","), lambda)
		}
	}
	return meta
}
