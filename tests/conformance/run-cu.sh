#!/bin/bash
# Run libiscsi's conformance suite (iscsi-test-cu) against one iSCSI URL and parse the result.
#
#   tests/conformance/run-cu.sh [-o OUTDIR] URL
#
# Writes into OUTDIR (default: a new directory under /tmp, printed at the end):
#   cu.log    iscsi-test-cu's stdout (the CUnit verbose report that is parsed)
#   cu.err    its stderr
#   cu.list   `iscsi-test-cu -l`, to notice tests that never ran
#   cu.json   per-test results from parse-cu.py (pass / skip / fail, with reasons)
#   cu.cmd    the exact command line
#   cu.rc     iscsi-test-cu's exit status and the run time in seconds
# and prints parse-cu.py's summary line. Exit status: 0 when the run completed and parsed
# consistently (whatever the test results; judging them is the caller's job), 1 when
# iscsi-test-cu timed out, crashed or its report could not be parsed, 2 on usage errors.
#
# Environment:
#   CU_TIMEOUT=300     seconds before iscsi-test-cu is stopped (TERM, then KILL 10 s later);
#                      a normal run takes about 30 s
#   CU_TESTS=ALL       -t pattern, FAMILY[.SUITE[.TEST]]. Always give one: without -t,
#                      Debian's iscsi-test-cu 1.19.0-3 runs every test twice (families ALL
#                      and SCSI/iSCSI) and can hang in Sanitize.BlockEraseReserved.
#   CU_INI1, CU_INI2   initiator names (-i, -I); defaults below
#   CU_URL2            second URL for the MultipathIO suite (default: URL again, i.e. two
#                      sessions to the same LU); CU_URL2=none runs with one URL only
#   CU_EXTRA           extra iscsi-test-cu options, e.g. -V for SCSI-level logging
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=""
while getopts "o:h" opt; do
	case $opt in
	o) OUT=$OPTARG ;;
	*)
		sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || {
	echo "usage: $0 [-o OUTDIR] URL" >&2
	exit 2
}
URL=$1
case "$URL" in
iscsi://*) ;;
*)
	echo "run-cu: not an iscsi:// URL: $URL" >&2
	exit 2
	;;
esac
command -v iscsi-test-cu >/dev/null || {
	echo "run-cu: iscsi-test-cu not found (Debian package libiscsi-bin)" >&2
	exit 1
}

[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/isergw-cu.XXXXXX)
mkdir -p "$OUT"
TIMEOUT=${CU_TIMEOUT:-300}
TESTS=${CU_TESTS:-ALL}
INI1=${CU_INI1:-iqn.2026-11.io.isergw:ini1}
INI2=${CU_INI2:-iqn.2026-11.io.isergw:ini2}
URL2=${CU_URL2:-$URL}

urls=("$URL")
[ "$URL2" = none ] || urls+=("$URL2")
# shellcheck disable=SC2206
extra=(${CU_EXTRA:-})
cmd=(iscsi-test-cu -d -S -i "$INI1" -I "$INI2" -v "${extra[@]}" -t "$TESTS" "${urls[@]}")
printf '%q ' "${cmd[@]}" >"$OUT/cu.cmd"
echo >>"$OUT/cu.cmd"

iscsi-test-cu -l >"$OUT/cu.list" 2>/dev/null || true

# stdbuf -o0: an unbuffered report, so that a run stopped by the timeout still shows the test
# it was in. timeout -k: TERM first, KILL if it does not go.
rc=0
start=$(date +%s)
timeout -k 10 "$TIMEOUT" stdbuf -o0 -e0 "${cmd[@]}" >"$OUT/cu.log" 2>"$OUT/cu.err" </dev/null || rc=$?
end=$(date +%s)
echo "$rc $((end - start))" >"$OUT/cu.rc"

status=0
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	echo "run-cu: iscsi-test-cu did not finish within ${TIMEOUT}s (exit $rc)" >&2
	status=1
elif ! grep -q '^Run Summary:' "$OUT/cu.log"; then
	# 255: iscsi-test-cu's set-up failed (login, READ CAPACITY, INQUIRY...) before any test
	if [ "$rc" -gt 128 ] && [ "$rc" -lt 255 ]; then
		echo "run-cu: iscsi-test-cu died with signal $((rc - 128))" >&2
	else
		echo "run-cu: iscsi-test-cu exited $rc without completing the tests:" >&2
	fi
	tail -n 5 "$OUT/cu.log" "$OUT/cu.err" >&2
	status=1
elif [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
	echo "run-cu: iscsi-test-cu exited $rc after its summary" >&2
	status=1
fi

list_arg=()
[ -s "$OUT/cu.list" ] && list_arg=(--list "$OUT/cu.list" --pattern "$TESTS")
if ! python3 "$HERE/parse-cu.py" "${list_arg[@]}" --json "$OUT/cu.json" "$OUT/cu.log"; then
	echo "run-cu: the report in $OUT/cu.log is incomplete or inconsistent" >&2
	status=1
fi
echo "run-cu: $((end - start)) s, results in $OUT"
exit $status
