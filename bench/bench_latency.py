"""Latency under `safer up`: publish → recipient topic, and publish → recipient inbox.

Issue 12 asks, at 25% of measured capacity, for publish → recipient topic
p99 ≤ 50 ms and publish → recipient inbox p99 ≤ 250 ms. This runs the services
as `safer up` does (the router in its own process; audit feed, every recipient
adapter and the monitor in this one), on a local Apache Kafka, and:

1. measures capacity: a burst of ``--burst`` concerns, routed as fast as the
   router can (concerns over the time from the burst's start to the last
   routed-ledger record);
2. offers ``--load`` (default 0.25) of that capacity, evenly paced, for
   ``--seconds``;
3. times each disclosure of an offered concern from just before the concern's
   send to the moment a read_committed consumer sees it on its recipient topic
   (publish → topic), and to its inbox copy's ``received_at`` (publish → inbox).

Percentiles are over every disclosure of the paced phase. The last line of
stdout is one JSON object with p50/p95/p99 for both, in milliseconds.
Usage: python bench/bench_latency.py [--burst N] [--seconds S] [--load F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _bench_common import last_routed_at, show_result
from rich.console import Console
from rich.progress import Progress

from adapters import Inbox, synthetic_concerns
from audit import AuditStore
from broker import Headers, Settings, kafka_engine, make_consumer, make_producer, send_all
from safer import Runtime
from safer._logging import configure_logging
from schemas import ConcernModel

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


def _percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


async def _watch_topics(runtime: Runtime, arrived: dict[str, float], stop: asyncio.Event) -> None:
    """Note when each disclosure becomes visible on a recipient topic (by disclosure id:
    disclosures carry no concern id header; the inbox copy links the two)."""
    consumer = make_consumer(runtime.bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=5)
    await consumer.start()
    try:
        consumer.subscribe(list(runtime.settings.topics.all_recipient_topics()))
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=20)).values():
                now = time.time()
                for record in records:
                    disclosure = dict(record.headers).get(Headers.DISCLOSURE_ID)
                    if disclosure is not None:
                        arrived.setdefault(disclosure.decode(), now)
    finally:
        await consumer.stop()


async def main(burst: int, seconds: float, load: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp), deploy_dir=REPO / "deploy", topic_prefix="lat")
        with kafka_engine(base, progress=lambda m: console.print(f"kafka: {m}")) as engine:
            settings = base.model_copy(update={"bootstrap_servers": engine.bootstrap_servers})
            runtime = Runtime(settings, engine.bootstrap_servers)
            runtime.init_keys()
            await runtime.create_topics()
            police = runtime.police_adapter()
            now = datetime.now(UTC)
            burst_items = [
                ConcernModel.model_validate(d) for d in synthetic_concerns(burst, seed=7, now=now)
            ]
            store = AuditStore(runtime.settings.audit_db)
            stop = asyncio.Event()
            ready = asyncio.Event()
            services = asyncio.create_task(
                runtime.run_services(
                    stop,
                    store=store,
                    on_ready=ready.set,
                    router_process=True,
                    log_file=Path(tmp) / "services.log",
                )
            )
            producer = make_producer(runtime.bootstrap)
            watch_stop = asyncio.Event()
            arrived: dict[str, float] = {}
            watcher: asyncio.Task[None] | None = None
            try:
                await asyncio.wait_for(ready.wait(), 120)
                await producer.start()
                console.print(f"capacity: a burst of {burst} concerns …")
                started = time.time()
                await send_all(producer, [police.prepare(c) for c in burst_items])
                capacity = burst / (await last_routed_at(runtime, burst, 600) - started)
                rate = capacity * load
                offered = max(int(rate * seconds), 20)
                console.print(
                    f"capacity {capacity:.0f}/s; offering {rate:.0f}/s for {seconds:.0f} s"
                )
                paced = [
                    ConcernModel.model_validate(d)
                    for d in synthetic_concerns(offered, seed=8, now=datetime.now(UTC))
                ]
                watcher = asyncio.create_task(_watch_topics(runtime, arrived, watch_stop))
                await asyncio.sleep(2)  # the watcher has joined and sits at the end
                sent_at: dict[str, float] = {}
                t0 = time.monotonic()
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task("offering", total=offered)
                    for i, item in enumerate(paced):
                        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                        record = police.prepare(item)
                        sent_at[item.concern_id] = time.time()
                        await send_all(producer, [record])
                        progress.advance(task)
                await last_routed_at(runtime, burst + offered, 120)
                await asyncio.sleep(3)  # the inboxes and the watcher catch up
            finally:
                watch_stop.set()
                if watcher is not None:
                    await watcher
                await producer.stop()
                stop.set()
                await services
                store.close()

            to_topic = [(arrived[c] - sent) * 1000 for c, sent in sent_at.items() if c in arrived]
            to_inbox: list[float] = []
            for recipient in runtime.deployment.directory.recipients:
                path = runtime.inbox_path(recipient.id)
                if not path.exists():
                    continue
                with Inbox(path) as inbox:
                    for item in inbox.items():
                        sent = sent_at.get(item.concern_id)
                        if sent is None:
                            continue
                        received = datetime.fromisoformat(item.received_at).timestamp()
                        to_inbox.append((received - sent) * 1000)
                        if item.disclosure_id in arrived:
                            to_topic.append((arrived[item.disclosure_id] - sent) * 1000)
    result: dict[str, Any] = {
        "engine": engine.name,
        "capacity_per_s": round(capacity, 1),
        "offered_per_s": round(rate, 1),
        "offered": offered,
        "seen_on_topic": len(to_topic),
        "inbox_copies": len(to_inbox),
        "publish_to_topic_ms": _percentiles(to_topic),
        "publish_to_inbox_ms": _percentiles(to_inbox),
    }
    show_result(f"latency under safer up at {load:.0%} of capacity", result)
    return result


if __name__ == "__main__":
    configure_logging(level="WARNING")  # stdout is for the JSON result only
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--load", type=float, default=0.25)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.burst, args.seconds, args.load))))
    sys.exit(0)
