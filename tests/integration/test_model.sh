#!/bin/bash
# Randomized model-based test (tests/tools/iscsi_model.c): many concurrent random writes
# (with and without FUA), reads, SYNCHRONIZE CACHEs, status-socket flushes and injected
# backend faults against one LUN, every read checked against a model of what the LUN may
# hold, the file backend's image checked after flushes and byte for byte at the end. A small
# pool (4M for a 16M range) keeps the cache under pressure. Run with write_cache = yes and no,
# and (shorter) with 4096-byte blocks and with write-back behind the write log (a 16M log
# that checkpoints often, while backend faults make some checkpoints fail), and behind the
# log with the daemon killed (kill -9) under the last commands and restarted.
# nop_interval = 1: the target must not ping a busy connection (libiscsi fails its session
# when it answers a NOP-In while Data-Out PDUs wait in its queue), while an idle moment still
# gets pinged and answered.
#   ISERGW_LONG=1         run the two main settings for MODEL_SECONDS each (default 240; the
#                         4K one a quarter of it), with a random seed unless MODEL_SEED is set
#   MODEL_SECONDS=S       run each setting for S seconds
#   MODEL_SEED=N          use this seed (the default is fixed, so CI runs are reproducible)
#   MODEL_OPS=N           ops per setting (default 40000; 20000 under the sanitizers)
source "$(dirname "$0")/lib.sh"

OPS=${MODEL_OPS:-40000}
# The sanitized daemon is slower: fewer ops, same mix.
[ "${SANITIZED:-OFF}" = ON ] && OPS=${MODEL_OPS:-20000}
SEED=${MODEL_SEED:-20261121}
RUN_SECONDS=""
if [ "${ISERGW_LONG:-0}" = 1 ] || [ -n "${MODEL_SECONDS:-}" ]; then
	RUN_SECONDS=${MODEL_SECONDS:-240}
	SEED=${MODEL_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
fi
echo "model: seed $SEED (rerun with MODEL_SEED=$SEED)"

run_case() { # name, extra LUN lines, block size, share of the ops or seconds (1/N), gateway lines
	local name=$1 extra=$2 bs=$3 div=$4
	rm -f "$TMP/isergw.conf" "$TMP/lun0.img" "$TMP/wlog"
	GATEWAY_EXTRA=${5:-} NOP_INTERVAL=1 BLOCK_SIZE=$bs POOL_SIZE=4M LUN_SIZE=16M LUN_EXTRA="fault_injection = yes
$extra" write_config
	start_daemon
	echo "-- $name"
	local args=(--url "$URL" --initiator-name "$INI1" --seed "$SEED" --qd 16 --lun-size 16M
		--block-size "$bs" --status-socket "$TMP/isergw.sock" --backend-file "$TMP/lun0.img")
	if [ -n "$RUN_SECONDS" ]; then
		args+=(--seconds "$(awk -v s="$RUN_SECONDS" -v d="$div" 'BEGIN { print s / d }')")
	else
		args+=(--ops $((OPS / div)))
	fi
	"$BIN/iscsi_model" "${args[@]}" || fail "model case $name (seed $SEED)"
	grep -q "fault injection enabled" "$DAEMON_LOG" || fail "$name: the LUN was not fault-wrapped"
	grep -qE 'audit .*op=fault .*"fail_(reads|writes|flushes)":[1-9].*result=ok' "$DAEMON_LOG" ||
		fail "$name: no fault was injected"
	stop_daemon
}

# The model notices errors it did not ask for: faults set behind its back with isergw-ctl.
# Write-through, so the failing backend writes reach the initiator whatever the cache does.
self_check() {
	rm -f "$TMP/isergw.conf" "$TMP/lun0.img"
	POOL_SIZE=4M LUN_SIZE=16M LUN_EXTRA="fault_injection = yes
write_cache = no" write_config
	start_daemon
	echo "-- self-check"
	local out rc=0
	out=$("$BIN/isergw-ctl" --socket "$TMP/isergw.sock" fault "$IQN" 0 fail_writes=always)
	[ "$out" = "fault $IQN lun 0: fail_reads=0 fail_writes=always fail_flushes=0 delay_ms=0; backend errors so far: 0" ] ||
		fail "isergw-ctl fault printed '$out'"
	out=$("$BIN/iscsi_model" --url "$URL" --initiator-name "$INI1" --seed "$SEED" --ops 2000 \
		--lun-size 16M --status-socket "$TMP/isergw.sock" --no-faults 2>&1) || rc=$?
	if [ "$rc" -ne 1 ] || ! grep -q "no fault was injected that could explain a failure" <<<"$out"; then
		fail "the model missed writes failing behind its back (exit $rc): $(tail -3 <<<"$out")"
	fi
	out=$("$BIN/isergw-ctl" --socket "$TMP/isergw.sock" fault "$IQN" 0)
	grep -q "fail_writes=0 .*backend errors so far: [1-9][0-9]*, last: injected" <<<"$out" ||
		fail "isergw-ctl fault (clear) printed '$out'"
	stop_daemon
}

# Write-back behind the write log; at the end the daemon is killed (kill -9) under the model's
# last commands and started again: the replayed log must hold every acknowledged write (the
# model then reads everything back and compares the file byte for byte).
crash_case() {
	local name=write-back-log-kill9 rc=0
	rm -f "$TMP/isergw.conf" "$TMP/lun0.img" "$TMP/wlog" "$TMP/restarted.pid"
	GATEWAY_EXTRA="write_log = $TMP/wlog
write_log_size = 64M
write_log_checkpoint_interval = 3600
dirty_high_water = 90
dirty_low_water = 10
dirty_hard_limit = 95
dirty_max_age_ms = 600000" POOL_SIZE=16M LUN_SIZE=16M LUN_EXTRA="fault_injection = yes" \
		write_config
	start_daemon
	echo "-- $name"
	local old=$DAEMON_PID
	cat >"$TMP/crash.sh" <<CRASH
kill -KILL $old
while grep -qv '^State:.*Z' /proc/$old/status 2>/dev/null; do sleep 0.05; done
cp "$DAEMON_LOG" "$DAEMON_LOG.killed"
setsid "$BIN/isergw" --config "$TMP/isergw.conf" >"$DAEMON_LOG" 2>&1 </dev/null &
echo \$! >"$TMP/restarted.pid"
for i in \$(seq 1 600); do grep -q "listening for iSCSI/TCP" "$DAEMON_LOG" && exit 0; sleep 0.1; done
exit 1
CRASH
	"$BIN/iscsi_model" --url "$URL" --initiator-name "$INI1" --seed "$SEED" --qd 16 --lun-size 16M \
		--status-socket "$TMP/isergw.sock" --backend-file "$TMP/lun0.img" --ops $((OPS / 4)) \
		--crash-cmd "bash $TMP/crash.sh" || rc=$?
	wait "$old" 2>/dev/null || true
	DAEMON_PID=""
	local new
	new=$(cat "$TMP/restarted.pid" 2>/dev/null || true)
	if [ -n "$new" ]; then
		kill -TERM "$new" 2>/dev/null || true
		for _ in $(seq 1 600); do
			kill -0 "$new" 2>/dev/null || break
			sleep 0.1
		done
	fi
	[ "$rc" -eq 0 ] || { tail -20 "$DAEMON_LOG"; fail "model case $name (seed $SEED)"; }
	grep -o "write log .*: replayed [0-9]* records ([0-9]* bytes)" "$DAEMON_LOG" ||
		fail "$name: no replay line"
	if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG" "$DAEMON_LOG.killed"; then
		fail "$name: sanitizer report"
	fi
	grep -q "write log .*: emptied" "$DAEMON_LOG" || fail "$name: the restarted daemon did not stop cleanly"
}

self_check
crash_case
run_case write-back "write_cache = yes" 512 1
run_case write-through "write_cache = no" 512 1
run_case write-back-4k "write_cache = yes" 4096 4
run_case write-back-log "write_cache = yes" 512 4 "write_log = $TMP/wlog
write_log_size = 16M
write_log_checkpoint_interval = 1"
grep -qE "write log .*: emptied" "$DAEMON_LOG" || fail "write-back-log: the log was not emptied at stop"
echo "model: 6 passed, 0 failed"
