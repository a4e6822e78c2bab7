//go:build cgo

package backbone

import (
	"fmt"

	"github.com/takt-edge/takt/models"
	ort "github.com/yalue/onnxruntime_go"
)

// Resolve cuts o's backbone, sets its input size (aspect: width/height of the
// training images) and runs it once in ONNX Runtime on a blank input to learn the shape of
// its feature maps, which also proves the cut graph loads and runs.
func Resolve(o Options, aspect float64) (*Backbone, error) {
	bb, err := Cut(o)
	if err != nil {
		return nil, err
	}
	if err := bb.sizeFor(o, aspect); err != nil {
		return nil, err
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	data, err := bb.probeModel()
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	x, err := ort.NewEmptyTensor[float32](ort.NewShape(1, int64(bb.channels), int64(bb.InH), int64(bb.InW)))
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	defer x.Destroy()
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{bb.input}, bb.outputs, nil)
	if err != nil {
		return nil, fmt.Errorf("backbone: layer %q: load the cut model at %dx%d: %w", o.Layer, bb.InW, bb.InH, err)
	}
	defer s.Destroy()
	outs := make([]ort.Value, len(bb.outputs))
	if err := s.Run([]ort.Value{x}, outs); err != nil {
		return nil, fmt.Errorf("backbone: layer %q: run the cut model at %dx%d: %w", o.Layer, bb.InW, bb.InH, err)
	}
	for _, v := range outs {
		defer v.Destroy()
	}
	for i, v := range outs {
		if _, ok := v.(*ort.Tensor[float32]); !ok {
			return nil, fmt.Errorf("backbone: layer %q is not a float tensor: want a float feature map [1,C,h,w]", bb.layers[i])
		}
		if err := bb.addFeatureShape(v.GetShape()); err != nil {
			return nil, err
		}
	}
	return bb, nil
}
