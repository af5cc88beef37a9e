#!/bin/bash
# Run libiscsi's conformance suite (iscsi-test-cu -t ALL) against tgt and isergw on this
# machine, one after the other, with the same script and command line, and write
# docs/conformance.md: totals side by side, the tests whose results differ, isergw's skips
# with their reasons, the machine and the versions.
#
#   tests/conformance/compare.sh [-o DOC]
#
# DOC defaults to docs/conformance.md. Needs an isergw build (BIN, default build/bin; e.g.
# `cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DISERGW_TESTS=ON && cmake --build build`),
# tgtd (Debian package tgt) and iscsi-test-cu (libiscsi-bin). Takes about two minutes: tgt
# is run a second time with the URL given once, as docs/baselines.md measured it
# (CMP_TGT_ONE_URL=0 leaves that out).
#
# Both targets serve one 1 GiB sparse file with 512-byte blocks on a free loopback port:
# tgtd through scripts/lib-tgt.sh (rdwr backing store, LUN 1), isergw through
# tests/integration/lib.sh (LUN 0). isergw then runs a second time, as
# tests/integration/test_conformance.sh does, in the configuration of
# tests/conformance/runs.sh (4096-byte physical blocks, the suites that depend on them; a few
# seconds), and the report combines its two runs. Raw reports, parsed results and daemon
# logs are kept in the directory printed at the end (CMP_OUT to choose it). CU_TIMEOUT
# bounds each run. TGT_CTL sets tgtd's management channel number (-C; default: the port).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOC="$ROOT/docs/conformance.md"
while getopts "o:h" opt; do
	case $opt in
	o) DOC=$OPTARG ;;
	*)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
done

export SRC="$ROOT"
bin_dir="${BIN:-$ROOT/build/bin}"
BIN=$(cd "$bin_dir" 2>/dev/null && pwd) || {
	echo "conformance-compare: no directory $bin_dir; build isergw first (see $0 -h)" >&2
	exit 1
}
export BIN
[ -x "$BIN/isergw" ] || {
	echo "conformance-compare: $BIN/isergw not found; build isergw first (see $0 -h)" >&2
	exit 1
}
for tool in iscsi-test-cu tgtd tgtadm python3; do
	command -v "$tool" >/dev/null || {
		echo "conformance-compare: $tool not found (scripts/install-deps.sh test)" >&2
		exit 1
	}
done

# lib.sh: TMP, free_port, write_config, start_daemon, stop_daemon and an EXIT trap that stops
# the daemon and removes TMP. lib-tgt.sh: tgt_start, tgt_stop.
# shellcheck source=../integration/lib.sh
source "$ROOT/tests/integration/lib.sh"
# shellcheck source=lib-tgt.sh
source "$ROOT/scripts/lib-tgt.sh"
# shellcheck source=runs.sh
source "$ROOT/tests/conformance/runs.sh"

OUT=${CMP_OUT:-$(mktemp -d /tmp/isergw-conformance.XXXXXX)}
mkdir -p "$OUT"
CONF="$ROOT/tests/conformance"
TGT_PORT=""
export TGT_STATE_DIR="$OUT/tgt-state"

stop_tgt() {
	local rc=$?
	if [ -n "$TGT_PORT" ]; then
		tgt_stop "$TGT_PORT" || true
		TGT_PORT=""
	fi
	rm -f "$TMP/tgt-lun.img"
	return $rc
}
trap 'stop_tgt; cleanup' EXIT

die() {
	echo "conformance-compare: $*" >&2
	exit 1
}

# tgt_port: a free loopback port below 32768 (lib-tgt.sh also uses it as tgtd's management
# channel, -C, which tgtd limits to 0-32767) whose tgtd lock file no running tgtd holds.
tgt_port() {
	python3 - <<'PY'
import fcntl, os, random, socket
for _ in range(200):
    port = random.randint(20000, 32767)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    lock = f"/var/run/tgtd/socket.{port}.lock"
    if os.path.exists(lock):
        try:
            with open(lock, "a") as f:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(f, fcntl.LOCK_UN)
        except OSError:
            continue
    print(port)
    break
else:
    raise SystemExit("no free port for tgtd")
PY
}

# run_tgt NAME [CU_URL2]: a fresh tgtd and a fresh 1 GiB file for each run.
run_tgt() {
	local name=$1 port
	port=$(tgt_port) || die "no free port for tgtd"
	rm -f "$TMP/tgt-lun.img"
	TGT_SIZE=1G TGT_BSTYPE=rdwr TGT_BLOCKSIZE=512 \
		tgt_start "$port" "$TMP/tgt-lun.img" iqn.2024-01.org.isergw:tgt ||
		die "tgtd did not start"
	TGT_PORT=$port
	echo "== tgt ($name): $TGT_URL"
	CU_URL2=${2:-} "$CONF/run-cu.sh" -o "$OUT/$name" "$TGT_URL" ||
		die "the run against tgt did not complete; see $OUT/$name"
	cp "$TGT_STATE_DIR/tgtd-$port.log" "$OUT/$name/tgtd.log" 2>/dev/null || true
	tgt_stop "$port"
	TGT_PORT=""
}

run_tgt tgt

# run_isergw NAME TESTS LUN_SIZE LUN_EXTRA: a fresh daemon and LU for each run.
run_isergw() {
	local name=$1 tests=$2 size=$3 extra=$4
	echo "== isergw ($name)"
	rm -f "$TMP/lun0.img"
	LUN_SIZE=$size BLOCK_SIZE=512 LUN_EXTRA=$extra write_config
	start_daemon
	echo "isergw: $URL"
	CU_TESTS=$tests "$CONF/run-cu.sh" -o "$OUT/$name" "$URL" ||
		die "the run against isergw did not complete; see $OUT/$name"
	cp "$DAEMON_LOG" "$TMP/isergw.conf" "$OUT/$name/"
	stop_daemon
}

run_isergw isergw "$CU_MAIN_TESTS" "$CU_MAIN_LUN_SIZE" "$CU_MAIN_LUN_EXTRA"
run_isergw isergw-pbs4k "$CU_PBS4K_TESTS" "$CU_PBS4K_LUN_SIZE" "$CU_PBS4K_LUN_EXTRA"

one_url_args=()
if [ "${CMP_TGT_ONE_URL:-1}" = 1 ]; then
	run_tgt tgt-one-url none
	one_url_args=(--tgt-one-url "$OUT/tgt-one-url/cu.json")
fi

# Versions and machine, for the report.
pkgver() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo unknown; }
git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git_mod=$(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
build_dir=$(dirname "$BIN")
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build_dir/CMakeCache.txt" 2>/dev/null || true)
build_rel=${build_dir#"$ROOT"/}
build_flags="-DISERGW_TESTS=ON${build_type:+ -DCMAKE_BUILD_TYPE=$build_type}"
isergw_ver=$("$BIN/isergw" --version 2>/dev/null | awk '{print $NF; exit}')
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")
cunit=$(sed -n 's/.*CUnit - A unit testing framework for C - Version //p' "$OUT/isergw/cu.log" | head -1)

python3 - "$OUT/meta.json" <<PY
import json, sys, time
meta = {
    "date": time.strftime("%Y-%m-%d"),
    "tgt_version": "$(tgtd --version 2>/dev/null | head -1)",
    "isergw_version": "$isergw_ver",
    "tgt_seconds": "$(awk '{print $2}' "$OUT/tgt/cu.rc")",
    "isergw_seconds": "$(awk '{print $2}' "$OUT/isergw/cu.rc")",
    "isergw_pbs4k_seconds": "$(awk '{print $2}' "$OUT/isergw-pbs4k/cu.rc")",
    "isergw_pbs4k_tests": "$CU_PBS4K_TESTS",
    "machine": "$(nproc) cores, ${cpu:-unknown CPU}, $mem RAM",
    "os": "$os",
    "kernel": "$(uname -r)",
    "libiscsi": "libiscsi-bin $(pkgver libiscsi-bin) (Debian)",
    "cunit": "${cunit:-unknown}",
    "tgt": "tgt $(pkgver tgt) (Debian), tgtd $(tgtd --version 2>/dev/null | head -1)",
    "isergw": "isergw $isergw_ver, commit $git_rev"
              + (" plus $git_mod locally modified tracked files" if $git_mod else "")
              + ", CMAKE_BUILD_TYPE=${build_type:-(none)}",
    "isergw_config": "tests/integration/lib.sh config: 1 GiB LUN 0, 512-byte blocks, "
                     "2 reactors, 64M cache pool, everything else default; the second run "
                     "adds physical_block_size = 4096 and removable = yes (tests/conformance/runs.sh)",
    "tgt_config": "scripts/lib-tgt.sh: tgtd -f --iscsi portal=127.0.0.1:PORT, LUN 1 "
                  "--bstype rdwr --blocksize 512, initiator-address ALL",
    "reproduce": "cmake -S . -B $build_rel $build_flags && cmake --build $build_rel\n"
                 "BIN=$build_rel/bin tests/conformance/compare.sh    # writes docs/conformance.md",
    "tgt_cmd": open("$OUT/tgt/cu.cmd").read().strip(),
    "isergw_cmd": open("$OUT/isergw/cu.cmd").read().strip(),
    "isergw_pbs4k_cmd": open("$OUT/isergw-pbs4k/cu.cmd").read().strip(),
    "tgt_one_url_cmd": open("$OUT/tgt-one-url/cu.cmd").read().strip() if "${one_url_args[*]}" else "",
}
for k in ("tgt_cmd", "isergw_cmd", "isergw_pbs4k_cmd", "tgt_one_url_cmd"):
    import re
    meta[k] = re.sub(r"iscsi://127\.0\.0\.1:\d+/", "iscsi://127.0.0.1:PORT/", meta[k])
json.dump(meta, open(sys.argv[1], "w"), indent=1)
PY

python3 "$CONF/make-report.py" --tgt "$OUT/tgt/cu.json" --isergw "$OUT/isergw/cu.json" \
	--isergw-pbs4k "$OUT/isergw-pbs4k/cu.json" "${one_url_args[@]}" --skipped "$CONF/skipped.txt" --meta "$OUT/meta.json" --out "$DOC"

summary() {
	python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))["counts"]
print("run %(run)d, pass %(pass)d, skip %(skip)d, fail %(fail)d" % c)' "$1"
}
echo "tgt:    $(summary "$OUT/tgt/cu.json")"
echo "isergw: $(summary "$OUT/isergw/cu.json")"
echo "isergw, 4 KiB physical blocks: $(summary "$OUT/isergw-pbs4k/cu.json")"
python3 "$CONF/check-cu.py" "$OUT/isergw/cu.json" "$OUT/isergw-pbs4k/cu.json" \
	"$CONF/expected-pass.txt" "$CONF/skipped.txt" | tail -n 1 | sed 's/^conformance:/isergw, both runs:/' || true
if [ -f "$OUT/tgt-one-url/cu.json" ]; then
	echo "tgt, one URL: $(summary "$OUT/tgt-one-url/cu.json")"
fi
echo "conformance-compare: wrote $DOC; raw reports in $OUT"
