package bundle

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/takt-edge/takt/models/onnxgraph"
)

// Outside input: manifests and bundle tars must never panic, only fail with an error.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"format":"takt-bundle/1","name":"a","version":"1.0.0","task":"anomaly","input":{"layout":"NCHW","color":"gray"},"outputs":{"score":"score"},"thresholds":{"fail":1},"opset":17,"files":{"model.onnx":"` + SHA256Hex(nil) + `"}}`))
	f.Add([]byte(`{"rois":[{"name":"a","x0":0,"y0":0,"x1":2,"y1":1}],"golden":{"cases":[]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err == nil && m.Validate() != nil {
			t.Fatalf("ParseManifest accepted a manifest Validate rejects")
		}
	})
}

func FuzzReadBundle(f *testing.F) {
	g := onnxgraph.New("m")
	g.Input("image", 1, 1, 2, 2)
	g.Node("ReduceMax", []string{"image"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
	g.Output("score", 1)
	onnx, err := g.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	seed := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	keys := TrustedKeys{}
	keys.Add(seed.Public().(ed25519.PublicKey))
	var buf bytes.Buffer
	m := Manifest{Name: "m", Version: "1.0.0", Task: TaskAnomaly, Input: InputSpec{Layout: LayoutNCHW, Color: ColorGray},
		Outputs: OutputSpec{Score: "score"}, Thresholds: Thresholds{Fail: 1}, Opset: onnxgraph.DefaultOpset}
	if err := BuildBundle(&buf, m, onnx, map[string][]byte{"golden/a.png": []byte("png")}, seed); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:700])
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadBundle(bytes.NewReader(data), keys)
		if err == nil && (b.Manifest == nil || b.ONNX == nil) {
			t.Fatalf("ReadBundle returned a bundle without manifest or model")
		}
	})
}

// Ultralytics' names metadata is outside input: a parse never panics, and what it returns
// has one non-repeating index per name.
func FuzzParsePythonNames(f *testing.F) {
	f.Add("{0: 'good', 1: 'scratch', 2: 'dent'}")
	f.Add(`{0: "it's", 1: 'a\'b'}`)
	f.Add("{1: 'a', 1: 'b'}")
	f.Fuzz(func(t *testing.T, s string) {
		names, err := parsePythonNames(s)
		if err == nil && len(names) == 0 {
			t.Fatalf("parsePythonNames(%q): no names and no error", s)
		}
	})
}

func TestParsePythonNames(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // joined by |, or "error"
	}{
		{"{0: 'good', 1: 'scratch', 2: 'dent'}", "good|scratch|dent"},
		{`{1: "b", 0: "a"}`, "a|b"},
		{"{0: 'a', 2: 'c'}", "error"},
		{"['a', 'b']", "error"},
	} {
		names, err := parsePythonNames(tt.in)
		got := strings.Join(names, "|")
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("parsePythonNames(%q) = %q (%v), want %q", tt.in, got, err, tt.want)
		}
	}
}
