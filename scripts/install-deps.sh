#!/bin/bash
# The one place that names every Debian package isergw builds, runs or tests with.
# Installs only what is missing; safe to run again.
set -euo pipefail
BUILD_PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
	libssl-dev liburing-dev libinih-dev libjansson-dev libiscsi-dev
	libibverbs-dev librdmacm-dev libnl-route-3-dev)
TEST_PKGS=(libcriterion-dev libiscsi-bin tgt python3 procps prometheus jq)
# Benchmark harness (scripts/run-bench.sh): chart, qemu-img bench with qemu's libiscsi block
# driver (qemu-block-extra), loopback TCP limit, --profile (perf). The test list includes
# them, so that the bench smoke test always runs under `make test`.
BENCH_PKGS=(gnuplot-nox qemu-utils qemu-block-extra iperf3 linux-perf)
# Soft-RoCE VM harness (rxe-setup/vm.sh) and the tests inside it: qemu (TCG), a static
# busybox for the initramfs, kmod (depmod/modprobe for the guest kernel's modules), the Linux
# initiator (open-iscsi), RDMA tools for the rxe smoke checks, e2fsprogs for mkfs/fsck.
# The guest kernel itself (linux-image-6.1.0-N-amd64) is fetched by vm.sh with
# `apt-get download` into build/vm/, never installed.
VM_PKGS=(qemu-system-x86 busybox-static kmod iproute2 open-iscsi rdma-core ibverbs-utils
	rdmacm-utils e2fsprogs)
want=("${BUILD_PKGS[@]}")
case "${1:-build}" in
test | bench) want+=("${TEST_PKGS[@]}" "${BENCH_PKGS[@]}" "${VM_PKGS[@]}") ;;
build) ;;
*) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
