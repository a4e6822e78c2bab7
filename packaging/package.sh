#!/usr/bin/env bash
# package.sh ARCH...: builds dist/takt_<version>_<arch>.deb with nfpm for each ARCH
# (amd64, arm64).
#
# The agent links OpenCV through cgo, so each architecture's binaries come from a build on
# that architecture (or a cross toolchain with that architecture's OpenCV):
#   - the host architecture is built here (go build, cgo);
#   - arm64 on an amd64 host is cross-built by packaging/cross-arm64.sh against a Debian 12
#     arm64 sysroot and checked under qemu;
#   - or TAKT_BIN_<arch>=DIR holding takt-agent and takt built on that architecture (e.g.
#     "make build" on the box, then copy bin/), with TAKT_ORT_<arch>=libonnxruntime.so.1.
# TAKT_VERSION defaults to agent.Version; TAKT_DIST (default dist) is the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
NFPM=${NFPM:-"$GO run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2"}
version=${TAKT_VERSION:-$(sed -n 's/^var Version = "\(.*\)"$/\1/p' agent/modelconfig.go)}
host=$($GO env GOARCH)
[[ $# -gt 0 ]] || set -- "$host"
dist=${TAKT_DIST:-dist}
mkdir -p "$dist"
for arch in "$@"; do
	case $arch in amd64|arm64) ;; *) echo "package: unsupported arch $arch (amd64, arm64)" >&2; exit 2 ;; esac
	binvar="TAKT_BIN_$arch" ortvar="TAKT_ORT_$arch"
	bin=${!binvar:-} ort=${!ortvar:-}
	if [[ -z $bin ]]; then
		bin=$dist/$arch/bin
		mkdir -p "$bin"
		if [[ $arch == "$host" ]]; then
			$GO build -trimpath -ldflags "-X github.com/takt-edge/takt/agent.Version=$version" -o "$bin/" ./agent/cmd/takt-agent ./agent/cmd/takt
		elif [[ $arch == arm64 && $host == amd64 ]]; then
			TAKT_LDFLAGS="-X github.com/takt-edge/takt/agent.Version=$version" packaging/cross-arm64.sh "$bin"
			ort=${ort:-$dist/$arch/lib/libonnxruntime.so.1}
		else
			echo "package: $arch: the agent needs cgo + OpenCV for $arch; build it on a $arch box (make build)" >&2
			echo "package: and set TAKT_BIN_$arch=<folder with takt-agent and takt> TAKT_ORT_$arch=<libonnxruntime.so.1>" >&2
			exit 3
		fi
	fi
	if [[ -z $ort ]]; then
		ort=${ONNXRUNTIME_LIB:-.deps/lib/libonnxruntime.so.1}
		[[ $arch == "$host" ]] || { echo "package: $arch: set TAKT_ORT_$arch" >&2; exit 3; }
	fi
	[[ -x $bin/takt-agent && -x $bin/takt && -f $ort ]] || { echo "package: $arch: missing $bin/takt-agent, $bin/takt or $ort" >&2; exit 3; }
	# Both architectures link Debian 12's OpenCV 4.6 (sonames *.406).
	deps=(libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 libopencv-videoio406
		libopencv-video406 libopencv-highgui406 libopencv-calib3d406 libopencv-features2d406
		libopencv-objdetect406 libopencv-dnn406 libopencv-photo406 passwd)
	cfg=$dist/nfpm-$arch.yaml
	{
		while IFS= read -r line; do
			if [[ $line == "# DEPENDS" ]]; then
				echo "depends:"
				for d in "${deps[@]}"; do echo "  - \"$d\""; done
			else
				line=${line//'${TAKT_BIN}'/$bin}
				line=${line//'${TAKT_ORT}'/$ort}
				line=${line//'${TAKT_ARCH}'/$arch}
				line=${line//'${TAKT_VERSION}'/$version}
				printf '%s\n' "$line"
			fi
		done <packaging/nfpm.yaml
	} >"$cfg"
	out=$dist/takt_${version}_${arch}.deb
	rm -f "$out"
	TAKT_VERSION=$version TAKT_ARCH=$arch TAKT_BIN=$bin TAKT_ORT=$ort $NFPM package --config "$cfg" --packager deb --target "$out"
	echo "package: $out"
done
