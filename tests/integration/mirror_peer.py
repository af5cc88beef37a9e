#!/usr/bin/env python3
"""A hostile mirror peer for test_mirror.sh: connects to a secondary's mirror port and sends
what a primary must not (docs/replication.md, "Bad input"), checking each answer.

  mirror_peer.py bad-input --port P --id MIRROR_ID --size BYTES
Prints one line per case; exit 0 if every case got the expected answer.

  mirror_peer.py own-clean-line --port P --id MIRROR_ID --size BYTES --line BYTES
Pairs like a primary and writes line 0, flushes (so line 0 is the secondary's only clean
line), then writes lines 0 and 1 at once: the spare line for line 1 evicts line 0, which then
needs a spare too. Exit 0 if every write and flush is acknowledged (the last write's bytes
are 0xa5: the test reads them back from the secondary's image).

  mirror_peer.py flood --port P --id MIRROR_ID --size BYTES --count N
Pairs and sends N writes of 1 MiB without waiting for the answers, prints "sent", then keeps
the connection open until the secondary closes it (the test stops the secondary meanwhile).
"""
import argparse
import socket
import struct
import sys

from iscsi_raw import crc32c

MAGIC, VERSION, HDR = 0x4D574749, 1, 64
HELLO, HELLO_REPLY, WRITE, FLUSH, REPLY, PING, PONG = 1, 2, 3, 6, 7, 8, 9
OK, UNKNOWN_VOLUME, SIZE_MISMATCH, CHECKSUM, RANGE, VERSION_ERR, NOT_PAIRED = 0, 1, 2, 3, 6, 8, 11
PRIMARY = 1


def volume_key(mirror_id):
    h = 0xCBF29CE484222325
    for b in mirror_id.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def header(typ, msg_id, volume=0, offset=0, length=0, seq=0, span=0, payload=b"",
           version=VERSION, bad_crc=False):
    pcrc = crc32c(payload) if payload else 0
    h = struct.pack("<IHHQQQIIIQI", MAGIC, version, typ, msg_id, volume, offset, length, seq, 0,
                    span, pcrc)
    h += b"\0" * (60 - len(h))
    crc = crc32c(h) ^ (1 if bad_crc else 0)
    return h + struct.pack("<I", crc)


def hello_payload(mirror_id, size, block_size=512):
    p = mirror_id.encode().ljust(64, b"\0")
    p += struct.pack("<QIIQQ", size, block_size, PRIMARY, 0x1234, 0)
    return p.ljust(104, b"\0")


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def read_reply(s):
    """(type, msg_id, status) or None if the peer closed."""
    buf = b""
    try:
        while len(buf) < HDR:
            chunk = s.recv(HDR - len(buf))
            if not chunk:
                return None
            buf += chunk
    except (socket.timeout, ConnectionResetError):
        return None
    magic, _ver, typ, msg_id = struct.unpack_from("<IHHQ", buf, 0)
    length, = struct.unpack_from("<I", buf, 32)
    status, = struct.unpack_from("<I", buf, 40)
    if length:
        s.recv(length, socket.MSG_WAITALL)
    return typ, msg_id, status


def closed(s):
    """True when the peer closed (or reset) the connection within 5 s."""
    try:
        s.settimeout(5)
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def bad_input(a):
    key = volume_key(a.id)
    failures = 0

    def check(name, ok, got):
        nonlocal failures
        print("%s - %s (%s)" % ("ok  " if ok else "FAIL", name, got))
        failures += 0 if ok else 1

    s = connect(a.port)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\xff" * 100)
    check("garbage: connection closed", closed(s), "closed")
    s.close()

    s = connect(a.port)
    s.sendall(header(PING, 7, version=2))
    r = read_reply(s)
    check("wrong version: answered with 'unsupported version'",
          r is not None and r[1] == 7 and r[2] == VERSION_ERR, r)
    s.close()

    s = connect(a.port)
    s.sendall(header(PING, 8, bad_crc=True))
    check("header checksum wrong: connection closed", closed(s), "closed")
    s.close()

    s = connect(a.port)
    s.sendall(header(WRITE, 9, volume=key, length=(64 << 20)))
    check("oversized length: connection closed", closed(s), "closed")
    s.close()

    s = connect(a.port)
    data = b"\xab" * 4096
    s.sendall(header(WRITE, 10, volume=key, offset=0, length=len(data), seq=1, payload=data) + data)
    r = read_reply(s)
    check("write before HELLO: 'not paired'", r is not None and r[2] == NOT_PAIRED, r)
    s.close()

    s = connect(a.port)
    p = hello_payload("no-such-volume", a.size)
    s.sendall(header(HELLO, 11, volume=volume_key("no-such-volume"), length=len(p), payload=p) + p)
    r = read_reply(s)
    check("HELLO for an unknown volume: 'unknown volume'",
          r is not None and r[0] == HELLO_REPLY and r[2] == UNKNOWN_VOLUME, r)
    s.close()

    s = connect(a.port)
    p = hello_payload(a.id, a.size * 2)
    s.sendall(header(HELLO, 12, volume=key, length=len(p), payload=p) + p)
    r = read_reply(s)
    check("HELLO with the wrong size: 'size mismatch'",
          r is not None and r[0] == HELLO_REPLY and r[2] == SIZE_MISMATCH, r)
    s.close()

    s = connect(a.port)
    p = hello_payload(a.id, a.size)
    s.sendall(header(HELLO, 13, volume=key, length=len(p), payload=p) + p)
    r = read_reply(s)
    check("a proper HELLO pairs", r is not None and r[0] == HELLO_REPLY and r[2] == OK, r)
    h = header(WRITE, 14, volume=key, offset=0, length=len(data), seq=2, payload=data)
    s.sendall(h + b"\xcd" * 4096)  # header says data was 0xab...
    r = read_reply(s)
    check("write with a bad data checksum: 'checksum error'", r is not None and r[2] == CHECKSUM, r)
    s.sendall(header(WRITE, 15, volume=key, offset=a.size, length=len(data), seq=3,
                     payload=data) + data)
    r = read_reply(s)
    check("write past the end: 'address out of range'", r is not None and r[2] == RANGE, r)
    s.sendall(header(WRITE, 16, volume=key, offset=100, length=len(data), seq=4,
                     payload=data) + data)
    r = read_reply(s)
    check("unaligned write: 'address out of range'", r is not None and r[2] == RANGE, r)
    s.sendall(header(WRITE, 17, volume=volume_key("other"), offset=0, length=len(data), seq=5,
                     payload=data) + data)
    r = read_reply(s)
    check("write for another volume: 'unknown volume'", r is not None and r[2] == UNKNOWN_VOLUME, r)
    s.sendall(header(PING, 18))
    r = read_reply(s)
    check("still answers after refusals (PING)", r is not None and r[0] == PONG and r[1] == 18, r)
    s.close()
    return 1 if failures else 0


def own_clean_line(a):
    key = volume_key(a.id)
    s = connect(a.port)
    s.settimeout(30)
    p = hello_payload(a.id, a.size)
    s.sendall(header(HELLO, 1, volume=key, length=len(p), payload=p) + p)
    r = read_reply(s)
    if r is None or r[0] != HELLO_REPLY or r[2] != OK:
        print("FAIL - HELLO: %s" % (r,))
        return 1
    steps = [(WRITE, 0, b"\x5a" * a.line), (FLUSH, 0, b""), (WRITE, 0, b"\xa5" * (2 * a.line)),
             (FLUSH, 0, b"")]
    for i, (typ, offset, data) in enumerate(steps):
        s.sendall(header(typ, 10 + i, volume=key, offset=offset, length=len(data), seq=1 + i,
                         payload=data) + data)
        r = read_reply(s)
        if r is None or r[0] != REPLY or r[1] != 10 + i or r[2] != OK:
            print("FAIL - step %d (type %d): %s" % (i, typ, r))
            return 1
    s.close()
    print("ok - a write over the secondary's only clean line and one more was acknowledged")
    return 0


def flood(a):
    key = volume_key(a.id)
    s = connect(a.port)
    s.settimeout(60)
    p = hello_payload(a.id, a.size)
    s.sendall(header(HELLO, 1, volume=key, length=len(p), payload=p) + p)
    r = read_reply(s)
    if r is None or r[0] != HELLO_REPLY or r[2] != OK:
        print("FAIL - HELLO: %s" % (r,))
        return 1
    try:
        for i in range(a.count):
            data = bytes([i & 0xFF]) * (1 << 20)
            offset = (i << 20) % a.size
            s.sendall(header(WRITE, 10 + i, volume=key, offset=offset, length=len(data),
                             seq=1 + i, payload=data) + data)
        print("sent", flush=True)
        while s.recv(65536):
            pass
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["bad-input", "own-clean-line", "flood"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--line", type=int, default=32768)
    ap.add_argument("--count", type=int, default=64)
    a = ap.parse_args()
    return {"bad-input": bad_input, "own-clean-line": own_clean_line, "flood": flood}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
