"""Would a process pool pay for `RouterCore.plan`? An upper bound, measured (issue 12).

Same run, same records (``--concerns`` synthetic concerns), no Kafka:

* **serial**: ``RouterCore.plan`` over every record in this process, as the
  router plans a batch;
* **pool**: the same records planned by ``--workers`` worker processes, each
  with its own ``RouterCore`` over the same keys and policy, in chunks of
  ``--chunk`` records (``ProcessPoolExecutor.map``), the plans sent back
  pickled.

This is an upper bound for a pool inside one router. The workers here keep no
shared state: their routed ledger, cumulative-concern store and consent view
start empty and stay apart. A real router must apply those in offset order, so
a pool would have to ship each batch's state to the workers and back, and run
that stateful middle of planning in one process. The broker is not running
here either; under `safer up` it needs a core of its own. It also reports what
a plan costs to pickle and unpickle, the least any pool pays per concern.

The last line of stdout is one JSON object with ``serial_per_s``,
``pool_per_s`` and ``pool_to_serial_ratio``.
Usage: python bench/bench_plan_pool.py [--concerns N] [--workers W] [--chunk C] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _bench_common import show_result
from rich.console import Console

from adapters import synthetic_concerns
from broker import Plan, RouterCore, Settings
from safer import Runtime
from safer._logging import configure_logging
from schemas import ConcernModel

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)
#: (offset, key, value, headers) of one inbound record.
Record = tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]

_core: RouterCore | None = None


def _start_worker(data_dir: str) -> None:
    """Each worker's own RouterCore, from the same data directory (keys) and policy."""
    global _core
    configure_logging(level="WARNING")
    settings = Settings(data_dir=Path(data_dir), deploy_dir=REPO / "deploy")
    _core = Runtime(settings, "127.0.0.1:9").router_core()  # never connects: no Kafka here


def _plan_all(records: list[Record]) -> list[Plan]:
    assert _core is not None
    now = datetime.now(UTC)
    plans = []
    for offset, key, value, headers in records:
        plans.append(
            _core.plan(
                topic="bench",
                partition=0,
                offset=offset,
                key=key,
                value=value,
                headers=headers,
                now=now,
            )
        )
        if _core.ledger is not None:
            _core.ledger.aborted()  # as if each were a first sighting
    return plans


def main(concerns: int, workers: int, chunk: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), deploy_dir=REPO / "deploy")
        runtime = Runtime(settings, "127.0.0.1:9")
        runtime.init_keys()
        police = runtime.police_adapter()
        now = datetime.now(UTC)
        records: list[Record] = []
        for offset, item in enumerate(synthetic_concerns(concerns, seed=99, now=now)):
            out = police.prepare(ConcernModel.model_validate(item))
            records.append((offset, out.key, out.value, list(out.headers)))
        chunks = [records[i : i + chunk] for i in range(0, len(records), chunk)]
        _start_worker(tmp)
        serial: list[float] = []
        pooled: list[float] = []
        pickle_us: list[float] = []
        plan_bytes = 0
        for round_no in range(rounds):
            console.print(f"round {round_no + 1}/{rounds}: serial …")
            started = time.perf_counter()
            plans = _plan_all(records)
            serial.append(len(records) / (time.perf_counter() - started))
            started = time.perf_counter()
            wire = pickle.dumps(plans)
            pickle.loads(wire)
            pickle_us.append((time.perf_counter() - started) / len(plans) * 1e6)
            plan_bytes = len(wire) // len(plans)
            console.print(f"round {round_no + 1}/{rounds}: {workers} workers …")
            with ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(tmp,)) as pool:
                list(pool.map(_plan_all, [records[:2]] * workers))  # workers started and warm
                started = time.perf_counter()
                planned = sum(len(p) for p in pool.map(_plan_all, chunks))
                pooled.append(planned / (time.perf_counter() - started))
    result: dict[str, Any] = {
        "concerns": concerns,
        "workers": workers,
        "chunk": chunk,
        "rounds": rounds,
        "serial_per_s": round(max(serial), 1),
        "pool_per_s": round(max(pooled), 1),
        "pool_to_serial_ratio": round(max(pooled) / max(serial), 3),
        "plan_pickled_bytes": plan_bytes,
        "plan_pickle_round_trip_us": round(min(pickle_us), 1),
        "pickle_share_of_serial_plan": round(min(pickle_us) / 1e6 * max(serial), 3),
    }
    show_result(f"RouterCore.plan: serial against {workers} worker processes", result)
    return result


if __name__ == "__main__":
    configure_logging(level="WARNING")  # stdout is for the JSON result only
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concerns", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(main(args.concerns, args.workers, args.chunk, args.rounds)))
    sys.exit(0)
