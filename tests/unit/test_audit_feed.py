"""The audit feed's batch logic without a broker: ``AuditFeed.ingest`` on signed records.

Receipts are logged against their disclosure: audit records go first within a
batch, a receipt whose disclosure has not been read yet is held back while
``hips.audit`` has unread records, and a receipt from the wrong recipient or
for different bytes is flagged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from audit import AuditRecord, AuditStore, entry_id_for
from broker import ROUTER_ID, AuditFeed, Headers, OutRecord, signed_record
from safer import Runtime
from schemas import AUDIT_RECORD, RECEIPT, AuditEvent

T0 = datetime(2025, 3, 4, 8, 30, tzinfo=UTC)


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def _recipients(runtime: Runtime) -> list[str]:
    return [r.id for r in runtime.deployment.directory.recipients]


def _disclosed(runtime: Runtime, n: int, recipient: str) -> AuditRecord:
    disclosure_id = f"{n:032x}"
    return AuditRecord(
        entry_id=entry_id_for(AuditEvent.DISCLOSED, disclosure_id),
        event=AuditEvent.DISCLOSED,
        disclosure_id=disclosure_id,
        decision_id=f"decision-{n}",
        concern_id=f"concern-{n}",
        subject_pseudonyms=(f"{n:032x}"[::-1],),
        source="hampshire-constabulary",
        recipient=recipient,
        lscp="hampshire",
        lawful_basis="CA1989-S47",
        purpose="safeguarding",
        payload_sha256=hashlib.sha256(str(n).encode()).hexdigest(),
        at=T0 + timedelta(seconds=n),
        actor="safer-router",
    )


def _audit_out(runtime: Runtime, record: AuditRecord, signer: str = ROUTER_ID) -> OutRecord:
    return signed_record(
        runtime.codec,
        runtime.keys.signing_identity(signer),
        AUDIT_RECORD,
        record.to_avro(),
        topic=runtime.settings.topics.audit,
        key=(record.disclosure_id or "").encode(),
        record_id=record.disclosure_id or "",
        id_header=Headers.DISCLOSURE_ID,
    )


def _receipt_out(
    runtime: Runtime, disclosed: AuditRecord, recipient: str, *, payload: str | None = None
) -> OutRecord:
    assert disclosed.disclosure_id is not None and disclosed.concern_id is not None
    receipt: dict[str, Any] = {
        "receipt_id": f"r-{disclosed.disclosure_id}",
        "disclosure_id": disclosed.disclosure_id,
        "concern_id": disclosed.concern_id,
        "recipient_id": recipient,
        "status": "RECEIVED",
        "payload_sha256": payload or disclosed.payload_sha256,
        "at": disclosed.at + timedelta(minutes=5),
        "actor": recipient,
        "outcome_code": None,
        "note": None,
    }
    return signed_record(
        runtime.codec,
        runtime.keys.signing_identity(recipient),
        RECEIPT,
        receipt,
        topic=runtime.settings.topics.receipts,
        key=disclosed.disclosure_id.encode(),
        record_id=disclosed.disclosure_id,
        id_header=Headers.DISCLOSURE_ID,
    )


def _batch(*parts: tuple[str, list[OutRecord], int]) -> dict[TopicPartition, list[Any]]:
    """(topic, records, first offset) -> what ``getmany`` returns."""
    out: dict[TopicPartition, list[Any]] = {}
    for topic, records, first in parts:
        out[TopicPartition(topic, 0)] = [
            _Message(topic, 0, first + i, r.value, r.headers) for i, r in enumerate(records)
        ]
    return out


def _feed(runtime: Runtime, store: AuditStore) -> AuditFeed:
    return runtime.audit_feed(store)


def test_a_receipt_in_the_same_batch_is_logged_after_and_against_its_disclosure(
    runtime: Runtime, tmp_path: Path
) -> None:
    recipient = _recipients(runtime)[0]
    disclosed = _disclosed(runtime, 1, recipient)
    topics = runtime.settings.topics
    with AuditStore(tmp_path / "audit.db") as store:
        feed = _feed(runtime, store)
        # receipts listed first, as getmany may return them
        batch = _batch(
            (topics.receipts, [_receipt_out(runtime, disclosed, recipient)], 0),
            (topics.audit, [_audit_out(runtime, disclosed)], 0),
        )
        assert feed.ingest(batch) == 2
        first, second = store.records()
        assert (first.event, second.event) == (AuditEvent.DISCLOSED, AuditEvent.RECEIVED)
        assert (second.decision_id, second.lscp, second.lawful_basis, second.purpose) == (
            "decision-1",
            "hampshire",
            "CA1989-S47",
            "safeguarding",
        )
        assert second.subject_pseudonyms == disclosed.subject_pseudonyms
        assert second.reason_codes == () and second.reasons == ("receipt status RECEIVED",)
        assert store.feed_offsets() == {(topics.audit, 0): 1, (topics.receipts, 0): 1}
        assert feed.ingest(batch) == 0  # a replay adds nothing


def test_a_receipt_ahead_of_its_disclosure_is_held_until_the_audit_topic_catches_up(
    runtime: Runtime, tmp_path: Path
) -> None:
    recipient = _recipients(runtime)[0]
    known = _disclosed(runtime, 1, recipient)
    unknown = _disclosed(runtime, 2, recipient)
    topics = runtime.settings.topics
    with AuditStore(tmp_path / "audit.db") as store:
        feed = _feed(runtime, store)
        feed.ingest(_batch((topics.audit, [_audit_out(runtime, known)], 0)))
        receipts = [
            _receipt_out(runtime, known, recipient),
            _receipt_out(runtime, unknown, recipient),
            _receipt_out(runtime, known, recipient),  # later in the partition: left too
        ]
        assert feed.ingest(_batch((topics.receipts, receipts, 0)), audit_pending=True) == 1
        assert feed._rewind == {TopicPartition(topics.receipts, 0): 1}
        assert store.feed_offsets()[(topics.receipts, 0)] == 1  # not past the held receipt
        # Its disclosure arrives: the receipt follows it.
        feed.ingest(
            _batch(
                (topics.audit, [_audit_out(runtime, unknown)], 1),
                (topics.receipts, receipts[1:2], 1),
            ),
            audit_pending=True,
        )
        events = [(r.event, r.disclosure_id) for r in store.records()]
        assert events[-2:] == [
            (AuditEvent.DISCLOSED, unknown.disclosure_id),
            (AuditEvent.RECEIVED, unknown.disclosure_id),
        ]


def test_a_receipt_for_a_disclosure_never_logged_is_logged_with_the_reason(
    runtime: Runtime, tmp_path: Path
) -> None:
    recipient = _recipients(runtime)[0]
    ghost = _disclosed(runtime, 9, recipient)
    topics = runtime.settings.topics
    now = [100.0]
    with AuditStore(tmp_path / "audit.db") as store:
        feed = AuditFeed(
            store=store,
            codec=runtime.codec,
            keyring=runtime.keyring(),
            topics=topics,
            bootstrap_servers=runtime.bootstrap,
            router_id=ROUTER_ID,
            receipt_grace=5.0,
            clock=lambda: now[0],
        )
        batch = _batch((topics.receipts, [_receipt_out(runtime, ghost, recipient)], 0))
        # Within the grace it waits, even with the audit topic read to its end: the
        # commit marker on hips.audit may lag the one on the recipient's topic.
        assert feed.ingest(batch, audit_pending=False) == 0
        assert feed._rewind == {TopicPartition(topics.receipts, 0): 0}
        now[0] += 4.9
        assert feed.ingest(batch, audit_pending=False) == 0
        now[0] += 0.2
        assert feed.ingest(batch, audit_pending=False) == 1
        (entry,) = store.records()
        assert entry.event == AuditEvent.RECEIVED and entry.decision_id is None
        assert "no DISCLOSED or REFERRED entry for this disclosure_id in the log" in entry.reasons


def test_wrong_recipient_and_different_bytes_are_flagged(runtime: Runtime, tmp_path: Path) -> None:
    first, second = _recipients(runtime)[:2]
    to_first = _disclosed(runtime, 1, first)
    other = _disclosed(runtime, 2, first)
    topics = runtime.settings.topics
    with AuditStore(tmp_path / "audit.db") as store:
        feed = _feed(runtime, store)
        feed.ingest(
            _batch(
                (topics.audit, [_audit_out(runtime, to_first), _audit_out(runtime, other)], 0),
                (
                    topics.receipts,
                    [
                        _receipt_out(runtime, to_first, second),
                        _receipt_out(runtime, other, first, payload="0" * 64),
                    ],
                    0,
                ),
            )
        )
        flagged = [r.reason_codes for r in store.records(event=AuditEvent.RECEIVED)]
        assert flagged == [("NOT_ADDRESSEE",), ("PAYLOAD_MISMATCH",)]


def test_an_audit_record_not_signed_by_the_router_is_quarantined_not_dropped(
    runtime: Runtime, tmp_path: Path
) -> None:
    recipient = _recipients(runtime)[0]
    forged = _audit_out(runtime, _disclosed(runtime, 3, recipient), signer=recipient)
    topics = runtime.settings.topics
    with AuditStore(tmp_path / "audit.db") as store:
        feed = _feed(runtime, store)
        assert feed.ingest(_batch((topics.audit, [forged], 7))) == 1
        (entry,) = store.records()
        assert entry.event == AuditEvent.QUARANTINED
        assert entry.reason_codes == ("UNKNOWN_PUBLISHER",)
        assert f"{topics.audit}/0/7" in entry.reasons[0]
        assert feed.ingest(_batch((topics.audit, [forged], 7))) == 0  # same position: same id


def test_a_receipt_whose_disclosure_lands_within_the_grace_is_linked_to_it(
    runtime: Runtime, tmp_path: Path
) -> None:
    """The race CI once hit: the audit topic looked read to its end (its commit marker
    not yet there), and the receipt was logged without the subject's pseudonyms, so a
    subject access report could not show it as received."""
    recipient = _recipients(runtime)[0]
    late = _disclosed(runtime, 3, recipient)
    topics = runtime.settings.topics
    with AuditStore(tmp_path / "audit.db") as store:
        feed = _feed(runtime, store)
        receipt = _receipt_out(runtime, late, recipient)
        assert feed.ingest(_batch((topics.receipts, [receipt], 0)), audit_pending=False) == 0
        feed.ingest(
            _batch((topics.audit, [_audit_out(runtime, late)], 0), (topics.receipts, [receipt], 0))
        )
        (received,) = [r for r in store.records() if r.event == AuditEvent.RECEIVED]
        assert received.subject_pseudonyms == late.subject_pseudonyms
        assert received.decision_id == late.decision_id
