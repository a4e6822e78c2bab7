package bundle

import (
	"errors"
	"testing"

	"github.com/takt-edge/takt/models/onnxgraph"
)

// FuzzInspectModel feeds arbitrary bytes to the ONNX header reader, which sees every model
// file before ONNX Runtime does: it must not panic, and must fail only with
// ErrInvalidModel.
func FuzzInspectModel(f *testing.F) {
	g := onnxgraph.New("seed")
	g.Input("image", 1, 1, 4, 4)
	g.Initializer("w", []int64{1}, []float32{2})
	g.Node("Mul", []string{"image", "w"}, []string{"m"})
	g.Node("ReduceMax", []string{"m"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
	g.Output("score", 1)
	g.Meta("takt.threshold", "0.5")
	model, err := g.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(model)
	f.Add(model[:len(model)/2])
	f.Add([]byte{})
	f.Add([]byte("\x08\x08:\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := InspectModel(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("InspectModel error %v does not wrap ErrInvalidModel", err)
			}
			return
		}
		if _, err := RunSpecOf(h, "score", "anomaly_map"); err != nil && !errors.Is(err, ErrUnsupportedModel) {
			t.Fatalf("RunSpecOf error %v does not wrap ErrUnsupportedModel", err)
		}
	})
}
