package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// kubeTrainer runs the trainer image as a Kubernetes Job (batch/v1) through
// kubectl, with the companion's own service account (packaging/k8s/rbac.yaml
// lets it create Jobs and read their pods' logs). The Job mounts the
// companion's state volume (a ReadWriteMany claim, dataset_claim) with the
// job's folder as subPath: the dataset at /data (read-only), the output at
// /out. The manifest follows packaging/k8s/training-job.yaml.
type kubeTrainer struct {
	exp      ExperimentConfig
	stateDir string
	timeout  time.Duration // the Job's activeDeadlineSeconds (training.timeout)
	kubectl  string        // default "kubectl"
	poll     time.Duration
}

var _ Trainer = (*kubeTrainer)(nil)

// jobName is the Job's name: DNS-1123, at most 63 characters.
func kubeJobName(job TrainInput) string {
	n := strings.ToLower("takt-train-" + job.Job + "-" + filepath.Base(job.Out))
	n = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, n)
	if len(n) > 63 {
		n = n[:63]
	}
	return strings.TrimRight(n, "-")
}

// manifest is the Job for job, as JSON (kubectl apply reads JSON and YAML).
func (t *kubeTrainer) manifest(job TrainInput) ([]byte, error) {
	relData, err := filepath.Rel(t.stateDir, job.Data)
	if err != nil || strings.HasPrefix(relData, "..") {
		return nil, fmt.Errorf("kubernetes trainer: dataset %s is not under state_dir %s", job.Data, t.stateDir)
	}
	relOut, err := filepath.Rel(t.stateDir, job.Out)
	if err != nil || strings.HasPrefix(relOut, "..") {
		return nil, fmt.Errorf("kubernetes trainer: output %s is not under state_dir %s", job.Out, t.stateDir)
	}
	ns := t.exp.Namespace
	if ns == "" {
		ns = "takt"
	}
	sa := t.exp.ServiceAccount
	if sa == "" {
		sa = "takt-trainer"
	}
	env := maps.Clone(t.exp.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, contractEnv(job, "/data", "/out"))
	var envList []map[string]string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		envList = append(envList, map[string]string{"name": k, "value": env[k]})
	}
	limits := map[string]string{"cpu": "2", "memory": "4Gi"}
	maps.Copy(limits, t.exp.Resources)
	labels := map[string]string{"app.kubernetes.io/name": "takt-train", "app.kubernetes.io/part-of": "takt",
		"takt.dev/job": job.Job, "takt.dev/model": job.Name}
	deadline := int64(t.timeout.Seconds())
	if deadline <= 0 {
		deadline = 1800
	}
	m := map[string]any{
		"apiVersion": "batch/v1",
		"kind":       "Job",
		"metadata":   map[string]any{"name": kubeJobName(job), "namespace": ns, "labels": labels},
		"spec": map[string]any{
			"backoffLimit":            0,
			"activeDeadlineSeconds":   deadline,
			"ttlSecondsAfterFinished": 3600,
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{
					"restartPolicy":      "Never",
					"serviceAccountName": sa,
					"securityContext":    map[string]any{"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001},
					"containers": []any{map[string]any{
						"name":  "trainer",
						"image": t.exp.Image,
						"args":  substitute(t.exp.Command, "/data", "/out"),
						"env":   envList,
						"resources": map[string]any{"limits": limits,
							"requests": map[string]string{"cpu": limits["cpu"], "memory": limits["memory"]}},
						"securityContext": map[string]any{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
							"capabilities": map[string]any{"drop": []string{"ALL"}}},
						"volumeMounts": []any{
							map[string]any{"name": "state", "mountPath": "/data", "subPath": filepath.ToSlash(relData), "readOnly": true},
							map[string]any{"name": "state", "mountPath": "/out", "subPath": filepath.ToSlash(relOut)},
							map[string]any{"name": "tmp", "mountPath": "/tmp"},
						},
					}},
					"volumes": []any{
						map[string]any{"name": "state", "persistentVolumeClaim": map[string]any{"claimName": t.exp.DatasetClaim}},
						map[string]any{"name": "tmp", "emptyDir": map[string]any{}},
					},
				},
			},
		},
	}
	return json.MarshalIndent(m, "", "  ")
}

func (t *kubeTrainer) Train(ctx context.Context, job TrainInput, log io.Writer) (*Candidate, error) {
	kubectl := t.kubectl
	if kubectl == "" {
		kubectl = "kubectl"
	}
	if _, err := exec.LookPath(kubectl); err != nil {
		return nil, fmt.Errorf("kubernetes trainer: %w (takt-cloud needs kubectl and in-cluster credentials)", err)
	}
	manifest, err := t.manifest(job)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(job.Out, "..", filepath.Base(job.Out)+".job.json")
	if err := os.WriteFile(path, manifest, 0o644); err != nil {
		return nil, err
	}
	name := kubeJobName(job)
	ns := t.exp.Namespace
	if ns == "" {
		ns = "takt"
	}
	if err := runLogged(ctx, []string{kubectl, "apply", "-f", path}, nil, job.Out, log); err != nil {
		return nil, err
	}
	defer func() {
		if ctx.Err() != nil {
			exec.Command(kubectl, "delete", "job", name, "-n", ns, "--wait=false").Run()
		}
	}()
	poll := t.poll
	if poll == 0 {
		poll = 5 * time.Second
	}
	for {
		out, err := exec.CommandContext(ctx, kubectl, "get", "job", name, "-n", ns,
			"-o", "jsonpath={.status.succeeded},{.status.failed}").Output()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			return nil, fmt.Errorf("kubectl get job %s: %w", name, err)
		}
		succ, failed, _ := strings.Cut(string(bytes.TrimSpace(out)), ",")
		if succ != "" && succ != "0" || failed != "" && failed != "0" {
			logs, _ := exec.CommandContext(ctx, kubectl, "logs", "job/"+name, "-n", ns).CombinedOutput()
			log.Write(logs)
			if failed != "" && failed != "0" {
				return nil, fmt.Errorf("kubernetes job %s failed (kubectl describe job %s -n %s)", name, name, ns)
			}
			return readExternalOutput(job.Out)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}
