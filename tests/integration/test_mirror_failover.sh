#!/bin/bash
# The failover cycle of a mirrored pair (docs/replication.md, "Failover and switchover"): both
# gateways name each other (mirror_peer on the secondary too).
#  1. a primary, b secondary, paired; writes stream on a; kill -9 of a;
#  2. b promoted: it serves, every write acknowledged on a is there; writes on b are recorded
#     (a is down: degraded);
#  3. a's disk holds a write b never got (as a crashed primary may: sent, written locally,
#     never acknowledged); a restarts, primary by its state file: it does not serve (NOT
#     READY), learns from b that b was promoted and steps down by itself (no mirror-demote):
#     b pairs with it and copies every region (a crashed primary cannot say which of its
#     regions differ), so a ends byte for byte b (the stale write is gone) and holds every
#     write acknowledged on b;
#  4. planned switch back: b demoted (a clean handover: it flushes, both keep naming the
#     same data), a promoted: they pair again without a full copy (counters), writes on a
#     reach b, both backends identical;
#  5. a primary restarted while its secondary is healthy: it serves once paired (about a
#     second), its writes reach b;
#  6. a primary restarted while its peer is down: NOT READY, BECOMING READY for the start-up
#     wait, then it serves alone (degraded);
#  7. split brain at start: a wrote alone (6), b promoted meanwhile, a restarted: a stays NOT
#     READY (standby) past the wait; the operator demotes a and establishes full on b.
source "$(dirname "$0")/lib.sh"
LUN_BYTES=$((128 << 20)) # 128 regions of 1 MiB; the writers use [64 MiB, 128 MiB)
REGIONS=128
source "$(dirname "$0")/mirror_lib.sh"
NODES="a b"
PEER_OF=([a]=b [b]=a)
export PEER_ALWAYS=1

flush() { ctl "$1" flush "$IQN" 0 >/dev/null || fail "flush $1"; }
same_images() {
	flush a
	flush b
	cmp -s "$TMP/a.img" "$TMP/b.img"
}
expect() { # NODE FIELD VALUE
	local v
	v=$(mstat "$1" "$2")
	[ "$v" = "$3" ] || fail "$1: $2 is '$v', not '$3': $(ctl "$1" --json mirror | jq -c '.volumes[0]')"
}
wait_field() { # NODE FIELD VALUE [SECONDS]
	for _ in $(seq 1 $((${4:-10} * 10))); do
		[ "$(mstat "$1" "$2")" = "$3" ] && return 0
		sleep 0.1
	done
	fail "$1: $2 not '$3' within ${4:-10} s: $(ctl "$1" --json mirror | jq -c '.volumes[0]')"
}
probe() { $IO probe "${PORT[$1]}" "$IQN" "$INI1"; } # good, or sense KEY/ASC/ASCQ
now_ms() { date +%s%3N; }

echo "-- 1. a primary, b secondary; kill -9 of a mid-stream"
node_config b secondary
node_config a primary
node_start b
node_start a
wait_state a synchronized
expect b role secondary
expect b state synchronized
writers_start "${PORT[a]}" "$TMP/w1.json"
wait_progress 100 || fail "writers on a: $(cat "$TMP/w1.json.out")"
node_kill a
writers_stop || true

echo "-- 2. b promoted: it serves, records its writes while a is down"
ctl b mirror-promote "$IQN" 0 >/dev/null || fail "promote b"
expect b role primary
wait_state b degraded 5
flush b
$IO verify "$TMP/b.img" "$TMP/w1.json" || fail "acknowledged writes missing on the promoted b"
writers_start "${PORT[b]}" "$TMP/w2.json"
wait_progress 100 || fail "writers on b: $(cat "$TMP/w2.json.out")"
writers_stop || fail "a write failed on b: $(tail -3 "$TMP/w2.json.out")"
dirty=$(mstat b out_of_sync_regions)
[ "$dirty" -gt 0 ] || fail "b recorded no region while a was down"
echo "ok - b serves every write acknowledged on a; $dirty regions recorded while a is down"

echo "-- 3. a back: it does not serve, steps down by itself; b copies everything to a"
# A write that reached a's disk but never b (a crashed primary may hold such writes): region
# 5, which nothing else writes. A resync of b's recorded regions alone would leave it there.
head -c 65536 /dev/urandom | dd of="$TMP/a.img" bs=65536 seek=$((5 * 16)) conv=notrunc status=none
from=$(($(wc -l <"${LOG[a]}") + 1))
node_start a
# Holding (04/01) or stepped down already (04/0b): NOT READY either way, never served.
out=$(probe a)
case "$out" in "sense 02/04/01" | "sense 02/04/0b") ;; *) fail "a restarted, a read on it: $out" ;; esac
wait_field a role secondary 10
expect a startup "stepped down: peer promoted"
expect a serving false
grep -q "STEPPED DOWN at start" "${LOG[a]}" || fail "no log line on a for the step-down"
if tail -n +"$from" "${LOG[a]}" | grep -q "serves initiators now"; then
	fail "a served initiators after its restart"
fi
wait_state b synchronized 30
[ "$(probe a)" = "sense 02/04/0b" ] || fail "a serves as a secondary: $(probe a)"
expect b full_copies 1
[ "$(mstat b resync_copied_regions)" -ge $REGIONS ] ||
	fail "b copied $(mstat b resync_copied_regions) regions, not all $REGIONS"
expect a state synchronized
expect a consistent true
grep -q "did not hand over: full copy" "${LOG[b]}" || fail "no log line on b for the full copy"
same_images || fail "a and b differ after the resync (a kept a write b never had?)"
$IO verify "$TMP/a.img" "$TMP/w2.json" || fail "writes acknowledged on b missing on a"
echo "ok - a held NOT READY, stepped down by itself, b copied all $REGIONS regions to it, backends identical"

echo "-- 4. planned switch back: b demoted, a promoted, no full copy"
writers_start "${PORT[b]}" "$TMP/w3.json"
wait_progress 50 || fail "writers on b: $(cat "$TMP/w3.json.out")"
writers_stop || fail "a write failed on b: $(tail -3 "$TMP/w3.json.out")"
ctl b mirror-demote "$IQN" 0 >/dev/null || fail "demote b"
grep -q "clean handover" "${LOG[b]}" || fail "b's demote was not a clean handover"
expect b role secondary
ctl a mirror-promote "$IQN" 0 >/dev/null || fail "promote a"
expect a role primary
wait_state a synchronized 30
expect a full_copies 0
copied=$(mstat a resync_copied_regions)
[ "$copied" -lt 16 ] || fail "a copied $copied regions after a planned switch (a full copy?)"
writers_start "${PORT[a]}" "$TMP/w4.json"
wait_progress 100 || fail "writers on a: $(cat "$TMP/w4.json.out")"
writers_stop || fail "a write failed on a: $(tail -3 "$TMP/w4.json.out")"
expect a state synchronized
expect b state synchronized
[ "$(mstat a degraded_writes)" -le $((copied * 16)) ] || fail "writes on a went unmirrored"
same_images || fail "a and b differ after the switch back"
$IO verify "$TMP/b.img" "$TMP/w4.json" || fail "writes acknowledged on a missing on b"
echo "ok - switched back without a full copy ($copied regions copied), backends identical"

echo "-- 5. a restarted while b is a healthy secondary: serves once paired"
node_stop a
t0=$(now_ms)
node_start a
for _ in $(seq 1 100); do
	[ "$(probe a)" = good ] && break
	sleep 0.1
done
took=$(($(now_ms) - t0))
[ "$(probe a)" = good ] || fail "a does not serve after a restart: $(probe a)"
[ "$took" -lt 4000 ] || fail "a took $took ms to serve after a restart with its secondary up"
expect a startup paired
expect a role primary
grep -q "paired with .*: serving" "${LOG[a]}" || fail "no log line on a for the pairing"
"$BIN/iscsi_pattern" --count 20 --max-size 256K --initiator-name "$INI1" \
	"iscsi://127.0.0.1:${PORT[a]}/$IQN/0" >/dev/null || fail "writes on a after the restart"
wait_state a synchronized 30
same_images || fail "a and b differ after writes on the restarted a"
echo "ok - a served $took ms after its start (paired), writes mirrored, backends identical"

echo "-- 6. a restarted while b is down: NOT READY for the start-up wait, then alone"
node_stop b
node_stop a
node_config a primary "mirror_startup_wait_ms = 3000"
t0=$(now_ms)
node_start a
[ "$(probe a)" = "sense 02/04/01" ] || fail "a, holding, answered a read with: $(probe a)"
expect a startup "waiting for the peer"
expect a serving false
for _ in $(seq 1 100); do
	[ "$(probe a)" = good ] && break
	sleep 0.1
done
took=$(($(now_ms) - t0))
[ "$(probe a)" = good ] || fail "a does not serve alone after the wait: $(probe a)"
[ "$took" -ge 2900 ] || fail "a served after $took ms, before its 3000 ms start-up wait"
expect a startup "peer unreachable: serving degraded"
grep -q "no answer from the peer since the start: serving without" "${LOG[a]}" ||
	fail "no log line on a for serving alone"
"$BIN/iscsi_pattern" --count 10 --max-size 256K --initiator-name "$INI1" \
	"iscsi://127.0.0.1:${PORT[a]}/$IQN/0" >/dev/null || fail "writes on a alone"
expect a state degraded
[ "$(mstat a degraded_writes)" -gt 0 ] || fail "a's writes alone were not recorded"
echo "ok - a held 04/01 for the wait, then served alone (${took} ms), degraded, writes recorded"

echo "-- 7. split brain at start: a wrote alone, b promoted; a stays NOT READY"
node_kill a
node_start b
ctl b mirror-promote "$IQN" 0 >/dev/null || fail "promote b"
node_start a
wait_field a state split-brain 10
sleep 3.5 # past a's start-up wait: a split brain is no reason to serve
[ "$(probe a)" = "sense 02/04/0b" ] || fail "a, split brain at start, answered a read with: $(probe a)"
expect a startup "held: the peer is primary too"
expect a serving false
expect a role primary
ctl a mirror-demote "$IQN" 0 >/dev/null || fail "demote a"
expect a role secondary
ctl b mirror-establish "$IQN" 0 full >/dev/null || fail "establish full on b"
wait_state b synchronized 30
same_images || fail "a and b differ after the split brain's resolution"
[ "$(probe b)" = good ] || fail "b does not serve: $(probe b)"
node_stop a
node_stop b
echo "ok - split brain at start: a held NOT READY past its wait; demote a, establish full on b"
echo "mirror_failover: 7 passed, 0 failed"
