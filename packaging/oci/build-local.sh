#!/bin/sh
# build-local.sh: builds the CPU agent image and the cloud companion image with podman from
# packaging/oci/Containerfile.{cpu,cloud}, runs them, and prints their sizes.
#
# Where the base images cannot be pulled (no registry access), it first makes stand-ins under
# the same names from Debian's own packages, so the Containerfiles build unchanged:
#   docker.io/library/debian:12.12-slim     slim-root.sh: debootstrap --variant=minbase
#                                           bookworm with the slim image's trimming and sources
#   docker.io/library/golang:1.26.8-bookworm  that + gcc, g++, make, pkg-config, git, curl and
#                                           this machine's Go toolchain in /usr/local/go
# (both with this machine's local CA certificates). They are labelled takt.stand-in=true.
# Sizes measured on stand-ins are close to, not equal to, the registry images'.
#
# Then, in the built images: takt-agent version, a real inspection (takt synth renders parts
# and a video, takt model train trains, the agent inspects the video through OpenCV's FFmpeg
# reader and ONNX Runtime; its verdicts must be the rendered ones, part by part); in the cloud
# image, takt-cloud checks the Kubernetes ConfigMap's cloud.yaml. In both, ldd finds every
# library. Needs root, podman, debootstrap, network to a Debian mirror and npm.
#
#   sudo packaging/oci/build-local.sh [cpu] [cloud]
set -eu

cd "$(dirname "$0")/../.."
images=${*:-cpu cloud}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=${TAKT_OCI_WORK:-/var/tmp/takt-oci}
slim=docker.io/library/debian:12.12-slim
golang=docker.io/library/golang:1.26.8-bookworm

say() { echo "build-local: $*"; }
fail() { echo "build-local: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap and rootful podman)"
command -v podman >/dev/null || fail "podman is not installed (apt-get install podman)"
mkdir -p "$work"

# On a cgroup v1/hybrid host crun refuses to run ("cgroups in hybrid mode not supported") and
# some sandboxes refuse podman's default rlimits: use runc and the host's own limits there.
if [ ! -e /sys/fs/cgroup/cgroup.controllers ]; then
	command -v runc >/dev/null || fail "cgroup v1 host: install runc (apt-get install runc)"
	cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -n):$(ulimit -n)", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
	export CONTAINERS_CONF="$work/containers.conf"
fi

have_image() { podman image exists "$1"; }

stand_in_slim() {
	have_image "$slim" && return 0
	podman pull -q "$slim" >/dev/null 2>&1 && return 0
	say "no registry: making a stand-in for $slim with debootstrap"
	root="$work/slim-root"
	rm -rf "$root"
	packaging/oci/slim-root.sh "$root" "$mirror"
	# This machine's own CAs (e.g. an egress proxy's), so the builds' TLS downloads (Go
	# modules, npm) verify here; ca-certificates takes them in when a stage installs it.
	mkdir -p "$root/usr/local/share/ca-certificates"
	cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
	tar -C "$root" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . |
		podman import -q --change 'CMD ["bash"]' --change 'LABEL takt.stand-in=true' - "$slim" >/dev/null
	rm -rf "$root"
}

stand_in_golang() {
	have_image "$golang" && return 0
	podman pull -q "$golang" >/dev/null 2>&1 && return 0
	goroot=$(go env GOROOT 2>/dev/null) || fail "no Go toolchain on this machine to put in the stand-in"
	case "$(go version)" in *go1.26.8*) ;; *) fail "the stand-in for $golang needs Go 1.26.8 here, found: $(go version)" ;; esac
	say "no registry: making a stand-in for $golang from $slim and $goroot"
	ctx="$work/golang-ctx"
	rm -rf "$ctx" && mkdir -p "$ctx"
	cp -a "$goroot" "$ctx/go"
	cat >"$ctx/Containerfile" <<EOF
FROM $slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl git gcc g++ libc6-dev make pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY go /usr/local/go
ENV GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL takt.stand-in=true
WORKDIR /go
EOF
	podman build -q --pull=never -t "$golang" "$ctx" >/dev/null || fail "building the $golang stand-in"
	rm -rf "$ctx"
}

stand_in_slim
stand_in_golang

size_mb() { echo $(($(podman image inspect --format '{{.Size}}' "$1") / 1000000)); }

# A real inspection in the agent image: the same check as packaging/deb/install-check.sh.
check_agent() {
	image=$1
	check_libs "$image" /usr/lib/takt/current/bin/takt-agent /usr/bin/takt
	podman run --rm --entrypoint /usr/lib/takt/current/bin/takt-agent "$image" version
	# The image listens on all interfaces, which needs a token and TLS; the check uses loopback.
	podman run --rm --network=none -e TAKT_HTTP_LISTEN=127.0.0.1:8080 --entrypoint sh "$image" -eu -c '
		cd "$(mktemp -d)"
		takt synth -good 8 -defective 4 -width 320 -height 240 -out train >synth.log
		takt synth -layout line -first 1001 -good 7 -defective 3 -width 320 -height 240 -video -out line >/dev/null
		ignore=$(sed -n "s/.*--ignore \([0-9,]*\).*/\1/p" synth.log | head -1)
		takt model train --data train --ignore "$ignore" --out model.onnx 2>&1 | tail -1
		printf "station: image-check\ndata_dir: %s/data\ncamera: {id: top, kind: file, path: %s/line/line.avi, fps: 2}\nmodel: {path: %s/model.onnx}\ndeadline: 30s\nlog: {level: warn}\n" "$PWD" "$PWD" "$PWD" >run.yaml
		/usr/lib/takt/current/bin/takt-agent --config run.yaml >agent.log 2>&1 || { cat agent.log; exit 1; }
		data=${TAKT_DATA_DIR:-$PWD/data} # the image sets TAKT_DATA_DIR, which wins over data_dir
		takt store counts --data-dir "$data"
		takt store list --data-dir "$data" | sed -n "s/.*\"decision\":\"\([A-Z_]*\)\".*/\1/p" >decided
		sed -n "s/^[0-9]*,[^,]*,good,.*/PASS/p; s/^[0-9]*,[^,]*,defective,.*/FAIL/p" line/labels.csv >expected
		cmp -s decided expected || { echo "verdicts differ from the rendered parts:"; paste decided expected; exit 1; }
	' || fail "the inspection in $image failed"
}

# Every shared library of the binaries and of ONNX Runtime resolves in the image.
check_libs() {
	image=$1
	shift
	missing=$(podman run --rm --network=none --entrypoint sh "$image" -c \
		"ldd $* /usr/lib/takt/lib/libonnxruntime.so.1 | grep 'not found' || true")
	[ -z "$missing" ] || fail "$image lacks libraries: $missing"
}

# The cloud image validates the shipped Kubernetes ConfigMap's cloud.yaml.
check_cloud() {
	image=$1
	check_libs "$image" /usr/bin/takt-cloud
	sed -n '/^  cloud.yaml: |/,$p' packaging/k8s/config.yaml | sed '1d; s/^    //' >"$work/cloud.yaml"
	# The Secret's values, as the Deployment passes them.
	podman run --rm --network=none -v "$work/cloud.yaml:/etc/takt-cloud/cloud.yaml:ro" \
		-e TAKT_CLOUD_API_TOKEN=check -e TAKT_S3_ENDPOINT=http://s3.invalid:9000 \
		-e TAKT_S3_ACCESS_KEY=check -e TAKT_S3_SECRET_KEY=check "$image" \
		check --config /etc/takt-cloud/cloud.yaml || fail "takt-cloud check in $image"
}

for image in $images; do
	case "$image" in
	cpu) tag=localhost/takt-agent:cpu-local file=packaging/oci/Containerfile.cpu args="" ;;
	cloud) tag=localhost/takt-cloud:local file=packaging/oci/Containerfile.cloud args="--build-arg KUBECTL_VERSION=none" ;;
	*) fail "unknown image $image (cpu, cloud)" ;;
	esac
	say "podman build -f $file -t $tag"
	start=$(date +%s)
	# shellcheck disable=SC2086 # args is a list of flags
	podman build --pull=never $args -f "$file" -t "$tag" . >"$work/build-$image.log" 2>&1 ||
		{ tail -20 "$work/build-$image.log"; fail "podman build of $file, log: $work/build-$image.log"; }
	say "built $tag in $(($(date +%s) - start)) s"
	case "$image" in
	cpu) check_agent "$tag" ;;
	cloud) check_cloud "$tag" ;;
	esac
	say "$tag: $(size_mb "$tag") MB (base $slim: $(size_mb "$slim") MB)"
	podman history --format '{{.Size}}\t{{printf "%.90s" .CreatedBy}}' "$tag" | head -12
done
