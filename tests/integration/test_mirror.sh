#!/bin/bash
# Mirroring between two gateways on loopback (docs/replication.md):
#  1. pairing: the first pairing copies every region; then writes reach both backends, which
#     end identical;
#  1b. strict mode: a write is acknowledged once it is on the secondary's backend;
#  2. kill -9 of the primary while 4 sessions write; the secondary is promoted and serves;
#     every write a client saw acknowledged is in its backend;
#  3. the link cut (secondary killed) mid-stream: the primary goes degraded without failing a
#     write; the secondary comes back; the resync copies only the recorded regions (from the
#     counters), then both backends are identical;
#  4. the secondary restarted in the middle of a (throttled) resync: the resync resumes where
#     it was, it does not start again from zero;
#  5. split brain: the secondary promoted and written while the primary also wrote alone: on
#     reconnect the primary refuses to resync, says so and names the commands; no byte of the
#     promoted side changes;
#  6. bad input on the peer port: garbage, wrong version, bad checksums, oversized length,
#     unknown volume, wrong size, out-of-range and unpaired writes: each answered or dropped,
#     logged, nothing written;
#  7. a peer write covering the secondary's only clean line and an uncached one (taking a
#     spare line evicts a line of the write's own range): acknowledged and written;
#  8. the secondary stopped while peer writes wait for lines (small pool, slow backend): they
#     land before its final flush: nothing left dirty, nothing leaked.
source "$(dirname "$0")/lib.sh"
PEER="python3 $SRC/tests/integration/mirror_peer.py"
LUN_BYTES=$((256 << 20))
MID="$IQN/0"

source "$(dirname "$0")/mirror_lib.sh"
NODES="p s"
PEER_OF=([p]=s [s]=p)

fresh_pair() { # [EXTRA gateway lines for both]
	node_stop p
	node_stop s
	rm -rf "$TMP"/p-var "$TMP"/s-var "$TMP"/p.img "$TMP"/s.img
	node_config s secondary "${1:-}"
	node_config p primary "${1:-}"
	node_start s
	node_start p
}

same_images() {
	ctl p flush "$IQN" 0 >/dev/null || fail "flush p"
	ctl s flush "$IQN" 0 >/dev/null 2>&1 || true
	cmp -s "$TMP/p.img" "$TMP/s.img"
}

echo "-- 1. pairing and mirrored writes"
fresh_pair
wait_state p synchronized
[ "$(mstat p resync_copied_regions)" -ge 256 ] || fail "first pairing copied $(mstat p resync_copied_regions) regions, not all 256"
"$BIN/iscsi_pattern" --count 100 --max-size 1M --initiator-name "$INI1" "iscsi://127.0.0.1:${PORT[p]}/$IQN/0" | tail -1
# Seed 7 writes two 16 MiB commands, more than one peer message carries (4 MiB): they reach
# the mirror line by line (the DPT path), so none is acknowledged without the peer.
"$BIN/iscsi_pattern" --count 6 --max-size 16M --seed 7 --initiator-name "$INI1" \
	"iscsi://127.0.0.1:${PORT[p]}/$IQN/0" | tail -1
[ "$(mstat p degraded_writes)" = 0 ] ||
	fail "$(mstat p degraded_writes) writes acknowledged without the peer while synchronized"
if iscsi-inq "iscsi://127.0.0.1:${PORT[s]}/$IQN/0" >/dev/null 2>&1; then
	fail "the secondary served an initiator while standby"
fi
same_images || fail "backends differ after mirrored writes"
echo "ok - paired (256 regions copied), $(mstat p mirrored_writes) writes mirrored (16 MiB ones too), backends identical"

echo "-- 1b. strict mode: acknowledged once on the secondary's backend"
LUN_EXTRA="mirror_strict = yes" fresh_pair
wait_state p synchronized
[ "$(mstat p mode)" = strict ] || fail "mode $(mstat p mode)"
python3 "$SRC/tests/integration/cache_writer.py" write --port "${PORT[p]}" --target "$IQN" \
	--initiator "$INI1" --seed 5 --count 60 --out "$TMP/rec1b"
dirty=$(ctl s --json cache | jq .lines_dirty)
[ "$dirty" -eq 0 ] || fail "strict: the secondary holds $dirty dirty lines after acknowledged writes"
python3 "$SRC/tests/integration/cache_writer.py" check --image "$TMP/s.img" --rec "$TMP/rec1b" ||
	fail "strict: an acknowledged write is not on the secondary's backend"
echo "ok - strict: every acknowledged write was already on the secondary's backend"

echo "-- 2. kill -9 of the primary, the secondary promoted"
writers_start "${PORT[p]}" "$TMP/w2.json"
wait_progress 150 || fail "writers: $(cat "$TMP/w2.json.out")"
node_kill p
writers_stop || true
ctl s mirror-promote "$IQN" 0 || fail "promote"
[ "$(mstat s role)" = primary ] || fail "role after promote: $(mstat s role)"
iscsi-inq "iscsi://127.0.0.1:${PORT[s]}/$IQN/0" >/dev/null || fail "the promoted secondary does not serve"
ctl s flush "$IQN" 0 >/dev/null || fail "flush s"
$IO verify "$TMP/s.img" "$TMP/w2.json" || fail "acknowledged writes missing on the promoted secondary"
echo "ok - every acknowledged write ($(progress)) is on the promoted secondary"

echo "-- 3. link cut mid-stream, resync of the changed regions"
fresh_pair
wait_state p synchronized
wait_stable
base=$(mstat p resync_copied_regions)
writers_start "${PORT[p]}" "$TMP/w3.json"
wait_progress 100 || fail "writers: $(cat "$TMP/w3.json.out")"
node_kill s
wait_state p degraded 10
before=$(progress)
wait_progress $((before + 200)) || fail "writes stopped while degraded"
dirty=$(mstat p out_of_sync_regions)
[ "$dirty" -gt 0 ] && [ "$dirty" -lt 256 ] || fail "out_of_sync_regions $dirty (expected 1..255)"
node_start s
wait_state p synchronized 60
copied=$(($(mstat p resync_copied_regions) - base))
writers_stop || fail "a write failed while degraded: $(tail -3 "$TMP/w3.json.out")"
grep -q "0 failed with a SCSI error, 0 hung" "$TMP/w3.json.out" || fail "writers: $(tail -3 "$TMP/w3.json.out")"
[ "$copied" -ge "$dirty" ] && [ "$copied" -le 64 ] ||
	fail "resync copied $copied regions for $dirty recorded (writers touch at most 64)"
same_images || fail "backends differ after the resync"
$IO verify "$TMP/s.img" "$TMP/w3.json" || fail "acknowledged writes missing on the secondary"
echo "ok - degraded without a failed write; resync copied $copied regions ($dirty recorded at the cut); backends identical"

echo "-- 4. secondary restarted in the middle of a resync"
fresh_pair "mirror_resync_rate = 16M"
wait_state p synchronized 90
wait_stable
node_kill s
"$BIN/iscsi_pattern" --count 120 --max-size 1M --initiator-name "$INI1" "iscsi://127.0.0.1:${PORT[p]}/$IQN/0" | tail -1
dirty=$(mstat p out_of_sync_regions)
base=$(mstat p resync_copied_regions)
[ "$dirty" -ge 20 ] || fail "only $dirty regions recorded"
node_start s
eta=-1
for _ in $(seq 1 300); do
	[ "$(mstat p state)" = resyncing ] && [ "$(mstat p resync_eta_s)" -gt 0 ] && eta=$(mstat p resync_eta_s)
	[ $(($(mstat p resync_copied_regions) - base)) -ge 40 ] && break
	sleep 0.1
done
[ "$eta" -gt 0 ] || fail "no resync ETA on the status socket while resyncing"
node_kill s
mid=$(($(mstat p resync_copied_regions) - base))
left=$(mstat p out_of_sync_regions)
[ "$mid" -ge 40 ] && [ "$left" -lt "$dirty" ] || fail "resync not under way ($mid copied, $left left)"
node_start s
wait_state p synchronized 90
total=$(($(mstat p resync_copied_regions) - base))
# Regions copied but not yet flushed by the secondary (at most about a second's worth) are
# copied again; the rest is not.
[ $((total - mid)) -le $((dirty - mid / 2)) ] ||
	fail "the resync started over: $mid, then $((total - mid)) regions copied for $dirty"
same_images || fail "backends differ after the resumed resync"
echo "ok - resync resumed: $mid then $((total - mid)) regions of $dirty"

echo "-- 5. split brain"
fresh_pair
wait_state p synchronized
node_kill s
"$BIN/iscsi_pattern" --count 20 --max-size 1M --initiator-name "$INI1" "iscsi://127.0.0.1:${PORT[p]}/$IQN/0" | tail -1
ctl p mirror-sever "$IQN" 0 >/dev/null || fail "sever"
node_start s
out=$(ctl s mirror-promote "$IQN" 0 2>&1) || fail "promote s: $out"
"$BIN/iscsi_pattern" --count 20 --max-size 1M --seed 9 --initiator-name "$INI1" "iscsi://127.0.0.1:${PORT[s]}/$IQN/0" | tail -1
ctl s flush "$IQN" 0 >/dev/null
sum=$(md5sum <"$TMP/s.img")
ctl p mirror-establish "$IQN" 0 >/dev/null || fail "establish"
wait_state p split-brain 20
mstat p last_error | grep -q "mirror-demote" || fail "the split-brain status names no command: $(mstat p last_error)"
grep -q "split brain" "${LOG[s]}" || fail "no split-brain log line on the promoted side"
sleep 2
ctl s flush "$IQN" 0 >/dev/null
[ "$(md5sum <"$TMP/s.img")" = "$sum" ] || fail "the promoted side's data changed"
echo "ok - split brain detected, nothing overwritten: $(mstat p last_error | cut -c1-80)..."

echo "-- 6. bad input on the peer port"
node_stop p
node_stop s
rm -rf "$TMP"/s-var "$TMP"/s.img
node_config s secondary
node_start s
ctl s flush "$IQN" 0 >/dev/null
sum=$(md5sum <"$TMP/s.img")
$PEER bad-input --port "${MPORT[s]}" --id "$MID" --size "$LUN_BYTES" || fail "bad input"
sleep 0.5
ctl s flush "$IQN" 0 >/dev/null
[ "$(md5sum <"$TMP/s.img")" = "$sum" ] || fail "bad input changed the secondary's data"
grep -q "refused: checksum error" "${LOG[s]}" || fail "no log line for the bad checksum"
grep -q "bad header" "${LOG[s]}" || fail "no log line for the bad header"
node_stop s
echo "ok - bad input answered or dropped, logged, nothing written"

echo "-- 7. a write over the secondary's only clean line"
# The spare line for the second line evicts the first (clean) one, which then needs a spare
# as well: the secondary once wrote that part through a NULL line (an abort under UBSan).
rm -rf "$TMP"/s-var "$TMP"/s.img
node_start s
$PEER own-clean-line --port "${MPORT[s]}" --id "$MID" --size "$LUN_BYTES" --line 32768 ||
	fail "the secondary did not acknowledge the writes"
ctl s flush "$IQN" 0 >/dev/null
python3 -c 'import sys; sys.stdout.buffer.write(b"\xa5" * 65536)' >"$TMP/a5"
cmp -s -n 65536 "$TMP/a5" "$TMP/s.img" ||
	fail "the secondary's first two lines are not the last write's bytes"
node_stop s
echo "ok - both lines written, the secondary still up"

echo "-- 8. the secondary stopped while peer writes wait for lines"
rm -rf "$TMP"/s-var "$TMP"/s.img
POOL=4M LUN_EXTRA="fault_injection = yes" node_config s secondary
node_start s
ctl s fault "$IQN" 0 delay_ms=1000 >/dev/null
$PEER flood --port "${MPORT[s]}" --id "$MID" --size "$LUN_BYTES" --count 40 >"$TMP/flood.out" &
FLOOD=$!
for _ in $(seq 1 100); do
	[ "$(ctl s --json cache | jq .lines_free)" = 0 ] && grep -q sent "$TMP/flood.out" && break
	sleep 0.1
done
grep -q sent "$TMP/flood.out" || fail "the flood did not get its writes out"
node_stop s # fails on a sanitizer (leak) report
wait $FLOOD || true
if grep -E "never destaged|peer writes still running" "${LOG[s]}"; then
	fail "peer writes landed after the final flush"
fi
echo "ok - stopped with peer writes waiting for lines: all landed before the final flush"
echo "mirror: 8 passed, 0 failed"
