#!/bin/bash
# libiscsi's conformance suite (iscsi-test-cu) against the daemon, in the LU configurations
# of tests/conformance/runs.sh: every test on a LU with 512-byte blocks ("main"), then the
# suites that depend on the physical block size or on removable media on a removable LU with
# 4096-byte physical blocks ("pbs4k"). Combined (a test passes if it passed in either run), every test in
# tests/conformance/expected-pass.txt passes, no test fails, and every test that skipped
# itself in both is in tests/conformance/skipped.txt (with its reason). A test in neither
# list fails this, so the lists only grow. Prints "conformance: N passed, M failed, K skipped".
#
# Each run is bounded (CU_TIMEOUT, default 480 s; the main run takes about 30 s, longer
# under the sanitizers, the second about 5 s); iscsi-test-cu is killed if it hangs and the
# daemon is stopped either way. The reports, parsed results and daemon logs are kept in
# $BUILD/conformance/RUN/ (or $CONFORMANCE_OUT/RUN/) for a look after a failure.
source "$(dirname "$0")/lib.sh"
CONF="$SRC/tests/conformance"
# shellcheck source=../conformance/runs.sh
source "$CONF/runs.sh"
KEEP=${CONFORMANCE_OUT:-${BUILD:+$BUILD/conformance}}

# run_cu NAME TESTS LUN_SIZE LUN_EXTRA: a daemon with a fresh LU, one iscsi-test-cu run into
# $TMP/NAME, the daemon stopped.
run_cu() {
	local name=$1 tests=$2 size=$3 extra=$4 rc=0
	rm -f "$TMP/lun0.img"
	LUN_SIZE=$size BLOCK_SIZE=512 LUN_EXTRA=$extra write_config
	start_daemon
	echo "conformance: run $name (-t $tests)"
	CU_TIMEOUT=${CU_TIMEOUT:-480} CU_TESTS=$tests "$CONF/run-cu.sh" -o "$TMP/$name" "$URL" ||
		rc=$?
	if [ -n "$KEEP" ]; then
		mkdir -p "$KEEP/$name" && cp "$TMP/$name"/cu.* "$DAEMON_LOG" "$KEEP/$name/" 2>/dev/null &&
			echo "conformance: $name report kept in $KEEP/$name"
	fi
	daemon_alive
	if [ "$rc" -ne 0 ]; then
		echo "--- iscsi-test-cu report of run $name (tail) ---" >&2
		tail -n 40 "$TMP/$name/cu.log" >&2 || true
		if [ -f "$TMP/$name/cu.json" ]; then
			python3 "$CONF/check-cu.py" "$TMP/$name/cu.json" "$CONF/expected-pass.txt" \
				"$CONF/skipped.txt" || true
		fi
		fail "iscsi-test-cu did not complete in run $name (run-cu.sh exit $rc)"
	fi
	stop_daemon
}

run_cu main "$CU_MAIN_TESTS" "$CU_MAIN_LUN_SIZE" "$CU_MAIN_LUN_EXTRA"
run_cu pbs4k "$CU_PBS4K_TESTS" "$CU_PBS4K_LUN_SIZE" "$CU_PBS4K_LUN_EXTRA"

python3 "$CONF/check-cu.py" "$TMP/main/cu.json" "$TMP/pbs4k/cu.json" \
	"$CONF/expected-pass.txt" "$CONF/skipped.txt" ||
	fail "conformance results differ from tests/conformance/expected-pass.txt and skipped.txt"
