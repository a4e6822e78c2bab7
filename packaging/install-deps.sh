#!/usr/bin/env bash
# Installs what Takt needs to build, test and run its demo, and nothing that is already there.
#
#   OpenCV 4 dev files   Debian/Ubuntu libopencv-dev (gocv v0.31.0 matches Debian 12's OpenCV 4.6;
#                        on a Jetson, JetPack's OpenCV is used when pkg-config finds it)
#   ONNX Runtime 1.24.x  $ONNXRUNTIME_LIB if set; else .deps/lib/libonnxruntime.so.1, taken from
#                        the npm package onnxruntime-node@1.24.1 (npm pack, no install scripts),
#                        else from the official release archive
#   Mosquitto            Debian/Ubuntu mosquitto (tests start their own broker on loopback)
#   camera test streams  ffmpeg (HTTP MJPEG server), GStreamer RTSP server for Python
#                        (python3-gi gir1.2-gst-rtsp-server-1.0), gstreamer1.0-plugins-base,
#                        -good (RTP) and -ugly (x264enc)
#   versitygw v1.8.0     S3 server for tests, `go install` into .deps/bin
#   staticcheck 2026.2.2 linter for `make lint` (module version v0.8.2), `go install` into .deps/bin
#   Chromium             Debian chromium (+ fonts-dejavu-core), headless, for the operator page test
#   podman, runc         Debian podman (4.3 tested) and runc: takt-cloud's docker trainer runs real
#                        containers in its test (crun refuses cgroup v1/hybrid hosts; runc works)
#
# Idempotent: a second run only checks. `--check` reports what is missing and installs nothing.
# Project-local files go to .deps/ (ignored by git).
set -euo pipefail

ORT_VERSION=1.24.1
VERSITYGW_VERSION=v1.8.0
STATICCHECK_VERSION=2026.2.2 # what `staticcheck -version` prints
STATICCHECK_MODULE=v0.8.2   # the same release as a Go module version
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
CHECK_ONLY=0
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=1

say() { echo "install-deps: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

missing=()

arch_npm() {
	case "$(uname -m)" in
	x86_64 | amd64) echo x64 ;;
	aarch64 | arm64) echo arm64 ;;
	*) echo unsupported ;;
	esac
}

arch_release() {
	case "$(uname -m)" in
	x86_64 | amd64) echo x64 ;;
	aarch64 | arm64) echo aarch64 ;;
	*) echo unsupported ;;
	esac
}

have_opencv() { pkg-config --exists opencv4 2>/dev/null; }
have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]]; }
# Camera tests: file checks only (no python or gst-inspect start-up), so a second run is fast.
gst_plugin() { compgen -G "/usr/lib/*/gstreamer-1.0/libgst$1.so" >/dev/null || compgen -G "/usr/lib/gstreamer-1.0/libgst$1.so" >/dev/null; }
have_camera_streams() {
	command -v ffmpeg >/dev/null 2>&1 && [[ -f /usr/lib/python3/dist-packages/gi/__init__.py ]] &&
		compgen -G "/usr/lib/*/girepository-1.0/GstRtspServer-1.0.typelib" >/dev/null &&
		gst_plugin videotestsrc && gst_plugin rtp && gst_plugin x264
}
have_versitygw() { [[ -x "$DEPS/bin/versitygw" ]] || command -v versitygw >/dev/null 2>&1; }
# The project's own copy only: another staticcheck release reports other findings.
have_staticcheck() { [[ -x "$DEPS/bin/staticcheck" ]] && "$DEPS/bin/staticcheck" -version 2>/dev/null | grep -qF "$STATICCHECK_VERSION"; }
have_chromium() { command -v chromium >/dev/null 2>&1 && [[ -d /usr/share/fonts/truetype/dejavu ]]; }
have_podman() { command -v podman >/dev/null 2>&1 && { command -v runc >/dev/null 2>&1 || [[ -x /usr/sbin/runc ]]; }; }
# The Makefile points ONNXRUNTIME_LIB at the project-local copy; only another path is the
# user's own library.
if [[ "${ONNXRUNTIME_LIB:-}" == "$DEPS/lib/libonnxruntime.so.1" ]]; then
	unset ONNXRUNTIME_LIB
fi

ort_lib_path() {
	if [[ -n "${ONNXRUNTIME_LIB:-}" ]]; then
		echo "$ONNXRUNTIME_LIB"
	else
		echo "$DEPS/lib/libonnxruntime.so.1"
	fi
}
have_ort() { [[ -f "$(ort_lib_path)" ]]; }
have_pkgtools() { command -v dpkg-deb >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 && { [ -x /usr/sbin/debootstrap ] || command -v debootstrap >/dev/null 2>&1; }; }

command -v go >/dev/null 2>&1 || die "Go is not installed; install Go 1.26 or newer (https://go.dev/dl) and run again"

have_opencv || missing+=(opencv)
have_mosquitto || missing+=(mosquitto)
have_camera_streams || missing+=(camera-test-streams)
have_ort || missing+=(onnxruntime)
have_versitygw || missing+=(versitygw)
have_staticcheck || missing+=(staticcheck)
have_chromium || missing+=(chromium)
have_podman || missing+=(podman)
have_pkgtools || missing+=(packaging-tools)

if [[ ${#missing[@]} -eq 0 ]]; then
	say "all present: OpenCV $(pkg-config --modversion opencv4), ONNX Runtime at $(ort_lib_path), mosquitto, versitygw, staticcheck, podman"
	exit 0
fi
if [[ $CHECK_ONLY -eq 1 ]]; then
	say "missing: ${missing[*]} (run packaging/install-deps.sh to install)"
	exit 1
fi

apt_packages=()
have_opencv || apt_packages+=(libopencv-dev pkg-config)
have_mosquitto || apt_packages+=(mosquitto)
have_chromium || apt_packages+=(chromium fonts-dejavu-core)
have_podman || apt_packages+=(podman runc)
# packaging tests: dpkg-deb inspects the .deb, systemd-analyze verifies the unit, debootstrap
# makes the Debian root the .deb is installed and upgraded in.
have_pkgtools || apt_packages+=(dpkg systemd debootstrap)
have_camera_streams || apt_packages+=(ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly)
if [[ ${#apt_packages[@]} -gt 0 ]]; then
	command -v apt-get >/dev/null 2>&1 ||
		die "need ${apt_packages[*]} but apt-get is not available; install OpenCV 4 dev files (pkg-config name opencv4) and mosquitto with your package manager"
	SUDO=""
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 || die "need root to install ${apt_packages[*]}; run as root or install sudo"
		SUDO=sudo
	fi
	say "installing Debian packages: ${apt_packages[*]}"
	$SUDO apt-get update -qq || die "apt-get update failed; check the package mirror in /etc/apt/sources.list"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null ||
		die "apt-get install ${apt_packages[*]} failed"
	have_opencv || die "libopencv-dev installed but pkg-config does not find opencv4"
	have_mosquitto || die "mosquitto installed but not found on PATH or in /usr/sbin"
	have_chromium || die "chromium installed but not found on PATH"
	have_podman || die "podman and runc installed but podman or runc not found on PATH (or runc in /usr/sbin)"
	have_pkgtools || die "dpkg, systemd and debootstrap installed but dpkg-deb, systemd-analyze or debootstrap not found on PATH"
	have_camera_streams || die "camera test packages installed but ffmpeg, GstRtspServer-1.0.typelib or the GStreamer videotestsrc/rtp/x264 plugins are still missing"
fi

if ! have_ort; then
	if [[ -n "${ONNXRUNTIME_LIB:-}" ]]; then
		die "ONNXRUNTIME_LIB=$ONNXRUNTIME_LIB does not exist; point it at libonnxruntime.so ${ORT_VERSION%.*}.x or unset it to download one"
	fi
	mkdir -p "$DEPS/lib"
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	got=0
	npm_arch="$(arch_npm)"
	if [[ "$npm_arch" != unsupported ]] && command -v npm >/dev/null 2>&1; then
		say "fetching ONNX Runtime $ORT_VERSION (npm pack onnxruntime-node@$ORT_VERSION, no install scripts)"
		if (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null 2>&1); then
			member="package/bin/napi-v6/linux/$npm_arch/libonnxruntime.so.1"
			if tar -xzf "$tmp"/onnxruntime-node-*.tgz -C "$tmp" "$member" 2>/dev/null; then
				install -m 0644 "$tmp/$member" "$DEPS/lib/libonnxruntime.so.1"
				got=1
			fi
		fi
		[[ $got -eq 1 ]] || say "npm pack onnxruntime-node@$ORT_VERSION did not give a linux/$npm_arch library; trying the release archive"
	fi
	rel_arch="$(arch_release)"
	if [[ $got -eq 0 && "$rel_arch" != unsupported ]] && command -v curl >/dev/null 2>&1; then
		name="onnxruntime-linux-$rel_arch-$ORT_VERSION"
		url="https://github.com/microsoft/onnxruntime/releases/download/v$ORT_VERSION/$name.tgz"
		say "fetching ONNX Runtime $ORT_VERSION from $url"
		if curl -fsSL --retry 2 -o "$tmp/ort.tgz" "$url" && tar -xzf "$tmp/ort.tgz" -C "$tmp"; then
			install -m 0644 "$tmp/$name/lib/libonnxruntime.so.$ORT_VERSION" "$DEPS/lib/libonnxruntime.so.1"
			got=1
		fi
	fi
	[[ $got -eq 1 ]] || die "could not get ONNX Runtime $ORT_VERSION for $(uname -m): install npm (apt-get install npm) or allow downloads from the ONNX Runtime releases, or set ONNXRUNTIME_LIB to an existing libonnxruntime.so"
	ln -sf libonnxruntime.so.1 "$DEPS/lib/libonnxruntime.so"
	say "ONNX Runtime $ORT_VERSION installed at $DEPS/lib/libonnxruntime.so.1"
fi

if ! have_versitygw; then
	say "building versitygw $VERSITYGW_VERSION into $DEPS/bin (go install)"
	mkdir -p "$DEPS/bin"
	GOBIN="$DEPS/bin" GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" ||
		die "go install github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION failed; check access to the Go module proxy (GOPROXY)"
fi

if ! have_staticcheck; then
	say "building staticcheck $STATICCHECK_VERSION into $DEPS/bin (go install)"
	mkdir -p "$DEPS/bin"
	GOBIN="$DEPS/bin" GOFLAGS=-buildvcs=false go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_MODULE" ||
		die "go install honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_MODULE failed; check access to the Go module proxy (GOPROXY)"
fi

say "done: OpenCV $(pkg-config --modversion opencv4), ONNX Runtime at $(ort_lib_path), mosquitto, versitygw, staticcheck, podman"
