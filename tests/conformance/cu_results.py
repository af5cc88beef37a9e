"""Combine parsed iscsi-test-cu runs (parse-cu.py's JSON) into one result per test.

isergw is measured in more than one configuration (tests/conformance/runs.sh): the main run
of every test on a LU with 512-byte blocks, and a shorter run of the suites that depend on
the physical block size or on a removable medium, on a LU with 512-byte logical and
4096-byte physical blocks and a removable medium. Some tests skip themselves on one LU and
run on the other, so the project's lists
(expected-pass.txt, skipped.txt) are judged against the combination:

  * a test fails if it failed in any run,
  * otherwise it passes if it passed in any run,
  * otherwise (it skipped in every run that ran it) it is a skip.

Imported by check-cu.py and make-report.py (which live beside it).
"""

import json


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def combine(docs, labels):
    """One parse-cu.py-like document from several: "results" in first-seen order, each with
    "runs" ({label: status} of the runs that ran it); "counts" over the combined results;
    "consistent" only if every run was; "problems" prefixed with their run's label."""
    by_test = {}
    for doc, label in zip(docs, labels):
        for r in doc["results"]:
            cur = by_test.setdefault(r["test"], {"test": r["test"], "runs": {}, "_all": []})
            cur["runs"][label] = r["status"]
            cur["_all"].append(r)
    results = []
    for cur in by_test.values():
        rs = cur.pop("_all")
        for status in ("fail", "pass", "skip"):
            hit = [r for r in rs if r["status"] == status]
            if hit:
                break
        cur["status"] = status
        cur["reason"] = hit[0]["reason"]
        results.append(cur)
    counts = {"run": len(results), "pass": 0, "skip": 0, "fail": 0}
    for r in results:
        counts[r["status"]] += 1
    problems = [f"{label}: {p}" for doc, label in zip(docs, labels)
                for p in doc.get("problems", [])]
    consistent = all(doc.get("consistent", False) for doc in docs)
    if not consistent and not problems:
        problems = ["parse-cu.py found a report inconsistent"]
    return {"counts": counts, "consistent": consistent, "problems": problems,
            "results": results}
