package models

import "time"

// ProviderCPU is the execution provider name of ONNX Runtime's CPU provider.
const ProviderCPU = "cpu"

// RuntimeOptions tunes LoadRuntime. The zero value is ready to use.
type RuntimeOptions struct {
	// Threads is ONNX Runtime's intra-op thread count; 0 lets ONNX Runtime pick (one per
	// core). With several Runtimes in one process, give each a share of the cores.
	Threads int `yaml:"threads"`
	// ReturnMap copies the anomaly map into every Result (one allocation per frame). To
	// reuse a buffer instead, leave it off and call CopyMap after Infer.
	ReturnMap bool `yaml:"return_map"`
	// ScoreOutput names the image score output; default "score".
	ScoreOutput string `yaml:"score_output"`
	// MapOutput names the optional anomaly map output; default "anomaly_map".
	MapOutput string `yaml:"map_output"`
}

func (o RuntimeOptions) withDefaults() RuntimeOptions {
	if o.ScoreOutput == "" {
		o.ScoreOutput = "score"
	}
	if o.MapOutput == "" {
		o.MapOutput = "anomaly_map"
	}
	return o
}

// ModelInfo identifies the model that produced a Result.
type ModelInfo struct {
	Name    string // takt.name, else the ONNX graph name
	Version string // takt.version, else the ONNX model_version, else ""
	SHA256  string // hex sha256 of the ONNX file
}

// Info describes a loaded Runtime.
type Info struct {
	Model ModelInfo
	Task  string // takt.task ("anomaly"), "" for models not made by Takt
	Input InputShape
	// MapWidth and MapHeight are the anomaly map's size; 0 when the model has none.
	MapWidth, MapHeight int
	// Threshold is the model's takt.threshold: a score above it is anomalous. 0 means the
	// model carries none and the configuration must provide one.
	Threshold float64
	Provider  string // execution provider in use: "cpu"
}

// Result is the outcome of one Infer.
type Result struct {
	// Score is the image score; higher is more anomalous. NaN is passed through as NaN:
	// the caller decides (NO_DECISION), the Runtime does not.
	Score float64
	// Map is the anomaly map, only with RuntimeOptions.ReturnMap and a model that has one.
	Map      *AnomalyMap
	Model    ModelInfo
	Provider string
	Timings  Timings
}

// AnomalyMap is a per-pixel anomaly score at the model's map resolution, row-major.
type AnomalyMap struct {
	Width, Height int
	Values        []float32 // len Width*Height; owned by the Result
}

// Timings are the wall-clock durations of one Infer.
type Timings struct {
	Preprocess time.Duration // frame to input tensor
	Infer      time.Duration // ONNX Runtime Run
	Total      time.Duration // the whole Infer call
}
