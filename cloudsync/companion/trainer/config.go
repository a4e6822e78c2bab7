package trainer

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ExperimentConfig is one trainer configuration.
type ExperimentConfig struct {
	// Name identifies the experiment in jobs and metrics (letters, digits,
	// '-', '_').
	Name    string `yaml:"name"`
	Trainer string `yaml:"trainer"` // builtin, command, docker, kubernetes
	// Builtin: Method is "template" (aligned parts) or "patchcore"
	// (textures); Options are that trainer's options (train.TemplateOptions
	// or train.PatchCoreOptions keys), decoded strictly.
	Method  string    `yaml:"method"`
	Options yaml.Node `yaml:"options"`
	// Command is the external trainer's command line (command backend) or
	// the container's arguments (docker, kubernetes). {data} and {out} are
	// replaced by the dataset and output folders (the contract:
	// cloudsync/README.md, "External trainers").
	Command []string `yaml:"command"`
	// Image is the container image (docker, kubernetes).
	Image string `yaml:"image"`
	// Runtime is the container engine's command of the docker trainer:
	// "docker" (default), "podman", or an absolute path to either (or to
	// another docker-compatible CLI). The command line is the same for all;
	// a rootless podman (takt-cloud not root) gets --userns keep-id so the
	// trainer writes /out as takt-cloud's own user.
	Runtime string `yaml:"runtime"`
	// Env is passed to the trainer.
	Env map[string]string `yaml:"env"`
	// Kubernetes: the Job's namespace, service account and resources.
	Namespace      string            `yaml:"namespace"`
	ServiceAccount string            `yaml:"service_account"`
	Resources      map[string]string `yaml:"resources"` // cpu, memory, nvidia.com/gpu (limits)
	// DatasetClaim and OutputClaim are the PVC names the Job mounts as
	// /data and /out (kubernetes); the companion's state volume when both
	// are the same claim (subPath per job).
	DatasetClaim string `yaml:"dataset_claim"`
}

func (e ExperimentConfig) Validate() error {
	if !ValidName(e.Name) {
		return fmt.Errorf("name: %q must be 1-40 letters, digits, '-' or '_'", e.Name)
	}
	hasOptions := e.Options.Kind != 0
	switch e.Trainer {
	case TrainerBuiltin:
		if !slices.Contains(builtinMethods, e.Method) {
			return fmt.Errorf("method: %q is not one of %q", e.Method, builtinMethods)
		}
		if len(e.Command) > 0 || e.Image != "" {
			return errors.New("command, image: not used by the builtin trainer")
		}
		if _, err := builtinTrainer(e); err != nil {
			return fmt.Errorf("options: %w", err)
		}
	case TrainerCommand:
		if len(e.Command) == 0 {
			return errors.New("command: missing (the trainer's command line, with {data} and {out})")
		}
	case TrainerDocker, TrainerKubernetes:
		if strings.TrimSpace(e.Image) == "" {
			return fmt.Errorf("image: missing (the %s trainer's container image)", e.Trainer)
		}
		if e.Trainer == TrainerKubernetes && e.DatasetClaim == "" {
			return errors.New("dataset_claim: missing (the PVC holding the companion's state, mounted by the Job)")
		}
		if e.Trainer == TrainerDocker {
			if err := validRuntime(e.Runtime); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("trainer: %q is not one of builtin, command, docker, kubernetes", e.Trainer)
	}
	if e.Trainer != TrainerBuiltin && (hasOptions || e.Method != "") {
		return errors.New("method, options: only for the builtin trainer")
	}
	if e.Trainer != TrainerDocker && e.Runtime != "" {
		return errors.New("runtime: only for the docker trainer")
	}
	return nil
}

// validRuntime checks the docker trainer's runtime key.
func validRuntime(r string) error {
	switch {
	case r == "" || r == RuntimeDocker || r == RuntimePodman:
		return nil
	case filepath.IsAbs(r) && filepath.Base(r) != "/":
		return nil
	}
	return fmt.Errorf("runtime: %q is not docker, podman or an absolute path to a docker-compatible command", r)
}

// Trainer kinds of ExperimentConfig.Trainer.
const (
	TrainerBuiltin    = "builtin"    // models package trainer, in process
	TrainerCommand    = "command"    // a local command
	TrainerDocker     = "docker"     // docker run IMAGE
	TrainerKubernetes = "kubernetes" // a Kubernetes Job
)

// Container engines the docker trainer names by command; any other runtime
// is an absolute path.
const (
	RuntimeDocker = "docker"
	RuntimePodman = "podman"
)

// ValidName reports whether s can name a model or an experiment: 1-40
// letters, digits, '-' or '_'.
func ValidName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
