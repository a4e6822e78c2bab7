#!/usr/bin/env bash
# demo-s3.sh start|stop DIR: a local versitygw S3 server for `make demo`.
#
# start: picks a free loopback port, makes fresh root keys, serves DIR/s3 (posix backend,
# emptied first: the demo's verdict store starts over too, so its object keys would collide
# with the last run's), waits until it answers, and writes DIR/s3.env with TAKT_S3_ENDPOINT,
# TAKT_S3_ACCESS_KEY and TAKT_S3_SECRET_KEY (mode 600) for the agent. The keys reach
# versitygw through its environment, not its command line.
# stop: stops the server started for DIR (pid in DIR/s3.pid).
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
pidfile=$dir/s3.pid

stop() {
	if [ -f "$pidfile" ]; then
		pid=$(cat "$pidfile")
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -9 "$pid" 2>/dev/null || true
		fi
		rm -f "$pidfile"
	fi
}

case $cmd in
stop) stop ;;
start)
	stop
	bin=${TAKT_VERSITYGW:-$(command -v versitygw || true)}
	[ -n "$bin" ] || bin=$(cd "$(dirname "$0")/.." && pwd)/.deps/bin/versitygw
	[ -x "$bin" ] || { echo "demo-s3: versitygw not found; run packaging/install-deps.sh" >&2; exit 1; }
	mkdir -p "$dir"
	rm -rf "$dir/s3"; mkdir -p "$dir/s3"
	port=
	for p in $(seq 17070 17170); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
	done
	[ -n "$port" ] || { echo "demo-s3: no free port in 17070-17170" >&2; exit 1; }
	access=DEMO$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F | head -c 16)
	secret=$(head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 40)
	env -u VGW_PORT ROOT_ACCESS_KEY="$access" ROOT_SECRET_KEY="$secret" \
		setsid "$bin" --port "127.0.0.1:$port" --region us-east-1 posix "$dir/s3" >"$dir/s3.log" 2>&1 &
	echo $! >"$pidfile"
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
		kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "demo-s3: versitygw exited:" >&2; tail -5 "$dir/s3.log" >&2; exit 1; }
		sleep 0.1
	done
	umask 077
	printf 'TAKT_S3_ENDPOINT=http://127.0.0.1:%s\nTAKT_S3_ACCESS_KEY=%s\nTAKT_S3_SECRET_KEY=%s\n' "$port" "$access" "$secret" >"$dir/s3.env"
	echo "demo-s3: versitygw on 127.0.0.1:$port serving $dir/s3 (log $dir/s3.log)"
	;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
