#!/usr/bin/env python3
"""Writes seeded random data to a LUN with the project's raw initiator and records it, or
checks a file (the LUN's backend) against what was written. Used by test_cache.sh.

  cache_writer.py write --port P --target IQN --initiator INI --seed S --count N --out REC
                  [--partial-ok]   (the target may die mid-stream: record what was acknowledged,
                                    and the write in flight as "either old or new")
  cache_writer.py check --image FILE --rec REC          (exit 1 on the first difference)
  cache_writer.py differs --image FILE --rec REC        (exit 0 if some written range differs)
"""
import argparse
import json
import random
import sys

from iscsi_raw import Closed, ProtocolFailure, Session, make_isid

BS = 512


def cases(seed, count):
    rng = random.Random(seed)
    for _ in range(count):
        nblocks = rng.choice([1, 8, 63, 64, 65, 128, 200])
        lba = rng.randrange(0, 4000)
        yield lba, nblocks, rng.randbytes(nblocks * BS)


def write(a):
    s = Session("127.0.0.1", a.port, timeout=20)
    cls, det, _, _ = s.login(a.initiator, a.target, make_isid(7))
    if (cls, det) != (0, 0):
        print("FAIL login 0x%02x%02x" % (cls, det))
        return 1
    image, either, acked = {}, {}, 0
    for lba, nblocks, data in cases(a.seed, a.count):
        try:
            w = s.write10(lba, data, timeout=20)
            good, why = w.good, w.describe()
        except (OSError, Closed, ProtocolFailure) as e:
            good, why = False, "connection: %s" % e
        if not good and a.partial_ok:
            # Not acknowledged: each of its blocks may hold the old or the new data.
            for i in range(nblocks):
                either[lba + i] = data[i * BS:(i + 1) * BS].hex()
            print("stopped after %d acknowledged writes (%s)" % (acked, why))
            break
        if not good:
            print("FAIL write LBA %d +%d: %s" % (lba, nblocks, why))
            return 1
        acked += 1
        for i in range(nblocks):  # later writes win
            image[lba + i] = data[i * BS:(i + 1) * BS].hex()
    else:
        s.logout(timeout=5)
    s.close()
    with open(a.out, "w") as f:
        json.dump({"image": image, "either": either}, f)
    print("wrote %d blocks in %d writes" % (len(image), acked))
    return 0


def compare(a):
    with open(a.rec) as f:
        rec = json.load(f)
    image, either = rec["image"], rec["either"]
    differ = 0
    with open(a.image, "rb") as f:
        for lba in set(image) | set(either):
            f.seek(int(lba) * BS)
            got = f.read(BS)
            ok = [bytes.fromhex(d) for d in (image.get(lba), either.get(lba)) if d]
            if lba not in image:
                ok.append(bytes(BS))  # never written before: still zeroes
            if got not in ok:
                differ += 1
    return differ, len(image)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["write", "check", "differs"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--target")
    ap.add_argument("--initiator")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--out")
    ap.add_argument("--image")
    ap.add_argument("--rec")
    ap.add_argument("--partial-ok", action="store_true")
    a = ap.parse_args()
    if a.mode == "write":
        return write(a)
    differ, total = compare(a)
    print("%d of %d written blocks differ in %s" % (differ, total, a.image))
    if a.mode == "check":
        return 1 if differ else 0
    return 0 if differ else 1


if __name__ == "__main__":
    sys.exit(main())
