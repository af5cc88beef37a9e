#!/bin/bash
# Runs inside the VM (rxe-setup/vm.sh), in the switched root: loads the modules, brings up
# lo and the veth pair with one rxe device on each end, runs the script given as arguments
# and leaves its exit status in $ISERGW_VM_RESULTS/rc for the host, its output in
# output.log and the kernel log in dmesg.log.
#   veth0 10.99.0.1/24  rxe0      veth1 10.99.0.2/24  rxe1
# Addresses and names are exported as ISERGW_VM_ADDR0/1 and ISERGW_VM_RXE0/1.
set -uo pipefail

RES=${ISERGW_VM_RESULTS:-/results}
export ISERGW_VM_ADDR0=10.99.0.1 ISERGW_VM_ADDR1=10.99.0.2
export ISERGW_VM_RXE0=rxe0 ISERGW_VM_RXE1=rxe1
MODULES=(rdma_rxe rdma_ucm ib_uverbs iscsi_tcp ib_iser sd_mod ext4 veth)

setup_failed() {
	echo "vm-setup: FAIL: $*"
	dmesg >"$RES/dmesg.log" 2>&1
	echo 125 >"$RES/rc"
	exit 125
}

setup() {
	local t0=$SECONDS
	modprobe -a "${MODULES[@]}" || setup_failed "modprobe ${MODULES[*]}"
	ip link set lo up || setup_failed "lo up"
	# RDMA CM cannot use lo: rxe needs a real Ethernet device, hence a veth pair whose two
	# ends both live in this guest.
	ip link add veth0 type veth peer name veth1 || setup_failed "veth pair"
	ip addr add "$ISERGW_VM_ADDR0/24" dev veth0 || setup_failed "address on veth0"
	ip addr add "$ISERGW_VM_ADDR1/24" dev veth1 || setup_failed "address on veth1"
	ip link set veth0 up || setup_failed "veth0 up"
	ip link set veth1 up || setup_failed "veth1 up"
	# Both ends are local addresses: a packet from 10.99.0.2 arriving on veth0 would be
	# dropped as martian without accept_local, and RDMA CM address resolution from one end
	# to the other times out (ADDR_ERROR -110).
	local c
	for c in all veth0 veth1; do
		sysctl -qw "net.ipv4.conf.$c.accept_local=1" "net.ipv4.conf.$c.rp_filter=0" ||
			setup_failed "sysctl accept_local on $c"
	done
	rdma link add "$ISERGW_VM_RXE0" type rxe netdev veth0 || setup_failed "rdma link add rxe0"
	rdma link add "$ISERGW_VM_RXE1" type rxe netdev veth1 || setup_failed "rdma link add rxe1"
	echo "vm-setup: kernel $(uname -r), modules, veth pair and rxe0/rxe1 ready in $((SECONDS - t0)) s"
}

setup
echo "vm-setup: running $*"
# A script without the execute bit runs with bash.
[ -x "$1" ] || set -- /bin/bash "$@"
"$@" 2>&1 | tee "$RES/output.log"
rc=${PIPESTATUS[0]}
dmesg >"$RES/dmesg.log" 2>&1
echo "$rc" >"$RES/rc"
exit "$rc"
