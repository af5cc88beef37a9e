#!/usr/bin/env python3
"""Judge parsed iscsi-test-cu runs (parse-cu.py's JSON) against the project's lists.

Usage: check-cu.py RESULTS.json [MORE_RESULTS.json ...] EXPECTED_PASS SKIPPED

With several runs (isergw in several LU configurations, tests/conformance/runs.sh) the
lists are judged against their combination (cu_results.py): a test that failed anywhere
failed, else one that passed anywhere passed, else it skipped.

Fails (exit 1) when
  * a test in EXPECTED_PASS did not pass (it skipped, failed or did not run),
  * any test failed,
  * a test appears that neither list names (so the lists only grow),
  * the lists are malformed (a name twice, a name in both, a pattern in EXPECTED_PASS),
  * a run itself was incomplete or inconsistent (parse-cu.py's "consistent" is false).
A test in SKIPPED that now passes is reported as a notice (move it to EXPECTED_PASS), not an
error. Prints the problems, then "conformance: N passed, M failed, K skipped" (N, M, K over
every distinct test run) on stdout.

List format: one Suite.Test per line; text after # and blank lines are ignored. SKIPPED may
hold shell patterns (Suite.*); EXPECTED_PASS holds exact names only.
"""

import fnmatch
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import cu_results  # noqa: E402


def read_list(path):
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            name = line.split("#", 1)[0].strip()
            if name:
                entries.append((name, n))
    return entries


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    paths = sys.argv[1:-2]
    exp_path, skip_path = sys.argv[-2], sys.argv[-1]
    labels = [os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in paths]
    if len(set(labels)) != len(labels):
        labels = paths
    doc = cu_results.combine([cu_results.load(p) for p in paths], labels)
    expected = read_list(exp_path)
    skipped = read_list(skip_path)
    errors, notices = [], []

    exp_names = {}
    for name, n in expected:
        if any(c in name for c in "*?["):
            errors.append(f"{exp_path}:{n}: patterns are not allowed here: {name}")
        if name in exp_names:
            errors.append(f"{exp_path}:{n}: {name} listed twice")
        exp_names[name] = n
    skip_pats = {}
    for name, n in skipped:
        if name in skip_pats:
            errors.append(f"{skip_path}:{n}: {name} listed twice")
        skip_pats[name] = n

    def skip_listed(test):
        return any(fnmatch.fnmatchcase(test, p) for p in skip_pats)

    for name in exp_names:
        if skip_listed(name):
            errors.append(f"{name} is in both lists")

    def runs(r):  # which run said what, when there are several
        if len(paths) < 2:
            return ""
        return " [" + ", ".join(f"{k}: {v}" for k, v in r["runs"].items()) + "]"

    results = {r["test"]: r for r in doc["results"]}
    for name in exp_names:
        r = results.get(name)
        if r is None:
            errors.append(f"{name}: expected to pass, but it did not run")
        elif r["status"] != "pass":
            errors.append(f"{name}: expected to pass, got {r['status']}{runs(r)}: "
                          f"{r['reason']}")
    for name, r in results.items():
        if r["status"] == "fail" and name not in exp_names:
            errors.append(f"{name}: FAILED{runs(r)}: {r['reason']}")
        if name not in exp_names and not skip_listed(name):
            errors.append(f"{name}: {r['status']}, but in neither expected-pass.txt nor "
                          f"skipped.txt{': ' + r['reason'] if r['reason'] else ''}")
        elif name not in exp_names and r["status"] == "pass":
            notices.append(f"{name}: listed as skipped but passes now: move it to "
                           "expected-pass.txt")
    for pat in skip_pats:
        if not any(fnmatch.fnmatchcase(t, pat) for t in results):
            notices.append(f"{pat}: in skipped.txt but no such test ran")
    if not doc.get("consistent", False):
        for p in doc.get("problems", []) or ["parse-cu.py found the report inconsistent"]:
            errors.append("run: " + p)

    for m in notices:
        print("notice: " + m)
    for m in errors:
        print("FAIL: " + m)
    c = doc["counts"]
    print(f"conformance: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
