//go:build cgo

package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/takt-edge/takt/camera"
	ort "github.com/yalue/onnxruntime_go"
)

// Runtime runs one ONNX model with ONNX Runtime on the CPU (the TensorRT/CUDA provider
// chain is still to come; Info reports the provider in use). Its input and output tensors
// are allocated once and reused by every Infer, so a Runtime is for one goroutine at a
// time: run one Runtime per worker. Close it to free the session and tensors.
type Runtime struct {
	info     Info
	opts     RuntimeOptions
	session  *ort.AdvancedSession
	runOpts  *ort.RunOptions
	input    *ort.Tensor[float32]
	score    *ort.Tensor[float32]
	amap     *ort.Tensor[float32] // nil without an anomaly map
	pre      *preprocessor
	termDone chan struct{} // the context watcher has set Terminate on runOpts
}

// LoadRuntime loads the ONNX model at path (loading ONNX Runtime itself with
// InitONNXRuntime("") if that has not happened yet), checks that Takt can run it, and runs
// it once on a blank image so that the first frame is not slow. The model must have one
// float32 input [1,1,H,W] (gray) or [1,3,H,W] (RGB) with fixed C, H and W (a dynamic batch
// dim is fed as 1), a float32 score output [1] or [1,1], and optionally an anomaly map
// [1,1,h,w]. Errors wrap fs.ErrNotExist for a missing file, ErrInvalidModel for bytes
// that are not a loadable ONNX model, and ErrUnsupportedModel for a model of the wrong
// shape.
func LoadRuntime(path string, opts RuntimeOptions) (*Runtime, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	r, err := newRuntime(data, opts)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return r, nil
}

// newRuntime builds a Runtime from serialized ONNX; the trainer uses it to score with the
// exact code path of Infer.
func newRuntime(data []byte, opts RuntimeOptions) (_ *Runtime, err error) {
	opts = opts.withDefaults()
	h, err := inspectModel(data)
	if err != nil {
		return nil, err
	}
	spec, err := runSpecOf(h, opts.ScoreOutput, opts.MapOutput)
	if err != nil {
		return nil, err
	}
	if err := InitONNXRuntime(""); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	r := &Runtime{
		opts:     opts,
		termDone: make(chan struct{}, 1),
		info: Info{
			Model:     ModelInfo{Name: spec.name, Version: spec.version, SHA256: hex.EncodeToString(sum[:])},
			Task:      spec.task,
			Input:     spec.input,
			Threshold: spec.threshold,
			Provider:  ProviderCPU,
		},
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	in := spec.input
	if r.input, err = ort.NewEmptyTensor[float32](ort.NewShape(1, int64(in.Channels), int64(in.Height), int64(in.Width))); err != nil {
		return nil, fmt.Errorf("input tensor: %w", err)
	}
	if r.score, err = ort.NewEmptyTensor[float32](ort.NewShape(spec.scoreDims...)); err != nil {
		return nil, fmt.Errorf("score tensor: %w", err)
	}
	outNames := []string{spec.scoreName}
	outputs := []ort.Value{r.score}
	if spec.mapName != "" {
		if r.amap, err = ort.NewEmptyTensor[float32](ort.NewShape(spec.mapDims...)); err != nil {
			return nil, fmt.Errorf("anomaly map tensor: %w", err)
		}
		outNames = append(outNames, spec.mapName)
		outputs = append(outputs, r.amap)
		r.info.MapHeight, r.info.MapWidth = int(spec.mapDims[2]), int(spec.mapDims[3])
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	if opts.Threads > 0 {
		if err := so.SetIntraOpNumThreads(opts.Threads); err != nil {
			return nil, fmt.Errorf("set %d threads: %w", opts.Threads, err)
		}
	}
	r.session, err = ort.NewAdvancedSessionWithONNXData(data, []string{spec.inputName}, outNames,
		[]ort.Value{r.input}, outputs, so)
	if err != nil {
		return nil, fmt.Errorf("%w: onnx runtime rejected it: %v", ErrInvalidModel, err)
	}
	if r.runOpts, err = ort.NewRunOptions(); err != nil {
		return nil, fmt.Errorf("run options: %w", err)
	}
	r.pre = newPreprocessor()
	if err := r.run(context.Background()); err != nil {
		return nil, fmt.Errorf("%w: test run on a blank image: %v", ErrUnsupportedModel, err)
	}
	return r, nil
}

// Info describes the loaded model.
func (r *Runtime) Info() Info { return r.info }

// Infer preprocesses f into the input tensor (see Preprocess), runs the model and returns
// the score. A frame of any size is resized to the model input. It returns ctx's error if
// ctx is done before or during the run, and errors wrapping ErrBadFrame for a malformed
// frame. A NaN score is returned as NaN with a nil error.
func (r *Runtime) Infer(ctx context.Context, f camera.Frame) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("infer: %w", err)
	}
	if r.session == nil {
		return Result{}, errClosed
	}
	t0 := time.Now()
	if err := r.pre.run(f, r.info.Input, r.input.GetData()); err != nil {
		return Result{}, fmt.Errorf("infer: %w", err)
	}
	t1 := time.Now()
	if err := r.run(ctx); err != nil {
		return Result{}, fmt.Errorf("infer %s: %w", r.info.Model.Name, err)
	}
	t2 := time.Now()
	res := Result{
		Score:    float64(r.score.GetData()[0]),
		Model:    r.info.Model,
		Provider: r.info.Provider,
	}
	if r.opts.ReturnMap && r.amap != nil {
		res.Map = &AnomalyMap{Width: r.info.MapWidth, Height: r.info.MapHeight,
			Values: append([]float32(nil), r.amap.GetData()...)}
	}
	res.Timings = Timings{Preprocess: t1.Sub(t0), Infer: t2.Sub(t1), Total: time.Since(t0)}
	return res, nil
}

// CopyMap appends the anomaly map of the last Infer (Info().MapWidth x MapHeight,
// row-major) to dst[:0] and returns it; it returns dst[:0] when the model has no map.
// Passing the previous result back in avoids an allocation per frame.
func (r *Runtime) CopyMap(dst []float32) []float32 {
	if r.amap == nil {
		return dst[:0]
	}
	return append(dst[:0], r.amap.GetData()...)
}

// scoreInput runs the model on an already preprocessed input (len Info().Input.Len()).
func (r *Runtime) scoreInput(x []float32) (float64, error) {
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
	stop := context.AfterFunc(ctx, func() {
		r.runOpts.Terminate()
		r.termDone <- struct{}{}
	})
	err := r.session.RunWithOptions(r.runOpts)
	if !stop() {
		// The watcher ran (or is running): wait for it, then clear the flag so the next run
		// is not terminated.
		<-r.termDone
		if uerr := r.runOpts.UnsetTerminate(); uerr != nil && err == nil {
			err = uerr
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
	}
	return err
}

// Close destroys the session and the tensors. It is safe to call more than once; Infer
// after Close returns an error.
func (r *Runtime) Close() error {
	if r.session != nil {
		r.session.Destroy()
		r.session = nil
	}
	if r.runOpts != nil {
		r.runOpts.Destroy()
		r.runOpts = nil
	}
	for _, t := range []*ort.Tensor[float32]{r.input, r.score, r.amap} {
		if t != nil {
			t.Destroy()
		}
	}
	r.input, r.score, r.amap = nil, nil, nil
	if r.pre != nil {
		r.pre.close()
		r.pre = nil
	}
	return nil
}
