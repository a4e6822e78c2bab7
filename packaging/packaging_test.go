// Package packaging_test checks the appliance packaging: the .deb that package.sh builds
// with nfpm (contents, control data, maintainer scripts, the systemd unit through
// systemd-analyze verify) and the OCI Containerfiles (lint; oci/build-local.sh builds and
// runs them with podman, outside make test: OpenCV's compile takes over an hour).
package packaging_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/takt-edge/takt/firmware"
)

// repoRoot is the repository root (the OCI build context).
const repoRoot = ".."

func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s is required (Debian package %s: apt-get install %s; make test installs it): %v", tool, pkg, pkg, err)
	}
	return p
}

// buildDeb runs package.sh for arch with small stand-in binaries (the packaging, not the
// agent, is under test; make package packs the real build) and returns the .deb's path.
func buildDeb(t *testing.T, arch string) string {
	return buildDebVersion(t, arch, "9.8.7")
}

// buildDebVersion is buildDeb for a version; the stand-ins print their name and version.
func buildDebVersion(t *testing.T, arch, version string) string {
	t.Helper()
	bin := t.TempDir()
	for _, name := range []string{"takt-agent", "takt"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\necho "+name+" "+version+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ort := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(ort, []byte("not really ONNX Runtime "+version+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	cmd := exec.Command("packaging/package.sh", arch)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "TAKT_VERSION="+version, "TAKT_DIST="+dist, "TAKT_BIN_"+arch+"="+bin, "TAKT_ORT_"+arch+"="+ort)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("package.sh %s: %v\n%s", arch, err, out)
	}
	return filepath.Join(dist, "takt_"+version+"_"+arch+".deb")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDeb(t *testing.T) {
	need(t, "dpkg-deb", "dpkg")
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			deb := buildDeb(t, arch)
			// Contents: path -> mode prefix (dpkg-deb -c lists "-rwxr-xr-x root/root size date ./path").
			listing := run(t, "dpkg-deb", "-c", deb)
			entries := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
				f := strings.Fields(line)
				if len(f) < 6 {
					continue
				}
				entries[strings.TrimPrefix(f[5], ".")] = f[0]
			}
			for path, mode := range map[string]string{
				"/usr/lib/takt/takt-agent":                  "-rwxr-xr-x",
				"/usr/bin/takt":                             "-rwxr-xr-x",
				"/lib/systemd/system/takt-agent.service":    "-rw-r--r--",
				"/lib/systemd/system/takt-firmware.service": "-rw-r--r--",
				"/etc/takt/agent.yaml":                      "-rw-r-----",
				"/usr/lib/takt/lib/libonnxruntime.so.1":     "-rw-r--r--",
				"/usr/lib/takt/lib/libonnxruntime.so":       "l",
				"/var/lib/takt/":                            "d",
				"/etc/takt/keys/":                           "d",
			} {
				got, ok := entries[path]
				if !ok || !strings.HasPrefix(got, mode) {
					t.Errorf("%s: mode %q, want %q (listing:\n%s)", path, got, mode, listing)
				}
			}
			for path := range entries {
				if strings.HasPrefix(path, "/opt/") || strings.HasPrefix(path, "/usr/local/") {
					t.Errorf("%s: Debian packages keep out of /opt and /usr/local (policy 9.1.1)", path)
				}
			}
			info := run(t, "dpkg-deb", "-I", deb)
			for _, want := range []string{"Package: takt", "Architecture: " + arch, "Version: 9.8.7", "Depends: ", "libopencv", "postinst", "prerm", "postrm", "conffiles"} {
				if !strings.Contains(info, want) {
					t.Errorf("dpkg-deb -I: no %q in\n%s", want, info)
				}
			}
			ctl := t.TempDir()
			run(t, "dpkg-deb", "-e", deb, ctl)
			conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
			if got := strings.TrimSpace(string(conffiles)); got != "/etc/takt/agent.yaml" {
				t.Errorf("conffiles %q, want /etc/takt/agent.yaml", got)
			}
			for _, script := range []string{"postinst", "prerm", "postrm"} {
				run(t, "sh", "-n", filepath.Join(ctl, script))
			}
			postinst, _ := os.ReadFile(filepath.Join(ctl, "postinst"))
			for _, want := range []string{"useradd --system", "install -d -o takt -g takt -m 0750 /var/lib/takt", "ln -s slots/a", "mv -T"} {
				if !strings.Contains(string(postinst), want) {
					t.Errorf("postinst: no %q", want)
				}
			}
		})
	}
}

// firmwareRoot is where the A/B updater writes at run time; the units and the maintainer
// scripts must agree with the updater's default.
var (
	firmwareRoot = firmware.DefaultConfig().Root
	agentExec    = firmwareRoot + "/current/bin/takt-agent"
)

// TestSystemdUnits runs the packaged units through systemd-analyze verify. verify checks
// that ExecStart's binary exists, so the copy it checks starts a stand-in binary; every other
// line is the unit's.
func TestSystemdUnits(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	for _, u := range []struct {
		name, exec string
		want       []string
	}{
		{"takt-agent.service", agentExec, []string{"Type=notify", "WatchdogSec=", "Restart=on-failure",
			"User=takt", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/takt\n",
			"ReadOnlyPaths=" + firmwareRoot + "\n", "ExecStart=" + agentExec + " "}},
		{"takt-firmware.service", "/usr/bin/takt", []string{"ExecStart=/usr/bin/takt firmware watch ", "Restart=on-failure",
			"ConditionPathExists=/etc/takt/keys/release.pub", "ReadWritePaths=" + firmwareRoot + " /etc/takt\n", "NoNewPrivileges=yes"}},
	} {
		t.Run(u.name, func(t *testing.T) {
			unit, err := os.ReadFile(filepath.Join("systemd", u.name))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range u.want {
				if !strings.Contains(string(unit), want) {
					t.Errorf("%s: no %q", u.name, want)
				}
			}
			dir := t.TempDir()
			bin := filepath.Join(dir, filepath.Base(u.exec))
			if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			patched := strings.Replace(string(unit), u.exec, bin, 1)
			path := filepath.Join(dir, u.name)
			if err := os.WriteFile(path, []byte(patched), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(sa, "verify", path).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify: %v, output:\n%s\nwant success and no warnings", err, out)
			}
			// The check itself must be able to fail: an unknown key is reported.
			bad := filepath.Join(dir, "bad.service")
			os.WriteFile(bad, []byte(patched+"\n[Service]\nWatchDogSec=1\n"), 0o644)
			if out, _ := exec.Command(sa, "verify", bad).CombinedOutput(); !strings.Contains(string(out), "WatchDogSec") {
				t.Errorf("systemd-analyze verify of a misspelt key: output %q, want it named", out)
			}
		})
	}
}

var (
	fromRE  = regexp.MustCompile(`^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$`)
	fetchRE = regexp.MustCompile(`\b(curl|wget)\s+-`)
)

// pinned reports whether an image reference names an exact version: a digest, or a tag
// with a digit that is not "latest".
func pinned(ref string) bool {
	if strings.Contains(ref, "@sha256:") {
		return true
	}
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return false
	}
	tag := ref[i+1:]
	return tag != "latest" && strings.ContainsAny(tag, "0123456789")
}

// instructions joins continuation lines and drops comments.
func instructions(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	return out
}

// lint returns the problems of a Containerfile.
func lint(t *testing.T, path string) []string {
	var problems []string
	var stages []string
	var user string
	var unclean []string // apt-get installs of the current stage that leave the .debs behind
	for _, in := range instructions(t, path) {
		op, args, _ := strings.Cut(in, " ")
		switch strings.ToUpper(op) {
		case "FROM":
			m := fromRE.FindStringSubmatch(in)
			if m == nil {
				problems = append(problems, "unparsable "+in)
				continue
			}
			if !slices.Contains(stages, m[1]) && !pinned(m[1]) {
				problems = append(problems, "FROM "+m[1]+" is not pinned (tag with a version or @sha256 digest)")
			}
			stages = append(stages, m[2])
			user, unclean = "", nil
		case "ADD":
			if strings.Contains(args, "://") {
				problems = append(problems, "ADD of a URL (download in RUN with a sha256 check): "+in)
			}
		case "COPY":
			f := strings.Fields(args)
			from := ""
			var rest []string
			for _, a := range f {
				if v, ok := strings.CutPrefix(a, "--from="); ok {
					from = v
				} else if !strings.HasPrefix(a, "--") {
					rest = append(rest, a)
				}
			}
			if from != "" {
				if !slices.Contains(stages, from) && !pinned(from) {
					problems = append(problems, "COPY --from="+from+" is neither an earlier stage nor a pinned image")
				}
				continue
			}
			for _, src := range rest[:len(rest)-1] {
				matches, _ := filepath.Glob(filepath.Join(repoRoot, src))
				if len(matches) == 0 {
					problems = append(problems, "COPY source "+src+" does not exist in the build context")
				}
			}
		case "RUN":
			if fetchRE.MatchString(args) && !strings.Contains(args, "sha256sum -c") {
				problems = append(problems, "download without a sha256 check: "+in)
			}
			// A layer keeps what its RUN leaves; the registry's slim image deletes the .debs
			// by its own apt config, a plain Debian base does not (tens of MB in the CPU image).
			if strings.Contains(args, "apt-get install") && !strings.Contains(args, "apt-get clean") {
				unclean = append(unclean, in)
			}
			if strings.Contains(args, "git clone") && !strings.Contains(args, "--branch v") {
				problems = append(problems, "git clone without a pinned --branch vX.Y.Z: "+in)
			}
		case "USER":
			user = args
		}
	}
	if len(stages) < 2 {
		problems = append(problems, "not multi-stage")
	}
	if user == "" || user == "root" || user == "0" {
		problems = append(problems, "the final stage runs as root (want USER takt)")
	}
	for _, in := range unclean {
		problems = append(problems, "the final stage's apt-get install without apt-get clean: "+in)
	}
	return problems
}

func TestContainerfiles(t *testing.T) {
	files, _ := filepath.Glob("oci/Containerfile.*")
	if len(files) < 2 {
		t.Fatalf("Containerfiles %v, want the CPU and the Jetson image", files)
	}
	for _, f := range files {
		if p := lint(t, f); len(p) > 0 {
			t.Errorf("%s:\n  %s", f, strings.Join(p, "\n  "))
		}
	}
	// The linter itself must catch what it claims to.
	bad := filepath.Join(t.TempDir(), "Containerfile.bad")
	os.WriteFile(bad, []byte("FROM debian:latest AS a\nADD https://example.com/x.tgz /x\nCOPY nothere /x\nRUN curl -o /y https://e.com/y\nFROM ubuntu\nRUN apt-get update && apt-get install -y curl\n"), 0o644)
	got := lint(t, bad)
	want := []string{"FROM debian:latest is not pinned", "ADD of a URL", "COPY source nothere does not exist", "download without a sha256 check", "FROM ubuntu is not pinned", "runs as root", "apt-get install without apt-get clean"}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, w) }) {
			t.Errorf("lint of a bad Containerfile: problems %q, want one containing %q", got, w)
		}
	}
}

// stagesOf splits a Containerfile's instructions by stage name (the FROM ... AS name; the
// last, unnamed stage is "").
func stagesOf(t *testing.T, path string) (map[string][]string, []string) {
	t.Helper()
	byStage := map[string][]string{}
	var order []string
	cur := ""
	for _, in := range instructions(t, path) {
		if op, _, _ := strings.Cut(in, " "); strings.EqualFold(op, "FROM") {
			cur = ""
			if m := fromRE.FindStringSubmatch(in); m != nil {
				cur = m[2]
			}
			order = append(order, cur)
		}
		byStage[cur] = append(byStage[cur], in)
	}
	return byStage, order
}

// TestSlimOpenCV checks that the CPU and cloud images build OpenCV in their own stage with the
// shared script and install only the runtime packages from the shared list (the same files
// rootfs-check.sh runs), and that the script keeps what the agent needs and leaves out what
// made the Debian packages large.
func TestSlimOpenCV(t *testing.T) {
	pkgs, err := os.ReadFile("oci/opencv-runtime-packages")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	pkgRE := regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	for _, line := range strings.Split(string(pkgs), "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, p := range strings.Fields(line) {
			switch {
			case !pkgRE.MatchString(p):
				t.Errorf("opencv-runtime-packages: %q is not a Debian package name", p)
			case strings.HasSuffix(p, "-dev"), strings.HasPrefix(p, "libopencv"):
				t.Errorf("opencv-runtime-packages: %q does not belong in a runtime image", p)
			case slices.Contains(names, p):
				t.Errorf("opencv-runtime-packages: %q listed twice", p)
			}
			names = append(names, p)
		}
	}
	for _, want := range []string{"libavcodec59", "libavformat59", "libgstreamer1.0-0", "libjpeg62-turbo", "libpng16-16", "libtiff6", "libwebp7"} {
		if !slices.Contains(names, want) {
			t.Errorf("opencv-runtime-packages lacks %s (videoio/imgcodecs link it)", want)
		}
	}

	for _, f := range []string{"oci/Containerfile.cpu", "oci/Containerfile.cloud"} {
		st, order := stagesOf(t, f)
		if len(order) == 0 || order[0] != "opencv" {
			t.Errorf("%s: stages %q, want the opencv stage first", f, order)
			continue
		}
		if got := strings.Join(st["opencv"], "\n"); !strings.Contains(got, "RUN opencv-build.sh /opt/opencv") {
			t.Errorf("%s: the opencv stage does not run opencv-build.sh /opt/opencv:\n%s", f, got)
		}
		if got := strings.Join(st["build"], "\n"); !strings.Contains(got, "PKG_CONFIG_PATH=/opt/opencv/lib/pkgconfig") ||
			!strings.Contains(got, "COPY --from=opencv /opt/opencv /opt/opencv") {
			t.Errorf("%s: the build stage does not compile against /opt/opencv:\n%s", f, got)
		}
		final := strings.Join(st[""], "\n")
		for _, want := range []string{"COPY --from=opencv /opt/opencv/lib /opt/opencv/lib", "COPY packaging/oci/opencv-runtime-packages", "RUN ldconfig"} {
			if !strings.Contains(final, want) {
				t.Errorf("%s: the runtime stage lacks %q", f, want)
			}
		}
		if strings.Contains(final, "libopencv-") {
			t.Errorf("%s: the runtime stage installs Debian's OpenCV packages (they pull Qt, Mesa, GDAL)", f)
		}
	}

	script, err := os.ReadFile("oci/opencv-build.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := string(script)
	if !regexp.MustCompile(`OPENCV_DSC_SHA256=[0-9a-f]{64}\n`).MatchString(s) || !strings.Contains(s, "sha256sum -c") {
		t.Error("opencv-build.sh: the source is not checked against a pinned .dsc sha256")
	}
	for _, flag := range []string{"WITH_QT=OFF", "WITH_GTK=OFF", "WITH_GDAL=OFF", "WITH_OPENEXR=OFF", "WITH_VTK=OFF", "BUILD_JAVA=OFF", "BUILD_opencv_python3=OFF",
		"WITH_FFMPEG=ON", "WITH_GSTREAMER=ON", "WITH_V4L=ON", "WITH_JPEG=ON", "WITH_PNG=ON", "WITH_TIFF=ON", "WITH_WEBP=ON", "OPENCV_GENERATE_PKGCONFIG=ON"} {
		if !strings.Contains(s, "-D"+flag) {
			t.Errorf("opencv-build.sh: -D%s missing", flag)
		}
	}
	check, err := os.ReadFile("oci/rootfs-check.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"opencv-build.sh /opt/opencv", "opencv-runtime-packages"} {
		if !strings.Contains(string(check), want) {
			t.Errorf("rootfs-check.sh does not use %s: it would check something else than the images build", want)
		}
	}
	for _, c := range [][]string{{"sh", "-n", "oci/opencv-build.sh"}, {"bash", "-n", "oci/rootfs-check.sh"},
		{"sh", "-n", "oci/slim-root.sh"}, {"sh", "-n", "oci/build-local.sh"}, {"sh", "-n", "deb/install-check.sh"}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
}
