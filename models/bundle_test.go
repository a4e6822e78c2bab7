//go:build cgo

package models

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/internal/modeltest"
	"github.com/takt-edge/takt/models/onnxgraph"
	"github.com/takt-edge/takt/models/onnxpb"
	"google.golang.org/protobuf/proto"
)

func TestBundleRoundTripAndGolden(t *testing.T) {
	pub, priv := modeltest.NewKey(t)
	keys := bundle.TrustedKeys{}
	keys.Add(pub)
	onnx := modeltest.TinyModel(t, modeltest.MeanModel(4, 4))
	gray := modeltest.Uniform(8, 8, 51)
	png, err := camera.Encode(gray, "png", 0)
	if err != nil {
		t.Fatal(err)
	}
	m := modeltest.MeanManifest()
	m.Golden = &bundle.GoldenSet{Cases: []bundle.GoldenCase{{File: "golden/0001.png", Score: 0.2}}}
	m.Metrics = map[string]float64{"auroc": 0.98}
	m.Dataset = "ds-2026-11-29"
	data := modeltest.BuildBundle(t, m, onnx, map[string][]byte{"golden/0001.png": png}, priv)
	b, err := bundle.ReadBundle(bytes.NewReader(data), keys)
	if err != nil {
		t.Fatalf("ReadBundle: %v", err)
	}
	if b.KeyID != bundle.KeyID(pub) || b.Manifest.Name != "mean" || !bytes.Equal(b.ONNX, onnx) || len(b.Files) != 1 || b.SHA256() != bundle.SHA256Hex(onnx) {
		t.Fatalf("bundle: key %s name %s, %d model bytes, %d files: want key %s, name mean, the model, 1 golden file",
			b.KeyID, b.Manifest.Name, len(b.ONNX), len(b.Files), bundle.KeyID(pub))
	}
	r, err := NewRuntime(context.Background(), b, RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("NewRuntime: %v", err)
	}
	defer r.Close()
	info := r.Info()
	if info.Model.Name != "mean" || info.Model.Version != "1.0.0" || info.Model.SHA256 != b.SHA256() || info.Threshold != 0.5 || info.Task != bundle.TaskAnomaly {
		t.Errorf("Info: got %+v, want the manifest's name, version, sha256, threshold 0.5, task anomaly", info)
	}

	// A golden score the model does not reproduce is rejected.
	m.Golden.Cases[0].Score = 0.25
	bad, err := bundle.ReadBundle(bytes.NewReader(modeltest.BuildBundle(t, m, onnx, map[string][]byte{"golden/0001.png": png}, priv)), keys)
	if err != nil {
		t.Fatalf("ReadBundle: %v", err)
	}
	if r2, err := NewRuntime(context.Background(), bad, RuntimeOptions{Threads: 1}); !errors.Is(err, ErrGoldenMismatch) ||
		!strings.Contains(err.Error(), "golden/0001.png: score 0.2, want 0.25") {
		if r2 != nil {
			r2.Close()
		}
		t.Fatalf("NewRuntime with a wrong golden score:\n got %v\nwant ErrGoldenMismatch naming the file and scores", err)
	}
}

// Every bad input is rejected with a clear error, and a running model keeps serving.
func TestBundleBadInputs(t *testing.T) {
	pub, priv := modeltest.NewKey(t)
	_, otherPriv := modeltest.NewKey(t)
	keys := bundle.TrustedKeys{}
	keys.Add(pub)
	onnx := modeltest.TinyModel(t, modeltest.MeanModel(4, 4))
	good := modeltest.BuildBundle(t, modeltest.MeanManifest(), onnx, nil, priv)

	running, err := bundle.ReadBundle(bytes.NewReader(good), keys)
	if err != nil {
		t.Fatalf("ReadBundle: %v", err)
	}
	r, err := NewRuntime(context.Background(), running, RuntimeOptions{Threads: 1})
	if err != nil {
		t.Fatalf("NewRuntime: %v", err)
	}
	defer r.Close()

	model := func(build func(g *onnxgraph.Graph), change func(mp *onnxpb.ModelProto)) []byte {
		g := onnxgraph.New("m")
		build(g)
		mp, err := g.Proto()
		if err != nil {
			t.Fatal(err)
		}
		if change != nil {
			change(mp)
		}
		data, err := proto.Marshal(mp)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	dynamic := model(modeltest.MeanModel(4, 4), func(mp *onnxpb.ModelProto) {
		for _, d := range mp.Graph.Input[0].Type.GetTensorType().Shape.Dim[2:] {
			d.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "side"}
		}
		for _, d := range mp.Graph.Output[1].Type.GetTensorType().Shape.Dim[2:] {
			d.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "side"}
		}
	})
	opset25 := model(modeltest.MeanModel(4, 4), func(mp *onnxpb.ModelProto) { mp.OpsetImport[0].Version = proto.Int64(26) })
	rank3 := model(func(g *onnxgraph.Graph) {
		g.Input("image", 1, 4, 4)
		g.Node("ReduceMean", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2), onnxgraph.Int("keepdims", 0))
		g.Output("score", 1)
	}, nil)
	noMap := modeltest.MeanManifest()
	noMap.Outputs.Map = ""

	manifestFor := func(m bundle.Manifest, onnx []byte) bundle.Manifest {
		return modeltest.WithFiles(m, map[string][]byte{"model.onnx": onnx})
	}
	tamperedManifest := func() []byte {
		manifest, _ := json.Marshal(manifestFor(modeltest.MeanManifest(), onnx))
		data := modeltest.TarOf(t, manifest, map[string][]byte{"model.onnx": onnx}, priv)
		return bytes.Replace(data, []byte(`"fail":0.5`), []byte(`"fail":9.5`), 1)
	}
	missingKeys := manifestFor(modeltest.MeanManifest(), onnx)
	missingKeys.Name, missingKeys.Task = "", ""

	tests := []struct {
		name   string
		data   []byte
		wantIs error
		want   string
	}{
		{"not a tar", []byte("hello, this is not a bundle at all, just text........................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................"), bundle.ErrBadBundle, "not a tar archive"},
		{"empty file", nil, bundle.ErrBadBundle, "empty archive"},
		{"truncated", good[:len(good)/2], bundle.ErrBadBundle, "truncated"},
		{"unsigned", modeltest.TarOf(t, modeltest.MustJSON(t, manifestFor(modeltest.MeanManifest(), onnx)), map[string][]byte{"model.onnx": onnx}, nil), bundle.ErrBadSignature, "unsigned: no signature member"},
		{"untrusted key", modeltest.SignedTar(t, manifestFor(modeltest.MeanManifest(), onnx), map[string][]byte{"model.onnx": onnx}, otherPriv), bundle.ErrBadSignature, "which is not trusted"},
		{"tampered manifest", tamperedManifest(), bundle.ErrBadSignature, "signature does not match manifest.json"},
		{"sha256 mismatch", modeltest.SignedTar(t, manifestFor(modeltest.MeanManifest(), onnx), map[string][]byte{"model.onnx": modeltest.TinyModel(t, modeltest.MeanModel(4, 8))}, priv), bundle.ErrBadBundle, "model.onnx: sha256"},
		{"file not listed", modeltest.SignedTar(t, manifestFor(modeltest.MeanManifest(), onnx), map[string][]byte{"model.onnx": onnx, "golden/x.png": []byte("x")}, priv), bundle.ErrBadBundle, "golden/x.png is in the bundle but not listed"},
		{"listed file missing", modeltest.SignedTar(t, modeltest.WithFiles(modeltest.MeanManifest(), map[string][]byte{"model.onnx": onnx, "golden/x.png": []byte("x")}), map[string][]byte{"model.onnx": onnx}, priv), bundle.ErrBadBundle, "golden/x.png is listed in the manifest but missing"},
		{"manifest missing keys", modeltest.SignedTar(t, missingKeys, map[string][]byte{"model.onnx": onnx}, priv), bundle.ErrBadBundle, "missing keys: name, task"},
		{"not ONNX", modeltest.SignedTar(t, manifestFor(modeltest.MeanManifest(), []byte("MZ not a model")), map[string][]byte{"model.onnx": []byte("MZ not a model")}, priv), bundle.ErrInvalidModel, "not a valid ONNX model"},
		{"truncated ONNX", modeltest.SignedTar(t, manifestFor(modeltest.MeanManifest(), onnx[:len(onnx)-9]), map[string][]byte{"model.onnx": onnx[:len(onnx)-9]}, priv), bundle.ErrInvalidModel, "truncated"},
		{"unsupported opset", modeltest.SignedTar(t, manifestFor(modeltest.MeanManifest(), opset25), map[string][]byte{"model.onnx": opset25}, priv), bundle.ErrUnsupportedModel, "opset 26: Takt runs ai.onnx opsets 7..25"},
		{"wrong input rank", modeltest.SignedTar(t, manifestFor(noMap, rank3), map[string][]byte{"model.onnx": rank3}, priv), bundle.ErrUnsupportedModel, `input "image" float32 [1,4,4] has rank 3`},
		{"dynamic axes not covered", modeltest.SignedTar(t, manifestFor(modeltest.MeanManifest(), dynamic), map[string][]byte{"model.onnx": dynamic}, priv), bundle.ErrUnsupportedModel, "dynamic axes (height, width) not covered by the manifest"},
		{"output missing", modeltest.SignedTar(t, manifestFor(func() bundle.Manifest { m := modeltest.MeanManifest(); m.Outputs.Map = "heat"; return m }(), onnx), map[string][]byte{"model.onnx": onnx}, priv), bundle.ErrUnsupportedModel, `no map output "heat"`},
		{"wrong channels", modeltest.SignedTar(t, manifestFor(func() bundle.Manifest { m := modeltest.MeanManifest(); m.Input.Color = bundle.ColorRGB; return m }(), onnx), map[string][]byte{"model.onnx": onnx}, priv), bundle.ErrUnsupportedModel, "has 1 channels"},
		{"size disagrees", modeltest.SignedTar(t, manifestFor(func() bundle.Manifest { m := modeltest.MeanManifest(); m.Input.Width, m.Input.Height = 8, 8; return m }(), onnx), map[string][]byte{"model.onnx": onnx}, priv), bundle.ErrUnsupportedModel, "the manifest says 8x8"},
		{"path traversal member", func() []byte {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.WriteHeader(&tar.Header{Name: "../evil", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
			tw.Write([]byte("x"))
			tw.Close()
			return buf.Bytes()
		}(), bundle.ErrBadBundle, `path "../evil"`},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".tar")
			if err := os.WriteFile(path, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			b, err := bundle.OpenBundle(path, keys)
			if err == nil {
				// Some problems only show when ONNX Runtime loads the model.
				var rt *Runtime
				rt, err = NewRuntime(context.Background(), b, RuntimeOptions{Threads: 1})
				if err == nil {
					rt.Close()
					t.Fatalf("OpenBundle and NewRuntime: got nil errors, want %v", tt.wantIs)
				}
			}
			if !errors.Is(err, tt.wantIs) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n got %v\nwant errors.Is %v, containing %q", err, tt.wantIs, tt.want)
			}
			// The running model keeps serving.
			res, err := r.Infer(context.Background(), modeltest.Uniform(4, 4, 51))
			if err != nil || math.Abs(res.Score-0.2) > 1e-6 {
				t.Fatalf("running model after a rejected bundle: got %v, %v, want 0.2, nil", res.Score, err)
			}
		})
	}
}
