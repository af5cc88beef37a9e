#!/bin/bash
# Soft-RoCE on a host whose kernel has rdma_rxe: put an rxe device on top of an Ethernet
# interface so that RDMA (and iSER) runs over it, and take it away again.
#   rxe.sh up IFACE [NAME]   creates NAME (default rxe0) on IFACE
#   rxe.sh down [NAME]       removes NAME (default rxe0)
#   rxe.sh status            lists RDMA links
# Needs root, iproute2's `rdma` and a kernel with CONFIG_RDMA_RXE. Where the kernel has no
# RDMA at all (CI's machines), use the VM harness instead: rxe-setup/vm.sh (docs/vm.md).
set -euo pipefail

die() {
	echo "rxe.sh: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 up IFACE [NAME] | down [NAME] | status" >&2
	exit 2
}

need_rdma() {
	command -v rdma >/dev/null || die "the rdma tool (iproute2) is missing"
	[ "$(id -u)" -eq 0 ] || die "must run as root"
	modprobe rdma_rxe 2>/dev/null || true
	rdma link show >/dev/null 2>&1 ||
		die "no RDMA support in this kernel (rdma link fails); use rxe-setup/vm.sh"
}

rxe_up() {
	local iface=$1 name=${2:-rxe0}
	[ -d "/sys/class/net/$iface" ] || die "no interface $iface"
	need_rdma
	# rdma_ucm and ib_uverbs give user space (librdmacm, libibverbs) access to the device.
	modprobe -a rdma_ucm ib_uverbs 2>/dev/null || true
	if [ -d "/sys/class/infiniband/$name" ]; then
		echo "rxe.sh: $name exists already"
	else
		ip link set "$iface" up
		rdma link add "$name" type rxe netdev "$iface"
	fi
	rdma link show "$name/1"
}

rxe_down() {
	local name=${1:-rxe0}
	need_rdma
	[ -d "/sys/class/infiniband/$name" ] || die "no RDMA device $name"
	rdma link delete "$name"
	echo "rxe.sh: removed $name"
}

case "${1:-}" in
up) [ $# -ge 2 ] || usage; rxe_up "$2" "${3:-}" ;;
down) rxe_down "${2:-}" ;;
status) need_rdma; rdma link show ;;
*) usage ;;
esac
