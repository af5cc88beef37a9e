#!/bin/bash
# NOP-In keepalive and the dead-initiator timeout (nop_interval = 1 s, nop_timeout = 2 s):
# a session that stays silent after login gets a well-formed NOP-In ping, then is dropped
# nop_timeout later with a log line and stats.nop_timeouts counting it; a second session that
# answers its pings keeps working (nop_keepalive.py). About 8 s.
source "$(dirname "$0")/lib.sh"
NOP_INTERVAL=1 NOP_TIMEOUT=2 write_config
start_daemon
cd "$SRC/tests/integration" || fail "no $SRC/tests/integration"
python3 -B nop_keepalive.py --port "$PORT" --target "$IQN" --initiator "$INI1" \
	--initiator2 "$INI2" --interval 1 --timeout 2 --status-socket "$TMP/isergw.sock" \
	>"$TMP/nop.out" 2>&1 || {
	cat "$TMP/nop.out" >&2
	fail "NOP-In keepalive"
}
cat "$TMP/nop.out"
silent=$(sed -n 's/^silent \([0-9.:]*\)$/\1/p' "$TMP/nop.out")
alive=$(sed -n 's/^alive \([0-9.:]*\)$/\1/p' "$TMP/nop.out")
[ -n "$silent" ] && [ -n "$alive" ] || fail "nop_keepalive.py did not name its sessions"
drops=$(grep -c 'did not answer NOP-In' "$DAEMON_LOG" || true)
[ "$drops" -eq 1 ] || {
	cat "$DAEMON_LOG" >&2
	fail "$drops log lines about an unanswered NOP-In, want 1"
}
grep -q "conn $silent: dropping connection: initiator did not answer NOP-In" "$DAEMON_LOG" || {
	cat "$DAEMON_LOG" >&2
	fail "no log line naming the silent connection $silent as dropped"
}
if grep "conn $alive: dropping" "$DAEMON_LOG"; then
	fail "the answering connection $alive was dropped"
fi
stop_daemon
