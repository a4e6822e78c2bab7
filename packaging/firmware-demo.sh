#!/usr/bin/env bash
# firmware-demo.sh DIR: an agent update with an automatic rollback, with the real
# "takt firmware" CLI and its process supervisor on a loopback port. The agent is the
# firmware tests' stand-in (firmware/testdata/testagent: serves /readyz as its release's
# config says), so the demo needs no camera or model; on a station the supervisor is systemd
# and the agent is takt-agent. Releases 1.1.x read station config version 2, which renames
# "position" (1.0.0's key) to "line_position": the updater migrates the station config with
# the new agent before the switch and restores 1.0.0's on the rollback.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
dir=${1:-demo/firmware}
rm -rf "$dir" && mkdir -p "$dir/build"
$GO build -o "$dir/build/takt" ./agent/cmd/takt
CGO_ENABLED=0 $GO build -o "$dir/build/takt-agent" ./firmware/testdata/testagent
takt=$dir/build/takt
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export TAKT_TEST_LISTEN=127.0.0.1:$port
root=$dir/root
mkdir -p "$root"
export TAKT_TEST_CONFIG=$dir/agent.yaml # the station config the operator edits
printf 'station: st-1\nposition: 4\n' >"$TAKT_TEST_CONFIG"
inst=(--key "$dir/release.key.pub" --root "$root" --supervisor process --config "$TAKT_TEST_CONFIG"
	--health-url "http://$TAKT_TEST_LISTEN/readyz" --health-timeout 3s)
trap '[[ -f $root/agent.pid ]] && kill "$(cat "$root/agent.pid")" 2>/dev/null || true' EXIT

"$takt" model keygen --out "$dir/release.key"
release() { # version ready config_version [flags]
	printf 'version: %s\nready: %s\nconfig_version: %s\n' "$1" "$2" "$3" >"$dir/build/agent-$1.yaml"
	"$takt" firmware pack --binary "$dir/build/takt-agent" --config "$dir/build/agent-$1.yaml" \
		--version "$1" --config-version "$3" --key "$dir/release.key" "${@:4}" "$dir/release-$1.tar"
}
config() { echo "station config: $(tr '\n' ' ' <"$TAKT_TEST_CONFIG")"; }
step() { echo; echo "=== $*"; }

step "install 1.0.0"
release 1.0.0 true 1
"$takt" firmware install "${inst[@]}" "$dir/release-1.0.0.tar"
config
step "update to 1.1.0 (migrates the station config), whose agent never becomes ready: automatic rollback"
release 1.1.0 false 2
"$takt" firmware install "${inst[@]}" "$dir/release-1.1.0.tar" && { echo "demo: 1.1.0 should have rolled back"; exit 1; }
echo "running: $(curl -fsS "http://$TAKT_TEST_LISTEN/version")"
config
step "downgrade to 0.9.0, not signed as a rollback: refused"
release 0.9.0 true 1
"$takt" firmware install "${inst[@]}" "$dir/release-0.9.0.tar" && { echo "demo: 0.9.0 should be refused"; exit 1; }
step "update to 1.1.1: station config migrated, committed"
release 1.1.1 true 2
"$takt" firmware install "${inst[@]}" "$dir/release-1.1.1.tar"
echo "running: $(curl -fsS "http://$TAKT_TEST_LISTEN/version")"
config
step "status"
"$takt" firmware status --root "$root"
