package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// debianRoot returns a fresh Debian 12 minbase root for the host architecture in a temp
// folder. debootstrap runs once (it needs a Debian mirror, DEBIAN_MIRROR or
// deb.debian.org); its root is kept as a tarball in the user's cache folder
// (TAKT_DEBIAN_ROOT_CACHE overrides the path) and unpacked for each test.
func debianRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the .deb install and upgrade run in a chroot: run as root")
	}
	need(t, "debootstrap", "debootstrap")
	tarball := os.Getenv("TAKT_DEBIAN_ROOT_CACHE")
	if tarball == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		tarball = filepath.Join(cache, "takt", "bookworm-minbase-"+runtime.GOARCH+".tar")
	}
	if _, err := os.Stat(tarball); err != nil {
		mirror := os.Getenv("DEBIAN_MIRROR")
		if mirror == "" {
			mirror = "http://deb.debian.org/debian"
		}
		tmp := filepath.Join(filepath.Dir(tarball), "bootstrap.tmp")
		os.RemoveAll(tmp)
		os.MkdirAll(tmp, 0o755)
		t.Logf("debootstrap --variant=minbase bookworm into %s (once; cached as %s)", tmp, tarball)
		if out, err := exec.Command("debootstrap", "--variant=minbase", "bookworm", tmp, mirror).CombinedOutput(); err != nil {
			t.Fatalf("debootstrap: %v\n%s", err, out)
		}
		run(t, "tar", "-C", tmp, "-cf", tarball+".tmp", ".")
		if err := os.Rename(tarball+".tmp", tarball); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(tmp)
	}
	root := filepath.Join(t.TempDir(), "root")
	os.Mkdir(root, 0o755)
	run(t, "tar", "-C", root, "-xf", tarball)
	return root
}

// inRoot runs a command in root and returns its output.
func inRoot(t *testing.T, root string, args ...string) string {
	t.Helper()
	cmd := exec.Command("chroot", append([]string{root, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in the root: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dpkgInstall installs a .deb in root. The stand-in binaries link nothing, so the OpenCV
// dependencies are left out (--force-depends); the maintainer scripts run as on a station.
func dpkgInstall(t *testing.T, root, deb string) string {
	t.Helper()
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp", filepath.Base(deb)), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return inRoot(t, root, "dpkg", "--force-depends", "-i", "/tmp/"+filepath.Base(deb))
}

func readIn(t *testing.T, root, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDebUpgrade installs version A of the .deb in a Debian root, then upgrades it to B:
// B's CLI, packaged agent and shared ONNX Runtime are in place, the committed slot still
// holds A's agent with A's own ONNX Runtime, and the postinst tells the operator how to
// run B's agent (a signed release through the A/B updater). Then a station from the
// /opt/takt packages keeps its committed slot, and purge removes the slots.
func TestDebUpgrade(t *testing.T) {
	arch := runtime.GOARCH
	need(t, "dpkg-deb", "dpkg")
	root := debianRoot(t)
	a, b := buildDebVersion(t, arch, "1.0.0"), buildDebVersion(t, arch, "2.0.0")

	out := dpkgInstall(t, root, a)
	if strings.Contains(out, "takt firmware pack") {
		t.Errorf("first install printed the upgrade notice:\n%s", out)
	}
	if got := inRoot(t, root, "readlink", "/usr/lib/takt/current"); strings.TrimSpace(got) != "slots/a" {
		t.Fatalf("current -> %q, want slots/a", got)
	}
	slot := "/usr/lib/takt/current/"
	if got := inRoot(t, root, "runuser", "-u", "takt", "--", slot+"bin/takt-agent"); got != "takt-agent 1.0.0\n" {
		t.Errorf("the seeded slot's agent says %q, want takt-agent 1.0.0", got)
	}
	if got := readIn(t, root, "/usr/lib/takt/slots/a/lib/libonnxruntime.so.1"); !strings.Contains(got, "1.0.0") {
		t.Errorf("slot a's ONNX Runtime %q, want its own copy of 1.0.0's", got)
	}

	out = dpkgInstall(t, root, b)
	for _, want := range []string{
		"upgraded the takt CLI and the packaged agent to 2.0.0",
		"still runs the committed slot /usr/lib/takt/slots/a",
		"takt firmware pack --binary /usr/lib/takt/takt-agent --config /etc/takt/agent.yaml --version 2.0.0",
		"--file lib/libonnxruntime.so.1=/usr/lib/takt/lib/libonnxruntime.so.1",
		"takt firmware install --key /etc/takt/keys/release.pub release.tar",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("upgrade output lacks %q:\n%s", want, out)
		}
	}
	for path, want := range map[string]string{
		"/usr/bin/takt":                                 "takt 2.0.0",
		"/usr/lib/takt/takt-agent":                      "takt-agent 2.0.0",
		"/usr/lib/takt/lib/libonnxruntime.so.1":         "Runtime 2.0.0",
		"/usr/lib/takt/slots/a/bin/takt-agent":          "takt-agent 1.0.0",
		"/usr/lib/takt/slots/a/lib/libonnxruntime.so.1": "Runtime 1.0.0",
	} {
		if got := readIn(t, root, path); !strings.Contains(got, want) {
			t.Errorf("after the upgrade %s holds %q, want %q", path, got, want)
		}
	}
	if got := inRoot(t, root, "readlink", "/usr/lib/takt/current"); strings.TrimSpace(got) != "slots/a" {
		t.Errorf("after the upgrade current -> %q, want slots/a (only the A/B updater switches)", got)
	}
	if _, err := os.Lstat(filepath.Join(root, "opt/takt")); err == nil {
		t.Error("/opt/takt exists after install and upgrade")
	}
	// The same package again: the notice stays until the slot runs the packaged agent.
	if out := dpkgInstall(t, root, b); !strings.Contains(out, "still runs the committed slot") {
		t.Errorf("reinstall of 2.0.0 over a 1.0.0 slot: no notice in\n%s", out)
	}

	inRoot(t, root, "dpkg", "--purge", "takt")
	for _, gone := range []string{"usr/lib/takt/slots", "usr/lib/takt/current", "usr/bin/takt"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("/%s is left after purge", gone)
		}
	}

	// A station installed from the packages that used /opt/takt: its committed slot b (a
	// release installed by the updater) and the updater's state move over unchanged.
	root = debianRoot(t)
	old := filepath.Join(root, "opt/takt")
	for path, data := range map[string]string{
		"slots/a/bin/takt-agent": "#!/bin/sh\necho takt-agent 0.9.0\n",
		"slots/b/bin/takt-agent": "#!/bin/sh\necho takt-agent 0.9.5\n",
		"state.json":             `{"slot":"b","version":"0.9.5"}` + "\n",
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(old, path)), 0o755)
		os.WriteFile(filepath.Join(old, path), []byte(data), 0o755)
	}
	os.Symlink("slots/b", filepath.Join(old, "current"))
	out = dpkgInstall(t, root, b)
	if !strings.Contains(out, "moved from /opt/takt") || !strings.Contains(out, "still runs the committed slot /usr/lib/takt/slots/b") {
		t.Errorf("install over an /opt/takt station: output\n%s\nwant the move and the notice", out)
	}
	if got := inRoot(t, root, slot+"bin/takt-agent"); got != "takt-agent 0.9.5\n" {
		t.Errorf("after the move the committed agent says %q, want takt-agent 0.9.5", got)
	}
	if got := readIn(t, root, "/usr/lib/takt/state.json"); !strings.Contains(got, "0.9.5") {
		t.Errorf("after the move state.json is %q, want the updater's state", got)
	}
}
