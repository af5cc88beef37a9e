#!/bin/bash
# libiscsi's conformance suite (iscsi-test-cu -t ALL) against the daemon: every test in
# tests/conformance/expected-pass.txt passes, no test fails, and every test that skips itself
# is in tests/conformance/skipped.txt (with its reason). A test in neither list fails this, so
# the lists only grow. Prints "conformance: N passed, M failed, K skipped".
#
# The run is bounded (CU_TIMEOUT, default 480 s; a normal run takes about 30 s, longer under
# the sanitizers); iscsi-test-cu is killed if it hangs and the daemon is stopped either way.
# The report, parsed results and daemon log are kept in $BUILD/conformance/ (or
# $CONFORMANCE_OUT) for a look after a failure.
source "$(dirname "$0")/lib.sh"
CONF="$SRC/tests/conformance"

# The lists were measured on a 1 GiB LUN with 512-byte blocks, as docs/conformance.md.
LUN_SIZE=${LUN_SIZE:-1G} write_config
start_daemon

OUT="$TMP/cu"
rc=0
CU_TIMEOUT=${CU_TIMEOUT:-480} "$CONF/run-cu.sh" -o "$OUT" "$URL" || rc=$?

KEEP=${CONFORMANCE_OUT:-${BUILD:+$BUILD/conformance}}
if [ -n "$KEEP" ]; then
	mkdir -p "$KEEP" && cp "$OUT"/cu.* "$DAEMON_LOG" "$KEEP/" 2>/dev/null &&
		echo "conformance: report kept in $KEEP"
fi

daemon_alive
if [ "$rc" -ne 0 ]; then
	echo "--- iscsi-test-cu report (tail) ---" >&2
	tail -n 40 "$OUT/cu.log" >&2 || true
	if [ -f "$OUT/cu.json" ]; then
		python3 "$CONF/check-cu.py" "$OUT/cu.json" "$CONF/expected-pass.txt" \
			"$CONF/skipped.txt" || true
	fi
	fail "iscsi-test-cu did not complete (run-cu.sh exit $rc)"
fi

stop_daemon
python3 "$CONF/check-cu.py" "$OUT/cu.json" "$CONF/expected-pass.txt" "$CONF/skipped.txt" ||
	fail "conformance results differ from tests/conformance/expected-pass.txt and skipped.txt"
