#!/bin/bash
# CHAP through a real initiator (libiscsi): right credentials log in, a wrong secret and an
# unknown user are refused alike (authentication failure, logged), and the daemon carries on.
source "$(dirname "$0")/lib.sh"
TARGET_EXTRA="chap_user = alice
chap_secret = alice-secret-12" write_config
start_daemon
base="127.0.0.1:$PORT/$IQN/0"

iscsi-inq -i "$INI1" "iscsi://alice%alice-secret-12@$base" >/dev/null || fail "CHAP login with the right secret"
if iscsi-inq -i "$INI1" "iscsi://alice%wrong-secret-99@$base" >/dev/null 2>&1; then
	fail "CHAP login with a wrong secret succeeded"
fi
if iscsi-inq -i "$INI1" "iscsi://mallory%alice-secret-12@$base" >/dev/null 2>&1; then
	fail "CHAP login with an unknown user succeeded"
fi
if iscsi-inq -i "$INI1" "iscsi://$base" >/dev/null 2>&1; then
	fail "login without CHAP to a CHAP target succeeded"
fi
daemon_alive
n=$(grep -c "login failed, status 0x0201" "$DAEMON_LOG" || true)
[ "$n" -ge 3 ] || fail "expected 3 logged authentication failures (0x0201), saw $n"
iscsi-inq -i "$INI1" "iscsi://alice%alice-secret-12@$base" >/dev/null || fail "login after failures"
stop_daemon
echo "chap: 5 passed, 0 failed"
