"""iscsi_raw: a small raw iSCSI initiator for tests (Python 3 standard library only).

It speaks just enough RFC 7143 to log in (straight into the operational stage, or through a
security stage with AuthMethod=None), negotiate digests, data segment and burst lengths,
ImmediateData and InitialR2T, run SCSI READ(10)/WRITE(10) with R2T handling, and above all
to send anything: arbitrary Basic Header Segments, AHS, data, correct or corrupted digests,
truncated PDUs. Every wait is bounded by a timeout.

    s = Session(host, port)
    s.login(initiator, target, isid=make_isid(7), params={...})
    s.write10(lba, data)          # -> ScsiResult
    s.read10(lba, nblocks)        # -> ScsiResult with .data
    s.send_pdu(bhs, data=b"...", data_digest=BAD_DIGEST)
    pdu = s.recv_pdu(timeout=1.0) # None on timeout, raises Closed when the target hung up
"""

import socket
import struct
import time

# ---------------------------------------------------------------- CRC32C (Castagnoli)


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC32C as iSCSI uses it (RFC 7143 section 13.1, RFC 3385)."""
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def digest_bytes(data):
    """The 4 digest bytes on the wire: the CRC, least significant byte first."""
    return struct.pack("<I", crc32c(data))


assert crc32c(b"123456789") == 0xE3069283

# ---------------------------------------------------------------- constants

OP_NOP_OUT, OP_SCSI_CMD, OP_TMF_REQ, OP_LOGIN_REQ = 0x00, 0x01, 0x02, 0x03
OP_TEXT_REQ, OP_DATA_OUT, OP_LOGOUT_REQ, OP_SNACK_REQ = 0x04, 0x05, 0x06, 0x10
OP_NOP_IN, OP_SCSI_RSP, OP_TMF_RSP, OP_LOGIN_RSP = 0x20, 0x21, 0x22, 0x23
OP_TEXT_RSP, OP_DATA_IN, OP_LOGOUT_RSP, OP_R2T = 0x24, 0x25, 0x26, 0x31
OP_ASYNC, OP_REJECT = 0x32, 0x3F
IMMEDIATE = 0x40
RSVD = 0xFFFFFFFF

OPNAMES = {
    OP_NOP_IN: "NOP-In", OP_SCSI_RSP: "SCSI-Response", OP_TMF_RSP: "TMF-Response",
    OP_LOGIN_RSP: "Login-Response", OP_TEXT_RSP: "Text-Response", OP_DATA_IN: "Data-In",
    OP_LOGOUT_RSP: "Logout-Response", OP_R2T: "R2T", OP_ASYNC: "Async-Message",
    OP_REJECT: "Reject",
}

F_FINAL = 0x80
F_READ = 0x40
F_WRITE = 0x20
F_ATTR_SIMPLE = 0x01

STATUS_GOOD = 0x00
STATUS_CHECK_CONDITION = 0x02

# Digest arguments of send_pdu
AUTO = "auto"          # the negotiated digest (or none)
BAD_DIGEST = "bad"     # a wrong digest where one is negotiated
NO_DIGEST = "none"     # leave the digest out even though one is negotiated


class Closed(Exception):
    """The target closed (or reset) the connection."""


class ProtocolFailure(Exception):
    """The target answered something the helper cannot go on with."""


def make_isid(n):
    """A random-type ISID (RFC 7143 11.12.5: T=10b) unique per n."""
    return bytes([0x80, 0x12, 0x34, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF])


def pad_len(n):
    return (4 - (n & 3)) & 3


def be32(b, off):
    return struct.unpack_from(">I", b, off)[0]


def put_be32(b, off, v):
    struct.pack_into(">I", b, off, v & 0xFFFFFFFF)


def put_dsl(b, n):
    b[5] = (n >> 16) & 0xFF
    b[6] = (n >> 8) & 0xFF
    b[7] = n & 0xFF


def put_lun(b, lun):
    # Peripheral addressing (SAM): LUN below 256 in byte 1.
    b[8:16] = bytes([0, lun & 0xFF, 0, 0, 0, 0, 0, 0])


# ---------------------------------------------------------------- PDU


class PDU:
    """A received PDU: the 48-byte BHS, the AHS and the data segment (no padding)."""

    def __init__(self, bhs, ahs=b"", data=b""):
        self.bhs = bytes(bhs)
        self.ahs = ahs
        self.data = data

    opcode = property(lambda self: self.bhs[0] & 0x3F)
    flags = property(lambda self: self.bhs[1])
    dsl = property(lambda self: self.bhs[5] << 16 | self.bhs[6] << 8 | self.bhs[7])
    itt = property(lambda self: be32(self.bhs, 16))
    ttt = property(lambda self: be32(self.bhs, 20))
    statsn = property(lambda self: be32(self.bhs, 24))
    expcmdsn = property(lambda self: be32(self.bhs, 28))
    maxcmdsn = property(lambda self: be32(self.bhs, 32))
    datasn = property(lambda self: be32(self.bhs, 36))  # R2TSN in an R2T, ExpDataSN in a response
    bufoff = property(lambda self: be32(self.bhs, 40))
    ddtl = property(lambda self: be32(self.bhs, 44))    # R2T desired length
    residual = property(lambda self: be32(self.bhs, 44))
    reason = property(lambda self: self.bhs[2])         # Reject reason, SCSI response byte
    status = property(lambda self: self.bhs[3])         # SCSI status
    login_status = property(lambda self: (self.bhs[36], self.bhs[37]))

    @property
    def name(self):
        return OPNAMES.get(self.opcode, "opcode 0x%02x" % self.opcode)

    def sense(self):
        """(key, asc, ascq) from a SCSI Response's sense data, or None."""
        if self.opcode != OP_SCSI_RSP or len(self.data) < 2:
            return None
        n = struct.unpack_from(">H", self.data, 0)[0]
        s = self.data[2:2 + n]
        if len(s) >= 14 and (s[0] & 0x7F) in (0x70, 0x71):
            return (s[2] & 0x0F, s[12], s[13])
        if len(s) >= 4 and (s[0] & 0x7F) in (0x72, 0x73):
            return (s[1] & 0x0F, s[2], s[3])
        return None

    def describe(self):
        op = self.opcode
        d = "%s ITT 0x%08x" % (self.name, self.itt)
        if op == OP_REJECT:
            d += " reason 0x%02x" % self.reason
        elif op == OP_SCSI_RSP:
            d += " status 0x%02x" % self.status
            if self.sense():
                d += " sense %x/%02x/%02x" % self.sense()
        elif op == OP_LOGIN_RSP:
            d += " status 0x%02x%02x" % self.login_status
        elif op == OP_R2T:
            d += " TTT 0x%08x off %u len %u" % (self.ttt, self.bufoff, self.ddtl)
        elif op == OP_DATA_IN:
            d += " DataSN %u off %u len %u%s" % (self.datasn, self.bufoff, self.dsl,
                                                 " S" if self.flags & 1 else "")
        elif op == OP_TMF_RSP:
            d += " response %u" % self.reason
        elif op == OP_NOP_IN:
            d += " TTT 0x%08x" % self.ttt
        return d


def parse_text(data):
    """key=value NUL-separated text to an ordered list of (key, value)."""
    out = []
    for item in data.split(b"\0"):
        if not item:
            continue
        k, _, v = item.partition(b"=")
        out.append((k.decode("latin-1"), v.decode("latin-1")))
    return out


def make_text(pairs):
    return b"".join(("%s=%s" % (k, v)).encode() + b"\0" for k, v in pairs)


# ---------------------------------------------------------------- BHS builders


def bhs_new(opcode, flags=0, immediate=False):
    b = bytearray(48)
    b[0] = opcode | (IMMEDIATE if immediate else 0)
    b[1] = flags
    return b


def bhs_scsi_cmd(itt, cmdsn, expstatsn, cdb, edtl, read=False, write=False, final=True,
                 lun=0, immediate=False):
    flags = (F_FINAL if final else 0) | (F_READ if read else 0) | (F_WRITE if write else 0)
    b = bhs_new(OP_SCSI_CMD, flags | F_ATTR_SIMPLE, immediate)
    put_lun(b, lun)
    put_be32(b, 16, itt)
    put_be32(b, 20, edtl)
    put_be32(b, 24, cmdsn)
    put_be32(b, 28, expstatsn)
    b[32:32 + len(cdb)] = cdb
    return b


def bhs_data_out(itt, ttt, expstatsn, datasn, bufoff, final=True, lun=0):
    b = bhs_new(OP_DATA_OUT, F_FINAL if final else 0)
    put_lun(b, lun)
    put_be32(b, 16, itt)
    put_be32(b, 20, ttt)
    put_be32(b, 28, expstatsn)
    put_be32(b, 36, datasn)
    put_be32(b, 40, bufoff)
    return b


def bhs_nop_out(itt, cmdsn, expstatsn, ttt=RSVD, immediate=False):
    b = bhs_new(OP_NOP_OUT, F_FINAL, immediate)
    put_be32(b, 16, itt)
    put_be32(b, 20, ttt)
    put_be32(b, 24, cmdsn)
    put_be32(b, 28, expstatsn)
    return b


def bhs_text(itt, cmdsn, expstatsn, ttt=RSVD, final=True, cont=False, immediate=False):
    b = bhs_new(OP_TEXT_REQ, (F_FINAL if final else 0) | (0x40 if cont else 0), immediate)
    put_be32(b, 16, itt)
    put_be32(b, 20, ttt)
    put_be32(b, 24, cmdsn)
    put_be32(b, 28, expstatsn)
    return b


def bhs_logout(itt, cmdsn, expstatsn, reason=0, cid=0, immediate=False):
    b = bhs_new(OP_LOGOUT_REQ, F_FINAL | (reason & 0x7F), immediate)
    put_be32(b, 16, itt)
    struct.pack_into(">H", b, 20, cid)
    put_be32(b, 24, cmdsn)
    put_be32(b, 28, expstatsn)
    return b


def bhs_tmf(itt, cmdsn, expstatsn, function, ref_itt=RSVD, ref_cmdsn=0, lun=0,
            immediate=True):
    b = bhs_new(OP_TMF_REQ, F_FINAL | (function & 0x7F), immediate)
    put_lun(b, lun)
    put_be32(b, 16, itt)
    put_be32(b, 20, ref_itt)
    put_be32(b, 24, cmdsn)
    put_be32(b, 28, expstatsn)
    put_be32(b, 32, ref_cmdsn)
    return b


def bhs_snack(itt, expstatsn, snack_type=0, ttt=RSVD, begrun=0, runlength=0):
    b = bhs_new(OP_SNACK_REQ, F_FINAL | (snack_type & 0x0F))
    put_be32(b, 16, itt)
    put_be32(b, 20, ttt)
    put_be32(b, 28, expstatsn)
    put_be32(b, 40, begrun)
    put_be32(b, 44, runlength)
    return b


def bhs_login(isid, itt, cmdsn, expstatsn, csg, nsg, transit=True, cont=False, tsih=0, cid=0,
              vmax=0, vmin=0):
    flags = (0x80 if transit else 0) | (0x40 if cont else 0) | (csg & 3) << 2 | (nsg & 3)
    b = bhs_new(OP_LOGIN_REQ, flags, immediate=True)
    b[2] = vmax
    b[3] = vmin
    b[8:14] = isid
    struct.pack_into(">H", b, 14, tsih)
    put_be32(b, 16, itt)
    struct.pack_into(">H", b, 20, cid)
    put_be32(b, 24, cmdsn)
    put_be32(b, 28, expstatsn)
    return b


def cdb_rw10(opcode, lba, nblocks):
    return struct.pack(">BBIBHB", opcode, 0, lba, 0, nblocks, 0)


def cdb_read10(lba, nblocks):
    return cdb_rw10(0x28, lba, nblocks)


def cdb_write10(lba, nblocks):
    return cdb_rw10(0x2A, lba, nblocks)


# ---------------------------------------------------------------- connection


class ScsiResult:
    def __init__(self):
        self.response = None   # the SCSI Response PDU (or the Data-In carrying status)
        self.status = None
        self.data = b""
        self.rejects = []      # Reject PDUs received meanwhile
        self.r2ts = []         # R2T PDUs received
        self.other = []        # anything else that arrived
        self.closed = False
        self.timed_out = False

    @property
    def good(self):
        return self.status == STATUS_GOOD and not self.closed and not self.timed_out

    def sense(self):
        return self.response.sense() if self.response is not None else None

    def describe(self):
        if self.closed:
            s = "connection closed"
        elif self.timed_out:
            s = "no response (timeout)"
        else:
            s = self.response.describe() if self.response is not None else "status 0x%02x" % (
                self.status or 0)
        if self.rejects:
            s += "; rejects: " + ", ".join(r.describe() for r in self.rejects)
        return s


class Session:
    """One TCP connection and (after login) its session."""

    def __init__(self, host, port, timeout=5.0, lun=0, block_size=512, name=""):
        self.host, self.port = host, port
        self.timeout = timeout
        self.lun = lun
        self.block_size = block_size
        self.name = name
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local = "%s:%d" % self.sock.getsockname()[:2]
        self.rxbuf = bytearray()
        self.closed = False
        self.header_digest = False
        self.data_digest = False
        self.cmdsn = 1
        self.expstatsn = 0
        self.exp_cmdsn = None  # the target's ExpCmdSN / MaxCmdSN as last seen
        self.max_cmdsn = None
        self.next_itt = 0x100
        self.params = {}
        self.max_send_dsl = 8192  # the target's MaxRecvDataSegmentLength
        self.max_recv_dsl = 8192
        self.immediate_data = True
        self.initial_r2t = True
        self.first_burst = 65536
        self.max_burst = 262144
        self.max_r2t = 1
        self.tsih = 0
        self.log = []  # every PDU received, described
        self.nop_answers = 0

    # -- raw I/O

    def close(self, reset=False):
        if self.sock is None:
            return
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass
        self.sock = None
        self.closed = True

    def send_raw(self, data):
        if self.sock is None:
            raise Closed("socket already closed")
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            self.closed = True
            raise Closed(str(e))

    def itt(self):
        self.next_itt += 1
        return self.next_itt

    def frame(self, bhs, ahs=b"", data=b"", header_digest=AUTO, data_digest=AUTO,
              dsl=None):
        """The wire bytes of a PDU. dsl overrides the DataSegmentLength field only."""
        bhs = bytearray(bhs)
        if len(ahs) % 4:
            raise ValueError("AHS must be a multiple of 4 bytes")
        bhs[4] = len(ahs) // 4
        put_dsl(bhs, len(data) if dsl is None else dsl)
        hdr = bytes(bhs) + ahs
        out = bytearray(hdr)
        if header_digest == AUTO:
            header_digest = "good" if self.header_digest else NO_DIGEST
        if header_digest == "good":
            out += digest_bytes(hdr)
        elif header_digest == BAD_DIGEST:
            d = bytearray(digest_bytes(hdr))
            d[0] ^= 0x5A
            out += d
        if data:
            padded = data + bytes(pad_len(len(data)))
            out += padded
            if data_digest == AUTO:
                data_digest = "good" if self.data_digest else NO_DIGEST
            if data_digest == "good":
                out += digest_bytes(padded)
            elif data_digest == BAD_DIGEST:
                d = bytearray(digest_bytes(padded))
                d[3] ^= 0xA5
                out += d
        return bytes(out)

    def send_pdu(self, bhs, ahs=b"", data=b"", header_digest=AUTO, data_digest=AUTO, dsl=None):
        """Sends one PDU; returns its BHS as it went on the wire (what a Reject echoes)."""
        wire = self.frame(bhs, ahs, data, header_digest, data_digest, dsl)
        self.send_raw(wire)
        return wire[:48]

    def _fill(self, n, deadline):
        while len(self.rxbuf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.sock is None:
                raise Closed("socket closed locally")
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(max(65536, n - len(self.rxbuf)))
            except socket.timeout:
                continue
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as e:
                self.closed = True
                raise Closed(str(e))
            if not chunk:
                self.closed = True
                raise Closed("EOF")
            self.rxbuf += chunk
        return True

    def _recv_one(self, deadline):
        hlen = 48
        if not self._fill(hlen, deadline):
            return None
        ahs_len = self.rxbuf[4] * 4
        dsl = self.rxbuf[5] << 16 | self.rxbuf[6] << 8 | self.rxbuf[7]
        hd = 4 if self.header_digest else 0
        dlen = dsl + pad_len(dsl) + (4 if self.data_digest and dsl else 0) if dsl else 0
        total = 48 + ahs_len + hd + dlen
        # A PDU that has started arriving is always read whole (bounded by the deadline
        # plus a grace period), so the stream stays in step.
        if not self._fill(total, max(deadline, time.monotonic() + self.timeout)):
            raise ProtocolFailure("PDU cut short: have %d of %d bytes" % (len(self.rxbuf), total))
        raw = bytes(self.rxbuf[:total])
        del self.rxbuf[:total]
        hdr = raw[:48 + ahs_len]
        if hd and raw[48 + ahs_len:52 + ahs_len] != digest_bytes(hdr):
            raise ProtocolFailure("bad header digest from the target")
        off = 48 + ahs_len + hd
        data = raw[off:off + dsl]
        if dsl and self.data_digest:
            padded = raw[off:off + dsl + pad_len(dsl)]
            if raw[off + dsl + pad_len(dsl):off + dsl + pad_len(dsl) + 4] != digest_bytes(padded):
                raise ProtocolFailure("bad data digest from the target")
        return PDU(raw[:48], raw[48:48 + ahs_len], data)

    def recv_pdu(self, timeout=None, answer_pings=True):
        """The next PDU, None after timeout seconds without one, or raises Closed. NOP-In
        pings of the target (TTT not reserved) are answered and not returned."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            pdu = self._recv_one(deadline)
            if pdu is None:
                return None
            self._note(pdu)
            if answer_pings and pdu.opcode == OP_NOP_IN and pdu.ttt != RSVD:
                self.nop_answers += 1
                self.send_pdu(bhs_nop_out(RSVD, self.cmdsn, self.expstatsn, ttt=pdu.ttt,
                                          immediate=True))
                continue
            return pdu

    def _note(self, pdu):
        self.log.append(pdu.describe())
        op = pdu.opcode
        if op in OPNAMES:
            self.exp_cmdsn, self.max_cmdsn = pdu.expcmdsn, pdu.maxcmdsn
        # StatSN advances on PDUs that carry status.
        carries = op in (OP_SCSI_RSP, OP_TMF_RSP, OP_LOGIN_RSP, OP_TEXT_RSP, OP_LOGOUT_RSP,
                         OP_REJECT, OP_ASYNC) or (op == OP_DATA_IN and pdu.flags & 1) or (
                             op == OP_NOP_IN and pdu.itt != RSVD)
        if carries:
            self.expstatsn = (pdu.statsn + 1) & 0xFFFFFFFF

    def recv_all(self, quiet=0.5, limit=10.0):
        """Every PDU until quiet seconds pass without one (at most limit seconds).
        Returns (pdus, closed)."""
        out = []
        end = time.monotonic() + limit
        try:
            while time.monotonic() < end:
                p = self.recv_pdu(timeout=min(quiet, max(0.01, end - time.monotonic())))
                if p is None:
                    break
                out.append(p)
        except Closed:
            return out, True
        return out, False

    def wait_closed(self, timeout=5.0):
        """Reads until the target closes the connection. Returns (closed, pdus)."""
        out = []
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                p = self.recv_pdu(timeout=max(0.01, end - time.monotonic()))
                if p is not None:
                    out.append(p)
        except Closed:
            return True, out
        except ProtocolFailure:
            return False, out
        return False, out

    # -- login

    def login(self, initiator, target, isid, params=None, security_stage=False,
              session_type="Normal", extra=None, itt=0, cid=0, max_rounds=8):
        """Logs in. Returns (status_class, status_detail, keys_dict, responses). Raises
        Closed if the target hangs up before answering."""
        p = {
            "HeaderDigest": "None", "DataDigest": "None",
            "MaxRecvDataSegmentLength": 65536, "ImmediateData": "Yes", "InitialR2T": "No",
            "MaxBurstLength": 262144, "FirstBurstLength": 65536, "MaxOutstandingR2T": 1,
            "ErrorRecoveryLevel": 0, "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes",
            "MaxConnections": 1, "DefaultTime2Wait": 2, "DefaultTime2Retain": 0,
        }
        if session_type != "Normal":
            for k in ("ImmediateData", "InitialR2T", "MaxBurstLength", "FirstBurstLength",
                      "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
                      "MaxConnections"):
                p.pop(k)
        p.update(params or {})
        ident = [("InitiatorName", initiator)]
        if session_type == "Normal":
            ident.append(("TargetName", target))
        ident.append(("SessionType", session_type))
        ident = [kv for kv in ident if kv[1] is not None]
        responses = []
        keys = {}
        login_cmdsn = self.cmdsn
        cmd_isid = isid
        if security_stage:
            first = ident + [("AuthMethod", "None")]
            self.send_pdu(bhs_login(cmd_isid, itt, login_cmdsn, self.expstatsn, 0, 1),
                          data=make_text(first))
            r = self._login_rsp(responses)
            if r.login_status != (0, 0):
                return r.login_status + (dict(parse_text(r.data)), responses)
            keys.update(parse_text(r.data))
            pairs = [(k, str(v)) for k, v in p.items()]
        else:
            pairs = ident + [(k, str(v)) for k, v in p.items()]
        pairs += list(extra or [])
        answered = set(k for k, _ in pairs)
        for _ in range(max_rounds):
            self.send_pdu(bhs_login(cmd_isid, itt, login_cmdsn, self.expstatsn, 1, 3),
                          data=make_text(pairs))
            r = self._login_rsp(responses)
            if r.login_status != (0, 0):
                return r.login_status + (dict(parse_text(r.data)), responses)
            got = parse_text(r.data)
            keys.update(got)
            if r.flags & 0x80 and r.flags & 3 == 3:
                self.tsih = struct.unpack_from(">H", r.bhs, 14)[0]
                self._apply(keys, p)
                self.exp_cmdsn, self.max_cmdsn = r.expcmdsn, r.maxcmdsn
                self.cmdsn = login_cmdsn
                return 0, 0, keys, responses
            # Answer the target's own offers with its value, then ask again to move on.
            pairs = [(k, v) for k, v in got if k not in answered and v not in (
                "Irrelevant", "NotUnderstood", "Reject")]
            answered.update(k for k, _ in pairs)
        raise ProtocolFailure("login did not complete in %d rounds" % max_rounds)

    def _login_rsp(self, responses):
        r = self.recv_pdu(timeout=self.timeout, answer_pings=False)
        if r is None:
            raise ProtocolFailure("no Login Response")
        responses.append(r)
        if r.opcode != OP_LOGIN_RSP:
            raise ProtocolFailure("expected a Login Response, got " + r.describe())
        return r

    def _apply(self, keys, ours):
        def num(k, default):
            try:
                return int(keys.get(k, default))
            except ValueError:
                return default
        self.params = dict(keys)
        self.header_digest = keys.get("HeaderDigest", "None") == "CRC32C"
        self.data_digest = keys.get("DataDigest", "None") == "CRC32C"
        self.max_send_dsl = num("MaxRecvDataSegmentLength", 8192)
        self.max_recv_dsl = int(ours.get("MaxRecvDataSegmentLength", 8192))
        self.immediate_data = keys.get("ImmediateData", ours.get("ImmediateData", "Yes")) == "Yes"
        self.initial_r2t = keys.get("InitialR2T", ours.get("InitialR2T", "Yes")) == "Yes"
        self.max_burst = num("MaxBurstLength", int(ours.get("MaxBurstLength", 262144)))
        self.first_burst = min(num("FirstBurstLength", int(ours.get("FirstBurstLength", 65536))),
                               self.max_burst)
        self.max_r2t = num("MaxOutstandingR2T", int(ours.get("MaxOutstandingR2T", 1)))

    # -- full feature phase helpers

    def take_cmdsn(self):
        sn = self.cmdsn
        self.cmdsn = (self.cmdsn + 1) & 0xFFFFFFFF
        return sn

    def nop_ping(self, timeout=None, data=b""):
        """NOP-Out ping (non-immediate, consumes a CmdSN). Returns the NOP-In or None."""
        itt = self.itt()
        self.send_pdu(bhs_nop_out(itt, self.take_cmdsn(), self.expstatsn), data=data)
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while time.monotonic() < end:
            p = self.recv_pdu(timeout=max(0.01, end - time.monotonic()))
            if p is None:
                return None
            if p.opcode == OP_NOP_IN and p.itt == itt:
                return p
        return None

    def logout(self, timeout=None):
        itt = self.itt()
        self.send_pdu(bhs_logout(itt, self.take_cmdsn(), self.expstatsn, immediate=True))
        try:
            end = time.monotonic() + (self.timeout if timeout is None else timeout)
            while time.monotonic() < end:
                p = self.recv_pdu(timeout=max(0.01, end - time.monotonic()))
                if p is None:
                    break
                if p.opcode == OP_LOGOUT_RSP and p.itt == itt:
                    return p
        finally:
            self.close()
        return None

    def data_out_pdus(self, itt, ttt, data, base_off, datasn=0, final=True, chunk=None):
        """Data-Out PDUs (bhs, payload) for data placed at buffer offset base_off, cut at
        chunk bytes (default: the target's MaxRecvDataSegmentLength); F on the last one
        when final."""
        out = []
        pos = 0
        n = len(data)
        step = min(chunk or self.max_send_dsl, self.max_send_dsl)
        while pos < n or (n == 0 and not out):
            chunk = data[pos:pos + step]
            last = pos + len(chunk) >= n
            b = bhs_data_out(itt, ttt, self.expstatsn, datasn, base_off + pos,
                             final=final and last, lun=self.lun)
            out.append((b, chunk))
            datasn += 1
            pos += len(chunk)
            if n == 0:
                break
        return out

    def send_data_out(self, itt, ttt, data, base_off, datasn=0, final=True, chunk=None):
        """Sends the Data-Out PDUs; returns their wire BHSs."""
        return [self.send_pdu(b, data=c) for b, c in
                self.data_out_pdus(itt, ttt, data, base_off, datasn=datasn, final=final,
                                   chunk=chunk)]

    def write10(self, lba, data, immediate=None, unsolicited=None, itt=None, cmdsn=None,
                timeout=None, answer_r2t=True, send_command=True):
        """WRITE(10) of data at lba with immediate, unsolicited and solicited data as
        negotiated (immediate/unsolicited may be turned off). Returns a ScsiResult."""
        edtl = len(data)
        nblocks = edtl // self.block_size
        itt = self.itt() if itt is None else itt
        use_imm = self.immediate_data if immediate is None else immediate
        use_unsol = (not self.initial_r2t) if unsolicited is None else unsolicited
        fb = min(self.first_burst, edtl)
        imm = min(fb, self.max_send_dsl) if use_imm else 0
        unsol_end = fb if use_unsol else imm
        sn = self.take_cmdsn() if cmdsn is None else cmdsn
        bhs = bhs_scsi_cmd(itt, sn, self.expstatsn, cdb_write10(lba, nblocks), edtl,
                           write=True, final=unsol_end <= imm, lun=self.lun)
        if send_command:
            self.send_pdu(bhs, data=data[:imm])
        if unsol_end > imm:
            self.send_data_out(itt, RSVD, data[imm:unsol_end], imm)
        return self.finish_write(itt, data, timeout=timeout, answer_r2t=answer_r2t)

    def finish_write(self, itt, data, timeout=None, answer_r2t=True, res=None, chunk=None,
                     sent=None):
        """Answers R2Ts for task itt from data until its SCSI Response arrives. The wire
        BHSs of the Data-Outs sent are appended to sent (a list) when given."""
        res = res or ScsiResult()
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while time.monotonic() < end:
                p = self.recv_pdu(timeout=max(0.01, end - time.monotonic()))
                if p is None:
                    break
                if p.opcode == OP_R2T and p.itt == itt:
                    res.r2ts.append(p)
                    if answer_r2t:
                        hdrs = self.send_data_out(itt, p.ttt, data[p.bufoff:p.bufoff + p.ddtl],
                                                  p.bufoff, chunk=chunk)
                        if sent is not None:
                            sent.extend(hdrs)
                elif p.opcode == OP_SCSI_RSP and p.itt == itt:
                    res.response = p
                    res.status = p.status
                    return res
                elif p.opcode == OP_REJECT:
                    res.rejects.append(p)
                else:
                    res.other.append(p)
        except Closed:
            res.closed = True
            return res
        res.timed_out = True
        return res

    def read10(self, lba, nblocks, itt=None, cmdsn=None, timeout=None, flags_read=True,
               edtl=None):
        itt = self.itt() if itt is None else itt
        edtl = nblocks * self.block_size if edtl is None else edtl
        sn = self.take_cmdsn() if cmdsn is None else cmdsn
        self.send_pdu(bhs_scsi_cmd(itt, sn, self.expstatsn, cdb_read10(lba, nblocks), edtl,
                                   read=flags_read, lun=self.lun))
        return self.collect_read(itt, edtl, timeout)

    def collect_read(self, itt, edtl, timeout=None):
        res = ScsiResult()
        buf = bytearray(edtl)
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while time.monotonic() < end:
                p = self.recv_pdu(timeout=max(0.01, end - time.monotonic()))
                if p is None:
                    break
                if p.opcode == OP_DATA_IN and p.itt == itt:
                    buf[p.bufoff:p.bufoff + len(p.data)] = p.data
                    if p.flags & 1:
                        res.response = p
                        res.status = p.status
                        res.data = bytes(buf)
                        return res
                elif p.opcode == OP_SCSI_RSP and p.itt == itt:
                    res.response = p
                    res.status = p.status
                    res.data = bytes(buf)
                    return res
                elif p.opcode == OP_REJECT:
                    res.rejects.append(p)
                else:
                    res.other.append(p)
        except Closed:
            res.closed = True
            return res
        res.timed_out = True
        return res


def status_query(path, obj, timeout=3.0):
    """One query on the daemon's status socket (docs/status.md); returns the result or None."""
    import json
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall((json.dumps({"version": 1, "cmd": "query", "object": obj}) + "\n").encode())
        buf = b""
        end = time.monotonic() + timeout
        while b"\n" not in buf and time.monotonic() < end:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        reply = json.loads(buf.split(b"\n")[0])
        return reply.get("result") if reply.get("ok") else None
    except (OSError, ValueError):
        return None
    finally:
        s.close()
