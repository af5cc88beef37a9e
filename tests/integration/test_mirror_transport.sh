#!/bin/bash
# The mirror link's transport on a host without RDMA (docs/replication.md "The link"; the
# RDMA link itself is vm.test_mirror_rdma):
#  1. the secondary says once that it serves TCP only (no RDMA device);
#  2. mirror_transport auto (the default): the primary logs the fallback to TCP once (not on
#     every reconnect), pairs, the status says tcp, TCP byte counters > 0, RDMA ones 0;
#  3. mirror_transport = tcp: pairs without trying RDMA (no fallback line);
#  4. mirror_transport = rdma: never pairs, stays degraded, the last error says why, and the
#     writes still succeed (recorded for resync);
#  5. mirror_transport = bogus: the configuration is refused.
# Skipped (77) on a host with an RDMA device.
source "$(dirname "$0")/lib.sh"

if compgen -G "/sys/class/infiniband/*" >/dev/null; then
	echo "SKIP: this host has an RDMA device (the fallback is tested where there is none)"
	exit 77
fi

declare -A PID LOG SOCK MPORT
MPORT[s]=$(free_port)
MPORT[p]=$(free_port)

node_config() { # NODE ROLE [LUN LINE]
	local n=$1 role=$2 peer=""
	SOCK[$n]="$TMP/$n.sock"
	LOG[$n]="$TMP/$n.log"
	[ "$role" = primary ] && peer="mirror_peer = 127.0.0.1:${MPORT[s]}"
	cat >"$TMP/$n.conf" <<CONF
[gateway]
var_dir = $TMP/$n-var
status_socket = ${SOCK[$n]}
reactors = 1
pool_size = 32M
mirror_listen = 127.0.0.1:${MPORT[$n]}
mirror_timeout_ms = 2000

[portal main]
address = 127.0.0.1
port = $(free_port)

[target $IQN]

[lun $IQN:0]
path = $TMP/$n.img
size = 16M
mirror_role = $role
$peer
${3:-}
CONF
}

node_start() {
	local n=$1
	: >"${LOG[$n]}"
	"$BIN/isergw" --config "$TMP/$n.conf" >>"${LOG[$n]}" 2>&1 &
	PID[$n]=$!
	for _ in $(seq 1 100); do
		grep -q "listening for iSCSI/TCP" "${LOG[$n]}" && return 0
		kill -0 "${PID[$n]}" 2>/dev/null || { cat "${LOG[$n]}" >&2; fail "$n exited at start"; }
		sleep 0.1
	done
	fail "$n did not start"
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

transport_cleanup() {
	local rc=$?
	for n in p s; do
		[ -n "${PID[$n]:-}" ] && kill -KILL "${PID[$n]}" 2>/dev/null
		[ "$rc" -ne 0 ] && [ -f "${LOG[$n]:-}" ] && { echo "--- $n log ---" >&2; tail -30 "${LOG[$n]}" >&2; }
	done
	(exit $rc)
	cleanup
}
trap transport_cleanup EXIT

ctl() { "$BIN/isergw-ctl" --socket "${SOCK[$1]}" "${@:2}"; }
mstat() { ctl "$1" --json mirror | jq -r ".volumes[0].$2"; }
wait_state() { # NODE STATE
	for _ in $(seq 1 300); do
		[ "$(mstat "$1" state)" = "$2" ] && return 0
		sleep 0.1
	done
	ctl "$1" --json mirror | jq -c '.volumes[0]' >&2
	fail "$1 not $2 within 30 s"
}
primary() { # [LUN LINE]
	node_stop p
	rm -rf "$TMP/p-var" "$TMP/p.img"
	node_config p primary "${1:-}"
	node_start p
}

echo "-- 1. the secondary serves TCP only"
node_config s secondary
node_start s
[ "$(grep -c "no RDMA device on this host; primaries connect over TCP only" "${LOG[s]}")" -eq 1 ] ||
	fail "the secondary did not say once that it serves TCP only"
echo "ok - secondary: no RDMA device, TCP only"

echo "-- 2. auto falls back to TCP, logged once"
primary
wait_state p synchronized
[ "$(mstat p transport_mode)" = auto ] || fail "transport_mode $(mstat p transport_mode)"
[ "$(mstat p transport)" = tcp ] || fail "primary transport $(mstat p transport)"
[ "$(mstat s transport)" = tcp ] || fail "secondary transport $(mstat s transport)"
[ "$(mstat p tcp_tx_bytes)" -gt $((16 << 20)) ] || fail "tcp_tx_bytes $(mstat p tcp_tx_bytes)"
[ "$(mstat s tcp_rx_bytes)" -gt $((16 << 20)) ] || fail "secondary tcp_rx_bytes $(mstat s tcp_rx_bytes)"
for v in rdma_tx_bytes rdma_rx_bytes rdma_sends; do
	[ "$(mstat p $v)" -eq 0 ] || fail "$v $(mstat p $v)"
done
grep -q "RDMA to the mirror peer 127.0.0.1:${MPORT[s]} failed (no RDMA device on this host): falling back to TCP" "${LOG[p]}" ||
	fail "no fallback line"
ctl p mirror | grep -q " tcp " || fail "isergw-ctl mirror does not show the link: $(ctl p mirror)"
# A reconnect tries RDMA again and falls back again, silently.
ctl p mirror-establish "$IQN" 0 >/dev/null || fail "establish"
wait_state p synchronized
[ "$(grep -c "falling back to TCP" "${LOG[p]}")" -eq 1 ] || fail "the fallback was logged more than once"
echo "ok - auto: fell back to TCP once, paired, $(mstat p tcp_tx_bytes) bytes over TCP"

echo "-- 3. mirror_transport = tcp"
primary "mirror_transport = tcp"
wait_state p synchronized
[ "$(mstat p transport)" = tcp ] || fail "transport $(mstat p transport)"
! grep -q "falling back" "${LOG[p]}" || fail "tcp tried RDMA"
echo "ok - tcp: paired without trying RDMA"

echo "-- 4. mirror_transport = rdma on a host without RDMA"
primary "mirror_transport = rdma"
sleep 3
[ "$(mstat p state)" = degraded ] || fail "state $(mstat p state)"
[ "$(mstat p transport)" = none ] || fail "transport $(mstat p transport)"
mstat p last_error | grep -q "no RDMA device" || fail "last_error: $(mstat p last_error)"
[ "$(mstat p tcp_tx_bytes)" -eq 0 ] || fail "rdma-only used TCP"
[ "$(mstat s state)" != synchronized ] || fail "the secondary paired"
[ "$(grep -c "cannot reach the mirror peer .* over RDMA" "${LOG[p]}")" -eq 1 ] ||
	fail "the RDMA failure was not logged exactly once"
"$BIN/iscsi_pattern" --count 10 --max-size 64k --initiator-name "$INI1" \
	"iscsi://127.0.0.1:$(awk '/^port/ {print $3}' "$TMP/p.conf")/$IQN/0" | tail -1 ||
	fail "writes failed while degraded"
[ "$(mstat p degraded_writes)" -gt 0 ] || fail "no degraded write"
echo "ok - rdma only: degraded ($(mstat p last_error)), writes recorded"
node_stop p

echo "-- 5. a bad mirror_transport is refused"
node_config p primary "mirror_transport = roce"
if "$BIN/isergw" --config "$TMP/p.conf" >"$TMP/bad.log" 2>&1; then
	fail "a bad mirror_transport was accepted"
fi
grep -q "mirror_transport must be auto, tcp or rdma" "$TMP/bad.log" || { cat "$TMP/bad.log"; fail "no config error"; }
echo "ok - mirror_transport = roce refused"
node_stop s
echo "PASS: test_mirror_transport"
