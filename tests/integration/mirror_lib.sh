# Shared by the mirroring tests (test_mirror.sh, test_mirror_failover.sh): two gateways on
# loopback, each with its config, log, status socket and peer port. The test sets NODES (the
# node names) and PEER_OF[NODE] (the other node) before node_config, and sources lib.sh first.
# shellcheck disable=SC2034
export PYTHONDONTWRITEBYTECODE=1
IO="python3 $SRC/tests/integration/backend_iscsi_io.py"
declare -A PEER_OF
declare -A PID LOG SOCK PORT MPORT

# node_config NODE ROLE [EXTRA gateway lines]
node_config() {
	local n=$1 role=$2 extra=${3:-}
	PORT[$n]=${PORT[$n]:-$(free_port)}
	MPORT[$n]=${MPORT[$n]:-$(free_port)}
	SOCK[$n]="$TMP/$n.sock"
	LOG[$n]="$TMP/$n.log"
	local other=${PEER_OF[$n]} peer=""
	MPORT[$other]=${MPORT[$other]:-$(free_port)}
	# A secondary names its peer too when PEER_ALWAYS=1: it mirrors back once promoted.
	if [ "$role" = primary ] || [ "${PEER_ALWAYS:-0}" = 1 ]; then
		peer="mirror_peer = 127.0.0.1:${MPORT[$other]}"
	fi
	cat >"$TMP/$n.conf" <<CONF
[gateway]
var_dir = $TMP/$n-var
status_socket = ${SOCK[$n]}
reactors = 2
pool_size = ${POOL:-64M}
mirror_listen = 127.0.0.1:${MPORT[$n]}
mirror_timeout_ms = 2000
$extra

[portal main]
address = 127.0.0.1
port = ${PORT[$n]}

[target $IQN]

[lun $IQN:0]
path = $TMP/$n.img
size = $LUN_BYTES
mirror_role = $role
$peer
${LUN_EXTRA:-}
CONF
}

node_start() {
	local n=$1 from
	touch "${LOG[$n]}"
	from=$(($(wc -l <"${LOG[$n]}") + 1))
	"$BIN/isergw" --config "$TMP/$n.conf" >>"${LOG[$n]}" 2>&1 &
	PID[$n]=$!
	for _ in $(seq 1 100); do
		tail -n +"$from" "${LOG[$n]}" | grep -q "listening for iSCSI/TCP" && return 0
		kill -0 "${PID[$n]}" 2>/dev/null || { cat "${LOG[$n]}" >&2; fail "$n exited at start"; }
		sleep 0.1
	done
	fail "$n did not start"
}

node_kill() {
	kill -KILL "${PID[$1]}" 2>/dev/null || true
	wait "${PID[$1]}" 2>/dev/null || true
	PID[$1]=""
}

node_stop() {
	local n=$1 rc=0
	[ -n "${PID[$n]:-}" ] || return 0
	kill -TERM "${PID[$n]}"
	wait "${PID[$n]}" || rc=$?
	PID[$n]=""
	if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "${LOG[$n]}"; then
		cat "${LOG[$n]}" >&2
		fail "$n: sanitizer report"
	fi
	[ "$rc" -eq 0 ] || { tail -30 "${LOG[$n]}" >&2; fail "$n: exit status $rc"; }
}

mirror_cleanup() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		for n in $NODES; do
			[ -f "${LOG[$n]:-}" ] || continue
			echo "--- $n log (tail) ---" >&2
			grep -E -A40 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "${LOG[$n]}" >&2 ||
				tail -40 "${LOG[$n]}" >&2
		done
	fi
	for n in $NODES; do
		[ -n "${PID[$n]:-}" ] && kill -KILL "${PID[$n]}" 2>/dev/null
	done
	[ -n "${WRITERS:-}" ] && kill "$WRITERS" 2>/dev/null
	(exit $rc)
	cleanup
}
trap mirror_cleanup EXIT

ctl() { "$BIN/isergw-ctl" --socket "${SOCK[$1]}" "${@:2}"; }
mstat() { ctl "$1" --json mirror | jq -r ".volumes[0].$2"; }

# Until the peer has made everything stable (nothing would be resent after a cut).
wait_stable() { # [NODE: the primary, p]
	local n=${1:-p}
	for _ in $(seq 1 600); do
		[ "$(mstat "$n" peer_unstable_regions)" = 0 ] && return 0
		sleep 0.1
	done
	fail "the peer never flushed: $(mstat "$n" peer_unstable_regions) regions unstable"
}

wait_state() { # NODE STATE [SECONDS]
	for _ in $(seq 1 $((${3:-30} * 10))); do
		[ "$(mstat "$1" state)" = "$2" ] && return 0
		sleep 0.1
	done
	echo "$1: $(ctl "$1" --json mirror | jq -c '.volumes[0]')" >&2
	fail "$1 not $2 within ${3:-30} s"
}

writers_start() { # URL-PORT RESULT
	rm -f "$TMP/stop" "$TMP/progress"
	$IO writers "$1" "$IQN" "$INI1" "$TMP/progress" "$TMP/stop" "$2" >"$2.out" 2>&1 &
	WRITERS=$!
}
progress() { cat "$TMP/progress" 2>/dev/null || echo 0; }
wait_progress() {
	for _ in $(seq 1 600); do
		[ "$(progress)" -ge "$1" ] && return 0
		kill -0 "$WRITERS" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
writers_stop() {
	touch "$TMP/stop"
	local rc=0
	wait "$WRITERS" || rc=$?
	WRITERS=""
	return $rc
}

