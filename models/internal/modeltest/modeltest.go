// Package modeltest holds what the tests of models and models/train share: small ONNX
// graphs written with onnxgraph, manifests that describe them, signed bundles and test
// frames.
//
// # Caveats
//
// Only tests import it. It does not import models, so that the models package's own
// tests can use it; a runtime is opened with the constructor the caller passes in. It
// imports models/bundle, so bundle's tests that use it are in package bundle_test.
package modeltest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

// ImageNetMean and ImageNetStd are the normalization most exported vision models expect.
var ImageNetMean, ImageNetStd = []float64{0.485, 0.456, 0.406}, []float64{0.229, 0.224, 0.225}

// NewKey returns a fresh ed25519 key pair.
func NewKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// BuildBundle writes a bundle of m, onnx and files signed by key and returns the tar.
func BuildBundle(t testing.TB, m bundle.Manifest, onnx []byte, files map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := bundle.BuildBundle(&buf, m, onnx, files, key); err != nil {
		t.Fatalf("BuildBundle: %v", err)
	}
	return buf.Bytes()
}

// BundleOf signs m and onnx with a fresh key and reads the bundle back, verified.
func BundleOf(t testing.TB, m bundle.Manifest, onnx []byte) *bundle.Bundle {
	t.Helper()
	pub, priv := NewKey(t)
	keys := bundle.TrustedKeys{}
	keys.Add(pub)
	b, err := bundle.ReadBundle(bytes.NewReader(BuildBundle(t, m, onnx, nil, priv)), keys)
	if err != nil {
		t.Fatalf("ReadBundle: %v", err)
	}
	return b
}

// Closer is what a runtime offers for the end of a test.
type Closer interface{ Close() error }

// Open opens a runtime for m and onnx with open (a models.NewRuntime with its options)
// and closes it when the test ends.
func Open[R Closer](t testing.TB, m bundle.Manifest, onnx []byte, open func(context.Context, *bundle.Bundle) (R, error)) R {
	t.Helper()
	r, err := open(context.Background(), BundleOf(t, m, onnx))
	if err != nil {
		t.Fatalf("NewRuntime: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// SignedTar writes manifest.json (m marshaled, with Files as given), the members, and a
// signature by key.
func SignedTar(t testing.TB, m bundle.Manifest, members map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	return TarOf(t, MustJSON(t, m), members, key)
}

// TarOf writes a bundle tar by hand: manifest as given, the members, and a signature by
// key (none when key is nil), so tests can build bundles BuildBundle refuses to.
func TarOf(t testing.TB, manifest []byte, members map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("manifest.json", manifest)
	for name, data := range members {
		add(name, data)
	}
	if key != nil {
		sig, err := bundle.SignManifest(manifest, key)
		if err != nil {
			t.Fatal(err)
		}
		add("signature", sig)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// WithFiles returns m listing files with their sha256, as BuildBundle would.
func WithFiles(m bundle.Manifest, files map[string][]byte) bundle.Manifest {
	m.Format = bundle.BundleFormat
	m.Files = map[string]string{}
	for name, data := range files {
		m.Files[name] = bundle.SHA256Hex(data)
	}
	return m
}

// MustJSON marshals v.
func MustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// WriteModel writes data to a file in a fresh temp folder and returns its path.
func WriteModel(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TinyModel builds a graph with build and returns it serialized.
func TinyModel(t testing.TB, build func(g *onnxgraph.Graph)) []byte {
	t.Helper()
	g := onnxgraph.New("tiny")
	build(g)
	data, err := g.Marshal()
	if err != nil {
		t.Fatalf("build test model: %v", err)
	}
	return data
}

// MaxScore is a model with input [1,c,h,w] and score = max of the input.
func MaxScore(c, h, w int64) func(g *onnxgraph.Graph) {
	return func(g *onnxgraph.Graph) {
		g.Input("image", 1, c, h, w)
		g.Node("ReduceMax", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Output("score", 1)
	}
}

// MeanModel: input "image" [1,1,h,w], score = mean of the image, anomaly_map = the image
// itself, so tests can read back exactly what preprocessing wrote.
func MeanModel(h, w int64) func(g *onnxgraph.Graph) {
	return func(g *onnxgraph.Graph) {
		g.Input("image", 1, 1, h, w)
		g.Node("ReduceMean", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Node("Identity", []string{"image"}, []string{"anomaly_map"})
		g.Output("score", 1)
		g.Output("anomaly_map", 1, 1, h, w)
	}
}

// MeanManifest describes MeanModel.
func MeanManifest() bundle.Manifest {
	return bundle.Manifest{Name: "mean", Version: "1.0.0", Task: bundle.TaskAnomaly,
		Input:   bundle.InputSpec{Layout: bundle.LayoutNCHW, Color: bundle.ColorGray},
		Outputs: bundle.OutputSpec{Score: "score", Map: "anomaly_map"}, Thresholds: bundle.Thresholds{Fail: 0.5}, Opset: 17}
}

// AnomalibModel is shaped like an anomalib export: input "input" [1,3,h,w] (ImageNet
// normalized outside), outputs pred_score [1] and anomaly_map [1,1,h,w] (and a pred_mask
// Takt does not read). map = mean over channels of (x - 0.5)^2, score = max of the map.
func AnomalibModel(t testing.TB, h, w int64, dynamic bool) []byte {
	t.Helper()
	g := onnxgraph.New("anomalib-padim")
	g.Input("input", 1, 3, h, w)
	g.Initializer("half", []int64{1}, []float32{0.5})
	g.Node("Sub", []string{"input", "half"}, []string{"d"})
	g.Node("Mul", []string{"d", "d"}, []string{"sq"})
	g.Node("ReduceMean", []string{"sq"}, []string{"anomaly_map"}, onnxgraph.Ints("axes", 1), onnxgraph.Int("keepdims", 1))
	g.Node("ReduceMax", []string{"anomaly_map"}, []string{"pred_score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
	g.Node("Identity", []string{"anomaly_map"}, []string{"pred_mask"})
	g.Output("pred_score", 1)
	g.Output("anomaly_map", 1, 1, h, w)
	g.Output("pred_mask", 1, 1, h, w)
	mp, err := g.Proto()
	if err != nil {
		t.Fatal(err)
	}
	if dynamic {
		for _, v := range []*onnxpb.ValueInfoProto{mp.Graph.Input[0], mp.Graph.Output[1], mp.Graph.Output[2]} {
			dims := v.Type.GetTensorType().Shape.Dim
			dims[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
			dims[2].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "height"}
			dims[3].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "width"}
		}
		mp.Graph.Output[0].Type.GetTensorType().Shape.Dim[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
	}
	data, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// AnomalibManifest describes AnomalibModel as its export would.
func AnomalibManifest() bundle.Manifest {
	return bundle.Manifest{Name: "padim", Version: "2.0.0", Task: bundle.TaskAnomaly,
		Input:      bundle.InputSpec{Layout: bundle.LayoutNCHW, Color: bundle.ColorRGB, Mean: ImageNetMean, Std: ImageNetStd},
		Outputs:    bundle.OutputSpec{Score: "pred_score", Map: "anomaly_map"},
		Thresholds: bundle.Thresholds{Fail: 3}, Opset: 17}
}

// ClassifierModel: input [1,3,8,8] RGB; class scores = 4 * mean of each channel, so a red
// part is class 0, a green one class 1, a blue one class 2. With softmax the graph ends in
// Softmax (probabilities), else it outputs logits.
func ClassifierModel(t testing.TB, softmax bool) []byte {
	t.Helper()
	return TinyModel(t, func(g *onnxgraph.Graph) {
		g.Input("pixel_values", 1, 3, 8, 8)
		g.Initializer("four", []int64{1}, []float32{4})
		g.Node("ReduceMean", []string{"pixel_values"}, []string{"m"}, onnxgraph.Ints("axes", 2, 3), onnxgraph.Int("keepdims", 0))
		out := "logits"
		g.Node("Mul", []string{"m", "four"}, []string{"logits"})
		if softmax {
			out = "probs"
			g.Node("Softmax", []string{"logits"}, []string{"probs"}, onnxgraph.Int("axis", 1))
		}
		g.Output(out, 1, 3)
	})
}

// ClassifierManifest describes ClassifierModel: classes good, scratch and dent; softmax in
// the graph or, without it, applied by the runtime.
func ClassifierManifest(softmaxInGraph bool) bundle.Manifest {
	m := bundle.Manifest{Name: "cls", Version: "1.0.0", Task: bundle.TaskClassification,
		Input:      bundle.InputSpec{Layout: bundle.LayoutNCHW, Color: bundle.ColorRGB},
		Outputs:    bundle.OutputSpec{Score: "probs", Labels: []string{"good", "scratch", "dent"}, OKLabel: "good"},
		Thresholds: bundle.Thresholds{Fail: 0.5}, Opset: 17}
	if !softmaxInGraph {
		m.Outputs.Score, m.Outputs.Softmax = "logits", true
	}
	return m
}

// Uniform is a frame of one color: a gray level, or B, G, R.
func Uniform(w, h int, color ...byte) camera.Frame {
	f := camera.Frame{Width: w, Height: h, Channels: len(color), Pix: make([]byte, w*h*len(color))}
	for i := range f.Pix {
		f.Pix[i] = color[i%len(color)]
	}
	return f
}

// VMRSS returns the resident memory of this process in bytes, from /proc/self/status.
func VMRSS(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
