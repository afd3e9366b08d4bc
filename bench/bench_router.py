"""Router throughput with every protection on, as a ratio to raw aiokafka pass-through.

Same broker, same run, same consumer-group and producer settings:

* **raw**: a consumer group reads N signed concern records and re-produces the
  same bytes to another topic (acks=all), committing after each batch.
* **router**: the real router reads the same N records and decodes, verifies
  the publisher's signature, validates, routes, decides per recipient,
  minimises, encrypts per recipient, signs, produces the audit records first
  (acks=all), then the disclosures, and commits.
* **core**: `RouterCore.plan` alone, with no Kafka at all (the CPU ceiling).

Rounds alternate raw/router to spread machine noise; the best of each is
reported. Group-join time is excluded (timed from the first fetched batch to
the last commit). Usage: python bench/bench_router.py [--concerns N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

from adapters import synthetic_concerns
from broker import OutRecord, Settings, kafka_cluster, make_producer, send_all
from safer import Runtime
from schemas import ConcernModel

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


async def _produce(runtime: Runtime, records: list[OutRecord], topic: str) -> None:
    producer = make_producer(runtime.bootstrap)
    await producer.start()
    try:
        await send_all(producer, [OutRecord(topic, r.key, r.value, r.headers) for r in records])
    finally:
        await producer.stop()


async def raw_passthrough(runtime: Runtime, records: list[OutRecord], tag: str) -> float:
    source, sink = f"{tag}.raw.in", f"{tag}.raw.out"
    from broker import create_topics

    await create_topics(runtime.bootstrap, {source: 3, sink: 1})
    await _produce(runtime, records, source)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=runtime.bootstrap,
        group_id=f"{tag}-raw",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1500,
        max_poll_records=500,
    )
    producer = make_producer(runtime.bootstrap)
    await producer.start()
    await consumer.start()
    done = 0
    first: float | None = None
    try:
        while done < len(records):
            batch = await consumer.getmany(timeout_ms=250, max_records=500)
            if not batch:
                continue
            first = first or time.monotonic()
            out = [
                OutRecord(sink, m.key, m.value, tuple(m.headers))
                for msgs in batch.values()
                for m in msgs
            ]
            await send_all(producer, out)
            await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in batch.items()})
            done += len(out)
        assert first is not None
        return len(records) / (time.monotonic() - first)
    finally:
        await consumer.stop()
        await producer.stop()


async def routed(runtime: Runtime, records: list[OutRecord]) -> tuple[float, dict[str, int]]:
    await _produce(runtime, records, runtime.settings.topics.inbound("police"))
    router = runtime.router(group_id=f"{runtime.settings.topic_prefix}-router")
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop))
    while router.totals["inbound"] < len(records):
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert router.first_batch_at is not None and router.last_batch_at is not None
    rate = len(records) / (router.last_batch_at - router.first_batch_at)
    return rate, dict(router.totals)


def core_only(runtime: Runtime, records: list[OutRecord]) -> float:
    core = runtime.router_core()
    now = datetime.now(UTC)
    start = time.perf_counter()
    for i, r in enumerate(records):
        core.plan(
            topic="bench",
            partition=0,
            offset=i,
            key=r.key,
            value=r.value,
            headers=r.headers,
            now=now,
        )
    return len(records) / (time.perf_counter() - start)


async def main(concerns: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, kafka_cluster() as bootstrap:
        settings = Settings(
            data_dir=Path(tmp), deploy_dir=REPO / "deploy", bootstrap_servers=bootstrap
        )
        now = datetime.now(UTC)
        items = [
            ConcernModel.model_validate(d) for d in synthetic_concerns(concerns, seed=99, now=now)
        ]
        raw_rates: list[float] = []
        router_rates: list[float] = []
        totals: dict[str, int] = {}
        for round_no in range(rounds):
            tag = f"bench{secrets.token_hex(3)}"
            runtime = Runtime(settings.model_copy(update={"topic_prefix": tag}), bootstrap)
            runtime.init_keys()
            await runtime.create_topics()
            police = runtime.police_adapter()
            records = [police.prepare(c) for c in items]
            console.print(f"round {round_no + 1}/{rounds}: raw pass-through …")
            raw_rates.append(await raw_passthrough(runtime, records, tag))
            console.print(f"round {round_no + 1}/{rounds}: router …")
            rate, totals = await routed(runtime, records)
            router_rates.append(rate)
        core_rate = core_only(runtime, records)
    result = {
        "concerns": concerns,
        "rounds": rounds,
        "raw_passthrough_per_s": round(max(raw_rates), 1),
        "router_per_s": round(max(router_rates), 1),
        "router_to_raw_ratio": round(max(router_rates) / max(raw_rates), 3),
        "core_plan_per_s": round(core_rate, 1),
        "outputs_per_concern": round(
            (totals.get("DISCLOSED", 0) + totals.get("REFERRED", 0)) / concerns, 2
        ),
        "decisions_per_concern": round(
            sum(totals.get(k, 0) for k in ("DISCLOSED", "REFERRED", "WITHHELD")) / concerns, 2
        ),
    }
    table = Table(
        title=f"router vs raw aiokafka pass-through ({concerns} concerns, best of {rounds})"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    console.print(table)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concerns", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.concerns, args.rounds))))
    sys.exit(0)
