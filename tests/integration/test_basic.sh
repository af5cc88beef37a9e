#!/bin/bash
# The daemon serves discovery, inquiry, capacity and plain I/O to libiscsi's tools.
source "$(dirname "$0")/lib.sh"
start_daemon

out=$(iscsi-ls -i "$INI1" -s "iscsi://127.0.0.1:$PORT/")
echo "$out"
grep -q "Target:$IQN Portal:127.0.0.1:$PORT,1" <<<"$out" || fail "discovery does not list the target"
grep -q "Lun:0" <<<"$out" || fail "iscsi-ls does not show LUN 0"

inq=$(iscsi-inq -i "$INI1" "$URL")
echo "$inq"
grep -q "Peripheral Device Type" <<<"$inq" || fail "no standard INQUIRY data"
grep -qi "ISERGW" <<<"$inq" || fail "vendor is not ISERGW"

cap=$(iscsi-readcapacity16 -i "$INI1" "$URL")
echo "$cap"
grep -q "LOGICAL BLOCK LENGTH IN BYTES:512" <<<"$cap" || fail "wrong block size"
grep -q "RETURNED LOGICAL BLOCK ADDRESS:131071" <<<"$cap" || fail "wrong capacity for 64 MiB"

# Unknown target and a refused initiator are login failures, and the daemon carries on.
if iscsi-inq -i "$INI1" "iscsi://127.0.0.1:$PORT/iqn.2026-11.io.isergw:nosuch/0" 2>/dev/null; then
	fail "login to an unknown target succeeded"
fi
daemon_alive
grep -q "login failed, status 0x0203" "$DAEMON_LOG" || fail "no log line for the unknown target"
stop_daemon
echo "basic: 6 passed, 0 failed"
