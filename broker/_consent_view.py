"""The consent view: the latest ``ConsentRecord`` per subject, read from ``hips.consent``.

``hips.consent`` is a compacted topic keyed by the subject's pseudonym, so the
broker keeps the last record per person. Each router keeps the same picture in
memory: ``ConsentView.run`` assigns every partition itself (no consumer group,
so no rebalance and no 11-18 s rejoin on Tansu), reads from the beginning, and
keeps following. The router does not decide anything until the view has
caught up with the topic's end, so a withdrawal published before a restart is
never missed.

A record is applied in topic order (last write per key wins, exactly what
compaction keeps), and only after the router has durably audited it
(CONSENT_CHANGED, acks=all): no decision ever rests on a consent change the
audit log does not hold. Records that fail verification are never applied;
the router quarantines them like any other bad input.

``verify_consent_record`` checks a record: the signature of an agency in the
directory, which must be the agency the record names; the key must be the
record's pseudonym; and ``ConsentRecord`` validates the rest (a NOT_SOUGHT
reason, an override's justification, the derived id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consent import ConsentRecord, Directory
from schemas import (
    CONSENT_RECORD,
    Codec,
    ReasonCode,
    SignatureError,
    ValidationError,
)

from ._crypto import Keyring, SigningIdentity
from ._kafka import (
    OutRecord,
    assign_stored,
    fetch,
    make_consumer,
    signed_record,
    stop_clients,
    verify_origin,
)
from ._kafka import caught_up as at_end

__all__ = [
    "ConsentView",
    "consent_out_record",
    "verify_consent_record",
]

_log = structlog.get_logger("safer.consent_view")

ConsentBatch = Callable[[Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[bool]]


def consent_out_record(
    codec: Codec, identity: SigningIdentity, record: ConsentRecord, *, topic: str
) -> OutRecord:
    """The signed record to publish: keyed by the subject's pseudonym, never an identifier."""
    if identity.agency_id != record.agency_id:
        raise SignatureError(
            f"a consent record naming {record.agency_id} cannot be signed by {identity.agency_id}",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint="sign with the key of the agency that recorded the consent",
        )
    return signed_record(
        codec,
        identity,
        CONSENT_RECORD,
        record.to_avro(),
        topic=topic,
        key=record.subject_pseudonym.encode("ascii"),
        record_id="",
        id_header=None,
    )


def verify_consent_record(
    codec: Codec,
    keyring: Keyring,
    directory: Directory,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
) -> ConsentRecord:
    """Decode and check one ``hips.consent`` record; raise a ``SaferError`` if it fails."""
    if not value:
        raise ValidationError(
            "consent record has no value (a tombstone); consent is changed by publishing a "
            "new record, never by deleting one",
            code=ReasonCode.DECODE_ERROR,
            hint="publish the new consent state with `safer consent record`",
        )
    decoded = codec.decode(value, expect=CONSENT_RECORD)
    origin = verify_origin(keyring, value, headers, id_header=None)
    if directory.publisher(origin.agency_id) is None and (
        directory.recipient(origin.agency_id) is None
    ):
        raise SignatureError(
            "consent record signed by an identity outside the directory",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint="consent is recorded by a publisher or recipient agency in the directory",
        )
    record = ConsentRecord.from_avro(decoded.record)
    if record.agency_id != origin.agency_id:
        raise SignatureError(
            "consent record names an agency other than its signer",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint="sign with the key of the agency that recorded the consent",
        )
    if key is None or key != record.subject_pseudonym.encode("ascii"):
        raise ValidationError(
            "consent record key is not the record's subject pseudonym",
            code=ReasonCode.PID_IN_METADATA,
            hint="key hips.consent records by the subject pseudonym only",
        )
    return record


class ConsentView:
    """The latest verified consent record per subject pseudonym.

    ``lookup`` and ``apply`` are synchronous and cheap (the router calls
    ``lookup`` for every concern); ``run`` is the async loop that feeds it.
    """

    def __init__(
        self,
        *,
        topic: str,
        bootstrap_servers: str,
        security: dict[str, Any] | None = None,
        poll_ms: int = 100,
    ) -> None:
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._security = security or {}
        self._poll_ms = poll_ms
        self._latest: dict[str, ConsentRecord] = {}
        #: How many records have been applied since start (replays included).
        self.applied = 0

    def __len__(self) -> int:
        return len(self._latest)

    def apply(self, record: ConsentRecord) -> None:
        """Make ``record`` the subject's current record (topic order: the last one wins)."""
        self._latest[record.subject_pseudonym] = record
        self.applied += 1

    def lookup(self, pseudonyms: Iterable[str]) -> ConsentRecord | None:
        """The most recently recorded record among these pseudonyms (one person or several)."""
        found = [r for p in pseudonyms if (r := self._latest.get(p)) is not None]
        if not found:
            return None
        return max(found, key=lambda r: (r.recorded_at, r.consent_record_id))

    async def run(
        self,
        stop: asyncio.Event,
        *,
        handle: ConsentBatch,
        caught_up: asyncio.Event,
    ) -> None:
        """Follow the topic from the beginning until ``stop``.

        ``handle`` gets every fetched batch in order; it audits and applies the
        records, and returns False if it could not (the loop then ends, to be
        restarted by its supervisor from the beginning). ``caught_up`` is set
        once every record that existed at start has been handled.
        """
        consumer = make_consumer(
            self._bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._poll_ms,
            **self._security,
        )
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            _log.info("consent_view.started", partitions=len(tps))
            while not stop.is_set():
                batch = await fetch(consumer, *tps, timeout_ms=self._poll_ms, max_records=2000)
                records = [r for tp in tps for r in batch.get(tp, ())]
                if records and not await handle(records):
                    return
                if not caught_up.is_set() and await at_end(consumer, tps):
                    caught_up.set()
                    _log.info("consent_view.caught_up", subjects=len(self._latest))
        finally:
            await stop_clients(consumer)

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        # From the beginning every time: the view is rebuilt from the compacted topic.
        return await assign_stored(consumer, [self.topic], {})
