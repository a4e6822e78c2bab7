package trainer

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
	"github.com/takt-edge/takt/models/bundle"
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
// cloudsync/README.md, "External trainers"), an empty output folder, and what to call the
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
	Manifest bundle.Manifest
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
	Input *bundle.InputSpec `json:"input,omitempty"`
	// Outputs names the score and map outputs; default pred_score and
	// anomaly_map (anomalib's names).
	Outputs *bundle.OutputSpec `json:"outputs,omitempty"`
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
	man := bundle.Manifest{
		Format:     bundle.BundleFormat,
		Task:       bundle.TaskAnomaly,
		Input:      bundle.InputSpec{Layout: bundle.LayoutNCHW, Color: bundle.ColorRGB, Resize: bundle.ResizeStretch},
		Outputs:    bundle.OutputSpec{Score: "pred_score", Map: "anomaly_map"},
		Thresholds: bundle.Thresholds{Fail: m.Threshold},
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
// A failure names the program, its exit status (an *exec.ExitError in the
// chain) and its last line of output.
func runLogged(ctx context.Context, argv []string, env map[string]string, dir string, log io.Writer) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	tail := &tailWriter{}
	w := io.MultiWriter(log, tail)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second
	fmt.Fprintf(log, "$ %s\n", strings.Join(argv, " "))
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if last := tail.lastLine(); last != "" {
			return fmt.Errorf("%s: %w (last output: %s)", filepath.Base(argv[0]), err, last)
		}
		return fmt.Errorf("%s: %w", filepath.Base(argv[0]), err)
	}
	return nil
}

// tailWriter keeps the end of a program's output for its error message.
type tailWriter struct{ buf []byte }

const tailKeep = 4 << 10

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if len(w.buf) > tailKeep {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-tailKeep:]...)
	}
	return len(p), nil
}

// lastLine is the last line that is not blank, at most 300 bytes.
func (w *tailWriter) lastLine() string {
	lines := strings.Split(strings.TrimSpace(string(w.buf)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if len(last) > 300 {
		last = last[:300] + "..."
	}
	return last
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

// dockerTrainer runs the trainer image with a docker-compatible engine
// (docker, podman): the dataset mounted read-only at /data, the output
// folder at /out, the trainer running as the companion's own uid:gid so
// that takt-cloud can read and later remove what it wrote.
type dockerTrainer struct {
	image   string
	args    []string
	env     map[string]string
	runtime string // RuntimeDocker, RuntimePodman or an absolute path
	uid     int    // the companion's, for --user
	gid     int
}

var _ Trainer = (*dockerTrainer)(nil)

func newDockerTrainer(e ExperimentConfig) *dockerTrainer {
	rt := e.Runtime
	if rt == "" {
		rt = RuntimeDocker
	}
	return &dockerTrainer{image: e.Image, args: e.Command, env: e.Env, runtime: rt, uid: os.Getuid(), gid: os.Getgid()}
}

// engine is the runtime's name for messages ("docker", "podman").
func (t *dockerTrainer) engine() string { return filepath.Base(t.runtime) }

// ContainerName is the docker trainer's container for a job, unique per job
// and experiment, so that it can be found and removed.
func ContainerName(job TrainInput) string {
	return "takt-train-" + job.Job + "-" + filepath.Base(job.Out)
}

// argv is the engine's command line for job.
func (t *dockerTrainer) argv(job TrainInput) []string {
	argv := []string{t.runtime, "run", "--rm", "--name", ContainerName(job),
		"--network", "none",
		"-v", job.Data + ":/data:ro", "-v", job.Out + ":/out",
		"--user", fmt.Sprintf("%d:%d", t.uid, t.gid)}
	if t.uid != 0 && strings.Contains(t.engine(), "podman") {
		// Podman run by a user other than root is rootless: without
		// keep-id the container's uids are the user's subordinate ids, and
		// --user's uid could not write /out (owned by the companion).
		argv = append(argv, "--userns", "keep-id")
	}
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

// Exit statuses docker run and podman run give for their own failures
// (docker-run(1), podman-run(1)); any other is the trainer's.
const (
	exitEngine   = 125 // the engine failed: bad flag, no image, no daemon
	exitNotExec  = 126 // the image's command cannot be invoked
	exitNotFound = 127 // the image's command does not exist
)

func (t *dockerTrainer) Train(ctx context.Context, job TrainInput, log io.Writer) (*Candidate, error) {
	if _, err := exec.LookPath(t.runtime); err != nil {
		return nil, fmt.Errorf("docker trainer: runtime %s: %w (install docker or podman and set the experiment's runtime, or use the command or kubernetes trainer)", t.runtime, err)
	}
	if err := t.ensureImage(ctx, job.Out, log); err != nil {
		return nil, err
	}
	err := runLogged(ctx, t.argv(job), nil, job.Out, log)
	if ctx.Err() != nil {
		// Killing the engine's CLI leaves the container running: stop it.
		t.remove(ContainerName(job), log)
		return nil, ctx.Err()
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return readExternalOutput(job.Out)
	case !errors.As(err, &exit):
		return nil, fmt.Errorf("docker trainer: %w", err)
	case exit.ExitCode() == exitEngine:
		return nil, fmt.Errorf("docker trainer: %s could not run %s: %w", t.engine(), t.image, err)
	case exit.ExitCode() == exitNotExec || exit.ExitCode() == exitNotFound:
		return nil, fmt.Errorf("docker trainer: the command of %s could not be started (exit status %d: not executable or not found): %w",
			t.image, exit.ExitCode(), err)
	default:
		return nil, fmt.Errorf("docker trainer: the trainer in %s exited with status %d: %w", t.image, exit.ExitCode(), err)
	}
}

// ensureImage pulls the image when the engine does not have it, so that a
// missing image fails with the pull's reason instead of as a trainer that
// exited.
func (t *dockerTrainer) ensureImage(ctx context.Context, dir string, log io.Writer) error {
	inspect := exec.CommandContext(ctx, t.runtime, "image", "inspect", "--format", "{{.Id}}", t.image)
	if inspect.Run() == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(log, "image %s is not in %s's local images: pulling it\n", t.image, t.engine())
	if err := runLogged(ctx, []string{t.runtime, "pull", t.image}, nil, dir, log); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("docker trainer: image %s is neither in %s's local images nor could it be pulled "+
			"(build or load it on this host, or make its registry reachable): %w", t.image, t.engine(), err)
	}
	return nil
}

// remove kills and removes a container whose run was cancelled; its CLI
// was killed, but the engine keeps the container running. SIGKILL, as a
// trainer running as PID 1 may ignore SIGTERM.
func (t *dockerTrainer) remove(name string, log io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kill, killErr := exec.CommandContext(ctx, t.runtime, "kill", name).CombinedOutput()
	rm, rmErr := exec.CommandContext(ctx, t.runtime, "rm", "-f", name).CombinedOutput()
	if killErr != nil && rmErr != nil {
		fmt.Fprintf(log, "stopping container %s: %s kill: %v %s; rm -f: %v %s\n", name, t.engine(),
			killErr, bytes.TrimSpace(kill), rmErr, bytes.TrimSpace(rm))
		return
	}
	fmt.Fprintf(log, "container %s stopped and removed\n", name)
}

// New builds the trainer of an experiment; stateDir is the
// companion's state folder (the Kubernetes Job mounts it by claim), timeout
// training.timeout.
func New(e ExperimentConfig, stateDir string, timeout time.Duration) (Trainer, error) {
	switch e.Trainer {
	case TrainerBuiltin:
		return builtinTrainer(e)
	case TrainerCommand:
		return &commandTrainer{argv: e.Command, env: e.Env}, nil
	case TrainerDocker:
		return newDockerTrainer(e), nil
	case TrainerKubernetes:
		return &kubeTrainer{exp: e, stateDir: stateDir, timeout: timeout}, nil
	}
	return nil, errors.New("trainer: " + e.Trainer + " is unknown")
}

// modelOpset loads model.onnx (which also checks that ONNX Runtime accepts
// it) and returns its ai.onnx opset.
func modelOpset(path string) (int, error) {
	if err := models.InitONNXRuntime(""); err != nil {
		return 0, err
	}
	rt, err := models.LoadRuntime(path, models.RuntimeOptions{Warmup: -1, Threads: 1})
	if err != nil {
		return 0, err
	}
	defer rt.Close()
	return rt.Info().Opset, nil
}
