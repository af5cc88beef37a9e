#!/bin/bash
# Start and stop a tgtd (Linux SCSI target, Debian package `tgt`) on a loopback portal with one
# LUN backed by a file. Source it from other scripts, or run it directly:
#
#   scripts/lib-tgt.sh start PORT FILE [IQN]   # prints "PID URL CTL", leaves tgtd running
#   scripts/lib-tgt.sh stop PORT               # stops the tgtd started for PORT
#
# As a library:
#   source scripts/lib-tgt.sh
#   tgt_start 3261 /tmp/lun.img            # sets TGT_PID, TGT_URL, TGT_IQN, TGT_CTL_USED
#   ... use "$TGT_URL" ...
#   tgt_stop 3261
#
# FILE is created as a sparse file of TGT_SIZE (default 1G) if it does not exist.
# Knobs (environment):
#   TGT_SIZE=1G              size of a newly created backing file
#   TGT_BSTYPE=rdwr          tgt backing-store type
#   TGT_LUN=1                LUN number (LUN 0 is tgt's controller LUN)
#   TGT_BLOCKSIZE=512        logical block size of the LUN (512 or 4096)
#   TGT_ADDR=127.0.0.1       portal address (loopback only, please)
#   TGT_CTL=N                tgtd control number (-C, 1..32767, one per running tgtd: it
#                            names tgtd's management socket and lock file). Default: derived
#                            from the port ((PORT - 1) % 32767 + 1), moving up past numbers
#                            another tgtd holds. The number used is remembered for tgt_stop.
#   TGT_STATE_DIR=/tmp/isergw-tgt   pid and log files
#   TGT_PARAMS="K=V ..."     iSCSI target parameters set with `tgtadm --op update` before any
#                            login, e.g. "MaxRecvDataSegmentLength=4096 ImmediateData=No
#                            InitialR2T=Yes FirstBurstLength=8192 MaxBurstLength=16384"
#   TGT_TIMEOUT=10           seconds to wait for tgtd to come up
#   TGT_CMDLOG=FILE          append the tgtd and tgtadm command lines that set it up to FILE
# Only one tgtd per PORT; tgt_start fails if the port is already taken.

# Results of the last tgt_start, for the caller.
# shellcheck disable=SC2034
TGT_PID="" TGT_URL="" TGT_IQN="" TGT_CTL_USED=""

tgt_log() {
	echo "lib-tgt: $*" >&2
}

tgt__state_dir() {
	local d="${TGT_STATE_DIR:-/tmp/isergw-tgt}"
	mkdir -p "$d" && echo "$d"
}

tgt__port_busy() {
	ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

tgt__adm() {
	local ctl="$1"
	shift
	tgtadm -C "$ctl" --lld iscsi "$@"
}

# tgt__note CMD...: note a command line in TGT_CMDLOG, if set.
tgt__note() {
	[ -z "${TGT_CMDLOG:-}" ] || printf '%s\n' "$*" >>"$TGT_CMDLOG"
}

# tgt__adm_logged CTL ARGS...: tgt__adm, noted in TGT_CMDLOG.
tgt__adm_logged() {
	tgt__note tgtadm -C "$1" --lld iscsi "${@:2}"
	tgt__adm "$@"
}

# tgt__ctl_busy CTL: true if a running tgtd holds control number CTL. tgtd keeps a POSIX
# record lock (lockf) on /var/run/tgtd/socket.CTL.lock; stale files of dead tgtds are not.
tgt__ctl_busy() {
	local lock="/var/run/tgtd/socket.$1.lock"
	[ -e "$lock" ] || return 1
	! python3 -c 'import fcntl, sys
fcntl.lockf(open(sys.argv[1], "a"), fcntl.LOCK_EX | fcntl.LOCK_NB)' "$lock" 2>/dev/null
}

# tgt__pick_ctl PORT: the control number for a new tgtd on PORT (see TGT_CTL above).
tgt__pick_ctl() {
	local port="$1" ctl i
	if [ -n "${TGT_CTL:-}" ]; then
		if ! [[ "$TGT_CTL" =~ ^[0-9]+$ ]] || [ "$TGT_CTL" -lt 1 ] || [ "$TGT_CTL" -gt 32767 ]; then
			tgt_log "TGT_CTL=$TGT_CTL: a control number must be 1..32767"
			return 1
		fi
		echo "$TGT_CTL"
		return 0
	fi
	ctl=$(((port - 1) % 32767 + 1))
	for ((i = 0; i < 100; i++)); do
		if ! tgt__ctl_busy "$ctl"; then
			echo "$ctl"
			return 0
		fi
		ctl=$((ctl % 32767 + 1))
	done
	tgt_log "no free tgtd control number near $(((port - 1) % 32767 + 1)); set TGT_CTL"
	return 1
}

# tgt__wait_up PID CTL PORT: wait until tgtd answers on its management channel and listens.
tgt__wait_up() {
	local pid="$1" ctl="$2" port="$3" i
	local tries=$((${TGT_TIMEOUT:-10} * 10))
	for ((i = 0; i < tries; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			tgt_log "tgtd (pid $pid) exited during start-up"
			return 1
		fi
		if tgt__adm "$ctl" --mode target --op show >/dev/null 2>&1 && tgt__port_busy "$port"; then
			return 0
		fi
		sleep 0.1
	done
	tgt_log "tgtd (pid $pid) did not come up on port $port within ${TGT_TIMEOUT:-10}s"
	return 1
}

# tgt__configure CTL IQN FILE: one target (tid 1), one LUN, every initiator allowed.
tgt__configure() {
	local ctl="$1" iqn="$2" file="$3" kv
	tgt__adm_logged "$ctl" --mode target --op new --tid 1 --targetname "$iqn" || return 1
	tgt__adm_logged "$ctl" --mode logicalunit --op new --tid 1 --lun "${TGT_LUN:-1}" \
		--backing-store "$file" --bstype "${TGT_BSTYPE:-rdwr}" \
		--blocksize "${TGT_BLOCKSIZE:-512}" || return 1
	tgt__adm_logged "$ctl" --mode target --op bind --tid 1 --initiator-address ALL ||
		return 1
	for kv in ${TGT_PARAMS:-}; do
		tgt__adm_logged "$ctl" --mode target --op update --tid 1 --name "${kv%%=*}" \
			--value "${kv#*=}" || return 1
	done
}

# tgt_start PORT FILE [IQN]
tgt_start() {
	local port="$1" file="$2" iqn="${3:-iqn.2024-01.org.isergw:tgt-$1}"
	local addr="${TGT_ADDR:-127.0.0.1}" ctl dir pid
	if [ -z "$port" ] || [ -z "$file" ]; then
		tgt_log "usage: tgt_start PORT FILE [IQN]"
		return 2
	fi
	ctl=$(tgt__pick_ctl "$port") || return 1
	command -v tgtd >/dev/null || {
		tgt_log "tgtd not found (Debian package tgt)"
		return 1
	}
	if tgt__port_busy "$port"; then
		tgt_log "port $port is already in use"
		return 1
	fi
	[ -e "$file" ] || truncate -s "${TGT_SIZE:-1G}" "$file" || return 1
	dir=$(tgt__state_dir) || return 1
	tgt__note tgtd -f -C "$ctl" --iscsi "portal=$addr:$port"
	tgtd -f -C "$ctl" --iscsi "portal=$addr:$port" >"$dir/tgtd-$port.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/tgtd-$port.pid"
	echo "$ctl" >"$dir/tgtd-$port.ctl"
	if ! tgt__wait_up "$pid" "$ctl" "$port" || ! tgt__configure "$ctl" "$iqn" "$file"; then
		tgt_log "start failed; log: $dir/tgtd-$port.log"
		tgt_stop "$port"
		return 1
	fi
	TGT_PID="$pid"
	TGT_IQN="$iqn"
	TGT_CTL_USED="$ctl"
	TGT_URL="iscsi://$addr:$port/$iqn/${TGT_LUN:-1}"
}

# tgt__gone PID: true once PID has exited (a zombie child of ours counts as exited).
tgt__gone() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
	[ -z "$st" ] || [ "${st#Z}" != "$st" ]
}

# tgt__wait_gone PID TENTHS
tgt__wait_gone() {
	local i
	for ((i = 0; i < $2; i++)); do
		tgt__gone "$1" && return 0
		sleep 0.1
	done
	return 1
}

# tgt_stop PORT: stop the tgtd started by tgt_start for PORT. tgtd ignores SIGTERM, so ask it
# through tgtadm (delete the target, then the system); SIGKILL if it has not gone in 5 s.
tgt_stop() {
	local port="$1" dir pidfile pid ctl
	dir=$(tgt__state_dir) || return 1
	pidfile="$dir/tgtd-$port.pid"
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	ctl=$(cat "$dir/tgtd-$port.ctl" 2>/dev/null || echo "${TGT_CTL:-}")
	rm -f "$pidfile" "$dir/tgtd-$port.ctl"
	[ -n "$pid" ] && ! tgt__gone "$pid" || return 0
	if [ -n "$ctl" ]; then
		tgt__adm "$ctl" --mode target --op delete --force --tid 1 >/dev/null 2>&1
		tgtadm -C "$ctl" --op delete --mode system >/dev/null 2>&1
	fi
	tgt__wait_gone "$pid" 50 || kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

tgt__main() {
	case "${1:-}" in
	start)
		shift
		tgt_start "$@" || exit 1
		echo "$TGT_PID $TGT_URL $TGT_CTL_USED"
		;;
	stop)
		shift
		tgt_stop "$@"
		;;
	*)
		echo "usage: $0 start PORT FILE [IQN] | stop PORT" >&2
		exit 2
		;;
	esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	tgt__main "$@"
fi
