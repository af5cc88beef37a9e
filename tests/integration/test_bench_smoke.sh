#!/bin/bash
# The benchmark harness works end to end (issue 8): scripts/run-bench.sh --smoke starts tgtd and
# three isergw daemons (write-back, write-through, write-back mirrored to a fourth) on free
# loopback ports, runs every workload
# against each, the limits (iperf3, memcpy), the cross-checks (iscsi-perf, qemu-img bench with
# qemu's iscsi driver) and a perf profile, and writes a markdown report and a PNG chart into
# its work directory. Checked here: the harness succeeds; the throughput, limits, CPU and
# cross-check tables have a row per workload (or client) with numbers for every target; the
# profile and goals sections are there; the chart is a PNG; docs/ is not touched. Not checked:
# the figures themselves (a CI machine is noisy). Release builds only: under the sanitizers the
# daemon's figures mean nothing and the runs take longer, so SANITIZED=ON skips (exit 77).
source "$(dirname "$0")/lib.sh"

skip() {
	echo "SKIP: $*"
	exit 77
}

case "${SANITIZED:-OFF}" in
ON | on | 1 | TRUE | true | YES | yes) skip "sanitized build (the harness and its numbers are Release-only)" ;;
esac
[ "$(id -u)" -eq 0 ] || skip "tgtd needs root"
for tool in tgtd tgtadm iscsi-perf qemu-img iperf3 gnuplot perf; do
	command -v "$tool" >/dev/null || skip "$tool missing (scripts/install-deps.sh test installs it)"
done
compgen -G "/usr/lib/*/qemu/block-iscsi.so" >/dev/null || skip "qemu-block-extra missing"
[ -x "$BIN/isergw-bench" ] || fail "$BIN/isergw-bench not built"

WORK="$TMP/bench"
DOC="$SRC/docs/benchmarks.md"
doc_before=$(sha256sum "$DOC" 2>/dev/null || true)

# Random ports: tgt's is usually above 32767, which also checks that the control number is
# chosen separately from the port.
set +e
bash "$SRC/scripts/run-bench.sh" --smoke --time 1 --warmup 0.3 --build "$(dirname "$BIN")" \
	--work "$WORK" --tgt-port "$(free_port)" --isergw-port "$(free_port)" \
	--isergw-wt-port "$(free_port)" --iperf-port "$(free_port)" \
	--profile --profile-workloads w4k-qd32 >"$TMP/run.log" 2>&1
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
	tail -40 "$TMP/run.log" >&2
	fail "run-bench.sh --smoke exited with $rc"
fi
echo "ok   - run-bench.sh --smoke succeeded ($(tail -1 "$TMP/run.log" | sed 's/.*\] //'))"

[ "$(sha256sum "$DOC" 2>/dev/null || true)" = "$doc_before" ] || fail "--smoke modified $DOC"
echo "ok   - docs/benchmarks.md untouched by --smoke"

python3 - "$WORK/benchmarks.md" "$WORK/bench.png" <<'PY'
import re, struct, sys

md, png = sys.argv[1], sys.argv[2]
text = open(md).read()
failed = 0


def check(ok, what):
    global failed
    print(("ok   - " if ok else "FAIL - ") + what, file=sys.stdout if ok else sys.stderr)
    failed += not ok


def table(title):
    """Rows (lists of cells) of the first table after the heading that starts with title."""
    m = re.search(r"^### " + re.escape(title) + r"[^\n]*\n(?:[^|\n][^\n]*\n|\n)*((?:\|[^\n]*\n)+)",
                  text, re.M)
    if not m:
        return None
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in m[1].splitlines()]
    return rows[2:]  # header and separator


NUM = re.compile(r"^\d+(\.\d+)?K?( \(.*\))?$")
RATIO = re.compile(r"^\d+\.\d\dx$")
WORKLOADS = ["4 KiB random write, QD1", "4 KiB random write, QD32",
             "4 KiB random read, QD32, cache warmed", "128 KiB sequential write, QD8",
             "128 KiB sequential read, QD8", "8 KiB random 70% read / 30% write, QD16"]

rows = table("Throughput")
check(rows is not None, "throughput table present")
rows = {r[0]: r for r in rows or []}
for w in WORKLOADS:
    r = rows.get(w)
    ok = (r is not None and all(NUM.match(c) for c in r[2:6])
          and all(RATIO.match(c) for c in r[6:9]))
    check(ok, f"throughput: {w}: tgt, write-back, write-through, mirrored and the ratios "
          f"({r[2:9] if r else 'no row'})")

rows = table("CPU")
rows = {r[0]: r for r in rows or []}
for w in WORKLOADS:
    r = rows.get(w)
    check(r is not None and all(NUM.match(c) for c in r[1:10]),
          f"CPU s/GB and s/M IOs for every target and the client: {w}")

rows = table("Fraction of the physical limits")
check(rows is not None and len(rows) == len(WORKLOADS)
      and all(re.match(r"^\d+\.\d%$", c) for r in rows for c in r[1:]),
      "fraction of loopback and memcpy per workload and target")
check(re.search(r"\| TCP over loopback.*\| \d+\.\d Gbit/s = \d+ MB/s \|", text) is not None,
      "iperf3 loopback limit measured")
check(re.search(r"\| memcpy.*\| \d+\.\d GB/s \|", text) is not None, "memcpy limit measured")

rows = table("Cross-check")
check(rows is not None and len(rows) == 5
      and all(NUM.match(c) for r in rows for c in r[2:6]),
      "cross-checks: iscsi-perf and qemu-img bench (iscsi driver) numbers for every target")

rows = table("Goals of issue 8")
check(rows is not None and len(rows) == 4 and all(r[2] in ("yes", "**no**") for r in rows),
      "goals judged")
check(re.search(r"^\*\*4 KiB random write, QD32\*\*.*By shared object: .*%", text, re.M)
      is not None, "perf profile of isergw on 4 KiB random write QD32")
check("```sh\ntgtd -f -C " in text and "isergw-bench --url" in text and "qemu-img bench" in text,
      "commands listed")

data = open(png, "rb").read()
ok = data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
w, h = struct.unpack(">II", data[16:24]) if ok else (0, 0)
check(ok and w >= 600 and h >= 300 and len(data) > 5000, f"chart is a PNG ({w}x{h}, {len(data)} bytes)")
print(f"bench smoke: {failed} failed")
sys.exit(1 if failed else 0)
PY
