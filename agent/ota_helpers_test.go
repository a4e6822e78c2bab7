package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/onnxgraph"
)

// signer is a signing key pair on disk.
type signer struct {
	pub  string // PEM public key file
	priv ed25519.PrivateKey
	id   string
}

func newSigner(t testing.TB, dir, name string) signer {
	t.Helper()
	path := filepath.Join(dir, name+".key")
	pub, err := bundle.WriteKeyPair(path)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.ReadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return signer{pub: path + ".pub", priv: priv, id: bundle.KeyID(pub)}
}

// graphManifest describes a test graph (input "image" [1,1,192,256], output "score" [1]).
func graphManifest(v string, threshold float64) bundle.Manifest {
	return bundle.Manifest{Name: "fixture-part", Version: v, Task: bundle.TaskAnomaly, Opset: 17,
		Input:   bundle.InputSpec{Layout: bundle.LayoutNCHW, Color: bundle.ColorGray},
		Outputs: bundle.OutputSpec{Score: "score"}, Thresholds: bundle.Thresholds{Fail: threshold}}
}

func buildTestBundle(t testing.TB, m bundle.Manifest, onnx []byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := bundle.BuildBundle(&buf, m, onnx, nil, key); err != nil {
		t.Fatalf("BuildBundle: %v", err)
	}
	return buf.Bytes()
}

func graph(t testing.TB, build func(g *onnxgraph.Graph)) []byte {
	t.Helper()
	g := onnxgraph.New("test")
	build(g)
	data, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// meanGraph scores a part by its mean gray level times gain: with a small threshold it
// FAILs every part (a model whose FAIL rate jumps).
func meanGraph(t testing.TB, gain float32) []byte {
	return graph(t, func(g *onnxgraph.Graph) {
		g.Input("image", 1, 1, 192, 256)
		g.Initializer("gain", []int64{1}, []float32{gain})
		g.Node("ReduceMean", []string{"image"}, []string{"mean"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Node("Mul", []string{"mean", "gain"}, []string{"score"})
		g.Output("score", 1)
	})
}

// nanGraph scores every part NaN (0/0).
func nanGraph(t testing.TB) []byte {
	return graph(t, func(g *onnxgraph.Graph) {
		g.Input("image", 1, 1, 192, 256)
		g.Node("ReduceMean", []string{"image"}, []string{"mean"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Node("Sub", []string{"mean", "mean"}, []string{"zero"})
		g.Node("Div", []string{"zero", "zero"}, []string{"score"})
		g.Output("score", 1)
	})
}

// addSlowInput adds the [192,256] gray input "image" and the products slowGraph's rounds
// use: "up" [256,1024] = [I/4 I/4 I/4 I/4] and "down" [1024,256] = [I; I; I; I], whose
// product is the identity, so a round gives the image back exactly.
func addSlowInput(g *onnxgraph.Graph) {
	const n, wide = 256, 1024
	up := make([]float32, n*wide)
	down := make([]float32, wide*n)
	for b := range 4 {
		for i := range n {
			up[i*wide+b*n+i] = 0.25
			down[(b*n+i)*n+i] = 1
		}
	}
	g.Input("image", 1, 1, 192, 256)
	g.Initializer("up", []int64{n, wide}, up)
	g.Initializer("down", []int64{wide, n}, down)
}

// slowGraph computes the mean gray level through pairs rounds of [192,256]x[256,1024]x
// [1024,256] products that give the image back exactly (about 0.2 GFLOP a round).
func slowGraph(t testing.TB, pairs int) []byte {
	return graph(t, func(g *onnxgraph.Graph) {
		addSlowInput(g)
		g.InitializerInt64("flat", []int64{2}, []int64{192, 256})
		g.InitializerInt64("back", []int64{4}, []int64{1, 1, 192, 256})
		g.Node("Reshape", []string{"image", "flat"}, []string{"x0"})
		x := "x0"
		for i := range pairs {
			w, y := "w"+itoa(i), "x"+itoa(i+1)
			g.Node("MatMul", []string{x, "up"}, []string{w})
			g.Node("MatMul", []string{w, "down"}, []string{y})
			x = y
		}
		g.Node("Reshape", []string{x, "back"}, []string{"img2"})
		g.Node("ReduceMean", []string{"img2"}, []string{"score"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Output("score", 1)
	})
}

// brightSlowGraph scores a part by its mean gray level, like meanGraph, but its cost grows
// with the brightness: the image is tiled 1+floor(mean*100) times through three rounds of
// slowGraph's products. A black part costs one tile, a near-white one about a hundred:
// a model that passes validation on dark parts and turns slow when the parts change.
func brightSlowGraph(t testing.TB) []byte {
	return graph(t, func(g *onnxgraph.Graph) {
		addSlowInput(g)
		g.Initializer("k", []int64{1}, []float32{100})
		g.InitializerInt64("one", []int64{1}, []int64{1})
		g.InitializerInt64("flat", []int64{2}, []int64{192, 256})
		g.InitializerInt64("vec", []int64{1}, []int64{1})
		g.Node("ReduceMean", []string{"image"}, []string{"mean"}, onnxgraph.Ints("axes", 1, 2, 3), onnxgraph.Int("keepdims", 0))
		g.Node("Mul", []string{"mean", "k"}, []string{"mk"})
		g.Node("Cast", []string{"mk"}, []string{"mki"}, onnxgraph.Int("to", 7)) // INT64, truncated
		g.Node("Add", []string{"mki", "one"}, []string{"r"})
		g.Node("Concat", []string{"r", "one"}, []string{"reps"}, onnxgraph.Int("axis", 0))
		g.Node("Reshape", []string{"image", "flat"}, []string{"x"})
		g.Node("Tile", []string{"x", "reps"}, []string{"tiled"})
		y := "tiled"
		for i := range 3 {
			w, next := "w"+itoa(i), "y"+itoa(i)
			g.Node("MatMul", []string{y, "up"}, []string{w})
			g.Node("MatMul", []string{w, "down"}, []string{next})
			y = next
		}
		g.Node("ReduceMean", []string{y}, []string{"m2"}, onnxgraph.Ints("axes", 0, 1), onnxgraph.Int("keepdims", 1))
		g.Node("Reshape", []string{"m2", "vec"}, []string{"score"})
		g.Output("score", 1)
	})
}

func itoa(i int) string { return string(rune('a'+i/26)) + string(rune('a'+i%26)) }

// tamper rewrites a signed bundle: edit changes its members (manifest.json included) and
// the original signature is kept.
func tamper(t testing.TB, data []byte, edit func(members map[string][]byte)) []byte {
	t.Helper()
	members, err := bundle.ReadTarMembers(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	edit(members)
	manifest, sig := members["manifest.json"], members["signature"]
	delete(members, "manifest.json")
	delete(members, "signature")
	var buf bytes.Buffer
	if err := bundle.WriteSignedTar(&buf, manifest, members, sig); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// bucket is the test's S3 bucket, written with minio-go as takt-cloud writes bundles.
type bucket struct {
	s3   *cloudtest.S3
	name string
	c    *minio.Client
}

func newBucket(t testing.TB, s3 *cloudtest.S3, name string) *bucket {
	t.Helper()
	s3.NewBucket(t, name)
	c, err := minio.New(s3.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, ""), Region: s3.Region, BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return &bucket{s3: s3, name: name, c: c}
}

func (b *bucket) put(t testing.TB, key string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.c.PutObject(ctx, b.name, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{DisableMultipart: true}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// syncTo points cfg's sync settings at the bucket.
func (b *bucket) syncTo(cfg *Config) {
	cfg.Sync.Endpoint = "http://" + b.s3.Endpoint
	cfg.Sync.Bucket = b.name
	cfg.Sync.Region = b.s3.Region
	cfg.Sync.AccessKey = b.s3.AccessKey
	cfg.Sync.SecretKey = cloudsync.Secret(b.s3.SecretKey)
	cfg.Sync.PathStyle = true
	cfg.Sync.PollInterval = 50 * time.Millisecond
	cfg.Sync.BackoffMin = 20 * time.Millisecond
	cfg.Sync.BackoffMax = 300 * time.Millisecond
	cfg.Sync.RequestTimeout = 5 * time.Second
}

// modelWatcher is an MQTT client that announces bundles (retained, as takt-cloud does) and
// collects the station's model/status messages.
type modelWatcher struct {
	c      mqtt.Client
	topics wire.Topics
	mu     sync.Mutex
	status []wire.ModelStatusMsg
}

// newStationWatcher is newModelWatcher on cfg's station topics.
func newStationWatcher(t testing.TB, broker string, cfg Config) *modelWatcher {
	t.Helper()
	topics, err := wire.NewTopics(cfg.MQTT.Site, cfg.MQTT.Line, cfg.Station)
	if err != nil {
		t.Fatal(err)
	}
	return newModelWatcher(t, broker, topics)
}

func newModelWatcher(t testing.TB, broker string, topics wire.Topics) *modelWatcher {
	t.Helper()
	w := &modelWatcher{topics: topics}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID("cloud-" + topics.Station).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).SetOrderMatters(true)
	w.c = mqtt.NewClient(opts)
	if tok := w.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher connect: %v", tok.Error())
	}
	tok := w.c.Subscribe(topics.Topic(wire.TopicModelStatus), 1, func(_ mqtt.Client, m mqtt.Message) {
		var s wire.ModelStatusMsg
		if err := wire.Decode(m.Payload(), &s); err != nil {
			t.Errorf("model/status %s: %v", m.Payload(), err)
			return
		}
		w.mu.Lock()
		w.status = append(w.status, s)
		w.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { w.c.Disconnect(100) })
	return w
}

// announce publishes model/available (retained) on the station's topic, or the line's.
func (w *modelWatcher) announce(t testing.TB, line bool, m wire.ModelAvailableMsg) {
	t.Helper()
	m.Schema = wire.MessageSchema
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	topic := w.topics.Topic(wire.TopicModelAvailable)
	if line {
		topic = w.topics.LineModelAvailable()
	}
	if tok := w.c.Publish(topic, 1, true, data); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("announce: %v", tok.Error())
	}
}

// waitFinal waits for a final status (active, rejected, rolled-back) of version and
// returns it; intermediate statuses of that version are returned in steps.
func (w *modelWatcher) waitFinal(t testing.TB, version string, timeout time.Duration) (final wire.ModelStatusMsg, steps []string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		steps = steps[:0]
		for _, s := range w.status {
			if s.Version != version {
				continue
			}
			steps = append(steps, s.State)
			switch s.State {
			case wire.ModelActive, wire.ModelRejected, wire.ModelRolledBack:
				w.mu.Unlock()
				return s, steps
			}
		}
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Fatalf("no final model/status for %s within %s; statuses: %+v", version, timeout, w.status)
	return
}

// statuses returns every status of version so far.
func (w *modelWatcher) statuses(version string) []wire.ModelStatusMsg {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []wire.ModelStatusMsg
	for _, s := range w.status {
		if s.Version == version {
			out = append(out, s)
		}
	}
	return out
}

func buildBundleWith(m bundle.Manifest, onnx []byte, files map[string][]byte, key signer) ([]byte, error) {
	var buf bytes.Buffer
	err := bundle.BuildBundle(&buf, m, onnx, files, key.priv)
	return buf.Bytes(), err
}
