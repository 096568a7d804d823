"""How long `make test` takes, where the time goes, beside a reference run.

Runs the README's test command (`make test`: pytest on two xdist workers) with a JUnit report, or
reads one that a run already wrote (`--from-junit test-reports/junit.xml --wall-s N`), and writes
`bench/results/test_time.json`: wall seconds, test counts, the ten slowest tests, seconds per test
file, and the ratio to the reference — the last result kept in that file, or, the first time, the
suite as it was before issue 16 (409 tests, 1273 s wall on these 2 cores, serial).

    python bench/test_time.py                       # runs `make test` (about a quarter of an hour)
    python bench/test_time.py --from-junit test-reports/junit.xml --wall-s 800
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "bench" / "results" / "test_time.json"
BEFORE = {"label": "before issue 16 (serial, per-module training)", "wall_s": 1273.0, "tests": 409,
          "measured": "2026-11-24, make test, 409 passed in 21 min 13 s"}
BUDGET_S = 15 * 60


def read_junit(path: Path) -> dict:
    root = ET.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "seconds": float(case.get("time", 0)),
                      "outcome": outcome})
    by_file: collections.Counter[str] = collections.Counter()
    for case in cases:
        by_file[case["test"].split("::")[0]] += case["seconds"]  # the module (junit's classname)
    outcomes = collections.Counter(c["outcome"] for c in cases)
    return {"tests": len(cases), **{k: outcomes.get(k, 0) for k in ("passed", "failed", "skipped")},
            "test_seconds_sum": round(sum(c["seconds"] for c in cases), 1),
            "ten_slowest": [{"test": c["test"], "seconds": round(c["seconds"], 1)}
                            for c in sorted(cases, key=lambda c: -c["seconds"])[:10]],
            "seconds_by_file": {f: round(s, 1) for f, s in by_file.most_common()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-junit", type=Path, help="read this JUnit report instead of running `make test`")
    parser.add_argument("--wall-s", type=float, help="the wall seconds of the run that wrote --from-junit")
    args = parser.parse_args()
    if args.from_junit:
        if args.wall_s is None:
            parser.error("--from-junit needs --wall-s (the JUnit report holds the sum of test times, not the wall)")
        junit, wall, rc = args.from_junit, args.wall_s, None
    else:
        junit = REPO / "test-reports" / "junit.xml"
        env = {**os.environ, "PYTEST_ADDOPTS": f"--junitxml={junit}"}
        started = time.monotonic()
        rc = subprocess.call(["make", "test"], cwd=REPO, env=env)
        wall = time.monotonic() - started
    result = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "command": "make test", "returncode": rc, "wall_s": round(wall, 1), "budget_s": BUDGET_S,
              **read_junit(junit)}
    reference = BEFORE
    if RESULT.exists():
        previous = json.loads(RESULT.read_text())
        reference = {"label": f"previous result ({previous['measured_at']})", "wall_s": previous["wall_s"],
                     "tests": previous["tests"], "measured": previous["measured_at"]}
    result["reference"] = reference
    result["ratio_to_reference"] = round(wall / reference["wall_s"], 3)

    print(f"{'':<28}{'this run':>12}{'reference':>12}")
    print(f"{'wall (s)':<28}{wall:>12.0f}{reference['wall_s']:>12.0f}   ratio {result['ratio_to_reference']:.2f}"
          f"   ({reference['label']})")
    print(f"{'tests':<28}{result['tests']:>12}{reference['tests']:>12}")
    print(f"{'within the 15 min budget':<28}{str(wall <= BUDGET_S):>12}")
    print("ten slowest:")
    for case in result["ten_slowest"]:
        print(f"  {case['seconds']:7.1f} s  {case['test']}")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {RESULT.relative_to(REPO)}")
    return 0 if rc in (None, 0) else rc


if __name__ == "__main__":
    sys.exit(main())
