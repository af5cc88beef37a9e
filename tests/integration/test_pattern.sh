#!/bin/bash
# Writes patterns of every size from one block to 16 MiB, aligned and misaligned to cache
# lines, under several negotiation settings, and reads them back byte for byte.
source "$(dirname "$0")/lib.sh"
COUNT=${PATTERN_COUNT:-60}
# Under the sanitizers every byte compared costs more: fewer cases, same sizes and settings.
[ "${SANITIZED:-OFF}" = ON ] && COUNT=${PATTERN_COUNT:-15}
[ "${ISERGW_LONG:-0}" = 1 ] && COUNT=600

run_case() { # name, gateway extra, pattern args
	local name=$1 extra=$2
	shift 2
	rm -f "$TMP/isergw.conf"
	GATEWAY_EXTRA="$extra" LUN_SIZE=256M write_config
	start_daemon
	echo "-- $name"
	# The client is test equipment: leak checks are for the daemon.
	ASAN_OPTIONS=detect_leaks=0 "$BIN/iscsi_pattern" --url "$URL" --initiator-name "$INI1" --count "$COUNT" \
		--max-size 16M --seed 7 "$@" || fail "pattern case $name"
	stop_daemon
}

run_case default ""
run_case no-immediate-initial-r2t "immediate_data = no
initial_r2t = yes" --immediate-data no --initial-r2t yes
run_case unsolicited "immediate_data = yes
initial_r2t = no
first_burst_length = 262144" --immediate-data yes --initial-r2t no
run_case r2t1-small-segments "max_outstanding_r2t = 1
max_recv_data_segment_length = 4096
max_burst_length = 65536"
# libiscsi 1.19 always offers MaxOutstandingR2T=1: 4 outstanding is test_r2t_window's job.
run_case large-segments "max_outstanding_r2t = 4
max_recv_data_segment_length = 1048576
max_burst_length = 4194304"
POOL_SIZE=1M run_case small-pool-digests "" --header-digest crc32c
echo "pattern-matrix: 6 passed, 0 failed"
