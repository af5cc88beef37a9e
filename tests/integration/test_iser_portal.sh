#!/bin/bash
# An iSER portal on a host without RDMA (CI's hosts and containers have none): the daemon
# starts, says clearly why the portal is skipped, serves TCP as before, and its status shows
# the iSER counters (all zero). On an RDMA host the portal listens instead (the VM test
# vm.test_kernel_iser runs it on soft-RoCE).
source "$(dirname "$0")/lib.sh"
PORT=$(free_port)
GATEWAY_EXTRA=$(printf '\n[portal rdma]\naddress = 127.0.0.1\nport = %s\ntransport = iser\n' "$PORT")
write_config
start_daemon

if grep -q "listening for iSER" "$DAEMON_LOG"; then
	echo "this host has RDMA: the iSER portal listens"
else
	grep -E "portal rdma .*iSER portal skipped" "$DAEMON_LOG" ||
		fail "no warning for the skipped iSER portal"
	grep -E "ERROR" "$DAEMON_LOG" && fail "an ERROR line for a missing RDMA device"
fi

inq=$(iscsi-inq -i "$INI1" "$URL")
grep -qi "ISERGW" <<<"$inq" || fail "TCP does not serve with an iSER portal configured"
out=$(iscsi-ls -i "$INI1" -s "iscsi://127.0.0.1:$PORT/")
[ "$(grep -c "Portal:127.0.0.1:$PORT,1" <<<"$out")" -eq 1 ] ||
	fail "the TCP and iSER portal on one address should be one TargetAddress: $out"

stats=$("$BIN/isergw-ctl" --socket "$TMP/isergw.sock" --json stats)
echo "$stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
i = {k: v for k, v in s.items() if k.startswith("iser_")}
for k in ("rdma_read_bytes", "rdma_write_bytes", "data_copy_bytes", "connections"):
    assert "iser_" + k in i, k
assert i["iser_data_copy_bytes"] == 0, i
print("iser stats:", i)
' || fail "no iser counters in the status"
daemon_alive
stop_daemon
echo "iser_portal: 4 passed, 0 failed"
