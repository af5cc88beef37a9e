#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers (run from the source tree; outputs are committed)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = b"iqn.2026-11.io.isergw:fuzz"
INI = b"iqn.2026-11.io.isergw:fuzzer"


def pad(b):
    return b + b"\0" * ((4 - len(b) % 4) % 4)


def bhs(op, flags, itt, lun=0, dsl=0, w20=0, w24=0, w28=0, rest=b""):
    h = struct.pack(">BBBBB", op, flags, 0, 0, 0) + dsl.to_bytes(3, "big")
    h += struct.pack(">QIIII", lun, itt, w20, w24, w28)
    h += rest.ljust(16, b"\0")[:16]
    assert len(h) == 48
    return h


def pdu(op, flags, itt, data=b"", **kw):
    return bhs(op, flags, itt, dsl=len(data), **kw) + pad(data)


def kv(**pairs):
    return b"".join(k.encode() + b"=" + v + b"\0" for k, v in pairs.items())


def login(session="Normal", extra=b""):
    data = kv(InitiatorName=INI, SessionType=session.encode())
    if session == "Normal":
        data += kv(TargetName=TARGET)
    data += extra
    # CSG=1 (operational) -> NSG=3, T=1; ISID in bytes 8..13 (the LUN field)
    return bhs(0x43, 0x80 | (1 << 2) | 3, 1, lun=0x400001370000 << 16, dsl=len(data)) + pad(data)


def scsi_cmd(itt, cmdsn, cdb, edtl, read=False, write=False, final=True, data=b""):
    flags = (0x80 if final else 0) | (0x40 if read else 0) | (0x20 if write else 0) | 1
    return pdu(0x01, flags, itt, data, w20=edtl, w24=cmdsn, w28=0, rest=cdb)


def data_out(itt, ttt, datasn, off, data, final=True):
    h = bhs(0x05, 0x80 if final else 0, itt, dsl=len(data), w20=ttt, w24=0, w28=0,
            rest=struct.pack(">III", datasn, off, 0))
    return h + pad(data)


def write(path, blob):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(blob)


def pdu_seeds():
    ops = kv(ImmediateData=b"Yes", InitialR2T=b"No", MaxRecvDataSegmentLength=b"65536",
             FirstBurstLength=b"65536", MaxBurstLength=b"262144")
    start = login(extra=ops)
    inquiry = scsi_cmd(2, 0, bytes([0x12, 0, 0, 0, 96, 0]), 96, read=True)
    vpd83 = scsi_cmd(3, 1, bytes([0x12, 1, 0x83, 0, 255, 0]), 255, read=True)
    w10 = bytes([0x2a, 0, 0, 0, 0, 64, 0, 0, 8, 0])
    write_imm = scsi_cmd(4, 2, w10, 4096, write=True, data=b"\xab" * 4096)
    write_unsol = scsi_cmd(5, 3, w10, 4096, write=True, final=False, data=b"\xcd" * 1024)
    unsol = data_out(5, 0xFFFFFFFF, 0, 1024, b"\xef" * 3072)
    r10 = bytes([0x28, 0, 0, 0, 0, 64, 0, 0, 8, 0])
    read = scsi_cmd(6, 4, r10, 4096, read=True)
    nop = pdu(0x00, 0x80, 7, b"ping", w20=0xFFFFFFFF, w24=5)
    text = pdu(0x04, 0x80, 8, kv(SendTargets=b"All"), w20=0xFFFFFFFF, w24=6)
    tmf = bhs(0x02, 0x80 | 1, 9, w20=6, w24=7, rest=struct.pack(">I", 4))
    logout = bhs(0x06, 0x80, 10, w24=8)
    bad_ttt = data_out(4, 0x00100123, 0, 0, b"\x00" * 512)
    seeds = {
        "login-only": start,
        "inquiry": start + inquiry + vpd83,
        "write-read": start + write_imm + read,
        "unsolicited": start + write_unsol + unsol + read,
        "control": start + nop + text + tmf + logout,
        "bad-ttt": start + bad_ttt + read,
        "discovery": login("Discovery") + text + logout,
    }
    big = scsi_cmd(11, 2, bytes([0x2a, 0, 0, 0, 0, 0, 0, 0, 128, 0]), 65536, write=True)
    seeds["r2t"] = start + big + data_out(11, 0x00000000 | 1, 0, 0, b"\x11" * 32768)
    for name, blob in seeds.items():
        write(os.path.join(HERE, "corpus", "pdu", name), blob)


def login_seeds():
    def req(flags, data):
        return bytes([flags]) + struct.pack(">H", len(data)) + data
    normal = kv(InitiatorName=INI, TargetName=b"iqn.2026-11.io.isergw:fuzz", SessionType=b"Normal")
    sec = req(0x80 | (0 << 0) | (1 << 2), normal + kv(AuthMethod=b"CHAP,None"))
    chap_a = req(0x00, kv(CHAP_A=b"5,7"))
    chap_r = req(0x80 | (1 << 2), kv(CHAP_N=b"user", CHAP_R=b"0x" + b"00" * 16))
    ops = req(0x80 | 1 | (3 << 2), kv(HeaderDigest=b"CRC32C,None", MaxRecvDataSegmentLength=b"8192"))
    write(os.path.join(HERE, "corpus", "login", "chap"), sec + chap_a + chap_r + ops)
    disc = kv(InitiatorName=INI, SessionType=b"Discovery")
    write(os.path.join(HERE, "corpus", "login", "discovery"), req(0x80 | 1 | (3 << 2), disc))


def textkv_seeds():
    write(os.path.join(HERE, "corpus", "textkv", "pairs"),
          kv(InitiatorName=INI, HeaderDigest=b"CRC32C,None", MaxBurstLength=b"262144"))
    write(os.path.join(HERE, "corpus", "textkv", "broken"), b"Key=Value\0NoEquals\0=x\0K=")


def config_seeds():
    ex = os.path.join(HERE, "..", "..", "docs", "examples")
    if os.path.isdir(ex):
        for name in os.listdir(ex):
            with open(os.path.join(ex, name), "rb") as f:
                write(os.path.join(HERE, "corpus", "config", name), f.read())


if __name__ == "__main__":
    pdu_seeds()
    login_seeds()
    textkv_seeds()
    config_seeds()
