package packaging_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
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

// packagedLib is everything under /usr/lib/takt that the .deb ships: the updater writes
// nothing there (Debian policy: /usr is package content, read-only at run time).
var packagedLib = []string{"lib", "lib/libonnxruntime.so", "lib/libonnxruntime.so.1", "takt-agent"}

// onlyPackaged fails t if /usr/lib/takt in root holds anything the package does not ship.
func onlyPackaged(t *testing.T, root, when string) {
	t.Helper()
	var got []string
	lib := filepath.Join(root, "usr/lib/takt")
	filepath.WalkDir(lib, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("%s: %v", when, err)
			return nil
		}
		if p != lib {
			rel, _ := filepath.Rel(lib, p)
			got = append(got, rel)
		}
		return nil
	})
	if !slices.Equal(got, packagedLib) {
		t.Errorf("%s: /usr/lib/takt holds %q, want only the packaged %q", when, got, packagedLib)
	}
}

// oldStation writes the updater's files of an earlier layout under dir in root: slots a
// (0.9.0) and b (0.9.5, committed), state.json, watch.json, a config snapshot and a
// download in staging.
func oldStation(t *testing.T, root, dir string) {
	t.Helper()
	old := filepath.Join(root, dir)
	for path, data := range map[string]string{
		"slots/a/bin/takt-agent": "#!/bin/sh\necho takt-agent 0.9.0\n",
		"slots/b/bin/takt-agent": "#!/bin/sh\necho takt-agent 0.9.5\n",
		"state.json":             `{"phase":"idle","slot":"b","version":"0.9.5"}` + "\n",
		"watch.json":             `{"0.9.5":{"key":"firmware/0.9.5/release.tar","result":"committed"}}` + "\n",
		"config/a.yaml":          "station: st-01 # as 0.9.0 ran\n",
		"staging/0.9.6.tar.part": "half a release",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(old, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(old, path), []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("slots/b", filepath.Join(old, "current")); err != nil {
		t.Fatal(err)
	}
}

// TestDebUpgrade installs version A of the .deb in a Debian root, then upgrades it to B:
// B's CLI, packaged agent and shared ONNX Runtime are in place, the committed slot (under
// /var/lib/takt/firmware, where the updater writes) still holds A's agent with A's own ONNX
// Runtime, /usr/lib/takt holds only packaged files, and the postinst tells the operator how
// to run B's agent (a signed release through the A/B updater). Then stations from the
// packages whose updater kept its files in /usr/lib/takt and in /opt/takt keep their
// committed slot, state and config snapshots, and purge removes the slots.
func TestDebUpgrade(t *testing.T) {
	arch := runtime.GOARCH
	need(t, "dpkg-deb", "dpkg")
	if !strings.HasPrefix(firmwareRoot, "/var/lib/takt/") {
		t.Fatalf("the updater's default root %s is not under /var/lib/takt", firmwareRoot)
	}
	root := debianRoot(t)
	a, b := buildDebVersion(t, arch, "1.0.0"), buildDebVersion(t, arch, "2.0.0")

	out := dpkgInstall(t, root, a)
	if strings.Contains(out, "takt firmware pack") {
		t.Errorf("first install printed the upgrade notice:\n%s", out)
	}
	if got := inRoot(t, root, "readlink", firmwareRoot+"/current"); strings.TrimSpace(got) != "slots/a" {
		t.Fatalf("current -> %q, want slots/a", got)
	}
	slot := firmwareRoot + "/current/"
	if got := inRoot(t, root, "runuser", "-u", "takt", "--", slot+"bin/takt-agent"); got != "takt-agent 1.0.0\n" {
		t.Errorf("the seeded slot's agent says %q, want takt-agent 1.0.0", got)
	}
	if got := readIn(t, root, firmwareRoot+"/slots/a/lib/libonnxruntime.so.1"); !strings.Contains(got, "1.0.0") {
		t.Errorf("slot a's ONNX Runtime %q, want its own copy of 1.0.0's", got)
	}
	if got := inRoot(t, root, "stat", "-c", "%U:%G %a", firmwareRoot); strings.TrimSpace(got) != "root:root 755" {
		t.Errorf("%s is %q, want root:root 755 (the agent, user takt, must not write its slots)", firmwareRoot, got)
	}
	onlyPackaged(t, root, "after the first install")

	out = dpkgInstall(t, root, b)
	for _, want := range []string{
		"upgraded the takt CLI and the packaged agent to 2.0.0",
		"still runs the committed slot " + firmwareRoot + "/slots/a",
		"takt firmware pack --binary /usr/lib/takt/takt-agent --config /etc/takt/agent.yaml --version 2.0.0",
		"--file lib/libonnxruntime.so.1=/usr/lib/takt/lib/libonnxruntime.so.1",
		"takt firmware install --key /etc/takt/keys/release.pub release.tar",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("upgrade output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "moved from") {
		t.Errorf("upgrade of a station already in %s says it moved the slots:\n%s", firmwareRoot, out)
	}
	for path, want := range map[string]string{
		"/usr/bin/takt":                                   "takt 2.0.0",
		"/usr/lib/takt/takt-agent":                        "takt-agent 2.0.0",
		"/usr/lib/takt/lib/libonnxruntime.so.1":           "Runtime 2.0.0",
		firmwareRoot + "/slots/a/bin/takt-agent":          "takt-agent 1.0.0",
		firmwareRoot + "/slots/a/lib/libonnxruntime.so.1": "Runtime 1.0.0",
	} {
		if got := readIn(t, root, path); !strings.Contains(got, want) {
			t.Errorf("after the upgrade %s holds %q, want %q", path, got, want)
		}
	}
	if got := inRoot(t, root, "readlink", firmwareRoot+"/current"); strings.TrimSpace(got) != "slots/a" {
		t.Errorf("after the upgrade current -> %q, want slots/a (only the A/B updater switches)", got)
	}
	if _, err := os.Lstat(filepath.Join(root, "opt/takt")); err == nil {
		t.Error("/opt/takt exists after install and upgrade")
	}
	onlyPackaged(t, root, "after the upgrade")
	// The same package again: the notice stays until the slot runs the packaged agent.
	if out := dpkgInstall(t, root, b); !strings.Contains(out, "still runs the committed slot") {
		t.Errorf("reinstall of 2.0.0 over a 1.0.0 slot: no notice in\n%s", out)
	}

	inRoot(t, root, "dpkg", "--purge", "takt")
	for _, gone := range []string{firmwareRoot, "/usr/lib/takt", "/usr/bin/takt"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("%s is left after purge", gone)
		}
	}

	// Stations installed from the packages whose updater kept its files in /usr/lib/takt,
	// and, before those, in /opt/takt: the committed slot b (a release the updater
	// installed), the updater's state, its config snapshots and a download in progress move
	// to the updater's root unchanged.
	for _, tc := range []struct{ dir, says string }{
		{"/usr/lib/takt", "moved from /usr/lib/takt to " + firmwareRoot},
		{"/opt/takt", "moved from /opt/takt to " + firmwareRoot},
	} {
		root := debianRoot(t)
		oldStation(t, root, tc.dir)
		out = dpkgInstall(t, root, b)
		if !strings.Contains(out, tc.says) || !strings.Contains(out, "still runs the committed slot "+firmwareRoot+"/slots/b") {
			t.Errorf("install over a %s station: output\n%s\nwant %q and the notice", tc.dir, out, tc.says)
		}
		if got := inRoot(t, root, "runuser", "-u", "takt", "--", slot+"bin/takt-agent"); got != "takt-agent 0.9.5\n" {
			t.Errorf("%s station: after the move the committed agent says %q, want takt-agent 0.9.5", tc.dir, got)
		}
		if got := inRoot(t, root, "readlink", firmwareRoot+"/current"); strings.TrimSpace(got) != "slots/b" {
			t.Errorf("%s station: after the move current -> %q, want slots/b", tc.dir, got)
		}
		for path, want := range map[string]string{
			"state.json":             `"version":"0.9.5"`,
			"watch.json":             "committed",
			"config/a.yaml":          "as 0.9.0 ran",
			"staging/0.9.6.tar.part": "half a release",
			"slots/a/bin/takt-agent": "takt-agent 0.9.0",
		} {
			if got := readIn(t, root, firmwareRoot+"/"+path); !strings.Contains(got, want) {
				t.Errorf("%s station: after the move %s is %q, want %q", tc.dir, path, got, want)
			}
		}
		onlyPackaged(t, root, "after the move from "+tc.dir)
	}
}
