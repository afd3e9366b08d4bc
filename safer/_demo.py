"""`safer demo`: the whole spine on synthetic data, end to end, then audited.

Publishes N synthetic concerns plus a few deliberately bad records, runs the
router, every recipient adapter and the audit feed until every published
record is accounted for, then verifies the audit log.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters import ParsedRecord, synthetic_concerns
from audit import AuditStore, verify_store
from broker import (
    Headers,
    OutRecord,
    Settings,
    SigningIdentity,
    make_producer,
    send_all,
    tracked_from_records,
)
from consent import completed_at
from schemas import AuditEvent, ConcernModel, LogTamperedError, Lscp

from ._runtime import Runtime

__all__ = ["DemoResult", "bad_records", "run_demo"]

DECISION_EVENTS = {
    AuditEvent.DISCLOSED.value,
    AuditEvent.WITHHELD.value,
    AuditEvent.REFERRED.value,
    AuditEvent.QUARANTINED.value,
}


@dataclass
class DemoResult:
    published: int = 0
    disclosed: int = 0
    withheld: int = 0
    referred: int = 0
    quarantined: int = 0
    received: int = 0
    audit_records: int = 0
    audit_verified: bool = False
    accounted: bool = False
    by_lscp: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantine_codes: dict[str, int] = field(default_factory=dict)
    withheld_codes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    deadlines_total: int = 0
    deadlines_met: int = 0
    deadlines_open: int = 0
    deadlines_missed: int = 0
    deadline_rules: dict[str, int] = field(default_factory=dict)
    #: What ran it, e.g. ``apache-kafka 4.4.0`` (``external`` for KAFKA_BOOTSTRAP_SERVERS).
    engine: str = ""
    #: Routing ran in Kafka transactions (read_committed everywhere).
    exactly_once: bool = True

    @property
    def ok(self) -> bool:
        return self.accounted and self.audit_verified

    def to_json(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "disclosed": self.disclosed,
            "withheld": self.withheld,
            "referred": self.referred,
            "quarantined": self.quarantined,
            "received": self.received,
            "audit_records": self.audit_records,
            "audit_verified": self.audit_verified,
            "by_lscp": self.by_lscp,
            "seconds": round(self.seconds, 3),
            "deadlines_total": self.deadlines_total,
            "deadlines_met": self.deadlines_met,
            "engine": self.engine,
            "exactly_once": self.exactly_once,
        }


def bad_records(runtime: Runtime, sample: ConcernModel) -> list[tuple[str, OutRecord]]:
    """Deliberately bad inbound records, each labelled with the code it must get."""
    police = runtime.police_adapter()
    topic = runtime.settings.topics.inbound("police")
    rogue = SigningIdentity("rogue-publisher", Ed25519PrivateKey.generate())
    rogue_adapter = type(police)(
        codec=runtime.codec,
        identity=rogue,
        pseudonym_secret=runtime.keys.pseudonym_secret(),
        topic=topic,
    )

    def fresh(**changes: Any) -> ConcernModel:
        return sample.model_copy(update={"concern_id": str(uuid.uuid4()), **changes})

    out: list[tuple[str, OutRecord]] = []
    # 1. Forged: signed by a stranger's key but claiming the police key id.
    forged = rogue_adapter.prepare(fresh())
    police_key_id = police.prepare(fresh()).headers
    real_key = dict(police_key_id)[Headers.KEY_ID]
    headers = tuple((k, real_key if k == Headers.KEY_ID else v) for k, v in forged.headers)
    out.append(("SIGNATURE_INVALID", OutRecord(topic, forged.key, forged.value, headers)))
    # 2. Unknown publisher: validly signed, by a key the directory does not know.
    out.append(("UNKNOWN_PUBLISHER", rogue_adapter.prepare(fresh())))
    # 3. Minimum dataset missing: a child with no date of birth or identifier and
    #    an officer with no contact, sent past the adapter's own validation.
    child = sample.children()[0].model_copy(
        update={"date_of_birth": None, "nhs_number": None, "police_person_id": None}
    )
    officer = sample.officer.model_copy(update={"email": None, "phone": None})
    out.append(
        ("MINIMUM_DATASET_MISSING", police.prepare(fresh(subjects=(child,), officer=officer)))
    )
    # 4. Bytes that are not the wire format at all.
    cid = str(uuid.uuid4()).encode()
    out.append(
        ("DECODE_ERROR", OutRecord(topic, None, b"not avro at all", ((Headers.CONCERN_ID, cid),)))
    )
    # 5. A well-framed record with a schema id nobody registered.
    good = police.prepare(fresh())
    unknown = b"\x00\x7f\xff\xff\xfe" + good.value[5:]
    out.append(("UNKNOWN_SCHEMA", OutRecord(topic, good.key, unknown, good.headers)))
    return out


def _tally(store: AuditStore, result: DemoResult) -> tuple[set[str], set[str], set[str]]:
    """Counts from the audit log; returns (concerns decided, delivered ids, received ids)."""
    counts: Counter[str] = Counter()
    decided: set[str] = set()
    delivered: set[str] = set()
    received: set[str] = set()
    by_lscp = {lscp.value: Counter[str]() for lscp in Lscp}
    codes: Counter[str] = Counter()
    withheld_codes: Counter[str] = Counter()
    for record in store.records():
        event = record.event.value if hasattr(record.event, "value") else str(record.event)
        counts[event] += 1
        if event in DECISION_EVENTS and record.concern_id:
            decided.add(record.concern_id)
        if (
            event in (AuditEvent.DISCLOSED.value, AuditEvent.REFERRED.value)
            and record.disclosure_id
        ):
            delivered.add(record.disclosure_id)
        if event == AuditEvent.RECEIVED.value and record.disclosure_id:
            received.add(record.disclosure_id)
        if event == AuditEvent.QUARANTINED.value:
            codes.update(record.reason_codes)
        if event == AuditEvent.WITHHELD.value:
            withheld_codes.update(record.reason_codes[:1])
        if record.lscp in by_lscp:
            by_lscp[record.lscp][event.lower()] += 1
    result.disclosed = counts[AuditEvent.DISCLOSED.value]
    result.withheld = counts[AuditEvent.WITHHELD.value]
    result.referred = counts[AuditEvent.REFERRED.value]
    result.quarantined = counts[AuditEvent.QUARANTINED.value]
    result.received = counts[AuditEvent.RECEIVED.value]
    result.audit_records = sum(counts.values())
    result.quarantine_codes = dict(codes)
    result.withheld_codes = dict(withheld_codes.most_common())
    result.by_lscp = {
        lscp: {k: c[k] for k in ("disclosed", "withheld", "referred", "received")}
        for lscp, c in by_lscp.items()
    }
    return decided, delivered, received


def _tally_deadlines(store: AuditStore, runtime: Runtime, result: DemoResult) -> None:
    """Deadlines met so far: done (received for notifications, else actioned) in time.

    In a demo that lasts seconds, most deadlines are still open: nobody has had
    time to act. They are counted as open, not as met or missed.
    """
    now = datetime.now(UTC)
    for item in tracked_from_records(store.records(), runtime.deployment.directory):
        if item.due is None:
            continue
        result.deadlines_total += 1
        done = completed_at(item)
        if done is not None and done <= item.due:
            result.deadlines_met += 1
        elif done is None and item.due > now:
            result.deadlines_open += 1
        else:
            result.deadlines_missed += 1


async def run_demo(
    settings: Settings,
    *,
    bootstrap: str,
    engine: str = "",
    concerns: int,
    seed: int,
    timeout: float,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    started = time.monotonic()
    runtime = Runtime(settings, bootstrap)
    runtime.init_keys()
    await runtime.create_topics()
    report = progress or (lambda stage, done, total: None)

    now = datetime.now(UTC)
    records = [
        ConcernModel.model_validate(d) for d in synthetic_concerns(concerns, seed=seed, now=now)
    ]
    police = runtime.police_adapter()
    good = [
        ParsedRecord(f"synthetic#{i}", c, c.concern_id, "ACCEPTED") for i, c in enumerate(records)
    ]
    bad = bad_records(runtime, records[0])
    expected: set[str] = {c.concern_id for c in records}
    for _, record in bad:
        expected.add(dict(record.headers)[Headers.CONCERN_ID].decode())

    result = DemoResult(published=len(good) + len(bad), engine=engine)
    store = runtime.audit_store()  # signs checkpoints with the log key
    stop = asyncio.Event()
    ready = asyncio.Event()
    services = asyncio.create_task(runtime.run_services(stop, store=store, on_ready=ready.set))
    try:
        report("starting services", 0, 1)
        await asyncio.wait(
            [asyncio.create_task(ready.wait()), services], return_when=asyncio.FIRST_COMPLETED
        )
        if services.done():
            services.result()  # re-raise the failure
        report("starting services", 1, 1)
        producer = make_producer(bootstrap, **runtime.security_for(runtime.publisher().id))
        await producer.start()
        try:
            await police.publish(producer, good)
            await send_all(producer, [r for _, r in bad])
        finally:
            await producer.stop()
        report("published", result.published, result.published)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not services.done():
            decided, delivered, received = _tally(store, result)
            report("accounted", len(expected & decided), len(expected))
            report("received", len(delivered & received), max(len(delivered), 1))
            if expected <= decided and delivered <= received:
                result.accounted = True
                break
            await asyncio.sleep(0.25)
        if not result.accounted:
            decided, delivered, received = _tally(store, result)
            result.problems.append(
                f"{len(expected - decided)} published records not decided, "
                f"{len(delivered - received)} disclosures not received within {timeout:.0f} s"
            )
    finally:
        stop.set()
        try:
            await services
        except Exception as exc:
            result.problems.append(f"a service failed: {type(exc).__name__}: {exc}")
            result.accounted = False
        _tally(store, result)
        _tally_deadlines(store, runtime, result)
        store.close()
    try:
        # With the log's public key: signed checkpoints are checked too.
        verify_store(settings.audit_db, key=runtime.log_key())
        result.audit_verified = True
    except LogTamperedError as exc:
        result.problems += exc.problems
    result.seconds = time.monotonic() - started
    return result
