#!/usr/bin/env bash
# gpu-check.sh: what a station's GPU stack offers Takt, and whether the model runs on it.
#
# Reports the NVIDIA driver (nvidia-smi, /proc/driver/nvidia/version, Jetson's
# /etc/nv_tegra_release), the CUDA, cuDNN and TensorRT libraries the loader finds
# (ldconfig), and whether the ONNX Runtime library Takt loads has the GPU providers beside
# it. Then it trains the starter model on synthetic parts (or takes TAKT_GPU_CHECK_MODEL)
# and runs `takt gpu-check`: the agent's runtime and provider chain on the CPU, CUDA and
# TensorRT (building the engine into the cache), every GPU score checked against the CPU's,
# p50/p99 per provider at batch 1.
#
#   packaging/gpu-check.sh            (make gpu-check)
#
# Environment: ONNXRUNTIME_LIB (the library to load; default as the agent finds it),
# TAKT_BIN (a built takt; default: go build into the work folder), TAKT_GPU_CHECK_MODEL (an
# ONNX model instead of the starter model), TAKT_ENGINE_CACHE (default
# .deps/gpu-check/engines), TAKT_GPU_CHECK_RUNS (timed runs per provider, default 200),
# TAKT_GPU_CHECK_FP16=1 (TensorRT in half precision, tolerance 1e-2 instead of 1e-3).
#
# Exit status: 0 CUDA and TensorRT ran and matched the CPU; 1 a check failed; 3 no NVIDIA
# GPU on this machine (the CPU part ran); 4 a GPU, but the ONNX Runtime library or the
# CUDA/cuDNN/TensorRT libraries it needs are missing (the CPU part ran).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${TAKT_GPU_CHECK_DIR:-$root/.deps/gpu-check}
cache=${TAKT_ENGINE_CACHE:-$work/engines}
runs=${TAKT_GPU_CHECK_RUNS:-200}
mkdir -p "$work" "$cache"

say() { printf '%s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }

# --- GPU and driver -----------------------------------------------------------------------
section "GPU and driver ($(uname -m), $(uname -r))"
gpu=0
jetson=0
if command -v nvidia-smi >/dev/null 2>&1; then
	if smi=$(nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1); then
		say "nvidia-smi: $smi" | sed '2,$s/^/            /'
		gpu=1
	else
		say "nvidia-smi: present but lists no GPU: $smi"
	fi
else
	say "nvidia-smi: not installed"
fi
if [ -r /proc/driver/nvidia/version ]; then
	say "kernel driver: $(head -n1 /proc/driver/nvidia/version)"
	gpu=1
else
	say "kernel driver: /proc/driver/nvidia/version absent"
fi
if [ -r /etc/nv_tegra_release ]; then
	say "Jetson: $(head -n1 /etc/nv_tegra_release)"
	gpu=1
	jetson=1
fi

# --- CUDA, cuDNN, TensorRT ----------------------------------------------------------------
section "CUDA, cuDNN and TensorRT libraries (ldconfig)"
libs_missing=()
libfind() { # libfind NAME: the files the loader knows for NAME, resolved to their versions
	local paths
	paths=$(ldconfig -p 2>/dev/null | awk -v n="$1" 'index($1, n) == 1 && (length($1) == length(n) || substr($1, length(n) + 1, 1) == ".") {print $NF}' | sort -u)
	[ -n "$paths" ] || return 1
	local p
	for p in $paths; do readlink -f "$p"; done | sort -u | tr '\n' ' '
}
for lib in libcuda.so libcudart.so libcublas.so libcudnn.so libnvinfer.so libnvonnxparser.so; do
	if found=$(libfind "$lib"); then
		say "$(printf '%-20s' "$lib") $found"
	else
		say "$(printf '%-20s' "$lib") not found"
		libs_missing+=("$lib")
	fi
done
if command -v nvcc >/dev/null 2>&1; then
	say "nvcc: $(nvcc --version | tail -n1)"
elif [ -r /usr/local/cuda/version.json ]; then
	say "CUDA toolkit: $(grep -m1 -A1 '"cuda"' /usr/local/cuda/version.json | grep -o '"version"[^,]*' || true)"
fi

# --- ONNX Runtime --------------------------------------------------------------------------
section "ONNX Runtime"
ort=${ONNXRUNTIME_LIB:-}
if [ -z "$ort" ]; then
	for c in "$root/.deps/lib/libonnxruntime.so.1" /usr/lib/takt/lib/libonnxruntime.so.1 /usr/lib/libonnxruntime.so.1 /usr/local/lib/libonnxruntime.so.1; do
		[ -e "$c" ] && ort=$c && break
	done
fi
if [ -z "$ort" ] || [ ! -e "$ort" ]; then
	say "libonnxruntime.so.1: not found (set ONNXRUNTIME_LIB, or run make deps)" >&2
	exit 1
fi
export ONNXRUNTIME_LIB=$ort
ortdir=$(dirname "$(readlink -f "$ort")")
say "library: $ort ($(readlink -f "$ort"))"
providers=1
for p in shared cuda tensorrt; do
	f=$ortdir/libonnxruntime_providers_$p.so
	if [ -e "$f" ]; then
		unresolved=$(ldd "$f" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')
		say "$(printf '%-34s' "libonnxruntime_providers_$p.so") present${unresolved:+; cannot resolve: $unresolved}"
		[ -z "$unresolved" ] || providers=0
	else
		say "$(printf '%-34s' "libonnxruntime_providers_$p.so") absent: a CPU-only build"
		providers=0
	fi
done

# --- the model --------------------------------------------------------------------------------
section "Starter model"
takt=${TAKT_BIN:-}
if [ -z "$takt" ]; then
	takt=$work/takt
	(cd "$root" && go build -o "$takt" ./agent/cmd/takt)
fi
model=${TAKT_GPU_CHECK_MODEL:-}
frames=$work/line/line
if [ ! -d "$frames" ]; then
	"$takt" synth --out "$work/line" --layout line --good 12 --defective 4 --seed 7 --first 7001 >/dev/null
fi
if [ -z "$model" ]; then
	model=$work/starter.onnx
	if [ ! -s "$model" ]; then
		"$takt" synth --out "$work/train" --layout classes --good 30 --seed 1 --first 1001 >/dev/null
		"$takt" model train --data "$work/train" --out "$model" --name starter --version 1.0.0 \
			--ignore 274,106,520,202 --width 256
	fi
fi
say "model: $model; frames: $frames; engine cache: $cache"

# --- CPU, CUDA and TensorRT sessions ------------------------------------------------------------
section "Sessions (takt gpu-check)"
ready=0
if [ "$gpu" = 1 ] && [ "$providers" = 1 ] && [ ${#libs_missing[@]} -eq 0 ]; then
	ready=1
elif [ "$gpu" = 1 ] && [ "$jetson" = 1 ] && [ "$providers" = 1 ]; then
	ready=1 # JetPack's libraries live under /usr/lib/aarch64-linux-gnu, which ldconfig may not list for libcuda
fi
args=(--model "$model" --engine-cache "$cache" --runs "$runs")
[ "${TAKT_GPU_CHECK_FP16:-0}" = 1 ] && args+=(--fp16)
[ "$ready" = 1 ] && args+=(--require-gpu)
status=0
"$takt" gpu-check "${args[@]}" "$frames"/*.png || status=$?

section "Result"
if [ "$status" -ne 0 ]; then
	say "FAILED: see above (exit $status)"
	exit 1
fi
if [ "$gpu" = 0 ]; then
	say "NO NVIDIA GPU on this machine: no driver (nvidia-smi, /proc/driver/nvidia/version, /etc/nv_tegra_release); the CPU session ran, CUDA and TensorRT were not checked."
	exit 3
fi
if [ "$ready" = 0 ]; then
	say "A GPU, but not usable by Takt yet:${libs_missing[*]:+ missing ${libs_missing[*]};}$([ "$providers" = 1 ] || printf ' %s has no usable GPU providers beside it' "$ort"). See packaging/README.md#gpu-check."
	exit 4
fi
say "OK: CUDA and TensorRT sessions ran and matched the CPU's scores; the TensorRT engine is cached in $cache."
