#!/bin/bash
# Portal discovery (docs/iser.md, RD2-M3): a portal on 0.0.0.0 is advertised in SendTargets as
# the host's real addresses, never as 0.0.0.0; an iSER portal only where an RDMA device carries
# the address; and (as root, with a veth pair of our own) an address added while the daemon
# runs is in the next SendTargets answer and gone once removed. No existing interface or
# address is touched.
source "$(dirname "$0")/lib.sh"
PORT=$(free_port)
IPORT=$(free_port)
GATEWAY_EXTRA=$(printf '\n[portal rdma]\naddress = 0.0.0.0\nport = %s\ntransport = iser\n' "$IPORT")
write_config
sed -i "s/^address = 127.0.0.1$/address = 0.0.0.0/" "$TMP/isergw.conf"
grep -q "^address = 0.0.0.0$" "$TMP/isergw.conf" || fail "config not rewritten"
start_daemon
passed=0

discover() {
	iscsi-ls -i "$INI1" -s "iscsi://127.0.0.1:$PORT/" | grep -o "Portal:[^ ]*" | sed 's/^Portal://'
}

# The global IPv4 addresses of interfaces that are up (what 0.0.0.0 should become).
expected=$(ip -4 -o addr show scope global | awk '{print $2, $4}' | while read -r dev a; do
	ip link show "$dev" | grep -q "[<,]UP[,>]" && ip link show "$dev" | grep -q "LOWER_UP" &&
		echo "${a%/*}:$PORT,1"
done | sort)
[ -n "$expected" ] || expected="127.0.0.1:$PORT,1" # a host with loopback only
got=$(discover | sort)
echo "advertised: $(tr '\n' ' ' <<<"$got")"
grep -q "0\.0\.0\.0" <<<"$got" && fail "0.0.0.0 advertised: $got"
[ "$got" = "$expected" ] || fail "advertised [$got], expected [$expected]"
passed=$((passed + 1))

# The iSER portal on 0.0.0.0 (its own port): on a host without RDMA, nothing.
if [ ! -d /sys/class/infiniband ] || [ -z "$(ls /sys/class/infiniband)" ]; then
	grep -q ":$IPORT," <<<"$got" && fail "iSER portal advertised without an RDMA device: $got"
	passed=$((passed + 1))
fi
grep -q "portal addresses: + 127.0.0.1 (lo" "$DAEMON_LOG" || fail "no address log line"

wait_log() {
	for _ in $(seq 1 50); do
		grep -qF "$1" "$DAEMON_LOG" && return 0
		sleep 0.1
	done
	fail "no log line '$1'"
}

VETH="isgw$(($$ % 100000))"
ADDR="198.51.100.$(($$ % 250 + 1))"
if [ "$(id -u)" -eq 0 ] && ip link add "$VETH" type veth peer name "${VETH}p" 2>/dev/null; then
	trap 'rc=$?; ip link del "$VETH" 2>/dev/null || true; (exit $rc); cleanup' EXIT
	ip link set "${VETH}p" up
	ip link set "$VETH" up
	ip addr add "$ADDR/32" dev "$VETH"
	wait_log "portal addresses: + $ADDR ($VETH)"
	discover | grep -qxF "$ADDR:$PORT,1" || fail "added address $ADDR not advertised"
	passed=$((passed + 1))
	ip link del "$VETH"
	wait_log "portal addresses: - $ADDR"
	discover | grep -qF "$ADDR:" && fail "removed address $ADDR still advertised"
	passed=$((passed + 1))
else
	echo "address change part skipped (needs root and veth)"
fi
grep "portal addresses" "$DAEMON_LOG"
daemon_alive
stop_daemon
echo "portal_discovery: $passed passed, 0 failed"
