#!/usr/bin/env bash
# demo-cloud.sh operator|run|stop DIR [HTTP]: the cloud side of `make demo`.
#
# operator DIR HTTP: in the background while the agent runs, an "operator" watches the
#   agent's verdicts (GET http://HTTP/verdicts) and labels the mistakes it sees against the
#   synthetic run's ground truth (DIR/line/labels.csv), as a person at the operator page would:
#   false_accept for a defective part that PASSed, false_reject for a good part that FAILed
#   (at most 3). The agent uploads the labels to S3 as labels/ objects. Log: DIR/operator.log.
# run DIR: after the agent, with the demo's S3 and MQTT (TAKT_S3_*, TAKT_MQTT_BROKER in the
#   environment): writes DIR/cloud.yaml and a signing key, starts takt-cloud, which ingests
#   what the station uploaded; the operator labels trigger a training job (or, if the model
#   made no mistake, `takt-cloud train` asks for one); two experiments train in parallel, the
#   best is signed, registered in S3 and announced on model/available. Prints
#   "demo: cloud trained <name> <version> promoted=<bool>". Log: DIR/cloud.log.
# stop DIR: stops the operator and takt-cloud (pids in DIR/cloud/*.pid).
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 operator|run|stop DIR [HTTP]" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
state=$dir/cloud
model=demo-part

# shellcheck source=demo-lib.sh
. "$(dirname "$0")/demo-lib.sh"

operator() {
	local http=$1 last=0 labelled=0
	declare -A truth
	while IFS=, read -r _ file label _; do
		[ "$file" = file ] && continue
		truth[$(basename "$file" .png)]=$label
	done <"$dir/line/labels.csv"
	while [ "$labelled" -lt 3 ]; do
		local vs
		vs=$(curl -fsS "http://$http/verdicts?since=$last&limit=200" 2>/dev/null) || { sleep 0.5; continue; }
		while read -r id serial decision; do
			[ -n "$id" ] || continue
			last=$id
			local want=""
			case "$decision/${truth[$serial]:-}" in
			PASS/defective) want=false_accept ;;
			FAIL/good | NO_DECISION/good) want=false_reject ;;
			esac
			if [ -n "$want" ] && [ "$labelled" -lt 3 ]; then
				if curl -fsS -X POST -H 'Content-Type: application/json' -d "{\"label\":\"$want\"}" \
					"http://$http/verdicts/$id/label" >/dev/null; then
					labelled=$((labelled + 1))
					echo "operator: verdict $id (part $serial, $decision) labelled $want"
				fi
			fi
		done < <(jq -r '.[] | "\(.id) \(.serial) \(.decision)"' <<<"$vs")
		sleep 0.5
	done
	echo "operator: labelled $labelled parts; done"
}

api() { curl -fsS "http://$listen$1"; }

run() {
	[ -n "${TAKT_S3_ENDPOINT:-}" ] || { echo "demo-cloud: TAKT_S3_ENDPOINT is not set (source DIR/s3.env)" >&2; exit 1; }
	kill_pid "$state/operator.pid"
	rm -rf "$state/state"; mkdir -p "$state"
	[ -f "$state/signing.key" ] || "$root/bin/takt" model keygen --out "$state/signing.key" >/dev/null
	listen=
	for p in $(seq 17470 17570); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then listen=127.0.0.1:$p; break; fi
	done
	[ -n "$listen" ] || { echo "demo-cloud: no free port in 17470-17570" >&2; exit 1; }
	# The demo parts carry a serial number and a 2D code that change per part: the
	# experiments ignore that region (274,106,520,202 of 640x480, as fractions).
	cat >"$state/cloud.yaml" <<YAML
# takt-cloud for make demo (written by packaging/demo-cloud.sh)
state_dir: state
listen: $listen
signing_key: signing.key
s3:
  bucket: takt-demo
  path_style: true
ingest:
  interval: 2s
training:
  parallel: 2
  min_good: 5
models:
  - name: $model
    targets:
      - {site: site-1, line: line-1}
      - {site: site-1, line: line-1, station: demo-station}
    triggers:
      labels: 1
    experiments:
      - name: template
        trainer: builtin
        method: template
        options: {width: 256, ignore: [{x0: 0.428, y0: 0.221, x1: 0.813, y1: 0.421}]}
      - name: patchcore
        trainer: builtin
        method: patchcore
        options: {width: 96, position_weight: 128, bank_size: 1000, ignore: [{x0: 0.428, y0: 0.221, x1: 0.813, y1: 0.421}]}
YAML
	setsid "$root/bin/takt-cloud" run --config "$state/cloud.yaml" --log-format console >"$dir/cloud.log" 2>&1 &
	echo $! >"$state/takt-cloud.pid"
	for _ in $(seq 100); do
		api /healthz >/dev/null 2>&1 && break
		kill -0 "$(cat "$state/takt-cloud.pid")" 2>/dev/null || { echo "demo-cloud: takt-cloud exited:" >&2; tail -5 "$dir/cloud.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "demo-cloud: takt-cloud on http://$listen (log $dir/cloud.log); ingesting the station's uploads"
	local job="" m
	for _ in $(seq 30); do
		job=$(api /jobs | jq -r 'map(select(.model == "'$model'")) | last | .id // empty') || true
		[ -n "$job" ] && break
		sleep 1
	done
	m=$(api /models/$model)
	echo "demo-cloud: indexed $(jq -r '.dataset.verdicts' <<<"$m") verdicts, $(jq -r '.dataset.images' <<<"$m") images, $(jq -r '.dataset.labels' <<<"$m") operator labels"
	if [ -z "$job" ]; then
		echo "demo-cloud: no operator label arrived (the model made no mistake): training on demand"
		"$root/bin/takt-cloud" train --server "http://$listen" --model "$model" --reason "make demo" >/dev/null
		job=$(api /jobs | jq -r 'last | .id')
	else
		echo "demo-cloud: job $job started by trigger $(api /jobs/$job | jq -r '.job.trigger'): $(api /jobs/$job | jq -r '.job.reason')"
	fi
	local j state_
	for _ in $(seq 600); do
		j=$(api /jobs/$job)
		state_=$(jq -r '.job.state' <<<"$j")
		[ "$state_" = queued ] || [ "$state_" = running ] || break
		sleep 0.5
	done
	jq -r '.log' <<<"$j" | sed 's/^/  /'
	if [ "$state_" != succeeded ]; then
		echo "demo-cloud: job $job $state_: $(jq -r '.job.error' <<<"$j")" >&2
		exit 1
	fi
	local version promoted
	version=$(jq -r '.job.version' <<<"$j"); promoted=$(jq -r '.job.promoted' <<<"$j")
	if [ "$promoted" = true ]; then
		for _ in $(seq 50); do
			[ "$(api /models/$model | jq -r '.announce_pending')" = false ] && break
			sleep 0.2
		done
		echo "demo-cloud: s3://takt-demo/models/$model/$version/bundle.tar announced on takt/v1/site-1/line-1/model/available (retained)"
	fi
	# The station's own check of the registered bundle (versitygw's posix backend keeps the
	# object as a file): signature, file hashes, loads in ONNX Runtime, golden set replays.
	"$root/bin/takt" model verify --key "$state/signing.key.pub" "$dir/s3/takt-demo/models/$model/$version/bundle.tar" | sed 's/^/demo-cloud: /'
	echo "demo: cloud trained $model $version promoted=$promoted"
}

case $cmd in
operator)
	http=${3:?usage: $0 operator DIR HTTP}
	mkdir -p "$state"
	kill_pid "$state/operator.pid"
	(operator "$http") >"$dir/operator.log" 2>&1 &
	echo $! >"$state/operator.pid"
	;;
run) run ;;
stop)
	kill_pid "$state/operator.pid"
	kill_pid "$state/takt-cloud.pid"
	;;
*) echo "usage: $0 operator|run|stop DIR [HTTP]" >&2; exit 2 ;;
esac
