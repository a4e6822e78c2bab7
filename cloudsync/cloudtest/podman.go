package cloudtest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Podman is a podman whose images, containers and runtime state live in one
// test's temp folder, with its own storage.conf, containers.conf and
// registries.conf: a test never sees, pulls into or prunes the host's
// images, and the host's builds never see the test's.
type Podman struct {
	// Bin is the podman binary.
	Bin string
	// Dir holds the configs, the storage (graph/, vfs driver), the runtime
	// state (run/) and podman's own temp folder (tmp/): a short path under
	// /tmp, removed at cleanup.
	Dir string

	env []string
}

// StartPodman prepares podman for the test and checks that it runs
// (podman info). It sets CONTAINERS_STORAGE_CONF, CONTAINERS_CONF and
// CONTAINERS_REGISTRIES_CONF for the rest of the test with t.Setenv, so that
// podman started by the code under test uses the same storage; the test
// therefore cannot be parallel. At cleanup every container left is removed
// (its shm mount would keep the temp folder busy).
//
// The binary is $TAKT_PODMAN if set, else podman on PATH; if none is found
// the test fails (never skips) and says to run packaging/install-deps.sh.
// As root podman is rootful (tested: podman 4.3 with runc, Debian 12).
//
// The configs: storage driver vfs (no overlay mounts to leak); no
// unqualified-search registries, so a short image name that is not local
// fails at once instead of asking a registry; the host's own open-files
// limit as the containers' default (some sandboxes refuse podman's
// default rlimits); and, on a host without the unified cgroup hierarchy
// (/sys/fs/cgroup/cgroup.controllers absent), runtime runc, as crun
// refuses hybrid cgroups.
func StartPodman(t testing.TB) *Podman {
	t.Helper()
	bin := findBinary(t, "podman (container engine)", "TAKT_PODMAN", "podman")
	// Not t.TempDir: with storage under a path that long, every podman run
	// waited 20 s for conmon after the container exited ("Exceeded conmon
	// timeout"; conmon's sockets under the runroot have a path limit).
	base := os.TempDir()
	if len(base) > 16 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "takt-podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cloudtest: remove the podman storage: %v", err)
		}
	})
	p := &Podman{Bin: bin, Dir: dir}
	for _, d := range []string{"graph", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	storage := fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(dir, "graph"), filepath.Join(dir, "run"))
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	containers := fmt.Sprintf("[containers]\ndefault_ulimits = [\"nofile=%d:%d\", \"nproc=4096:4096\"]\n"+
		"[engine]\ntmp_dir = %q\nevents_logger = \"none\"\n", lim.Cur, lim.Cur, filepath.Join(dir, "tmp"))
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		containers += "runtime = \"runc\"\n"
	}
	registries := "unqualified-search-registries = []\n"
	for name, content := range map[string]string{"storage.conf": storage, "containers.conf": containers, "registries.conf": registries} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{
		"CONTAINERS_STORAGE_CONF":    filepath.Join(dir, "storage.conf"),
		"CONTAINERS_CONF":            filepath.Join(dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF": filepath.Join(dir, "registries.conf"),
	} {
		t.Setenv(k, v)
		p.env = append(p.env, k+"="+v)
	}
	t.Cleanup(func() {
		if out, err := p.Command(context.Background(), "rm", "--all", "--force", "--time", "0").CombinedOutput(); err != nil {
			t.Errorf("cloudtest: podman rm --all: %v: %s", err, out)
		}
	})
	if out, err := p.Command(context.Background(), "info", "--format", "{{.Store.GraphRoot}} {{.Host.OCIRuntime.Name}}").CombinedOutput(); err != nil {
		t.Fatalf("cloudtest: %s info: %v\n%s", bin, err, out)
	}
	return p
}

// Command is podman with args in the test's storage (its env set
// explicitly, whatever the process's env is by then).
func (p *Podman) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, p.Bin, args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Output runs podman with args and returns its standard output; a failure
// fails the test with podman's output.
func (p *Podman) Output(t testing.TB, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := p.Command(context.Background(), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cloudtest: podman %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
}

// ImageFile is one file of an image made by Import.
type ImageFile struct {
	Path string // absolute path in the image, e.g. "/trainer"
	Data []byte
	Mode int64 // e.g. 0o755
}

// Import makes the local image ref (e.g. "localhost/trainer:test") from
// files, owned by root, with entrypoint (exec form), by podman import of a
// tar written here: no base image and no registry. Folders are made as
// needed. It returns the image id.
func (p *Podman) Import(t testing.TB, ref string, files []ImageFile, entrypoint ...string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		rel := strings.TrimPrefix(filepath.Clean(f.Path), "/")
		if rel == "" || rel == "." || strings.HasPrefix(rel, "..") {
			t.Fatalf("cloudtest: image file path %q is not a file path in the image", f.Path)
		}
		for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	args := []string{"import", "--quiet"}
	if len(entrypoint) > 0 {
		quoted := make([]string, len(entrypoint))
		for i, e := range entrypoint {
			quoted[i] = fmt.Sprintf("%q", e)
		}
		args = append(args, "--change", "ENTRYPOINT ["+strings.Join(quoted, ", ")+"]")
	}
	args = append(args, "-", ref)
	cmd := p.Command(context.Background(), args...)
	cmd.Stdin = &buf
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cloudtest: podman import %s: %v\n%s", ref, err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}
