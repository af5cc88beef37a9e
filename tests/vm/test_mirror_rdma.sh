#!/bin/bash
# Mirroring between two gateways over RDMA (docs/replication.md "The link"), inside the
# soft-RoCE VM (rxe-setup/vm.sh, docs/vm.md): CI's host kernel has no RDMA.
# On the host it boots the VM and runs itself inside; inside, step by step with a PASS or
# FAIL line each:
#   an RDMA client without the link's CM private data (rping) is refused, with a log line
#   the secondary (mirror_listen 10.99.0.2, rxe1) and the primary (10.99.0.1, rxe0,
#   mirror_transport auto) pair over RDMA: the status says rdma on both sides, RDMA byte
#   counters > 0, TCP byte counters 0; the first pairing copies every region
#   12 s idle: the heartbeats keep the link up (no link failure)
#   writes through the primary (tests/tools/iscsi_pattern), both flushed: backends identical
#   the secondary killed (-9): the primary goes degraded, writes keep succeeding
#   the secondary restarted: resync over RDMA, backends identical again, TCP still unused
#   SIGTERM: both exit 0 with no ERROR line
# ISERGW_VM_STEPS=pair stops after the idle check (while working on the link).
# Skips (77) for sanitized builds and where qemu cannot run (not in CI). Logs of the last run:
# $BUILD/vm/results-mirror-rdma/.
set -euo pipefail

IQN="iqn.2026-11.io.isergw:mirror"
INITIATOR="iqn.2026-11.io.isergw:mirror-initiator"
SELF=$(realpath "${BASH_SOURCE[0]}")

# --- on the host ---------------------------------------------------------------------

host_main() {
	: "${BIN:?BIN must point at build/bin}"
	: "${SRC:?SRC must point at the source tree}"
	local build=${BUILD:-$(dirname "$BIN")}
	skip_or_fail() {
		if [ -n "${CI:-}" ]; then
			echo "FAIL: $* (CI: scripts/install-deps.sh test installs everything)" >&2
			exit 1
		fi
		echo "SKIP: $*"
		exit 77
	}
	case "${SANITIZED:-OFF}" in
	ON | on | 1 | TRUE | true | YES | yes)
		echo "SKIP: sanitized build (the VM tests run the Release daemon only)"
		exit 77
		;;
	esac
	command -v qemu-system-x86_64 >/dev/null || skip_or_fail "qemu-system-x86_64 missing"
	qemu-system-x86_64 --version >/dev/null 2>&1 || skip_or_fail "qemu-system-x86_64 does not run"
	bash "$SRC/rxe-setup/vm.sh" check || skip_or_fail "the VM harness lacks a tool"
	[ "$(id -u)" -eq 0 ] || skip_or_fail "the VM harness runs as root (9p export of /)"
	local t
	for t in isergw isergw-ctl iscsi_pattern; do
		[ -x "$BIN/$t" ] || { echo "FAIL: $BIN/$t not built" >&2; exit 1; }
	done
	for t in jq rping; do
		command -v $t >/dev/null || { echo "FAIL: $t missing (scripts/install-deps.sh test)" >&2; exit 1; }
	done

	local results="$build/vm/results-mirror-rdma" rc=0 start=$SECONDS
	export ISERGW_VM_DIR="$build/vm"
	bash "$SRC/rxe-setup/vm.sh" --timeout 400 --results "$results" --env BIN --env SRC \
		--env ISERGW_VM_STEPS \
		-- "$SELF" || rc=$?
	echo "test_mirror_rdma: VM run (boot, test, power off) took $((SECONDS - start)) s"
	case $rc in
	0) echo "PASS: mirror over RDMA" ;;
	124) echo "FAIL: the VM run timed out; logs in $results" >&2 ;;
	125) echo "FAIL: the VM did not come up or crashed; logs in $results" >&2 ;;
	*) echo "FAIL: mirror over RDMA (status $rc); logs in $results" >&2 ;;
	esac
	if [ "$rc" -ne 0 ]; then
		for t in p s; do
			[ -f "$results/$t.log" ] || continue
			echo "--- $t log (tail) ---" >&2
			tail -30 "$results/$t.log" >&2
		done
		[ -f "$results/output.log" ] && grep '^FAIL: ' "$results/output.log" >&2
	fi
	# Never 77 from here: a skip is decided above, before the VM runs.
	[ "$rc" -eq 0 ] || exit 1
}

# --- in the guest --------------------------------------------------------------------

WORK=""
declare -A PID ADDR
ADDR[p]=10.99.0.1
ADDR[s]=10.99.0.2
MPORT=3270
STEP=""
T0=$SECONDS

step() {
	STEP=$1
	echo "--- [$((SECONDS - T0)) s] $STEP"
}
pass() { echo "PASS: $STEP"; }
fail() {
	echo "FAIL: $STEP: $*" >&2
	exit 1
}

guest_cleanup() {
	local rc=$?
	set +e
	for n in p s; do
		[ -n "${PID[$n]:-}" ] && kill -KILL "${PID[$n]}" 2>/dev/null
	done
	if [ -n "$WORK" ] && [ -n "${ISERGW_VM_RESULTS:-}" ]; then
		cp "$WORK/p.log" "$WORK/s.log" "$ISERGW_VM_RESULTS/" 2>/dev/null
	fi
	touch "$WORK/stop-monitor"
	echo "test_mirror_rdma: longest guest stall $(cat "$WORK/max-stall-ms" 2>/dev/null) ms (100 ms expected)"
	echo "test_mirror_rdma: guest part took $((SECONDS - T0)) s, status $rc"
	exit $rc
}

# node_config NODE ROLE
node_config() {
	local n=$1 role=$2 peer=""
	[ "$role" = primary ] && peer="mirror_peer = ${ADDR[s]}:$MPORT"
	cat >"$WORK/$n.conf" <<CONF
[gateway]
var_dir = $WORK/$n-var
status_socket = $WORK/$n.sock
reactors = 2
pool_size = 64M
log_level = info
mirror_listen = ${ADDR[$n]}:$MPORT
mirror_timeout_ms = 30000

[portal main]
address = ${ADDR[$n]}
port = 3260

[target $IQN]

[lun $IQN:0]
path = $WORK/$n.img
size = 16M
mirror_role = $role
$peer
CONF
}

node_start() {
	local n=$1 from
	touch "$WORK/$n.log"
	from=$(($(wc -l <"$WORK/$n.log") + 1))
	"$BIN/isergw" --config "$WORK/$n.conf" >>"$WORK/$n.log" 2>&1 &
	PID[$n]=$!
	for _ in $(seq 1 300); do
		tail -n +"$from" "$WORK/$n.log" | grep -q "listening for iSCSI/TCP" && return 0
		kill -0 "${PID[$n]}" 2>/dev/null || { cat "$WORK/$n.log"; fail "$n exited at start"; }
		sleep 0.1
	done
	fail "$n did not start in 30 s"
}

node_stop() {
	local n=$1 rc=0
	kill -TERM "${PID[$n]}"
	wait "${PID[$n]}" || rc=$?
	PID[$n]=""
	[ "$rc" -eq 0 ] || { tail -20 "$WORK/$n.log"; fail "$n: exit status $rc"; }
	! grep -q "ERROR" "$WORK/$n.log" || { grep "ERROR" "$WORK/$n.log"; fail "$n logged an ERROR"; }
}

ctl() { "$BIN/isergw-ctl" --socket "$WORK/$1.sock" "${@:2}"; }
mstat() { ctl "$1" --json mirror | jq -r ".volumes[0].$2"; }

wait_state() { # NODE STATE SECONDS
	for _ in $(seq 1 $(($3 * 5))); do
		[ "$(mstat "$1" state)" = "$2" ] && return 0
		sleep 0.2
	done
	ctl "$1" --json mirror | jq -c '.volumes[0]'
	fail "$1 not $2 within $3 s"
}

# The primary's link is RDMA and TCP carried nothing (on either side).
assert_rdma() {
	local n v
	[ "$(mstat p transport)" = rdma ] || fail "primary transport $(mstat p transport), not rdma"
	[ "$(mstat s transport)" = rdma ] || fail "secondary transport $(mstat s transport), not rdma"
	for n in p s; do
		for v in rdma_tx_bytes rdma_rx_bytes; do
			[ "$(mstat $n $v)" -gt 0 ] || fail "$n $v = $(mstat $n $v)"
		done
		for v in tcp_tx_bytes tcp_rx_bytes; do
			[ "$(mstat $n $v)" -eq 0 ] || fail "$n $v = $(mstat $n $v): TCP was used"
		done
	done
	for n in p s; do
		echo "$n: $(ctl $n --json mirror | jq -c '.volumes[0] | {state, transport,
			rdma_tx_bytes, rdma_rx_bytes, rdma_sends, rdma_recvs, rdma_credit_updates,
			rdma_wc_errors, link_failures}')"
	done
}

same_images() {
	ctl p flush "$IQN" 0 >/dev/null || fail "flush p"
	ctl s flush "$IQN" 0 >/dev/null 2>&1 || true
	local a b
	a=$(md5sum <"$WORK/p.img")
	b=$(md5sum <"$WORK/s.img")
	echo "md5 primary ${a%% *} secondary ${b%% *}"
	[ "$a" = "$b" ]
}

pattern() { # COUNT SEED
	"$BIN/iscsi_pattern" --count "$1" --seed "$2" --max-size 256k --initiator-name "$INITIATOR" \
		"iscsi://${ADDR[p]}:3260/$IQN/0" | tail -1
}

# Records the longest gap in the guest between two 100 ms waits (TCG on a loaded host can
# freeze the guest for seconds, which looks like a silent peer to the heartbeats).
stall_monitor() {
	local max=0 t0 t1 gap
	mkfifo "$WORK/tick"
	exec 7<>"$WORK/tick"
	while [ ! -e "$WORK/stop-monitor" ]; do
		t0=${EPOCHREALTIME/./}
		read -r -t 0.1 -u 7 _ || true
		t1=${EPOCHREALTIME/./}
		gap=$(((t1 - t0) / 1000))
		if [ "$gap" -gt "$max" ]; then
			max=$gap
			echo "$max" >"$WORK/max-stall-ms"
		fi
	done
}

guest_main() {
	WORK=$(mktemp -d /tmp/isergw-mirror.XXXXXX)
	trap guest_cleanup EXIT
	stall_monitor &

	# Under TCG rxe computes every packet's ICRC in emulated code and runs its send queue in
	# the poster's system call: a bulk transfer starves the daemons' reactors for seconds
	# (measured: the mirror's 20 ms timer 3 s late). A larger MTU (rxe 4096) means fewer
	# packets, and the heartbeat timeout is 30 s, so only a link that really stops fails.
	ip link set veth0 mtu 9000 && ip link set veth1 mtu 9000 || fail "veth mtu 9000"
	rdma link show

	step "the secondary on ${ADDR[s]} listens for RDMA beside TCP"
	node_config s secondary
	node_start s
	grep -q "listening for primaries over RDMA on ${ADDR[s]}:$MPORT" "$WORK/s.log" ||
		{ cat "$WORK/s.log"; fail "no RDMA listener"; }
	pass

	step "an RDMA client without the link's private data (rping) is refused"
	if timeout 20 rping -c -a "${ADDR[s]}" -I "${ADDR[p]}" -p "$MPORT" -C 1 >"$WORK/rping.log" 2>&1; then
		cat "$WORK/rping.log"
		fail "rping connected to the mirror port"
	fi
	grep -q "RDMA connection from ${ADDR[p]}:[0-9]* refused: .*mirror link private data" "$WORK/s.log" ||
		{ tail -5 "$WORK/s.log"; fail "no refusal logged"; }
	kill -0 "${PID[s]}" || fail "the secondary died"
	pass

	step "the primary on ${ADDR[p]} (mirror_transport auto) pairs over RDMA"
	node_config p primary
	node_start p
	wait_state p synchronized 90
	[ "$(mstat p resync_copied_regions)" -eq 16 ] ||
		fail "first pairing copied $(mstat p resync_copied_regions) regions, not 16"
	assert_rdma
	! grep -q "falling back to TCP" "$WORK/p.log" || fail "the primary fell back to TCP"
	pass

	step "idle for 12 s: heartbeats keep the link up"
	sleep 12
	[ "$(mstat p link_failures)" -eq 0 ] || fail "the link failed $(mstat p link_failures) times"
	[ "$(mstat p state)" = synchronized ] || fail "state $(mstat p state)"
	assert_rdma
	pass
	[ "${ISERGW_VM_STEPS:-}" != pair ] || return 0

	step "writes through the primary reach both backends"
	pattern 60 1 || fail "pattern writes failed"
	same_images || fail "backends differ after mirrored writes"
	[ "$(mstat p mirrored_writes)" -gt 0 ] || fail "no write was mirrored"
	assert_rdma
	pass

	step "the secondary killed: the primary degrades, writes keep succeeding"
	kill -KILL "${PID[s]}"
	wait "${PID[s]}" 2>/dev/null || true
	PID[s]=""
	pattern 40 2 || fail "a write failed with the secondary gone"
	wait_state p degraded 20
	pattern 20 3 || fail "a write failed while degraded"
	[ "$(mstat p out_of_sync_regions)" -gt 0 ] || fail "no region recorded while degraded"
	echo "out of sync: $(mstat p out_of_sync_regions) regions, degraded writes $(mstat p degraded_writes)"
	pass

	step "the secondary restarted: resync over RDMA, backends identical"
	node_start s
	wait_state p synchronized 90
	[ "$(mstat p out_of_sync_regions)" -eq 0 ] || fail "regions left: $(mstat p out_of_sync_regions)"
	assert_rdma
	same_images || fail "backends differ after the resync"
	pass

	[ "$(mstat p link_failures)" -eq 1 ] || fail "link failures $(mstat p link_failures), not 1 (the kill)"

	step "SIGTERM: both gateways exit cleanly"
	node_stop p
	node_stop s
	pass
	echo "test_mirror_rdma: all steps passed"
}

if [ -n "${ISERGW_VM:-}" ]; then
	guest_main
else
	host_main
fi
