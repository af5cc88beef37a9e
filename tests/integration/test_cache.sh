#!/bin/bash
# The write-back cache against a real file backend (docs/cache.md):
#  1. write-back holds acknowledged data dirty (the file does not have it yet), and SIGTERM
#     flushes all of it to the file before the daemon exits, saying so;
#  2. write-through: every acknowledged write is already in the file;
#  3. a backend that fails writes: the data stays dirty, the status shows the error and the
#     back-off, and once the backend works again everything reaches the file;
#  4. dirty data at the hard limit: writes wait (R2Ts delayed), none fails, all land.
source "$(dirname "$0")/lib.sh"
export PYTHONDONTWRITEBYTECODE=1
PY="python3 $SRC/tests/integration/cache_writer.py"
ctl() { "$BIN/isergw-ctl" --socket "$TMP/isergw.sock" --json "$@"; }
cache_field() { ctl cache | jq -r ".$1"; }

# Stops the daemon with SIGTERM and waits; fails on a non-zero exit.
term_and_wait() {
	local pid=$DAEMON_PID rc=0
	DAEMON_PID=""
	kill -TERM "$pid"
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ] || { cat "$DAEMON_LOG" >&2; fail "daemon exit status $rc"; }
	if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG"; then
		cat "$DAEMON_LOG" >&2
		fail "sanitizer report"
	fi
}

QUIET_CACHE="dirty_high_water = 90
dirty_low_water = 10
dirty_hard_limit = 95
dirty_max_age_ms = 600000"

echo "-- 1. write-back, SIGTERM flush"
GATEWAY_EXTRA=$QUIET_CACHE POOL_SIZE=16M write_config
start_daemon
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 1 --count 150 --out "$TMP/rec1"
dirty=$(cache_field lines_dirty)
[ "$dirty" -gt 0 ] || fail "no dirty line after write-back writes (lines_dirty $dirty)"
$PY differs --image "$TMP/lun0.img" --rec "$TMP/rec1" ||
	fail "write-back: the file already had every write (nothing was held in the cache)"
term_and_wait
grep -q "flushing $dirty dirty lines before exit" "$DAEMON_LOG" || fail "no flush message for $dirty lines"
grep -q "flushed: every acknowledged write is on its backend" "$DAEMON_LOG" || fail "no flushed message"
$PY check --image "$TMP/lun0.img" --rec "$TMP/rec1" || fail "SIGTERM flush lost acknowledged data"
echo "ok - $dirty dirty lines flushed at SIGTERM"

echo "-- 2. write-through"
rm -f "$TMP/isergw.conf" "$TMP/lun0.img"
GATEWAY_EXTRA=$QUIET_CACHE LUN_EXTRA="write_cache = no" write_config
start_daemon
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 2 --count 100 --out "$TMP/rec2"
$PY check --image "$TMP/lun0.img" --rec "$TMP/rec2" || fail "write-through: acknowledged data not in the file"
[ "$(cache_field lines_dirty)" -eq 0 ] || fail "write-through left dirty lines"
stop_daemon
echo "ok - write-through writes are in the file when acknowledged"

echo "-- 3. backend write errors"
rm -f "$TMP/isergw.conf" "$TMP/lun0.img"
GATEWAY_EXTRA=$QUIET_CACHE LUN_EXTRA="fault_injection = yes" write_config
start_daemon
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 3 --count 60 --out "$TMP/rec3"
"$BIN/isergw-ctl" --socket "$TMP/isergw.sock" fault "$IQN" 0 fail_writes=always >/dev/null
if "$BIN/isergw-ctl" --socket "$TMP/isergw.sock" flush "$IQN" 0 >/dev/null 2>&1; then
	fail "flush succeeded while every backend write fails"
fi
[ "$(cache_field lines_dirty)" -gt 0 ] || fail "dirty data dropped after a failed destage"
grep -q "destage failed: Input/output error; the data stays dirty" "$DAEMON_LOG" || fail "no destage error log line"
"$BIN/isergw-ctl" --socket "$TMP/isergw.sock" fault "$IQN" 0 >/dev/null
"$BIN/isergw-ctl" --socket "$TMP/isergw.sock" flush "$IQN" 0 >/dev/null || fail "flush after the backend recovered"
[ "$(cache_field lines_dirty)" -eq 0 ] || fail "dirty lines left after a successful flush"
$PY check --image "$TMP/lun0.img" --rec "$TMP/rec3" || fail "data lost across backend errors"
stop_daemon
echo "ok - failed destages keep the data dirty and retry"

echo "-- 4. hard limit"
rm -f "$TMP/isergw.conf" "$TMP/lun0.img"
GATEWAY_EXTRA="dirty_high_water = 20
dirty_low_water = 5
dirty_hard_limit = 30" POOL_SIZE=2M LUN_EXTRA="fault_injection = yes" write_config
start_daemon
"$BIN/isergw-ctl" --socket "$TMP/isergw.sock" fault "$IQN" 0 delay_ms=20 >/dev/null
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 4 --count 120 --out "$TMP/rec4" ||
	fail "a write failed at the hard limit"
waits=$(cache_field write_waits)
[ "$waits" -gt 0 ] || fail "writes never waited at the hard limit (write_waits $waits)"
"$BIN/isergw-ctl" --socket "$TMP/isergw.sock" fault "$IQN" 0 >/dev/null
term_and_wait
$PY check --image "$TMP/lun0.img" --rec "$TMP/rec4" || fail "data lost at the hard limit"
echo "ok - $waits line requests waited at the hard limit; nothing failed or was lost"
echo "cache: 4 passed, 0 failed"
