"""Router scale-out on Apache Kafka: 1 against 2 `safer route` processes in one group.

Issue 12 asks that throughput grow at least 1.8x from one router process to two
(N = cores) on at least 12 inbound partitions. Same run, same machine, same
synthetic concerns; rounds alternate 1 and 2 routers to spread machine noise
and the best of each is reported.

Each measure: fresh topics (12 inbound partitions), the routers started as real
child processes and given time to join and split the partitions, then every
concern published at once. Throughput is the number of concerns over the time
from the start of publishing to the timestamp of the last routed-ledger record
(written in the transaction of the last batch), so group joins and process
start-up are excluded for both. The broker runs on the same
machine and competes for the same cores: that is part of what is measured.

The last line of stdout is one JSON object with ``one_router_per_s``,
``two_routers_per_s`` and ``scale_out_ratio``.
Usage: python bench/bench_scale_out.py [--concerns N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _bench_common import last_routed_at, show_result
from rich.console import Console

from adapters import synthetic_concerns
from broker import Settings, kafka_engine, make_producer, send_all
from safer import Runtime
from safer._logging import configure_logging
from schemas import ConcernModel

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


def _assigned(log: Path) -> set[str]:
    """The partitions a router last logged as its own."""
    latest: set[str] = set()
    if log.exists():
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "router.assigned":
                    latest = set(event["partitions"])
    return latest


async def measure(
    settings: Settings, bootstrap: str, items: list[ConcernModel], routers: int
) -> float:
    tag = f"so{secrets.token_hex(3)}"
    runtime = Runtime(settings.model_copy(update={"topic_prefix": tag}), bootstrap)
    runtime.init_keys()
    await runtime.create_topics()
    records = [runtime.police_adapter().prepare(c) for c in items]
    logs = [settings.data_dir / f"{tag}-router-{i}.log" for i in range(routers)]
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in logs]
    tasks = [
        asyncio.create_task(
            runtime.run_router_process(
                stop, readies[i], instance=str(i), group_id=f"{tag}-router", log_file=log
            )
        )
        for i, log in enumerate(logs)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
        partitions = settings.inbound_partitions
        while True:  # until the group has settled: every partition owned, none twice
            shares = [_assigned(log) for log in logs]
            owned = set().union(*shares)
            if all(shares) and len(owned) == partitions and sum(map(len, shares)) == partitions:
                break
            await asyncio.sleep(0.2)
        producer = make_producer(runtime.bootstrap)
        await producer.start()
        started = time.time()
        try:
            await send_all(producer, records)
        finally:
            await producer.stop()
        span = await last_routed_at(runtime, len(records), timeout=600) - started
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return len(records) / span


async def main(concerns: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp), deploy_dir=REPO / "deploy")
        with kafka_engine(base, progress=lambda m: console.print(f"kafka: {m}")) as engine:
            settings = base.model_copy(update={"bootstrap_servers": engine.bootstrap_servers})
            now = datetime.now(UTC)
            items = [
                ConcernModel.model_validate(d)
                for d in synthetic_concerns(concerns, seed=99, now=now)
            ]
            rates: dict[int, list[float]] = {1: [], 2: []}
            for round_no in range(rounds):
                for routers in (1, 2):
                    console.print(f"round {round_no + 1}/{rounds}: {routers} router(s) …")
                    rate = await measure(settings, engine.bootstrap_servers, items, routers)
                    console.print(f"  {rate:.1f} concerns/s")
                    rates[routers].append(rate)
    one, two = max(rates[1]), max(rates[2])
    result: dict[str, Any] = {
        "engine": engine.name,
        "concerns": concerns,
        "rounds": rounds,
        "cores": os.cpu_count(),
        "inbound_partitions": settings.inbound_partitions,
        "one_router_per_s": round(one, 1),
        "two_routers_per_s": round(two, 1),
        "scale_out_ratio": round(two / one, 3),
        "all_one_router_per_s": [round(r, 1) for r in rates[1]],
        "all_two_routers_per_s": [round(r, 1) for r in rates[2]],
    }
    show_result(
        f"router scale-out on {engine.name} ({concerns} concerns, best of {rounds})", result
    )
    return result


if __name__ == "__main__":
    configure_logging(level="WARNING")  # stdout is for the JSON result only
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concerns", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.concerns, args.rounds))))
    sys.exit(0)
