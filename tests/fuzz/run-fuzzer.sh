#!/bin/bash
# run-fuzzer.sh FUZZER SEED_DIR SECONDS: a bounded libFuzzer run from a copy of the seeds
# (the committed corpus is never written). ISERGW_LONG=1 multiplies the time by 30.
set -euo pipefail
fuzzer=$1 seeds=$2 secs=$3
[ "${ISERGW_LONG:-0}" = 1 ] && secs=$((secs * 30))
work=$(mktemp -d /tmp/isergw-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$seeds"/. "$work"/ 2>/dev/null || true
"$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
	-artifact_prefix="$work/" "$work" 2>&1 | tail -25
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
	for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-*; do
		[ -e "$f" ] && { echo "artifact: $f"; xxd "$f" | head -20; }
	done
	exit "$rc"
fi
echo "fuzz: 1 passed, 0 failed"
