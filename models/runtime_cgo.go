//go:build cgo

package models

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
	ort "github.com/yalue/onnxruntime_go"
)

// Runtime runs one ONNX model with ONNX Runtime on the first execution provider of the
// configured chain that loads (TensorRT, CUDA, CPU). Its input and output tensors are
// allocated once and reused by every Infer (an onnxruntime_go AdvancedSession), so a
// Runtime is for one goroutine at a time: run one Runtime per worker. Info, Attempts and
// EngineBuild may be called from any goroutine. Close it to free the session and tensors.
type Runtime struct {
	mu       sync.Mutex // guards info and attempts against readers on other goroutines
	info     Info
	attempts []ProviderAttempt

	opts RuntimeOptions
	spec *bundle.RunSpec
	prep *prepSpec

	session  *ort.AdvancedSession
	runOpts  *ort.RunOptions
	inNames  []string
	outNames []string
	tensors  // bound to session

	pres     []*preprocessor // one per ROI (or one for the whole frame)
	rois     []bundle.Region // nil: the whole frame
	roiOut   []ROIScore      // Result.ROIs
	probs    []float32       // classifier probabilities
	det      *detector       // nil unless the task is detection
	boxes    []Box           // Result.Boxes
	worstMap []float32       // map of the highest-scoring ROI, with several ROIs

	// The context watcher: Infer hands it the part's context, it terminates the run if the
	// context ends first. No allocation per frame.
	watch     chan context.Context
	watchStop chan struct{}
	watchAck  chan bool

	build *engineBuild // background TensorRT build, nil if none
}

// LoadRuntime loads the plain ONNX model at path (loading ONNX Runtime itself with
// InitONNXRuntime("") if that has not happened yet), checks that Takt can run it, warms it
// up and returns it. The model must have one float32 NCHW input [1,1,H,W] (gray) or
// [1,3,H,W] (RGB, 0..1, no mean/std) with fixed C, H and W (a dynamic batch dim is fed as
// 1), a float32 score output [1] or [1,1] (RuntimeOptions.ScoreOutput; anomalib's
// pred_score works) and optionally an anomaly map [1,1,h,w]. Anything else needs a bundle
// manifest (NewRuntime). Errors wrap fs.ErrNotExist for a missing file, ErrInvalidModel for
// bytes that are not a loadable ONNX model, ErrUnsupportedModel for a model of the wrong
// shape, and ErrProviderUnavailable when a required provider does not load.
func LoadRuntime(path string, opts RuntimeOptions) (*Runtime, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	r, err := LoadRuntimeData(data, opts)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return r, nil
}

// NewRuntime loads the model of a verified bundle (OpenBundle) as its manifest describes it,
// warms it up, and replays the golden set: a model that does not reproduce its golden
// scores within tolerance is rejected with ErrGoldenMismatch. Other errors as LoadRuntime.
func NewRuntime(ctx context.Context, b *bundle.Bundle, opts RuntimeOptions) (*Runtime, error) {
	h, err := bundle.InspectModel(b.ONNX)
	if err != nil {
		return nil, fmt.Errorf("load bundle %s %s: %w", b.Manifest.Name, b.Manifest.Version, err)
	}
	spec, err := bundle.ManifestSpec(h, b.Manifest)
	if err != nil {
		return nil, fmt.Errorf("load bundle %s %s: %w", b.Manifest.Name, b.Manifest.Version, err)
	}
	r, err := loadRuntime(b.ONNX, spec, opts)
	if err != nil {
		return nil, fmt.Errorf("load bundle %s %s: %w", b.Manifest.Name, b.Manifest.Version, err)
	}
	if err := r.replayGolden(ctx, b); err != nil {
		r.Close()
		return nil, fmt.Errorf("load bundle %s %s: %w", b.Manifest.Name, b.Manifest.Version, err)
	}
	return r, nil
}

// LoadRuntimeData builds a Runtime from a serialized plain ONNX model; the trainer uses it to
// score with the exact code path of Infer.
func LoadRuntimeData(data []byte, opts RuntimeOptions) (*Runtime, error) {
	opts = opts.withDefaults()
	h, err := bundle.InspectModel(data)
	if err != nil {
		return nil, err
	}
	spec, err := bundle.RunSpecOf(h, opts.ScoreOutput, opts.MapOutput)
	if err != nil {
		return nil, err
	}
	return loadRuntime(data, spec, opts)
}

func loadRuntime(data []byte, spec *bundle.RunSpec, opts RuntimeOptions) (_ *Runtime, err error) {
	opts = opts.withDefaults()
	if err := opts.Providers.Validate(); err != nil {
		return nil, err
	}
	if err := InitONNXRuntime(""); err != nil {
		return nil, err
	}
	layout := bundle.LayoutNCHW
	if spec.NHWC {
		layout = bundle.LayoutNHWC
	}
	r := &Runtime{
		opts: opts,
		spec: spec,
		prep: newPrepSpec(spec.Input, spec.NHWC, spec.Color, spec.Mean, spec.Std, spec.Resize),
		info: Info{
			Model:     ModelInfo{Name: spec.Name, Version: spec.Version, SHA256: bundle.SHA256Hex(data)},
			Task:      spec.Task,
			Input:     spec.Input,
			Layout:    layout,
			Color:     spec.Color,
			Classes:   spec.Classes(),
			ROIs:      len(spec.ROIs),
			Threshold: spec.Threshold,
			Opset:     int(spec.Opset),
		},
	}
	r.prep.pad = spec.Pad
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if spec.ShapesAtRun {
		if err := probeOutputShapes(data, spec); err != nil {
			return nil, err
		}
	}
	if spec.Task == bundle.TaskDetection {
		r.det = newDetector(spec.BoxLayout, spec.Classes(), spec.Anchors, spec.MinConfidence, spec.NMSIoU)
		r.boxes = make([]Box, 0, min(spec.Anchors, maxDetections))
	}
	if r.tensors, err = newTensors(spec); err != nil {
		return nil, err
	}
	r.inNames, r.outNames = []string{spec.InputName}, []string{spec.ScoreName}
	if spec.MapName != "" {
		r.outNames = append(r.outNames, spec.MapName)
		r.info.MapHeight, r.info.MapWidth = spec.MapH, spec.MapW
	}
	if k := spec.Classes(); k > 0 && spec.Task != bundle.TaskDetection {
		r.probs = make([]float32, k)
	}
	if len(spec.ROIs) == 0 {
		r.pres = []*preprocessor{newPreprocessor()}
	} else {
		for _, roi := range spec.ROIs {
			r.pres = append(r.pres, newPreprocessor())
			r.rois = append(r.rois, roi.Region)
			r.roiOut = append(r.roiOut, ROIScore{Name: roi.Name})
		}
		if r.amap != nil && len(spec.ROIs) > 1 {
			r.worstMap = make([]float32, spec.MapH*spec.MapW)
		}
	}
	if r.runOpts, err = ort.NewRunOptions(); err != nil {
		return nil, fmt.Errorf("run options: %w", err)
	}
	if err := r.startProviders(data); err != nil {
		return nil, err
	}
	start := time.Now()
	for range max(1, opts.Warmup) {
		if err := r.run(context.Background()); err != nil {
			return nil, fmt.Errorf("%w: test run on a blank image: %v", bundle.ErrUnsupportedModel, err)
		}
	}
	r.info.Warmup = time.Since(start)
	return r, nil
}

// CheckFinite runs the model once on a blank (black) frame and fails when an output Takt
// reads is NaN or infinite there: an export broken that way would turn every part into
// NO_DECISION. Infer itself passes a NaN score through for the caller to decide.
func (r *Runtime) CheckFinite(ctx context.Context) error {
	in := r.spec.Input
	f := camera.Frame{Width: in.Width, Height: in.Height, Channels: 3, Pix: make([]byte, in.Width*in.Height*3)}
	res, err := r.Infer(ctx, f)
	if err != nil {
		return err
	}
	for _, v := range r.score.GetData() {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: output %q is %v on a blank image: the export is broken (a division by zero or a log of 0 in the graph?)",
				bundle.ErrUnsupportedModel, r.spec.ScoreName, v)
		}
	}
	if math.IsNaN(res.Score) || math.IsInf(res.Score, 0) {
		return fmt.Errorf("%w: score %v on a blank image", bundle.ErrUnsupportedModel, res.Score)
	}
	return nil
}

// probeOutputShapes runs the model once on a blank input, letting ONNX Runtime size the
// outputs, and fixes spec's dynamic output dims from what it returned.
func probeOutputShapes(data []byte, spec *bundle.RunSpec) error {
	outNames := []string{spec.ScoreName}
	if spec.MapName != "" {
		outNames = append(outNames, spec.MapName)
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{spec.InputName}, outNames, nil)
	if err != nil {
		return fmt.Errorf("%w: onnx runtime rejected it: %v", bundle.ErrInvalidModel, err)
	}
	defer sess.Destroy()
	in, err := ort.NewEmptyTensor[float32](ort.NewShape(spec.InDims...))
	if err != nil {
		return fmt.Errorf("input tensor: %w", err)
	}
	defer in.Destroy()
	outs := make([]ort.Value, len(outNames))
	if err := sess.Run([]ort.Value{in}, outs); err != nil {
		return fmt.Errorf("%w: test run on a blank %v input: %v", bundle.ErrUnsupportedModel, spec.InDims, err)
	}
	shapes := make([][]int64, 2)
	for i, o := range outs {
		if o != nil {
			shapes[i] = o.GetShape()
			o.Destroy()
		}
	}
	return spec.SetOutputShapes(shapes[0], shapes[1])
}

// Info describes the loaded model and the provider it runs on now.
func (r *Runtime) Info() Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info
}

// Attempts lists the providers the chain tried, in order, with why each that does not
// serve was passed over.
func (r *Runtime) Attempts() []ProviderAttempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ProviderAttempt(nil), r.attempts...)
}

// Infer preprocesses f (each ROI of the manifest, or the whole frame) into the input
// tensor, runs the model and returns the score. A frame of any size is resized to the
// model input. It returns ctx's error if ctx is done before or during the run (the run is
// terminated), and errors wrapping ErrBadFrame for a malformed frame. A NaN score is
// returned as NaN with a nil error. In steady state Infer allocates nothing on the Go heap
// (without ReturnMap).
func (r *Runtime) Infer(ctx context.Context, f camera.Frame) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("infer: %w", err)
	}
	if r.session == nil {
		return Result{}, errClosed
	}
	if r.build != nil {
		select {
		case done := <-r.build.done:
			r.adoptBuild(done)
		default:
		}
	}
	t0 := time.Now()
	var tm Timings
	res := Result{Score: math.Inf(-1), Model: r.info.Model, Provider: r.info.Provider}
	for i, pre := range r.pres {
		var roi bundle.Region
		if r.rois != nil {
			roi = r.rois[i]
		}
		ta := time.Now()
		if err := pre.run(f, roi, r.prep, r.input.GetData()); err != nil {
			return Result{}, fmt.Errorf("infer: %w", err)
		}
		tb := time.Now()
		if err := r.run(ctx); err != nil {
			return Result{}, fmt.Errorf("infer %s: %w", r.info.Model.Name, err)
		}
		tc := time.Now()
		score, class, conf := r.post(f, roi)
		worst := i == 0 || score > res.Score || math.IsNaN(score)
		if worst && !math.IsNaN(res.Score) {
			res.Score, res.Class, res.Confidence = score, class, conf
			if r.worstMap != nil {
				copy(r.worstMap, r.amap.GetData())
			}
		}
		if r.rois != nil {
			r.roiOut[i].Score, r.roiOut[i].Class, r.roiOut[i].Confidence = score, class, conf
		}
		tm.Preprocess += tb.Sub(ta)
		tm.Infer += tc.Sub(tb)
		tm.Postprocess += time.Since(tc)
	}
	if r.rois != nil {
		res.ROIs = r.roiOut
	}
	if r.det != nil {
		res.Boxes = r.boxes
	}
	if r.opts.ReturnMap && r.amap != nil {
		res.Map = &AnomalyMap{Width: r.info.MapWidth, Height: r.info.MapHeight, Values: r.CopyMap(nil)}
	}
	tm.Total = time.Since(t0)
	res.Timings = tm
	return res, nil
}

// post reads the outputs of the last run on roi of f: the score, and a classifier's class
// and confidence (a detector's: those of its most confident box, its boxes in r.boxes).
func (r *Runtime) post(f camera.Frame, roi bundle.Region) (score float64, class string, conf float64) {
	out := r.score.GetData()
	if r.det != nil {
		return r.postBoxes(out, frameGeometry(f.Width, f.Height, roi, r.spec.Input, r.spec.Resize))
	}
	if r.probs == nil {
		if n := r.spec.Normalize; n != nil {
			if r.amap != nil {
				m := r.amap.GetData()
				for i, v := range m {
					m[i] = float32(minMaxNormalize(float64(v), n.PixelThreshold, n))
				}
			}
			return minMaxNormalize(float64(out[0]), n.ImageThreshold, n), "", 0
		}
		return float64(out[0]), "", 0
	}
	p := r.probs
	if r.spec.Softmax {
		hi := float32(math.Inf(-1))
		for _, v := range out {
			hi = max(hi, v)
		}
		var sum float32
		for i, v := range out {
			p[i] = float32(math.Exp(float64(v - hi)))
			sum += p[i]
		}
		for i := range p {
			p[i] /= sum
		}
	} else {
		copy(p, out)
	}
	top := 0
	for i, v := range p {
		if v > p[top] {
			top = i
		}
	}
	if r.spec.FailIndex == nil {
		return 1 - float64(p[r.spec.OKIndex]), r.spec.Labels[top], float64(p[top])
	}
	var fail float64
	for _, i := range r.spec.FailIndex {
		if r.spec.ClassScale != nil {
			fail = max(fail, float64(p[i])*r.spec.ClassScale[i])
		} else {
			fail += float64(p[i])
		}
	}
	return fail, r.spec.Labels[top], float64(p[top])
}

// minMaxNormalize is anomalib 1.x's normalization of a raw score around its threshold.
func minMaxNormalize(x, threshold float64, n *bundle.ScoreNormalization) float64 {
	if math.IsNaN(x) {
		return x
	}
	return min(1, max(0, (x-threshold)/(n.Max-n.Min)+0.5))
}

// postBoxes decodes a detector's output into r.boxes (frame pixels through g): the score
// is the highest confidence of a box of a FAIL class, 0 without one.
func (r *Runtime) postBoxes(out []float32, g geometry) (score float64, class string, conf float64) {
	r.boxes = r.boxes[:0]
	for _, d := range r.det.detect(out) {
		b := Box{Class: r.spec.Labels[d.class], Confidence: float64(d.conf)}
		b.X0, b.Y0 = g.toFrame(float64(d.x0), float64(d.y0))
		b.X1, b.Y1 = g.toFrame(float64(d.x1), float64(d.y1))
		r.boxes = append(r.boxes, b)
		if slices.Contains(r.spec.FailIndex, d.class) {
			if r.spec.ClassScale != nil {
				score = max(score, b.Confidence*r.spec.ClassScale[d.class])
			} else {
				score = max(score, b.Confidence)
			}
		}
		if class == "" {
			class, conf = b.Class, b.Confidence
		}
	}
	for _, v := range out {
		if math.IsNaN(float64(v)) {
			return math.NaN(), class, conf
		}
	}
	return score, class, conf
}

// CopyMap appends the anomaly map of the last Infer (of the highest-scoring ROI;
// Info().MapWidth x MapHeight, row-major) to dst[:0] and returns it; it returns dst[:0]
// when the model has no map. Passing the previous result back in avoids an allocation per
// frame.
func (r *Runtime) CopyMap(dst []float32) []float32 {
	switch {
	case r.amap == nil:
		return dst[:0]
	case r.worstMap != nil:
		return append(dst[:0], r.worstMap...)
	}
	return append(dst[:0], r.amap.GetData()...)
}

// ScoreInput runs the model on an already preprocessed input (len Info().Input.Len()).
func (r *Runtime) ScoreInput(x []float32) (float64, error) {
	copy(r.input.GetData(), x)
	if err := r.run(context.Background()); err != nil {
		return 0, err
	}
	return float64(r.score.GetData()[0]), nil
}

// run runs the session on the input tensor. If ctx is done while ONNX Runtime runs, the
// run is terminated and ctx's error returned.
func (r *Runtime) run(ctx context.Context) error {
	if ctx.Done() == nil {
		return r.session.RunWithOptions(r.runOpts)
	}
	if r.watch == nil {
		r.watch, r.watchStop, r.watchAck = make(chan context.Context, 1), make(chan struct{}), make(chan bool)
		go r.watcher(r.watch, r.watchStop, r.watchAck, r.runOpts)
	}
	r.watch <- ctx
	err := r.session.RunWithOptions(r.runOpts)
	r.watchStop <- struct{}{}
	if <-r.watchAck {
		// The watcher terminated the run (or was about to): clear the flag so the next run
		// is not terminated.
		if uerr := r.runOpts.UnsetTerminate(); uerr != nil && err == nil {
			err = uerr
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
	}
	return err
}

// watcher terminates the current run when its context ends first; it acknowledges every
// stop with whether it terminated.
func (r *Runtime) watcher(watch <-chan context.Context, stop <-chan struct{}, ack chan<- bool, runOpts *ort.RunOptions) {
	for ctx := range watch {
		select {
		case <-ctx.Done():
			runOpts.Terminate()
			<-stop
			ack <- true
		case <-stop:
			ack <- false
		}
	}
}

// Close destroys the session and the tensors. It is safe to call more than once; Infer
// after Close returns an error. A background TensorRT build still running is abandoned:
// its session is destroyed when it completes.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.build != nil {
		r.build.abandon()
		r.build = nil
	}
	r.mu.Unlock()
	if r.session != nil {
		r.session.Destroy()
		r.session = nil
	}
	if r.watch != nil {
		close(r.watch)
		r.watch = nil
	}
	if r.runOpts != nil {
		r.runOpts.Destroy()
		r.runOpts = nil
	}
	r.tensors.destroy()
	r.tensors = tensors{}
	for _, p := range r.pres {
		p.close()
	}
	r.pres = nil
	return nil
}

// startProviders walks the provider chain and creates the session on the first provider
// that loads. A TensorRT engine that is not in the cache is built in the background while
// the next provider serves, unless TensorRT is required or last in the chain.
func (r *Runtime) startProviders(data []byte) error {
	po := r.opts.Providers
	log := r.opts.Logger.With().Str("component", "models").Str("model", r.info.Model.Name).Logger()
	var reasons []string
	for i, p := range po.Chain {
		if p == ProviderTensorRT {
			cacheDir := r.engineCacheDir()
			cached := cacheDir != "" && fileExists(filepath.Join(cacheDir, engineMarker))
			if !cached && po.Require != ProviderTensorRT && i+1 < len(po.Chain) {
				// Check that TensorRT can be appended at all before promising a build.
				if err := r.probeProvider(p); err != nil {
					r.attempts = append(r.attempts, ProviderAttempt{Provider: p, Err: err.Error()})
					reasons = append(reasons, p+": "+shortErr(err))
					continue
				}
				r.build = r.startBuild(data, cacheDir, log)
				r.attempts = append(r.attempts, ProviderAttempt{Provider: p, Err: "engine not built yet: building in the background", Background: true})
				reasons = append(reasons, p+": engine building in the background")
				continue
			}
		}
		sess, err := r.newSession(data, p, "", r.tensors)
		if err != nil {
			if p == ProviderCPU {
				return err // the model itself is bad
			}
			r.attempts = append(r.attempts, ProviderAttempt{Provider: p, Err: err.Error()})
			reasons = append(reasons, p+": "+shortErr(err))
			if po.Require == p {
				return fmt.Errorf("%w: %s: %v", ErrProviderUnavailable, p, err)
			}
			log.Warn().Str("provider", p).Err(err).Msg("execution provider unavailable, trying the next")
			continue
		}
		if po.Require != "" && po.Require != p {
			sess.Destroy()
			return fmt.Errorf("%w: %s: %s", ErrProviderUnavailable, po.Require, strings.Join(reasons, "; "))
		}
		r.session = sess
		r.attempts = append(r.attempts, ProviderAttempt{Provider: p})
		r.info.Provider = p
		r.info.Degraded = i > 0
		r.info.Fallback = strings.Join(reasons, "; ")
		if r.info.Degraded {
			log.Warn().Str("provider", p).Str("fallback", r.info.Fallback).Msg("degraded: serving on a fallback execution provider")
		}
		return nil
	}
	return fmt.Errorf("%w: no provider of %v loads: %s", ErrProviderUnavailable, po.Chain, strings.Join(reasons, "; "))
}

// shortErr is the first line of an error, for Info.Fallback.
func shortErr(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// engineCacheDir is the TensorRT engine folder of this model on this machine, "" without
// an EngineCacheDir.
func (r *Runtime) engineCacheDir() string {
	po := r.opts.Providers
	if po.EngineCacheDir == "" {
		return ""
	}
	trt, gpu := hostTensorRT()
	key := EngineCacheKey(r.info.Model.SHA256, ort.GetVersion(), trt, gpu, po.FP16)
	return filepath.Join(po.EngineCacheDir, key)
}

// appendProvider adds provider p (and, for TensorRT, CUDA as its fallback for nodes
// TensorRT cannot run, when CUDA is in the chain) to so.
func (r *Runtime) appendProvider(so *ort.SessionOptions, p, cacheDir string) error {
	if r.opts.testProvider != nil {
		p = r.opts.testProvider(p)
	}
	po := r.opts.Providers
	switch p {
	case ProviderTensorRT:
		trt, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return fmt.Errorf("tensorrt options: %w", err)
		}
		defer trt.Destroy()
		o := map[string]string{"device_id": fmt.Sprint(po.DeviceID), "trt_fp16_enable": b01(po.FP16)}
		if po.WorkspaceMB > 0 {
			o["trt_max_workspace_size"] = fmt.Sprint(int64(po.WorkspaceMB) << 20)
		}
		if cacheDir != "" {
			o["trt_engine_cache_enable"], o["trt_engine_cache_path"] = "1", cacheDir
			o["trt_timing_cache_enable"], o["trt_timing_cache_path"] = "1", po.TimingCacheDir
		}
		if err := trt.Update(o); err != nil {
			return fmt.Errorf("tensorrt options: %w", err)
		}
		if err := so.AppendExecutionProviderTensorRT(trt); err != nil {
			return fmt.Errorf("append tensorrt: %w", err)
		}
		for _, q := range po.Chain {
			if q == ProviderCUDA {
				_ = r.appendProvider(so, ProviderCUDA, "") // best effort: CPU takes what CUDA would
			}
		}
	case ProviderCUDA:
		cu, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return fmt.Errorf("cuda options: %w", err)
		}
		defer cu.Destroy()
		if err := cu.Update(map[string]string{"device_id": fmt.Sprint(po.DeviceID)}); err != nil {
			return fmt.Errorf("cuda options: %w", err)
		}
		if err := so.AppendExecutionProviderCUDA(cu); err != nil {
			return fmt.Errorf("append cuda: %w", err)
		}
	case ProviderCPU:
	default:
		return fmt.Errorf("unknown execution provider %q", p)
	}
	return nil
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (r *Runtime) sessionOptions() (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	if r.opts.Threads > 0 {
		if err := so.SetIntraOpNumThreads(r.opts.Threads); err != nil {
			so.Destroy()
			return nil, fmt.Errorf("set %d threads: %w", r.opts.Threads, err)
		}
	}
	return so, nil
}

// probeProvider appends p to throwaway session options: it fails fast when the provider's
// libraries are missing, without building anything.
func (r *Runtime) probeProvider(p string) error {
	so, err := r.sessionOptions()
	if err != nil {
		return err
	}
	defer so.Destroy()
	return r.appendProvider(so, p, "")
}

// tensors are the input and output tensors one session is bound to.
type tensors struct {
	input, score *ort.Tensor[float32]
	amap         *ort.Tensor[float32] // nil without an anomaly map
	ins, outs    []ort.Value
}

func newTensors(spec *bundle.RunSpec) (t tensors, err error) {
	defer func() {
		if err != nil {
			t.destroy()
		}
	}()
	if t.input, err = ort.NewEmptyTensor[float32](ort.NewShape(spec.InDims...)); err != nil {
		return t, fmt.Errorf("input tensor: %w", err)
	}
	if t.score, err = ort.NewEmptyTensor[float32](ort.NewShape(spec.ScoreDims...)); err != nil {
		return t, fmt.Errorf("score tensor: %w", err)
	}
	t.ins, t.outs = []ort.Value{t.input}, []ort.Value{t.score}
	if spec.MapName != "" {
		if t.amap, err = ort.NewEmptyTensor[float32](ort.NewShape(spec.MapDims...)); err != nil {
			return t, fmt.Errorf("anomaly map tensor: %w", err)
		}
		t.outs = append(t.outs, t.amap)
	}
	return t, nil
}

func (t tensors) destroy() {
	for _, x := range []*ort.Tensor[float32]{t.input, t.score, t.amap} {
		if x != nil {
			x.Destroy()
		}
	}
}

// newSession creates a session on provider p bound to t.
func (r *Runtime) newSession(data []byte, p, cacheDir string, t tensors) (*ort.AdvancedSession, error) {
	so, err := r.sessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if p == ProviderTensorRT && cacheDir == "" {
		cacheDir = r.engineCacheDir()
	}
	if cacheDir != "" {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("tensorrt engine cache: %w", err)
		}
	}
	if err := r.appendProvider(so, p, cacheDir); err != nil {
		return nil, err
	}
	sess, err := ort.NewAdvancedSessionWithONNXData(data, r.inNames, r.outNames, t.ins, t.outs, so)
	if err != nil {
		if p == ProviderCPU {
			return nil, fmt.Errorf("%w: onnx runtime rejected it: %v", bundle.ErrInvalidModel, err)
		}
		return nil, fmt.Errorf("create %s session: %w", p, err)
	}
	if p == ProviderTensorRT && cacheDir != "" {
		trt, gpu := hostTensorRT()
		marker, _ := json.Marshal(map[string]string{"model_sha256": r.info.Model.SHA256, "onnxruntime": ort.GetVersion(),
			"tensorrt": trt, "gpu": gpu, "fp16": b01(r.opts.Providers.FP16), "built_at": time.Now().UTC().Format(time.RFC3339)})
		_ = bundle.WriteFileAtomic(filepath.Join(cacheDir, engineMarker), marker)
	}
	return sess, nil
}

// engineBuild is a TensorRT session being created (the engine built) in the background.
type engineBuild struct {
	done chan buildResult // receives once

	mu        sync.Mutex
	status    BuildStatus
	abandoned bool
}

type buildResult struct {
	sess *ort.AdvancedSession
	t    tensors // the session's own tensors: the build never touches the serving ones
	err  error
	took time.Duration
}

// startBuild creates the TensorRT session on a goroutine, logging progress every
// ProgressEvery. Infer adopts it between two frames.
func (r *Runtime) startBuild(data []byte, cacheDir string, log zerolog.Logger) *engineBuild {
	b := &engineBuild{done: make(chan buildResult, 1)}
	b.status = BuildStatus{Active: true, Started: time.Now(), CacheDir: cacheDir}
	log.Info().Str("cache", cacheDir).Msg("building TensorRT engine in the background; the next provider serves meanwhile")
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(r.opts.Providers.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				b.mu.Lock()
				el := time.Since(b.status.Started)
				b.status.Elapsed = el
				b.mu.Unlock()
				log.Info().Dur("elapsed", el).Msg("building TensorRT engine")
			}
		}
	}()
	go func() {
		start := time.Now()
		t, err := newTensors(r.spec)
		var sess *ort.AdvancedSession
		if err == nil {
			sess, err = r.newSession(data, ProviderTensorRT, cacheDir, t)
			if err != nil {
				t.destroy()
			}
		}
		close(stopProgress)
		res := buildResult{sess: sess, t: t, err: err, took: time.Since(start)}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.status.Active, b.status.Elapsed = false, res.took
		if err != nil {
			b.status.Err = err.Error()
			log.Error().Err(err).Dur("took", res.took).Msg("TensorRT engine build failed; staying on the fallback provider")
		} else {
			log.Info().Dur("took", res.took).Msg("TensorRT engine built; switching to tensorrt")
		}
		if b.abandoned {
			if sess != nil {
				sess.Destroy()
				t.destroy()
			}
			return
		}
		b.done <- res
	}()
	return b
}

// abandon makes a running build destroy its session when it completes, and destroys one
// that completed but was not adopted.
func (b *engineBuild) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.abandoned = true
	select {
	case res := <-b.done:
		if res.sess != nil {
			res.sess.Destroy()
			res.t.destroy()
		}
	default:
	}
}

// adoptBuild swaps in the TensorRT session of a completed build (between two frames, on
// the worker's goroutine).
func (r *Runtime) adoptBuild(res buildResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.build.mu.Lock()
	defer r.build.mu.Unlock()
	if res.err != nil {
		for i := range r.attempts {
			if r.attempts[i].Background {
				r.attempts[i].Err = "background engine build failed: " + res.err.Error()
			}
		}
		r.info.Fallback = strings.Replace(r.info.Fallback, "engine building in the background", "engine build failed: "+shortErr(res.err), 1)
		return
	}
	r.session.Destroy()
	r.tensors.destroy()
	r.session, r.tensors = res.sess, res.t
	r.build.status.Done = true
	for i := range r.attempts {
		if r.attempts[i].Background {
			r.attempts[i].Err = ""
		} else if r.attempts[i].Err == "" {
			r.attempts[i].Err = "replaced by tensorrt after the engine build"
		}
	}
	r.info.Provider, r.info.Degraded, r.info.Fallback = ProviderTensorRT, false, ""
}

// EngineBuild reports the background TensorRT engine build; the zero BuildStatus when none
// was started.
func (r *Runtime) EngineBuild() BuildStatus {
	r.mu.Lock()
	b := r.build
	r.mu.Unlock()
	if b == nil {
		return BuildStatus{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.status
	if st.Active {
		st.Elapsed = time.Since(st.Started)
	}
	return st
}
