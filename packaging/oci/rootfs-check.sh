#!/bin/bash
# rootfs-check.sh: runs the stages of Containerfile.cpu and Containerfile.cloud in debootstrap
# roots (no container engine runs here), runs the real agent in the assembled runtime root and
# measures the roots' sizes. Not part of `make test`: the OpenCV stage compiles for about an
# hour on 2 cores. Needs root, debootstrap, the network to Debian's archive, the host's Go
# 1.26.8 in /usr/local/go (the golang:1.26.8-bookworm image's toolchain) and
# .deps/lib/libonnxruntime.so.1 (`make deps`).
#
#   sudo packaging/oci/rootfs-check.sh [WORKDIR]      (default /tmp/takt-rootfs)
#
# Each stage's root is kept in WORKDIR and reused when its output is there (like a layer
# cache): delete WORKDIR/<stage> to run that stage again. What differs from a container build,
# and why:
#   - FROM debian:12.12-slim is `debootstrap --variant=minbase bookworm` plus the slim image's
#     dpkg excludes (no docs, man pages, locales) and no apt lists or caches (slimify below);
#   - FROM golang:1.26.8-bookworm is the same root plus the compilers that image has, with the
#     host's /usr/local/go (same version, checked) and module cache bind-mounted;
#   - the `ort` stage downloads Microsoft's release, unreachable here: the same
#     libonnxruntime.so.1 1.24.1 comes from .deps (the npm package's copy, see install-deps.sh).
# The stage commands themselves are the Containerfiles' own: opencv-build.sh and the
# runtime package list opencv-runtime-packages are shared files.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${1:-/tmp/takt-rootfs}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ORT_LIB=${ORT_LIB:-$REPO/.deps/lib/libonnxruntime.so.1}
GOROOT_HOST=${GOROOT_HOST:-/usr/local/go}
GO_VERSION=go1.26.8
PKGS_FILE=$REPO/packaging/oci/opencv-runtime-packages

[ "$(id -u)" = 0 ] || { echo "rootfs-check: run as root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "rootfs-check: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
[ -f "$ORT_LIB" ] || { echo "rootfs-check: $ORT_LIB missing (make deps)" >&2; exit 1; }
[ "$("$GOROOT_HOST/bin/go" env GOVERSION)" = "$GO_VERSION" ] ||
    { echo "rootfs-check: $GOROOT_HOST is not $GO_VERSION (the build stage's golang:1.26.8-bookworm)" >&2; exit 1; }
mkdir -p "$WORK"
LOG=$WORK/sizes.log

MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true; done
    MOUNTS=()
}
trap cleanup EXIT
mnt() { mount "$@"; MOUNTS+=("${@: -1}"); }

say() { echo "rootfs-check: $*" | tee -a "$LOG"; }
# size ROOT: KB used by ROOT on its file system, without /proc, /sys and /dev (du -sx).
size_kb() { du -sxk --exclude=./proc --exclude=./sys --exclude=./dev "$1" | cut -f1; }
mb() { echo "$(( ($1 + 512) / 1024 )) MB"; }

# in ROOT CMD...: a stage's RUN, as root in ROOT with /proc mounted.
in_root() {
    local root=$1
    shift
    mount -t proc proc "$root/proc"
    local rc=0
    ${NICE:-} chroot "$root" /usr/bin/env -i PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 "$@" || rc=$?
    umount "$root/proc"
    return $rc
}

# The debian:12.12-slim equivalent: minbase, then what debuerreotype's slimify does.
base() {
    local b=$WORK/base
    [ -f "$b/.done" ] && return
    rm -rf "$b"
    say "base: debootstrap --variant=minbase bookworm, slimmed (slim-root.sh)"
    "$REPO/packaging/oci/slim-root.sh" "$b" "$MIRROR"
    cp /etc/resolv.conf "$b/etc/resolv.conf"
    touch "$b/.done"
}

# stage NAME: a fresh copy of the base for a stage.
stage() {
    # Never rm -rf through a mount a killed run left behind (the host's Go module cache).
    if awk -v d="$WORK/$1/" 'index($2, d) == 1 {found = 1} END {exit !found}' /proc/mounts; then
        echo "rootfs-check: mounts left under $WORK/$1 (umount them first):" >&2
        grep " $WORK/$1/" /proc/mounts >&2
        exit 1
    fi
    rm -rf "${WORK:?}/$1"
    cp -a "$WORK/base" "$WORK/$1"
    rm -f "$WORK/$1/.done"
}

# FROM debian:12.12-slim AS opencv; COPY opencv-build.sh; RUN opencv-build.sh /opt/opencv
opencv_stage() {
    local r=$WORK/opencv
    [ -f "$r/.done" ] && { say "opencv: reusing $r/opt/opencv (delete $r to rebuild)"; return; }
    stage opencv
    install -m 0755 "$REPO/packaging/oci/opencv-build.sh" "$r/usr/local/bin/opencv-build.sh"
    say "opencv: building OpenCV 4.6 from Debian's source (log $WORK/opencv-build.log)"
    local t0=$SECONDS
    NICE="nice -n 10" in_root "$r" /usr/local/bin/opencv-build.sh /opt/opencv \
        >"$WORK/opencv-build.log" 2>&1 || { tail -30 "$WORK/opencv-build.log"; exit 1; }
    say "opencv: built in $(( (SECONDS - t0) / 60 )) min"
    touch "$r/.done"
}

# The runtime packages, as the Containerfiles install them.
runtime_packages() { sed 's/#.*//' "$PKGS_FILE" | xargs; }

# derived_packages: the Debian packages that hold the libraries the built OpenCV links
# directly (DT_NEEDED), found in the opencv stage's root; apt brings their dependencies.
derived_packages() {
    in_root "$WORK/opencv" sh -c '
        multiarch=$(gcc -print-multiarch)
        for lib in /opt/opencv/lib/libopencv_*.so.*.*.*; do readelf -d "$lib"; done |
            sed -n "s/.*(NEEDED).*\[\(.*\)\]/\1/p" | grep -v "^libopencv_" | sort -u |
            while read -r so; do
                dpkg -S "*/$multiarch/$so" || { echo "derived_packages: no package holds $so" >&2; exit 1; }
            done | cut -d: -f1 | sort -u'
}

# The committed list must be the derived one: a changed build option that links a new
# library fails here instead of in a container at run time.
check_package_list() {
    local want got
    want=$(derived_packages | xargs)
    got=$(runtime_packages | tr ' ' '\n' | sort | xargs)
    if [ "$want" != "$got" ]; then
        echo "rootfs-check: $PKGS_FILE lists: $got" >&2
        echo "rootfs-check: the built libraries link:  $want" >&2
        exit 1
    fi
    say "opencv: runtime packages (readelf -d NEEDED -> dpkg -S): $got"
}

# FROM golang:1.26.8-bookworm AS build; COPY --from=opencv /opt/opencv /opt/opencv;
# RUN (runtime packages, ld.so.conf); go build.
build_stage() {
    local r=$WORK/build
    stage build
    cp -a "$WORK/opencv/opt/opencv" "$r/opt/opencv"
    # What golang:1.26.8-bookworm has on top of Debian (gcc, g++, libc6-dev, make, pkg-config).
    in_root "$r" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates gcc g++ libc6-dev make pkg-config $(runtime_packages) >/dev/null"
    in_root "$r" sh -c 'cp /opt/opencv/ld.so.conf /etc/ld.so.conf.d/opencv.conf && ldconfig'
    mkdir -p "$r/usr/local/go" "$r/go/pkg/mod" "$r/src"
    mnt --bind -o ro "$GOROOT_HOST" "$r/usr/local/go"
    mnt --bind -o ro "$("$GOROOT_HOST/bin/go" env GOMODCACHE)" "$r/go/pkg/mod"
    # COPY go.mod go.sum agent camera cloudsync models firmware ./ (the committed tree).
    git -C "$REPO" archive HEAD go.mod go.sum agent camera cloudsync models firmware | tar -x -C "$r/src"
    say "build: go build takt-agent, takt, takt-cloud against /opt/opencv"
    local t0=$SECONDS
    in_root "$r" sh -c 'cd /src && GOPATH=/go GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=1 \
        PKG_CONFIG_PATH=/opt/opencv/lib/pkgconfig \
        go build -trimpath -o /out/ ./agent/cmd/takt-agent ./agent/cmd/takt ./cloudsync/cmd/takt-cloud'
    say "build: done in $((SECONDS - t0)) s"
    cleanup
}

# FROM debian:12.12-slim (the runtime stage): the runtime packages and the OpenCV libraries,
# the layers Containerfile.cpu and Containerfile.cloud share; each image's root is a copy.
runtime_common() {
    local r=$WORK/runtime-common
    stage runtime-common
    in_root "$r" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates $(runtime_packages) >/dev/null && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb"
    mkdir -p "$r/opt/opencv"
    cp -a "$WORK/opencv/opt/opencv/lib" "$r/opt/opencv/lib"
    cp "$WORK/opencv/opt/opencv/ld.so.conf" "$r/etc/ld.so.conf.d/opencv.conf"
    in_root "$r" ldconfig
    COMMON_KB=$(size_kb "$r")
    say "runtime-common: slim base + runtime packages + /opt/opencv/lib: $(mb "$COMMON_KB")"
}

# For the README's "biggest parts": the same runtime packages without FFmpeg's four, whose
# Debian builds link every codec library (x265, codec2, Intel Media SDK, librsvg, ...).
runtime_without_ffmpeg() {
    local r=$WORK/runtime-no-ffmpeg
    stage runtime-no-ffmpeg
    in_root "$r" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates $(runtime_packages | tr ' ' '\n' | grep -vE '^lib(avcodec|avformat|avutil|swscale)[0-9]' | xargs) >/dev/null \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb"
}

# image_root NAME: a copy of the shared runtime layers, with ONNX Runtime.
image_root() {
    local r=$WORK/$1
    rm -rf "${r:?}"
    cp -a "$WORK/runtime-common" "$r"
    install -D -m 0644 "$ORT_LIB" "$r/usr/lib/takt/lib/libonnxruntime.so.1"
}

# The runtime layer before this stage existed, for the comparison: Debian's OpenCV 4.6
# packages of the twelve modules installed into the same slim base.
debian_before() {
    local r=$WORK/runtime-debian-opencv
    [ -f "$r/.done" ] && return
    stage "$(basename "$r")"
    in_root "$r" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 libopencv-videoio406 \
        libopencv-video406 libopencv-highgui406 libopencv-calib3d406 libopencv-features2d406 \
        libopencv-objdetect406 libopencv-dnn406 libopencv-photo406 libopencv-flann406 >/dev/null \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb"
    touch "$r/.done"
}

# ldd_check ROOT FILE...: every shared library resolves inside ROOT.
ldd_check() {
    local r=$1
    shift
    local out
    out=$(in_root "$r" ldd "$@")
    if grep -q "not found" <<<"$out"; then
        grep -B1 "not found" <<<"$out" >&2
        echo "rootfs-check: unresolved libraries in $r" >&2
        exit 1
    fi
}

cpu_runtime() {
    local r=$WORK/runtime-cpu
    image_root runtime-cpu
    in_root "$r" sh -c 'groupadd --system takt && useradd --system --gid takt --home-dir /var/lib/takt takt \
        && install -d -o takt -g takt -m 0750 /var/lib/takt'
    install -D -m 0755 "$WORK/build/out/takt-agent" "$r/usr/lib/takt/slots/a/bin/takt-agent"
    install -D -m 0755 "$WORK/build/out/takt" "$r/usr/bin/takt"
    install -D -m 0644 "$REPO/packaging/deb/agent.yaml" "$r/etc/takt/agent.yaml"
    ln -s slots/a "$r/usr/lib/takt/current"
    ldd_check "$r" /usr/lib/takt/current/bin/takt-agent /usr/bin/takt /opt/opencv/lib/libopencv_videoio.so.406
    ADDED_CPU_KB=$(( $(size_kb "$r") - COMMON_KB ))
    say "runtime-cpu: takt-agent, takt, ONNX Runtime, config add $(mb "$ADDED_CPU_KB")"
}

cloud_runtime() {
    local r=$WORK/runtime-cloud
    image_root runtime-cloud
    in_root "$r" sh -c 'groupadd --system --gid 10001 takt && useradd --system --uid 10001 --gid takt --home-dir /var/lib/takt-cloud takt \
        && install -d -o takt -g takt -m 0750 /var/lib/takt-cloud'
    install -D -m 0755 "$WORK/build/out/takt-cloud" "$r/usr/bin/takt-cloud"
    ldd_check "$r" /usr/bin/takt-cloud
    ADDED_CLOUD_KB=$(( $(size_kb "$r") - COMMON_KB ))
    say "runtime-cloud: takt-cloud, ONNX Runtime add $(mb "$ADDED_CLOUD_KB")"
}

# as_takt ROOT CMD...: a command as the image's USER takt with the image's ENV.
as_takt() {
    local r=$1
    shift
    mount -t proc proc "$r/proc"
    local rc=0
    chroot --userspec="$(chroot "$r" id -u takt):$(chroot "$r" id -g takt)" "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
        TAKT_DATA_DIR=/var/lib/takt TAKT_HTTP_LISTEN=127.0.0.1:0 "$@" || rc=$?
    umount "$r/proc"
    return $rc
}

# The agent in the CPU runtime root: version, config check, synthetic parts written with
# imgcodecs and videoio, a model trained and checked with ONNX Runtime, then two short
# inspections: a video file read through FFmpeg and an image folder.
cpu_checks() {
    local r=$WORK/runtime-cpu c=/var/lib/takt/check
    say "cpu: takt-agent version: $(as_takt "$r" /usr/lib/takt/current/bin/takt-agent version | tr '\n' ' ')"
    install -d -o "$(chroot "$r" id -u takt)" -g "$(chroot "$r" id -g takt)" "$r$c"
    as_takt "$r" takt synth --out $c/train --layout classes --good 8 --seed 1 --first 1001
    as_takt "$r" takt synth --out $c/line --layout line --good 16 --defective 4 --seed 1 --first 1031 --video
    as_takt "$r" takt model train --data $c/train --out $c/model.onnx --name check-part --version 1.0.0 \
        --ignore 274,106,520,202 --width 128
    for kind in file folder; do
        local src="path: line/line.avi"
        [ $kind = folder ] && src="path: line/line"
        cat >"$r$c/$kind.yaml" <<EOF
station: rootfs-check
data_dir: data-$kind
camera:
  id: cam0
  kind: $kind
  $src
model:
  path: model.onnx
  name: check-part
deadline: 2s
images:
  keep: all
  format: jpg
log:
  level: error
  format: console
http:
  listen: 127.0.0.1:0
EOF
        chown "$(chroot "$r" id -u takt)" "$r$c/$kind.yaml"
        as_takt "$r" /usr/lib/takt/current/bin/takt-agent config check --config $c/$kind.yaml
        local t0=$SECONDS counts
        as_takt "$r" TAKT_DATA_DIR=$c/data-$kind /usr/lib/takt/current/bin/takt-agent --config $c/$kind.yaml --max-parts 20
        counts=$(as_takt "$r" takt store counts --data-dir $c/data-$kind)
        say "cpu: $kind camera, 20 parts in $((SECONDS - t0)) s: $counts"
        # Every part got a verdict from the model: NO_DECISION would mean a frame or an
        # inference failed; the 4 defective parts must not all pass.
        grep -qE '^parts=20 pass=[0-9]+ fail=([1-9]|1[0-9]|20) no_decision=0$' <<<"$counts" ||
            { echo "rootfs-check: want 20 verdicts, some FAIL, no NO_DECISION from the $kind camera" >&2; exit 1; }
        local jpgs
        jpgs=$(find "$r$c/data-$kind" -name '*.jpg' | wc -l)
        say "cpu: $kind camera: $jpgs part images kept as JPEG (imgcodecs, libjpeg)"
        [ "$jpgs" = 20 ] || { echo "rootfs-check: want 20 kept JPEG images" >&2; exit 1; }
    done
    rm -rf "${r:?}$c" # the image holds no parts; sizes are measured after this
}

cloud_checks() {
    local r=$WORK/runtime-cloud
    say "cloud: $(as_takt "$r" /usr/bin/takt-cloud help | sed -n 1,2p | xargs)"
}

# report ROOT: total size and its biggest parts.
report() {
    local r=$1 name
    name=$(basename "$r")
    say "$name: $(mb "$(size_kb "$r")") (du -sx, without /proc /sys /dev)"
    local p
    for p in opt/opencv/lib usr/lib/takt usr/bin/takt usr/bin/takt-cloud usr/lib/x86_64-linux-gnu usr/share var/lib/dpkg; do
        [ -e "$r/$p" ] && say "  $p: $(mb "$(du -sxk "$r/$p" | cut -f1)")"
    done
    say "  biggest Debian packages (Installed-Size):"
    chroot "$r" dpkg-query -Wf '${Installed-Size} ${Package}\n' | sort -rn | sed -n 1,10p |
        while read -r k p; do say "    $p $(mb "$k")"; done
    say "  biggest shared libraries:"
    # (one line per inode: Mesa's DRI drivers are hard links to one file; sed, not head, reads
    # to the end, so no SIGPIPE fails the pipeline)
    find "$r/usr/lib/x86_64-linux-gnu" "$r/opt" -name '*.so*' -type f -printf '%i %s %P\n' |
        sort -k1,1n -u | cut -d' ' -f2- | sort -rn | sed -n 1,10p | while read -r s f; do say "    $f $(( (s + 524288) / 1048576 )) MB"; done
}

main() {
    : >"$LOG"
    base
    say "base (debian:12-slim equivalent): $(mb "$(size_kb "$WORK/base")")"
    opencv_stage
    say "opencv prefix: $(mb "$(du -sxk "$WORK/opencv/opt/opencv/lib" | cut -f1)") in /opt/opencv/lib"
    check_package_list
    # Independent stages run side by side, as BuildKit and buildah run them.
    runtime_common &
    local common=$!
    runtime_without_ffmpeg >/dev/null 2>&1 &
    local noff=$!
    build_stage
    wait "$common" || { echo "rootfs-check: the runtime stage failed" >&2; exit 1; }
    COMMON_KB=$(size_kb "$WORK/runtime-common")
    cpu_runtime
    cpu_checks
    report "$WORK/runtime-cpu"
    cloud_runtime
    cloud_checks
    report "$WORK/runtime-cloud"
    debian_before
    report "$WORK/runtime-debian-opencv"
    local before
    before=$(size_kb "$WORK/runtime-debian-opencv")
    say "before (Debian's OpenCV packages): CPU image $(mb $((before + ADDED_CPU_KB))), cloud image $(mb $((before + ADDED_CLOUD_KB))) (the same binaries and ONNX Runtime added)"
    wait "$noff" || { echo "rootfs-check: the root without FFmpeg failed" >&2; exit 1; }
    local noff_kb
    noff_kb=$(size_kb "$WORK/runtime-no-ffmpeg")
    say "Debian's FFmpeg 5.1 libraries and their dependencies: $(mb $((COMMON_KB - $(du -sxk "$WORK/runtime-common/opt/opencv" | cut -f1) - noff_kb))) of the runtime packages (the same root without libavcodec59, libavformat59, libavutil57, libswscale6: $(mb "$noff_kb"))"
    say "now (slim OpenCV stage): CPU image $(mb "$(size_kb "$WORK/runtime-cpu")"), cloud image $(mb "$(size_kb "$WORK/runtime-cloud")")"
    say "ok"
}

# Sourced (bash -c '. rootfs-check.sh DIR; base'), it only defines the stages.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main; fi
