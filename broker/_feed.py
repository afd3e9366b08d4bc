"""The audit feed: ``hips.audit`` and ``hips.receipts`` → the audit store.

The feed assigns partitions itself (no consumer group) and keeps its position
in the audit store, written in the same SQLite transaction as the entries. A
crash therefore never loses or repeats an entry, and a restart needs no group
rejoin. Entries are also deduplicated on their deterministic ``entry_id``.

Every record is verified: audit records must be signed by the router, receipts
by the recipient they name. A record that fails is not dropped: the log gets a
QUARANTINED entry that names the topic position and the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from audit import AuditRecord, AuditStore, entry_id_for
from schemas import AUDIT_RECORD, RECEIPT, AuditEvent, Codec, ReasonCode, SaferError

from ._crypto import Keyring
from ._kafka import verify_origin
from ._topics import Headers, Topics

__all__ = ["AuditFeed"]

_log = structlog.get_logger("safer.audit_feed")


class AuditFeed:
    def __init__(
        self,
        *,
        store: AuditStore,
        codec: Codec,
        keyring: Keyring,
        topics: Topics,
        bootstrap_servers: str,
        router_id: str,
        security: dict[str, Any] | None = None,
        batch_size: int = 2000,
    ) -> None:
        self._store = store
        self._codec = codec
        self._keyring = keyring
        self._topics = topics
        self._bootstrap = bootstrap_servers
        self._router_id = router_id
        self._security = security or {}
        self._batch_size = batch_size
        self.totals: Counter[str] = Counter()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._batch_size,
            **self._security,
        )
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            _log.info("audit_feed.started", partitions=len(tps))
            if ready is not None:
                ready.set()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=250, max_records=self._batch_size)
                if batch:
                    self.ingest(batch)
        finally:
            await consumer.stop()
            _log.info("audit_feed.stopped", **dict(self.totals))

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        tps: list[TopicPartition] = []
        for topic in (self._topics.audit, self._topics.receipts):
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    await asyncio.sleep(0.2)
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        stored = self._store.feed_offsets()
        for tp in tps:
            position = stored.get((tp.topic, tp.partition))
            if position is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, position)
        return tps

    def ingest(self, batch: dict[TopicPartition, list[Any]]) -> int:
        """Append one fetched batch (and the new positions) in one transaction."""
        entries: list[AuditRecord] = []
        offsets: dict[tuple[str, int], int] = {}
        for tp, records in batch.items():
            for msg in records:
                entries.append(
                    self._to_entry(msg.topic, msg.partition, msg.offset, msg.value, msg.headers)
                )
            offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
        results = self._store.append(entries, offsets=offsets)
        added = sum(1 for r in results if not r.duplicate)
        self.totals["appended"] += added
        self.totals["duplicates"] += len(results) - added
        return added

    def _to_entry(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
    ) -> AuditRecord:
        try:
            if topic == self._topics.audit:
                return self._audit_entry(value or b"", headers)
            return self._receipt_entry(value or b"", headers)
        except SaferError as exc:
            self.totals["rejected"] += 1
            _log.warning(
                "audit_feed.rejected", reason_code=exc.code.value, topic=topic, offset=offset
            )
            position = f"{topic}/{partition}/{offset}"
            digest = hashlib.sha256(position.encode() + (value or b"")).hexdigest()[:32]
            return AuditRecord(
                seq=None,
                entry_id=entry_id_for(AuditEvent.QUARANTINED, digest),
                event=AuditEvent.QUARANTINED,
                source=topic,
                reason_codes=(exc.code.value,),
                reasons=(f"audit feed rejected the record at {position}: {exc.message}",),
                at=datetime.now(UTC),
                actor="safer-audit-feed",
            )

    def _audit_entry(
        self, value: bytes, headers: Sequence[tuple[str, bytes]] | None
    ) -> AuditRecord:
        id_header = (
            Headers.DISCLOSURE_ID
            if any(k == Headers.DISCLOSURE_ID for k, _ in headers or ())
            else None
        )
        origin = verify_origin(self._keyring, value, headers, id_header=id_header)
        if origin.agency_id != self._router_id:
            raise SaferError(
                f"audit record signed by {origin.agency_id}, not the router",
                code=ReasonCode.UNKNOWN_PUBLISHER,
            )
        record = AuditRecord.from_avro(self._codec.decode(value, expect=AUDIT_RECORD).record)
        if (record.disclosure_id or "") != origin.record_id:
            raise SaferError(
                "signed id header does not match the record", code=ReasonCode.SIGNATURE_INVALID
            )
        return record

    def _receipt_entry(
        self, value: bytes, headers: Sequence[tuple[str, bytes]] | None
    ) -> AuditRecord:
        origin = verify_origin(self._keyring, value, headers, id_header=Headers.DISCLOSURE_ID)
        receipt = self._codec.decode(value, expect=RECEIPT).record
        if (
            receipt["recipient_id"] != origin.agency_id
            or receipt["disclosure_id"] != origin.record_id
        ):
            raise SaferError(
                "receipt not signed by the recipient it names", code=ReasonCode.SIGNATURE_INVALID
            )
        disclosed = next(iter(self._store.records(disclosure_id=receipt["disclosure_id"])), None)
        reason_codes: tuple[str, ...] = ()
        reasons: tuple[str, ...] = ()
        if disclosed is not None and disclosed.payload_sha256 not in (
            None,
            receipt["payload_sha256"],
        ):
            reason_codes = (ReasonCode.PAYLOAD_MISMATCH.value,)
            reasons = ("recipient's payload hash differs from the disclosed payload hash",)
        status = str(receipt["status"])
        event = AuditEvent.RECEIVED
        return AuditRecord(
            seq=None,
            entry_id=entry_id_for(event, f"{receipt['disclosure_id']}:{status}"),
            event=event,
            disclosure_id=receipt["disclosure_id"],
            decision_id=disclosed.decision_id if disclosed else None,
            concern_id=receipt["concern_id"],
            subject_pseudonyms=disclosed.subject_pseudonyms if disclosed else (),
            source=disclosed.source if disclosed else receipt["recipient_id"],
            recipient=receipt["recipient_id"],
            lscp=disclosed.lscp if disclosed else None,
            lawful_basis=disclosed.lawful_basis if disclosed else None,
            reason_codes=reason_codes,
            reasons=(f"receipt status {status}", *reasons),
            payload_sha256=receipt["payload_sha256"],
            at=receipt["at"],
            actor=receipt["recipient_id"],
        )
