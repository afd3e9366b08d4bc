"""Latency under `safer up`: publish → recipient topic, and publish → recipient inbox.

Issue 12 asks, at 25% of measured capacity, for publish → recipient topic
p99 ≤ 50 ms and publish → recipient inbox p99 ≤ 250 ms. This runs the services
as `safer up` does (the router in its own process, every recipient adapter in
another; the audit feed and the monitor in this one), on a local Apache Kafka,
and:

1. measures capacity: a burst of ``--burst`` concerns, routed as fast as the
   router can (concerns over the time from the burst's start to the last
   routed-ledger record);
2. waits until the audit feed and every inbox have caught up on the burst,
   then offers ``--load`` (default 0.25) of that capacity, evenly paced, for
   ``--seconds``;
3. times each disclosure of an offered concern from just before the concern's
   send to the moment a read_committed consumer sees it on its recipient topic
   (publish → topic), and to its inbox copy's ``received_at`` (publish → inbox).
   The publisher and that consumer run in a client process of their own, so the
   services' event loop does not delay their clocks.

Percentiles are over every disclosure of the paced phase. The last line of
stdout is one JSON object with p50/p95/p99 for both, in milliseconds.
Usage: python bench/bench_latency.py [--burst N] [--seconds S] [--load F] [--routers N]
       [--recipients-in-process]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
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
from safer.web._lag import consumer_lag
from schemas import ConcernModel

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


def _percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


async def _drained(settings: Settings, *, timeout: float) -> None:
    """Wait until the readers (audit feed, each inbox) have stopped moving: their lag
    unchanged for 3 s. (Not "zero": a stored position is the last record read plus
    one, and a transaction's commit marker sits after it, so a caught-up reader of a
    transactional topic shows a lag of one per partition.)"""
    deadline = time.monotonic() + timeout
    last: dict[str, int] | None = None
    still = 0
    while time.monotonic() < deadline:
        lags = await consumer_lag(settings)
        still = still + 1 if lags is not None and lags == last else 0
        if still >= 3:
            return
        last = lags
        await asyncio.sleep(1)
    raise TimeoutError(f"the services did not catch up within {timeout:.0f} s")


def _router_batches(log: Path, *, since: datetime) -> list[dict[str, Any]]:
    """The router's ``router.batch`` log lines from ``since`` on."""
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if '"router.batch"' not in line:
            continue
        entry = json.loads(line)
        if datetime.fromisoformat(entry["timestamp"]) >= since:
            found.append(entry)
    return found


async def _watch_topics(
    runtime: Runtime, arrived: dict[str, float], stop: asyncio.Event, joined: asyncio.Event
) -> None:
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
            if consumer.assignment():
                joined.set()
    finally:
        await consumer.stop()


async def _client(
    settings: Settings, bootstrap: str, rate: float, offered: int, ready: Callable[[], None]
) -> tuple[dict[str, float], dict[str, float]]:
    """The publishing police system and a recipient's observer, in a process of their
    own: neither shares an event loop (or a GIL) with the services they time."""
    runtime = Runtime(settings, bootstrap)
    police = runtime.police_adapter()
    paced = [
        police.prepare(ConcernModel.model_validate(d))
        for d in synthetic_concerns(offered, seed=8, now=datetime.now(UTC))
    ]
    producer = make_producer(runtime.bootstrap)
    await producer.start()
    watch_stop, joined = asyncio.Event(), asyncio.Event()
    arrived: dict[str, float] = {}
    watcher = asyncio.create_task(_watch_topics(runtime, arrived, watch_stop, joined))
    sent_at: dict[str, float] = {}
    try:
        await asyncio.wait_for(joined.wait(), 60)
        await asyncio.sleep(2)  # the watcher sits at the end of every topic
        ready()
        t0 = time.monotonic()
        for i, record in enumerate(paced):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            concern_id = dict(record.headers)[Headers.CONCERN_ID].decode()
            sent_at[concern_id] = time.time()
            await send_all(producer, [record])
        # Until nothing new has arrived for 3 s (the last concern's disclosures).
        seen = -1
        while seen != len(arrived):
            seen = len(arrived)
            await asyncio.sleep(3)
    finally:
        watch_stop.set()
        await watcher
        await producer.stop()
    return sent_at, arrived


def _client_process(
    settings: Settings, bootstrap: str, rate: float, offered: int, conn: Connection
) -> None:
    configure_logging(level="WARNING")
    conn.send(asyncio.run(_client(settings, bootstrap, rate, offered, lambda: conn.send("ready"))))


async def main(
    burst: int, seconds: float, load: float, routers: int = 1, recipients_process: bool = True
) -> dict[str, Any]:
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
                    routers=routers,
                    recipients_process=recipients_process,
                    log_file=Path(tmp) / "services.log",
                )
            )
            producer = make_producer(runtime.bootstrap)
            client: SpawnProcess | None = None
            try:
                await asyncio.wait_for(ready.wait(), 120)
                await producer.start()
                console.print(f"capacity: a burst of {burst} concerns …")
                started = time.time()
                await send_all(producer, [police.prepare(c) for c in burst_items])
                capacity = burst / (await last_routed_at(runtime, burst, 600) - started)
                # Steady state, not a backlog: the audit feed and the recipient adapters
                # first finish what the burst gave them.
                console.print("the audit feed and the inboxes catch up on the burst …")
                await _drained(settings, timeout=600)
                rate = capacity * load
                offered = max(int(rate * seconds), 20)
                console.print(
                    f"capacity {capacity:.0f}/s; offering {rate:.0f}/s for {seconds:.0f} s "
                    "from a client process"
                )
                ours, theirs = multiprocessing.get_context("spawn").Pipe()
                client = multiprocessing.get_context("spawn").Process(
                    target=_client_process,
                    args=(settings, engine.bootstrap_servers, rate, offered, theirs),
                    daemon=True,
                )
                client.start()
                if not await asyncio.to_thread(ours.poll, 120) or ours.recv() != "ready":
                    raise RuntimeError("the client process did not start; see its stderr")
                offering_from = time.monotonic()
                offering_from_wall = datetime.now(UTC)
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task("offering (seconds)", total=seconds)
                    routed = asyncio.create_task(last_routed_at(runtime, burst + offered, 600))
                    while not routed.done():
                        await asyncio.sleep(0.5)
                        elapsed = time.monotonic() - offering_from
                        progress.update(task, completed=min(seconds, elapsed))
                    await routed
                if not await asyncio.to_thread(ours.poll, 120):
                    raise RuntimeError("the client process sent no timings")
                sent_at, arrived = ours.recv()
                await asyncio.sleep(3)  # the inboxes catch up
            finally:
                if client is not None:
                    client.join(10)
                    if client.is_alive():
                        client.kill()
                await producer.stop()
                stop.set()
                await services
                store.close()

            batches = _router_batches(Path(tmp) / "services.log", since=offering_from_wall)
            to_topic: list[float] = []
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
        "routers": routers,
        "recipients_process": recipients_process,
        "capacity_per_s": round(capacity, 1),
        "offered_per_s": round(rate, 1),
        "offered": offered,
        "seen_on_topic": len(to_topic),
        "inbox_copies": len(to_inbox),
        "publish_to_topic_ms": _percentiles(to_topic),
        "publish_to_inbox_ms": _percentiles(to_inbox),
        # The router's own account of the paced phase's batches (its log).
        "router_batches": len(batches),
        "router_batch_concerns": _percentiles([b["inbound"] for b in batches]),
        "router_waited_ms": _percentiles([b["waited_ms"] for b in batches]),
        "router_plan_ms": _percentiles([b["plan_ms"] for b in batches]),
        "router_commit_ms": _percentiles([b["commit_ms"] for b in batches]),
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
    parser.add_argument(
        "--routers", type=int, default=1, help="router processes, as `safer up --routers N`"
    )
    parser.add_argument(
        "--recipients-in-process",
        action="store_true",
        help="run the recipient adapters on the audit feed's event loop (the layout before "
        "`safer recipients`), for comparison",
    )
    args = parser.parse_args()
    result = main(args.burst, args.seconds, args.load, args.routers, not args.recipients_in_process)
    print(json.dumps(asyncio.run(result)))
    sys.exit(0)
