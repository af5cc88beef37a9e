#!/bin/bash
# The local write log (docs/cache.md, "Write log"):
#  1. control: without a log, kill -9 loses writes that were acknowledged from the cache;
#  2. with the log, kill -9 after the writes: the next start replays them onto the file
#     before it serves, and says how many;
#  3. kill -9 in the middle of a write stream, with a log smaller than the data written (so
#     checkpoints must free space while writes go on): every acknowledged write survives;
#  4. SIGTERM with the log: flushed, the log emptied, nothing replayed at the next start;
#  5. a log with records for a LUN the configuration no longer has: the daemon refuses to
#     start and keeps the log; with the LUN back, it replays;
#  6. a file that is not a write log: refused, untouched.
source "$(dirname "$0")/lib.sh"
export PYTHONDONTWRITEBYTECODE=1
PY="python3 $SRC/tests/integration/cache_writer.py"
ctl() { "$BIN/isergw-ctl" --socket "$TMP/isergw.sock" --json "$@"; }

QUIET_CACHE="dirty_high_water = 90
dirty_low_water = 10
dirty_hard_limit = 95
dirty_max_age_ms = 600000"
LOG="$TMP/wlog"
WITH_LOG="$QUIET_CACHE
write_log = $LOG
write_log_size = 64M
write_log_checkpoint_interval = 3600"
SMALL_LOG="${WITH_LOG/64M/16M}"

kill9() {
	kill -KILL "$DAEMON_PID"
	wait "$DAEMON_PID" 2>/dev/null || true
	DAEMON_PID=""
	cp "$DAEMON_LOG" "$DAEMON_LOG.$1"
}

# Starts the daemon and expects it to refuse: prints its log.
start_refused() {
	"$BIN/isergw" --config "$TMP/isergw.conf" >"$DAEMON_LOG" 2>&1 && fail "the daemon started and exited 0"
	cat "$DAEMON_LOG"
}

fresh() {
	rm -f "$TMP/isergw.conf" "$TMP/lun0.img" "$LOG"
	GATEWAY_EXTRA=$1 POOL_SIZE=${2:-16M} write_config
}

echo "-- 1. control: no log, kill -9"
fresh "$QUIET_CACHE"
start_daemon
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 1 --count 100 --out "$TMP/rec1"
[ "$(ctl cache | jq .write_log.enabled)" = false ] || fail "write_log enabled without a log"
kill9 1
start_daemon
$PY differs --image "$TMP/lun0.img" --rec "$TMP/rec1" ||
	fail "control: without a log the file had every write after kill -9 (nothing to protect?)"
stop_daemon
echo "ok - without a log, kill -9 loses cached writes"

echo "-- 2. log on, kill -9 after the writes"
fresh "$WITH_LOG"
start_daemon
grep -q "write log $LOG: created" "$DAEMON_LOG" || fail "no 'created' line"
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 2 --count 100 --out "$TMP/rec2"
records=$(ctl cache | jq .write_log.records)
[ "$records" -ge 100 ] || fail "write log holds $records records after 100 writes"
$PY differs --image "$TMP/lun0.img" --rec "$TMP/rec2" || fail "the file already had every write"
kill9 2
$PY differs --image "$TMP/lun0.img" --rec "$TMP/rec2" || fail "the file had every write at kill -9"
start_daemon
grep -qE "write log $LOG: replayed [1-9][0-9]* records .*they are on the backends" "$DAEMON_LOG" ||
	{ cat "$DAEMON_LOG"; fail "no replay line"; }
$PY check --image "$TMP/lun0.img" --rec "$TMP/rec2" || fail "acknowledged writes lost across kill -9 with the log"
[ "$(ctl cache | jq .write_log.replayed_records)" -ge 100 ] || fail "replayed_records"
stop_daemon
grep -q "write log $LOG: emptied" "$DAEMON_LOG" || fail "SIGTERM did not empty the log"
echo "ok - $records records replayed after kill -9"

echo "-- 3. kill -9 mid-stream, log smaller than the data"
fresh "$SMALL_LOG" 64M
start_daemon
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 3 --count 100000 \
	--partial-ok --out "$TMP/rec3" >"$TMP/writer3.out" 2>&1 &
writer=$!
for _ in $(seq 1 600); do
	[ "$(ctl cache | jq .write_log.checkpoints)" -ge 2 ] && break
	kill -0 "$writer" 2>/dev/null || { cat "$TMP/writer3.out"; fail "writer ended early"; }
	sleep 0.1
done
cks=$(ctl cache | jq .write_log.checkpoints)
[ "$cks" -ge 2 ] || fail "no checkpoint while writing more than the log holds ($cks)"
[ "$(ctl cache | jq .write_log.errors)" -eq 0 ] || fail "log write errors"
kill9 3
wait "$writer" || { cat "$TMP/writer3.out"; fail "writer failed"; }
cat "$TMP/writer3.out"
grep -q "stopped after" "$TMP/writer3.out" || fail "the writer was not cut off by the kill"
start_daemon
grep -q "write log $LOG: replayed" "$DAEMON_LOG" || fail "no replay line"
$PY check --image "$TMP/lun0.img" --rec "$TMP/rec3" || fail "acknowledged writes lost (kill -9 mid-stream)"
stop_daemon
echo "ok - every acknowledged write survived kill -9 mid-stream ($cks checkpoints)"

echo "-- 4. SIGTERM with the log"
fresh "$WITH_LOG"
start_daemon
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 4 --count 50 --out "$TMP/rec4"
stop_daemon
grep -q "write log $LOG: emptied" "$DAEMON_LOG" || fail "no 'emptied' line"
$PY check --image "$TMP/lun0.img" --rec "$TMP/rec4" || fail "SIGTERM flush"
start_daemon
grep -q "write log $LOG: replayed 0 records" "$DAEMON_LOG" || fail "replayed records after a clean stop"
stop_daemon
echo "ok - a clean stop empties the log"

echo "-- 5. records for a LUN that is gone"
fresh "$WITH_LOG"
start_daemon
$PY write --port "$PORT" --target "$IQN" --initiator "$INI1" --seed 5 --count 30 --out "$TMP/rec5"
kill9 5
sed -i "s/^\[lun $IQN:0\]/[lun $IQN:1]/" "$TMP/isergw.conf"
start_refused | grep -q "belongs to a LUN this configuration does not have" ||
	fail "no refusal for records of a missing LUN"
sed -i "s/^\[lun $IQN:1\]/[lun $IQN:0]/" "$TMP/isergw.conf"
start_daemon
$PY check --image "$TMP/lun0.img" --rec "$TMP/rec5" || fail "records kept across the refused start were lost"
stop_daemon
echo "ok - a log for a missing LUN stops the start and is kept"

echo "-- 6. not a write log"
fresh "$WITH_LOG"
head -c 1M /dev/urandom >"$LOG"
sum=$(md5sum <"$LOG")
start_refused | grep -q "not a write log of this version" || fail "garbage log accepted"
[ "$(md5sum <"$LOG")" = "$sum" ] || fail "the refused file was changed"
echo "ok - a file that is not a write log is refused and left alone"
