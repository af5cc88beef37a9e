"""backend_iscsi_io: the initiator side of test_backend_iscsi.sh (stdlib Python + iscsi_raw).

    known PORT IQN INI FILE CTL SOCK   write known data through the gateway (sizes from one
                                       block to 3 MiB), WRITE SAME and UNMAP some of it, read
                                       it back, flush (isergw-ctl), compare the remote's file
    writers PORT IQN INI PROGRESS STOP RESULT
                                       4 sessions writing 64 KiB blocks until STOP exists;
                                       every outcome goes to RESULT (JSON)
    verify FILE RESULT                 the last write of every block that was acknowledged
                                       is on FILE byte for byte
    one_write PORT IQN INI LBA TIMEOUT one 64 KiB write; prints its outcome (JSON)
    probe PORT IQN INI                 one READ(10) of block 0 (past unit attentions); prints
                                       "good", "sense KEY/ASC/ASCQ" (hex) or "no answer"

Exit status 0 when everything checked held, 1 otherwise.
"""

import json
import os
import random
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iscsi_raw import Session, bhs_scsi_cmd, make_isid  # noqa: E402

BS = 512
HOST = "127.0.0.1"
WRITER_THREADS = 4
WRITE_BLOCKS = 128                       # 64 KiB per write
WRITER_BASE = (64 << 20) // BS           # writers use [64 MiB, 128 MiB) of the LUN
WRITER_SPAN = (16 << 20) // BS           # 16 MiB per thread
SLOTS = WRITER_SPAN // WRITE_BLOCKS


def log(msg):
    print("backend_iscsi_io: " + msg, flush=True)


def pattern(seed, n):
    return random.Random(seed).randbytes(n)


def session(port, iqn, ini, n, timeout):
    s = Session(HOST, int(port), timeout=timeout)
    cls, det, _, _ = s.login(ini, iqn, make_isid(n))
    if (cls, det) != (0, 0):
        raise SystemExit("login failed: status %d/%d" % (cls, det))
    return s


def write_cmd(s, cdb, data, timeout=30):
    """A write-type command whose data goes out on R2T only (works whatever was negotiated)."""
    itt = s.itt()
    s.send_pdu(bhs_scsi_cmd(itt, s.take_cmdsn(), s.expstatsn, cdb, len(data), write=True))
    return s.finish_write(itt, data, timeout=timeout)


def write_same10(s, lba, nblocks):
    cdb = struct.pack(">BBIBHB", 0x41, 0, lba, 0, nblocks, 0)
    return write_cmd(s, cdb, bytes(BS))


def unmap10(s, lba, nblocks):
    params = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", lba, nblocks)
    cdb = bytes([0x42, 0, 0, 0, 0, 0, 0]) + struct.pack(">H", len(params)) + b"\0"
    return write_cmd(s, cdb, params)


def file_bytes(path, lba, nblocks):
    with open(path, "rb") as f:
        f.seek(lba * BS)
        return f.read(nblocks * BS)


def known(port, iqn, ini, path, ctl, sock):
    s = session(port, iqn, ini, 1, 30)
    sizes = [1, 7, 8, 64, 129, 2048, 2049, 6144, 256, 256]
    regions, lba = [], 8
    for i, n in enumerate(sizes):
        regions.append([lba, n, pattern(1000 + i, n * BS)])
        lba += n + 24
    bad = 0
    for lba, n, data in regions:
        r = s.write10(lba, data, timeout=30)
        if not r.good:
            log("WRITE(10) LBA %d +%d: %s" % (lba, n, r.describe()))
            bad += 1
    # The last two regions become zeroes: WRITE SAME of a zero block, and UNMAP (thin LUN).
    ws, um = regions[-2], regions[-1]
    r = write_same10(s, ws[0], ws[1])
    if not r.good:
        log("WRITE SAME(10) LBA %d: %s" % (ws[0], r.describe()))
        bad += 1
    ws[2] = bytes(ws[1] * BS)
    r = unmap10(s, um[0], um[1])
    if not r.good:
        log("UNMAP LBA %d: %s" % (um[0], r.describe()))
        bad += 1
    um[2] = bytes(um[1] * BS)
    for lba, n, data in regions:
        r = s.read10(lba, n, timeout=30)
        if not r.good or r.data != data:
            log("read back LBA %d +%d through the gateway: %s" % (
                lba, n, r.describe() if not r.good else "data differs"))
            bad += 1
    s.close()
    rc = subprocess.run([ctl, "--socket", sock, "flush", iqn, "0"], capture_output=True,
                        text=True)
    if rc.returncode != 0:
        log("isergw-ctl flush: %s" % (rc.stderr or rc.stdout).strip())
        bad += 1
    for lba, n, data in regions:
        if file_bytes(path, lba, n) != data:
            log("LBA %d +%d: the remote's file differs from what was written" % (lba, n))
            bad += 1
    log("known data: %d regions, %d problems" % (len(regions), bad))
    return 1 if bad else 0


def writers(port, iqn, ini, progress, stop, result):
    lock = threading.Lock()
    out = {"writes": [], "hangs": []}  # writes: [thread, index, lba, "good" or a description]
    acked = [0]

    def note_progress():
        tmp = progress + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % acked[0])
        os.replace(tmp, progress)

    def run(t):
        try:
            s = session(port, iqn, ini, 100 + t, 60)
        except Exception as e:  # noqa: BLE001 - reported as a hang of this writer
            with lock:
                out["hangs"].append([t, -1, "login: %s" % e])
            return
        i = 0
        while not os.path.exists(stop):
            lba = WRITER_BASE + t * WRITER_SPAN + (i % SLOTS) * WRITE_BLOCKS
            r = s.write10(lba, pattern((t << 20) | i, WRITE_BLOCKS * BS), timeout=60)
            with lock:
                if r.closed or r.timed_out:
                    out["hangs"].append([t, i, r.describe()])
                    break
                out["writes"].append([t, i, lba, "good" if r.good else r.describe()])
                if r.good:
                    acked[0] += 1
                    if acked[0] % 8 == 0:
                        note_progress()
            i += 1
        s.close()

    threads = [threading.Thread(target=run, args=(t,)) for t in range(WRITER_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    note_progress()
    with open(result, "w") as f:
        json.dump(out, f)
    errors = [w for w in out["writes"] if w[3] != "good"]
    log("writers: %d writes, %d acknowledged, %d failed with a SCSI error, %d hung" % (
        len(out["writes"]), acked[0], len(errors), len(out["hangs"])))
    for e in errors[:5]:
        log("  error: thread %d write %d LBA %d: %s" % tuple(e))
    for h in out["hangs"]:
        log("  hang: thread %d write %d: %s" % tuple(h))
    return 1 if out["hangs"] else 0


def verify(path, result):
    with open(result) as f:
        out = json.load(f)
    last = {}  # lba -> (thread, index, outcome) of the latest write there
    for t, i, lba, outcome in out["writes"]:
        if lba not in last or last[lba][1] < i:
            last[lba] = (t, i, outcome)
    # A write cut off by a dead connection was not acknowledged: its slot may hold it or the
    # acknowledged write before it.
    cut = {}
    for t, i, _ in out["hangs"]:
        if i >= 0:
            cut[WRITER_BASE + t * WRITER_SPAN + (i % SLOTS) * WRITE_BLOCKS] = (t << 20) | i
    checked = bad = 0
    for lba, (t, i, outcome) in sorted(last.items()):
        if outcome != "good":
            continue  # a failed write leaves its blocks undefined
        checked += 1
        got = file_bytes(path, lba, WRITE_BLOCKS)
        if lba in cut and got == pattern(cut[lba], WRITE_BLOCKS * BS):
            continue
        if got != pattern((t << 20) | i, WRITE_BLOCKS * BS):
            bad += 1
            if bad <= 5:
                log("LBA %d: acknowledged write %d of thread %d is not on the file" % (lba, i, t))
    log("verify: %d acknowledged blocks of 64 KiB checked, %d missing" % (checked, bad))
    return 1 if bad or not checked else 0


def one_write(port, iqn, ini, lba, timeout):
    s = session(port, iqn, ini, 200, float(timeout))
    t0 = time.monotonic()
    r = s.write10(int(lba), pattern(4242, WRITE_BLOCKS * BS), timeout=float(timeout))
    sense = r.sense()
    print(json.dumps({"good": r.good, "status": r.status, "closed": r.closed,
                      "timed_out": r.timed_out, "sense_key": sense[0] if sense else None,
                      "elapsed": round(time.monotonic() - t0, 1)}), flush=True)
    s.close()
    return 0


def probe(port, iqn, ini):
    s = session(port, iqn, ini, 201, 5.0)
    for _ in range(3):
        r = s.read10(0, 1, timeout=5.0)
        sense = r.sense()
        if sense and sense[0] == 6:  # UNIT ATTENTION: reported once, ask again
            continue
        break
    if r.good:
        print("good", flush=True)
    elif sense:
        print("sense %02x/%02x/%02x" % sense, flush=True)
    else:
        print("no answer" if r.closed or r.timed_out else "status 0x%02x" % (r.status or 0),
              flush=True)
    s.close()
    return 0


def main(argv):
    cmds = {"known": (known, 6), "writers": (writers, 6), "verify": (verify, 2),
            "one_write": (one_write, 5), "probe": (probe, 3)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    return cmds[argv[1]][0](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
