#!/usr/bin/env bash
# demo-update.sh DIR HTTP: the station half of make demo's model update. The agent runs again
# with model_update on: it hears the bundle takt-cloud announced (retained), downloads,
# verifies, validates, shadows and promotes it; then a planted bundle signed by a key the
# station does not trust is offered and rejected. Needs DIR/s3.env and DIR/mqtt.env sourced.
set -euo pipefail
dir=${1:?usage: $0 DIR HTTP}; http=${2:?usage: $0 DIR HTTP}
root=$(cd "$(dirname "$0")/.." && pwd)
state=$dir/data/models/state.json
parts=${DEMO_UPDATE_PARTS:-3000}
# shellcheck source=demo-lib.sh
. "$(dirname "$0")/demo-lib.sh"

last() { jq -r "$1" "$state" 2>/dev/null || true; }

# wait_state VERSION STATE...: until the update of VERSION reaches one of the states (120 s).
wait_state() {
	local version=$1; shift
	for _ in $(seq 600); do
		if [ "$(last .last.version)" = "$version" ]; then
			for s in "$@"; do [ "$(last .last.state)" = "$s" ] && return 0; done
		fi
		kill -0 "$(cat "$dir/update-agent.pid")" 2>/dev/null || { echo "demo-update: the agent stopped:" >&2; tail -5 "$dir/update-agent.log" >&2; return 1; }
		sleep 0.2
	done
	echo "demo-update: $version did not reach $* in 120 s (last: $(last .last))" >&2
	return 1
}

announced=$(cd "$dir/s3/takt-demo/models/demo-part" 2>/dev/null && ls -d -- */ | tr -d / | sort -V | tail -1)
[ -n "$announced" ] || { echo "demo-update: takt-cloud registered no bundle" >&2; exit 1; }
echo "demo-update: the station runs again with model_update on; takt-cloud announced demo-part $announced"
TAKT_HTTP_LISTEN=$http "$root/bin/takt-agent" --config "$dir/agent.yaml" --max-parts "$parts" >"$dir/update-agent.log" 2>&1 &
echo $! >"$dir/update-agent.pid"
trap 'kill_pid "$dir/update-agent.pid"' EXIT
wait_state "$announced" active rejected rolled-back
outcome=$(last .last.state)
echo "demo-update: demo-part $announced: $outcome $(last .last.reason)"
if [ "$outcome" = active ]; then
	# After the swap the station watches the new model against the previous one's figures.
	for _ in $(seq 600); do
		[ "$(last .last.state)" = rolled-back ] && break
		[ -z "$(last '.models["demo-part"].watch // empty')" ] && break
		sleep 0.2
	done
	if [ "$(last .last.state)" = rolled-back ]; then
		outcome="promoted, then rolled back by the watch"
		echo "demo-update: demo-part $announced: rolled-back $(last .last.reason)"
	else
		outcome="promoted, watch passed"
		echo "demo-update: demo-part $announced: watch passed"
	fi
fi
# A candidate the shadow policy refuses is the update path working too: the station keeps
# its model and says why.

# A planted bundle: a newer version, signed by a key the station does not trust.
"$root/bin/takt" model keygen --out "$dir/planted.key" >/dev/null 2>&1 || true
"$root/bin/takt" model train --data "$dir/train" --out "$dir/planted.tar" --name demo-part --version 9.9.9 \
	--method template --key "$dir/planted.key" >/dev/null 2>&1
before=$(last .last.time)
TAKT_HTTP_LISTEN=$http "$root/bin/takt-agent" model install --config "$dir/agent.yaml" "$dir/planted.tar" | sed 's/^/demo-update: /'
# A bundle refused at its signature has no trusted manifest to name it: wait for the next outcome.
for _ in $(seq 600); do
	[ "$(last .last.time)" != "$before" ] && [ "$(last .last.state)" != downloading ] && [ "$(last .last.state)" != validating ] && break
	sleep 0.2
done
echo "demo-update: planted demo-part 9.9.9: $(last .last.state) $(last .last.reason)"
[ "$(last .last.state)" = rejected ] || exit 1
serving=$(last '.models["demo-part"].active.version // empty')
echo "demo: station update demo-part $announced: $outcome; planted 9.9.9 rejected; serving ${serving:-1.0.0 (the configured model)}"
