#!/bin/bash
# The R2T data path under a cache-line pool far smaller than the data in flight (issue 3):
# 1 MiB of pool (two reactors: 16 lines of 32 KiB each) against 64 concurrent 1 MiB writes,
# on one session and on two, with the initiator's default negotiation and with everything
# solicited (ImmediateData=No, InitialR2T=Yes). Every write must complete, the data read
# back must be the data written, the counters must prove the zero-copy write path
# (write_copy_bytes 0, write_data_bytes exactly the bytes written, R2Ts sent), and the pool
# must be whole again (no line, no DPT entry held) once idle.
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
		bad "$desc [$filter] on $(jq -c . <<<"$json" 2>/dev/null || echo "$json")"
	fi
}
ctl() {
	"$BIN/isergw-ctl" --socket "$TMP/isergw.sock" --json "$@"
}
# Stops the daemon, recording the outcome instead of exiting (lib.sh's stop_daemon exits).
stop_checked() {
	local pid=$DAEMON_PID rc=0 t0=$SECONDS
	DAEMON_PID=""
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
		bad "$1: daemon did not stop within 30 s of SIGTERM"
	fi
	wait "$pid" || rc=$?
	local took=$((SECONDS - t0))
	if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG"; then
		grep -E -A20 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG" | head -40 >&2
		bad "$1: sanitizer report in the daemon log"
	elif [ "$rc" -ne 0 ]; then
		bad "$1: daemon exit status $rc"
	elif grep -q "connections still open" "$DAEMON_LOG"; then
		bad "$1: daemon stopped in ${took}s with connections still open ($(grep -m1 'connections still open' "$DAEMON_LOG"))"
	else
		pass "$1: daemon stopped cleanly in ${took}s"
	fi
}
# Polls the pool until nothing is held (bounded), then checks it.
pool_idle() {
	local what=$1 pool=""
	for _ in $(seq 1 150); do
		pool=$(ctl pool)
		if jq -e '.dpt_entries_in_use == 0 and .lines_dirty == 0 and
		          .lines_free + .lines_clean == .lines_total and
		          .commands_waiting_for_lines == 0' >/dev/null <<<"$pool"; then
			break
		fi
		sleep 0.1
	done
	check "$what: idle pool holds no DPT entry" "$pool" '.dpt_entries_in_use == 0'
	# Lines the write-back cache keeps are clean once destaged (maximum age 5 s).
	check "$what: idle pool has every line free or clean in the cache" "$pool" \
		'.lines_dirty == 0 and .lines_free + .lines_clean == .lines_total'
	check "$what: no command waiting for lines" "$pool" '.commands_waiting_for_lines == 0'
	check "$what: DPT was used (high-water mark > 0)" "$pool" '.dpt_high_water > 0'
}
# Samples the pool while a run is going (background); prints the largest values seen.
sample_pool() {
	local out=$1
	echo '{"waiting":0,"dpt":0,"free_min":1000000}' >"$out"
	for _ in $(seq 1 600); do
		local p
		p=$(ctl pool 2>/dev/null) || break
		jq -c --argjson p "$p" '{waiting: ([.waiting, $p.commands_waiting_for_lines] | max),
			dpt: ([.dpt, $p.dpt_entries_in_use] | max),
			free_min: ([.free_min, $p.lines_free] | min)}' "$out" >"$out.new" && mv "$out.new" "$out"
		sleep 0.05
		[ -f "$TMP/sampling" ] || break
	done
}

RANGE=128M
RANGE_BYTES=$((128 << 20))
BLOCKS=$((RANGE_BYTES / 512))

# run_case NAME SESSIONS QD GATEWAY_EXTRA WRITE_BYTES [exact-r2t-count]
run_case() {
	local name=$1 sessions=$2 qd=$3 extra=$4 wbytes=$5 exact_r2t=${6:-}
	echo "-- $name: $sessions session(s) x qd $qd of 1 MiB writes, pool 1M"
	rm -f "$TMP/isergw.conf" "$TMP/lun0.img"
	POOL_SIZE=1M LUN_SIZE=256M GATEWAY_EXTRA="$extra" write_config
	start_daemon
	local pool before after
	pool=$(ctl pool)
	check "$name: pool is 32 lines of 32 KiB" "$pool" '.lines_total == 32 and .line_size == 32768'
	before=$(ctl stats)

	touch "$TMP/sampling"
	sample_pool "$TMP/samples.json" &
	local sampler=$!
	local w rc=0
	w=$("$BIN/isergw-bench" --url "$URL" --initiator-name "$INI1" --rw write --bs 1M \
		--qd "$qd" --sessions "$sessions" --range "$RANGE" --bytes "$wbytes" --verify \
		--json 2>"$TMP/bench-w.err") || rc=$?
	rm -f "$TMP/sampling"
	wait "$sampler" || true
	if [ "$rc" -eq 0 ]; then
		pass "$name: write run exit status 0"
	else
		bad "$name: write run exit status $rc: $(head -5 "$TMP/bench-w.err")"
	fi
	[ -n "$w" ] || w='{}'
	check "$name: every write completed, no error" "$w" \
		".errors == 0 and .write.ops == ($wbytes / 1048576) and .write.bytes == $wbytes"
	echo "   pool while writing: $(cat "$TMP/samples.json")"
	daemon_alive

	# (b) counters after the write-only run
	after=$(ctl stats)
	local delta
	delta=$(jq -n --argjson a "$before" --argjson b "$after" \
		'$b | with_entries(.value -= ($a[.key] // 0))')
	check "$name: write_copy_bytes == 0 (zero-copy write path)" "$after" '.write_copy_bytes == 0'
	check "$name: write_data_bytes grew by exactly the bytes written ($wbytes)" "$delta" \
		".write_data_bytes == $wbytes"
	check "$name: write_bytes grew by exactly the bytes written" "$delta" ".write_bytes == $wbytes"
	check "$name: write_commands grew by the writes" "$delta" \
		".write_commands == ($wbytes / 1048576)"
	check "$name: R2Ts were sent" "$delta" '.r2t_sent > 0'
	if [ -n "$exact_r2t" ]; then
		check "$name: one R2T per 32 KiB line piece ($exact_r2t)" "$delta" \
			".r2t_sent == $exact_r2t"
		check "$name: every byte arrived as solicited Data-Out" "$delta" \
			".data_out_pdus >= $exact_r2t"
	fi
	check "$name: no error, reject or protocol error" "$delta" \
		'.errors == 0 and .rejects == 0 and .protocol_errors == 0'
	pool_idle "$name after writing"

	# read back everything: every block must carry its own LBA and a consistent pattern
	local r
	rc=0
	r=$("$BIN/isergw-bench" --url "$URL" --initiator-name "$INI2" --rw read --bs 1M \
		--qd "$qd" --sessions "$sessions" --range "$RANGE" --bytes "$RANGE" --verify \
		--json 2>"$TMP/bench-r.err") || rc=$?
	if [ "$rc" -eq 0 ]; then
		pass "$name: read-back exit status 0"
	else
		bad "$name: read-back exit status $rc: $(head -5 "$TMP/bench-r.err")"
	fi
	[ -n "$r" ] || r='{}'
	check "$name: read back the whole range, no error" "$r" \
		".errors == 0 and .read.bytes == $RANGE_BYTES"
	check "$name: every block read back is the block written ($BLOCKS blocks)" "$r" \
		".verify.mismatched_blocks == 0 and .verify.unchecked_blocks == 0 and
		 .verify.checked_blocks == $BLOCKS"
	check "$name: read path copied nothing" "$(ctl stats)" '.read_copy_bytes == 0'
	pool_idle "$name after reading"
	# Both initiators logged out: nothing of their sessions may remain.
	local st=""
	for _ in $(seq 1 50); do
		st=$(ctl stats)
		jq -e '.connections_active == 0 and .sessions_active == 0' >/dev/null <<<"$st" && break
		sleep 0.1
	done
	check "$name: sessions and connections gone after logout" "$st" \
		'.connections_active == 0 and .sessions_active == 0'
	stop_checked "$name"
}

# (a) one session, 64 commands of 1 MiB in flight; sequential, each chunk written once.
run_case one-session 1 64 "" "$RANGE_BYTES"
# (a) two sessions, 32 each (64 in flight); two passes over the range so that every chunk
# is written even if one session gets ahead of the other.
run_case two-sessions 2 32 "" $((2 * RANGE_BYTES))
# Everything solicited: no immediate or unsolicited data (which may use heap buffers), so
# every byte waits for a pool line and comes in through an R2T: 32 per 1 MiB write.
run_case all-solicited 1 64 "immediate_data = no
initial_r2t = yes" "$RANGE_BYTES" $((RANGE_BYTES / 32768))

echo "datapath: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
