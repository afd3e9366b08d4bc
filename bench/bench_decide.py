"""consent.decide() throughput on one core, as a ratio to a plain dict lookup.

The workload is the scenario mix of tests/scenarios/scenarios.toml: every
(concern, candidate recipient) pair the router would decide for those
scenarios, under the shipped policy (deploy/policy). The consent position is
built once per concern, as the router does.

* **decide**: ``decide(concern, recipient, policy, consent, now)`` for every
  pair; the full engine (ages, agreements, threshold, consent, third parties,
  decision id and reasons).
* **baseline**: the same number of lookups in a dict keyed by
  (recipient agency type, concern type) → outcome, built from the same
  decisions: the floor for "a rule table in memory".

Both run in this process, pinned to one CPU where the OS allows it,
alternating rounds; the best round of each is reported. Target: at least
50,000 decisions/s. Usage: python bench/bench_decide.py [--rounds R] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from _bench_common import show_result
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker import (  # noqa: E402
    candidate_recipients,
    load_deployment,
    resolve_partnerships,
)
from consent import Consent, Recipient, current_consent, decide  # noqa: E402
from schemas import ConcernModel  # noqa: E402
from tests.scenarios.build import NOW, load_scenarios  # noqa: E402

TARGET = 50_000
console = Console(stderr=True)


def workload() -> tuple[list[tuple[ConcernModel, Recipient, Consent]], Any]:
    deployment = load_deployment(REPO / "deploy")
    pairs: list[tuple[ConcernModel, Recipient, Consent]] = []
    for scenario in load_scenarios():
        routing = resolve_partnerships(scenario.concern, deployment.postcodes)
        consent = current_consent(scenario.concern.consent, scenario.consent_record)
        for candidate in candidate_recipients(scenario.concern, routing, deployment.directory):
            pairs.append((scenario.concern, candidate.recipient, consent))
    return pairs, deployment.policy


def run_decide(pairs: list[tuple[ConcernModel, Recipient, Consent]], policy: Any, n: int) -> float:
    """Seconds for ``n`` passes over every pair."""
    started = time.perf_counter()
    for _ in range(n):
        for concern, recipient, consent in pairs:
            decide(concern, recipient, policy, consent, NOW)
    return time.perf_counter() - started


def run_baseline(keys: list[tuple[str, str]], table: dict[tuple[str, str], str], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        for key in keys:
            table.get(key)
    return time.perf_counter() - started


def main(rounds: int, seconds: float) -> dict[str, Any]:
    pinned = False
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
            pinned = True
        except OSError:
            pinned = False
    pairs, policy = workload()
    outcomes: dict[tuple[str, str], str] = {}
    keys: list[tuple[str, str]] = []
    for concern, recipient, consent in pairs:
        key = (recipient.agency_type.value, concern.concern_type.value)
        outcomes[key] = decide(concern, recipient, policy, consent, NOW).kind
        keys.append(key)
    # Calibrate passes so that one decide round lasts about ``seconds``.
    passes = 1
    while run_decide(pairs, policy, passes) < seconds / 4:
        passes *= 2
    passes *= 4
    decide_rates: list[float] = []
    baseline_rates: list[float] = []
    for _ in range(rounds):
        decide_rates.append(passes * len(pairs) / run_decide(pairs, policy, passes))
        baseline_rates.append(passes * len(keys) / run_baseline(keys, outcomes, passes))
    best, floor = max(decide_rates), max(baseline_rates)
    kinds: dict[str, int] = {}
    sharing: list[tuple[ConcernModel, Recipient, Consent]] = []
    for concern, recipient, consent in pairs:
        kind = decide(concern, recipient, policy, consent, NOW).kind
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind != "DENY":
            sharing.append((concern, recipient, consent))
    # The costlier path on its own: decisions that share (PERMIT or REFER).
    share_passes = max(1, passes * len(pairs) // max(len(sharing), 1) // 2)
    share_rate = max(
        share_passes * len(sharing) / run_decide(sharing, policy, share_passes)
        for _ in range(rounds)
    )
    result = {
        "scenarios": len({c.concern_id for c, _, _ in pairs}),
        "pairs": len(pairs),
        "mix": kinds,
        "rounds": rounds,
        "decisions_per_round": passes * len(pairs),
        "decide_per_s": round(best),
        "decide_us_per_decision": round(1e6 / best, 2),
        "decide_permit_refer_only_per_s": round(share_rate),
        "dict_lookup_per_s": round(floor),
        "decide_to_dict_ratio": round(best / floor, 4),
        "dict_is_x_faster": round(floor / best, 1),
        "target_per_s": TARGET,
        "meets_target": best >= TARGET,
        "pinned_to_one_cpu": pinned,
        "python": platform.python_version(),
    }
    show_result(f"consent.decide() vs dict lookup (best of {rounds} rounds, one core)", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one decide round")
    args = parser.parse_args()
    print(json.dumps(main(args.rounds, args.seconds)))
    sys.exit(0)
