# Shared by the integration tests: start an isergw on a free loopback port with a config
# written for the test, wait until it serves, and stop it cleanly at exit (a non-zero exit
# status or a sanitizer report fails the test).
set -euo pipefail

: "${BIN:?BIN must point at build/bin}"
: "${SRC:?SRC must point at the source tree}"
TMP=$(mktemp -d /tmp/isergw-test.XXXXXX)
DAEMON_PID=""
DAEMON_LOG="$TMP/isergw.log"
IQN="iqn.2026-11.io.isergw:test"
INI1="iqn.2026-11.io.isergw:initiator1"
INI2="iqn.2026-11.io.isergw:initiator2"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# write_config [extra target lines] : a target with one 64 MiB LUN, plus what is passed.
write_config() {
	PORT=${PORT:-$(free_port)}
	cat >"$TMP/isergw.conf" <<CONF
[gateway]
var_dir = $TMP/var
status_socket = $TMP/isergw.sock
reactors = 2
pool_size = ${POOL_SIZE:-64M}
nop_interval = ${NOP_INTERVAL:-30}
nop_timeout = ${NOP_TIMEOUT:-30}
log_level = ${LOG_LEVEL:-info}
${GATEWAY_EXTRA:-}

[portal main]
address = 127.0.0.1
port = $PORT

[target $IQN]
alias = test
${TARGET_EXTRA:-}

[lun $IQN:0]
path = $TMP/lun0.img
size = ${LUN_SIZE:-64M}
block_size = ${BLOCK_SIZE:-512}
${LUN_EXTRA:-}
CONF
	URL="iscsi://127.0.0.1:$PORT/$IQN/0"
}

start_daemon() {
	[ -f "$TMP/isergw.conf" ] || write_config
	"$BIN/isergw" --config "$TMP/isergw.conf" >"$DAEMON_LOG" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 1 100); do
		if grep -q "listening for iSCSI/TCP" "$DAEMON_LOG" 2>/dev/null && [ -S "$TMP/isergw.sock" ]; then
			return 0
		fi
		kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$DAEMON_LOG" >&2; fail "daemon exited at start"; }
		sleep 0.1
	done
	cat "$DAEMON_LOG" >&2
	fail "daemon did not start"
}

stop_daemon() {
	[ -n "$DAEMON_PID" ] || return 0
	local pid=$DAEMON_PID
	DAEMON_PID=""
	kill -TERM "$pid" 2>/dev/null || true
	local rc=0
	for _ in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
		cat "$DAEMON_LOG" >&2
		fail "daemon did not stop on SIGTERM"
	fi
	wait "$pid" || rc=$?
	if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$DAEMON_LOG"; then
		cat "$DAEMON_LOG" >&2
		fail "sanitizer report in the daemon log"
	fi
	[ "$rc" -eq 0 ] || { tail -50 "$DAEMON_LOG" >&2; fail "daemon exit status $rc"; }
}

daemon_alive() {
	kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$DAEMON_LOG" >&2; fail "daemon died"; }
}

cleanup() {
	local rc=$?
	if [ -n "$DAEMON_PID" ]; then
		stop_daemon || rc=1
	fi
	if [ $rc -ne 0 ] && [ -f "$DAEMON_LOG" ]; then
		echo "--- daemon log (tail) ---" >&2
		tail -40 "$DAEMON_LOG" >&2
		[ -z "${KEEP_LOG:-}" ] || cp "$DAEMON_LOG" "$KEEP_LOG"
	fi
	rm -rf "$TMP"
	exit $rc
}
trap cleanup EXIT
