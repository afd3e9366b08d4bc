"""The audit feed: ``hips.audit`` and ``hips.receipts`` → the audit store.

The feed assigns partitions itself (no consumer group) and keeps its position
in the audit store, written in the same SQLite transaction as the entries. A
crash (even SIGKILL) therefore never loses or repeats an entry, and a restart
needs no group rejoin. Entries are also deduplicated on their deterministic
``entry_id``, so a router that replays a batch adds nothing twice.

- **Group commit.** Records are gathered until ``batch_size`` have arrived or
  ``linger_ms`` has passed since the first one, then appended with one fsync.
- **Checkpoints.** Every ``checkpoint_interval`` seconds, if the log grew, the
  feed writes a checkpoint signed with the log key, and one more on a clean stop.
- **Two-sided audit.** A receipt becomes a RECEIVED entry that carries its
  disclosure's decision, subjects, partnership and lawful basis, and records
  whether the recipient's payload hash matches the disclosed one. Audit
  records are taken before receipts, and a receipt whose DISCLOSED/REFERRED
  entry has not been read yet is held back (its partition rewinds) while
  ``hips.audit`` still has unread records, and for up to ``receipt_grace``
  seconds in any case (a transaction's commit marker can reach the recipient's
  topic before ``hips.audit``), so a receipt is logged after its disclosure. A
  receipt for a disclosure that never comes is logged after the grace, saying so.
- **Only committed records.** The feed reads ``read_committed``: an audit
  record of a routing transaction that was aborted (a router killed mid-batch)
  is never logged; its replay is.
- **A lost position is loud.** If a stored position no longer exists on the
  broker (the topic was recreated), the feed stops with POSITION_LOST instead
  of silently starting over.

Every record is verified: audit records must be signed by the router, receipts
by the recipient they name. A record that fails is not dropped: the log gets a
QUARANTINED entry that names the topic position and the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from audit import AuditRecord, AuditStore, LogSigner, entry_id_for
from schemas import AUDIT_BATCH, AUDIT_RECORD, RECEIPT, AuditEvent, Codec, ReasonCode, SaferError

from ._crypto import Keyring
from ._kafka import assign_stored, fetch, make_consumer, stop_clients, verify_origin
from ._topics import Headers, Topics

__all__ = ["AuditFeed", "audit_records_in"]

_log = structlog.get_logger("safer.audit_feed")

#: Decision events a receipt can acknowledge.
_DELIVERED = (AuditEvent.DISCLOSED, AuditEvent.REFERRED)
#: Recent deliveries kept in memory for receipts (older ones are read from the store).
_RECENT = 50_000


def audit_records_in(codec: Codec, value: bytes) -> list[dict[str, Any]]:
    """The audit records (Avro dicts) in one ``hips.audit`` value: a single AuditRecord,
    or every record of an AuditBatch. For tools and tests that read the topic; the feed
    itself also checks signatures."""
    decoded = codec.decode(value)
    if decoded.subject == AUDIT_BATCH:
        return list(decoded.record["records"])
    return [codec.decode(value, expect=AUDIT_RECORD).record]


class _Held(Exception):
    """A receipt whose disclosure is not in the log yet: leave it for the next fetch."""


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
        linger_ms: int = 5,
        checkpoint_signer: LogSigner | None = None,
        checkpoint_interval: float = 60.0,
        receipt_grace: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: How long a receipt whose disclosure is not in the log waits for it even when
        #: the audit topic looks read to its end: a transaction's commit marker can
        #: reach the recipient's topic before ``hips.audit``, so a fast recipient's
        #: receipt can arrive while the audit topic's last stable offset still lags.
        self._receipt_grace = receipt_grace
        self._clock = clock
        #: Disclosure ids of held receipts, and when each was first held.
        self._unmatched: dict[str, float] = {}
        self._store = store
        self._codec = codec
        self._keyring = keyring
        self._topics = topics
        self._bootstrap = bootstrap_servers
        self._router_id = router_id
        self._security = security or {}
        self._batch_size = batch_size
        self._linger = linger_ms / 1000
        self._signer = checkpoint_signer
        self._checkpoint_interval = checkpoint_interval
        self._last_checkpoint_at = time.monotonic()
        self._recent: OrderedDict[str, AuditRecord] = OrderedDict()
        self._rewind: dict[TopicPartition, int] = {}
        self.totals: Counter[str] = Counter()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        consumer = make_consumer(
            self._bootstrap, max_poll_records=self._batch_size, **self._security
        )
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            audit_tps = [tp for tp in tps if tp.topic == self._topics.audit]
            _log.info("audit_feed.started", partitions=len(tps))
            if ready is not None:
                ready.set()
            while not stop.is_set():
                batch = await self._gather(consumer, stop)
                if batch:
                    pending = await self._audit_pending(consumer, audit_tps)
                    added = self.ingest(batch, audit_pending=pending)
                    for tp, offset in self._rewind.items():
                        consumer.seek(tp, offset)
                    if self._rewind and not added:
                        await asyncio.sleep(0.05)  # only held receipts: let the audit topic move
                self._maybe_checkpoint()
            self._maybe_checkpoint(final=True)
        finally:
            await stop_clients(consumer)
            _log.info("audit_feed.stopped", **dict(self.totals))

    async def _gather(
        self, consumer: AIOKafkaConsumer, stop: asyncio.Event
    ) -> dict[TopicPartition, list[Any]]:
        """One group-commit batch: up to ``batch_size`` records or ``linger_ms`` after the first."""
        batch: dict[TopicPartition, list[Any]] = {}
        count = 0
        deadline: float | None = None
        while count < self._batch_size and not stop.is_set():
            if deadline is None:
                timeout_ms = 250
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                timeout_ms = max(1, int(remaining * 1000))
            fetched = await fetch(
                consumer, timeout_ms=timeout_ms, max_records=self._batch_size - count
            )
            if not fetched:
                if deadline is None:
                    break  # idle: give the caller a chance to checkpoint or stop
                continue
            for tp, records in fetched.items():
                batch.setdefault(tp, []).extend(records)
                count += len(records)
            if deadline is None:
                deadline = time.monotonic() + self._linger
        return batch

    async def _audit_pending(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
        """True while ``hips.audit`` has committed records the feed has not read yet.

        Asks the broker for the current end (ListOffsets, read_committed): the end
        a consumer remembers from its last fetch can predate the transaction that
        made a disclosure and its audit record visible, and a receipt for that
        disclosure would then be logged before, and without, its disclosure.
        """
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if await consumer.position(tp) < ends[tp]:
                return True
        return False

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        return await assign_stored(
            consumer, [self._topics.audit, self._topics.receipts], self._store.feed_offsets()
        )

    def _maybe_checkpoint(self, *, final: bool = False) -> None:
        if self._signer is None:
            return
        if not final and time.monotonic() - self._last_checkpoint_at < self._checkpoint_interval:
            return
        self._last_checkpoint_at = time.monotonic()
        latest = self._store.latest_checkpoint()
        if latest is not None and latest.size >= self._store.count():
            return
        checkpoint = self._store.checkpoint(signer=self._signer)
        self.totals["checkpoints"] += 1
        _log.info("audit_feed.checkpoint", size=checkpoint.size, root=checkpoint.root.hex())

    def ingest(self, batch: dict[TopicPartition, list[Any]], *, audit_pending: bool = False) -> int:
        """Append one fetched batch (and the new positions) in one transaction.

        Audit records go first, so a receipt in the same batch finds its
        disclosure. With ``audit_pending``, a receipt whose disclosure has no
        entry yet stops its partition here: the rest is left for the next
        fetch (``self._rewind`` says where). Returns how many entries were new.
        """
        self._rewind = {}
        entries: list[AuditRecord] = []
        offsets: dict[tuple[str, int], int] = {}
        audit_first = sorted(batch.items(), key=lambda item: item[0].topic != self._topics.audit)
        for tp, records in audit_first:
            done = None
            for msg in records:
                try:
                    entry = self._to_entry(
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        msg.value,
                        msg.headers,
                        hold=audit_pending,
                    )
                except _Held:
                    self._rewind[tp] = msg.offset
                    self.totals["held"] += 1
                    break
                entries.extend(entry)
                done = msg.offset
            if done is not None:
                offsets[(tp.topic, tp.partition)] = done + 1
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
        *,
        hold: bool = False,
    ) -> list[AuditRecord]:
        try:
            if topic == self._topics.audit:
                return self._audit_entries(value or b"", headers)
            return [self._receipt_entry(value or b"", headers, hold=hold)]
        except SaferError as exc:
            self.totals["rejected"] += 1
            _log.warning(
                "audit_feed.rejected", reason_code=exc.code.value, topic=topic, offset=offset
            )
            position = f"{topic}/{partition}/{offset}"
            digest = hashlib.sha256(position.encode() + (value or b"")).hexdigest()[:32]
            return [
                AuditRecord(
                    seq=None,
                    entry_id=entry_id_for(AuditEvent.QUARANTINED, digest),
                    event=AuditEvent.QUARANTINED,
                    source=topic,
                    reason_codes=(exc.code.value,),
                    reasons=(f"audit feed rejected the record at {position}: {exc.message}",),
                    at=datetime.now(UTC),
                    actor="safer-audit-feed",
                )
            ]

    def _audit_entries(
        self, value: bytes, headers: Sequence[tuple[str, bytes]] | None
    ) -> list[AuditRecord]:
        """One audit record, or every record of a router-signed AuditBatch."""
        if self._codec.decode(value).subject != AUDIT_BATCH:
            return [self._audit_entry(value, headers)]
        origin = verify_origin(self._keyring, value, headers, id_header=None)
        if origin.agency_id != self._router_id:
            raise SaferError(
                f"audit batch signed by {origin.agency_id}, not the router",
                code=ReasonCode.UNKNOWN_PUBLISHER,
            )
        records = [
            AuditRecord.from_avro(r)
            for r in self._codec.decode(value, expect=AUDIT_BATCH).record["records"]
        ]
        for record in records:
            if record.event in _DELIVERED and record.disclosure_id:
                self._remember(record)
        return records

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
        if record.event in _DELIVERED and record.disclosure_id:
            self._remember(record)
        return record

    def _remember(self, record: AuditRecord) -> None:
        assert record.disclosure_id is not None
        self._recent[record.disclosure_id] = record
        self._recent.move_to_end(record.disclosure_id)
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    def _delivery(self, disclosure_id: str) -> AuditRecord | None:
        """The DISCLOSED or REFERRED entry a receipt acknowledges, if logged (or in this batch)."""
        found = self._recent.get(disclosure_id)
        if found is not None:
            return found
        for record in self._store.records(disclosure_id=disclosure_id):
            if record.event in _DELIVERED:
                self._remember(record)
                return record
        return None

    def _receipt_entry(
        self, value: bytes, headers: Sequence[tuple[str, bytes]] | None, *, hold: bool = False
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
        disclosed = self._delivery(receipt["disclosure_id"])
        if disclosed is None:
            first = self._unmatched.setdefault(receipt["disclosure_id"], self._clock())
            if hold or self._clock() - first < self._receipt_grace:
                raise _Held
        self._unmatched.pop(receipt["disclosure_id"], None)
        status = str(receipt["status"])
        reason_codes: tuple[str, ...] = ()
        reasons: list[str] = [f"receipt status {status}"]
        outcome = receipt.get("outcome_code")
        if outcome:
            reasons.append(f"recipient's outcome {outcome}")
        if disclosed is None:
            reasons.append("no DISCLOSED or REFERRED entry for this disclosure_id in the log")
        elif disclosed.recipient not in (None, receipt["recipient_id"]):
            reason_codes = (ReasonCode.NOT_ADDRESSEE.value,)
            reasons.append("receipt from a recipient the disclosure was not addressed to")
        elif disclosed.payload_sha256 not in (None, receipt["payload_sha256"]):
            reason_codes = (ReasonCode.PAYLOAD_MISMATCH.value,)
            reasons.append("recipient's payload hash differs from the disclosed payload hash")
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
            purpose=disclosed.purpose if disclosed else None,
            reason_codes=reason_codes,
            reasons=tuple(reasons),
            policy_revision=disclosed.policy_revision if disclosed else None,
            payload_sha256=receipt["payload_sha256"],
            at=receipt["at"],
            actor=receipt["recipient_id"],
        )
