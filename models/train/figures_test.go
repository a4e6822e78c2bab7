//go:build cgo

package train

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	ort "github.com/yalue/onnxruntime_go"
	"gocv.io/x/gocv"
)

// The figures of issue 4, measured side by side in one run on this machine. They run only
// with TAKT_FIGURES=1 (make bench) and print "BENCH name=value" lines.
//
// Every contender uses its runtime's default threading (ONNX Runtime: one thread per core;
// OpenCV: its own pool), on the default starter model (TrainTemplate with default options:
// 256x192 input) and the same 640x480 BGR frame of a good part.

func figuresOn(t *testing.T) {
	if os.Getenv("TAKT_FIGURES") != "1" {
		t.Skip("figures run with TAKT_FIGURES=1 (make bench)")
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(math.Ceil(q*float64(len(s))))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func TestFiguresInference(t *testing.T) {
	figuresOn(t)
	good := goodParts(10, 1, 1)
	tm, err := TrainTemplate(context.Background(), good, TemplateOptions{Name: "figures", Version: "1.0.0"})
	if err != nil {
		t.Fatalf("TrainTemplate: %v", err)
	}
	frame := goodParts(1, 777, 3)[0]
	r, err := models.LoadRuntimeData(tm.ONNX, models.RuntimeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	in := r.Info().Input

	// Bare Session.Run of the same model on the same (already preprocessed) input.
	x, _ := ort.NewEmptyTensor[float32](ort.NewShape(1, 1, int64(in.Height), int64(in.Width)))
	defer x.Destroy()
	score, _ := ort.NewEmptyTensor[float32](ort.NewShape(1))
	defer score.Destroy()
	amap, _ := ort.NewEmptyTensor[float32](ort.NewShape(1, 1, int64(in.Height), int64(in.Width)))
	defer amap.Destroy()
	bare, err := ort.NewAdvancedSessionWithONNXData(tm.ONNX, []string{"image"}, []string{"score", "anomaly_map"},
		[]ort.Value{x}, []ort.Value{score, amap}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Destroy()
	if err := models.Preprocess(frame, in, x.GetData()); err != nil {
		t.Fatal(err)
	}
	node := startNodeORT(t, tm, x.GetData(), in)

	// Takt's whole pipeline, the bare Session.Run of the same process and a bare
	// onnxruntime-node session.run (a long-lived child process that runs a round when
	// asked) take turns round by round, the order rotating every round, so that a change
	// in the shared machine's load hits all three alike. Round 0 warms every contender up
	// and is left out; each ratio is the median of the rounds' ratios of their p50s.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // a part deadline, as the agent sets
	defer cancel()
	const rounds, perRound = 13, 30
	var takt, bareT []time.Duration
	var overheadR, nodeR []float64
	var nodeScore float64
	for round := range rounds {
		var taktRound, bareRound []time.Duration
		var nodeP50 float64
		contenders := []func(){
			func() {
				for range perRound {
					t0 := time.Now()
					res, err := r.Infer(ctx, frame)
					taktRound = append(taktRound, time.Since(t0))
					if err != nil || math.IsNaN(res.Score) {
						t.Fatalf("Infer: %v %v", res.Score, err)
					}
				}
			},
			func() {
				for range perRound {
					t0 := time.Now()
					if err := bare.Run(); err != nil {
						t.Fatal(err)
					}
					bareRound = append(bareRound, time.Since(t0))
				}
			},
			func() { nodeP50, nodeScore = node.round(t, perRound) },
		}
		for k := range contenders {
			contenders[(round+k)%len(contenders)]()
		}
		if round == 0 {
			continue
		}
		takt, bareT = append(takt, taktRound...), append(bareT, bareRound...)
		taktP50 := ms(median(taktRound))
		overheadR = append(overheadR, taktP50/ms(median(bareRound)))
		nodeR = append(nodeR, nodeP50/taktP50)
		t.Logf("round %d: p50 Takt pipeline %.3f ms, bare Session.Run %.3f ms, onnxruntime-node session.run %.3f ms", round, taktP50, ms(median(bareRound)), nodeP50)
	}
	last, err := r.Infer(ctx, frame)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := float64(score.GetData()[0]), last.Score; math.Abs(got-want) > 1e-6 {
		t.Fatalf("bare run score %v, Takt %v: want the same", got, want)
	}
	if math.Abs(nodeScore-last.Score) > 1e-5 {
		t.Fatalf("onnxruntime-node score %v, Takt %v: want the same model and input", nodeScore, last.Score)
	}
	allocs := testing.AllocsPerRun(100, func() { r.Infer(ctx, frame) })
	taktP50 := median(takt)
	overhead, vsNode := medianF(overheadR), medianF(nodeR)
	fmt.Printf("BENCH pipeline_overhead_ratio=%.3f\n", overhead)
	fmt.Printf("BENCH takt_vs_node_ort=%.3f\n", vsNode)
	fmt.Printf("BENCH infer_p50_ms=%.3f\n", ms(taktP50))
	fmt.Printf("BENCH infer_p99_ms=%.3f\n", ms(pct(takt, 0.99)))
	fmt.Printf("BENCH allocs_per_frame=%g\n", allocs)
	t.Logf("model %s input %v; Takt preprocess+run+postprocess p50 %v p99 %v; bare Session.Run p50 %v; onnxruntime-node %s: Takt's pipeline %.3fx as fast (median of %d rounds, %.3f-%.3f)",
		tm.Name, in, taktP50, pct(takt, 0.99), median(bareT), node.version, vsNode, len(nodeR), slices.Min(nodeR), slices.Max(nodeR))
	if allocs != 0 {
		t.Errorf("allocs per frame %v, want 0", allocs)
	}

	t.Run("opencv dnn", func(t *testing.T) { figuresOpenCVDNN(t, tm, good, frame) })
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// dnnLoads tries the model in OpenCV's DNN in a child process: OpenCV 4.6 aborts the whole
// process (a C++ exception through cgo) on an operator it cannot import.
func dnnLoads(t *testing.T, onnx []byte) (bool, string) {
	path := filepath.Join(t.TempDir(), "probe.onnx")
	if err := os.WriteFile(path, onnx, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFiguresDNNProbeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TAKT_DNN_PROBE="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		for _, l := range lines {
			if strings.Contains(l, "ERROR during processing node") || strings.Contains(l, "parse error") {
				return false, strings.TrimSpace(l)
			}
		}
		return false, err.Error()
	}
	return true, ""
}

// TestFiguresDNNProbeChild loads $TAKT_DNN_PROBE in OpenCV DNN (child of dnnLoads).
func TestFiguresDNNProbeChild(t *testing.T) {
	path := os.Getenv("TAKT_DNN_PROBE")
	if path == "" {
		t.Skip("child process of TestFiguresInference")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	net, err := gocv.ReadNetFromONNXBytes(data)
	if err != nil || net.Empty() {
		t.Fatalf("ReadNetFromONNXBytes: %v", err)
	}
	net.Close()
}

func figuresOpenCVDNN(t *testing.T, tm *TrainedModel, good []camera.Frame, frame camera.Frame) {
	model := tm
	ok, why := dnnLoads(t, tm.ONNX)
	fmt.Printf("BENCH opencv_dnn_loads_default_model=%d\n", map[bool]int{true: 1, false: 0}[ok])
	if !ok {
		// The default model uses Max with a constant (lighting floor), ArgMin and
		// GatherElements (shift alignment), which OpenCV 4.6's importer rejects. Compare on
		// the variant without lighting normalization and shift alignment, which it loads.
		t.Logf("OpenCV 4.6 DNN cannot load the default model (%s); comparing on the variant without lighting normalization and shift alignment (Pad, Conv, Sub, Div, Abs, AveragePool, ReduceMax)", why)
		var err error
		if model, err = TrainTemplate(context.Background(), good, TemplateOptions{Name: "figures-dnn", LightingSigma: -1, Shift: -1}); err != nil {
			t.Fatal(err)
		}
		if ok, why := dnnLoads(t, model.ONNX); !ok {
			t.Fatalf("OpenCV DNN cannot load the variant either: %s", why)
		}
	}
	r, err := models.LoadRuntimeData(model.ONNX, models.RuntimeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	net, err := gocv.ReadNetFromONNXBytes(model.ONNX)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	in := r.Info().Input
	src, err := gocv.NewMatFromBytes(frame.Height, frame.Width, gocv.MatTypeCV8UC3, frame.Pix)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	gray := gocv.NewMat()
	defer gray.Close()
	dnnFrame := func() float32 {
		// OpenCV's own pipeline: gray, blobFromImage (resize, scale), forward.
		gocv.CvtColor(src, &gray, gocv.ColorBGRToGray)
		blob := gocv.BlobFromImage(gray, 1.0/255, image.Pt(in.Width, in.Height), gocv.NewScalar(0, 0, 0, 0), false, false)
		net.SetInput(blob, "image")
		out := net.Forward("score")
		v := out.GetFloatAt(0, 0)
		out.Close()
		blob.Close()
		return v
	}
	ctx := context.Background()
	for range 5 {
		dnnFrame()
		r.Infer(ctx, frame)
	}
	var dnnScore float32
	var taktScore float64
	// The two take turns round by round, the order flipping every round; the ratio is the
	// median of the rounds' ratios of their p50s.
	var dnnT, taktT []time.Duration
	var ratios []float64
	for round := range 10 {
		var dnnRound, taktRound []time.Duration
		dnn := func() {
			for range 20 {
				t0 := time.Now()
				dnnScore = dnnFrame()
				dnnRound = append(dnnRound, time.Since(t0))
			}
		}
		takt := func() {
			for range 20 {
				t0 := time.Now()
				res, err := r.Infer(ctx, frame)
				taktRound = append(taktRound, time.Since(t0))
				if err != nil {
					t.Fatal(err)
				}
				taktScore = res.Score
			}
		}
		if round%2 == 0 {
			dnn()
			takt()
		} else {
			takt()
			dnn()
		}
		dnnT, taktT = append(dnnT, dnnRound...), append(taktT, taktRound...)
		ratios = append(ratios, float64(median(dnnRound))/float64(median(taktRound)))
	}
	ratio := medianF(ratios)
	fmt.Printf("BENCH ort_vs_opencv_dnn=%.3f\n", ratio)
	t.Logf("model %s: OpenCV DNN p50 %v (score %.4f; its resize is bilinear), Takt p50 %v (score %.4f): ratio DNN/Takt %.3f (median of %d rounds, %.3f-%.3f)",
		model.Name, median(dnnT), dnnScore, median(taktT), taktScore, ratio, len(ratios), slices.Min(ratios), slices.Max(ratios))
}

// ensureNodeORT installs onnxruntime-node@1.24.1 into .deps/node once (npm, no install
// scripts: the package ships its binaries).
func ensureNodeORT(t *testing.T) string {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".deps", "node")
	pkg := filepath.Join(dir, "node_modules", "onnxruntime-node", "package.json")
	if data, err := os.ReadFile(pkg); err == nil && strings.Contains(string(data), `"version": "1.24.1"`) {
		return root
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatalf("npm not found: install Node.js and npm (apt-get install nodejs npm) for the takt_vs_node_ort figure")
	}
	fmt.Println("figures: installing onnxruntime-node@1.24.1 into .deps/node (npm install --ignore-scripts, once)")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name": "takt-figures", "private": true}`+"\n"), 0o644)
	}
	cmd := exec.Command("npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "onnxruntime-node@1.24.1")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install onnxruntime-node@1.24.1: %v\n%s", err, out)
	}
	return root
}

// nodeORT is a bare onnxruntime-node session in a child process (testdata/bench/ort_node.js
// --serve) that times a round of runs on the same preprocessed input when asked.
type nodeORT struct {
	in      io.WriteCloser
	out     *bufio.Scanner
	version string
}

func startNodeORT(t *testing.T, tm *TrainedModel, input []float32, in bundle.InputShape) *nodeORT {
	root := ensureNodeORT(t)
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(modelPath, tm.ONNX, 0o644); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 4*len(input))
	for i, v := range input {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	inputPath := filepath.Join(dir, "input.f32")
	if err := os.WriteFile(inputPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	dims := fmt.Sprintf("1,1,%d,%d", in.Height, in.Width)
	cmd := exec.Command("node", filepath.Join(root, "testdata", "bench", "ort_node.js"), modelPath, inputPath, "image", dims, "--serve")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node ort_node.js: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close() // ort_node.js exits at EOF
		cmd.Wait()
	})
	n := &nodeORT{in: stdin, out: bufio.NewScanner(stdout)}
	var ready struct {
		Ready   bool   `json:"ready"`
		Version string `json:"version"`
	}
	if !n.out.Scan() {
		t.Fatalf("node ort_node.js --serve exited before it was ready: %v", n.out.Err())
	}
	if err := json.Unmarshal(n.out.Bytes(), &ready); err != nil || !ready.Ready || ready.Version != "1.24.1" {
		t.Fatalf("node ort_node.js --serve said %q (%v); want ready on onnxruntime-node 1.24.1", n.out.Text(), err)
	}
	n.version = ready.Version
	return n
}

// round times runs session.run calls in the child and returns their p50 in
// milliseconds and the score of the last.
func (n *nodeORT) round(t *testing.T, runs int) (p50ms, score float64) {
	if _, err := fmt.Fprintf(n.in, "%d\n", runs); err != nil {
		t.Fatalf("node ort_node.js: ask for a round: %v", err)
	}
	if !n.out.Scan() {
		t.Fatalf("node ort_node.js exited during a round: %v", n.out.Err())
	}
	var res struct {
		P50   float64 `json:"p50_ms"`
		Runs  int     `json:"runs"`
		Score float64 `json:"score"`
	}
	if err := json.Unmarshal(n.out.Bytes(), &res); err != nil || res.Runs != runs {
		t.Fatalf("node ort_node.js answered %q (%v); want a round of %d runs", n.out.Text(), err, runs)
	}
	return res.P50, res.Score
}

// TestFiguresSessionOptions compares ONNX Runtime session options on the starter model
// (`Train` on 10 good synthetic parts), a bare Session.Run each, in interleaved rounds with
// the order rotating; round 0 warms up and is left out; each line is the median of the
// rounds' p50s (models/README.md, "Inference figures"). A comparison, no figure: the runtime
// keeps ONNX Runtime's defaults unless this shows a better choice.
func TestFiguresSessionOptions(t *testing.T) {
	comparisonsOn(t)
	tm, err := Train(context.Background(), TrainSet{Good: goodParts(10, 1, 1)}, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in := tm.Input
	xs, err := models.PreprocessAll(goodParts(1, 777, 3), in)
	if err != nil {
		t.Fatal(err)
	}
	spin := func(on bool) func(*ort.SessionOptions) error {
		return func(o *ort.SessionOptions) error {
			return o.AddSessionConfigEntry("session.intra_op.allow_spinning", map[bool]string{true: "1", false: "0"}[on])
		}
	}
	threads := func(n int) func(*ort.SessionOptions) error {
		return func(o *ort.SessionOptions) error { return o.SetIntraOpNumThreads(n) }
	}
	configs := []struct {
		name string
		set  []func(*ort.SessionOptions) error
	}{
		{"ONNX Runtime's defaults (the runtime's)", nil},
		{"no spinning", []func(*ort.SessionOptions) error{spin(false)}},
		{"1 thread", []func(*ort.SessionOptions) error{threads(1)}},
		{"2 threads", []func(*ort.SessionOptions) error{threads(2)}},
		{"2 threads, no spinning", []func(*ort.SessionOptions) error{threads(2), spin(false)}},
		{"1 thread, no memory arena", []func(*ort.SessionOptions) error{threads(1), func(o *ort.SessionOptions) error { return o.SetCpuMemArena(false) }}},
	}
	sessions := make([]*ort.AdvancedSession, len(configs))
	for i, c := range configs {
		x, err := ort.NewTensor(ort.NewShape(inputDims(in)...), xs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer x.Destroy()
		score, _ := ort.NewEmptyTensor[float32](ort.NewShape(1))
		defer score.Destroy()
		amap, _ := ort.NewEmptyTensor[float32](ort.NewShape(1, 1, int64(in.Height), int64(in.Width)))
		defer amap.Destroy()
		so, err := ort.NewSessionOptions()
		if err != nil {
			t.Fatal(err)
		}
		defer so.Destroy()
		for _, set := range c.set {
			if err := set(so); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if sessions[i], err = ort.NewAdvancedSessionWithONNXData(tm.ONNX, []string{"image"}, []string{"score", "anomaly_map"},
			[]ort.Value{x}, []ort.Value{score, amap}, so); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		defer sessions[i].Destroy()
	}
	const rounds, perRound = 15, 30
	p50s := make([][]float64, len(configs))
	for round := range rounds {
		for k := range configs {
			i := (round + k) % len(configs)
			var ds []time.Duration
			for range perRound {
				t0 := time.Now()
				if err := sessions[i].Run(); err != nil {
					t.Fatalf("%s: %v", configs[i].name, err)
				}
				ds = append(ds, time.Since(t0))
			}
			if round > 0 {
				p50s[i] = append(p50s[i], ms(median(ds)))
			}
		}
	}
	for i, c := range configs {
		t.Logf("| %s | %.2f ms | %.2f-%.2f |", c.name, medianOf(p50s[i]), slices.Min(p50s[i]), slices.Max(p50s[i]))
	}
}
