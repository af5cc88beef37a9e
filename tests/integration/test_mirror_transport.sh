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

LUN_BYTES=$((16 << 20))
POOL=32M
NODES="p s"
source "$(dirname "$0")/mirror_lib.sh"
PEER_OF=([p]=s [s]=p)

primary() { # [LUN LINE]
	node_stop p
	rm -rf "$TMP/p-var" "$TMP/p.img"
	LUN_EXTRA="${1:-}" node_config p primary
	: >"${LOG[p]}" # each case reads the log from its own start
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
LUN_EXTRA="mirror_transport = roce" node_config p primary
if "$BIN/isergw" --config "$TMP/p.conf" >"$TMP/bad.log" 2>&1; then
	fail "a bad mirror_transport was accepted"
fi
grep -q "mirror_transport must be auto, tcp or rdma" "$TMP/bad.log" || { cat "$TMP/bad.log"; fail "no config error"; }
echo "ok - mirror_transport = roce refused"
node_stop s
echo "PASS: test_mirror_transport"
