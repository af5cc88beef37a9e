#!/usr/bin/env python3
"""Parse the output of libiscsi's iscsi-test-cu (CUnit basic mode, -v) into per-test results.

Usage: parse-cu.py [--list LIST [--pattern ALL]] [--json OUT] [--quiet] LOG

LOG is iscsi-test-cu's stdout. LIST (optional) is the output of `iscsi-test-cu -l`; with it,
the tests that --pattern (the -t argument, default ALL) selects but that never appear in LOG
(suite set-up failed, run aborted or timed out) are reported as failed instead of silently
missing. Writes JSON (to OUT, or to
stdout when OUT is "-" or not given) and prints one summary line to stderr:

    cu-summary: run R, pass P, skip S, fail F (CUnit: ran R passed P+S failed F)

Each result is {"test": "Suite.Test", "status": "pass"|"skip"|"fail", "reason": str}.

How the output is attributed (libiscsi 1.19 test-tool, CUnit 2.1-3 basic verbose mode):
  * CUnit prints "\\nSuite: NAME" when a suite starts and "\\n  Test: NAME ..." when a test
    starts, then, when the test returns, "passed" or "FAILED" followed by one line
    "\\n    N. file:line  - condition" per failed assertion. Neither ends its line.
  * libiscsi's logging() prints "    MESSAGE\\n". A test that skips itself logs
    "[SKIPPED] reason" (iscsi-support.h: logging(LOG_NORMAL, "[SKIPPED] ...") followed by
    CU_PASS(...), so CUnit counts it as passed).
  * So a test's own output is what lies between its "Test: NAME ..." and its
    "passed"/"FAILED" token. The token is always either directly after "..." or at the
    start of a line (everything the test logs ends with a newline and is indented).
  * What comes after the token and before the next "Test:"/"Suite:" comes from the test
    teardown or the suite cleanup that CUnit runs after the suite's last test; in libiscsi
    1.19 suite_cleanup() calls clear_pr() which sends PERSISTENT RESERVE IN and logs
    "[SKIPPED] PERSISTENT RESERVE IN is not implemented." (or a [FAILED] PRIN line) against
    a target without PR support. That text lands on the same line as the *previous* test's
    "passed" ("passed    [SKIPPED] PERSISTENT RESERVE IN ...") and is not that test's: it
    is kept as "after" text and never changes a result.
  * A test that logs "[SKIPPED]" and then fails an assertion is a failure.
"""

import argparse
import fnmatch
import json
import re
import sys

SUITE_RE = re.compile(r"^Suite: (?P<suite>\S+)\s*$")
TEST_RE = re.compile(r"^  Test: (?P<test>\S+) \.\.\.(?P<rest>.*)$")
RESULT_RE = re.compile(r"^(?P<res>passed|FAILED)(?P<rest>.*)$")
ASSERT_RE = re.compile(r"^\s+(?P<n>\d+)\. (?P<where>\S+:\d+)\s+- (?P<cond>.*)$")
INIT_FAIL_RE = re.compile(r"WARNING - Suite initialization failed for '(?P<suite>[^']+)'")
CLEAN_FAIL_RE = re.compile(r"WARNING - Suite cleanup failed for '(?P<suite>[^']+)'")
SUMMARY_TESTS_RE = re.compile(
    r"^\s+tests\s+(?P<total>\d+)\s+(?P<ran>\d+)\s+(?P<passed>\d+)\s+(?P<failed>\d+)\s+(?P<inactive>\d+)")
SUMMARY_SUITES_RE = re.compile(
    r"^\s+suites\s+(?P<total>\d+)\s+(?P<ran>\d+)\s+\S+\s+(?P<failed>\d+)\s+(?P<inactive>\d+)")
TAG_RE = re.compile(r"\[(SKIPPED|FAILED)\]\s*(.*)")


def clean_msg(msg):
    msg = " ".join(msg.split())
    return msg[:300]


class Test:
    def __init__(self, suite, name):
        self.suite = suite
        self.name = name
        self.own = []      # lines the test itself printed (before passed/FAILED)
        self.result = None  # "passed" | "FAILED" | None (never finished)
        self.asserts = []  # failed assertions "file:line - condition"
        self.after = []    # teardown / suite-cleanup output after the result token

    @property
    def full(self):
        return f"{self.suite}.{self.name}"

    def tagged(self, tag):
        out = []
        for line in self.own:
            m = TAG_RE.search(line)
            if m and m.group(1) == tag:
                out.append(clean_msg(m.group(2)))
        return out

    def classify(self):
        skips = self.tagged("SKIPPED")
        fails = self.tagged("FAILED")
        if self.result is None:
            reason = "no result: the run stopped during this test (hang, crash or timeout)"
            if fails:
                reason += "; last [FAILED]: " + fails[-1]
            return "fail", reason
        if self.result == "FAILED":
            parts = []
            if fails:
                parts.append(fails[0])
            else:
                logged = [x.strip() for x in self.own if x.strip()]
                if logged:
                    parts.append("last logged: " + clean_msg(logged[-1]))
            if self.asserts:
                parts.append(f"{len(self.asserts)} failed assertion(s), first {self.asserts[0]}")
            return "fail", "; ".join(parts) or "FAILED"
        if skips:
            return "skip", skips[0]
        return "pass", ""


def parse(text):
    tests = []
    order_suites = []
    init_failed = []
    cleanup_failed = []
    summary = {}
    suite = None
    cur = None
    state = None  # None | "in" (test running) | "after" (result seen)

    for raw in text.splitlines():
        line = raw.rstrip("\r")
        m = INIT_FAIL_RE.search(line)
        if m:
            init_failed.append(m.group("suite"))
        m = CLEAN_FAIL_RE.search(line)
        if m:
            cleanup_failed.append(m.group("suite"))
        m = SUITE_RE.match(line)
        if m:
            suite = m.group("suite")
            order_suites.append(suite)
            cur, state = None, None
            continue
        m = TEST_RE.match(line)
        if m and suite is not None:
            cur = Test(suite, m.group("test"))
            tests.append(cur)
            state = "in"
            line = m.group("rest")
            # fall through: the rest of the line is the test's first output (or its result)
        if line.startswith("Run Summary:"):
            cur, state = None, None
        m = SUMMARY_TESTS_RE.match(line)
        if m:
            summary["tests"] = {k: int(v) for k, v in m.groupdict().items()}
            continue
        m = SUMMARY_SUITES_RE.match(line)
        if m:
            summary["suites"] = {k: int(v) for k, v in m.groupdict().items()}
            continue
        if cur is None:
            continue
        if state == "in":
            r = RESULT_RE.match(line)
            if r:
                cur.result = r.group("res")
                state = "after"
                if r.group("rest").strip():
                    cur.after.append(r.group("rest").strip())
            else:
                cur.own.append(line)
            continue
        # state == "after": failed-assertion records, then teardown/cleanup output
        a = ASSERT_RE.match(line)
        if a and cur.result == "FAILED":
            cond = a.group("cond")
            # suite-cleanup output may be glued to the last record: "...cond)    [SKIPPED] ..."
            cut = re.search(r"\s{2,}\[(SKIPPED|FAILED|INFO|WARNING)\]", cond)
            if cut:
                cur.after.append(cond[cut.start():].strip())
                cond = cond[:cut.start()]
            cur.asserts.append(f"{a.group('where')} - {cond.strip()}")
        elif line.strip():
            cur.after.append(line.strip())
    return tests, order_suites, init_failed, cleanup_failed, summary


def read_list(path, pattern):
    """Tests of `iscsi-test-cu -l` that -t PATTERN selects (FAMILY[.SUITE[.TEST]], each part
    an fnmatch(3) pattern, missing parts "*"), as Suite.Test, in run order."""
    pats = [(p.split(".", 2) + ["*", "*"])[:3] for p in pattern.split(",") if p]
    names = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.strip().split(".")
            if len(parts) != 3:
                continue
            if any(all(fnmatch.fnmatchcase(x, p) for x, p in zip(parts, pat)) for pat in pats):
                name = f"{parts[1]}.{parts[2]}"
                if name not in names:
                    names.append(name)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log")
    ap.add_argument("--list", help="output of `iscsi-test-cu -l`, to detect tests never run")
    ap.add_argument("--pattern", default="ALL",
                    help="the -t pattern that was run (default ALL), to select from --list")
    ap.add_argument("--json", default="-", help="write JSON here (default stdout)")
    ap.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    args = ap.parse_args()

    with open(args.log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    tests, suites, init_failed, cleanup_failed, summary = parse(text)

    results = []
    seen = set()
    for t in tests:
        status, reason = t.classify()
        entry = {"test": t.full, "status": status, "reason": reason}
        if t.after:
            entry["after"] = [clean_msg(x) for x in t.after[:5]]
        if t.tagged("FAILED") and status != "fail":
            entry["note"] = "logged [FAILED] but CUnit passed it: " + t.tagged("FAILED")[0]
        results.append(entry)
        seen.add(t.full)

    listed = read_list(args.list, args.pattern) if args.list else []
    for name in listed:
        if name not in seen:
            suite = name.split(".")[0]
            why = ("suite initialization failed" if suite in init_failed
                   else "never ran (run aborted, timed out or crashed before it)")
            results.append({"test": name, "status": "fail", "reason": "not run: " + why})
            seen.add(name)

    counts = {"run": len(results), "pass": 0, "skip": 0, "fail": 0}
    for r in results:
        counts[r["status"]] += 1

    problems = []
    dup = {r["test"] for r in results if sum(1 for x in results if x["test"] == r["test"]) > 1}
    if dup:
        problems.append("tests reported more than once: " + ", ".join(sorted(dup)))
    cu = summary.get("tests")
    if cu is None:
        problems.append("no CUnit run summary in the log (run did not complete)")
    else:
        ran_parsed = len(tests)
        if cu["ran"] != ran_parsed:
            problems.append(f"CUnit ran {cu['ran']} tests, the log shows {ran_parsed}")
        passed_parsed = sum(1 for t in tests if t.result == "passed")
        if cu["passed"] != passed_parsed:
            problems.append(f"CUnit passed {cu['passed']}, the log shows {passed_parsed}")
    if listed and len(listed) != counts["run"]:
        problems.append(f"{len(listed)} tests listed, {counts['run']} results")
    if init_failed:
        problems.append("suite initialization failed: " + ", ".join(init_failed))

    doc = {
        "counts": counts,
        "cunit_summary": summary,
        "consistent": not problems,
        "problems": problems,
        "suite_cleanup_failed": cleanup_failed,
        "results": results,
    }
    out = json.dumps(doc, indent=1)
    if args.json == "-":
        print(out)
    else:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(out + "\n")
    if not args.quiet:
        line = (f"cu-summary: run {counts['run']}, pass {counts['pass']}, "
                f"skip {counts['skip']}, fail {counts['fail']}")
        if cu:
            line += (f" (CUnit: ran {cu['ran']} passed {cu['passed']} failed {cu['failed']})")
        print(line, file=sys.stderr)
        for p in problems:
            print("cu-summary: WARNING: " + p, file=sys.stderr)
    return 0 if not problems else 3


if __name__ == "__main__":
    sys.exit(main())
