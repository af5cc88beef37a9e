#!/usr/bin/env python3
"""The target's NOP-In keepalive and dead-initiator timeout, with two raw sessions at once.

Both log in. "silent" then never sends another byte: the target must ping it with a NOP-In
(RFC 7143 11.19: ITT 0xffffffff, a TTT of its own, F set, no data, StatSN not advanced,
ExpCmdSN as after login) about nop_interval seconds after login, and drop the connection
once nop_timeout seconds pass without the NOP-Out answer, not before. "alive" answers every
ping (NOP-Out, immediate, ITT 0xffffffff, the ping's TTT) and must keep working past the
other's death: several pings answered, then a WRITE/READ round trip and a NOP-Out ping of
its own, then a clean logout. Prints each session's local address ("silent ADDR", "alive
ADDR") for the caller's log checks."""
import argparse
import sys
import time

from iscsi_raw import (Closed, OP_NOP_IN, RSVD, Session, bhs_nop_out, make_isid,
                       status_query)


def ping_problems(p, s, what):
    """What is wrong with p as a target NOP-In ping on session s."""
    bad = []
    if p.opcode != OP_NOP_IN:
        return ["%s: expected a NOP-In ping, got %s" % (what, p.describe())]
    if p.itt != RSVD:
        bad.append("ITT 0x%08x, want 0xffffffff" % p.itt)
    if p.ttt == RSVD:
        bad.append("TTT reserved: a ping must carry a TTT to be answered")
    if not p.flags & 0x80:
        bad.append("F bit clear")
    if p.dsl:
        bad.append("%d bytes of data" % p.dsl)
    if p.bhs[8:16] != bytes(8):
        bad.append("LUN %s, want LUN 0" % p.bhs[8:16].hex())
    if p.statsn != s.expstatsn:
        bad.append("StatSN %u, want %u (the next StatSN, not advanced)" % (p.statsn, s.expstatsn))
    if p.expcmdsn != s.cmdsn:
        bad.append("ExpCmdSN %u, want %u" % (p.expcmdsn, s.cmdsn))
    if (p.maxcmdsn - p.expcmdsn + 1) & 0xFFFFFFFF > 0x7FFFFFFF:
        bad.append("MaxCmdSN %u below ExpCmdSN - 1 (%u)" % (p.maxcmdsn, p.expcmdsn))
    return ["%s: NOP-In %s" % (what, b) for b in bad]


class Alive:
    """The session that answers pings; checks each one."""

    def __init__(self, s):
        self.s = s
        self.ttts = []
        self.problems = []

    def poll(self, timeout):
        if self.s.closed:
            return
        try:
            p = self.s.recv_pdu(timeout=timeout, answer_pings=False)
        except Closed:
            self.problems.append("alive: dropped although it answered every NOP-In (%d)"
                                 % len(self.ttts))
            return
        if p is None:
            return
        if p.opcode == OP_NOP_IN and p.ttt != RSVD:
            self.problems += ping_problems(p, self.s, "alive")
            if p.ttt in self.ttts:
                self.problems.append("alive: TTT 0x%08x reused while pinging" % p.ttt)
            self.ttts.append(p.ttt)
            self.s.send_pdu(bhs_nop_out(RSVD, self.s.cmdsn, self.s.expstatsn, ttt=p.ttt,
                                        immediate=True))
        else:
            self.problems.append("alive: unexpected %s" % p.describe())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--initiator", required=True)
    ap.add_argument("--initiator2", required=True)
    ap.add_argument("--interval", type=float, required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--status-socket", required=True)
    a = ap.parse_args()
    fails = []

    silent = Session("127.0.0.1", a.port, timeout=10)
    alive_s = Session("127.0.0.1", a.port, timeout=10)
    for s, ini, n in ((silent, a.initiator, 1), (alive_s, a.initiator2, 2)):
        cls, det, _, _ = s.login(ini, a.target, make_isid(n))
        if (cls, det) != (0, 0):
            print("FAIL: login of %s: status 0x%02x%02x" % (ini, cls, det))
            return 1
    login_at = time.monotonic()
    print("silent %s" % silent.local)
    print("alive %s" % alive_s.local)
    alive = Alive(alive_s)

    # silent: the first PDU is the ping; then nothing until the target hangs up.
    ping_at = closed_at = None
    pings = 0
    deadline = login_at + a.interval + a.timeout + a.interval + 6.0  # generous under ASan
    while time.monotonic() < deadline and closed_at is None:
        try:
            p = silent.recv_pdu(timeout=0.05, answer_pings=False)
        except Closed:
            closed_at = time.monotonic()
            break
        if p is not None:
            pings += 1
            if ping_at is None:
                ping_at = time.monotonic()
                fails += ping_problems(p, silent, "silent")
            elif p.opcode != OP_NOP_IN or p.ttt == RSVD:
                fails.append("silent: unexpected %s" % p.describe())
        alive.poll(0.05)

    if ping_at is None:
        fails.append("silent: no NOP-In within %.0f s of login (nop_interval %.0f s)" % (
            deadline - login_at, a.interval))
    else:
        after = ping_at - login_at
        print("silent: first NOP-In %.2f s after login" % after)
        if not a.interval - 0.3 <= after <= a.interval + 3.0:
            fails.append("silent: first NOP-In %.2f s after login, nop_interval is %.0f s" % (
                after, a.interval))
    if closed_at is None:
        fails.append("silent: still connected %.0f s after login without answering a NOP-In"
                     % (deadline - login_at))
    elif ping_at is not None:
        waited = closed_at - ping_at
        print("silent: dropped %.2f s after the unanswered NOP-In (%d pings)" % (waited, pings))
        if waited < a.timeout - 0.2:
            fails.append("silent: dropped %.2f s after the NOP-In, before nop_timeout (%.0f s)"
                         % (waited, a.timeout))
        if waited > a.timeout + a.interval + 3.0:
            fails.append("silent: dropped only %.2f s after the NOP-In (nop_timeout %.0f s)"
                         % (waited, a.timeout))

    # alive: keeps answering for longer than nop_timeout after the other's death, then works.
    until = time.monotonic() + a.timeout + a.interval + 0.5
    while time.monotonic() < until and not alive_s.closed:
        alive.poll(0.1)
    fails += alive.problems
    span = time.monotonic() - login_at
    print("alive: answered %d NOP-Ins in %.1f s" % (len(alive.ttts), span))
    if len(alive.ttts) < int(span / a.interval) - 2:
        fails.append("alive: %d NOP-Ins in %.1f s, nop_interval %.0f s" % (
            len(alive.ttts), span, a.interval))
    if not alive_s.closed:
        data = bytes(range(256)) * 16
        w = alive_s.write10(8, data)
        r = alive_s.read10(8, len(data) // 512)
        if not w.good or not r.good or r.data != data:
            fails.append("alive: WRITE/READ after the other session's drop: %s / %s" % (
                w.describe(), r.describe()))
        if alive_s.nop_ping(timeout=5) is None:
            fails.append("alive: no answer to its own NOP-Out ping")
        stats = status_query(a.status_socket, "stats") or {}
        if stats.get("nop_timeouts") != 1:
            fails.append("stats.nop_timeouts is %s, want 1" % stats.get("nop_timeouts"))
        if stats.get("sessions_active") != 1:
            fails.append("stats.sessions_active is %s, want 1 (alive)" %
                         stats.get("sessions_active"))
        if alive_s.logout(timeout=5) is None:
            fails.append("alive: no Logout Response")

    for f in fails:
        print("FAIL: " + f)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
