package trainer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The docker backend's command line mounts the dataset read-only at /data
// and the output at /out, runs as the companion's uid:gid without a
// network, passes the contract's variables, and substitutes {data} and
// {out} in the arguments; the same for docker and podman, but a rootless
// podman (not root) maps the companion's uid into the container with
// keep-id. (TestDockerTrainerWithPodman runs it with podman.)
func TestDockerTrainerCommandLine(t *testing.T) {
	job := TrainInput{Data: "/state/jobs/000007/work/data", Out: "/state/jobs/000007/work/out-a", Name: "bracket", Version: "1.2.3", Job: "000007"}
	for _, tc := range []struct {
		runtime  string
		uid, gid int
		want     string
		userns   bool
	}{
		{"", 0, 0, "docker run --rm", false},
		{"docker", 1000, 1001, "docker run --rm", false},
		{"podman", 0, 0, "podman run --rm", false},
		{"podman", 1000, 1001, "podman run --rm", true},
		{"/opt/podman/bin/podman", 1000, 1001, "/opt/podman/bin/podman run --rm", true},
	} {
		tr := newDockerTrainer(ExperimentConfig{Image: "ghcr.io/example/trainer:1.0", Runtime: tc.runtime,
			Command: []string{"--data", "{data}", "--out", "{out}/x"}, Env: map[string]string{"EPOCHS": "3"}})
		tr.uid, tr.gid = tc.uid, tc.gid
		got := strings.Join(tr.argv(job), " ")
		for _, want := range []string{
			tc.want + " --name takt-train-000007-out-a --network none",
			"-v /state/jobs/000007/work/data:/data:ro -v /state/jobs/000007/work/out-a:/out",
			fmt.Sprintf("--user %d:%d", tc.uid, tc.gid),
			"-e EPOCHS=3 -e TAKT_DATA=/data -e TAKT_JOB=000007 -e TAKT_MODEL_NAME=bracket -e TAKT_MODEL_VERSION=1.2.3 -e TAKT_OUT=/out",
			"ghcr.io/example/trainer:1.0 --data /data --out /out/x",
		} {
			if !strings.HasPrefix(got, tc.want) || !strings.Contains(got, want) {
				t.Errorf("runtime %q uid %d: command line\n%s\ndoes not hold\n%s", tc.runtime, tc.uid, got, want)
			}
		}
		if userns := strings.Contains(got, "--userns keep-id"); userns != tc.userns {
			t.Errorf("runtime %q uid %d: --userns keep-id %v, want %v:\n%s", tc.runtime, tc.uid, userns, tc.userns, got)
		}
	}
}

// yamlAsJSON normalizes a YAML document to what encoding/json gives.
func yamlAsJSON(t *testing.T, data []byte, unmarshal func([]byte, any) error) any {
	t.Helper()
	var v any
	if err := unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	json.Unmarshal(js, &out)
	return out
}

// The Kubernetes Job the companion generates is exactly the documented
// template packaging/k8s/training-job.yaml for the same job, and its mounts
// are subPaths of the state claim below state_dir. (No cluster runs here:
// the manifest is what is tested.)
func TestKubernetesJobMatchesTemplate(t *testing.T) {
	tr := &kubeTrainer{stateDir: "/var/lib/takt-cloud", timeout: 30 * time.Minute, exp: ExperimentConfig{Name: "anomalib", Trainer: TrainerKubernetes,
		Image: "ghcr.io/example/takt-anomalib-trainer:1.0.0", Command: []string{"--data", "{data}", "--out", "{out}"},
		Namespace: "takt", ServiceAccount: "takt-trainer", DatasetClaim: "takt-cloud-state"}}
	job := TrainInput{Data: "/var/lib/takt-cloud/jobs/000001/work/data", Out: "/var/lib/takt-cloud/jobs/000001/work/out-anomalib",
		Name: "bracket", Version: "1.0.1", Job: "000001"}
	gen, err := tr.manifest(job)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(filepath.Join("..", "..", "..", "packaging", "k8s", "training-job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, want := yamlAsJSON(t, gen, json.Unmarshal), yamlAsJSON(t, tmpl, yaml.Unmarshal)
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("generated Job differs from packaging/k8s/training-job.yaml:\ngot  %s\nwant %s", g, w)
	}
	job.Out = "/elsewhere/out"
	if _, err := tr.manifest(job); err == nil || !strings.Contains(err.Error(), "not under state_dir") {
		t.Errorf("output outside state_dir: %v, want an error", err)
	}
	long := job
	long.Out, long.Job = "/var/lib/takt-cloud/jobs/x/work/out-"+strings.Repeat("Exp_", 20), "000002"
	if n := kubeJobName(long); len(n) > 63 || strings.ContainsAny(n, "_E") || !strings.HasPrefix(n, "takt-train-000002-") {
		t.Errorf("job name %q is not a DNS-1123 label of at most 63", n)
	}
}

// The builtin trainer decodes its options strictly over the method's
// defaults.
func TestBuiltinOptions(t *testing.T) {
	var e ExperimentConfig
	doc := "{name: patchcore, trainer: builtin, method: patchcore, options: {width: 96, position_weight: 128, min_head_defects: 20}}"
	if err := yaml.Unmarshal([]byte(doc), &e); err != nil {
		t.Fatal(err)
	}
	if pc, err := builtinTrainer(e); err != nil || pc.patch.MinHeadDefects != 20 || pc.patch.Width != 96 {
		t.Errorf("patchcore options = %+v, %v; want width 96 and min_head_defects 20", pc.patch, err)
	}
	var tpl ExperimentConfig
	doc = "{name: template, trainer: builtin, method: template, options: {width: 128, false_reject: 0.02, ignore: [{x0: 0.4, y0: 0.2, x1: 0.8, y1: 0.4}]}}"
	if err := yaml.Unmarshal([]byte(doc), &tpl); err != nil {
		t.Fatal(err)
	}
	b, err := builtinTrainer(tpl)
	if err != nil || b.template.Width != 128 || b.template.FalseReject != 0.02 || len(b.template.Ignore) != 1 || b.template.Ignore[0].X1 != 0.8 {
		t.Errorf("template options = %+v, %v", b.template, err)
	}
	var rule ExperimentConfig
	doc = "{name: template, trainer: builtin, method: template, options: {threshold_rule: best-f2}}"
	if err := yaml.Unmarshal([]byte(doc), &rule); err != nil {
		t.Fatal(err)
	}
	if _, err := builtinTrainer(rule); err == nil || !strings.Contains(err.Error(), `threshold_rule "best-f2": want false-reject or best-f1`) {
		t.Errorf("threshold_rule best-f2: got %v, want an error naming it and the allowed rules", err)
	}
	for doc, want := range map[string]string{
		"{name: p, trainer: builtin, method: patchcore, options: {color: rgb}}":   "",
		"{name: p, trainer: builtin, method: patchcore, options: {color: sepia}}": `patchcore: color "sepia": want auto, gray or rgb`,
	} {
		var c ExperimentConfig
		if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
			t.Fatal(err)
		}
		b, err := builtinTrainer(c)
		switch {
		case want == "" && (err != nil || b.patch.Color != "rgb"):
			t.Errorf("%s: color %q, %v; want rgb", doc, b.patch.Color, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: got %v, want %s", doc, err, want)
		}
	}
	e.Options.Content[0].Value = "widht"
	if _, err := builtinTrainer(e); err == nil || !strings.Contains(err.Error(), "patchcore: line 1: unknown key widht") {
		t.Errorf("misspelt option: got %v, want patchcore: line 1: unknown key widht", err)
	}
}
