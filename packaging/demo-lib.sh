# demo-lib.sh: shell helpers the make demo scripts share (sourced, not run).

# kill_pid PIDFILE: stops the process the file names (SIGTERM, then SIGKILL after 10 s) and
# removes the file.
kill_pid() {
	local pidfile=$1
	[ -f "$pidfile" ] || return 0
	local pid; pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}
