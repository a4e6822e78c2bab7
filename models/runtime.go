package models

import (
	"time"

	"github.com/rs/zerolog"
	"github.com/takt-edge/takt/models/bundle"
)

// RuntimeOptions tunes LoadRuntime and NewRuntime. The zero value is ready to use: CPU,
// ONNX Runtime's thread count, three warm-up runs.
type RuntimeOptions struct {
	// Threads is ONNX Runtime's intra-op thread count; 0 lets ONNX Runtime pick (one per
	// core). With several Runtimes in one process, give each a share of the cores.
	Threads int `yaml:"threads"`
	// ReturnMap copies the anomaly map into every Result (one allocation per frame). To
	// reuse a buffer instead, leave it off and call CopyMap after Infer.
	ReturnMap bool `yaml:"return_map"`
	// ScoreOutput names the image score output of a plain ONNX model; default "score" (or
	// "pred_score", anomalib's name, when the model has no "score"). A bundle's manifest names
	// its outputs itself.
	ScoreOutput string `yaml:"score_output"`
	// MapOutput names the optional anomaly map output of a plain ONNX model; default
	// "anomaly_map".
	MapOutput string `yaml:"map_output"`
	// Warmup is the number of runs on a blank input at load, before the Runtime is handed
	// out, so that the first part does not pay for lazy initialization; 0 means 3, -1 none.
	Warmup int `yaml:"warmup"`
	// Providers is the execution provider chain.
	Providers ProviderOptions `yaml:"providers"`
	// Logger receives provider fallbacks and TensorRT engine build progress.
	Logger zerolog.Logger `yaml:"-"`

	// testProvider, when set, maps a provider to the one actually appended to the session
	// options, after an optional delay: tests stand in a CPU session for a TensorRT build.
	testProvider func(provider string) string
}

func (o RuntimeOptions) withDefaults() RuntimeOptions {
	if o.ScoreOutput == "" {
		o.ScoreOutput = "score"
	}
	if o.MapOutput == "" {
		o.MapOutput = "anomaly_map"
	}
	if o.Warmup == 0 {
		o.Warmup = 3
	}
	o.Providers = o.Providers.withDefaults()
	return o
}

// ModelInfo identifies the model that produced a Result.
type ModelInfo struct {
	Name    string // manifest name, else takt.name, else the ONNX graph name
	Version string // manifest version, else takt.version, else the ONNX model_version, else ""
	SHA256  string // hex sha256 of the ONNX file
}

// Info describes a loaded Runtime.
type Info struct {
	Model ModelInfo
	Task  string // TaskAnomaly, TaskClassification, TaskDetection, or "" for a plain model not made by Takt
	Input bundle.InputShape
	// Layout and Color describe the input tensor (LayoutNCHW / NHWC, ColorGray / RGB / BGR).
	Layout, Color string
	// MapWidth and MapHeight are the anomaly map's size; 0 when the model has none.
	MapWidth, MapHeight int
	// Classes is the number of classes of a classifier or detector, 0 otherwise.
	Classes int
	// ROIs is the number of regions scored per frame; 0 means the whole frame.
	ROIs int
	// Threshold: a score above it is anomalous. From the manifest or takt.threshold; 0 means
	// the model carries none and the configuration must provide one.
	Threshold float64
	Opset     int
	// Provider is the execution provider the session runs on: ProviderTensorRT,
	// ProviderCUDA or ProviderCPU. Result.Provider reports it per frame (it changes when a
	// background TensorRT engine build completes).
	Provider string
	// Degraded is true when Provider is not the first of the configured chain; Fallback
	// says why ("tensorrt: ...; cuda: ...").
	Degraded bool
	Fallback string
	// Warmup is the time the warm-up runs took; they are excluded from every latency figure.
	Warmup time.Duration
}

// Result is the outcome of one Infer.
type Result struct {
	// Score is the image score; higher is more anomalous (a classifier's is the summed
	// probability of its FAIL classes, 1 - P(ok label) by default; a detector's the highest
	// confidence of a box of a FAIL class, 0 without one). With ROIs it is the highest ROI score. NaN is passed through as NaN: the
	// caller decides (NO_DECISION), the Runtime does not.
	Score float64
	// Class and Confidence are a classifier's top class and its probability, or a
	// detector's most confident box ("", 0 for an anomaly model and a detector without
	// boxes); with ROIs, those of the highest-scoring ROI.
	Class      string
	Confidence float64
	// Boxes are a detector's boxes after NMS, highest confidence first (nil for other
	// tasks). The slice belongs to the Runtime and is overwritten by the next Infer.
	Boxes []Box
	// ROIs holds one score per manifest ROI, in manifest order; nil without ROIs. The slice
	// belongs to the Runtime and is overwritten by the next Infer: copy what you keep.
	ROIs []ROIScore
	// Map is the anomaly map (of the highest-scoring ROI), only with RuntimeOptions.ReturnMap
	// and a model that has one.
	Map      *AnomalyMap
	Model    ModelInfo
	Provider string // execution provider that ran this frame
	Timings  Timings
}

// ROIScore is the outcome for one ROI.
type ROIScore struct {
	Name       string
	Score      float64
	Class      string
	Confidence float64
}

// AnomalyMap is a per-pixel anomaly score at the model's map resolution, row-major.
type AnomalyMap struct {
	Width, Height int
	Values        []float32 // len Width*Height; owned by the Result
}

// Timings are the wall-clock durations of one Infer (summed over ROIs).
type Timings struct {
	Preprocess  time.Duration // frame to input tensor
	Infer       time.Duration // ONNX Runtime Run
	Postprocess time.Duration // outputs to score, class, map
	Total       time.Duration // the whole Infer call
}
