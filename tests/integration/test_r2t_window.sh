#!/bin/bash
# MaxOutstandingR2T=4 with the raw initiator: several R2Ts in flight per command, data right.
source "$(dirname "$0")/lib.sh"
GATEWAY_EXTRA="max_outstanding_r2t = 4" write_config
start_daemon
cd "$SRC/tests/integration"
python3 r2t_window.py --port "$PORT" --target "$IQN" --initiator "$INI1" || fail "r2t window"
stop_daemon
