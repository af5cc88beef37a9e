#!/bin/bash
# A hostile initiator (tests/integration/iscsi_raw.py, stdlib Python) sends malformed and
# out-of-protocol PDUs: garbage headers, unknown opcodes, reserved fields, bad logins, wrong
# digests, CmdSN outside the window, oversized data segments, Data-Outs that do not match
# their R2T, SNACK at ERL 0, malformed Text, truncated PDUs and abrupt closes. Each case
# checks the answer RFC 7143 asks for, a daemon log line naming the reason, that the daemon
# and a concurrently open healthy session keep working, and (at the end, after the daemon
# has stopped and flushed) that the LUN holds exactly the writes the target acknowledged.
# BAD_INPUT_ONLY=case1,case2 runs a subset.
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)

write_config
start_daemon

passed=0
failed=0
set +e
python3 "$HERE/bad_input_cases.py" --host 127.0.0.1 --port "$PORT" --target "$IQN" \
	--initiator "$INI1" --initiator2 "$INI2" --log "$DAEMON_LOG" --pid "$DAEMON_PID" \
	--status "$TMP/isergw.sock" --ref "$TMP/acked.jsonl" ${BAD_INPUT_ONLY:+--only "$BAD_INPUT_ONLY"} \
	2>&1 | tee "$TMP/cases.out"
set -e
result=$(grep -E '^RESULT passed=[0-9]+ failed=[0-9]+$' "$TMP/cases.out" | tail -1 || true)
if [ -n "$result" ]; then
	passed=$(sed -E 's/^RESULT passed=([0-9]+) failed=([0-9]+)$/\1/' <<<"$result")
	failed=$(sed -E 's/^RESULT passed=([0-9]+) failed=([0-9]+)$/\2/' <<<"$result")
else
	echo "FAIL cases -- the case runner did not finish"
	failed=$((failed + 1))
fi

# Stop the daemon (it flushes), counting a bad exit or a sanitizer report as a failure
# instead of leaving at once: the LUN is still compared.
stop_problem=""
fail() {
	echo "FAIL: $*" >&2
	stop_problem="$*"
	return 1
}
if stop_daemon && [ -z "$stop_problem" ]; then
	echo "PASS daemon-stop -- clean exit, no sanitizer report"
	passed=$((passed + 1))
else
	echo "FAIL daemon-stop -- ${stop_problem:-stop_daemon failed}"
	failed=$((failed + 1))
fi
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

if [ -f "$TMP/acked.jsonl" ] && python3 "$HERE/bad_input_cases.py" --verify \
	--lun "$TMP/lun0.img" --ref "$TMP/acked.jsonl"; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
fi

if [ "$failed" -ne 0 ]; then
	echo "--- daemon log: warnings and errors ---"
	grep -E " (WARN|ERROR) " "$DAEMON_LOG" | tail -150 || true
fi
# lib.sh's exit trap would print the log tail after the summary line: it has been shown.
DAEMON_LOG="$TMP/log-already-shown"
echo "bad-input: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
