"""Recipient adapter: read my disclosures, verify, decrypt, keep once, acknowledge.

One adapter per recipient. It assigns its topic partitions itself and keeps
its position in its own inbox file, committed together with the disclosures,
so a restart resumes exactly where it stopped without a consumer-group rejoin.
Only records addressed to this recipient are opened; the others on a shared
topic (another school's notices, say) are not ours and cannot be decrypted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker import (
    Headers,
    Keyring,
    OutRecord,
    SealedPayload,
    SigningIdentity,
    assign_stored,
    fetch,
    make_consumer,
    make_producer,
    open_sealed,
    send_all,
    signed_record,
    stop_clients,
    verify_origin,
)
from consent import Recipient
from schemas import DISCLOSURE, RECEIPT, Codec, ReasonCode, SaferError

from ._inbox import Inbox, PendingReceipt, Rejection, receipt_id_for
from ._webhook import WebhookSender

__all__ = [
    "RecipientAdapter",
    "publish_receipts",
    "receipt_id_for",
    "receipt_records",
]

_log = structlog.get_logger("safer.recipient")


class RecipientAdapter:
    def __init__(
        self,
        *,
        recipient: Recipient,
        inbox: Inbox,
        codec: Codec,
        keyring: Keyring,
        identity: SigningIdentity,
        private_key: X25519PrivateKey,
        topics: Sequence[str],
        receipts_topic: str,
        bootstrap_servers: str,
        router_id: str,
        security: dict[str, Any] | None = None,
        webhook: WebhookSender | None = None,
    ) -> None:
        self.recipient = recipient
        #: When set, each decrypted disclosure is POSTed to the agency, and it
        #: counts as RECEIVED only once their endpoint answers 2xx.
        self._webhook = webhook
        self.inbox = inbox
        self._codec = codec
        self._keyring = keyring
        self._identity = identity
        self._private_key = private_key
        self._topics = list(topics)
        self._receipts_topic = receipts_topic
        self._bootstrap = bootstrap_servers
        self._router_id = router_id
        self._security = security or {}
        self.totals: Counter[str] = Counter()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        consumer = make_consumer(self._bootstrap, **self._security)
        producer = make_producer(self._bootstrap, **self._security)
        await consumer.start()
        await producer.start()
        try:
            await self._assign(consumer)
            # Receipts stored but not acknowledged before a crash go out first.
            await self._send_receipts(producer)
            if ready is not None:
                ready.set()
            while not stop.is_set():
                batch = await fetch(consumer, timeout_ms=300, max_records=500)
                if batch:
                    self.ingest(batch)
                if self._webhook is not None:
                    await self._deliver_webhooks()
                # Also flushes OPENED/ACTIONED receipts queued by `safer inbox`.
                await self._send_receipts(producer)
        finally:
            await stop_clients(consumer, producer)

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        await assign_stored(consumer, self._topics, self.inbox.offsets())

    def ingest(self, batch: dict[TopicPartition, list[Any]]) -> int:
        items: list[tuple[dict[str, Any], bytes, dict[str, Any]]] = []
        rejections: list[Rejection] = []
        offsets: dict[tuple[str, int], int] = {}
        for tp, records in batch.items():
            for msg in records:
                position = f"{msg.topic}/{msg.partition}/{msg.offset}"
                try:
                    opened = self._open(msg.value or b"", msg.headers)
                except SaferError as exc:
                    self.totals["rejected"] += 1
                    _log.warning(
                        "recipient.rejected",
                        recipient=self.recipient.id,
                        reason_code=exc.code.value,
                        position=position,
                    )
                    rejections.append(Rejection(position, exc.code.value, exc.message))
                    continue
                if opened is not None:
                    record, payload = opened
                    items.append((record, msg.value or b"", payload))
            offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
        added = self.inbox.store(
            items, rejections, offsets, await_delivery=self._webhook is not None
        )
        self.totals["received"] += added
        return added

    def _open(
        self, value: bytes, headers: Sequence[tuple[str, bytes]] | None
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        origin = verify_origin(self._keyring, value, headers, id_header=Headers.DISCLOSURE_ID)
        if origin.agency_id != self._router_id:
            raise SaferError(
                "disclosure not signed by the router", code=ReasonCode.UNKNOWN_PUBLISHER
            )
        record = self._codec.decode(value, expect=DISCLOSURE).record
        if record["recipient_id"] != self.recipient.id:
            return None  # addressed to another recipient on this shared topic
        if record["disclosure_id"] != origin.record_id:
            raise SaferError("signed id header does not match", code=ReasonCode.SIGNATURE_INVALID)
        plaintext = open_sealed(
            SealedPayload(**record["payload"]),
            self._private_key,
            disclosure_id=record["disclosure_id"],
            recipient_id=self.recipient.id,
        )
        if hashlib.sha256(plaintext).hexdigest() != record["payload_sha256"]:
            raise SaferError("payload hash mismatch", code=ReasonCode.PAYLOAD_MISMATCH)
        return record, json.loads(plaintext)

    async def _deliver_webhooks(self) -> None:
        """POST what the agency has not accepted yet; a 2xx makes it RECEIVED."""
        assert self._webhook is not None
        for disclosure_id, wire, payload in self.inbox.awaiting_delivery():
            record = self._codec.decode(wire, expect=DISCLOSURE).record
            result = await self._webhook.send(record, payload)
            if result.delivered and result.delivered_at is not None:
                self.inbox.mark_delivered(disclosure_id, result.delivered_at)
                self.totals["webhook_delivered"] += 1
            elif not result.retriable:
                self.inbox.mark_undeliverable(
                    disclosure_id, str(result.reason_code), result.detail or "rejected"
                )
                self.totals["webhook_rejected"] += 1
                _log.warning(
                    "recipient.webhook_rejected",
                    recipient=self.recipient.id,
                    disclosure_id=disclosure_id,
                    reason_code=str(result.reason_code),
                )
            else:
                # Still failing after this round's retries: try again next loop.
                self.totals["webhook_retry"] += 1
                break

    async def _send_receipts(self, producer: Any) -> None:
        sent = await publish_receipts(
            producer,
            self.inbox,
            codec=self._codec,
            identity=self._identity,
            topic=self._receipts_topic,
        )
        self.totals["receipts"] += sent


def receipt_records(
    pending: Sequence[PendingReceipt],
    *,
    codec: Codec,
    identity: SigningIdentity,
    topic: str,
) -> list[OutRecord]:
    """Signed ``Receipt`` records for pending outbox rows."""
    out: list[OutRecord] = []
    for row in pending:
        note = None
        if row.note is not None:
            note = {
                k: (bytes.fromhex(v) if k not in ("recipient_key_id", "algorithm") else v)
                for k, v in row.note.items()
            }
        receipt = {
            "receipt_id": row.receipt_id,
            "disclosure_id": row.disclosure_id,
            "concern_id": row.concern_id,
            "recipient_id": identity.agency_id,
            "status": row.status,
            "payload_sha256": row.payload_sha256,
            "at": datetime.fromisoformat(row.at),
            "actor": identity.agency_id,
            "outcome_code": row.outcome_code,
            "note": note,
        }
        out.append(
            signed_record(
                codec,
                identity,
                RECEIPT,
                receipt,
                topic=topic,
                key=row.disclosure_id.encode(),
                record_id=row.disclosure_id,
                id_header=Headers.DISCLOSURE_ID,
            )
        )
    return out


async def publish_receipts(
    producer: Any, inbox: Inbox, *, codec: Codec, identity: SigningIdentity, topic: str
) -> int:
    """Send every pending receipt (acks=all), then mark them sent; returns how many."""
    pending = inbox.pending_receipts()
    if not pending:
        return 0
    await send_all(producer, receipt_records(pending, codec=codec, identity=identity, topic=topic))
    inbox.mark_receipts_sent([p.receipt_id for p in pending])
    return len(pending)
