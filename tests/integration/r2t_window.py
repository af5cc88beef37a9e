#!/usr/bin/env python3
"""Writes of many sizes and alignments with MaxOutstandingR2T=4 (libiscsi 1.19 always offers
1, so this uses the project's raw initiator), each read back byte for byte. Asserts that the
target really had several R2Ts outstanding for one command before any Data-Out arrived."""
import argparse
import random
import sys

from iscsi_raw import Session, make_isid, OP_R2T

BS = 512


def run_case(s, rng, lba, nblocks, imm, unsol):
    data = bytes(rng.getrandbits(8) for _ in range(16)) * (nblocks * BS // 16)
    w = s.write10(lba, data, immediate=imm, unsolicited=unsol, timeout=20)
    if not w.good:
        return "write LBA %d +%d: %s" % (lba, nblocks, w.describe()), 0
    r = s.read10(lba, nblocks, timeout=20)
    if not r.good or r.data != data:
        return "read-back LBA %d +%d differs (%s)" % (lba, nblocks, r.describe()), 0
    return None, len(w.r2ts)


def burst_of_r2ts(s, lba):
    """One 256 KiB write whose R2Ts are collected before any data is sent."""
    data = bytes(range(256)) * 1024
    w = s.write10(lba, data, immediate=False, unsolicited=False, answer_r2t=False, timeout=1)
    first = len(w.r2ts)
    if not w.r2ts:
        return 0, w
    itt = w.r2ts[0].itt
    for r2t in list(w.r2ts):  # answer the ones collected, then the rest as they come
        s.send_data_out(itt, r2t.ttt, data[r2t.bufoff:r2t.bufoff + r2t.ddtl], r2t.bufoff)
    w.timed_out = False
    s.finish_write(itt, data, timeout=20, res=w)
    r = s.read10(lba, len(data) // BS, timeout=20)
    if not r.good or r.data != data:
        w.status = None
    return first, w


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--initiator", required=True)
    ap.add_argument("--count", type=int, default=40)
    a = ap.parse_args()
    rng = random.Random(11)
    passed = failed = 0
    for n, (imm, unsol) in enumerate([(True, True), (False, False), (True, False)]):
        s = Session("127.0.0.1", a.port, timeout=20)
        params = {"MaxOutstandingR2T": 4, "ImmediateData": "Yes" if imm else "No",
                  "InitialR2T": "No" if unsol else "Yes", "MaxBurstLength": 262144}
        cls, det, keys, _ = s.login(a.initiator, a.target, make_isid(100 + n), params=params)
        if (cls, det) != (0, 0) or s.max_r2t != 4:
            print("FAIL login: status 0x%02x%02x, MaxOutstandingR2T %s" % (cls, det, s.max_r2t))
            return 1
        for _ in range(a.count):
            nblocks = rng.choice([1, 7, 64, 65, 127, 1000, 2048, 4095, 8192])
            lba = rng.randrange(0, 1700) * rng.choice([1, 64])  # stays below LBA 120000
            err, _ = run_case(s, rng, lba, nblocks, imm, unsol)
            if err:
                failed += 1
                print("FAIL", err)
            else:
                passed += 1
        first, w = burst_of_r2ts(s, 120000)
        if first >= 2 and w.good:
            passed += 1
        else:
            failed += 1
            print("FAIL only %d R2T(s) outstanding before data (MaxOutstandingR2T=4): %s"
                  % (first, w.describe()))
        s.close()
    print("r2t-window: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
