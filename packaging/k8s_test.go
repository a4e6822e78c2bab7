package packaging_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/takt-edge/takt/cloudsync/companion"
	"github.com/takt-edge/takt/cloudsync/companion/trainer"
)

// obj is one Kubernetes object as parsed YAML.
type obj map[string]any

func (o obj) get(path ...string) any {
	var v any = map[string]any(o)
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func (o obj) str(path ...string) string { s, _ := o.get(path...).(string); return s }

func (o obj) list(path ...string) []obj {
	var out []obj
	l, _ := o.get(path...).([]any)
	for _, x := range l {
		if m, ok := x.(map[string]any); ok {
			out = append(out, obj(m))
		}
	}
	return out
}

// loadK8s parses every document of packaging/k8s/*.yaml, keyed "Kind/name".
func loadK8s(t *testing.T) map[string]obj {
	t.Helper()
	files, _ := filepath.Glob("k8s/*.yaml")
	objs := map[string]obj{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var m map[string]any // not obj: yaml.v3 would make every nested map an obj
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			o := obj(m)
			kind, name := o.str("kind"), o.str("metadata", "name")
			if o.str("apiVersion") == "" || kind == "" {
				t.Errorf("%s document %d: apiVersion and kind are required", f, i)
				continue
			}
			if kind == "Kustomization" {
				for _, r := range o.get("resources").([]any) {
					if _, err := os.Stat(filepath.Join("k8s", r.(string))); err != nil {
						t.Errorf("kustomization resource %v: %v", r, err)
					}
				}
				continue
			}
			if name == "" {
				t.Errorf("%s document %d (%s): metadata.name is required", f, i, kind)
			}
			if kind != "Namespace" && o.str("metadata", "namespace") != "takt" {
				t.Errorf("%s/%s: namespace %q, want takt", kind, name, o.str("metadata", "namespace"))
			}
			objs[kind+"/"+name] = o
		}
	}
	return objs
}

// The manifests for takt-cloud hold together: every name one object refers
// to exists (service accounts, role, claim, ConfigMap, Secret keys), the
// Service selects the Deployment's pods on a port the container has, the
// role lets the companion run training Jobs, and the ConfigMap's cloud.yaml
// is a valid takt-cloud config whose Kubernetes experiments mount the
// state claim. (Parsed and checked here; no cluster runs.)
func TestKubernetesManifests(t *testing.T) {
	objs := loadK8s(t)
	need := func(key string) obj {
		t.Helper()
		o, ok := objs[key]
		if !ok {
			t.Fatalf("no %s in packaging/k8s (have %v)", key, keys(objs))
		}
		return o
	}
	dep := need("Deployment/takt-cloud")
	svc := need("Service/takt-cloud")
	cm := need("ConfigMap/takt-cloud-config")
	sec := need("Secret/takt-cloud-secrets")
	pvc := need("PersistentVolumeClaim/takt-cloud-state")
	role := need("Role/takt-cloud-training")
	rb := need("RoleBinding/takt-cloud-training")
	job := need("Job/takt-train-000001-out-anomalib")
	need("Namespace/takt")

	pod := obj(dep.get("spec", "template", "spec").(map[string]any))
	sa := pod.str("serviceAccountName")
	need("ServiceAccount/" + sa)
	if r := dep.get("spec", "replicas"); r != 1 || dep.str("spec", "strategy", "type") != "Recreate" {
		t.Errorf("deployment: replicas %v, strategy %q; want 1 and Recreate (one owner of the index)", r, dep.str("spec", "strategy", "type"))
	}
	// Selector and labels.
	podLabels := dep.get("spec", "template", "metadata", "labels").(map[string]any)
	for _, sel := range []map[string]any{dep.get("spec", "selector", "matchLabels").(map[string]any), svc.get("spec", "selector").(map[string]any)} {
		for k, v := range sel {
			if podLabels[k] != v {
				t.Errorf("selector %s=%v does not match the pod labels %v", k, v, podLabels)
			}
		}
	}
	// Ports.
	ctr := obj(pod.list("containers")[0])
	var portNames []string
	for _, p := range ctr.list("ports") {
		portNames = append(portNames, p.str("name"))
	}
	for _, p := range svc.list("spec", "ports") {
		if !slices.Contains(portNames, p.str("targetPort")) {
			t.Errorf("service targetPort %q is not a container port %v", p.str("targetPort"), portNames)
		}
	}
	// Volumes refer to the claim, the ConfigMap and the Secret; mounts to volumes.
	var vols []string
	for _, v := range pod.list("volumes") {
		vols = append(vols, v.str("name"))
		if c := v.str("persistentVolumeClaim", "claimName"); c != "" && c != pvc.str("metadata", "name") {
			t.Errorf("volume %s: claim %q does not exist", v.str("name"), c)
		}
		if c := v.str("configMap", "name"); c != "" && c != cm.str("metadata", "name") {
			t.Errorf("volume %s: ConfigMap %q does not exist", v.str("name"), c)
		}
		if s := v.str("secret", "secretName"); s != "" {
			if s != sec.str("metadata", "name") {
				t.Errorf("volume %s: Secret %q does not exist", v.str("name"), s)
			}
			for _, it := range v.list("secret", "items") {
				if sec.get("stringData", it.str("key")) == nil {
					t.Errorf("volume %s: Secret has no key %q", v.str("name"), it.str("key"))
				}
			}
		}
	}
	mounts := map[string]string{}
	for _, m := range ctr.list("volumeMounts") {
		if !slices.Contains(vols, m.str("name")) {
			t.Errorf("volumeMount %s: no such volume", m.str("name"))
		}
		mounts[m.str("mountPath")] = m.str("name")
	}
	// Environment from the Secret.
	env := map[string]string{}
	for _, e := range ctr.list("env") {
		if ref := e.str("valueFrom", "secretKeyRef", "key"); ref != "" {
			if e.str("valueFrom", "secretKeyRef", "name") != sec.str("metadata", "name") || sec.get("stringData", ref) == nil {
				t.Errorf("env %s: secretKeyRef %s/%s does not exist", e.str("name"), e.str("valueFrom", "secretKeyRef", "name"), ref)
			}
			env[e.str("name")] = "secret-value"
		} else {
			env[e.str("name")] = e.str("value")
		}
	}
	for _, k := range []string{"TAKT_S3_ENDPOINT", "TAKT_S3_ACCESS_KEY", "TAKT_S3_SECRET_KEY", "TAKT_MQTT_BROKER", "TAKT_MQTT_PASSWORD", "TAKT_CLOUD_API_TOKEN"} {
		if env[k] == "" {
			t.Errorf("deployment env: %s missing", k)
		}
	}
	// RBAC: the companion's account may create and watch Jobs and read pod logs.
	if subj := rb.list("subjects"); len(subj) != 1 || subj[0].str("name") != sa {
		t.Errorf("rolebinding subjects %v, want the companion's account %s", subj, sa)
	}
	if rb.str("roleRef", "name") != role.str("metadata", "name") || rb.str("roleRef", "kind") != "Role" {
		t.Errorf("rolebinding roleRef %v does not name the Role", rb.get("roleRef"))
	}
	allowed := map[string][]string{}
	for _, r := range role.list("rules") {
		for _, g := range r.get("apiGroups").([]any) {
			for _, res := range r.get("resources").([]any) {
				for _, v := range r.get("verbs").([]any) {
					allowed[fmt.Sprint(g)+"/"+fmt.Sprint(res)] = append(allowed[fmt.Sprint(g)+"/"+fmt.Sprint(res)], v.(string))
				}
			}
		}
	}
	for _, w := range []struct{ res, verb string }{{"batch/jobs", "create"}, {"batch/jobs", "get"}, {"batch/jobs", "delete"}, {"/pods/log", "get"}, {"/pods", "list"}} {
		if !slices.Contains(allowed[w.res], w.verb) {
			t.Errorf("role: %s %s not allowed (have %v)", w.verb, w.res, allowed)
		}
	}
	// The config in the ConfigMap, with the Deployment's environment.
	raw := cm.str("data", "cloud.yaml")
	cfg, err := companion.ParseConfig([]byte(raw))
	if err != nil {
		t.Fatalf("ConfigMap cloud.yaml: %v", err)
	}
	cfg.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err := cfg.Validate(); err != nil {
		t.Errorf("ConfigMap cloud.yaml with the Deployment's env: %v", err)
	}
	if mounts[cfg.StateDir] != "state" {
		t.Errorf("state_dir %s is not the state volume's mount (%v)", cfg.StateDir, mounts)
	}
	if !strings.HasPrefix(cfg.SigningKey, "/etc/takt-cloud/secrets/") || mounts["/etc/takt-cloud/secrets"] != "secrets" {
		t.Errorf("signing_key %s is not in the mounted Secret", cfg.SigningKey)
	}
	if !strings.HasSuffix(cfg.Listen, ":8090") {
		t.Errorf("listen %s, want port 8090 as the container port", cfg.Listen)
	}
	kube := 0
	for _, m := range cfg.Models {
		for _, e := range m.Experiments {
			if e.Trainer != trainer.TrainerKubernetes {
				continue
			}
			kube++
			if e.DatasetClaim != pvc.str("metadata", "name") {
				t.Errorf("experiment %s: dataset_claim %q is not the state claim", e.Name, e.DatasetClaim)
			}
			need("ServiceAccount/" + e.ServiceAccount)
		}
	}
	if kube == 0 {
		t.Error("the ConfigMap shows no kubernetes experiment")
	}
	if modes := pvc.get("spec", "accessModes").([]any); !slices.Contains(modes, any("ReadWriteMany")) {
		t.Errorf("state claim access modes %v: the training Jobs mount it too (ReadWriteMany)", modes)
	}
	// The training Job template mounts the same claim as the trainer account.
	jp := obj(job.get("spec", "template", "spec").(map[string]any))
	need("ServiceAccount/" + jp.str("serviceAccountName"))
	if jp.str("restartPolicy") != "Never" || jp.list("volumes")[0].str("persistentVolumeClaim", "claimName") != pvc.str("metadata", "name") {
		t.Errorf("training job: restartPolicy %q, volumes %v", jp.str("restartPolicy"), jp.get("volumes"))
	}
}

func keys(m map[string]obj) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
