"""The simulated week (issue 5 §7): share of disclosures done within their deadline.

Runs the monitor core over a week of synthetic traffic on a fake clock and
prints the share met, the alerts raised, and how long the monitor took per
evaluation relative to a baseline pass over the same items that computes
nothing (a ratio, measured in this run).
Usage: python bench/bench_week.py [--concerns N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

from consent._timeliness import alerts_due
from safer._simulate import simulate_week, summary

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concerns", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    report = simulate_week(REPO / "deploy", seed=args.seed, concerns=args.concerns)
    result = dict(summary(report))
    items = report.tracked
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        sum(1 for t in items if t.due is not None)
    baseline = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for _ in range(rounds):
        alerts_due(items, report.end, expiry=timedelta(hours=4))
    monitor = (time.perf_counter() - start) / rounds
    result["monitor_pass_ms"] = round(monitor * 1000, 3)
    result["baseline_pass_ms"] = round(baseline * 1000, 3)
    result["monitor_to_baseline_ratio"] = round(monitor / baseline, 1)
    print(json.dumps(result, indent=1))
