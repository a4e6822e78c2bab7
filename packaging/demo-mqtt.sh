#!/usr/bin/env bash
# demo-mqtt.sh start|stop DIR: a local Mosquitto broker and an operator console for `make demo`.
#
# start: picks a free loopback port, starts mosquitto with its config and persistence in
# DIR/mqtt (emptied first), waits until it listens, writes DIR/mqtt.env with
# TAKT_MQTT_BROKER for the agent, and starts `bin/takt alerts` on it in the background,
# writing to DIR/alerts.log.
# stop: waits until the console has been quiet for a moment, stops it and the broker
# (pids in DIR/mqtt/*.pid) and prints how many alerts arrived and the first few.
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
state=$dir/mqtt

# shellcheck source=demo-lib.sh
. "$(dirname "$0")/demo-lib.sh"

stop() {
	if [ -f "$state/console.pid" ] && [ -f "$dir/alerts.log" ]; then
		# Let the last alerts arrive: wait until the log stops growing (at most 5 s).
		prev=-1
		for _ in $(seq 10); do
			size=$(stat -c %s "$dir/alerts.log")
			[ "$size" = "$prev" ] && break
			prev=$size; sleep 0.5
		done
	fi
	kill_pid "$state/console.pid"
	kill_pid "$state/broker.pid"
}

case $cmd in
stop)
	stop
	if [ -f "$dir/alerts.log" ]; then
		n=$(grep -cv 'STATUS' "$dir/alerts.log" || true)
		echo "demo-mqtt: $n alerts arrived at 'takt alerts' (de-duplicated by id); the first ones:"
		head -8 "$dir/alerts.log" | cut -c1-160 | sed 's/^/  /'
	fi
	;;
start)
	stop
	bin=${TAKT_MOSQUITTO:-$(command -v mosquitto || true)}
	[ -n "$bin" ] || bin=/usr/sbin/mosquitto
	[ -x "$bin" ] || { echo "demo-mqtt: mosquitto not found; run packaging/install-deps.sh" >&2; exit 1; }
	rm -rf "$state"; mkdir -p "$state"
	port=
	for p in $(seq 17270 17370); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
	done
	[ -n "$port" ] || { echo "demo-mqtt: no free port in 17270-17370" >&2; exit 1; }
	{
		echo "listener $port 127.0.0.1"
		echo "allow_anonymous true"
		echo "persistence true"
		echo "persistence_location $(cd "$state" && pwd)/"
		echo "log_dest stderr"
		[ "$(id -u)" = 0 ] && echo "user root"
	} >"$state/mosquitto.conf"
	setsid "$bin" -c "$state/mosquitto.conf" >"$state/mosquitto.log" 2>&1 &
	echo $! >"$state/broker.pid"
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
		kill -0 "$(cat "$state/broker.pid")" 2>/dev/null || { echo "demo-mqtt: mosquitto exited:" >&2; tail -5 "$state/mosquitto.log" >&2; exit 1; }
		sleep 0.1
	done
	printf 'TAKT_MQTT_BROKER=tcp://127.0.0.1:%s\n' "$port" >"$dir/mqtt.env"
	setsid "$root/bin/takt" alerts --broker "tcp://127.0.0.1:$port" >"$dir/alerts.log" 2>"$state/console.log" &
	echo $! >"$state/console.pid"
	echo "demo-mqtt: mosquitto on 127.0.0.1:$port; 'takt alerts' writes $dir/alerts.log"
	;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
