"""The audit feed re-reads a partition when a fetch skips offsets (``OffsetGapGuard``).

Tansu advances a partition's high watermark before it stores the batch, so a
fetch at the tip of a partition that several producers write to (``hips.receipts``
has one producer per recipient) can come back without a record whose offset is
already handed out; the next fetch has it. A feed that took the fetch as it came
logged every receipt but one and stored a position past the missing one. The
race needs a loaded machine, so here it is injected: the feed's consumer (on the
real broker) drops one record from what it returns, once or every time.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from structlog.testing import capture_logs

import broker._feed
from audit import AuditRecord, AuditStore, entry_id_for
from broker import (
    ROUTER_ID,
    AuditFeed,
    Headers,
    OutRecord,
    make_producer,
    send_all,
    signed_record,
)
from safer import Runtime
from schemas import AUDIT_RECORD, AuditEvent

from .spine import make_runtime

pytestmark = [pytest.mark.kafka]

N_RECORDS = 12
SKIPPED = 5  # the offset the "broker" leaves out of a fetch


class _SkippingConsumer(AIOKafkaConsumer):
    """A real consumer whose fetches leave out offset ``SKIPPED`` (``times`` times)."""

    times = 1
    skipped = 0

    async def getmany(self, *partitions: Any, **kwargs: Any) -> dict[Any, list[Any]]:
        fetched: dict[Any, list[Any]] = await super().getmany(*partitions, **kwargs)
        for records in fetched.values():
            keep = [r for r in records if r.offset != SKIPPED]
            if len(keep) < len(records) and type(self).skipped < type(self).times:
                type(self).skipped += 1
                records[:] = keep
        return fetched


@pytest.fixture
def skipping(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_SkippingConsumer]]:
    _SkippingConsumer.times, _SkippingConsumer.skipped = 1, 0
    monkeypatch.setattr(broker._feed, "AIOKafkaConsumer", _SkippingConsumer)
    yield _SkippingConsumer


def _audit_out(runtime: Runtime, n: int) -> OutRecord:
    disclosure_id = hashlib.sha256(f"gap-{n}".encode()).hexdigest()[:32]
    record = AuditRecord(
        entry_id=entry_id_for(AuditEvent.WITHHELD, disclosure_id),
        event=AuditEvent.WITHHELD,
        disclosure_id=disclosure_id,
        decision_id=f"decision-{n}",
        concern_id=f"concern-{n}",
        source="hampshire-constabulary",
        reason_codes=("BELOW_THRESHOLD",),
        at=datetime(2025, 3, 4, 8, 30, tzinfo=UTC) + timedelta(seconds=n),
        actor="safer-router",
    )
    return signed_record(
        runtime.codec,
        runtime.keys.signing_identity(ROUTER_ID),
        AUDIT_RECORD,
        record.to_avro(),
        topic=runtime.settings.topics.audit,
        key=disclosure_id.encode(),
        record_id=disclosure_id,
        id_header=Headers.DISCLOSURE_ID,
    )


async def _feed_to_end(runtime: Runtime, store: AuditStore, *, gap_wait: float) -> AuditFeed:
    """Produce the records, run the feed until it has passed all of them, stop it."""
    await runtime.create_topics()
    producer = make_producer(runtime.bootstrap)
    await producer.start()
    try:
        await send_all(producer, [_audit_out(runtime, n) for n in range(N_RECORDS)])
    finally:
        await producer.stop()
    feed = AuditFeed(
        store=store,
        codec=runtime.codec,
        keyring=runtime.keyring(),
        topics=runtime.settings.topics,
        bootstrap_servers=runtime.bootstrap,
        router_id=ROUTER_ID,
        batch_size=100,
        gap_wait=gap_wait,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    end = (runtime.settings.topics.audit, 0)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while store.feed_offsets().get(end, 0) < N_RECORDS:
            assert asyncio.get_running_loop().time() < deadline, "the feed did not reach the end"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    return feed


async def test_a_fetch_that_skips_an_offset_is_read_again_and_nothing_is_lost(
    kafka_bootstrap: str, tmp_path: Path, skipping: type[_SkippingConsumer]
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"gap{secrets.token_hex(3)}")
    with capture_logs() as logs, AuditStore(tmp_path / "audit.db") as store:
        feed = await _feed_to_end(runtime, store, gap_wait=30)
        assert skipping.skipped == 1
        assert store.count() == N_RECORDS
        assert feed.totals["gap_rereads"] >= 1 and not feed.totals["offset_gaps"]
    assert not [e for e in logs if e["event"] == "kafka.offset_gap"]


async def test_a_gap_that_stays_is_logged_and_the_feed_moves_on(
    kafka_bootstrap: str, tmp_path: Path, skipping: type[_SkippingConsumer]
) -> None:
    skipping.times = 10**9  # as Kafka does for a transaction marker or a compacted record
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"gap{secrets.token_hex(3)}")
    with capture_logs() as logs, AuditStore(tmp_path / "audit.db") as store:
        feed = await _feed_to_end(runtime, store, gap_wait=0.3)
        assert store.count() == N_RECORDS - 1
        assert feed.totals["offset_gaps"] == 1
    gaps = [e for e in logs if e["event"] == "kafka.offset_gap"]
    assert [(e["expected"], e["got"]) for e in gaps] == [(SKIPPED, SKIPPED + 1)]
