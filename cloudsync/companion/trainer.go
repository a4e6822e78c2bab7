package companion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/takt-edge/takt/models"
)

// Trainer turns a dataset folder into a candidate model.
//
// Train blocks until the model is trained, ctx is done (the trainer stops
// and returns ctx's error) or training failed. It writes its progress to log
// (kept as the job's log). It owns nothing of job after it returns.
type Trainer interface {
	Train(ctx context.Context, job TrainInput, log io.Writer) (*Candidate, error)
}

// TrainInput is one experiment's work: the dataset folder (the contract,
// README "External trainers"), an empty output folder, and what to call the
// model.
type TrainInput struct {
	Data    string // good/, defect/, labels.json
	Out     string // the trainer writes model.onnx and metrics.json here
	Name    string // model name
	Version string // version the bundle will get
	Job     string // job id
	Threads int    // CPU threads the trainer may use (builtin)
}

// Candidate is a trained model before it is signed: the ONNX bytes and the
// manifest fields that say how to run it (Name, Version, Files and Golden
// are set by the job).
type Candidate struct {
	ONNX     []byte
	Manifest models.Manifest
	// GoodScores are scores of good images the model did not train on, for
	// the drift baseline; empty makes the job use the validation goods.
	GoodScores []float64
	// Golden are images with the scores the model gives them.
	Golden []Golden
}

// Golden is one golden image (PNG) and its score.
type Golden struct {
	PNG   []byte
	Score float64
}

// Metrics is the metrics.json an external trainer writes next to model.onnx.
type Metrics struct {
	// Threshold: a score above it is FAIL. Required, > 0.
	Threshold float64 `json:"threshold"`
	// Input says how a frame becomes the input tensor; default NCHW, rgb,
	// stretch, the size from the model, no mean/std (anomalib's export with
	// its own normalization inside).
	Input *models.InputSpec `json:"input,omitempty"`
	// Outputs names the score and map outputs; default pred_score and
	// anomaly_map (anomalib's names).
	Outputs *models.OutputSpec `json:"outputs,omitempty"`
	// Metrics are free-form figures (auroc, f1, ...) copied into the manifest.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// GoodScores are scores of held-out good images (the drift baseline).
	GoodScores []float64 `json:"good_scores,omitempty"`
}

// readExternalOutput reads model.onnx and metrics.json from out.
func readExternalOutput(out string) (*Candidate, error) {
	modelPath := filepath.Join(out, "model.onnx")
	onnx, err := os.ReadFile(modelPath)
	if err != nil {
		return nil, fmt.Errorf("trainer output: %w (the trainer must write model.onnx into {out})", err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	if err != nil {
		return nil, fmt.Errorf("trainer output: %w (the trainer must write metrics.json into {out})", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var m Metrics
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("trainer output: metrics.json: %w", err)
	}
	if !(m.Threshold > 0) || math.IsInf(m.Threshold, 0) {
		return nil, fmt.Errorf("trainer output: metrics.json: threshold %v must be a finite number > 0", m.Threshold)
	}
	man := models.Manifest{
		Format:     models.BundleFormat,
		Task:       models.TaskAnomaly,
		Input:      models.InputSpec{Layout: models.LayoutNCHW, Color: models.ColorRGB, Resize: models.ResizeStretch},
		Outputs:    models.OutputSpec{Score: "pred_score", Map: "anomaly_map"},
		Thresholds: models.Thresholds{Fail: m.Threshold},
		Metrics:    maps.Clone(m.Metrics),
	}
	if m.Input != nil {
		man.Input = *m.Input
	}
	if m.Outputs != nil {
		man.Outputs = *m.Outputs
	}
	opset, err := modelOpset(modelPath)
	if err != nil {
		return nil, fmt.Errorf("trainer output: model.onnx: %w", err)
	}
	man.Opset = opset
	return &Candidate{ONNX: onnx, Manifest: man, GoodScores: m.GoodScores}, nil
}

// substitute replaces {data} and {out} in a command line.
func substitute(args []string, data, out string) []string {
	r := strings.NewReplacer("{data}", data, "{out}", out)
	res := make([]string, len(args))
	for i, a := range args {
		res[i] = r.Replace(a)
	}
	return res
}

// runLogged runs argv with env added, its output into log; ctx kills it.
func runLogged(ctx context.Context, argv []string, env map[string]string, dir string, log io.Writer) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.WaitDelay = 5 * time.Second
	fmt.Fprintf(log, "$ %s\n", strings.Join(argv, " "))
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w", filepath.Base(argv[0]), err)
	}
	return nil
}

// commandTrainer runs a local command (the external trainer contract).
type commandTrainer struct {
	argv []string
	env  map[string]string
}

var _ Trainer = (*commandTrainer)(nil)

func (t *commandTrainer) Train(ctx context.Context, job TrainInput, log io.Writer) (*Candidate, error) {
	env := maps.Clone(t.env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, contractEnv(job, job.Data, job.Out))
	if err := runLogged(ctx, substitute(t.argv, job.Data, job.Out), env, job.Out, log); err != nil {
		return nil, err
	}
	return readExternalOutput(job.Out)
}

// contractEnv are the variables every external trainer gets.
func contractEnv(job TrainInput, data, out string) map[string]string {
	return map[string]string{"TAKT_DATA": data, "TAKT_OUT": out, "TAKT_MODEL_NAME": job.Name,
		"TAKT_MODEL_VERSION": job.Version, "TAKT_JOB": job.Job}
}

// dockerTrainer runs the trainer image with docker: the dataset mounted
// read-only at /data, the output folder at /out.
type dockerTrainer struct {
	image   string
	args    []string
	env     map[string]string
	runtime string // "docker" (or podman: same command line)
}

var _ Trainer = (*dockerTrainer)(nil)

// argv is the docker command line for job.
func (t *dockerTrainer) argv(job TrainInput) []string {
	argv := []string{t.runtime, "run", "--rm", "--name", "takt-train-" + job.Job + "-" + filepath.Base(job.Out),
		"--network", "none",
		"-v", job.Data + ":/data:ro", "-v", job.Out + ":/out",
		"--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())}
	env := maps.Clone(t.env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, contractEnv(job, "/data", "/out"))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		argv = append(argv, "-e", k+"="+env[k])
	}
	argv = append(argv, t.image)
	return append(argv, substitute(t.args, "/data", "/out")...)
}

func (t *dockerTrainer) Train(ctx context.Context, job TrainInput, log io.Writer) (*Candidate, error) {
	argv := t.argv(job)
	if _, err := exec.LookPath(argv[0]); err != nil {
		return nil, fmt.Errorf("docker trainer: %w (install docker, or use the command or kubernetes trainer)", err)
	}
	if err := runLogged(ctx, argv, nil, job.Out, log); err != nil {
		return nil, err
	}
	return readExternalOutput(job.Out)
}

// newTrainer builds the trainer of an experiment; stateDir is the
// companion's state folder (the Kubernetes Job mounts it by claim), timeout
// training.timeout.
func newTrainer(e ExperimentConfig, stateDir string, timeout time.Duration) (Trainer, error) {
	switch e.Trainer {
	case TrainerBuiltin:
		return builtinTrainer(e)
	case TrainerCommand:
		return &commandTrainer{argv: e.Command, env: e.Env}, nil
	case TrainerDocker:
		return &dockerTrainer{image: e.Image, args: e.Command, env: e.Env, runtime: "docker"}, nil
	case TrainerKubernetes:
		return &kubeTrainer{exp: e, stateDir: stateDir, timeout: timeout}, nil
	}
	return nil, errors.New("trainer: " + e.Trainer + " is unknown")
}
