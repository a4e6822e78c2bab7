package companion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/cloudsync/cloudtest"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
	"github.com/takt-edge/takt/models/bundle"
)

// buildTrainer starts building testdata/contract-trainer as a static
// binary into dir; wait returns its path. (It builds while podman starts.)
func buildTrainer(t *testing.T, dir string) (wait func() string) {
	t.Helper()
	bin := filepath.Join(dir, "trainer")
	var out bytes.Buffer
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/contract-trainer")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = &out, &out
	if err := build.Start(); err != nil {
		t.Fatal(err)
	}
	return func() string {
		t.Helper()
		if err := build.Wait(); err != nil {
			t.Fatalf("build the contract trainer: %v\n%s", err, out.Bytes())
		}
		return bin
	}
}

// trainerImage imports the contract trainer and the model it hands over
// (writeWorseModel's) as a local image into pod's storage. It returns the
// image and the model's bytes.
func trainerImage(t *testing.T, pod *cloudtest.Podman, dir, bin string) (ref string, model []byte) {
	t.Helper()
	prog, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	modelPath := filepath.Join(dir, "model.onnx")
	writeWorseModel(t, modelPath)
	model, _ = os.ReadFile(modelPath)
	threshold, _ := os.ReadFile(modelPath + ".threshold")
	ref = "localhost/takt-contract-trainer:test"
	pod.Import(t, ref, []cloudtest.ImageFile{
		{Path: "/usr/local/bin/trainer", Data: prog, Mode: 0o755},
		{Path: "/model.onnx", Data: model, Mode: 0o644},
		{Path: "/model.onnx.threshold", Data: threshold, Mode: 0o644},
	}, "/usr/local/bin/trainer")
	return ref, model
}

// The docker backend runs real containers with podman (runtime podman, in
// the test's own podman storage), with a trainer image made here: a static
// Go program following the contract (testdata/contract-trainer), imported
// from a tar.
func TestDockerTrainerWithPodman(t *testing.T) {
	dir := t.TempDir()
	built := buildTrainer(t, dir)
	pod := cloudtest.StartPodman(t)
	ref, model := trainerImage(t, pod, dir, built())
	t.Run("job", func(t *testing.T) { testPodmanJob(t, pod, ref, model) })
	t.Run("cancel", func(t *testing.T) { testPodmanCancel(t, pod, ref) })
}

// One job with three experiments. The trainer gets its arguments with
// {data} and {out} replaced, finds the dataset at /data, cannot write there
// (read-only mount), runs as the companion's uid:gid, and its model.onnx
// and metrics come out as the registered candidate. A trainer that exits
// with status 3 fails its experiment with the status and its last line in
// the job status and its output in the job log; an image that is not there
// fails with a message that says so. No container is left behind.
func testPodmanJob(t *testing.T, pod *cloudtest.Podman, ref string, model []byte) {
	e := newEnv(t, false)
	e.uploadParts("st1", "part", 10, []synth.Defect{synth.Scratch, synth.MissingHole, synth.Spot, synth.Crack})
	cfg := e.cfg
	cfg.Models[0].Experiments = []trainer.ExperimentConfig{
		{Name: "podman", Trainer: trainer.TrainerDocker, Runtime: trainer.RuntimePodman, Image: ref,
			Command: []string{"--data", "{data}", "--out", "{out}"}, Env: map[string]string{"MODEL_FILE": "/model.onnx"}},
		{Name: "podman-fails", Trainer: trainer.TrainerDocker, Runtime: pod.Bin, Image: ref,
			Env: map[string]string{"MODEL_FILE": "/model.onnx", "FAIL_EXIT": "3"}},
		// A short name: with no unqualified-search registries (the test's
		// registries.conf) the pull fails at once.
		{Name: "podman-missing", Trainer: trainer.TrainerDocker, Runtime: trainer.RuntimePodman, Image: "takt-no-such-trainer:0"},
	}
	cfg.Training.Parallel = 3
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := e.newCompanion(cfg)
	e.run(c)
	if _, err := c.Ingest(context.Background()); err != nil {
		t.Fatal(err)
	}
	j, err := c.Enqueue("part", TriggerManual, "podman test")
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, c, j.ID, 2*time.Minute)

	// The job's status as the HTTP API gives it.
	resp, err := http.Get("http://" + c.Addr() + "/jobs/" + j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var status struct {
		Job Job    `json:"job"`
		Log string `json:"log"`
	}
	err = json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	j, log := status.Job, status.Log
	if j.State != JobSucceeded || j.Winner != "podman" || !j.Promoted || len(j.Experiments) != 3 {
		t.Fatalf("job = %+v; want succeeded, podman the promoted winner of 3 experiments; log:\n%s", j, log)
	}
	exp := map[string]ExperimentResult{}
	for _, x := range j.Experiments {
		exp[x.Name] = x
	}
	if x := exp["podman"]; x.State != JobSucceeded || x.Score == nil || x.Score.Defect == 0 {
		t.Errorf("experiment podman = %+v; want succeeded and scored on the validation defects", x)
	}
	for _, tc := range []struct {
		exp  string
		want []string
	}{
		{"podman-fails", []string{"the trainer in " + ref + " exited with status 3", "exit status 3",
			"last output: contract-trainer: giving up on purpose with status 3"}},
		{"podman-missing", []string{"image takt-no-such-trainer:0 is neither in podman's local images nor could it be pulled",
			"make its registry reachable", "exit status 125", `short-name "takt-no-such-trainer:0" did not resolve`}},
	} {
		x := exp[tc.exp]
		if x.State != JobFailed {
			t.Errorf("experiment %s = %+v; want failed", tc.exp, x)
		}
		for _, w := range tc.want {
			if !strings.Contains(x.Error, w) {
				t.Errorf("experiment %s error %q does not say %q", tc.exp, x.Error, w)
			}
		}
	}
	for _, w := range []string{
		fmt.Sprintf("[podman] contract ok: good/ %d images, defect/ %d images, model part %s, job %s",
			j.Dataset.TrainGood, j.Dataset.TrainDefect, j.Version, j.ID),
		`[podman] args: ["--data" "/data" "--out" "/out"]`,
		"[podman] /data is read-only",
		"[podman-fails] contract-trainer: giving up on purpose with status 3",
		"[podman-missing] image takt-no-such-trainer:0 is not in podman's local images: pulling it",
	} {
		if !strings.Contains(log, w) {
			t.Errorf("job log does not hold %q; log:\n%s", w, log)
		}
	}

	// What the trainer wrote is the registered candidate.
	idx, _, err := c.readIndex(context.Background(), "part")
	if err != nil || len(idx.Versions) != 1 {
		t.Fatalf("index = %+v, %v; want one version", idx, err)
	}
	m := idx.Versions[0].Metrics
	for k, want := range map[string]float64{"trainer_good_images": float64(j.Dataset.TrainGood),
		"trainer_defect_images": float64(j.Dataset.TrainDefect), "trainer_data_read_only": 1,
		"trainer_uid": float64(os.Getuid()), "trainer_gid": float64(os.Getgid())} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("registered metric %s = %v (present %v), want %v (what the trainer saw in its container)", k, got, ok, want)
		}
	}
	data, _, err := e.bucket.Get(context.Background(), BundleKey("part", j.Version))
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.ReadBundle(bytes.NewReader(data), c.keys)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.ONNX, model) || b.Manifest.Input.Color != bundle.ColorGray || b.Manifest.Outputs.Score != "score" {
		t.Errorf("bundle: model %d bytes (image's %d), input %+v, outputs %+v; want the image's model, gray, score",
			len(b.ONNX), len(model), b.Manifest.Input, b.Manifest.Outputs)
	}

	// On the host: the dataset untouched, the output owned by the companion.
	work := filepath.Join(cfg.StateDir, "jobs", j.ID, "work")
	if _, err := os.Stat(filepath.Join(work, "data", "written-by-trainer")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the trainer's probe file in the dataset: %v; want none (read-only mount)", err)
	}
	fi, err := os.Stat(filepath.Join(work, "out-podman", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Getuid() || int(st.Gid) != os.Getgid() {
		t.Errorf("model.onnx on the host is owned by %d:%d, want the companion's %d:%d", st.Uid, st.Gid, os.Getuid(), os.Getgid())
	}
	if left := strings.TrimSpace(pod.Output(t, "ps", "--all", "--format", "{{.Names}}")); left != "" {
		t.Errorf("containers left after the job: %s; want none (--rm)", left)
	}
}

// A cancelled run (training.timeout, shutdown) kills and removes its
// container: killing the engine's CLI alone would leave it running.
func testPodmanCancel(t *testing.T, pod *cloudtest.Podman, ref string) {
	tr, err := trainer.New(trainer.ExperimentConfig{Name: "slow", Trainer: trainer.TrainerDocker, Runtime: trainer.RuntimePodman, Image: ref,
		Env: map[string]string{"SLEEP": "10m"}}, t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	job := trainer.TrainInput{Data: t.TempDir(), Out: t.TempDir(), Name: "part", Version: "1.0.0", Job: "000042"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &signalWriter{want: "sleeping 10m0s", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := tr.Train(ctx, job, log)
		done <- err
	}()
	select {
	case <-log.seen:
	case err := <-done:
		t.Fatalf("Train ended before the trainer slept: %v; log:\n%s", err, log.String())
	case <-time.After(time.Minute):
		t.Fatalf("the trainer did not start within a minute; log:\n%s", log.String())
	}
	if running := pod.Output(t, "ps", "--format", "{{.Names}}"); !strings.Contains(running, trainer.ContainerName(job)) {
		t.Fatalf("running containers %q do not include %s", running, trainer.ContainerName(job))
	}
	start := time.Now()
	cancel()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatalf("Train did not return within a minute of the cancel; log:\n%s", log.String())
	}
	if !errors.Is(err, context.Canceled) || !strings.Contains(log.String(), "container "+trainer.ContainerName(job)+" stopped and removed") {
		t.Errorf("Train = %v after %v; want context.Canceled and the container stopped; log:\n%s", err, time.Since(start), log.String())
	}
	if left := strings.TrimSpace(pod.Output(t, "ps", "--all", "--format", "{{.Names}}")); left != "" {
		t.Errorf("containers left after the cancel: %s; want none", left)
	}
}

// signalWriter collects output and closes seen once it holds want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
