#!/bin/bash
# run-bench.sh: isergw against tgt, side by side, in one run (issue 8).
#
# Same machine, same-sized backing files prefilled the same way, same client, same run:
#   * tgtd on 127.0.0.1:3261; isergw on 127.0.0.1:3260 (write-back) and 127.0.0.1:3262
#     (write-through), each with its own backing file of the same size, in one directory;
#   * every workload against every target in turn (A B C A B C ..., --rounds times), with
#     isergw-bench; medians, spreads and ratios to tgt;
#   * the machine's physical limits in the same run: iperf3 over loopback (one stream, 5 s)
#     and single-thread memcpy (isergw-bench --memcpy);
#   * each target's CPU seconds (from /proc/PID/stat) per GB and per million I/Os;
#   * cross-checks with clients nobody here wrote: iscsi-perf (reads) and qemu-img bench with
#     qemu's libiscsi driver (writes and reads);
#   * with --profile, a perf profile of the isergw write-back daemon on chosen workloads
#     (top shared objects and symbols), next to the goals of issue 8 it is judged against;
#   * a markdown section in docs/benchmarks.md (between the results markers) and a PNG chart.
# Raw results (JSON per run, logs, the exact commands) stay in the work directory.
#
# usage: scripts/run-bench.sh [options]      (scripts/run-bench.sh --help)
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib-tgt.sh
source "$SRC/scripts/lib-tgt.sh"

ALL_TARGETS="tgt,isergw-wb,isergw-wt,isergw-mirror"
IQN_PREFIX="iqn.2024-01.org.isergw.bench"
INITIATOR="iqn.2024-01.org.isergw:bench-client"

# name|description|isergw-bench arguments|range (half: first half of the LUN, full: all of it)
WORKLOADS=(
	"w4k-qd1|4 KiB random write, QD1|--rw randwrite --bs 4k --qd 1|half"
	"w4k-qd32|4 KiB random write, QD32|--rw randwrite --bs 4k --qd 32|half"
	"r4k-qd32|4 KiB random read, QD32, cache warmed|--rw randread --bs 4k --qd 32|half"
	"w128k-qd8|128 KiB sequential write, QD8|--rw write --bs 128k --qd 8|full"
	"r128k-qd8|128 KiB sequential read, QD8|--rw read --bs 128k --qd 8|full"
	"rw8k-qd16|8 KiB random 70% read / 30% write, QD16|--rw randrw --mix 70 --bs 8k --qd 16|half"
)

usage() {
	cat <<EOF
usage: scripts/run-bench.sh [options]
  --smoke             CI check of the harness, not of the numbers: 1 round, 1.5 s per run,
                      64 MiB LUNs, short limits and cross-checks; writes its markdown and chart
                      into the work directory, never into docs/
  --rounds N          rounds of A B C per workload (default 3, at least 3 for real figures)
  --time S            measured seconds per run (default 5)
  --warmup S          unmeasured seconds at the start of each run (default 2)
  --targets LIST      comma list out of $ALL_TARGETS (default: all; the isergw ones are
                      skipped with a warning when build/bin/isergw does not exist)
  --workloads LIST    comma list of workload names (default: all):
                      $(workload_names)
  --size SIZE         LUN size: a number with K, M, G or T (default 1G; --smoke 64M)
  --build DIR         build directory holding bin/ (default \$BUILD or $SRC/build)
  --work DIR          scratch: backing files, configs, logs, raw results
                      (default <build>/bench-run)
  --out FILE          markdown to update (default docs/benchmarks.md)
  --chart FILE        PNG chart (default docs/bench.png)
  --tgt-port N        (default 3261)     --isergw-port N  write-back (default 3260)
  --isergw-wt-port N  write-through (default 3262)       --iperf-port N (default 5201)
  --isergw-mirror-port N  write-back mirrored to a second isergw (default 3263)
                      (a default port that is taken is replaced by a free one; a port
                      given here must be free)
  --tgt-ctl N         tgtd control number, 1..32767 (default: derived from --tgt-port,
                      skipping numbers another tgtd holds; see scripts/lib-tgt.sh)
  --no-cross-check    skip iscsi-perf and qemu-img bench
  --no-limits         skip iperf3 and memcpy
  --profile           after the measured rounds, run each --profile-workloads workload once
                      more on isergw write-back under perf record (not counted in the
                      table) and put its top shared objects and symbols into the results
  --profile-workloads LIST   (default w4k-qd32,r4k-qd32,w128k-qd8,r128k-qd8)
  --note TEXT         a sentence for the top of the results (e.g. why they are provisional)
  --keep              keep the backing files afterwards
Exit status: 0 if every run succeeded, 1 if any failed, 2 on a usage error.
EOF
}

workload_names() {
	local w out=""
	for w in "${WORKLOADS[@]}"; do out+="${w%%|*},"; done
	echo "${out%,}"
}

log() {
	printf '%s [bench] %s\n' "$(date +%T)" "$*" >&2
}

die() {
	log "error: $*"
	exit 1
}

# ---------------------------------------------------------------- options

SMOKE=0 ROUNDS="" TIME="" WARMUP="" TARGETS="" SELECT="" SIZE="" BUILD_DIR="${BUILD:-}"
WORK="" OUT="" CHART="" TGT_CTL_OPT="" TGT_PORT=3261 ISERGW_PORT=3260 ISERGW_WT_PORT=3262 IPERF_PORT=5201
ISERGW_MIRROR_PORT=3263 MIRROR_PEER_PORT="" PEER_PID=""
CROSS=1 LIMITS=1 KEEP=0 PROFILE=0 PROFILE_WL="w4k-qd32,r4k-qd32,w128k-qd8,r128k-qd8" NOTE=""
declare -A GIVEN # the port options given on the command line
# The command line of this run, for the results ("reproduce with"; --note is left out).
INVOCATION="scripts/run-bench.sh"
skip_next=0
for arg in "$@"; do
	if [ "$skip_next" = 1 ] || [ "$arg" = --note ]; then
		skip_next=$((1 - skip_next))
	elif [[ "$arg" =~ ^[A-Za-z0-9_,./:=+-]+$ ]]; then
		INVOCATION+=" $arg"
	else
		INVOCATION+=" $(printf '%q' "$arg")"
	fi
done

parse_args() {
	while [ $# -gt 0 ]; do
		case "$1" in
		--smoke) SMOKE=1 ;;
		--rounds | --time | --warmup | --targets | --workloads | --size | --build | --work | \
			--out | --chart | --tgt-port | --tgt-ctl | --isergw-port | --isergw-wt-port | --isergw-mirror-port | \
			--iperf-port | --profile-workloads | --note)
			[ $# -ge 2 ] || usage_error "$1 needs a value"
			;;&
		--rounds) ROUNDS="$2"; shift ;;
		--time) TIME="$2"; shift ;;
		--warmup) WARMUP="$2"; shift ;;
		--targets) TARGETS="$2"; shift ;;
		--workloads) SELECT="$2"; shift ;;
		--size) SIZE="$2"; shift ;;
		--build) BUILD_DIR="$2"; shift ;;
		--work) WORK="$2"; shift ;;
		--out) OUT="$2"; shift ;;
		--chart) CHART="$2"; shift ;;
		--tgt-port) TGT_PORT="$2" GIVEN[TGT_PORT]=1; shift ;;
		--tgt-ctl) TGT_CTL_OPT="$2"; shift ;;
		--isergw-port) ISERGW_PORT="$2" GIVEN[ISERGW_PORT]=1; shift ;;
		--isergw-wt-port) ISERGW_WT_PORT="$2" GIVEN[ISERGW_WT_PORT]=1; shift ;;
		--isergw-mirror-port) ISERGW_MIRROR_PORT="$2" GIVEN[ISERGW_MIRROR_PORT]=1; shift ;;
		--iperf-port) IPERF_PORT="$2" GIVEN[IPERF_PORT]=1; shift ;;
		--no-cross-check) CROSS=0 ;;
		--no-limits) LIMITS=0 ;;
		--keep) KEEP=1 ;;
		--profile) PROFILE=1 ;;
		--profile-workloads) PROFILE_WL="$2"; shift ;;
		--note) NOTE="$2"; shift ;;
		-h | --help) usage; exit 0 ;;
		*) echo "run-bench: unknown option $1" >&2; usage >&2; exit 2 ;;
		esac
		shift
	done
}

usage_error() {
	echo "run-bench: $*" >&2
	exit 2
}

validate_args() {
	local wl
	[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || usage_error "--rounds needs a positive integer"
	[[ "$TIME" =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage_error "--time needs seconds"
	[[ "$WARMUP" =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage_error "--warmup needs seconds"
	[[ "$SIZE" =~ ^[0-9]+[KMGT]?$ ]] || usage_error "--size: a number with K, M, G or T"
	for wl in ${SELECT//,/ } ${PROFILE_WL//,/ }; do
		[[ ",$(workload_names)," == *",$wl,"* ]] ||
			usage_error "unknown workload $wl (known: $(workload_names))"
	done
}

apply_defaults() {
	BUILD_DIR="${BUILD_DIR:-$SRC/build}"
	BIN="$BUILD_DIR/bin"
	WORK="${WORK:-$BUILD_DIR/bench-run}"
	if [ "$SMOKE" = 1 ]; then
		ROUNDS="${ROUNDS:-1}" TIME="${TIME:-1.5}" WARMUP="${WARMUP:-0.5}" SIZE="${SIZE:-64M}"
		OUT="${OUT:-$WORK/benchmarks.md}" CHART="${CHART:-$WORK/bench.png}"
	fi
	ROUNDS="${ROUNDS:-3}" TIME="${TIME:-5}" WARMUP="${WARMUP:-2}" SIZE="${SIZE:-1G}"
	OUT="${OUT:-$SRC/docs/benchmarks.md}" CHART="${CHART:-$SRC/docs/bench.png}"
	SELECT="${SELECT:-$(workload_names)}"
	validate_args
}

# ---------------------------------------------------------------- checks

need() {
	command -v "$1" >/dev/null || die "$1 not found (scripts/install-deps.sh bench installs it)"
}

check_tools() {
	[ -x "$BIN/isergw-bench" ] || die "$BIN/isergw-bench missing: cmake --build $BUILD_DIR"
	need tgtd
	need tgtadm
	need python3
	need gnuplot
	need ss
	need timeout
	if [ "$CROSS" = 1 ]; then
		need iscsi-perf
		need qemu-img
		compgen -G "/usr/lib/*/qemu/block-iscsi.so" >/dev/null ||
			die "qemu-img has no iscsi driver (Debian package qemu-block-extra)"
	fi
	[ "$LIMITS" = 0 ] || need iperf3
	[ "$PROFILE" = 0 ] || need perf
}

choose_targets() {
	local t explicit="$TARGETS"
	TARGETS="${TARGETS:-$ALL_TARGETS}"
	TLIST=()
	for t in ${TARGETS//,/ }; do
		case "$t" in
		tgt) ;;
		isergw-wb | isergw-wt | isergw-mirror)
			if [ ! -x "$BIN/isergw" ]; then
				[ -z "$explicit" ] || die "$BIN/isergw missing"
				log "warning: $BIN/isergw missing, skipping $t"
				continue
			fi
			;;
		*) die "unknown target $t (known: $ALL_TARGETS)" ;;
		esac
		TLIST+=("$t")
	done
	[ ${#TLIST[@]} -gt 0 ] || die "no targets"
}

# ---------------------------------------------------------------- targets

declare -A T_PID T_URL T_PORT T_IQN T_LUN T_LOG

port_busy() {
	ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# settle_port VAR: if the port in VAR is taken, fail when it was given on the command line,
# else put a free loopback port into VAR (the machine may be shared).
settle_port() {
	local var="$1" new
	if ! [[ "${!var}" =~ ^[0-9]+$ ]] || [ "${!var}" -lt 1 ] || [ "${!var}" -gt 65535 ]; then
		usage_error "bad port ${!var}"
	fi
	port_busy "${!var}" || return 0
	[ -z "${GIVEN[$var]:-}" ] || die "port ${!var} is in use"
	new=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
	log "default port ${!var} is in use; using $new instead"
	printf -v "$var" '%s' "$new"
}

# wait_listen PORT PID: until something listens on PORT, while PID lives (10 s at most).
# (tgt__gone, from lib-tgt.sh, also counts an unreaped child as gone.)
wait_listen() {
	local i
	for ((i = 0; i < 100; i++)); do
		tgt__gone "$2" && return 1
		port_busy "$1" && return 0
		sleep 0.1
	done
	return 1
}

start_tgt() {
	local file="$WORK/tgt.img"
	TGT_STATE_DIR="$WORK/tgt-state" TGT_CTL="$TGT_CTL_OPT" TGT_CMDLOG="$WORK/commands.txt" \
		tgt_start "$TGT_PORT" "$file" "$IQN_PREFIX:tgt" || die "tgtd did not start"
	T_PID[tgt]="$TGT_PID" T_URL[tgt]="$TGT_URL" T_PORT[tgt]="$TGT_PORT"
	T_IQN[tgt]="$TGT_IQN" T_LUN[tgt]=1 T_LOG[tgt]="$WORK/tgt-state/tgtd-$TGT_PORT.log"
}

# ---- isergw: the one place that knows the daemon's command line and configuration format
# (docs/config.md). write_cache = yes is write-back, no is write-through.
# GATEWAY_LINES and LUN_LINES (optional) add keys: the mirrored target uses them.
isergw_write_config() { # FILE NAME PORT BACKING_FILE WRITE_CACHE(yes|no) [GATEWAY_LINES] [LUN_LINES]
	cat >"$1" <<EOF
# generated by scripts/run-bench.sh
[gateway]
var_dir = $WORK/$2-var
log_level = warn
pool_size = $POOL_BYTES
${6:-}

[portal bench]
address = 127.0.0.1
port = $3

[target $IQN_PREFIX:$2]

[lun $IQN_PREFIX:$2:0]
path = $4
size = $SIZE_BYTES
block_size = 512
create = no
write_cache = $5
${7:-}
EOF
}

isergw_start() { # NAME PORT WRITE_CACHE [GATEWAY_LINES] [LUN_LINES]
	local name="$1" port="$2" cfg="$WORK/$1.conf" file="$WORK/$1.img" pid
	mkdir -p "$WORK/$name-var"
	isergw_write_config "$cfg" "$name" "$port" "$file" "$3" "${4:-}" "${5:-}"
	"$BIN/isergw" --config "$cfg" --check-config >"$WORK/$name.log" 2>&1 ||
		die "isergw rejects $cfg: $(tail -3 "$WORK/$name.log")"
	printf '%s\n' "$BIN/isergw --config $cfg" >>"$WORK/commands.txt"
	"$BIN/isergw" --config "$cfg" >>"$WORK/$name.log" 2>&1 &
	pid=$!
	T_PID[$name]="$pid" T_PORT[$name]="$port" T_LOG[$name]="$WORK/$name.log"
	wait_listen "$port" "$pid" || die "isergw ($name) did not start; see ${T_LOG[$name]}"
	T_IQN[$name]="$IQN_PREFIX:$name" T_LUN[$name]=0
	T_URL[$name]="iscsi://127.0.0.1:$port/$IQN_PREFIX:$name/0"
}

# isergw-mirror: a write-back primary mirrored (synchronously, to the peer's cache) to a
# second isergw on loopback, whose CPU counts as the target's too (docs/replication.md).
mirror_start() {
	local peer_port sock="$WORK/isergw-mirror-var/isergw.sock" state=""
	MIRROR_PEER_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	peer_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	truncate -s "$SIZE_BYTES" "$WORK/isergw-mirror-peer.img"
	rm -rf "$WORK/isergw-mirror-var" "$WORK/isergw-mirror-peer-var"
	isergw_start isergw-mirror-peer "$peer_port" yes "mirror_listen = 127.0.0.1:$MIRROR_PEER_PORT" \
		"mirror_role = secondary
mirror_id = bench"
	PEER_PID="${T_PID[isergw-mirror-peer]}"
	unset 'T_PID[isergw-mirror-peer]'
	isergw_start isergw-mirror "$ISERGW_MIRROR_PORT" yes "" "mirror_role = primary
mirror_peer = 127.0.0.1:$MIRROR_PEER_PORT
mirror_id = bench"
	for _ in $(seq 1 600); do
		state=$("$BIN/isergw-ctl" --socket "$sock" --json mirror 2>/dev/null |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["volumes"][0]["state"])' 2>/dev/null || true)
		[ "$state" = synchronized ] && return 0
		sleep 0.1
	done
	die "isergw-mirror did not pair with its peer (state '$state'); see $WORK/isergw-mirror.log"
}

# CPU ticks of a target: the mirrored one counts its peer too.
target_ticks() {
	local n
	n=$(proc_ticks "${T_PID[$1]}")
	[ "$1" = isergw-mirror ] && [ -n "$PEER_PID" ] && n=$((n + $(proc_ticks "$PEER_PID")))
	echo "$n"
}

start_target() {
	local t="$1"
	port_busy "$(target_port "$t")" && die "port $(target_port "$t") for $t is in use"
	truncate -s "$SIZE_BYTES" "$WORK/$t.img"
	case "$t" in
	tgt) start_tgt ;;
	isergw-wb) isergw_start isergw-wb "$ISERGW_PORT" yes ;;
	isergw-wt) isergw_start isergw-wt "$ISERGW_WT_PORT" no ;;
	isergw-mirror) mirror_start ;;
	esac
	log "$t: pid ${T_PID[$t]}, ${T_URL[$t]}"
}

target_port() {
	case "$1" in
	tgt) echo "$TGT_PORT" ;;
	isergw-wb) echo "$ISERGW_PORT" ;;
	isergw-wt) echo "$ISERGW_WT_PORT" ;;
	isergw-mirror) echo "$ISERGW_MIRROR_PORT" ;;
	esac
}

stop_targets() {
	local t pid
	for t in "${!T_PID[@]}"; do
		pid="${T_PID[$t]}"
		if [ "$t" = tgt ]; then
			TGT_STATE_DIR="$WORK/tgt-state" tgt_stop "$TGT_PORT"
			continue
		fi
		kill -TERM "$pid" 2>/dev/null || continue
		tgt__wait_gone "$pid" 50 || kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	T_PID=()
	if [ -n "$PEER_PID" ]; then
		kill -TERM "$PEER_PID" 2>/dev/null || true
		tgt__wait_gone "$PEER_PID" 50 || kill -KILL "$PEER_PID" 2>/dev/null || true
		wait "$PEER_PID" 2>/dev/null || true
		PEER_PID=""
	fi
}

IPERF_PID=""
cleanup() {
	local rc=$?
	[ -z "$IPERF_PID" ] || kill "$IPERF_PID" 2>/dev/null || true
	stop_targets
	if [ "$KEEP" = 0 ] && [ -n "$WORK" ]; then
		rm -f "$WORK/tgt.img" "$WORK/isergw-wb.img" "$WORK/isergw-wt.img" \
			"$WORK/isergw-mirror.img" "$WORK/isergw-mirror-peer.img"
	fi
	exit "$rc"
}

# CPU time of a process (all threads), in clock ticks.
proc_ticks() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || {
		echo 0
		return
	}
	s="${s##*) }"
	awk '{print $12 + $13}' <<<"$s"
}

# Busy CPU ticks of the whole machine (all CPUs: user, nice, system, irq, softirq, steal).
busy_ticks() {
	awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat
}

# CPU ticks of this shell's finished children (cutime + cstime): the clients it has run.
child_ticks() {
	local s
	s=$(cat "/proc/$$/stat")
	s="${s##*) }"
	awk '{print $14 + $15}' <<<"$s"
}

# ---------------------------------------------------------------- running clients

FAILED=0

# record CMD...: log the command line (for docs/benchmarks.md) and run it, bounded.
record() {
	printf '%s\n' "$*" >>"$WORK/commands.txt"
	timeout --kill-after=5 "$RUN_LIMIT" "$@"
}

# bench_once TARGET OUTPUT_JSON ARGS...: one isergw-bench run, with CPU use written next to
# the JSON (.cpu: "target_ticks idle_ticks hz other_ticks"): the target's, the idle targets',
# and that of everything else on the machine (busy ticks minus targets and the client),
# which says how quiet the machine was.
bench_once() {
	local t="$1" out="$2" before after o idle0=0 idle1=0 busy0 busy1 kids0 kids1
	shift 2
	kids0=$(child_ticks)
	busy0=$(busy_ticks)
	before=$(target_ticks "$t")
	for o in "${TLIST[@]}"; do [ "$o" = "$t" ] || idle0=$((idle0 + $(target_ticks "$o"))); done
	if ! record "$BIN/isergw-bench" --url "${T_URL[$t]}" --initiator-name "$INITIATOR" \
		--json "$@" >"$out" 2>"${out%.json}.err"; then
		log "FAILED: $t $* (see ${out%.json}.err)"
		FAILED=1
		rm -f "$out"
		return 1
	fi
	after=$(target_ticks "$t")
	for o in "${TLIST[@]}"; do [ "$o" = "$t" ] || idle1=$((idle1 + $(target_ticks "$o"))); done
	busy1=$(busy_ticks)
	kids1=$(child_ticks)
	echo "$((after - before)) $((idle1 - idle0)) $(getconf CLK_TCK)" \
		"$((busy1 - busy0 - (after - before) - (idle1 - idle0) - (kids1 - kids0)))" \
		>"${out%.json}.cpu"
}

workload_field() { # NAME FIELD(2=description, 3=args, 4=range)
	local w
	for w in "${WORKLOADS[@]}"; do
		if [ "${w%%|*}" = "$1" ]; then
			cut -d'|' -f"$2" <<<"$w"
			return
		fi
	done
	die "unknown workload $1 (known: $(workload_names))"
}

range_of() {
	[ "$(workload_field "$1" 4)" = half ] && echo $((SIZE_BYTES / 2)) || echo "$SIZE_BYTES"
}

# Write the whole LUN once: the backing files end up equally allocated, and each target's
# allocator and caches have seen large transfers before anything is measured.
# A target that cannot even be prefilled is dropped from the run (which then fails).
prefill() {
	local t ok=()
	for t in "${TLIST[@]}"; do
		log "prefill $t ($SIZE_BYTES bytes, 1 MiB sequential writes)"
		if bench_once "$t" "$WORK/raw/prefill.$t.json" --rw write --bs 1M --qd 8 \
			--bytes "$SIZE_BYTES"; then
			ok+=("$t")
		else
			log "dropping $t from this run: $(head -c 300 "$WORK/raw/prefill.$t.err")"
		fi
	done
	[ ${#ok[@]} -gt 0 ] || die "no target could be prefilled"
	TLIST=("${ok[@]}")
}

# Before the rounds of a workload: a read workload first reads its whole range once, so that
# caches are full ("after warm-up").
prewarm() {
	local wl="$1" t
	case "$(workload_field "$wl" 3)" in
	*randread* | *"--rw read"*) ;;
	*) return 0 ;;
	esac
	for t in "${TLIST[@]}"; do
		bench_once "$t" "$WORK/raw/prewarm.$wl.$t.json" --rw read --bs 1M --qd 8 \
			--range "$(range_of "$wl")" --bytes "$(range_of "$wl")" || true
	done
}

run_workloads() {
	local wl r t args
	for wl in ${SELECT//,/ }; do
		read -r -a args <<<"$(workload_field "$wl" 3)"
		prewarm "$wl"
		for ((r = 1; r <= ROUNDS; r++)); do
			for t in "${TLIST[@]}"; do
				log "$wl round $r/$ROUNDS: $t"
				bench_once "$t" "$WORK/raw/$wl.$t.$r.json" "${args[@]}" \
					--range "$(range_of "$wl")" --time "$TIME" --warmup "$WARMUP" \
					--seed "$r" || true
			done
		done
	done
}

# ---------------------------------------------------------------- profile

# profile_one WORKLOAD: one more (unmeasured) run of WORKLOAD on isergw write-back, with
# `perf record` sampling the daemon during the measured seconds; the reports go to
# raw/perf.WORKLOAD.{dso,comm,sym}.txt. A perf failure is reported, not fatal.
profile_one() {
	local wl="$1" pid="${T_PID[isergw-wb]}" data="$WORK/raw/perf.$1.data" args perf_job
	read -r -a args <<<"$(workload_field "$wl" 3)"
	log "profile: $wl on isergw-wb, perf record for ${TIME}s"
	(
		sleep "$WARMUP"
		record perf record -F 999 -p "$pid" -o "$data" -- sleep "$TIME"
	) >"$WORK/raw/perf.$wl.log" 2>&1 &
	perf_job=$!
	bench_once isergw-wb "$WORK/raw/profile.$wl.json" "${args[@]}" \
		--range "$(range_of "$wl")" --time "$TIME" --warmup "$WARMUP" --seed 1 || true
	if ! wait "$perf_job" || [ ! -s "$data" ]; then
		log "warning: perf record failed (see $WORK/raw/perf.$wl.log)"
		return 0
	fi
	perf report -i "$data" --stdio --no-children --sort dso --percent-limit 1 \
		>"$WORK/raw/perf.$wl.dso.txt" 2>>"$WORK/raw/perf.$wl.log" || true
	perf report -i "$data" --stdio --no-children --sort comm --percent-limit 1 \
		>"$WORK/raw/perf.$wl.comm.txt" 2>>"$WORK/raw/perf.$wl.log" || true
	perf report -i "$data" --stdio --no-children --sort dso,sym --percent-limit 0.5 \
		>"$WORK/raw/perf.$wl.sym.txt" 2>>"$WORK/raw/perf.$wl.log" || true
	rm -f "$data"
}

profile_isergw() {
	local wl
	if [ -z "${T_PID[isergw-wb]:-}" ]; then
		log "warning: --profile needs the isergw-wb target; no profile"
		return 0
	fi
	for wl in ${PROFILE_WL//,/ }; do profile_one "$wl"; done
}

# ---------------------------------------------------------------- limits and cross-checks

measure_limits() {
	local secs=5 mtime=2
	[ "$SMOKE" = 0 ] || secs=1 mtime=0.3
	port_busy "$IPERF_PORT" && die "iperf3 port $IPERF_PORT is in use (--iperf-port)"
	log "limits: iperf3 over loopback, ${secs}s"
	iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT" >"$WORK/iperf3-server.log" 2>&1 &
	IPERF_PID=$!
	wait_listen "$IPERF_PORT" "$IPERF_PID" || die "iperf3 server did not start"
	record iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$secs" -J >"$WORK/raw/iperf3.json" ||
		{ log "FAILED: iperf3"; FAILED=1; }
	wait "$IPERF_PID" 2>/dev/null || true
	IPERF_PID=""
	log "limits: memcpy, ${mtime}s"
	record "$BIN/isergw-bench" --memcpy --time "$mtime" --json >"$WORK/raw/memcpy.json" ||
		{ log "FAILED: memcpy"; FAILED=1; }
}

# xcheck NAME TARGET CMD...: run a third-party client, output into raw/x.NAME.TARGET.txt,
# with the target's CPU ticks next to it.
xcheck() {
	local name="$1" t="$2" out before after
	shift 2
	out="$WORK/raw/x.$name.$t.txt"
	log "cross-check $name: $t"
	before=$(proc_ticks "${T_PID[$t]}")
	if ! record "$@" >"$out" 2>&1; then
		log "FAILED: $name on $t (see $out)"
		FAILED=1
	fi
	after=$(proc_ticks "${T_PID[$t]}")
	echo "$((after - before)) 0 $(getconf CLK_TCK)" >"${out%.txt}.cpu"
}

qemu_opts() {
	echo "driver=iscsi,transport=tcp,portal=127.0.0.1:${T_PORT[$1]},target=${T_IQN[$1]},lun=${T_LUN[$1]},initiator-name=$INITIATOR-qemu"
}

cross_checks() {
	local t secs=5 n4k=100000 n128k=16384
	[ "$SMOKE" = 0 ] || secs=1 n4k=2000 n128k=256
	for t in "${TLIST[@]}"; do
		xcheck perf-r4k-qd32 "$t" iscsi-perf -i "$INITIATOR-perf" -m 32 -b 8 -t "$secs" -r \
			"${T_URL[$t]}"
		xcheck perf-r128k-qd16 "$t" iscsi-perf -i "$INITIATOR-perf" -m 16 -b 256 -t "$secs" \
			"${T_URL[$t]}"
	done
	for t in "${TLIST[@]}"; do
		xcheck qemu-w4k-qd32 "$t" qemu-img bench --image-opts -t none -w -s 4096 \
			-S 1052672 -d 32 -c "$n4k" "$(qemu_opts "$t")"
		xcheck qemu-w128k-qd16 "$t" qemu-img bench --image-opts -t none -w -s 131072 -d 16 \
			-c "$n128k" "$(qemu_opts "$t")"
		xcheck qemu-r128k-qd16 "$t" qemu-img bench --image-opts -t none -s 131072 -d 16 \
			-c "$n128k" "$(qemu_opts "$t")"
	done
}

# ---------------------------------------------------------------- machine and report

describe_machine() {
	{
		echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "kernel=$(uname -r)"
		echo "cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
		echo "cores=$(nproc)"
		echo "memory=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
		# shellcheck disable=SC1091
		echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
		echo "tgt=$(dpkg-query -W -f='${Version}' tgt 2>/dev/null || echo unknown)"
		echo "libiscsi=$(dpkg-query -W -f='${Version}' libiscsi7 2>/dev/null || echo unknown)"
		echo "qemu=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || echo unknown)"
		echo "isergw=$([ -x "$BIN/isergw" ] && "$BIN/isergw" --version 2>/dev/null || echo 'not built')"
		echo "commit=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo none)"
		echo "fs=$(df -hT "$WORK" | awk 'NR == 2 {print $2 " on " $1}')"
		echo "size=$SIZE_BYTES"
		echo "pool=$POOL_BYTES"
		echo "rounds=$ROUNDS"
		echo "time=$TIME"
		echo "warmup=$WARMUP"
		echo "smoke=$SMOKE"
		echo "targets=${TLIST[*]}"
		echo "workloads=$SELECT"
		echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
		echo "invocation=$INVOCATION"
		echo "note=$NOTE"
		echo "src=$SRC"
		echo "work=$WORK"
		echo "out=$OUT"
	} >"$WORK/machine.txt"
	local w
	for w in "${WORKLOADS[@]}"; do echo "$w"; done >"$WORK/workloads.txt"
}

# Everything between these markers in OUT is replaced; the rest of the file is left alone.
BEGIN_MARK="<!-- run-bench:begin -->"
END_MARK="<!-- run-bench:end -->"

update_doc() {
	local frag="$WORK/results.md"
	[ -f "$OUT" ] || printf '# Benchmarks\n\n%s\n%s\n' "$BEGIN_MARK" "$END_MARK" >"$OUT"
	grep -qF "$BEGIN_MARK" "$OUT" || printf '\n%s\n%s\n' "$BEGIN_MARK" "$END_MARK" >>"$OUT"
	python3 - "$OUT" "$frag" "$BEGIN_MARK" "$END_MARK" <<'PY'
import sys
out, frag, begin, end = sys.argv[1:5]
text = open(out).read()
body = open(frag).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1) if end in rest else ("", rest)
open(out, "w").write(head + begin + "\n" + body + end + tail)
PY
}

summarize() {
	python3 "$WORK/summarize.py" "$WORK" "$CHART" >"$WORK/results.md" ||
		die "summarizing failed"
	if gnuplot "$WORK/chart.gp" 2>"$WORK/gnuplot.err"; then
		log "chart: $CHART"
	else
		log "FAILED: gnuplot (see $WORK/gnuplot.err)"
		FAILED=1
	fi
	update_doc
	log "results: $OUT"
}

# The summarizer: medians and ratios, the markdown fragment and the gnuplot script.
write_summarizer() {
	cat >"$WORK/summarize.py" <<'PY'
import glob, json, os, re, statistics, sys

work, chart = sys.argv[1], sys.argv[2]
raw = os.path.join(work, "raw")
machine = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(work, "machine.txt")))
targets = machine["targets"].split()
selected = machine["workloads"].split(",")
workloads = [l.rstrip("\n").split("|") for l in open(os.path.join(work, "workloads.txt"))]
workloads = [w for w in workloads if w[0] in selected]
LABEL = {"tgt": "tgt", "isergw-wb": "isergw write-back", "isergw-wt": "isergw write-through",
         "isergw-mirror": "isergw write-back, mirrored"}


def cpu_of(path):
    """Target, idle targets' and other processes' CPU seconds during a run."""
    try:
        f = open(path).read().split()
        hz = int(f[2])
        other = max(int(f[3]), 0) / hz if len(f) > 3 else None
        return int(f[0]) / hz, int(f[1]) / hz, other
    except (OSError, ValueError, IndexError):
        return None, None, None


def runs(wl, t):
    out = []
    for p in sorted(glob.glob(os.path.join(raw, f"{wl}.{t}.*.json"))):
        try:
            j = json.load(open(p))
        except ValueError:
            continue
        j["target_cpu_s"], j["idle_cpu_s"], j["other_cpu_s"] = cpu_of(p[:-5] + ".cpu")
        out.append(j)
    return out


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, unit=""):
    if v is None:
        return "–"
    if v >= 100000:
        return f"{v / 1000:.0f}K{unit}"
    if v >= 10000:
        return f"{v / 1000:.1f}K{unit}"
    if v >= 100:
        return f"{v:.0f}{unit}"
    if v >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.2f}{unit}"


def is_seq(w):
    return "128k" in w[2]


def metric(w):
    return ("mb_s", "MB/s") if is_seq(w) else ("iops", "IOPS")


def iperf_gbit():
    try:
        j = json.load(open(os.path.join(raw, "iperf3.json")))
        return j["end"]["sum_received"]["bits_per_second"] / 1e9
    except (OSError, ValueError, KeyError):
        return None


def memcpy_gbs():
    try:
        return json.load(open(os.path.join(raw, "memcpy.json")))["gb_s"]
    except (OSError, ValueError, KeyError):
        return None


R = {w[0]: {t: runs(w[0], t) for t in targets} for w in workloads}
# CPU used by everything else on the machine during measured runs, in cores (the client's
# whole process lifetime and the targets are taken out; kernel threads working for them,
# e.g. ksoftirqd, remain, so a quiet machine shows a few percent).
others = [(w[0], t, r["other_cpu_s"] / r["elapsed_s"])
          for w in workloads for t in targets for r in R[w[0]][t]
          if r.get("other_cpu_s") is not None and r.get("elapsed_s")]
other_med = statistics.median([o[2] for o in others]) if others else None
loop_gbit, mem_gbs = iperf_gbit(), memcpy_gbs()
loop_mbs = loop_gbit * 1000 / 8 if loop_gbit else None
P = print

P(f"## Results ({machine['date']})\n")
if machine["smoke"] == "1":
    P("**Smoke run** (harness check, figures meaningless).\n")
provisional = []
if int(machine["rounds"]) < 3:
    provisional.append(f"{machine['rounds']} round(s) instead of at least 3")
if float(machine["time"]) < 5:
    provisional.append(f"runs of {machine['time']} s instead of 5")
load1 = float(machine["load"].split()[0])
if load1 >= 1.0:
    provisional.append(f"the machine was busy (load average {load1:.2f} at the start)")
if other_med is not None and other_med > 0.15:
    provisional.append(f"other processes used {100 * other_med:.0f}% of a core during the "
                       "median run")
if machine["smoke"] != "1" and provisional:
    P("**Provisional figures**: " + "; ".join(provisional)
      + ". Re-run `make bench` on a quiet machine for figures of record.\n")
if machine["note"]:
    P(machine["note"] + "\n")
P(f"Reproduce with (from the source tree, after `cmake --build build`):\n\n"
  f"```sh\n{machine['invocation']}\n```\n")
P(f"Load average when the targets had started: {machine['load']}."
  + (f" CPU used by other processes during the measured runs (the machine's busy time "
     f"minus the targets and the client, from /proc/stat): median {100 * other_med:.0f}% of "
     f"one core, at most {100 * max(o[2] for o in others):.0f}%"
     f" ({max(others, key=lambda o: o[2])[0]} on {max(others, key=lambda o: o[2])[1]})."
     if others else "") + "\n")
P(f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}, "
  f"{machine['os']}, kernel {machine['kernel']}; backing files on {machine['fs']}. "
  f"tgt {machine['tgt']}, libiscsi {machine['libiscsi']}, qemu {machine['qemu']}, "
  f"{machine['isergw']} (commit {machine['commit']}).\n")
P(f"Each cell is the median of {machine['rounds']} runs of {machine['time']} s (after "
  f"{machine['warmup']} s unmeasured), targets in turn ({', '.join(targets)}) within each "
  f"round; the range in brackets is min–max. LUNs of {int(machine['size']) >> 20} MiB; "
  f"4 and 8 KiB workloads use the first half, 128 KiB ones all of it. One isergw-bench "
  f"session per run.\n")

# --- physical limits
P("### Physical limits (same run)\n")
P("| limit | value |\n|---|---|")
P(f"| TCP over loopback, one stream (iperf3) | "
  + (f"{loop_gbit:.1f} Gbit/s = {loop_mbs:.0f} MB/s |" if loop_gbit else "not measured |"))
P(f"| memcpy, one thread, 256 MiB buffers | "
  + (f"{mem_gbs:.1f} GB/s |" if mem_gbs else "not measured |"))
P("")

# --- throughput
hdr = "| workload | metric | " + " | ".join(LABEL[t] for t in targets)
hdr += "".join(f" | {LABEL[t].replace('isergw ', '')} / tgt" for t in targets if t != "tgt")
hdr += " | best % of loopback |" if loop_mbs else " |"
P("### Throughput\n")
P(hdr)
P("|" + "---|" * (hdr.count("|") - 1))
chart_rows, failures = [], []
for w in workloads:
    key, unit = metric(w)
    cells, meds = [], {}
    for t in targets:
        vals = [r[key] for r in R[w[0]][t]]
        meds[t] = med(vals)
        if len(vals) < int(machine["rounds"]):
            failures.append(f"{w[0]} on {t}: {len(vals)} of {machine['rounds']} runs succeeded")
        cell = fmt(meds[t])
        if len(vals) > 1:
            cell += f" ({fmt(min(vals))}–{fmt(max(vals))})"
        cells.append(cell)
    ratios = []
    for t in targets:
        if t == "tgt":
            continue
        base = meds.get("tgt")
        ratios.append(f"{meds[t] / base:.2f}x" if base and meds[t] else "–")
    row = f"| {w[1]} | {unit} | " + " | ".join(cells + ratios)
    if loop_mbs:
        best = max((R[w[0]][t] and med([r["mb_s"] for r in R[w[0]][t]]) or 0) for t in targets)
        row += f" | {100 * best / loop_mbs:.0f}% |" if is_seq(w) else " | |"
    else:
        row += " |"
    P(row)
    chart_rows.append((w[0], unit, [meds[t] for t in targets]))
P("")

# --- fraction of the physical limits
if loop_mbs or mem_gbs:
    P("### Fraction of the physical limits (median MB/s of each target)\n")
    P("Loopback TCP is what one connection can carry at best; memcpy is what one core can "
      "copy. A target that copies each byte once on its way through uses a share of the "
      "memcpy limit.\n")
    P("| workload | " + " | ".join(f"{LABEL[t]} % loopback | % memcpy" for t in targets) + " |")
    P("|---|" + "---|---|" * len(targets))
    for w in workloads:
        cells = []
        for t in targets:
            m = med([r["mb_s"] for r in R[w[0]][t]])
            cells.append(f"{100 * m / loop_mbs:.1f}%" if m and loop_mbs else "–")
            cells.append(f"{100 * m / (mem_gbs * 1000):.1f}%" if m and mem_gbs else "–")
        P(f"| {w[1]} | " + " | ".join(cells) + " |")
    P("")

# --- latency
P("### Latency, microseconds (median over runs of each run's p50 / p99 / p99.9 / max)\n")
P("| workload | " + " | ".join(LABEL[t] for t in targets) + " |")
P("|---|" + "---|" * len(targets))
for w in workloads:
    cells = []
    for t in targets:
        rs = R[w[0]][t]
        if not rs:
            cells.append("–")
            continue
        q = [med([r["lat_us"][k] for r in rs]) for k in ("p50", "p99", "p99_9", "max")]
        cells.append(" / ".join(fmt(v) for v in q))
    P(f"| {w[1]} | " + " | ".join(cells) + " |")
P("")

# --- CPU
P("### CPU: target CPU seconds per GB and per million I/Os (from /proc/PID/stat), "
  "client CPU seconds per million I/Os\n")
P("| workload | " + " | ".join(f"{LABEL[t]} s/GB | s/M IOs" for t in targets)
  + " | client s/M IOs |")
P("|---|" + "---|---|" * len(targets) + "---|")
idle_warn = []
for w in workloads:
    cells, client = [], []
    for t in targets:
        rs = [r for r in R[w[0]][t] if r.get("target_cpu_s") is not None]
        per_gb = med([r["target_cpu_s"] / (r["bytes"] / 1e9) for r in rs if r["bytes"]])
        per_mio = med([r["target_cpu_s"] / (r["ops"] / 1e6) for r in rs if r["ops"]])
        client += [r["cpu"]["total_s"] / (r["ops"] / 1e6) for r in rs if r["ops"]]
        cells += [fmt(per_gb), fmt(per_mio)]
        for r in rs:
            if r["idle_cpu_s"] and r["idle_cpu_s"] > 0.02 * r["elapsed_s"]:
                idle_warn.append(f"{w[0]} on {t}: idle targets used {r['idle_cpu_s']:.2f} s CPU")
    P(f"| {w[1]} | " + " | ".join(cells) + f" | {fmt(med(client))} |")
P("")
if idle_warn:
    P("Warning: targets not under test used CPU during runs (the figures above are then "
      "pessimistic for the target under test):\n")
    for s in idle_warn[:10]:
        P(f"- {s}")
    P("")

# --- cross-checks


def xparse(name, t):
    p = os.path.join(raw, f"x.{name}.{t}.txt")
    try:
        text = open(p).read()
    except OSError:
        return None
    if name.startswith("perf"):
        m = re.findall(r"iops average (\d+) \((\d+) MB/s\)", text)
        if not m:
            return None
        iops, mbs = map(int, m[-1])
        return iops if "4k" in name else iops * (128 * 1024) / 1e6
    m = re.search(r"Sending (\d+) \w+ requests, (\d+) bytes.*?Run completed in ([\d.]+) seconds",
                  text, re.S)
    if not m:
        return None
    n, size, secs = int(m[1]), int(m[2]), float(m[3])
    return n / secs if size == 4096 else n * size / secs / 1e6


XCHECKS = [
    ("perf-r4k-qd32", "iscsi-perf: 4 KiB random read, 32 outstanding", "IOPS", "r4k-qd32"),
    ("perf-r128k-qd16", "iscsi-perf: 128 KiB sequential read, 16 outstanding", "MB/s",
     "r128k-qd8"),
    ("qemu-w4k-qd32", "qemu-img bench: 4 KiB writes, stride 1 MiB + 4 KiB, depth 32", "IOPS",
     "w4k-qd32"),
    ("qemu-w128k-qd16", "qemu-img bench: 128 KiB sequential write, depth 16", "MB/s",
     "w128k-qd8"),
    ("qemu-r128k-qd16", "qemu-img bench: 128 KiB sequential read, depth 16", "MB/s",
     "r128k-qd8"),
]
if glob.glob(os.path.join(raw, "x.*.txt")):
    P("### Cross-check with third-party clients (one run each), beside isergw-bench\n")
    P("| client and workload | metric | " + " | ".join(LABEL[t] for t in targets)
      + " | isergw-bench, closest workload (tgt) |")
    P("|---|---|" + "---|" * len(targets) + "---|")
    for name, desc, unit, ours in XCHECKS:
        cells = [fmt(xparse(name, t)) for t in targets]
        key = "mb_s" if unit == "MB/s" else "iops"
        own = R.get(ours, {}).get("tgt") or []
        P(f"| {desc} | {unit} | " + " | ".join(cells)
          + f" | {fmt(med([r[key] for r in own]))} ({ours}) |")
    P("")

if failures:
    P("### Failed runs\n")
    for f in failures:
        P(f"- {f}")
    P("")

# --- issue 8 goals, judged from the medians above, and where isergw's time goes


def ratio(wl, t):
    a = med([r["iops"] for r in R.get(wl, {}).get(t, [])])
    b = med([r["iops"] for r in R.get(wl, {}).get("tgt", [])])
    return a / b if a and b else None


def loop_share(wl, t):
    m = med([r["mb_s"] for r in R.get(wl, {}).get(t, [])])
    return m / loop_mbs if m and loop_mbs else None


GOALS = [
    ("w4k-qd32", "4 KiB random write QD32, write-back: at least 2x tgt", ratio, 2.0, "x"),
    ("r4k-qd32", "4 KiB random read QD32 from cache: at least 1.5x tgt", ratio, 1.5, "x"),
    ("w128k-qd8", "128 KiB sequential write QD8: at least 80% of loopback TCP", loop_share,
     0.8, "%"),
    ("r128k-qd8", "128 KiB sequential read QD8: at least 80% of loopback TCP", loop_share,
     0.8, "%"),
]
profiled = {os.path.basename(p).split(".")[1]
            for p in glob.glob(os.path.join(raw, "perf.*.sym.txt"))}
if "isergw-wb" in targets:
    P("### Goals of issue 8 (isergw write-back)\n")
    P("| goal | measured | met |\n|---|---|---|")
    short = []
    for wl, desc, fn, goal, kind in GOALS:
        if wl not in R:
            P(f"| {desc} | not run | – |")
            continue
        v = fn(wl, "isergw-wb")
        shown = "–" if v is None else (f"{v:.2f}x" if kind == "x" else f"{100 * v:.0f}%")
        met = v is not None and v >= goal
        P(f"| {desc} | {shown} | {'yes' if met else '**no**'} |")
        if not met:
            short.append(wl)
    P("")
    missing = [wl for wl in short if wl not in profiled]
    if missing:
        P("Not profiled in this run: " + ", ".join(missing) + " (`--profile "
          f"--profile-workloads {','.join(missing)}`).\n")


def perf_rows(path, limit):
    rows = []
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return rows
    for l in lines:
        if not l.strip() or l.lstrip().startswith("#"):
            continue
        parts = l.split()
        if not parts[0].endswith("%"):
            continue
        rows.append(parts)
        if len(rows) == limit:
            break
    return rows


if profiled:
    P("### Where isergw's time goes (perf, write-back daemon)\n")
    P(f"`perf record -F 999 -p PID` for the {machine['time']} measured seconds of one "
      "extra run of the workload (not counted above); `perf report --no-children --sort "
      "dso`, `--sort comm` (threads) and `--sort dso,sym`. Shares of the daemon's samples; `[k]` is kernel code "
      "run for the daemon (system calls, TCP, page cache).\n")
    every = [l.rstrip("\n").split("|") for l in open(os.path.join(work, "workloads.txt"))]
    for w in every:
        if w[0] not in profiled:
            continue
        base = os.path.join(raw, f"perf.{w[0]}")
        dsos = perf_rows(base + ".dso.txt", 6)
        comms = perf_rows(base + ".comm.txt", 6)
        syms = perf_rows(base + ".sym.txt", 20)
        own = None
        try:
            own = json.load(open(os.path.join(raw, f"profile.{w[0]}.json")))
        except (OSError, ValueError):
            pass
        extra = ""
        if own:
            extra = (f" (this run: {fmt(own['iops'])} IOPS, {fmt(own['mb_s'])} MB/s, "
                     "under perf)")
        P(f"**{w[1]}**{extra}. By shared object: "
          + ", ".join(f"{d[1]} {d[0]}" for d in dsos) + ". By thread: "
          + ", ".join(f"{' '.join(c[1:])} {c[0]}" for c in comms) + ".\n")
        P("| share | shared object | symbol |\n|---|---|---|")
        for r in syms:
            P(f"| {r[0]} | {r[1]} | `{' '.join(r[2:])}` |")
        P("")

# --- how it was run
P("### Commands\n")
P("Targets were set up with the commands below (the isergw configuration follows); each "
  "run's command is shown for tgt, first round; the isergw runs differ only in the URL "
  "and seed. Every command line of the run is in `commands.txt` in the work directory.\n")
src, wdir = machine["src"], machine["work"]


def tidy(l):
    return l.replace(wdir, "WORK").replace(src + "/", "")


cmds = [l.rstrip("\n") for l in open(os.path.join(work, "commands.txt"))]
shown, seen = [], set()
for l in cmds:
    is_bench = "isergw-bench --url" in l
    if (is_bench and ":tgt/" not in l) or re.search(r"--seed (?!1\b)\d+", l):
        continue
    if l.startswith("qemu-img") and "target=" in l and ":tgt," not in l:
        continue
    if l.startswith("iscsi-perf") and ":tgt/" not in l:
        continue
    if "isergw --config" in l and ("isergw-wt" in l or "isergw-mirror" in l):
        continue
    key = tidy(l)
    if key not in seen:
        seen.add(key)
        shown.append(key)
P("```sh\n" + "\n".join(shown) + "\n```\n")
cfg = os.path.join(work, "isergw-wb.conf")
if os.path.exists(cfg):
    P("isergw write-back configuration (write-through: `write_cache = no`, its own port and "
      "file):\n")
    P("```ini\n" + tidy(open(cfg).read()).rstrip() + "\n```\n")

if machine["smoke"] != "1":
    rel = os.path.relpath(chart, os.path.dirname(os.path.abspath(machine["out"])))
    P(f"![isergw and tgt, medians]({rel})\n")
P("Raw results (one JSON per run), logs and the exact command lines: the work directory "
  "of scripts/run-bench.sh (`build/bench-run/` by default; `commands.txt`).\n")

# --- gnuplot: one panel of clustered bars per metric that has workloads
dat = os.path.join(work, "chart.dat")
panels = []
with open(dat, "w") as f:
    for unit in ("IOPS", "MB/s"):
        rows = [(n, v) for n, u, v in chart_rows if u == unit]
        if not rows:
            continue
        f.write(f"# {unit}: workload " + " ".join(targets) + "\n")
        for name, vals in rows:
            f.write(name + " " + " ".join(f"{v:.1f}" if v else "0" for v in vals) + "\n")
        f.write("\n\n")
        panels.append(unit)


def plot_cmd(idx, unit):
    parts = []
    for i, t in enumerate(targets):
        u = f"{i + 2}:xtic(1)" if i == 0 else f"{i + 2}"
        parts.append(f"'{dat}' index {idx} using {u} title '{LABEL[t]}'")
    if unit == "MB/s" and loop_mbs:
        parts.append(f"{loop_mbs:.1f} with lines dt 2 lc rgb 'black' title 'loopback TCP limit'")
    return "plot " + ", ".join(parts)


titles = {"IOPS": "4 and 8 KiB workloads", "MB/s": "128 KiB sequential"}
gp = [f"set terminal pngcairo size {600 * max(len(panels), 1)},500 noenhanced font ',10'",
      f"set output '{chart}'",
      "set style data histograms", "set style histogram clustered gap 1",
      "set style fill solid 0.8 border -1", "set key below horizontal", "set grid ytics",
      "set yrange [0:*]",
      f"set multiplot layout 1,{max(len(panels), 1)} title 'medians, loopback, "
      f"{machine['date']}'"]
for i, unit in enumerate(panels):
    gp += [f"set title '{titles[unit]}'", f"set ylabel '{unit}'", plot_cmd(i, unit)]
gp.append("unset multiplot")
open(os.path.join(work, "chart.gp"), "w").write("\n".join(gp) + "\n")
PY
}

# ---------------------------------------------------------------- main

main() {
	local t0 t
	parse_args "$@"
	apply_defaults
	check_tools
	choose_targets
	SIZE_BYTES=$(numfmt --from=iec "${SIZE%B}")
	POOL_BYTES="$SIZE_BYTES"
	RUN_LIMIT=$(awk -v t="$TIME" -v w="$WARMUP" 'BEGIN {printf "%d", 3 * (t + w) + 60}')
	t0=$(date +%s)
	mkdir -p "$WORK"
	rm -rf "$WORK/raw" "$WORK/commands.txt"
	mkdir -p "$WORK/raw"
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	for t in TGT_PORT ISERGW_PORT ISERGW_WT_PORT ISERGW_MIRROR_PORT IPERF_PORT; do settle_port "$t"; done
	for t in "${TLIST[@]}"; do start_target "$t"; done
	describe_machine
	write_summarizer
	[ "$LIMITS" = 0 ] || measure_limits
	prefill
	run_workloads
	[ "$PROFILE" = 0 ] || profile_isergw
	[ "$CROSS" = 0 ] || cross_checks
	summarize
	log "done in $(($(date +%s) - t0)) s$([ "$FAILED" = 0 ] || echo ', with FAILED runs')"
	return "$FAILED"
}

main "$@"
