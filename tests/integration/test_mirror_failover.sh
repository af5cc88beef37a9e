#!/bin/bash
# The failover cycle of a mirrored pair (docs/replication.md, "Failover and switchover"): both
# gateways name each other (mirror_peer on the secondary too).
#  1. a primary, b secondary, paired; writes stream on a; kill -9 of a;
#  2. b promoted: it serves, every write acknowledged on a is there; writes on b are recorded
#     (a is down: degraded);
#  3. a's disk holds a write b never got (as a crashed primary may: sent, written locally,
#     never acknowledged); a restarts as primary: both sides report both-primary and name the
#     command; a demoted: b pairs with it and copies every region (a crashed primary cannot
#     say which of its regions differ), so a ends byte for byte b (the stale write is gone)
#     and holds every write acknowledged on b;
#  4. planned switch back: b demoted (a clean handover: it flushes, both keep naming the
#     same data), a promoted: they pair again without a full copy (counters), writes on a
#     reach b, both backends identical.
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

echo "-- 3. a back: both primary; a demoted; b copies everything to a"
# A write that reached a's disk but never b (a crashed primary may hold such writes): region
# 5, which nothing else writes. A resync of b's recorded regions alone would leave it there.
head -c 65536 /dev/urandom | dd of="$TMP/a.img" bs=65536 seek=$((5 * 16)) conv=notrunc status=none
node_start a
wait_state a both-primary 10
wait_state b both-primary 10
mstat a last_error | grep -q "mirror-demote TARGET LUN' here" ||
	fail "a's status does not say to demote a: $(mstat a last_error)"
mstat b last_error | grep -q "mirror-demote TARGET LUN' there" ||
	fail "b's status does not say to demote a: $(mstat b last_error)"
ctl a mirror-demote "$IQN" 0 >/dev/null || fail "demote a"
expect a role secondary
wait_state b synchronized 30
expect b full_copies 1
[ "$(mstat b resync_copied_regions)" -ge $REGIONS ] ||
	fail "b copied $(mstat b resync_copied_regions) regions, not all $REGIONS"
expect a state synchronized
expect a consistent true
grep -q "did not hand over: full copy" "${LOG[b]}" || fail "no log line on b for the full copy"
same_images || fail "a and b differ after the resync (a kept a write b never had?)"
$IO verify "$TMP/a.img" "$TMP/w2.json" || fail "writes acknowledged on b missing on a"
echo "ok - a demoted, b copied all $REGIONS regions to it, backends identical"

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
node_stop a
node_stop b
echo "ok - switched back without a full copy ($copied regions copied), backends identical"
echo "mirror_failover: 4 passed, 0 failed"
