#!/usr/bin/env bash
# cross-arm64.sh OUTDIR: builds takt-agent and takt for linux/arm64 on an amd64 Debian 12 box
# and checks them under qemu. Prints nothing but progress on stderr; the binaries land in
# OUTDIR and the arm64 ONNX Runtime in OUTDIR/../lib/libonnxruntime.so.1.
#
# The agent links Debian 12's OpenCV 4.6 through cgo, so the build needs arm64 OpenCV headers
# and libraries. Installing them with dpkg multiarch would upgrade and remove host packages,
# so instead debootstrap downloads Debian 12 arm64 with libopencv-dev into a sysroot
# (.deps/sysroot-arm64, about 700 MB, first run only) and the cross compiler
# (gcc-aarch64-linux-gnu) builds against it. qemu-user-static then runs the arm64 `takt`
# on a synthetic part and an ONNX model: OpenCV and ONNX Runtime really load.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: cross-arm64.sh OUTDIR}
GO=${GO:-go}
ORT_VERSION=1.24.1
sr=$PWD/.deps/sysroot-arm64
say() { echo "cross-arm64: $*" >&2; }
die() { say "$*"; exit 1; }

need=()
for t in debootstrap:debootstrap aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu aarch64-linux-gnu-g++:g++-aarch64-linux-gnu \
	qemu-aarch64-static:qemu-user-static; do
	command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if ((${#need[@]})); then
	say "installing ${need[*]}"
	sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
	$sudo apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
fi

if [[ ! -f $sr/.complete ]]; then
	say "downloading Debian 12 arm64 with libopencv-dev into $sr (first run only)"
	rm -rf "$sr"
	sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
	$sudo debootstrap --foreign --arch=arm64 --variant=minbase --include=libopencv-dev bookworm "$sr" \
		"${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null || die "debootstrap failed"
	# --foreign leaves the extra packages in the cache; unpacking them is all a sysroot needs.
	for deb in "$sr"/var/cache/apt/archives/*.deb; do $sudo dpkg-deb -x "$deb" "$sr"; done
	# Debian picks BLAS and LAPACK with alternatives, which only a configured system has.
	$sudo ln -sf blas/libblas.so.3 "$sr/usr/lib/aarch64-linux-gnu/libblas.so.3"
	$sudo ln -sf lapack/liblapack.so.3 "$sr/usr/lib/aarch64-linux-gnu/liblapack.so.3"
	$sudo touch "$sr/.complete"
fi

mkdir -p "$out" "$(dirname "$out")/lib"
out=$(cd "$out" && pwd)
lib=$(dirname "$out")/lib
if [[ ! -f $lib/libonnxruntime.so.1 ]]; then
	say "fetching ONNX Runtime $ORT_VERSION for arm64 (npm pack onnxruntime-node@$ORT_VERSION)"
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
	tar -xzf "$tmp"/onnxruntime-node-*.tgz -C "$tmp" package/bin/napi-v6/linux/arm64/libonnxruntime.so.1
	cp "$tmp/package/bin/napi-v6/linux/arm64/libonnxruntime.so.1" "$lib/"
	rm -rf "$tmp"
fi

rl=$sr/usr/lib/aarch64-linux-gnu
say "building takt-agent and takt for arm64"
PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR=$rl/pkgconfig:$sr/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$sr \
	CC="aarch64-linux-gnu-gcc --sysroot=$sr" CXX="aarch64-linux-gnu-g++ --sysroot=$sr" \
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 \
	CGO_LDFLAGS="-Wl,-rpath-link=$rl -Wl,-rpath-link=$sr/lib/aarch64-linux-gnu -Wl,-rpath-link=$rl/blas -Wl,-rpath-link=$rl/lapack" \
	$GO build -trimpath ${TAKT_LDFLAGS:+-ldflags "$TAKT_LDFLAGS"} -o "$out/" ./agent/cmd/takt-agent ./agent/cmd/takt

say "checking the arm64 build under qemu: OpenCV renders a part, ONNX Runtime loads a model"
run() {
	qemu-aarch64-static -L "$sr" -E "LD_LIBRARY_PATH=/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu/blas:/usr/lib/aarch64-linux-gnu/lapack" \
		-E "ONNXRUNTIME_LIB=$lib/libonnxruntime.so.1" "$@"
}
chk=$(mktemp -d)
trap 'rm -rf "$chk"' EXIT
run "$out/takt" synth --out "$chk/parts" --good 3 --defective 0 >/dev/null || die "arm64 takt synth failed under qemu"
run "$out/takt" model train --data "$chk/parts" --out "$chk/model.onnx" >/dev/null 2>&1 || die "arm64 takt model train failed under qemu"
run "$out/takt" model inspect "$chk/model.onnx" | grep -q . || die "arm64 takt model inspect failed under qemu"
say "arm64 build checked: takt synth, model train and model inspect ran under qemu-aarch64"
