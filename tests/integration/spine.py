"""Shared helpers for the end-to-end tests of the spine (real broker, real files)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters import Inbox, ParsedRecord, synthetic_concerns
from audit import AuditStore
from broker import (
    Headers,
    OutRecord,
    Settings,
    audit_records_in,
    make_producer,
    read_topic,
    send_all,
)
from safer import Runtime
from schemas import AuditEvent, ConcernModel

REPO = Path(__file__).resolve().parents[2]
DECISIONS = {"DISCLOSED", "WITHHELD", "REFERRED", "QUARANTINED"}


def make_runtime(tmp_path: Path, bootstrap: str, prefix: str) -> Runtime:
    settings = Settings(
        data_dir=tmp_path / "data",
        deploy_dir=REPO / "deploy",
        topic_prefix=prefix,
        bootstrap_servers=bootstrap,
    )
    runtime = Runtime(settings, bootstrap)
    runtime.init_keys()
    return runtime


def concerns(n: int, seed: int) -> list[ConcernModel]:
    now = datetime.now(UTC)
    return [ConcernModel.model_validate(d) for d in synthetic_concerns(n, seed=seed, now=now)]


async def publish(
    runtime: Runtime, items: list[ConcernModel], extra: Iterable[OutRecord] = ()
) -> None:
    police = runtime.police_adapter()
    producer = make_producer(runtime.bootstrap, **runtime.security_for(runtime.publisher().id))
    await producer.start()
    try:
        parsed = [ParsedRecord(str(i), c, c.concern_id, "ACCEPTED") for i, c in enumerate(items)]
        outcomes = await police.publish(producer, parsed)
        assert all(o.status == "ACCEPTED" for o in outcomes)
        await send_all(producer, list(extra))
    finally:
        await producer.stop()


@dataclass
class Accounting:
    decided: dict[str, set[str]] = field(default_factory=dict)  # concern -> events
    delivered: set[str] = field(default_factory=set)
    received: set[str] = field(default_factory=set)
    quarantine_codes: dict[str, list[str]] = field(default_factory=dict)  # concern -> codes
    entries: int = 0


def account(store: AuditStore) -> Accounting:
    acc = Accounting()
    for record in store.records():
        acc.entries += 1
        event = str(record.event.value if hasattr(record.event, "value") else record.event)
        if event in DECISIONS and record.concern_id:
            acc.decided.setdefault(record.concern_id, set()).add(event)
        if event in ("DISCLOSED", "REFERRED") and record.disclosure_id:
            acc.delivered.add(record.disclosure_id)
        if event == AuditEvent.RECEIVED.value and record.disclosure_id:
            acc.received.add(record.disclosure_id)
        if event == "QUARANTINED" and record.concern_id:
            acc.quarantine_codes.setdefault(record.concern_id, []).extend(record.reason_codes)
    return acc


async def wait_accounted(
    store: AuditStore,
    expected: set[str],
    *,
    timeout: float,
    service: asyncio.Task[Any] | None = None,
) -> Accounting:
    deadline = time.monotonic() + timeout
    while True:
        acc = account(store)
        if expected <= set(acc.decided) and acc.delivered <= acc.received:
            return acc
        if service is not None and service.done():
            service.result()
        if time.monotonic() > deadline:
            missing = len(expected - set(acc.decided))
            unreceived = len(acc.delivered - acc.received)
            raise AssertionError(
                f"not accounted after {timeout}s: {missing} undecided, {unreceived} unreceived"
            )
        await asyncio.sleep(0.25)


async def read_all(runtime: Runtime, topics: Iterable[str]) -> dict[str, list[Any]]:
    return {t: await read_topic(runtime.bootstrap, t, timeout=60) for t in topics}


async def run_flow(
    runtime: Runtime,
    items: list[ConcernModel],
    extra: Iterable[OutRecord] = (),
    *,
    expected: set[str],
    timeout: float = 180,
    ready_timeout: float = 60,
) -> Accounting:
    """Run every service, publish, and wait until everything is accounted for."""
    store = AuditStore(runtime.settings.audit_db)
    stop = asyncio.Event()
    ready = asyncio.Event()
    services = asyncio.create_task(runtime.run_services(stop, store=store, on_ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), ready_timeout)
        await publish(runtime, items, extra)
        return await wait_accounted(store, expected, timeout=timeout, service=services)
    finally:
        stop.set()
        await services
        store.close()


def assert_delivered_exactly_once(runtime: Runtime) -> None:
    """No inbox holds a disclosure twice, and each holds exactly what was audited for it."""
    audited: dict[str, set[str]] = {}
    with AuditStore(runtime.settings.audit_db) as store:
        for record in store.records():
            if record.event.value in ("DISCLOSED", "REFERRED") and record.recipient:
                audited.setdefault(record.recipient, set()).add(record.disclosure_id or "")
        entry_ids = [r.entry_id for r in store.records()]
    assert len(entry_ids) == len(set(entry_ids)), "duplicate audit entries"
    for recipient in runtime.deployment.directory.recipients:
        with Inbox(runtime.inbox_path(recipient.id)) as inbox:
            ids = inbox.disclosure_ids()
            assert len(ids) == len(set(ids)), f"inbox {recipient.id} holds a disclosure twice"
            assert set(ids) == audited.get(recipient.id, set())


async def assert_topics_exactly_once(runtime: Runtime) -> None:
    """Read as every SAFER reader reads them (read_committed): no audit record and no
    disclosure is on a topic twice, and every visible disclosure has its audit record."""
    t = runtime.settings.topics
    topics = await read_all(runtime, [t.audit, *t.all_recipient_topics()])
    audit_keys: Counter[tuple[str, str]] = Counter()
    disclosed: set[str] = set()
    for record in topics[t.audit]:
        for entry in audit_records_in(runtime.codec, record.value):
            audit_keys[(entry["event"], entry["entry_id"])] += 1
            if entry["event"] in ("DISCLOSED", "REFERRED"):
                disclosed.add(entry["disclosure_id"])
    assert audit_keys and max(audit_keys.values()) == 1, "an audit record is on hips.audit twice"
    on_topics: Counter[str] = Counter()
    for name in t.all_recipient_topics():
        for record in topics[name]:
            on_topics[dict(record.headers)[Headers.DISCLOSURE_ID].decode()] += 1
    assert on_topics and max(on_topics.values()) == 1, "a disclosure is on a recipient topic twice"
    assert set(on_topics) == disclosed  # audit-first: nothing visible without its record
