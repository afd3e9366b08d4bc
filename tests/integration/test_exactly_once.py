"""Exactly-once routing on Apache Kafka (issue 10, point 3; DESIGN §4.1, §6).

A routing batch is one Kafka transaction: its audit records, disclosures,
referrals, quarantines and input offsets become visible together, or not at
all. Shown here with a real router whose transaction fails after every record
was written to the log: a ``read_uncommitted`` reader sees the aborted records,
a ``read_committed`` reader (every SAFER consumer) sees none of them, and the
replay makes each record visible exactly once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from broker import Headers, Plan, Router, assign_stored, audit_records_in, read_topic
from safer import Runtime
from schemas import AgencyType

from .spine import concerns, make_runtime, publish

pytestmark = pytest.mark.kafka


async def _read_uncommitted(bootstrap: str, topic: str) -> list[Any]:
    """Every record in the log, committed, aborted or open (what no SAFER reader does)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_uncommitted",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = await assign_stored(consumer, [topic], {})  # every partition, from the start
        ends = await consumer.end_offsets(tps)  # read_uncommitted: high watermarks
        records: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for items in batch.values():
                records.extend(items)
        return records
    finally:
        await consumer.stop()


def _ids(records: Sequence[Any]) -> Counter[str]:
    return Counter(
        dict(r.headers)[Headers.DISCLOSURE_ID].decode()
        for r in records
        if Headers.DISCLOSURE_ID in dict(r.headers)
    )


async def _recipient_records(runtime: Runtime, *, committed: bool) -> list[Any]:
    out: list[Any] = []
    for topic in runtime.settings.topics.all_recipient_topics():
        if committed:
            out += await read_topic(runtime.bootstrap, topic)
        else:
            out += await _read_uncommitted(runtime.bootstrap, topic)
    return out


async def _run_router_until(router: Router, done: asyncio.Event, timeout: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop))
    waiter = asyncio.create_task(done.wait())
    finished, _ = await asyncio.wait({task, waiter}, timeout=timeout, return_when="FIRST_COMPLETED")
    stop.set()
    waiter.cancel()
    if task in finished:
        task.result()  # raise what stopped it
    await task


async def test_an_aborted_batch_is_invisible_and_its_replay_lands_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"eos{secrets.token_hex(3)}")
    await runtime.create_topics()
    items = concerns(40, seed=17)
    await publish(runtime, items)
    group = f"eos-{secrets.token_hex(3)}"
    inbound = [runtime.settings.topics.inbound(AgencyType.POLICE.value)]

    # 1. A router whose transaction fails after every record was sent (the hook runs
    #    just before the commit): the batch is written to the log and aborted.
    written = asyncio.Event()

    def fail_before_commit(plans: Sequence[Plan]) -> None:
        written.set()
        raise RuntimeError("simulated crash between produce and commit")

    failing = Router(
        runtime.router_core(),
        bootstrap_servers=runtime.bootstrap,
        inbound_topics=inbound,
        group_id=group,
        instance="a",
        on_delivered=fail_before_commit,
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        await _run_router_until(failing, asyncio.Event(), timeout=60)
    assert written.is_set()

    aborted = _ids(await _recipient_records(runtime, committed=False))
    audit_log = await _read_uncommitted(runtime.bootstrap, runtime.settings.topics.audit)
    assert aborted, "the failed transaction wrote disclosures to the log"
    assert audit_log, "and their audit records"
    # Nothing of it is visible to a read_committed reader: not a disclosure, not an
    # audit record, and the input offsets were not committed either.
    assert await _recipient_records(runtime, committed=True) == []
    assert await read_topic(runtime.bootstrap, runtime.settings.topics.audit) == []

    # 2. The replay (a new router in the same group) routes the same concerns once.
    audited = asyncio.Event()
    expected = {c.concern_id for c in items}
    seen: set[str] = set()

    def seen_all(plans: Sequence[Plan]) -> None:
        seen.update(p.concern_id for p in plans if p.concern_id)
        if expected <= seen:
            audited.set()

    replay = Router(
        runtime.router_core(),
        bootstrap_servers=runtime.bootstrap,
        inbound_topics=inbound,
        group_id=group,
        instance="b",
        on_delivered=seen_all,
    )
    await _run_router_until(replay, audited, timeout=90)
    assert audited.is_set(), "the replay did not route every concern"

    visible = _ids(await _recipient_records(runtime, committed=True))
    assert visible, "the replay delivered nothing"
    assert max(visible.values()) == 1, "a disclosure is visible twice"
    # Deterministic ids: the replay wrote the very disclosures the aborted batch had.
    assert set(visible) == set(aborted)
    # In the raw log the same ids are there twice: once aborted, once committed.
    raw = _ids(await _recipient_records(runtime, committed=False))
    assert all(raw[i] == 2 for i in visible)

    # Every visible disclosure has its audit record, and no audit record is there twice.
    audit = await read_topic(runtime.bootstrap, runtime.settings.topics.audit)
    events = Counter(
        (entry["event"], entry["disclosure_id"] or entry["entry_id"])
        for r in audit
        for entry in audit_records_in(runtime.codec, r.value)
    )
    assert max(events.values()) == 1, "an audit record is visible twice"
    audited_ids = {key for event, key in events if event in ("DISCLOSED", "REFERRED")}
    assert set(visible) <= audited_ids
