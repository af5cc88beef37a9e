#!/bin/bash
# The iscsi backend (issue 4): a LUN of a tgtd on loopback as the gateway's backing store.
#  1. open fails cleanly (non-zero exit, a log line) for an unreachable portal, an unknown
#     target, a LUN that does not exist and a malformed url;
#  2. the gateway's LUN has the remote's size; data written through the gateway reads back
#     (iscsi_pattern) and, after a flush, is on tgtd's file byte for byte (WRITE, WRITE SAME
#     and UNMAP, sizes from one block to 3 MiB), with a fully provisioned remote LU (zeroes go
#     out as WRITE SAME) and a thin one (UNMAP goes out as UNMAP);
#  3. tgtd is killed (SIGKILL) while 4 sessions write and restarted on the same port and
#     file: every write completes (none hangs, none fails), the status shows one reconnect,
#     the log says so once, and every acknowledged write is on the file;
#  3b. tgtd stopped (SIGSTOP) for longer than the backend's 15 s stall timeout with a write
#     outstanding: the backend gives up on the silent session, logs in again once tgtd runs
#     (SIGCONT; same ISID, so the target drops the old session) and the write succeeds;
#  4. tgtd killed and left down: a write fails with a SCSI error after the backend's 30 s
#     I/O timeout (never hangs), the status shows it offline with the error; restarted (no
#     longer thin), the backend comes back by itself, and when the remote now refuses UNMAP
#     and WRITE SAME with UNMAP it falls back to writing zeroes;
#  5. tgtd down again, a write queued in the backend: SIGTERM still stops the daemon cleanly
#     (the write and the shutdown flush fail after the timeout; nothing hangs or leaks).
#  6. write-back: tgtd killed and restarted while the destager writes: after a flush every
#     acknowledged write is on the remote's file;
#  7. write-back with the write log: the gateway killed (kill -9) while 4 sessions write;
#     the next start replays the log onto the remote LU before it serves, and every
#     acknowledged write is on the remote's file.
source "$(dirname "$0")/lib.sh"
source "$SRC/scripts/lib-tgt.sh"

# tgtd's management channel: unique to this test (the range assigned to it: 21001-21099).
export TGT_CTL=${TGT_CTL:-21001} TGT_STATE_DIR="$TMP/tgt" TGT_SIZE=128M
TPORT=$(free_port)
TFILE="$TMP/remote.img"
GW_INI="iqn.2026-11.io.isergw:gateway-under-test"
IO="$SRC/tests/integration/backend_iscsi_io.py"

PASSED=0
FAILED=0
pass() {
	PASSED=$((PASSED + 1))
	echo "ok   - $*"
}
bad() {
	FAILED=$((FAILED + 1))
	echo "FAIL - $*" >&2
}
check() { # description json jq-filter
	if jq -e "$3" >/dev/null 2>&1 <<<"$2"; then
		pass "$1"
	else
		bad "$1 [$3] on $(jq -c . <<<"$2" 2>/dev/null || echo "$2")"
	fi
}
ctl() {
	"$BIN/isergw-ctl" --socket "$TMP/isergw.sock" --json "$@"
}
backend_status() {
	ctl luns | jq -c '.luns[0].backend'
}
io() {
	ASAN_OPTIONS=detect_leaks=0 python3 "$IO" "$@"
}

test_cleanup() {
	local rc=$?
	[ -n "${WRITERS_PID:-}" ] && kill "$WRITERS_PID" 2>/dev/null
	tgt_stop "$TPORT" >/dev/null 2>&1 || true
	(exit $rc)
	cleanup
}
trap test_cleanup EXIT

# write_iscsi_config URL: one target whose LUN 0 is URL (thin: UNMAP reaches the backend).
write_iscsi_config() {
	PORT=${PORT:-$(free_port)}
	cat >"$TMP/isergw.conf" <<CONF
[gateway]
var_dir = $TMP/var
status_socket = $TMP/isergw.sock
reactors = 2
pool_size = 64M
nop_interval = 10
nop_timeout = 30
log_level = ${LOG_LEVEL:-info}
backend_initiator_name = $GW_INI
dirty_max_age_ms = 100

[portal main]
address = 127.0.0.1
port = $PORT

[target $IQN]
alias = test

[lun $IQN:0]
backend = iscsi
url = $1
block_size = 512
thin = yes
write_cache = ${WRITE_CACHE:-yes}
CONF
	URL="iscsi://127.0.0.1:$PORT/$IQN/0"
}

# tgtd was SIGKILLed: forget it, then start it again on the same port and file.
tgt_kill() {
	kill -KILL "$TGT_PID"
	wait "$TGT_PID" 2>/dev/null || true
	rm -f "$TGT_STATE_DIR/tgtd-$TPORT.pid"
}
tgt_restart() {
	tgt_start "$TPORT" "$TFILE" || fail "tgtd did not start again"
}

# open_fails DESCRIPTION URL: the daemon must exit non-zero, soon, with a log line about it.
open_fails() {
	local desc=$1 rc=0 log="$TMP/open.log"
	write_iscsi_config "$2"
	timeout 40 "$BIN/isergw" --config "$TMP/isergw.conf" >"$log" 2>&1 || rc=$?
	if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$log"; then
		cat "$log" >&2
		bad "$desc: sanitizer report"
	elif [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
		bad "$desc: exit status $rc (expected a failure, not success or a hang)"
	elif ! grep -qE "ERROR +backend iscsi://" "$log"; then
		cat "$log" >&2
		bad "$desc: no log line from the backend"
	else
		pass "$desc: exit status $rc, $(grep -m1 -oE 'backend iscsi://.*' "$log")"
	fi
}

wait_progress() { # N: until the writers have N acknowledged writes (at most 60 s)
	for _ in $(seq 1 600); do
		[ "$(cat "$TMP/progress" 2>/dev/null || echo 0)" -ge "$1" ] && return 0
		kill -0 "$WRITERS_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

wait_online() { # RECONNECTS: until the backend is online with that many reconnects (30 s)
	for _ in $(seq 1 300); do
		backend_status | jq -e ".online and .reconnects == $1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

tgt_start "$TPORT" "$TFILE" || fail "tgtd did not start"
REMOTE="$TGT_URL"
REMOTE_IQN="$TGT_IQN"
echo "-- remote LUN $REMOTE"

# ---- 1. open fails cleanly
open_fails "unreachable portal" "iscsi://127.0.0.1:$(free_port)/$REMOTE_IQN/1"
open_fails "unknown target" "iscsi://127.0.0.1:$TPORT/iqn.2026-11.io.isergw:no-such-target/1"
open_fails "LUN that does not exist" "iscsi://127.0.0.1:$TPORT/$REMOTE_IQN/7"
open_fails "malformed url" "iscsi://127.0.0.1:$TPORT/$REMOTE_IQN"

# ---- 2. data through the gateway, on the remote's file
write_iscsi_config "$REMOTE"
start_daemon
size=$(stat -c %s "$TFILE")
cap=$(iscsi-readcapacity16 -i "$INI1" "$URL" | sed -n 's/^Total size://p')
[ "$cap" = "$size" ] && pass "READ CAPACITY(16) through the gateway: $cap bytes, the remote's size" ||
	bad "READ CAPACITY(16) through the gateway says '$cap', the remote has $size bytes"
iscsi-inq -i "$INI1" "$URL" | grep -q "Peripheral Device Type:DIRECT_ACCESS" &&
	pass "INQUIRY through the gateway" || bad "INQUIRY through the gateway failed"
check "status: an online iscsi backend with its url" "$(ctl luns)" \
	".luns[0] | .size_bytes == $size and .backend.type == \"iscsi\" and
	 .backend.url == \"$REMOTE\" and .backend.online == true and .backend.state == \"online\" and
	 .backend.reconnects == 0 and .backend.errors == 0 and .backend.last_error == null"
COUNT=40
[ "${SANITIZED:-OFF}" = ON ] && COUNT=15
if "$BIN/iscsi_pattern" --url "$URL" --initiator-name "$INI1" --count "$COUNT" --max-size 4M \
	--range 64M --seed 11 >"$TMP/pattern.out" 2>&1; then
	pass "iscsi_pattern through the gateway: $(tail -1 "$TMP/pattern.out")"
else
	cat "$TMP/pattern.out" >&2
	bad "iscsi_pattern through the gateway"
fi
known_data() { # what the remote does with zeroes
	if io known "$PORT" "$IQN" "$INI1" "$TFILE" "$BIN/isergw-ctl" "$TMP/isergw.sock"; then
		pass "known data read back and on the remote's file after a flush ($1)"
	else
		bad "known data through the gateway and on the remote's file ($1)"
	fi
}
grep -q "unmap zeroes; write same yes" "$DAEMON_LOG" && pass "remote LU fully provisioned: zeroes by WRITE SAME" ||
	bad "unexpected remote capabilities: $(grep -m1 'logged in to' "$DAEMON_LOG")"
known_data "WRITE SAME for WRITE SAME and UNMAP"
stop_daemon
tgtadm -C "$TGT_CTL" --lld iscsi --mode logicalunit --op update --tid 1 --lun 1 \
	--params thin_provisioning=1 || fail "cannot make the remote LU thin"
# From here on write-through, so a write's fate is the backend's (in write-back it would be
# acknowledged from the cache at once); section 6 runs the outage in write-back.
WRITE_CACHE=no write_iscsi_config "$REMOTE"
start_daemon
grep -q "unmap UNMAP" "$DAEMON_LOG" && pass "remote LU thin: the backend uses UNMAP" ||
	bad "thin remote LU, but: $(grep -m1 'logged in to' "$DAEMON_LOG")"
known_data "UNMAP for UNMAP, WRITE SAME with the UNMAP bit"

# ---- 3. tgtd killed while writes are in flight, restarted
rm -f "$TMP/stop" "$TMP/progress"
io writers "$PORT" "$IQN" "$INI1" "$TMP/progress" "$TMP/stop" "$TMP/writes.json" \
	>"$TMP/writers.out" 2>&1 &
WRITERS_PID=$!
wait_progress 40 || fail "the writers did not get going: $(cat "$TMP/writers.out")"
tgt_kill
echo "-- tgtd killed after $(cat "$TMP/progress") acknowledged writes"
sleep 2
tgt_restart
before=$(cat "$TMP/progress")
wait_progress $((before + 80)) || bad "writes did not resume after tgtd came back"
touch "$TMP/stop"
rc=0
wait "$WRITERS_PID" || rc=$?
WRITERS_PID=""
cat "$TMP/writers.out"
[ "$rc" -eq 0 ] && pass "no write hung across the restart" || bad "writers exit status $rc"
jq -e '[.writes[] | select(.[3] != "good")] | length == 0' "$TMP/writes.json" >/dev/null &&
	pass "every write succeeded (the I/Os waited for the reconnect)" ||
	bad "some writes failed across a 2 s outage"
check "status: online again, one reconnect, no error" "$(backend_status)" \
	".online == true and .reconnects == 1 and .errors == 0"
lost=$(grep -c "session lost" "$DAEMON_LOG" || true)
back=$(grep -c "reconnected after" "$DAEMON_LOG" || true)
[ "$lost" -eq 1 ] && [ "$back" -eq 1 ] &&
	pass "the log tells the drop and the reconnect once each: $(grep -m1 -oE 'reconnected after.*' "$DAEMON_LOG")" ||
	bad "log lines: $lost 'session lost', $back 'reconnected' (expected 1 and 1)"
requeued=$(grep -m1 -oE "re-issuing [0-9]+ I/Os" "$DAEMON_LOG" | grep -oE "[0-9]+" || echo 0)
[ "$requeued" -ge 1 ] && pass "$requeued I/Os waited through the outage and were re-issued" ||
	bad "no I/O waited through the outage (re-issued: $requeued)"
ctl flush "$IQN" 0 >/dev/null && pass "flush after the reconnect" || bad "flush after the reconnect"
if io verify "$TFILE" "$TMP/writes.json"; then
	pass "every acknowledged write is on the remote's file"
else
	bad "acknowledged writes missing from the remote's file"
fi

# ---- 3b. tgtd alive but silent
kill -STOP "$TGT_PID"
io one_write "$PORT" "$IQN" "$INI1" 32 60 >"$TMP/stalled.out" 2>&1 &
stalled=$!
sleep 18
kill -CONT "$TGT_PID"
wait "$stalled" || true
out=$(cat "$TMP/stalled.out")
echo "-- write while tgtd was stopped for 18 s: $out"
check "a write outstanding on a silent target succeeds once it answers again" "$out" \
	".good == true and .elapsed >= 15 and .elapsed <= 30"
grep -q "session lost (the target stopped answering)" "$DAEMON_LOG" &&
	pass "the silent session was given up after the stall timeout" ||
	bad "no 'stopped answering' in the log"
wait_online 2 && pass "online again after the stall, 2 reconnects" ||
	bad "not online after the stall: $(backend_status)"

# ---- 4. tgtd down for longer than the I/O timeout
tgt_kill
out=$(io one_write "$PORT" "$IQN" "$INI1" 16 90)
echo "-- write with the remote down: $out"
check "a write with the remote down fails with MEDIUM ERROR after the 30 s timeout" "$out" \
	".good == false and .closed == false and .timed_out == false and .status == 2 and
	 .sense_key == 3 and .elapsed >= 25 and .elapsed <= 45"
check "status: offline, the error counted and told" "$(backend_status)" \
	".online == false and .state == \"offline\" and .errors >= 1 and
	 (.last_error | test(\"timed out\"))"
tgt_restart
if wait_online 3; then
	pass "back online by itself once tgtd returned"
else
	bad "not online again after tgtd returned: $(backend_status)"
fi
out=$(io one_write "$PORT" "$IQN" "$INI1" 16 30)
check "writes succeed again" "$out" ".good == true"
known_data "the remote no longer thin"
grep -q "refuses UNMAP" "$DAEMON_LOG" && grep -q "refuses WRITE SAME with UNMAP" "$DAEMON_LOG" &&
	pass "refused UNMAP and WRITE SAME with UNMAP: told once, zeroes written instead" ||
	bad "no fallback logged for the refused UNMAP / WRITE SAME with UNMAP"

# ---- 5. SIGTERM with the remote down and a write queued: the daemon still stops cleanly
tgt_kill
io one_write "$PORT" "$IQN" "$INI1" 48 120 >"$TMP/last.out" 2>&1 &
last=$!
sleep 1
pid=$DAEMON_PID
DAEMON_PID=""
t0=$SECONDS
kill -TERM "$pid"
for _ in $(seq 1 900); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
	kill -KILL "$pid"
	bad "the daemon did not stop within 90 s of SIGTERM with the remote down"
fi
rc=0
wait "$pid" || rc=$?
wait "$last" || true
echo "-- write queued at SIGTERM: $(cat "$TMP/last.out")"
if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG"; then
	grep -E -A30 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG" | head -50 >&2
	bad "sanitizer report in the daemon log"
elif [ "$rc" -ne 0 ]; then
	bad "daemon exit status $rc after SIGTERM with the remote down"
else
	pass "SIGTERM with the remote down: stopped cleanly in $((SECONDS - t0)) s"
fi

# ---- 6. write-back: tgtd killed and restarted while the destager writes; after a flush,
# every acknowledged write is on the remote's file
tgt_restart
write_iscsi_config "$REMOTE"
start_daemon
rm -f "$TMP/stop" "$TMP/progress"
io writers "$PORT" "$IQN" "$INI1" "$TMP/progress" "$TMP/stop" "$TMP/writes-wb.json" \
	>"$TMP/writers-wb.out" 2>&1 &
WRITERS_PID=$!
wait_progress 40 || fail "write-back writers did not get going: $(cat "$TMP/writers-wb.out")"
tgt_kill
sleep 2
tgt_restart
before=$(cat "$TMP/progress")
wait_progress $((before + 80)) || bad "write-back writes did not go on across the outage"
touch "$TMP/stop"
rc=0
wait "$WRITERS_PID" || rc=$?
WRITERS_PID=""
[ "$rc" -eq 0 ] && pass "write-back: no write hung or failed across the outage" ||
	bad "write-back writers exit status $rc"
wait_online 1 && pass "write-back: the backend reconnected" || bad "write-back: $(backend_status)"
ctl flush "$IQN" 0 >/dev/null && pass "write-back: flush after the reconnect (destage resumed)" ||
	bad "write-back: flush after the reconnect failed"
if io verify "$TFILE" "$TMP/writes-wb.json"; then
	pass "write-back: every acknowledged write is on the remote's file"
else
	bad "write-back: acknowledged writes missing from the remote's file"
fi
stop_daemon

# ---- 7. write-back with the write log: the gateway killed mid-stream, replayed at start
write_iscsi_config "$REMOTE"
sed -i "s|^dirty_max_age_ms = 100|dirty_max_age_ms = 600000\nwrite_log = $TMP/wlog\nwrite_log_size = 256M\nwrite_log_checkpoint_interval = 3600|" \
	"$TMP/isergw.conf"
start_daemon
rm -f "$TMP/stop" "$TMP/progress"
io writers "$PORT" "$IQN" "$INI1" "$TMP/progress" "$TMP/stop" "$TMP/writes-log.json" \
	>"$TMP/writers-log.out" 2>&1 &
WRITERS_PID=$!
wait_progress 100 || fail "writers did not get going: $(cat "$TMP/writers-log.out")"
kill -KILL "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=""
wait "$WRITERS_PID" || true
WRITERS_PID=""
if io verify "$TFILE" "$TMP/writes-log.json" >/dev/null 2>&1; then
	bad "write log: the remote already had every write at kill -9 (nothing left to replay)"
fi
start_daemon
grep -qE "write log .*: replayed [1-9][0-9]* records" "$DAEMON_LOG" &&
	pass "write log: $(grep -oE 'replayed [0-9]+ records' "$DAEMON_LOG") at start" ||
	bad "write log: no replay at start"
if io verify "$TFILE" "$TMP/writes-log.json"; then
	pass "write log: every acknowledged write is on the remote's file after kill -9 and replay"
else
	bad "write log: acknowledged writes lost across kill -9"
fi
stop_daemon

grep -E "backend iscsi" "$DAEMON_LOG" | sed "s/^/   log: /"
echo "backend-iscsi: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
