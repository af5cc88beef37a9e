#!/usr/bin/env python3
"""bad_input_cases: a hostile initiator against a running isergw (run by test_bad_input.sh).

Every case sends something an initiator must not send (or cuts a PDU short) and checks:
  (a) the answer RFC 7143 asks for: a Reject with the right reason and the offending header
      as its data, a SCSI Response with CHECK CONDITION, a Login Response with the right
      status, silence (CmdSN outside the window), or the connection being dropped (and then
      a new connection works);
  (b) a line in the daemon log that names the reason, for the case's own connection;
  (c) the daemon is alive and a healthy session, open from the start, keeps working: a
      write and read-back on it during the case and after it;
  (d) the LUN: every write the target acknowledged (GOOD) is recorded in a reference file;
      `--verify` (run after the daemon has stopped and flushed) compares the backing file
      with it byte for byte: nothing else may have changed.

Each case writes only inside its own 256 KiB region of the LUN, with its own data, so a
byte that changed without an acknowledged write names the case that changed it.
"""

import argparse
import base64
import json
import os
import random
import re
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iscsi_raw import (  # noqa: E402
    BAD_DIGEST, Closed, F_FINAL, OP_DATA_IN, OP_LOGIN_RSP,
    OP_NOP_IN, OP_R2T, OP_REJECT, OP_SCSI_RSP, OP_TEXT_RSP, OP_TMF_RSP,
    ProtocolFailure, RSVD, STATUS_CHECK_CONDITION, STATUS_GOOD, Session, bhs_data_out,
    bhs_login, bhs_logout, bhs_new, bhs_nop_out, bhs_scsi_cmd, bhs_snack, bhs_text, bhs_tmf,
    cdb_read10, cdb_write10, make_isid, make_text, put_be32, status_query)

BS = 512
KIB = 1024
MIB = 1024 * 1024
REGION = 256 * KIB              # per case
HEALTHY_BASE = 0                # healthy session's slots: [0, 4 MiB)
HEALTHY_SLOT = 16 * KIB
HEALTHY_SLOTS = 4 * MIB // HEALTHY_SLOT
CASE_BASE = 8 * MIB             # case regions: [8 MiB, 56 MiB)
CHURN_BASE = 56 * MIB           # connection churn: [56 MiB, 60 MiB)
CASE_TIMEOUT = 90               # seconds, per case (SIGALRM)
# Quiet periods (how long silence means "no answer") are multiplied by this; raise it on a
# slow or loaded machine (sanitizer builds, CI): BAD_INPUT_SLOW=3.
SLOW = max(1.0, float(os.environ.get("BAD_INPUT_SLOW", "1")))

# Session settings used by several cases.
HEALTHY_PARAMS = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "ImmediateData": "Yes",
                  "InitialR2T": "No", "MaxOutstandingR2T": 4}
R2T_ONLY = {"ImmediateData": "No", "InitialR2T": "Yes", "MaxOutstandingR2T": 1}
IMM_UNSOL = {"ImmediateData": "Yes", "InitialR2T": "No", "FirstBurstLength": 65536}


def pat(tag, n):
    """n bytes of data unique to tag, never all zero."""
    b = random.Random(tag).randbytes(n)
    return b if any(b) else b"\x01" + b[1:]


class CaseTimeout(Exception):
    pass


class Reference:
    """Writes the target acknowledged, in order, and attempts for diagnostics."""

    def __init__(self, path):
        self.f = open(path, "w")

    def acked(self, off, data, who):
        self.f.write(json.dumps({"off": off, "data": base64.b64encode(data).decode(),
                                 "who": who}) + "\n")
        self.f.flush()

    def owner(self, off, length, who):
        self.f.write(json.dumps({"region": off, "len": length, "who": who}) + "\n")
        self.f.flush()


class Ctx:
    def __init__(self, a):
        self.a = a
        self.host, self.port = a.host, a.port
        self.ref = Reference(a.ref)
        self.isid_n = 0
        self.regions = 0
        self.healthy = None
        self.healthy_slot = 0
        self.healthy_ops = 0
        self.baseline = None

    # -- daemon

    def daemon_state(self):
        try:
            with open("/proc/%d/stat" % self.a.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return "gone"

    def daemon_alive(self):
        return self.daemon_state() not in ("Z", "X", "gone")

    def log_size(self):
        try:
            return os.path.getsize(self.a.log)
        except OSError:
            return 0

    def log_text(self, since):
        with open(self.a.log, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def stats(self):
        return status_query(self.a.status, "stats")

    def pool(self):
        return status_query(self.a.status, "pool")

    # -- sessions

    def next_isid(self):
        self.isid_n += 1
        return make_isid(self.isid_n)

    def new_session(self, params=None, initiator=None, timeout=5.0, isid=None, **kw):
        """A logged-in session; raises ProtocolFailure when the login fails."""
        s = Session(self.host, self.port, timeout=timeout)
        s.isid = isid or self.next_isid()
        cls, det, keys, _ = s.login(initiator or self.a.initiator, self.a.target,
                                    s.isid, params=params, **kw)
        if (cls, det) != (0, 0):
            s.close()
            raise ProtocolFailure("login failed with status 0x%02x%02x" % (cls, det))
        return s

    def region_for(self, name):
        off = CASE_BASE + self.regions * REGION
        self.regions += 1
        if off + REGION > CHURN_BASE:
            raise RuntimeError("out of case regions")
        self.ref.owner(off, REGION, name)
        return off

    def healthy_io(self, tag):
        """Write one slot on the healthy session and read it back. Returns an error text or
        None."""
        h = self.healthy
        if h is None or h.closed:
            return "healthy session is gone"
        off = HEALTHY_BASE + (self.healthy_slot % HEALTHY_SLOTS) * HEALTHY_SLOT
        self.healthy_slot += 1
        self.healthy_ops += 1
        data = pat("healthy:%d:%s" % (self.healthy_ops, tag), HEALTHY_SLOT)
        try:
            w = h.write10(off // BS, data, timeout=10)
            if not w.good:
                return "healthy write (%s): %s" % (tag, w.describe())
            self.ref.acked(off, data, "healthy session")
            r = h.read10(off // BS, HEALTHY_SLOT // BS, timeout=10)
            if not r.good:
                return "healthy read (%s): %s" % (tag, r.describe())
            if r.data != data:
                return "healthy read-back (%s) differs from what was written" % tag
        except (Closed, ProtocolFailure, OSError) as e:
            return "healthy session (%s): %s" % (tag, e)
        return None

    def fresh_session_works(self):
        """A new connection logs in, answers a ping and a read. Error text or None."""
        try:
            s = self.new_session(params={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
        except (Closed, ProtocolFailure, OSError) as e:
            return "a new connection cannot log in: %s" % e
        try:
            if s.nop_ping(timeout=5) is None:
                return "a new connection's NOP-Out ping got no NOP-In"
            r = s.read10(CASE_BASE // BS, 8, timeout=5)
            if not r.good:
                return "a new connection's READ: " + r.describe()
            s.logout(timeout=3)
        except (Closed, ProtocolFailure, OSError) as e:
            return "a new connection failed: %s" % e
        finally:
            s.close()
        return None


class Case:
    def __init__(self, ctx, name):
        self.ctx = ctx
        self.name = name
        self.failures = []
        self.obs = []
        self.notes = []
        self.sessions = []
        self.log_off = ctx.log_size()
        self.region = ctx.region_for(name)

    # -- bookkeeping

    def check(self, cond, msg):
        if not cond:
            self.failures.append(msg)
        return bool(cond)

    def observe(self, who, what):
        self.obs.append("%s: %s" % (who, what))

    def note(self, msg):
        self.notes.append(msg)

    def lba(self, off=0):
        return (self.region + off) // BS

    def session(self, params=None, **kw):
        s = self.ctx.new_session(params=params, **kw)
        self.sessions.append(s)
        return s

    def raw(self, timeout=5.0):
        s = Session(self.ctx.host, self.ctx.port, timeout=timeout)
        self.sessions.append(s)
        return s

    def during(self):
        err = self.ctx.healthy_io("during " + self.name)
        self.check(err is None, err)

    # -- expectations

    def log_has(self, regex, peer=None, timeout=3.0):
        """Waits for a daemon log line (written since the case began) matching regex; when
        peer is given the line must name that connection."""
        rx = re.compile((re.escape(peer) + r"\b.*" if peer else "") + regex)
        end = time.monotonic() + timeout
        while True:
            text = self.ctx.log_text(self.log_off)
            for line in text.splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() >= end:
                return None
            time.sleep(0.05)

    def expect_log(self, regex, peer=None, what=None, timeout=3.0):
        line = self.log_has(regex, peer, timeout)
        self.check(line is not None, "no daemon log line for %s (looked for /%s/%s)" % (
            what or "the reason", regex, " on " + peer if peer else ""))
        if line:
            self.observe("log", line.strip())
        return line

    def gather(self, s, quiet=0.6, limit=10.0):
        pdus, closed = s.recv_all(quiet=quiet * SLOW, limit=limit * SLOW)
        for p in pdus:
            self.observe(s.local, p.describe())
        if closed:
            self.observe(s.local, "connection closed by the target")
        return pdus, closed

    def until(self, s, pred, timeout=5.0, seen=None):
        """Reads PDUs until pred(pdu); returns it (or None on timeout / close)."""
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                p = s.recv_pdu(timeout=max(0.01, end - time.monotonic()))
                if p is None:
                    return None
                self.observe(s.local, p.describe())
                if seen is not None:
                    seen.append(p)
                if pred(p):
                    return p
        except Closed:
            self.observe(s.local, "connection closed by the target")
        return None

    def check_reject(self, pdus, bad_bhs, reasons, what):
        """One Reject among pdus echoes bad_bhs with a reason in reasons. Returns it."""
        reasons = (reasons,) if isinstance(reasons, int) else tuple(reasons)
        want = " or ".join("0x%02x" % r for r in reasons)
        rej = [p for p in pdus if p.opcode == OP_REJECT and bytes(p.data[:48]) == bytes(bad_bhs)]
        got = "; ".join(p.describe() for p in pdus[:6]) + (
            "; ... (%d PDUs)" % len(pdus) if len(pdus) > 6 else "")
        if not self.check(rej, "%s: expected a Reject (reason %s) carrying the offending "
                          "header, got: %s" % (what, want, got or "nothing")):
            return None
        r = rej[0]
        self.check(r.reason in reasons, "%s: Reject reason 0x%02x, RFC 7143 asks for %s" % (
            what, r.reason, want))
        self.check(r.itt == RSVD, "%s: Reject ITT 0x%08x, must be 0xffffffff" % (what, r.itt))
        self.check(len(rej) == 1, "%s: %d Rejects for one PDU" % (what, len(rej)))
        return r

    def expect_drop(self, s, what, timeout=5.0):
        closed, pdus = s.wait_closed(timeout)
        for p in pdus:
            self.observe(s.local, p.describe())
        self.observe(s.local, "connection closed by the target" if closed else
                     "connection still open after %.0f s" % timeout)
        self.check(closed, "%s: the target did not drop the connection" % what)
        return pdus

    def expect_silence(self, s, what, quiet=1.0):
        pdus, closed = self.gather(s, quiet=quiet, limit=quiet + 2)
        self.check(not pdus and not closed, "%s: expected no answer, got %s" % (
            what, "; ".join(p.describe() for p in pdus) + (" (closed)" if closed else "")))
        return pdus

    def expect_alive(self, s, what):
        """s still works: a NOP-Out ping is answered (proves the stream is in step)."""
        try:
            p = s.nop_ping(timeout=5)
        except (Closed, OSError) as e:
            p = None
            self.observe(s.local, "ping: %s" % e)
        self.check(p is not None, "%s: session no longer answers a NOP-Out ping" % what)

    def expect_unchanged(self, off, length, what, expected=None):
        """Reads [off, off+len) of the case region through the healthy session: it must be
        zeros (or expected)."""
        h = self.ctx.healthy
        r = h.read10(self.lba(off), length // BS, timeout=10)
        if not self.check(r.good, "%s: healthy read: %s" % (what, r.describe())):
            return
        want = expected if expected is not None else bytes(length)
        if r.data != want:
            first = next(i for i in range(length) if r.data[i] != want[i])
            self.check(False, "%s: LUN bytes at region+%d.. changed by a write that was not "
                       "acknowledged (first differing byte at LUN offset %d)" % (
                           what, off, self.region + off + first))

    def acked(self, off, data):
        self.ctx.ref.acked(self.region + off, data, self.name)

    def finish(self):
        for s in self.sessions:
            s.close()


# ---------------------------------------------------------------- helpers for cases


def start_write(C, s, off, length, itt=None, cdb_blocks=None, edtl=None, final=True):
    """Sends a WRITE(10) without data; returns (itt, first R2T or None)."""
    itt = s.itt() if itt is None else itt
    nb = length // BS if cdb_blocks is None else cdb_blocks
    s.send_pdu(bhs_scsi_cmd(itt, s.take_cmdsn(), s.expstatsn, cdb_write10(C.lba(off), nb),
                            length if edtl is None else edtl, write=True, final=final))
    r2t = C.until(s, lambda p: p.opcode == OP_R2T and p.itt == itt)
    return itt, r2t


def data_out(s, itt, ttt, off, payload, datasn, final=False, **kw):
    return s.send_pdu(bhs_data_out(itt, ttt, s.expstatsn, datasn, off, final=final),
                      data=payload, **kw)


def late_pdus(C, s, res, quiet=0.6):
    """PDUs arriving within quiet seconds after a task's status (Rejects of Data-Outs the
    target received after it ended the task) are added to res."""
    if res.closed or res.timed_out:
        return
    pdus, closed = s.recv_all(quiet=quiet * SLOW, limit=3 * SLOW)
    res.rejects += [p for p in pdus if p.opcode == OP_REJECT]
    res.other += [p for p in pdus if p.opcode != OP_REJECT]
    res.closed = res.closed or closed


def conclude_write(C, s, itt, data, legit, what, timeout=8.0):
    """After a bad Data-Out: answers further R2Ts correctly, waits for the SCSI Response.
    legit: wire BHSs of the correct Data-Outs sent after the bad one (data the target still
    expected). Returns the ScsiResult. Records the data when the target said GOOD."""
    res = s.finish_write(itt, data, timeout=timeout, chunk=8 * KIB, sent=legit)
    late_pdus(C, s, res)
    C.observe(s.local, "task ended: " + res.describe())
    C.check(not res.closed, "%s: connection dropped instead of ending the task" % what)
    C.check(not res.timed_out, "%s: no SCSI Response for the task (task left hanging)" % what)
    if res.status == STATUS_GOOD and not res.closed:
        return res
    C.check(res.status == STATUS_CHECK_CONDITION or res.closed or res.timed_out,
            "%s: task ended with status 0x%02x, expected CHECK CONDITION (or GOOD)" % (
                what, res.status or 0))
    late = [r for r in res.rejects if bytes(r.data[:48]) in set(bytes(b) for b in legit)]
    C.check(not late, "%s: the target ended the task before the last expected Data-Out and "
            "then rejected %d Data-Out PDU(s) it had solicited (reason %s); RFC 7143 11.17.1: "
            "it MUST wait for the Data-Out with F=1 of every outstanding R2T before the "
            "SCSI Response" % (what, len(late), ",".join(sorted(set(
                "0x%02x" % r.reason for r in late)))))
    return res


def write_ok(C, s, off, data, what):
    """A correct write that must succeed; records it."""
    w = s.write10(C.lba(off), data, timeout=10)
    C.observe(s.local, "%s: %s" % (what, w.describe()))
    if C.check(w.good, "%s: %s" % (what, w.describe())):
        C.acked(off, data)
    return w


# ---------------------------------------------------------------- the cases

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


# ---- login phase


def login_expect(C, s, pairs, want, what, flags=None, vmax=0, vmin=0, csg=1, nsg=3,
                 transit=True, cont=False, tsih=0, raw_data=None):
    b = bhs_login(C.ctx.next_isid(), 0, 1, 0, csg, nsg, transit=transit, cont=cont,
                  tsih=tsih, vmax=vmax, vmin=vmin)
    if flags is not None:
        b[1] = flags
    s.send_pdu(b, data=raw_data if raw_data is not None else make_text(pairs))
    try:
        r = s.recv_pdu(timeout=5, answer_pings=False)
    except Closed:
        r = None
    if not C.check(r is not None and r.opcode == OP_LOGIN_RSP,
                   "%s: expected a Login Response with status 0x%04x, got %s" % (
                       what, want, r.describe() if r else "no answer / closed")):
        return None
    C.observe(s.local, r.describe())
    got = r.login_status[0] << 8 | r.login_status[1]
    if want & 0xFF == 0xFF:
        C.check(got >> 8 == want >> 8, "%s: Login status 0x%04x, expected class 0x%02x" % (
            what, got, want >> 8))
    else:
        C.check(got == want, "%s: Login status 0x%04x, RFC 7143 asks for 0x%04x" % (
            what, got, want))
    C.check(r.bhs[14:16] == b"\0\0", "%s: a failed login response must carry TSIH 0" % what)
    C.expect_drop(s, what + " (a failed login ends the connection)", timeout=3)
    return r


def ident(C, target=True):
    p = [("InitiatorName", C.ctx.a.initiator)]
    if target:
        p.append(("TargetName", C.ctx.a.target))
    p.append(("SessionType", "Normal"))
    return p


@case
def login_bad_version(C):
    """Login with VersionMin 1 (RFC 7143 is version 0): 0x0205 Unsupported version."""
    s = C.raw()
    login_expect(C, s, ident(C), 0x0205, "VersionMax=1 VersionMin=1", vmax=1, vmin=1)
    C.expect_log(r"login refused \(0x0205\)|status 0x0205", s.local)


@case
def login_missing_initiator_name(C):
    """Login without InitiatorName: 0x0207 Missing parameter."""
    s = C.raw()
    login_expect(C, s, [("TargetName", C.ctx.a.target), ("SessionType", "Normal")], 0x0207,
                 "no InitiatorName")
    C.expect_log(r"InitiatorName missing|status 0x0207", None)
    C.expect_log(r"login (failed, status |refused \()0x0207", s.local)


@case
def login_unknown_target(C):
    """Login to a target that does not exist: 0x0203 Not found."""
    s = C.raw()
    p = [("InitiatorName", C.ctx.a.initiator), ("TargetName", C.ctx.a.target + "-nosuch"),
         ("SessionType", "Normal")]
    login_expect(C, s, p, 0x0203, "unknown TargetName")
    C.expect_log(r"login (failed, status |refused \()0x0203", s.local)


@case
def login_garbage_text(C):
    """Login data that is not key=value text: an initiator error (class 0x02)."""
    variants = [
        ("binary junk", bytes(range(1, 256)) * 3),
        ("key without '='", b"InitiatorName\0TargetName\0"),
        ("no NUL terminator", b"InitiatorName=" + C.ctx.a.initiator.encode()),
        ("empty key", b"=value\0"),
        ("NULs only", bytes(64)),
    ]
    for what, raw in variants:
        s = C.raw()
        login_expect(C, s, None, 0x02FF, "login text: " + what, raw_data=raw)
        C.expect_log(r"login (failed, status |refused \()0x02", s.local, what=what)


@case
def login_bad_stage_flags(C):
    """Login flags no valid request carries: T and C both set; CSG 2 (reserved); NSG going
    backwards; a TSIH for a session that does not exist (0x020a)."""
    s = C.raw()
    login_expect(C, s, ident(C), 0x02FF, "T=1 and C=1", transit=True, cont=True)
    s = C.raw()
    login_expect(C, s, ident(C), 0x02FF, "CSG=2", csg=2, nsg=3)
    s = C.raw()
    login_expect(C, s, ident(C), 0x02FF, "CSG=1 NSG=0 with T=1", csg=1, nsg=0)
    s = C.raw()
    login_expect(C, s, ident(C), 0x020A, "TSIH 0x7777 of no session", tsih=0x7777)
    C.expect_log(r"login (failed, status |refused \()0x020a", s.local)


@case
def pdu_before_login(C):
    """The first PDU is a SCSI Command, not a Login Request: the connection is dropped."""
    s = C.raw()
    s.send_pdu(bhs_scsi_cmd(0x11, 1, 0, cdb_read10(0, 1), BS, read=True))
    pdus = C.expect_drop(s, "SCSI Command before login")
    C.check(all(p.opcode == OP_LOGIN_RSP for p in pdus),
            "SCSI Command before login: answered with %s" % "; ".join(
                p.describe() for p in pdus))
    C.expect_log(r"SCSI-Command during login", s.local)
    s = C.raw()
    s.send_pdu(bhs_nop_out(0x12, 1, 0))
    C.expect_drop(s, "NOP-Out before login")
    C.expect_log(r"NOP-Out during login", s.local)
    err = C.ctx.fresh_session_works()
    C.check(err is None, err)


@case
def non_login_pdu_during_login(C):
    """A Text Request after the first (security stage) Login Response: dropped."""
    s = C.raw()
    s.send_pdu(bhs_login(C.ctx.next_isid(), 0, 1, 0, 0, 1),
               data=make_text(ident(C) + [("AuthMethod", "None")]))
    r = s.recv_pdu(timeout=5, answer_pings=False)
    C.observe(s.local, r.describe() if r else "no Login Response")
    C.check(r is not None and r.login_status == (0, 0), "security stage login did not succeed")
    s.send_pdu(bhs_text(0x21, 1, (r.statsn + 1) if r else 0),
               data=make_text([("SendTargets", "All")]))
    C.expect_drop(s, "Text Request during login")
    C.expect_log(r"Text-Request during login", s.local)
    err = C.ctx.fresh_session_works()
    C.check(err is None, err)


@case
def login_oversized_data(C):
    """A Login Request with 16384 bytes of data, above the 8192 allowed during login."""
    s = C.raw()
    text = make_text(ident(C)) + b"X-junk="
    text += b"a" * (16384 - len(text) - 1) + b"\0"
    s.send_pdu(bhs_login(C.ctx.next_isid(), 0, 1, 0, 1, 3), data=text)
    C.expect_drop(s, "16 KiB login data segment")
    C.expect_log(r"login data segment of 16384 bytes exceeds", s.local)
    err = C.ctx.fresh_session_works()
    C.check(err is None, err)


# ---- headers in full feature phase


@case
def unknown_opcodes(C):
    """Opcodes no initiator may send (0x07, 0x1d vendor, 0x21 and 0x3f target codes), with
    and without data and the I bit: Reject 0x05 Command not supported, header echoed,
    the data segment skipped (the stream stays in step)."""
    s = C.session()
    for op, imm, dlen in ((0x07, False, 0), (0x07, True, 37), (0x1D, True, 300),
                          (0x21, False, 8), (0x3F, False, 0), (0x0F, False, 4096)):
        b = bhs_new(op, F_FINAL, immediate=imm)
        put_be32(b, 16, 0x5000 + op)
        put_be32(b, 24, s.cmdsn)
        put_be32(b, 28, s.expstatsn)
        wire = s.send_pdu(b, data=pat("op%d" % op, dlen))
        pdus, closed = C.gather(s, quiet=0.5)
        C.check_reject(pdus, wire, 0x05, "opcode 0x%02x%s, %d data bytes" % (
            op, " (I)" if imm else "", dlen))
        C.check(not closed, "opcode 0x%02x: connection dropped" % op)
        if closed:
            return
    C.expect_alive(s, "after unknown opcodes")
    C.expect_log(r"Reject reason 0x05", s.local)


@case
def garbage_headers(C):
    """Seeded random header bytes (opcode forced outside the initiator set so the answer is
    defined, random AHS of 0..16 words and 0..300 data bytes): every one answered with
    Reject 0x05 carrying it and the stream stays in step; then 48 bytes of 0xff (a target
    opcode with a 16 MiB data segment): the connection is dropped."""
    rng = random.Random(7143)
    s = C.session()
    bad_ops = [op for op in range(0x40) if op not in (0, 1, 2, 3, 4, 5, 6, 0x10)]
    for i in range(24):
        b = bytearray(rng.randbytes(48))
        b[0] = (b[0] & 0x40) | rng.choice(bad_ops)
        ahs = rng.randbytes(4 * rng.randrange(0, 17))
        data = rng.randbytes(rng.randrange(0, 301))
        wire = s.send_pdu(b, ahs=ahs, data=data)
        pdus, closed = C.gather(s, quiet=0.4)
        C.check_reject(pdus, wire, 0x05, "garbage header #%d (opcode 0x%02x)" % (i, b[0] & 0x3F))
        if not C.check(not closed, "garbage header #%d: connection dropped" % i):
            return
    C.expect_alive(s, "after 24 garbage headers")
    C.during()
    s.send_raw(b"\xff" * (48 + 1020))  # the BHS and the 255-word AHS it announces
    C.expect_drop(s, "all-0xff header (DataSegmentLength 16777215)")
    C.expect_log(r"exceeds|dropping connection", s.local)
    err = C.ctx.fresh_session_works()
    C.check(err is None, err)


@case
def nop_out_stray_ttt(C):
    """48 zero bytes (a NOP-Out with CmdSN 0, outside the window: ignored or Rejected), then
    a non-immediate NOP-Out with a valid ITT, an in-window CmdSN and a TTT the target never
    gave (0x00001234). RFC 7143 11.18: a NOP-Out with a valid ITT MUST be answered with a
    NOP-In (or the stray TTT Rejected, 0x09); either way the CmdSN stream must go on: a
    READ with the following CmdSN is served."""
    s = C.session()
    s.send_raw(bytes(48))
    pdus, closed = C.gather(s, quiet=0.8)
    C.check(not closed, "all-zero header: connection dropped")
    C.check(all(p.opcode == OP_REJECT for p in pdus), "all-zero header (CmdSN 0, outside the "
            "window): answered with %s" % "; ".join(p.describe() for p in pdus))
    if closed:
        return
    itt, sn = s.itt(), s.cmdsn
    wire = s.send_pdu(bhs_nop_out(itt, sn, s.expstatsn, ttt=0x1234))
    pdus, closed = C.gather(s, quiet=1.0)
    nop = [p for p in pdus if p.opcode == OP_NOP_IN and p.itt == itt]
    rej = [p for p in pdus if p.opcode == OP_REJECT and bytes(p.data[:48]) == bytes(wire)]
    C.check(nop or rej, "NOP-Out ITT 0x%x CmdSN %u TTT 0x1234: no answer at all; a NOP-Out with "
            "a valid ITT MUST get a NOP-In (RFC 7143 11.18), or the stray TTT a Reject" % (
                itt, sn))
    if rej:
        C.expect_log(r"Reject reason 0x0[49] for NOP-Out", s.local)
    s.cmdsn = sn if rej else sn + 1
    C.during()
    r = s.read10(C.lba(), 1, timeout=3)
    C.observe(s.local, "READ with CmdSN %u: %s" % (s.cmdsn - 1, r.describe()))
    C.check(r.good, "READ with the next CmdSN (%u) after the NOP-Out was not served (%s): the "
            "target neither answered the NOP-Out nor took its CmdSN, so every later command "
            "waits for CmdSN %u forever" % (s.cmdsn - 1, r.describe(), sn))


@case
def reserved_field_violations(C):
    """Header fields the target checks: Data-Out with the I bit; Data-Out with an AHS;
    Text Request with F and C both set; NOP-Out with the reserved ITT but not immediate:
    each a Reject (0x04 Protocol error, or 0x09 Invalid PDU field) echoing the header, the
    session goes on (and the write in progress completes); a Login Request in full feature
    phase: a Reject or a dropped connection."""
    s = C.session(R2T_ONLY)
    itt, r2t = start_write(C, s, 0, 32 * KIB)
    C.check(r2t is not None, "no R2T for a 32 KiB write")
    if r2t is None:
        return
    data = pat(C.name, 32 * KIB)
    trials = []
    b = bhs_data_out(itt, r2t.ttt, s.expstatsn, 0, 0)
    b[0] |= 0x40
    trials.append(("Data-Out with the I bit", b, b"", data[:8 * KIB]))
    b = bhs_data_out(itt, r2t.ttt, s.expstatsn, 0, 0)
    trials.append(("Data-Out with an AHS", b, bytes([0, 1, 0x7F, 0]), data[:8 * KIB]))
    b = bhs_text(s.itt(), s.cmdsn, s.expstatsn, final=True, cont=True)
    trials.append(("Text Request with F=1 and C=1", b, b"", make_text([("X-a", "b")])))
    b = bhs_nop_out(RSVD, s.cmdsn, s.expstatsn, immediate=False)
    trials.append(("NOP-Out with ITT 0xffffffff, I=0", b, b"", b""))
    for what, b, ahs, payload in trials:
        wire = s.send_pdu(b, ahs=ahs, data=payload)
        pdus, closed = C.gather(s, quiet=0.5)
        C.check_reject(pdus, wire, (0x04, 0x09), what)
        if not C.check(not closed, "%s: connection dropped" % what):
            return
    # The write that was going on: the bad Data-Outs did not belong to it. Finish it.
    legit = s.send_data_out(itt, r2t.ttt, data, 0, chunk=8 * KIB)
    res = conclude_write(C, s, itt, data, legit, "write after reserved-field Data-Outs")
    if res.good:
        C.acked(0, data)
        C.expect_unchanged(0, 32 * KIB, "write after reserved-field Data-Outs", data)
    C.expect_alive(s, "after reserved-field violations")
    C.expect_log(r"Reject reason 0x0[49] for Data-Out", s.local)
    C.expect_log(r"Reject reason 0x0[49] for Text-Request", s.local)
    C.expect_log(r"Reject reason 0x0[49] for NOP-Out", s.local)
    # A Login Request in full feature phase: a Reject, or (also fair) a dropped connection.
    s2 = C.session()
    wire = s2.send_pdu(bhs_login(make_isid(0xABCD), s2.itt(), s2.cmdsn, s2.expstatsn, 1, 3),
                       data=make_text(ident(C)))
    pdus, closed = C.gather(s2, quiet=0.5)
    if closed:
        C.note("Login Request in full feature phase: connection dropped (accepted)")
        C.expect_log(r"dropping connection", s2.local)
    else:
        C.check_reject(pdus, wire, (0x04, 0x09), "Login Request in full feature phase")
        C.expect_log(r"Reject reason 0x0[49] for Login-Request", s2.local)
        C.expect_alive(s2, "after a Login Request in full feature phase")


@case
def tmf_unknown_function(C):
    """Task management function 0x50: TMF Response 255 Function rejected (RFC 7143
    11.6.1)."""
    s = C.session()
    itt = s.itt()
    s.send_pdu(bhs_tmf(itt, s.cmdsn, s.expstatsn, 0x50))
    r = C.until(s, lambda p: p.opcode in (OP_TMF_RSP, OP_REJECT))
    C.check(r is not None and r.opcode == OP_TMF_RSP and r.reason == 255,
            "TMF function 0x50: expected TMF Response 255, got %s" % (
                r.describe() if r else "nothing"))
    C.expect_alive(s, "after TMF 0x50")
    C.expect_log(r"task management function 80 .*response 255", s.local)


@case
def logout_bad_reason(C):
    """Logout with reason code 5 (not defined): Reject (0x04 or 0x09). RFC 7143 7.3: the
    CmdSN of a rejected non-immediate request is not considered received, so the next
    request reusing that CmdSN is served."""
    s = C.session()
    sn = s.cmdsn
    wire = s.send_pdu(bhs_logout(s.itt(), sn, s.expstatsn, reason=5))
    pdus, closed = C.gather(s, quiet=0.6)
    C.check_reject(pdus, wire, (0x04, 0x09), "Logout reason 5")
    C.check(not closed, "Logout reason 5: connection dropped")
    C.expect_log(r"Reject reason 0x0[49] for Logout", s.local)
    plug_cmdsn(C, s, sn, "Logout reason 5")


def plug_cmdsn(C, s, sn, what):
    """After a Reject of a non-immediate request with CmdSN sn: a NOP-Out ping with the same
    CmdSN must be answered (RFC 7143 7.3: the rejected PDU's CmdSN MUST NOT be considered
    received; the initiator plugs the gap by reusing it)."""
    s.cmdsn = sn
    p = s.nop_ping(timeout=2)
    C.observe(s.local, "ping reusing CmdSN %u: %s" % (sn, p.describe() if p else "no answer"))
    if C.check(p is not None, "%s: a NOP-Out reusing the rejected request's CmdSN %u was not "
               "answered (the target consumed the CmdSN of a request it rejected; RFC 7143 "
               "7.3: it MUST NOT be considered received)" % (what, sn)):
        return
    s.cmdsn = sn + 1  # the target consumed it: go on from there
    C.expect_alive(s, what + " (CmdSN %u+1)" % sn)


@case
def scsi_rw_bits_inconsistent(C):
    """RFC 7143 11.3.1: R and W MUST NOT both be 0 when Expected Data Transfer Length is not
    0. READ(10) of 8 blocks with R=0 W=0 EDTL 4096, then WRITE(10) with R=1 W=0: the target
    must not move data the initiator did not ask for (no Data-In without R, no R2T without
    W): Reject, or a SCSI Response with CHECK CONDITION."""
    s = C.session(R2T_ONLY)
    for what, cdb, flags in (("READ(10) with R=0 W=0", cdb_read10(C.lba(), 8), 0),
                             ("WRITE(10) with R=1 W=0", cdb_write10(C.lba(), 8), 0x40)):
        itt = s.itt()
        b = bhs_scsi_cmd(itt, s.cmdsn, s.expstatsn, cdb, 4096)
        b[1] = F_FINAL | flags | 1
        wire = s.send_pdu(b)
        pdus, closed = C.gather(s, quiet=0.8)
        moved = [p for p in pdus if p.opcode in (OP_DATA_IN, OP_R2T) and p.itt == itt]
        C.check(not moved, "%s: the target moved data the flags do not allow: %s" % (
            what, "; ".join(p.describe() for p in moved)))
        rsp = [p for p in pdus if p.opcode == OP_SCSI_RSP and p.itt == itt]
        rej = [p for p in pdus if p.opcode == OP_REJECT and bytes(p.data[:48]) == bytes(wire)]
        C.check(rej or (rsp and rsp[0].status == STATUS_CHECK_CONDITION),
                "%s: expected a Reject or CHECK CONDITION, got %s" % (
                    what, "; ".join(p.describe() for p in pdus) or "nothing"))
        if rej:
            C.check(not rsp, "%s: both a Reject and a SCSI Response" % what)
            C.expect_log(r"Reject reason 0x0[49] for SCSI-Command", s.local, what=what)
        else:
            s.cmdsn += 1
        if closed:
            return
        if moved and any(p.opcode == OP_R2T for p in moved):
            # Do not leave the task hanging: abort it.
            s.send_pdu(bhs_tmf(s.itt(), s.cmdsn, s.expstatsn, 1, ref_itt=itt,
                               ref_cmdsn=s.cmdsn - 1))
            C.gather(s, quiet=0.5)
    C.expect_alive(s, "after inconsistent R/W bits")
    C.expect_unchanged(0, 8 * BS, "WRITE with W=0")


@case
def itt_in_use(C):
    """A second command with the ITT of a task still in progress: Reject 0x07 Task in
    progress; the first task completes normally; the rejected command's CmdSN is reused."""
    s = C.session(R2T_ONLY)
    data = pat(C.name, 32 * KIB)
    itt, r2t = start_write(C, s, 0, 32 * KIB)
    if not C.check(r2t is not None, "no R2T"):
        return
    sn = s.cmdsn
    wire = s.send_pdu(bhs_scsi_cmd(itt, sn, s.expstatsn, cdb_read10(C.lba(), 1), BS, read=True))
    pdus, closed = C.gather(s, quiet=0.6)
    C.check_reject(pdus, wire, 0x07, "READ reusing a live ITT")
    C.during()
    s.send_data_out(itt, r2t.ttt, data, 0, chunk=8 * KIB)
    res = s.finish_write(itt, data, timeout=8)
    C.observe(s.local, "first task: " + res.describe())
    if C.check(res.good, "the task whose ITT was reused did not complete: " + res.describe()):
        C.acked(0, data)
    r = s.read10(C.lba(), 64, cmdsn=sn)
    s.cmdsn = sn + 1
    C.check(r.good and r.data == data, "READ reusing the rejected command's CmdSN: " +
            r.describe())
    C.expect_log(r"Reject reason 0x07", s.local)


# ---- digests


@case
def header_digest_error(C):
    """HeaderDigest=CRC32C; a NOP-Out ping, then a WRITE with immediate data, each with a
    wrong header digest: the connection is dropped (RFC 7143 7.8: the length fields cannot
    be trusted), the write is not applied, a new connection works."""
    for what, send in (
            ("NOP-Out", lambda s: s.send_pdu(bhs_nop_out(s.itt(), s.cmdsn, s.expstatsn),
                                             header_digest=BAD_DIGEST)),
            ("WRITE with immediate data", lambda s: s.send_pdu(
                bhs_scsi_cmd(s.itt(), s.cmdsn, s.expstatsn, cdb_write10(C.lba(), 16), 8192,
                             write=True), data=pat(C.name, 8192), header_digest=BAD_DIGEST))):
        s = C.session({"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
        send(s)
        C.expect_drop(s, "%s with a bad header digest" % what)
        C.expect_log(r"header digest error", s.local, what=what)
    C.expect_unchanged(0, 8192, "WRITE with a bad header digest")
    err = C.ctx.fresh_session_works()
    C.check(err is None, err)


@case
def data_digest_immediate(C):
    """DataDigest=CRC32C; a WRITE whose immediate data was damaged in flight (digest of the
    good data): Reject 0x02 with the command's header, no SCSI Response, nothing written;
    the command's CmdSN is not considered received (RFC 7143 7.3 / 7.8): the initiator
    retries with the same ITT and CmdSN and that succeeds."""
    s = C.session({"DataDigest": "CRC32C", "ImmediateData": "Yes", "InitialR2T": "Yes"})
    good = pat(C.name, 8192)
    bad = bytearray(good)
    bad[100] ^= 0xFF
    itt, sn = s.itt(), s.cmdsn
    b = bhs_scsi_cmd(itt, sn, s.expstatsn, cdb_write10(C.lba(), 16), 8192, write=True)
    frame = bytearray(s.frame(b, data=good))
    frame[48 + 100] ^= 0xFF  # damage after the digest was computed
    s.send_raw(bytes(frame))
    wire = bytes(frame[:48])
    pdus, closed = C.gather(s, quiet=0.8)
    C.check_reject(pdus, wire, 0x02, "WRITE with damaged immediate data")
    C.check(not [p for p in pdus if p.opcode == OP_SCSI_RSP],
            "a SCSI Response came for a command rejected for its data digest")
    if closed:
        C.check(False, "connection dropped after a data digest error")
        return
    C.expect_unchanged(0, 8192, "WRITE with damaged immediate data")
    C.expect_log(r"data digest error", s.local)
    C.expect_log(r"Reject reason 0x02", s.local)
    w = s.write10(C.lba(), good, itt=itt, cmdsn=sn)
    s.cmdsn = sn + 1
    C.observe(s.local, "retry: " + w.describe())
    if C.check(w.good, "retry with the same ITT and CmdSN: " + w.describe()):
        C.acked(0, good)
    C.expect_alive(s, "after the retry")


def digest_dataout_case(C, unsolicited):
    params = {"DataDigest": "CRC32C", "ImmediateData": "No",
              "InitialR2T": "No" if unsolicited else "Yes", "FirstBurstLength": 32768}
    s = C.session(params)
    data = pat(C.name, 32 * KIB)
    itt = s.itt()
    s.send_pdu(bhs_scsi_cmd(itt, s.take_cmdsn(), s.expstatsn, cdb_write10(C.lba(), 64),
                            32 * KIB, write=True, final=not unsolicited))
    if unsolicited:
        ttt = RSVD
    else:
        r2t = C.until(s, lambda p: p.opcode == OP_R2T and p.itt == itt)
        if not C.check(r2t is not None, "no R2T"):
            return
        ttt = r2t.ttt
    pdus = s.data_out_pdus(itt, ttt, data, 0, chunk=8 * KIB)
    s.send_pdu(*pdus[0][:1], data=pdus[0][1])
    frame = bytearray(s.frame(pdus[1][0], data=pdus[1][1]))
    frame[48 + 10] ^= 0x01
    s.send_raw(bytes(frame))
    bad_wire = bytes(frame[:48])
    legit = [s.send_pdu(b, data=d) for b, d in pdus[2:]]
    seen = []
    res = s.finish_write(itt, data, timeout=8, chunk=8 * KIB, sent=legit)
    late_pdus(C, s, res)
    C.observe(s.local, "task ended: " + res.describe())
    C.check_reject(res.rejects, bad_wire, 0x02, "Data-Out with a bad data digest")
    if res.good:
        # Only acceptable after a recovery R2T re-asked for the damaged PDU's data.
        C.check(len(res.r2ts) > (0 if unsolicited else 1),
                "GOOD status although a Data-Out was dropped for its digest and never resent")
        C.acked(0, data)
        return
    C.check(res.status == STATUS_CHECK_CONDITION,
            "expected CHECK CONDITION after the data digest error, got " + res.describe())
    sense = res.sense()
    C.check(sense is not None and sense[0] == 0x0B and sense[1:] == (0x47, 0x05),
            "sense %s, RFC 7143 7.8/11.4.7.2 asks for ABORTED COMMAND with 'protocol service "
            "CRC error' (0x0b/47/05)" % ("%x/%02x/%02x" % sense if sense else "none"))
    late = [r for r in res.rejects if bytes(r.data[:48]) in set(bytes(b) for b in legit)]
    C.check(not late, "after the digest error the target rejected %d later Data-Out PDU(s) "
            "of the same sequence (reason %s): RFC 7143 7.8 b: it MUST wait for all the data "
            "(the Data-Out with F=1) before the SCSI Response" % (
                len(late), ",".join(sorted(set("0x%02x" % r.reason for r in late)))))
    C.expect_unchanged(0, 32 * KIB, "write that hit a data digest error")
    C.expect_log(r"Reject reason 0x02", s.local)
    C.expect_alive(s, "after a data digest error")


@case
def data_digest_dataout_solicited(C):
    """DataDigest=CRC32C, R2T write of 32 KiB in four Data-Outs; the second is damaged:
    Reject 0x02 echoing it; the task ends, after the last Data-Out, with CHECK CONDITION
    ABORTED COMMAND / protocol service CRC error (47/05); nothing written."""
    digest_dataout_case(C, unsolicited=False)


@case
def data_digest_dataout_unsolicited(C):
    """The same with unsolicited Data-Outs (InitialR2T=No, FirstBurstLength 32 KiB)."""
    digest_dataout_case(C, unsolicited=True)


# ---- CmdSN window


@case
def cmdsn_outside_window(C):
    """Non-immediate commands with CmdSN above MaxCmdSN and below ExpCmdSN are ignored (RFC
    7143 3.2.2.1): no answer, nothing written, and the next in-window command is served."""
    s = C.session()
    write_ok(C, s, 0, pat(C.name + "0", 4096), "first write")
    exp, mx = s.exp_cmdsn, s.max_cmdsn
    C.observe(s.local, "window [%u, %u]" % (exp, mx))
    for what, sn in (("CmdSN MaxCmdSN+1", mx + 1), ("CmdSN ExpCmdSN+1000", exp + 1000),
                     ("CmdSN ExpCmdSN-1 (already used)", exp - 1),
                     ("CmdSN ExpCmdSN-2^31+1", (exp - 0x7FFFFFFF) & 0xFFFFFFFF)):
        itt = s.itt()
        s.send_pdu(bhs_scsi_cmd(itt, sn & 0xFFFFFFFF, s.expstatsn,
                                cdb_write10(C.lba(64 * KIB), 16), 8192, write=True),
                   data=pat(C.name + what, 8192))
        C.expect_silence(s, "WRITE with " + what)
        s.send_pdu(bhs_nop_out(s.itt(), sn & 0xFFFFFFFF, s.expstatsn))
        C.expect_silence(s, "NOP-Out with " + what, quiet=0.5)
        C.expect_log(r"CmdSN %u outside window" % (sn & 0xFFFFFFFF), s.local, what=what)
    C.expect_unchanged(64 * KIB, 8192, "writes outside the CmdSN window")
    r = s.read10(C.lba(), 8)
    C.check(r.good, "in-window READ after out-of-window commands: " + r.describe())
    write_ok(C, s, 128 * KIB, pat(C.name + "1", 4096), "in-window write")
    C.during()


@case
def cmdsn_reordered_in_window(C):
    """CmdSN N+1 before N (within the window): held, then both run in order (not bad input,
    the control for the window cases)."""
    s = C.session()
    sn = s.cmdsn
    d1, d2 = pat(C.name + "1", 4096), pat(C.name + "2", 4096)
    i2 = s.itt()
    s.send_pdu(bhs_scsi_cmd(i2, sn + 1, s.expstatsn, cdb_write10(C.lba(), 8), 4096, write=True),
               data=d2)
    C.expect_silence(s, "CmdSN N+1 before N", quiet=0.5)
    i1 = s.itt()
    s.send_pdu(bhs_scsi_cmd(i1, sn, s.expstatsn, cdb_write10(C.lba(), 8), 4096, write=True),
               data=d1)
    s.cmdsn = sn + 2
    got = {}
    for _ in range(2):
        p = C.until(s, lambda p: p.opcode == OP_SCSI_RSP)
        if p:
            got[p.itt] = p.status
    C.check(got.get(i1) == STATUS_GOOD and got.get(i2) == STATUS_GOOD,
            "reordered commands: %r" % got)
    if got.get(i1) == STATUS_GOOD and got.get(i2) == STATUS_GOOD:
        C.acked(0, d1)
        C.acked(0, d2)
    r = s.read10(C.lba(), 8)
    C.check(r.good and r.data == d2, "CmdSN N+1 (held) did not run after N")


@case
def cmdsn_gap_with_control_pdu(C):
    """A WRITE (CmdSN N) is rejected for a data digest error, leaving a CmdSN gap the
    initiator plugs by retrying it (RFC 7143 7.3, 7.8). Meanwhile it sent a non-immediate
    NOP-Out ping with CmdSN N+1. Non-immediate requests are delivered in CmdSN order (RFC
    7143 3.2.2.1), so the ping is answered after the retry; then a READ with CmdSN N+2 must
    be served (the target must have taken N+1 as received)."""
    s = C.session({"DataDigest": "CRC32C"})
    good = pat(C.name, 4096)
    itt, sn = s.itt(), s.cmdsn
    frame = bytearray(s.frame(bhs_scsi_cmd(itt, sn, s.expstatsn, cdb_write10(C.lba(), 8), 4096,
                                           write=True), data=good))
    frame[60] ^= 0x10
    s.send_raw(bytes(frame))
    pdus, closed = C.gather(s, quiet=0.6)
    if not C.check(any(p.opcode == OP_REJECT and p.reason == 0x02 for p in pdus),
                   "no Reject 0x02 for the damaged WRITE"):
        return
    C.expect_log(r"Reject reason 0x02 for SCSI-Command", s.local)
    C.during()
    nop_itt = s.itt()
    s.send_pdu(bhs_nop_out(nop_itt, sn + 1, s.expstatsn))
    pdus, closed = C.gather(s, quiet=0.6)
    if any(p.opcode == OP_NOP_IN and p.itt == nop_itt for p in pdus):
        C.note("the NOP-Out with CmdSN N+1 was answered before the gap at N was filled "
               "(RFC 7143 3.2.2.1: non-immediate requests are delivered in CmdSN order)")
    w = s.write10(C.lba(), good, itt=itt, cmdsn=sn)
    C.observe(s.local, "retry of CmdSN %u: %s" % (sn, w.describe()))
    if C.check(w.good, "retry of the damaged WRITE: " + w.describe()):
        C.acked(0, good)
    s.cmdsn = sn + 2
    r = s.read10(C.lba(), 8, timeout=3)
    C.observe(s.local, "READ CmdSN %u: %s" % (sn + 2, r.describe()))
    C.check(r.good, "READ with CmdSN N+2 after the gap was plugged was not served (%s): the "
            "NOP-Out with CmdSN N+1 was run out of order and its CmdSN never taken, so "
            "ExpCmdSN is stuck at N+1" % r.describe())


# ---- data segment length


@case
def data_segment_over_limit(C):
    """A data segment larger than the MaxRecvDataSegmentLength the target declared: the
    connection is dropped (NOP-Out and WRITE with immediate data); exactly at the limit
    is served."""
    s = C.session()
    lim = s.max_send_dsl
    C.observe(s.local, "target MaxRecvDataSegmentLength %u" % lim)
    p = s.nop_ping(timeout=5, data=pat("nop", lim))
    C.check(p is not None, "NOP-Out with exactly MaxRecvDataSegmentLength bytes not answered")
    s.send_pdu(bhs_nop_out(s.itt(), s.take_cmdsn(), s.expstatsn), data=pat("nop", lim + 4))
    C.expect_drop(s, "NOP-Out with %u data bytes" % (lim + 4))
    C.expect_log(r"data segment .*%u.* exceeds|exceeds .*%u" % (lim + 4, lim), s.local)
    s = C.session({"FirstBurstLength": 16777215, "MaxBurstLength": 16777215})
    lim = s.max_send_dsl
    s.send_pdu(bhs_scsi_cmd(s.itt(), s.take_cmdsn(), s.expstatsn,
                            cdb_write10(C.lba(), (lim + BS) // BS), lim + BS, write=True),
               data=pat(C.name, lim + BS))
    C.expect_drop(s, "WRITE with %u bytes of immediate data" % (lim + BS))
    C.expect_unchanged(0, REGION, "oversized immediate data")
    err = C.ctx.fresh_session_works()
    C.check(err is None, err)


# ---- Data-Out against R2Ts


@case
def dataout_unknown_ttt(C):
    """Data-Out whose TTT no R2T gave (no task at all, and for a live task), and whose TTT
    is right but ITT belongs to another task: Reject 0x09 Invalid PDU field; the live
    write completes with its own data only."""
    s = C.session(R2T_ONLY)
    data = pat(C.name, 32 * KIB)
    itt, r2t = start_write(C, s, 0, 32 * KIB)
    if not C.check(r2t is not None, "no R2T"):
        return
    other_itt, other_r2t = start_write(C, s, 64 * KIB, 32 * KIB)
    trials = (("no such task, TTT 0x00010001", 0x7777, 0x00010001),
              ("live task, TTT it was not given", itt, r2t.ttt ^ 0x00050000),
              ("live task, TTT+1", itt, (r2t.ttt + 1) & 0xFFFFFFFF),
              ("TTT of task A with ITT of task B", other_itt if other_r2t else 0x7778, r2t.ttt))
    for what, i, t in trials:
        wire = data_out(s, i, t, 0, pat(what, 8 * KIB), 0)
        pdus, closed = C.gather(s, quiet=0.5)
        C.check_reject(pdus, wire, 0x09, "Data-Out, " + what)
        if closed:
            return
    C.during()
    legit = s.send_data_out(itt, r2t.ttt, data, 0, chunk=8 * KIB)
    res = conclude_write(C, s, itt, data, legit, "write after foreign Data-Outs")
    if res.good:
        C.acked(0, data)
    C.expect_unchanged(0, 32 * KIB, "write after forged Data-Outs", data if res.good else None)
    if other_r2t:
        d2 = pat(C.name + "B", 32 * KIB)
        s.send_data_out(other_itt, other_r2t.ttt, d2, 0, chunk=8 * KIB)
        res = s.finish_write(other_itt, d2, timeout=8)
        if res.good:
            C.acked(64 * KIB, d2)
        C.expect_unchanged(64 * KIB, 32 * KIB, "task B", d2 if res.good else None)
    C.expect_log(r"Reject reason 0x09 for Data-Out", s.local)


@case
def dataout_foreign_connection_ttt(C):
    """The TTT and ITT of an R2T sent on session A, used on other sessions (one of them on
    A's reactor, where the data pointer table is shared): Reject 0x09 there, A's data
    untouched, A's write completes with A's data."""
    a = C.session(R2T_ONLY)
    data = pat(C.name + "A", 32 * KIB)
    itt, r2t = start_write(C, a, 0, 32 * KIB)
    if not C.check(r2t is not None, "no R2T on A"):
        return
    sessions = status_query(C.ctx.a.status, "sessions") or {"sessions": []}

    def reactor_of(sess):
        for ss in sessions.get("sessions", []):
            for cn in ss.get("connections", []):
                if cn.get("peer") == sess.local:
                    return cn.get("reactor")
        return None

    others = []
    same = False
    for _ in range(4):
        b = C.session(R2T_ONLY)
        sessions = status_query(C.ctx.a.status, "sessions") or {"sessions": []}
        ra, rb = reactor_of(a), reactor_of(b)
        others.append((b, rb))
        same |= ra is not None and ra == rb
        if same and len(others) >= 2:
            break
    C.observe("status", "A on reactor %s; others on %s" % (reactor_of(a), [r for _, r in others]))
    C.check(same, "could not get a second session on A's reactor (the interesting case)")
    for b, rb in others:
        wire = data_out(b, itt, r2t.ttt, 0, pat(C.name + "B", 8 * KIB), 0)
        pdus, closed = C.gather(b, quiet=0.5)
        C.check_reject(pdus, wire, 0x09, "A's TTT used on a session on reactor %s" % rb)
        C.expect_log(r"Reject reason 0x09 for Data-Out", b.local)
    C.during()
    legit = a.send_data_out(itt, r2t.ttt, data, 0, chunk=8 * KIB)
    res = conclude_write(C, a, itt, data, legit, "A's write")
    C.check(res.good, "A's write did not succeed after foreign Data-Outs: " + res.describe())
    if res.good:
        C.acked(0, data)
    C.expect_unchanged(0, 32 * KIB, "A's write", data if res.good else None)


@case
def dataout_finished_task_ttt(C):
    """A Data-Out with the ITT and TTT of a write that already completed: Reject 0x09,
    the completed data stays."""
    s = C.session(R2T_ONLY)
    data = pat(C.name, 32 * KIB)
    w = s.write10(C.lba(), data)
    C.observe(s.local, w.describe())
    if not C.check(w.good and w.r2ts, "first write: " + w.describe()):
        return
    C.acked(0, data)
    r2t = w.r2ts[0]
    wire = data_out(s, r2t.itt, r2t.ttt, 0, pat(C.name + "late", 8 * KIB), 0)
    pdus, closed = C.gather(s, quiet=0.6)
    C.check_reject(pdus, wire, 0x09, "Data-Out with a finished task's TTT")
    wire = data_out(s, r2t.itt, RSVD, 0, pat(C.name + "late2", 8 * KIB), 0, final=True)
    pdus, closed = C.gather(s, quiet=0.6)
    C.check_reject(pdus, wire, 0x09, "unsolicited Data-Out with a finished task's ITT")
    C.expect_unchanged(0, 32 * KIB, "completed write", data)
    C.expect_alive(s, "after stale Data-Outs")
    C.expect_log(r"Reject reason 0x09 for Data-Out", s.local)


def r2t_violation(C, what, send_bad, reasons=(0x04, 0x09), first_ok=0):
    """A 32 KiB (one cache line) R2T write; first_ok correct 8 KiB Data-Outs, then what
    send_bad(s, itt, ttt, data) sends; then the rest of the data the R2T asked for (a
    conformant target still expects it); the task ends with CHECK CONDITION (or GOOD with
    the right data); the bad bytes never reach the LUN."""
    s = C.session(R2T_ONLY)
    data = pat(C.name, 32 * KIB)
    itt, r2t = start_write(C, s, 0, 32 * KIB)
    if not C.check(r2t is not None and r2t.ddtl == 32 * KIB,
                   "expected one R2T for 32 KiB, got %s" % (r2t.describe() if r2t else None)):
        return
    pdus = s.data_out_pdus(itt, r2t.ttt, data, 0, chunk=8 * KIB)
    for b, d in pdus[:first_ok]:
        s.send_pdu(b, data=d)
    bad = send_bad(s, itt, r2t.ttt, data)
    C.during()
    legit = [s.send_pdu(b, data=d) for b, d in pdus[first_ok:]] if bad[1] else []
    res = conclude_write(C, s, itt, data, legit, what)
    C.check_reject(res.rejects, bad[0], reasons, what)
    if res.good:
        C.acked(0, data)
    C.expect_unchanged(0, 32 * KIB, what, data if res.good else None)
    C.expect_alive(s, "after " + what)
    C.expect_log(r"Reject reason 0x0[49] for Data-Out", s.local)


@case
def dataout_offset_outside_r2t(C):
    """BufferOffset beyond the R2T's range (R2T for [0, 32K), Data-Out at 32K)."""
    r2t_violation(C, "Data-Out at BufferOffset 32768 of a [0,32768) R2T",
                  lambda s, i, t, d: (data_out(s, i, t, 32 * KIB, pat("x", 8 * KIB), 0), True))


@case
def dataout_length_beyond_r2t(C):
    """More data than the R2T asked for: one Data-Out of 32 KiB + 512 from offset 0."""
    r2t_violation(C, "Data-Out of 33280 bytes for a 32768-byte R2T",
                  lambda s, i, t, d: (data_out(s, i, t, 0, pat("x", 32 * KIB + BS), 0,
                                               final=True), True))


@case
def dataout_datasn_duplicate(C):
    """DataSN 0 twice (the second at the next offset)."""
    r2t_violation(C, "second Data-Out with DataSN 0",
                  lambda s, i, t, d: (data_out(s, i, t, 8 * KIB, pat("x", 8 * KIB), 0), True),
                  first_ok=1)


@case
def dataout_overlap(C):
    """Data-Out overlapping what was already received (DataSN 1 at offset 4096)."""
    r2t_violation(C, "overlapping Data-Out (DataSN 1 at offset 4096)",
                  lambda s, i, t, d: (data_out(s, i, t, 4 * KIB, pat("x", 8 * KIB), 1), True),
                  first_ok=1)


@case
def dataout_out_of_order(C):
    """DataSN 1 (offset 8192) before DataSN 0 with DataPDUInOrder=Yes."""
    r2t_violation(C, "Data-Out DataSN 1 before DataSN 0",
                  lambda s, i, t, d: (data_out(s, i, t, 8 * KIB, pat("x", 4 * KIB), 1), True))


@case
def dataout_f_bit_early(C):
    """F=1 on the first 8 KiB of a 32 KiB R2T: the sequence ends short; nothing more is
    expected, the task ends with CHECK CONDITION."""
    r2t_violation(C, "Data-Out with F=1 after 8 KiB of a 32 KiB R2T",
                  lambda s, i, t, d: (data_out(s, i, t, 0, d[:8 * KIB], 0, final=True), False))


@case
def dataout_beyond_edtl(C):
    """More data than Expected Data Transfer Length: WRITE(10) of 64 blocks with EDTL 16 KiB
    (the target writes 16 KiB and reports an overflow); after the R2T's 16 KiB, one more
    Data-Out at offset 16 KiB with the same TTT: Reject 0x09 (its R2T is complete), and
    bytes 16K..24K never change. Then unsolicited data beyond EDTL (InitialR2T=No):
    Reject, CHECK CONDITION, nothing written."""
    s = C.session(R2T_ONLY)
    data = pat(C.name, 16 * KIB)
    itt, r2t = start_write(C, s, 0, 16 * KIB, cdb_blocks=64, edtl=16 * KIB)
    if not C.check(r2t is not None, "no R2T"):
        return
    C.check(r2t.bufoff + r2t.ddtl <= 16 * KIB, "R2T beyond EDTL: " + r2t.describe())
    s.send_data_out(itt, r2t.ttt, data, 0, chunk=8 * KIB)
    res = s.finish_write(itt, data, timeout=8)
    C.observe(s.local, "EDTL 16K write: " + res.describe())
    if res.good:
        C.acked(0, data)
        C.check(res.response.flags & 0x04, "EDTL below the CDB's length: the SCSI Response "
                "should carry the overflow bit (RFC 7143 11.4.5.1)")
    wire = data_out(s, itt, r2t.ttt, 16 * KIB, pat("x", 8 * KIB), 2, final=True)
    pdus, closed = C.gather(s, quiet=0.6)
    C.check_reject(pdus, wire, 0x09, "Data-Out beyond EDTL with a finished R2T's TTT")
    C.expect_unchanged(0, 32 * KIB, "data beyond EDTL", data + bytes(16 * KIB)
                       if res.good else None)
    # unsolicited data beyond EDTL
    s2 = C.session(IMM_UNSOL)
    itt = s2.itt()
    s2.send_pdu(bhs_scsi_cmd(itt, s2.take_cmdsn(), s2.expstatsn, cdb_write10(C.lba(64 * KIB), 8),
                             4096, write=True, final=False))
    bad = data_out(s2, itt, RSVD, 0, pat("y", 8 * KIB), 0, final=True)
    res = s2.finish_write(itt, bytes(4096), timeout=8)
    late_pdus(C, s2, res)
    C.observe(s2.local, "EDTL 4K, unsolicited 8K: " + res.describe())
    C.check_reject(res.rejects, bad, (0x04, 0x09), "unsolicited Data-Out beyond EDTL")
    C.check(res.status == STATUS_CHECK_CONDITION, "unsolicited data beyond EDTL: expected "
            "CHECK CONDITION, got " + res.describe())
    C.expect_unchanged(64 * KIB, 8 * KIB, "unsolicited data beyond EDTL")
    C.expect_log(r"Reject reason 0x0[49] for Data-Out", s2.local)


@case
def unsolicited_dataout_initial_r2t(C):
    """InitialR2T=Yes: a WRITE with 8 KiB immediate data (F=1), then an unsolicited Data-Out
    (TTT 0xffffffff) for the next 8 KiB: Reject; the task ends with CHECK CONDITION (RFC
    7143 11.4.7.2: 'unexpected unsolicited data', 0b/0c/0c) or GOOD with the right data
    once the R2T is answered; the unsolicited bytes never land."""
    s = C.session({"ImmediateData": "Yes", "InitialR2T": "Yes", "MaxOutstandingR2T": 1})
    data = pat(C.name, 16 * KIB)
    itt = s.itt()
    s.send_pdu(bhs_scsi_cmd(itt, s.take_cmdsn(), s.expstatsn, cdb_write10(C.lba(), 32),
                            16 * KIB, write=True, final=True), data=data[:8 * KIB])
    bad = data_out(s, itt, RSVD, 8 * KIB, pat("x", 8 * KIB), 0, final=True)
    C.during()
    legit = []
    res = s.finish_write(itt, data, timeout=8, chunk=8 * KIB, sent=legit)
    late_pdus(C, s, res)
    C.observe(s.local, res.describe() + "; R2Ts: " + ", ".join(p.describe() for p in res.r2ts))
    C.check_reject(res.rejects, bad, (0x04, 0x09), "unsolicited Data-Out with InitialR2T=Yes")
    if res.good:
        C.acked(0, data)
    else:
        C.check(res.status == STATUS_CHECK_CONDITION, "expected CHECK CONDITION or GOOD: " +
                res.describe())
        sense = res.sense()
        if sense != (0x0B, 0x0C, 0x0C):
            C.note("sense %s (RFC 7143 11.4.7.2 'unexpected unsolicited data' is 0b/0c/0c)" % (
                "%x/%02x/%02x" % sense if sense else "none"))
        late = [r for r in res.rejects if bytes(r.data[:48]) in set(bytes(b) for b in legit)]
        C.check(not late, "the target rejected %d Data-Out PDU(s) answering its own R2T after "
                "ending the task (RFC 7143 11.17.1: MUST wait for the last expected "
                "Data-Out)" % len(late))
    C.expect_unchanged(0, 16 * KIB, "unsolicited Data-Out with InitialR2T=Yes",
                       data if res.good else None)
    C.expect_log(r"Reject reason 0x0[49] for Data-Out", s.local)


@case
def immediate_data_when_no(C):
    """ImmediateData=No: a WRITE carrying 8 KiB of immediate data: Reject (0x04) echoing the
    command, nothing written; the command's CmdSN is not considered received (RFC 7143
    7.3), so the command resent without data, same ITT and CmdSN, succeeds. Also immediate
    data on a command without the W bit, and immediate data beyond EDTL."""
    s_no = C.session(R2T_ONLY)
    s_yes = C.session({"ImmediateData": "Yes", "InitialR2T": "Yes"})
    data = pat(C.name, 8 * KIB)
    current = None  # what the region holds (None: zeros)
    for s, what, flags_w, edtl in (
            (s_no, "immediate data with ImmediateData=No", True, 8 * KIB),
            (s_yes, "immediate data on a command without W", False, 8 * KIB),
            (s_yes, "immediate data beyond EDTL", True, 4 * KIB)):
        payload = data
        itt, sn = s.itt(), s.cmdsn
        b = bhs_scsi_cmd(itt, sn, s.expstatsn, cdb_write10(C.lba(), 16), edtl, write=flags_w)
        wire = s.send_pdu(b, data=payload)
        pdus, closed = C.gather(s, quiet=0.6)
        rej = C.check_reject(pdus, wire, (0x04, 0x09), what)
        rsp = [p for p in pdus if p.opcode == OP_SCSI_RSP]
        C.check(not rsp, "%s: SCSI Response besides the Reject" % what)
        if closed:
            return
        C.expect_unchanged(0, 8 * KIB, what, current)
        if rej:
            # The gap is plugged by the same command done right.
            w = s.write10(C.lba(), data, itt=itt, cmdsn=sn, immediate=False)
            s.cmdsn = sn + 1
            C.observe(s.local, "resent without immediate data: " + w.describe())
            if C.check(w.good, "%s: the command resent with the same CmdSN: %s" % (
                    what, w.describe())):
                C.acked(0, data)
                current = data
            data = pat(C.name + what, 8 * KIB)
        C.expect_log(r"Reject reason 0x0[49] for SCSI-Command", s.local, what=what)


@case
def dataout_to_read_task(C):
    """Unsolicited Data-Out (TTT 0xffffffff) with the ITT of a 4 MiB READ in progress: Reject;
    the READ either completes with the right data or ends with CHECK CONDITION; no Data-In
    after the status."""
    s = C.session(IMM_UNSOL)
    ref = pat(C.name, 64 * KIB)
    write_ok(C, s, 0, ref, "reference write")
    itt = s.itt()
    s.send_pdu(bhs_scsi_cmd(itt, s.take_cmdsn(), s.expstatsn, cdb_read10(C.lba(), 8192),
                            4 * MIB, read=True))
    bad = data_out(s, itt, RSVD, 0, pat("x", 8 * KIB), 0, final=True)
    seen = []
    end = time.monotonic() + 10
    status = None
    buf = bytearray(4 * MIB)
    after_status = []
    try:
        while time.monotonic() < end:
            p = s.recv_pdu(timeout=1.0 if status is None else 0.5)
            if p is None:
                if status is not None:
                    break
                continue
            seen.append(p)
            if status is not None and p.opcode == OP_DATA_IN and p.itt == itt:
                after_status.append(p)
            if p.opcode == OP_DATA_IN and p.itt == itt:
                buf[p.bufoff:p.bufoff + len(p.data)] = p.data
                if p.flags & 1:
                    status = p
            elif p.opcode == OP_SCSI_RSP and p.itt == itt:
                status = p
    except Closed:
        C.observe(s.local, "closed")
    for p in seen:
        if p.opcode != OP_DATA_IN:
            C.observe(s.local, p.describe())
    C.observe(s.local, "%d Data-In PDUs" % len([p for p in seen if p.opcode == OP_DATA_IN]))
    if any(p.opcode == OP_REJECT for p in seen):
        C.check_reject(seen, bad, (0x04, 0x09), "Data-Out for a READ task")
    else:
        C.note("the Data-Out for the READ task was discarded without a Reject")
    C.check(status is not None, "READ never ended")
    C.check(not after_status, "%d Data-In PDUs after the READ's status" % len(after_status))
    if status is not None and status.status == STATUS_GOOD:
        C.check(bytes(buf[:64 * KIB]) == ref, "READ data wrong after a stray Data-Out")
    elif status is not None:
        C.check(status.status == STATUS_CHECK_CONDITION, "READ ended with " + status.describe())
    C.expect_alive(s, "after a Data-Out for a READ")
    if any(p.opcode == OP_REJECT for p in seen):
        C.expect_log(r"Reject reason 0x0[49] for Data-Out", s.local)


@case
def abort_then_stale_dataout(C):
    """ABORT TASK on a write with an R2T outstanding (TMF Response 0), then Data-Out with the
    aborted task's TTT: discarded or Rejected, never written; the session goes on."""
    s = C.session(R2T_ONLY)
    itt, r2t = start_write(C, s, 0, 32 * KIB)
    if not C.check(r2t is not None, "no R2T"):
        return
    tmf_itt = s.itt()
    s.send_pdu(bhs_tmf(tmf_itt, s.cmdsn, s.expstatsn, 1, ref_itt=itt, ref_cmdsn=s.cmdsn - 1))
    r = C.until(s, lambda p: p.opcode == OP_TMF_RSP and p.itt == tmf_itt)
    C.check(r is not None and r.reason == 0, "ABORT TASK: expected TMF Response 0 (Function "
            "complete), got %s" % (r.describe() if r else "nothing"))
    data_out(s, itt, r2t.ttt, 0, pat("x", 32 * KIB), 0, final=True)
    pdus, closed = C.gather(s, quiet=0.6)
    C.check(not [p for p in pdus if p.opcode == OP_SCSI_RSP and p.itt == itt],
            "a SCSI Response for an aborted task")
    C.check(not closed, "connection dropped")
    C.expect_unchanged(0, 32 * KIB, "aborted write")
    C.expect_alive(s, "after ABORT TASK")
    C.expect_log(r"task management function 1 .*response 0", s.local)
    if any(p.opcode == OP_REJECT for p in pdus):
        C.expect_log(r"Reject reason 0x0[49] for Data-Out", s.local)


@case
def failed_write_second_segment(C):
    """A 64 KiB write over two cache lines; the first R2T (first line) is answered in full,
    the second gets a Data-Out with a bad DataSN: the task ends with CHECK CONDITION.
    Checks whether the first line's 32 KiB reached the LUN although the command failed
    (requirement (d): only acknowledged writes change the LUN; SBC allows a failed WRITE to
    leave its range indeterminate, so this is a design question rather than an RFC one)."""
    s = C.session(R2T_ONLY)
    data = pat(C.name, 64 * KIB)
    itt, r2t = start_write(C, s, 0, 64 * KIB)
    if not C.check(r2t is not None, "no R2T"):
        return
    s.send_data_out(itt, r2t.ttt, data[r2t.bufoff:r2t.bufoff + r2t.ddtl], r2t.bufoff,
                    chunk=8 * KIB)
    r2 = C.until(s, lambda p: p.opcode == OP_R2T and p.itt == itt)
    if not C.check(r2 is not None, "no second R2T"):
        return
    C.observe(s.local, "R2Ts: %s | %s" % (r2t.describe(), r2.describe()))
    bad = data_out(s, itt, r2.ttt, r2.bufoff, pat("x", 8 * KIB), 7)
    pdus = s.data_out_pdus(itt, r2.ttt, data[r2.bufoff:r2.bufoff + r2.ddtl], r2.bufoff,
                           chunk=8 * KIB)
    legit = [s.send_pdu(b, data=d) for b, d in pdus]
    res = conclude_write(C, s, itt, data, legit, "bad DataSN in the second R2T")
    C.check_reject(res.rejects, bad, (0x04, 0x09), "bad DataSN in the second R2T")
    if res.good:
        C.acked(0, data)
    time.sleep(0.3)
    C.expect_unchanged(0, 64 * KIB, "64 KiB write that ended in CHECK CONDITION",
                       data if res.good else None)
    C.expect_log(r"Reject reason 0x0[49] for Data-Out", s.local)


# ---- SNACK, Text


@case
def snack_at_erl0(C):
    """SNACK (Data/R2T, Status, DataACK) at ErrorRecoveryLevel 0: Reject (0x04 Protocol
    error; 0x03 SNACK reject tolerated), the session goes on."""
    s = C.session()
    r = s.read10(C.lba(), 8)
    C.check(r.good, "READ before SNACK: " + r.describe())
    for what, typ, itt, ttt in (("Data SNACK", 0, r.response.itt if r.response else 1, RSVD),
                                ("Status SNACK", 1, RSVD, RSVD),
                                ("DataACK SNACK", 2, RSVD, 0x1234),
                                ("R-Data SNACK", 3, 0x99, 0x5678)):
        wire = s.send_pdu(bhs_snack(itt, s.expstatsn, typ, ttt=ttt, begrun=0, runlength=1))
        pdus, closed = C.gather(s, quiet=0.5)
        C.check_reject(pdus, wire, (0x04, 0x03), what)
        if closed:
            C.check(False, "%s: connection dropped" % what)
            return
    C.expect_alive(s, "after SNACKs")
    C.expect_log(r"Reject reason 0x0[34] for SNACK", s.local)


@case
def text_malformed(C):
    """Text Requests whose data is not key=value text (no '=', no NUL, binary junk), non-
    immediate: answered (a Reject 0x04/0x09 echoing the header, or a Text Response); when
    Rejected, the CmdSN is not considered received (RFC 7143 7.3) and a ping reusing it is
    answered. Also a Text continuation with a TTT the target never gave: Reject 0x09."""
    s = C.session()
    for what, payload in (("no '='", b"SendTargets\0"), ("no NUL", b"SendTargets=All"),
                          ("binary", bytes(range(1, 200)))):
        sn = s.cmdsn
        itt = s.itt()
        wire = s.send_pdu(bhs_text(itt, sn, s.expstatsn), data=payload)
        pdus, closed = C.gather(s, quiet=0.6)
        if closed:
            C.check(False, "Text %s: connection dropped" % what)
            return
        text = [p for p in pdus if p.opcode == OP_TEXT_RSP and p.itt == itt]
        if text:
            s.cmdsn = sn + 1
            continue
        C.check_reject(pdus, wire, (0x04, 0x09), "Text Request, " + what)
        C.expect_log(r"Reject reason 0x0[49] for Text-Request", s.local)
        plug_cmdsn(C, s, sn, "Text Request (%s)" % what)
    itt, sn = s.itt(), s.cmdsn
    wire = s.send_pdu(bhs_text(itt, sn, s.expstatsn, ttt=0x4321), data=b"")
    pdus, closed = C.gather(s, quiet=0.6)
    C.check_reject(pdus, wire, 0x09, "Text continuation with an unknown TTT")
    plug_cmdsn(C, s, sn, "Text continuation with an unknown TTT")
    C.expect_alive(s, "after malformed Text")


@case
def scsi_cmd_with_ahs(C):
    """READ(10) carrying AHS the command does not need: a Bidirectional Read Expected Data
    Transfer Length AHS (type 2) on a read-only command, an AHS of unknown type 0x3e, and
    an AHS whose AHSLength claims more bytes than TotalAHSLength holds. Each is either
    served normally (the AHS skipped) or Rejected (0x04/0x09); the stream stays in step."""
    s = C.session()
    ref = pat(C.name, 4096)
    write_ok(C, s, 0, ref, "reference write")
    for what, ahs in (("bidirectional-length AHS on a read", bytes([0, 5, 2, 0]) +
                       (4096).to_bytes(4, "big")),
                      ("AHS type 0x3e", bytes([0, 9, 0x3E, 0]) + pat("a", 8)),
                      ("AHSLength 200 in an 8-byte AHS", bytes([0, 200, 0x3E, 0]) + bytes(4))):
        itt = s.itt()
        sn = s.cmdsn
        wire = s.send_pdu(bhs_scsi_cmd(itt, sn, s.expstatsn, cdb_read10(C.lba(), 8), 4096,
                                       read=True), ahs=ahs)
        r = s.collect_read(itt, 4096, timeout=3)
        late_pdus(C, s, r, quiet=0.3)
        C.observe(s.local, "%s: %s" % (what, r.describe()))
        if r.rejects and not r.response:
            C.check_reject(r.rejects, wire, (0x04, 0x09), what)
            C.expect_log(r"Reject reason 0x0[49] for SCSI-Command", s.local, what=what)
        else:
            s.cmdsn = sn + 1
            C.check(r.good and r.data == ref, "%s: %s%s" % (what, r.describe(), "" if (
                not r.good or r.data == ref) else " (wrong data)"))
        if r.closed:
            C.check(False, what + ": connection dropped")
            return
    C.expect_alive(s, "after commands with AHS")


@case
def reinstate_mid_transfer(C):
    """Session A has a write half sent (R2T outstanding, 16 of 32 KiB received) when the
    same initiator logs in again with the same ISID: A is closed (session reinstatement,
    RFC 7143 6.3.5), its write is not applied, its lines and DPT entry come back, and the
    new session works."""
    isid = C.ctx.next_isid()
    a = C.ctx.new_session(R2T_ONLY, isid=isid)
    C.sessions.append(a)
    itt, r2t = start_write(C, a, 0, 32 * KIB)
    if not C.check(r2t is not None, "no R2T on A"):
        return
    a.send_data_out(itt, r2t.ttt, pat(C.name + "A", 16 * KIB), 0, final=False, chunk=8 * KIB)
    time.sleep(0.2)
    try:
        b = C.ctx.new_session(R2T_ONLY, isid=isid)
    except (Closed, ProtocolFailure, OSError) as e:
        C.check(False, "login reinstating the session failed: %s" % e)
        return
    C.sessions.append(b)
    C.expect_drop(a, "the reinstated session's old connection")
    C.expect_log(r"reinstated", None)
    C.during()
    write_ok(C, b, 64 * KIB, pat(C.name + "B", 32 * KIB), "write on the new session")
    C.expect_unchanged(0, 32 * KIB, "half-sent write of the reinstated session")
    C.expect_log(r": closed", a.local, what="the old connection being freed")


# ---- truncated PDUs, abrupt closes


def conns_settle(C, base_active, what, timeout=10.0):
    """connections_active back to base_active, no DPT entry or line held by I/O, nobody
    waiting for lines."""
    end = time.monotonic() + timeout
    st = pool = None
    while time.monotonic() < end:
        st, pool = C.ctx.stats(), C.ctx.pool()
        if st and pool:
            busy = pool["lines_total"] - pool["lines_free"] - pool["lines_clean"] - \
                pool["lines_dirty"]
            if (st["connections_active"] <= base_active and busy == 0 and
                    pool["commands_waiting_for_lines"] == 0 and
                    pool["dpt_entries_in_use"] <= C.ctx.baseline_dpt):
                C.observe("status", "%s: connections_active %d, lines in I/O 0, DPT in use %d" % (
                    what, st["connections_active"], pool["dpt_entries_in_use"]))
                return
        time.sleep(0.2)
    if not st or not pool:
        C.check(False, "%s: status socket did not answer" % what)
        return
    busy = pool["lines_total"] - pool["lines_free"] - pool["lines_clean"] - pool["lines_dirty"]
    C.check(False, "%s: resources not released after %.0f s: connections_active %d (base %d), "
            "lines held by I/O %d, DPT entries in use %d (base %d), commands waiting %d" % (
                what, timeout, st["connections_active"], base_active, busy,
                pool["dpt_entries_in_use"], C.ctx.baseline_dpt,
                pool["commands_waiting_for_lines"]))


@case
def truncated_pdus(C):
    """PDUs cut short, then the connection closed (FIN or RST): 20 bytes of a BHS; a BHS
    promising AHS, 8 bytes of it; a WRITE with 1 KiB of 8 KiB immediate data; a Data-Out
    with 3 KiB of 8 KiB for an R2T; a login with half its text. Nothing is written, the
    connections and their lines and DPT entries are released, and a half-sent header left
    open does not stall anyone else."""
    base = C.ctx.stats()["connections_active"]
    hdr = bhs_nop_out(1, 1, 0)
    peers = []
    for reset in (False, True):
        how = "RST" if reset else "FIN"
        s = C.session()
        s.send_raw(bytes(s.frame(bhs_nop_out(s.itt(), s.cmdsn, s.expstatsn)))[:20])
        s.close(reset=reset)
        peers.append((s.local, "20 bytes of a BHS, " + how))
        s = C.session()
        b = bytearray(hdr)
        b[4] = 8
        s.send_raw(bytes(b) + b"\0" * 8)
        s.close(reset=reset)
        peers.append((s.local, "8 of 32 AHS bytes, " + how))
        s = C.session()
        full = s.frame(bhs_scsi_cmd(s.itt(), s.cmdsn, s.expstatsn, cdb_write10(C.lba(), 16),
                                    8 * KIB, write=True), data=pat(C.name, 8 * KIB))
        s.send_raw(full[:48 + 1024])
        s.close(reset=reset)
        peers.append((s.local, "WRITE with 1 of 8 KiB immediate data, " + how))
        s = C.session(R2T_ONLY)
        itt, r2t = start_write(C, s, 32 * KIB, 32 * KIB)
        if r2t is not None:
            full = s.frame(bhs_data_out(itt, r2t.ttt, s.expstatsn, 0, 0),
                           data=pat(C.name + "d", 8 * KIB))
            s.send_raw(full[:48 + 3 * KIB])
        s.close(reset=reset)
        peers.append((s.local, "Data-Out with 3 of 8 KiB, R2T outstanding, " + how))
        s = C.raw()
        full = s.frame(bhs_login(C.ctx.next_isid(), 0, 1, 0, 1, 3), data=make_text(ident(C)))
        s.send_raw(full[:len(full) - 20])
        s.close(reset=reset)
        peers.append((s.local, "Login Request short of 20 bytes, " + how))
    # A half header left hanging: others are served meanwhile.
    s = C.session()
    s.send_raw(bytes(24))
    t0 = time.monotonic()
    C.during()
    C.check(time.monotonic() - t0 < 5, "healthy I/O took %.1f s while a connection held half "
            "a header" % (time.monotonic() - t0))
    time.sleep(1.0)
    s.close()
    peers.append((s.local, "24 bytes of a BHS left open 1 s, then FIN"))
    conns_settle(C, base, "after truncated PDUs")
    C.expect_unchanged(0, 64 * KIB, "truncated writes")
    for peer, what in peers:
        C.expect_log(r": closed", peer, what="the connection being freed (%s)" % what)


@case
def connection_release_after_read(C):
    """A session that did one READ(10) of one block logs out (and another closes without
    logging out): its connection and session must go (connections_active back to where it
    was, the session no longer listed). Control: the same with a WRITE."""
    base = C.ctx.stats()["connections_active"]
    for what in ("WRITE then logout", "READ then logout", "READ then close"):
        s = C.session()
        peer = s.local
        if what.startswith("WRITE"):
            write_ok(C, s, 0, pat(C.name, 4096), what)
        else:
            r = s.read10(C.lba(), 1)
            C.check(r.good, what + ": " + r.describe())
        if what.endswith("logout"):
            lo = s.logout(timeout=3)
            C.check(lo is not None, what + ": no Logout Response")
        else:
            s.close()
        end = time.monotonic() + 5
        listed = True
        while time.monotonic() < end:
            ss = status_query(C.ctx.a.status, "sessions") or {"sessions": []}
            listed = [sx for sx in ss["sessions"] for cn in sx.get("connections", [])
                      if cn.get("peer") == peer]
            if not listed:
                break
            time.sleep(0.2)
        C.observe("status", "%s: %s" % (what, "session gone" if not listed else
                                        "still listed: %s" % json.dumps(listed)))
        C.check(not listed, "%s: the session is still listed 5 s later (%s): the connection "
                "and session were never freed" % (what, json.dumps(listed)))
        C.expect_log(r": closed", peer, what=what + ": the connection being freed")
    st = C.ctx.stats()
    C.observe("status", "connections_active %d (base %d)" % (st["connections_active"], base))
    C.check(st["connections_active"] <= base, "connections_active %d after 3 connections came "
            "and went (was %d)" % (st["connections_active"], base))


@case
def churn_abrupt_closes(C):
    """50 connections log in, start a transfer and vanish mid-way (RST or FIN alternately):
    R2T writes cut inside the first cache line, immediate+unsolicited writes cut short,
    4 MiB READs never read. The daemon stays up, releases everything, nothing is
    written."""
    base = C.ctx.stats()["connections_active"]
    t0 = time.monotonic()
    peers = []
    for i in range(50):
        if time.monotonic() - t0 > 60:
            C.check(False, "churn took over 60 s, stopped at %d" % i)
            break
        reset = i % 2 == 0
        kind = i % 3
        off = CHURN_BASE + i * 64 * KIB
        s = None
        try:
            if kind == 0:
                s = C.ctx.new_session(R2T_ONLY)
                itt = s.itt()
                s.send_pdu(bhs_scsi_cmd(itt, s.take_cmdsn(), s.expstatsn,
                                        cdb_write10(off // BS, 128), 64 * KIB, write=True))
                r2t = s.recv_pdu(timeout=3)
                if r2t is not None and r2t.opcode == OP_R2T:
                    s.send_data_out(itt, r2t.ttt, pat("churn%d" % i, 16 * KIB), r2t.bufoff,
                                    final=False, chunk=8 * KIB)
            elif kind == 1:
                s = C.ctx.new_session(IMM_UNSOL)
                full = s.frame(bhs_scsi_cmd(s.itt(), s.take_cmdsn(), s.expstatsn,
                                            cdb_write10(off // BS, 128), 64 * KIB, write=True,
                                            final=False), data=pat("churn%d" % i, 16 * KIB))
                s.send_raw(full)
                s.send_raw(s.frame(bhs_data_out(s.next_itt, RSVD, s.expstatsn, 0, 16 * KIB,
                                                final=False), data=pat("c%d" % i, 8 * KIB)))
            else:
                s = C.ctx.new_session()
                s.send_pdu(bhs_scsi_cmd(s.itt(), s.take_cmdsn(), s.expstatsn,
                                        cdb_read10(CASE_BASE // BS, 8192), 4 * MIB, read=True))
                time.sleep(0.01)
            s.close(reset=reset)
            peers.append(s.local)
        except (Closed, ProtocolFailure, OSError) as e:
            C.check(False, "churn connection %d: %s" % (i, e))
            if s is not None:
                s.close()
        if i % 10 == 9:
            C.during()
    C.observe("churn", "50 connections in %.1f s" % (time.monotonic() - t0))
    conns_settle(C, base, "after 50 abrupt closes", timeout=15)
    text = C.ctx.log_text(C.log_off)
    unfreed = [p for p in peers if not re.search(re.escape(p) + r": closed", text)]
    C.check(not unfreed, "%d of %d churned connections never logged 'closed' (not freed): %s" % (
        len(unfreed), len(peers), ", ".join(unfreed[:8])))
    C.observe("log", "%d of %d churned connections logged 'closed'" % (
        len(peers) - len(unfreed), len(peers)))
    # Nothing of the churn may have reached the LUN (no line was ever complete).
    h = C.ctx.healthy
    r = h.read10(CHURN_BASE // BS, 50 * 64 * KIB // BS, timeout=20)
    if C.check(r.good, "reading the churn area: " + r.describe()):
        C.check(r.data == bytes(len(r.data)), "writes of abruptly closed connections reached "
                "the LUN (first at LUN offset %d)" % (CHURN_BASE + next(
                    (i for i, x in enumerate(r.data) if x), 0)))
    err = C.ctx.fresh_session_works()
    C.check(err is None, err)


# ---------------------------------------------------------------- runner


def resources_settle(ctx, timeout=3.0):
    """Error text when lines are still held by I/O, DPT entries in use or commands waiting
    for lines after a case (its connections closed, the healthy session idle); else None."""
    end = time.monotonic() + timeout
    while True:
        p = ctx.pool()
        if p is None:
            return "status socket: no answer to query pool"
        busy = p["lines_total"] - p["lines_free"] - p["lines_clean"] - p["lines_dirty"]
        dpt = p["dpt_entries_in_use"] - ctx.baseline_dpt
        if busy <= ctx.baseline_busy and dpt <= 0 and p["commands_waiting_for_lines"] == 0:
            return None
        if time.monotonic() >= end:
            ctx.baseline_busy = max(ctx.baseline_busy, busy)  # report each leak once
            return ("resources still held %.0f s after the case: %d cache lines held by I/O "
                    "(neither free, clean nor dirty), %d DPT entries, %d commands waiting "
                    "for lines" % (timeout, busy, p["dpt_entries_in_use"],
                                   p["commands_waiting_for_lines"]))
        time.sleep(0.1)


def on_alarm(signum, frame):
    raise CaseTimeout("case took longer than %d s" % CASE_TIMEOUT)


def run(a):
    ctx = Ctx(a)
    signal.signal(signal.SIGALRM, on_alarm)
    try:
        ctx.healthy = ctx.new_session(HEALTHY_PARAMS, initiator=a.initiator2)
    except (Closed, ProtocolFailure, OSError) as e:
        print("FATAL: the healthy session cannot log in: %s" % e)
        print("RESULT passed=0 failed=1")
        return 1
    err = ctx.healthy_io("start")
    if err:
        print("FATAL: " + err)
        print("RESULT passed=0 failed=1")
        return 1
    pool = ctx.pool() or {}
    ctx.baseline_dpt = pool.get("dpt_entries_in_use", 0)
    ctx.baseline_busy = 0
    only = set(a.only.split(",")) if a.only else None
    passed = failed = 0
    for fn in CASES:
        name = fn.__name__
        if only and name not in only:
            continue
        C = Case(ctx, name)
        t0 = time.monotonic()
        signal.alarm(CASE_TIMEOUT)
        try:
            if not ctx.daemon_alive():
                raise RuntimeError("daemon is not running")
            fn(C)
        except CaseTimeout as e:
            C.failures.append(str(e))
        except Exception as e:  # noqa: BLE001 - report and go on with the next case
            C.failures.append("exception: %s: %s" % (type(e).__name__, e))
            C.notes.append(traceback.format_exc().strip().splitlines()[-3])
        finally:
            signal.alarm(0)
            C.finish()
        # (c): daemon alive, healthy session still works.
        if "gateway shutting down" in ctx.log_text(C.log_off):
            C.notes.append("the daemon log says 'gateway shutting down': it was sent SIGTERM "
                           "from outside this test")
        if not ctx.daemon_alive():
            C.failures.append("the daemon died (state %s)" % ctx.daemon_state())
        else:
            signal.alarm(CASE_TIMEOUT)
            try:
                err = ctx.healthy_io("after " + name)
            except CaseTimeout as e:
                err = str(e)
            finally:
                signal.alarm(0)
            if err:
                C.failures.append(err)
                if ctx.healthy is None or ctx.healthy.closed:
                    # Go on with a new healthy session so later cases are still judged.
                    try:
                        ctx.healthy = ctx.new_session(HEALTHY_PARAMS, initiator=a.initiator2)
                        C.notes.append("healthy session lost; logged in again")
                    except (Closed, ProtocolFailure, OSError) as e:
                        C.failures.append("cannot log the healthy session in again: %s" % e)
            err = resources_settle(ctx)
            if err:
                C.failures.append(err)
        ok = not C.failures
        passed += ok
        failed += not ok
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        print("%s %s (%.1fs) -- %s" % ("PASS" if ok else "FAIL", name, time.monotonic() - t0,
                                       doc))
        for o in C.obs:
            print("    observed  " + o)
        for n in C.notes:
            print("    note      " + n)
        for f in C.failures:
            print("    FAILED    " + f)
        sys.stdout.flush()
    st = ctx.stats() or {}
    print("daemon counters: " + ", ".join("%s=%s" % (k, st.get(k)) for k in (
        "rejects", "digest_errors", "protocol_errors", "login_failures", "connections_accepted",
        "connections_active", "errors")))
    print("RESULT passed=%d failed=%d" % (passed, failed))
    return 0 if failed == 0 else 1


def verify(a):
    """Compares the LUN backing file with the acknowledged writes (in order)."""
    size = os.path.getsize(a.lun)
    expected = bytearray(size)
    owners = []
    with open(a.ref) as f:
        for line in f:
            e = json.loads(line)
            if "region" in e:
                owners.append((e["region"], e["len"], e["who"]))
                continue
            d = base64.b64decode(e["data"])
            expected[e["off"]:e["off"] + len(d)] = d
    with open(a.lun, "rb") as f:
        actual = f.read()
    if actual == bytes(expected):
        print("PASS lun-integrity -- the LUN holds exactly the acknowledged writes (%d bytes "
              "compared)" % size)
        return 0
    print("FAIL lun-integrity -- the LUN differs from the acknowledged writes")
    blk = 512
    runs = []
    for off in range(0, size, 64 * KIB):
        if actual[off:off + 64 * KIB] == expected[off:off + 64 * KIB]:
            continue
        for b in range(off, min(off + 64 * KIB, size), blk):
            if actual[b:b + blk] != expected[b:b + blk]:
                if runs and runs[-1][1] == b:
                    runs[-1][1] = b + blk
                else:
                    runs.append([b, b + blk])
    for s, e in runs[:40]:
        who = next((w for o, n, w in owners if o <= s < o + n), None)
        if who is None:
            who = "healthy session area" if s < CASE_BASE else (
                "churn area" if s >= CHURN_BASE else "unowned")
        kind = "zeros expected" if not any(expected[s:e]) else "other data expected"
        print("    FAILED    bytes [%d, %d) (%d KiB) differ, region of %s (%s)" % (
            s, e, (e - s) // KIB, who, kind))
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--target")
    ap.add_argument("--initiator")
    ap.add_argument("--initiator2")
    ap.add_argument("--log")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--status")
    ap.add_argument("--ref", required=True)
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--lun")
    a = ap.parse_args()
    if a.verify:
        return verify(a)
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
