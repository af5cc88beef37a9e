#!/bin/bash
# Soft-RoCE VM harness for hosts whose kernel has no RDMA (CI's machines): boots Debian's
# kernel under qemu TCG with the host's file system as a read-only 9p root (overlay with a
# tmpfs upper layer, so the guest never writes to the host), sets up rxe devices on a veth
# pair inside the guest and runs one script there. docs/vm.md explains the parts;
# ../shared/docs/soft-roce-vm.md lists the measured facts they rest on.
#
#   vm.sh [OPTIONS] SCRIPT [ARGS...]   runs SCRIPT (a path on the host) inside the guest;
#                                      exits with its status, prints its output and the
#                                      guest console
#   vm.sh prepare                      only builds the cached kernel and initramfs
#   vm.sh check                        exits 0 when everything the harness needs is there
# Options:
#   --timeout SEC    kill the VM after SEC seconds (default 600); exit status 124
#   --results DIR    keep the guest's results there (output.log, console.log, dmesg.log and
#                    whatever the script writes to $ISERGW_VM_RESULTS); default: a temporary
#                    directory removed at the end
#   --env NAME[=VAL] pass a variable into the guest (CI is always passed)
#   --mem MB, --smp N  guest memory (default 1536) and CPUs (default 2)
# Exit status: the script's; 124 on timeout; 125 when the guest did not report a status
# (setup failed, kernel panic); 2 on bad usage; 3 when something the harness needs is missing.
#
# Inside the guest: modules rdma_rxe, rdma_ucm, ib_uverbs, iscsi_tcp, ib_iser, sd_mod, ext4
# loaded; lo up; veth0 10.99.0.1/24 <-> veth1 10.99.0.2/24 with rxe0 on veth0 and rxe1 on
# veth1; every write outside the results share goes to tmpfs (the overlay's upper layer;
# /run is a fresh tmpfs); the results share is at $ISERGW_VM_RESULTS; the
# working directory is the caller's.
#
# The kernel comes from Debian's package registry: the newest linux-image-6.1.0-N-amd64 that
# apt knows (or $ISERGW_VM_KERNEL), fetched with `apt-get download` into the cache, never
# installed. Cache: $ISERGW_VM_DIR (default build/vm of the source tree).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_ROOT=$(cd "$HERE/.." && pwd)
VM_DIR=${ISERGW_VM_DIR:-$SRC_ROOT/build/vm}
TIMEOUT=600
MEM=1536
SMP=2
RESULTS=""
ENV_NAMES=()
# Modules the initramfs loads to reach the root file system; the rest come from the bind-
# mounted module tree after the switch.
BOOT_MODULES=(virtio_pci 9pnet_virtio 9p overlay)

die() {
	echo "vm.sh: $*" >&2
	exit "${2:-1}"
}

usage() {
	sed -n '8,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# check: the host tools the harness uses; prints what is missing.
check_tools() {
	local missing=() t
	for t in qemu-system-x86_64 busybox readelf dpkg-deb depmod modprobe apt-get apt-cache flock timeout gzip; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	[ -e /usr/share/seabios/bios.bin ] || [ -e /usr/share/qemu/bios.bin ] || missing+=(seabios)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "vm.sh: missing ${missing[*]} (scripts/install-deps.sh test installs them)" >&2
		return 3
	fi
	# A static busybox: the initramfs has no libraries.
	if ! file_is_static "$(command -v busybox)"; then
		echo "vm.sh: $(command -v busybox) is not static (install busybox-static)" >&2
		return 3
	fi
}

file_is_static() {
	! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'program interpreter'
}

# --- the kernel, from Debian's package registry ---------------------------------------

newest_kernel_package() {
	local pkgs
	pkgs=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{ print $1 }')
	if [ -z "$pkgs" ]; then
		echo "vm.sh: apt knows no linux-image-6.1.0-*-amd64; running apt-get update" >&2
		apt-get update -qq >&2
		pkgs=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{ print $1 }')
	fi
	[ -n "$pkgs" ] || die "apt knows no linux-image-6.1.0-*-amd64 package" 3
	echo "$pkgs" | sort -V | tail -1
}

# Sets KVER and KROOT: the cached kernel tree (extracted .deb with modules.dep).
prepare_kernel() {
	local cached="" pkg deb
	[ -f "$VM_DIR/kernel.pkg" ] && cached=$(cat "$VM_DIR/kernel.pkg")
	pkg=${ISERGW_VM_KERNEL:-$cached}
	[ -n "$pkg" ] || pkg=$(newest_kernel_package)
	KROOT="$VM_DIR/$pkg"
	if [ "$pkg" != "$cached" ] || [ ! -f "$KROOT/.complete" ]; then
		echo "vm.sh: fetching $pkg with apt-get download" >&2
		rm -rf "$KROOT" "$VM_DIR/deb"
		mkdir -p "$VM_DIR/deb"
		# Stale package lists name a version the mirror no longer has: update once and retry.
		(cd "$VM_DIR/deb" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) ||
			{ apt-get update -qq >&2 && (cd "$VM_DIR/deb" &&
				apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); } ||
			die "apt-get download $pkg failed" 3
		deb=$(echo "$VM_DIR"/deb/"$pkg"_*.deb)
		[ -f "$deb" ] || die "no .deb for $pkg in $VM_DIR/deb" 3
		dpkg-deb -x "$deb" "$KROOT"
		rm -rf "$VM_DIR/deb"
		KVER=$(basename "$(ls -d "$KROOT"/lib/modules/*/)")
		[ -f "$KROOT/boot/vmlinuz-$KVER" ] || die "$pkg has no boot/vmlinuz-$KVER" 3
		# The .deb has no modules.dep; modprobe in the guest needs it.
		depmod -b "$KROOT" "$KVER"
		touch "$KROOT/.complete"
		echo "$pkg" >"$VM_DIR/kernel.pkg"
		rm -f "$VM_DIR/initramfs.gz"
	fi
	KVER=$(basename "$(ls -d "$KROOT"/lib/modules/*/)")
}

# --- the initramfs: busybox, the boot modules and /init --------------------------------

# /init: reach the host's root over 9p, overlay it with tmpfs, switch to it and run the job.
# Kernel parameters of the form NAME=VALUE without a dot arrive as environment variables.
init_script() {
	cat <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
halt_now() {
	sync
	poweroff -f
	echo o >/proc/sysrq-trigger
}
fatal() {
	echo "vm-init: $*"
	halt_now
}
while read -r m; do insmod "$m" || fatal "insmod $m failed"; done </modules.list
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower ||
	fatal "cannot mount the host root (9p)"
mount -t tmpfs -o mode=0755,size=75% rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	fatal "cannot mount the overlay root"
R=/newroot
for d in proc sys dev; do mount --move /$d $R/$d; done
mkdir -p $R/dev/pts $R/dev/shm $R/results $R/run
mount -t devpts -o gid=5,mode=620 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
[ -e $R/dev/fd ] || ln -s /proc/self/fd $R/dev/fd
# /tmp stays the host's (read through the overlay, so scripts there run; writes go to the
# tmpfs upper layer); /run is fresh, the host's daemons' sockets and pid files mean nothing.
mount -t tmpfs -o mode=0755 run $R/run
mkdir -p -m 1777 $R/run/lock
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results $R/results ||
	fatal "cannot mount the results share (9p)"
# The kernel asks modprobe for helper modules by name: give it the guest kernel's tree.
mkdir -p "$R/lib/modules/$ISERGW_KVER"
mount --bind "$R$ISERGW_KROOT/lib/modules/$ISERGW_KVER" "$R/lib/modules/$ISERGW_KVER" ||
	fatal "cannot bind the module tree"
hostname isergw-vm
# switch_root, not chroot: the kernel runs its modprobe helper (crypto, veth, ...) in the root
# of PID 1. Then the host's shell runs the job and powers off with the host's busybox.
exec switch_root $R /bin/sh -c '/bin/bash /results/.job </dev/null
echo "vm-init: job ended with status $?"
umount /results
sync
/bin/busybox poweroff -f
echo o >/proc/sysrq-trigger'
fatal "switch_root failed"
INIT
}

prepare_initramfs() {
	local stage="$VM_DIR/initramfs.stage" line mod
	init_script >"$VM_DIR/init.new"
	if [ -f "$VM_DIR/initramfs.gz" ] && cmp -s "$VM_DIR/init.new" "$VM_DIR/init.cached"; then
		rm -f "$VM_DIR/init.new"
		return
	fi
	echo "vm.sh: building the initramfs" >&2
	rm -rf "$stage"
	mkdir -p "$stage"/{bin,proc,sys,dev,mods}
	cp "$(command -v busybox)" "$stage/bin/busybox"
	install -m 0755 "$VM_DIR/init.new" "$stage/init"
	: >"$stage/modules.list"
	# "insmod /path/x.ko" in load order; "builtin x" needs nothing.
	while read -r line; do
		case "$line" in
		insmod\ *)
			mod=$(echo "$line" | awk '{ print $2 }')
			if ! grep -qx "/mods/$(basename "$mod")" "$stage/modules.list"; then
				cp "$mod" "$stage/mods/"
				echo "/mods/$(basename "$mod")" >>"$stage/modules.list"
			fi
			;;
		esac
	done < <(modprobe -a -d "$KROOT" -S "$KVER" --show-depends "${BOOT_MODULES[@]}")
	(cd "$stage" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$VM_DIR/initramfs.gz.new"
	mv "$VM_DIR/initramfs.gz.new" "$VM_DIR/initramfs.gz"
	mv "$VM_DIR/init.new" "$VM_DIR/init.cached"
	rm -rf "$stage"
}

prepare() {
	mkdir -p "$VM_DIR"
	exec 9>"$VM_DIR/.lock"
	flock 9
	prepare_kernel
	prepare_initramfs
	flock -u 9
}

# --- one run --------------------------------------------------------------------------

# The job the guest's /init runs (bash, in the switched root): environment, working
# directory, then guest-setup.sh around the script.
write_job() {
	local job="$RESULTS/.job" name
	{
		echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		echo "export HOME=/root ISERGW_VM=1 ISERGW_VM_RESULTS=/results"
		for name in "${ENV_NAMES[@]}"; do
			echo "export $name"
		done
		printf 'cd %q || exit 125\n' "$PWD"
		printf 'exec /bin/bash %q' "$HERE/guest-setup.sh"
		printf ' %q' "${SCRIPT_ARGS[@]}"
		echo
	} >"$job"
}

run_vm() {
	local kernel="$KROOT/boot/vmlinuz-$KVER" rc start
	start=$(date +%s)
	set +e
	# TCG: /dev/kvm exists on CI's machines but KVM fails there (soft-roce-vm.md).
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
		-accel tcg,thread=multi -cpu max -smp "$SMP" -m "$MEM" \
		-nodefaults -no-user-config -display none -monitor none -serial stdio \
		-no-reboot -nic none \
		-kernel "$kernel" -initrd "$VM_DIR/initramfs.gz" \
		-append "console=ttyS0 loglevel=4 panic=-1 ISERGW_KVER=$KVER ISERGW_KROOT=$KROOT" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		-virtfs "local,path=$RESULTS,mount_tag=results,security_model=none,multidevs=remap" \
		</dev/null 2>&1 | tee "$RESULTS/console.log"
	rc=${PIPESTATUS[0]}
	set -e
	echo "vm.sh: VM ran $(($(date +%s) - start)) s" >&2
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "vm.sh: timed out after $TIMEOUT s" >&2
		return 124
	fi
	[ "$rc" -eq 0 ] || echo "vm.sh: qemu exited with status $rc" >&2
	if [ ! -s "$RESULTS/rc" ]; then
		echo "vm.sh: the guest reported no status (setup failed or the kernel crashed)" >&2
		return 125
	fi
	return "$(cat "$RESULTS/rc")"
}

main() {
	case "${1:-}" in
	"" | -h | --help) usage ;;
	check) check_tools; exit ;;
	prepare) check_tools || exit; prepare; echo "vm.sh: $KROOT ($KVER), $VM_DIR/initramfs.gz"; exit ;;
	esac
	local keep=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--timeout) TIMEOUT=$2; shift 2 ;;
		--results) RESULTS=$2; keep=1; shift 2 ;;
		--mem) MEM=$2; shift 2 ;;
		--smp) SMP=$2; shift 2 ;;
		--env)
			case "$2" in
			*=*) ENV_NAMES+=("$(printf '%q' "${2%%=*}")=$(printf '%q' "${2#*=}")") ;;
			*) [ -z "${!2+x}" ] || ENV_NAMES+=("$2=$(printf '%q' "${!2}")") ;;
			esac
			shift 2
			;;
		--) shift; break ;;
		-*) usage ;;
		*) break ;;
		esac
	done
	[ $# -ge 1 ] || usage
	[ -f "$1" ] || die "no script $1" 2
	SCRIPT_ARGS=("$(realpath "$1")" "${@:2}")
	[ -z "${CI+x}" ] || ENV_NAMES+=("CI=$(printf '%q' "$CI")")
	check_tools || exit
	prepare
	if [ -n "$RESULTS" ]; then
		mkdir -p "$RESULTS"
		RESULTS=$(realpath "$RESULTS")
		rm -f "$RESULTS/rc" "$RESULTS/output.log" "$RESULTS/console.log" "$RESULTS/dmesg.log"
	else
		mkdir -p "$VM_DIR/runs"
		RESULTS=$(mktemp -d "$VM_DIR/runs/run.XXXXXX")
	fi
	case "$RESULTS" in *,*) die "the results path may not contain a comma (qemu option syntax)" 2 ;; esac
	write_job
	local rc=0
	run_vm || rc=$?
	[ -n "$keep" ] || rm -rf "$RESULTS"
	exit "$rc"
}

main "$@"
