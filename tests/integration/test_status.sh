#!/bin/bash
# The status socket and isergw-ctl against a running gateway (issue 6, docs/status.md):
# every object has the documented fields and types; sessions opened with libiscsi appear
# with their parameters and disappear after logout; counters move by exactly the amounts
# written and read; flush works and is audited; metrics pass promtool; isergw-ctl against a
# stopped daemon exits 1 with a clear message.
source "$(dirname "$0")/lib.sh"

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
# check DESCRIPTION JSON JQ-FILTER: passes when the filter yields true.
check() {
	local desc=$1 json=$2 filter=$3
	if jq -e "$filter" >/dev/null 2>&1 <<<"$json"; then
		pass "$desc"
	else
		bad "$desc [$filter] on $(jq -c . <<<"$json" 2>/dev/null || echo "'$json'")"
	fi
}
SOCK="$TMP/isergw.sock"
ctl() {
	"$BIN/isergw-ctl" --socket "$SOCK" --json "$@"
}
stats() {
	ctl stats
}
delta() { # BEFORE AFTER
	jq -n --argjson a "$1" --argjson b "$2" '$b | with_entries(.value -= ($a[.key] // 0))'
}
# Waits (bounded) until the sessions object satisfies FILTER; prints the last one seen.
wait_sessions() {
	local filter=$1 tries=${2:-100} s=""
	for _ in $(seq 1 "$tries"); do
		s=$(ctl sessions 2>/dev/null) || s='{}'
		jq -e "$filter" >/dev/null 2>&1 <<<"$s" && break
		sleep 0.1
	done
	echo "$s"
}
INT='(type == "number" and . == floor)'
NNINT="($INT and . >= 0)"

start_daemon
daemon_alive

# ---------------- objects ----------------
st=$(ctl status)
check "status --json has gateway, stats, pool, cache, mirror" "$st" \
	'has("gateway") and has("stats") and has("pool") and has("cache") and has("mirror")'
gw=$(jq .gateway <<<"$st")
check "gateway fields and types" "$gw" \
	"(.version | type == \"string\") and (.uptime_s | $NNINT) and (.reactors | $INT) and
	 (.pid | $INT) and (.config_path | type == \"string\" or . == null)"
VERSION=$(sed -n 's/^project(isergw VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
check "gateway version is the daemon's ($VERSION)" "$gw" ".version == \"$VERSION\""
check "gateway config_path is the config in use" "$gw" ".config_path == \"$TMP/isergw.conf\""
check "gateway reactors == 2 (as configured)" "$gw" '.reactors == 2'
check "gateway pid is the daemon's" "$gw" ".pid == $DAEMON_PID"

tg=$(ctl targets)
check "targets: one target with documented fields" "$tg" \
	"(.targets | length == 1) and (.targets[0] | (.name | type == \"string\") and
	 (.alias | type == \"string\" or . == null) and (.portals | type == \"array\") and
	 (.luns | type == \"array\"))"
check "targets: name, alias, portal, LUNs" "$tg" \
	".targets[0] | .name == \"$IQN\" and .alias == \"test\" and
	 .portals == [\"127.0.0.1:$PORT\"] and .luns == [0]"

lu=$(ctl luns)
check "luns: fields and types" "$lu" \
	"(.luns | length == 1) and (.luns[0] | (.target | type == \"string\") and (.lun | $INT) and
	 (.size_bytes | $INT) and (.block_size | $INT) and (.backend.type | type == \"string\") and
	 (.backend.path | type == \"string\" or . == null) and
	 (.backend.state | IN(\"online\", \"failed\", \"offline\")) and
	 (.backend.last_error | type == \"string\" or . == null) and
	 (.write_cache | type == \"boolean\"))"
check "luns: the configured LUN (64 MiB file, 512-byte blocks, online)" "$lu" \
	".luns[0] | .target == \"$IQN\" and .lun == 0 and .size_bytes == 67108864 and
	 .block_size == 512 and .backend.type == \"file\" and .backend.path == \"$TMP/lun0.img\" and
	 .backend.state == \"online\" and .backend.last_error == null and .write_cache == true"

po=$(ctl pool)
check "pool: fields and types" "$po" \
	"(.line_size | $INT) and (.lines_total | $INT) and (.lines_free | $NNINT) and
	 (.lines_clean | $NNINT) and (.lines_dirty | $NNINT) and (.dpt_entries_in_use | $NNINT) and
	 (.dpt_high_water | $NNINT) and (.commands_waiting_for_lines | $NNINT) and
	 (.huge_pages | type == \"boolean\")"
check "pool: 64 MiB in 32 KiB lines, all free, nothing held" "$po" \
	'.line_size == 32768 and .lines_total == 2048 and .lines_free == 2048 and
	 .lines_clean == 0 and .lines_dirty == 0 and .dpt_entries_in_use == 0 and
	 .commands_waiting_for_lines == 0'
check "pool: line states add up" "$po" \
	'.lines_total - .lines_free - .lines_clean - .lines_dirty >= 0'

ca=$(ctl cache)
check "cache: {enabled:false} or the full documented object" "$ca" \
	"(.enabled == false and length == 1) or (.enabled == true and (.hit_ratio | type == \"number\")
	 and (.read_hits | $NNINT) and (.read_misses | $NNINT) and
	 (.destage_backlog_bytes | $NNINT) and (.destage_rate_bps | type == \"number\") and
	 (.destaged_bytes | $NNINT))"
mi=$(ctl mirror)
check "mirror: volumes array" "$mi" '.volumes | type == "array"'

s0=$(stats)
STAT_FIELDS='["commands","read_commands","write_commands","read_bytes","write_bytes",
 "write_data_bytes","write_copy_bytes","read_copy_bytes","r2t_sent","data_out_pdus",
 "data_in_pdus","rejects","digest_errors","login_failures","connections_accepted",
 "connections_active","sessions_active","errors","protocol_errors","tmf_requests","nop_timeouts"]'
check "stats: every documented counter, as a non-negative integer" "$s0" \
	"[${STAT_FIELDS}[] as \$f | .[\$f] | $NNINT] | all"
check "stats: idle gateway has no session or connection" "$s0" \
	'.sessions_active == 0 and .connections_active == 0'
se=$(ctl sessions)
check "sessions: empty before any login" "$se" '.sessions == []'

# ---------------- a session appears with its parameters, then goes ----------------
"$BIN/isergw-bench" --url "$URL" --initiator-name "$INI1" --rw randwrite --bs 4k --qd 4 \
	--time 3 --json >"$TMP/bg1.json" 2>"$TMP/bg1.err" &
BG=$!
se=$(wait_sessions '.sessions | length == 1')
check "sessions: the open session is listed" "$se" '.sessions | length == 1'
check "sessions: session fields" "$se" \
	".sessions[0] | (.tsih | $INT and . >= 1 and . <= 65535) and
	 (.isid | test(\"^[0-9a-f]{12}\$\")) and .initiator_name == \"$INI1\" and
	 .target == \"$IQN\" and .type == \"normal\" and (.connections | length == 1)"
check "sessions: connection fields" "$se" \
	".sessions[0].connections[0] | (.cid | $NNINT) and .portal == \"127.0.0.1:$PORT\" and
	 (.peer | test(\"^127\\\\.0\\\\.0\\\\.1:[0-9]+\$\")) and .transport == \"tcp\" and
	 (.reactor | $INT and . >= 0 and . < 2) and (.commands_in_flight | $NNINT and . <= 4)"
check "sessions: negotiated parameters" "$se" \
	".sessions[0].connections[0].params | (.header_digest | IN(\"None\", \"CRC32C\")) and
	 (.data_digest | IN(\"None\", \"CRC32C\")) and .max_recv_dsl == 262144 and
	 (.max_xmit_dsl | $INT and . >= 512) and (.max_burst | $INT and . >= 512) and
	 (.first_burst | $INT and . >= 512 and . <= 262144) and (.immediate_data | type == \"boolean\") and
	 (.initial_r2t | type == \"boolean\") and (.max_outstanding_r2t | $INT and . >= 1 and . <= 8)"
check "stats: one session and one connection active" "$(stats)" \
	'.sessions_active == 1 and .connections_active == 1'
m=$("$BIN/isergw-ctl" --socket "$SOCK" metrics)
if grep -qx "isergw_sessions_active 1" <<<"$m"; then
	pass "metrics: isergw_sessions_active 1 while the session is open"
else
	bad "metrics: isergw_sessions_active is not 1: $(grep isergw_sessions_active <<<"$m")"
fi
rc=0
wait "$BG" || rc=$?
if [ "$rc" -eq 0 ]; then pass "background write session ran"; else bad "background write session exit $rc: $(head -3 "$TMP/bg1.err")"; fi
se=$(wait_sessions '.sessions == []')
check "sessions: a write session disappears after logout" "$se" '.sessions == []'
check "stats: no session or connection left after the write session" "$(stats)" \
	'.sessions_active == 0 and .connections_active == 0'

# A reading session (isergw-bench's default randread), the same way.
"$BIN/isergw-bench" --url "$URL" --initiator-name "$INI2" --time 3 --qd 4 \
	>"$TMP/bg2.out" 2>&1 &
BG=$!
se=$(wait_sessions '.sessions | length == 1')
check "sessions: the reading session is listed" "$se" \
	".sessions | length == 1 and .[0].initiator_name == \"$INI2\""
sleep 1 # a second of reading at queue depth 4
se=$(ctl sessions)
check "sessions: commands_in_flight of a qd-4 reader is at most 4" "$se" \
	"[.sessions[] | select(.initiator_name == \"$INI2\") | .connections[0].commands_in_flight]
	 | length == 1 and .[0] <= 4"
rc=0
wait "$BG" || rc=$?
if [ "$rc" -eq 0 ]; then pass "background read session ran"; else bad "background read session exit $rc: $(tail -3 "$TMP/bg2.out")"; fi
se=$(wait_sessions '.sessions == []')
check "sessions: a read session disappears after logout" "$se" '.sessions == []'
check "stats: no session or connection left after the read session" "$(stats)" \
	'.sessions_active == 0 and .connections_active == 0'

# Two sessions at once.
"$BIN/isergw-bench" --url "$URL" --initiator-name "$INI1" --rw randwrite --sessions 2 \
	--time 2 >"$TMP/bg3.out" 2>&1 &
BG=$!
# (Only this initiator's sessions are looked at, so that a session left over by an earlier
# failure does not fail this check too.)
MINE="[.sessions[] | select(.initiator_name == \"$INI1\")]"
se=$(wait_sessions "$MINE | length == 2")
check "sessions: two concurrent sessions, distinct TSIH and ISID" "$se" \
	"$MINE | length == 2 and .[0].tsih != .[1].tsih and .[0].isid != .[1].isid"
check "stats: two more sessions active" "$(stats)" '.sessions_active >= 2 and .connections_active >= 2'
rc=0
wait "$BG" || rc=$?
if [ "$rc" -eq 0 ]; then
	pass "two-session run"
else
	bad "two-session run exit $rc: $(tail -3 "$TMP/bg3.out")"
fi
se=$(wait_sessions "$MINE | length == 0")
check "sessions: both gone after logout" "$se" "$MINE | length == 0"

# ---------------- counters move by exactly what was written and read ----------------
b=$(stats)
w=$("$BIN/isergw-bench" --url "$URL" --initiator-name "$INI1" --rw write --bs 64k --qd 4 \
	--bytes 4M --range 16M --json 2>"$TMP/w.err") || bad "write run failed: $(head -3 "$TMP/w.err")"
[ -n "$w" ] || w='{}'
a=$(stats)
d=$(delta "$b" "$a")
check "write run: 64 writes of 64 KiB, no error" "$w" '.errors == 0 and .write.ops == 64 and .write.bytes == 4194304'
check "stats: write_bytes +4194304, write_data_bytes +4194304" "$d" \
	'.write_bytes == 4194304 and .write_data_bytes == 4194304'
check "stats: write_commands +64, commands >= +64" "$d" '.write_commands == 64 and .commands >= 64'
check "stats: write_copy_bytes +0, no read counted" "$d" \
	'.write_copy_bytes == 0 and .read_commands == 0 and .read_bytes == 0'
check "stats: errors, rejects, protocol errors +0" "$d" \
	'.errors == 0 and .rejects == 0 and .protocol_errors == 0'
check "stats: connections_accepted +1" "$d" '.connections_accepted == 1'

b=$(stats)
r=$("$BIN/isergw-bench" --url "$URL" --initiator-name "$INI1" --rw read --bs 64k --qd 4 \
	--bytes 2M --range 16M --json 2>"$TMP/r.err") || bad "read run failed: $(head -3 "$TMP/r.err")"
[ -n "$r" ] || r='{}'
a=$(stats)
d=$(delta "$b" "$a")
check "read run: 32 reads of 64 KiB, no error" "$r" '.errors == 0 and .read.ops == 32 and .read.bytes == 2097152'
check "stats: read_bytes +2097152, read_commands +32" "$d" \
	'.read_bytes == 2097152 and .read_commands == 32'
check "stats: data_in_pdus >= +32, nothing written" "$d" \
	'.data_in_pdus >= 32 and .write_commands == 0 and .write_bytes == 0 and .write_data_bytes == 0'
check "stats: read_copy_bytes +0" "$d" '.read_copy_bytes == 0'

# The pattern tool (writes and reads of many sizes): write bytes move by what it wrote.
b=$(stats)
if "$BIN/iscsi_pattern" --url "$URL" --initiator-name "$INI1" --count 10 --max-size 1M \
	--seed 3 >"$TMP/pat.out" 2>&1; then
	pass "iscsi_pattern run"
else
	bad "iscsi_pattern run: $(tail -3 "$TMP/pat.out")"
fi
a=$(stats)
d=$(delta "$b" "$a")
check "stats after iscsi_pattern: write_data_bytes == write_bytes > 0, no copy" "$d" \
	'.write_bytes > 0 and .write_data_bytes == .write_bytes and .write_copy_bytes == 0'

# ---------------- flush ----------------
rc=0
out=$("$BIN/isergw-ctl" --socket "$SOCK" flush "$IQN" 0 2>&1) || rc=$?
if [ "$rc" -eq 0 ] && [ "$out" = "flushed $IQN lun 0" ]; then
	pass "flush TARGET 0: exit 0, prints 'flushed $IQN lun 0'"
else
	bad "flush TARGET 0: exit $rc, output '$out'"
fi
fj=$(ctl flush "$IQN" 0) || true
check "flush --json: result names the LUN" "${fj:-null}" ".target == \"$IQN\" and .lun == 0"
sleep 0.2
if grep -E "audit .*op=flush.*\"lun\":0.*result=ok" "$DAEMON_LOG" | grep -q "$IQN"; then
	pass "flush is audited in the log (uid, op, args, result ok)"
else
	bad "no audit line for the flush: $(grep -i audit "$DAEMON_LOG" | tail -2)"
fi
if grep -E "audit .*op=flush" "$DAEMON_LOG" | grep -qE "uid=[0-9]+ .*pid=[0-9]+"; then
	pass "audit line carries the peer's uid and pid"
else
	bad "audit line without uid/pid: $(grep -m1 'op=flush' "$DAEMON_LOG")"
fi
rc=0
out=$("$BIN/isergw-ctl" --socket "$SOCK" flush "$IQN" 7 2>&1) || rc=$?
if [ "$rc" -eq 1 ] && grep -q "^isergw-ctl: " <<<"$out"; then
	pass "flush of an unknown LUN: exit 1, '$out'"
else
	bad "flush of an unknown LUN: exit $rc, '$out'"
fi
sleep 0.2
if grep -E "audit .*op=flush.*\"lun\":7.*result=" "$DAEMON_LOG" | grep -qv "result=ok"; then
	pass "refused flush is audited with its error"
else
	bad "no audit line for the refused flush"
fi
rc=0
out=$("$BIN/isergw-ctl" --socket "$SOCK" flush "iqn.2026-11.io.isergw:nosuch" 0 2>&1) || rc=$?
if [ "$rc" -eq 1 ]; then
	pass "flush of an unknown target: exit 1 ($out)"
else
	bad "flush of an unknown target: exit $rc, '$out'"
fi

# ---------------- fault (this LUN has no fault_injection) ----------------
# raw_request JSON: one request line to the socket, prints the reply line.
raw_request() {
	python3 - "$SOCK" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
print(buf.decode().strip())
PY
}
rc=0
out=$("$BIN/isergw-ctl" --socket "$SOCK" fault "$IQN" 0 fail_writes=1 2>&1) || rc=$?
if [ "$rc" -eq 1 ] && grep -q "^isergw-ctl: LUN has no fault injection" <<<"$out"; then
	pass "fault on a LUN without fault_injection: exit 1, '$out'"
else
	bad "fault on a LUN without fault_injection: exit $rc, '$out'"
fi
r=$(raw_request "{\"version\":1,\"cmd\":\"fault\",\"lun\":{\"target\":\"$IQN\",\"lun\":7}}")
check "fault of an unknown LUN: failed, names the LUN" "$r" \
	'.ok == false and .code == "failed" and (.error | test("no LUN 7"))'
for args in '"fail_writes":-1' '"fail_reads":"2"' '"fail_flushes":4294967296' '"delay_ms":60001' \
	'"delay_ms":1.5'; do
	r=$(raw_request "{\"version\":1,\"cmd\":\"fault\",\"lun\":{\"target\":\"$IQN\",\"lun\":0},$args}")
	check "fault with $args: bad-request" "$r" '.ok == false and .code == "bad-request"'
done
r=$(raw_request '{"version":1,"cmd":"fault","lun":{"target":1,"lun":0}}')
check "fault with a bad lun reference: bad-request" "$r" '.ok == false and .code == "bad-request"'
sleep 0.2
if grep -E "audit .*op=fault.*\"fail_writes\":1.*result=error: LUN has no fault injection" "$DAEMON_LOG" | grep -q "$IQN"; then
	pass "refused fault is audited with its error"
else
	bad "no audit line for the refused fault: $(grep 'op=fault' "$DAEMON_LOG" | tail -2)"
fi

# ---------------- metrics ----------------
m=$("$BIN/isergw-ctl" --socket "$SOCK" metrics)
printf '%s\n' "$m" >"$TMP/metrics.txt"
if command -v promtool >/dev/null; then
	if promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool.out" 2>&1; then
		pass "promtool check metrics"
	else
		bad "promtool check metrics: $(head -5 "$TMP/promtool.out")"
	fi
else
	echo "   (promtool not installed: format checked by hand only)"
fi
if awk '/^#/ {next} /^$/ {next} !/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.eE+-]+$/ {bad=1; print "bad line: " $0} END {exit bad}' "$TMP/metrics.txt"; then
	pass "metrics: every sample line is NAME{LABELS} VALUE"
else
	bad "metrics: malformed sample lines"
fi
s=$(stats)
for pair in write_bytes:isergw_write_bytes_total write_data_bytes:isergw_write_data_bytes_total \
	read_bytes:isergw_read_bytes_total write_copy_bytes:isergw_write_copy_bytes_total \
	r2t_sent:isergw_r2t_sent_total commands:isergw_commands_total; do
	f=${pair%%:*} mname=${pair#*:}
	want=$(jq ".$f" <<<"$s")
	got=$(awk -v n="$mname" '$1 == n {print $2}' "$TMP/metrics.txt")
	if [ -n "$got" ] && [ "$got" = "$want" ]; then
		pass "metrics: $mname == stats.$f ($want)"
	else
		bad "metrics: $mname is '$got', stats.$f is $want"
	fi
done
for mname in isergw_build_info isergw_pool_capacity_lines isergw_dpt_entries_in_use \
	isergw_dpt_entries_high_water isergw_lun_backend_up isergw_connections_active; do
	if grep -q "^# TYPE $mname " "$TMP/metrics.txt" && grep -q "^# HELP $mname " "$TMP/metrics.txt"; then
		pass "metrics: $mname has HELP and TYPE"
	else
		bad "metrics: $mname missing or without HELP/TYPE"
	fi
done

# ---------------- usage and a stopped daemon ----------------
rc=0
"$BIN/isergw-ctl" --socket "$SOCK" frobnicate >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 2 ]; then
	pass "unknown ctl command: exit 2"
else
	bad "unknown ctl command: exit $rc"
fi

# Stop it here (lib.sh's stop_daemon would exit on a failure before the summary line).
pid=$DAEMON_PID
DAEMON_PID=""
t0=$SECONDS
kill -TERM "$pid"
for _ in $(seq 1 300); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
	kill -KILL "$pid" 2>/dev/null || true
	bad "daemon did not stop within 30 s of SIGTERM"
fi
rc=0
wait "$pid" || rc=$?
took=$((SECONDS - t0))
if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG"; then
	grep -E -A20 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG" | head -40 >&2
	bad "sanitizer report in the daemon log"
elif [ "$rc" -ne 0 ]; then
	bad "daemon exit status $rc"
elif grep -q "connections still open" "$DAEMON_LOG"; then
	bad "daemon stopped in ${took}s with connections still open: $(grep -m1 'connections still open' "$DAEMON_LOG")"
else
	pass "daemon stopped cleanly in ${took}s"
fi
if [ -e "$SOCK" ]; then
	bad "status socket left behind"
else
	pass "status socket removed at stop"
fi
for cmd in status stats sessions "flush $IQN 0"; do
	rc=0
	# shellcheck disable=SC2086
	out=$("$BIN/isergw-ctl" --socket "$SOCK" $cmd 2>&1) || rc=$?
	if [ "$rc" -eq 1 ] && [ "$out" = "isergw-ctl: cannot connect to $SOCK: No such file or directory (is isergw running?)" ]; then
		pass "stopped daemon: '$cmd' exits 1 with a clear message"
	else
		bad "stopped daemon: '$cmd' exit $rc, output '$out'"
	fi
done

echo "status: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
