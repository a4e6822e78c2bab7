#!/usr/bin/env bash
# bench-check.sh FIGURES LOG: fails when LOG (the verbose output of the TestFigures* tests)
# shows a failed test or lacks a "BENCH name=value" line for a name listed in FIGURES.
set -euo pipefail
figures=${1:?usage: bench-check.sh FIGURES LOG}
log=${2:?usage: bench-check.sh FIGURES LOG}
status=0
if grep -E '^(--- FAIL|FAIL|panic:)' "$log" >/dev/null; then
	echo "bench: a figure test failed:" >&2
	grep -E '^(--- FAIL|FAIL|panic:)' "$log" >&2
	status=1
fi
missing=()
while read -r name; do
	case "$name" in '' | '#'*) continue ;; esac
	grep -qE "^BENCH ${name}=" "$log" || missing+=("$name")
done <"$figures"
if [ ${#missing[@]} -gt 0 ]; then
	echo "bench: ${#missing[@]} expected figure(s) not printed: ${missing[*]}" >&2
	status=1
fi
[ $status -eq 0 ] && echo "bench: all $(grep -cvE '^(#|$)' "$figures") expected figures printed"
exit $status
