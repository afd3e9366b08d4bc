"""Working the quarantine: list, inspect and replay quarantined records (issue 11).

Quarantine records are read from ``hips.quarantine`` (``read_committed``) and
their router signature is checked. A replay re-submits the *original* signed
bytes, unchanged, to the topic they came from, with a ``safer-replay-of``
header naming the quarantine record: the router judges them again (after the
fix: a key added, a directory entry corrected) and audits the replay and its
outcome. Replaying twice is harmless: a record routed by the first replay is a
REPLAY the second time; one still broken is quarantined again.

When the original was too large to keep inline, its bytes are fetched from the
source position, which holds them for that topic's retention, and checked
against the recorded SHA-256 before anything is sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from schemas import QUARANTINE, BrokerError, Codec, ReasonCode, SaferError

from ._crypto import Keyring
from ._kafka import OutRecord, fetch, make_consumer, read_topic, verify_origin
from ._topics import Headers

__all__ = ["QuarantineItem", "fetch_original", "read_quarantine", "replay_record"]


@dataclass(frozen=True)
class QuarantineItem:
    """One quarantined record, as its router-signed quarantine record says."""

    quarantine_id: str
    reason_code: str
    detail: str
    concern_id: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    original_key: bytes | None
    original_headers: dict[str, bytes]
    original_value: bytes
    original_sha256: str
    original_size: int
    original_truncated: bool
    dropped_headers: int
    at: datetime

    @property
    def source(self) -> str:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    def summary(self) -> dict[str, Any]:
        """What may be shown anywhere: ids, codes, positions and sizes; no original bytes."""
        return {
            "quarantine_id": self.quarantine_id,
            "at": self.at.isoformat(),
            "reason_code": self.reason_code,
            "detail": self.detail,
            "concern_id": self.concern_id,
            "source": self.source,
            "size": self.original_size,
            "sha256": self.original_sha256,
            "inline": not self.original_truncated,
            "headers_kept": sorted(self.original_headers),
            "headers_dropped": self.dropped_headers,
        }


async def read_quarantine(
    bootstrap_servers: str,
    *,
    codec: Codec,
    keyring: Keyring,
    topic: str,
    router_id: str,
    security: dict[str, Any] | None = None,
) -> list[QuarantineItem]:
    """Every quarantine record, oldest first; records not signed by the router are refused."""
    items: list[QuarantineItem] = []
    for message in await read_topic(bootstrap_servers, topic, **(security or {})):
        value = message.value or b""
        origin = verify_origin(keyring, value, message.headers, id_header=None)
        if origin.agency_id != router_id:
            raise BrokerError(
                f"a record on {topic} is signed by {origin.agency_id}, not the router",
                code=ReasonCode.SIGNATURE_INVALID,
                retriable=False,
                hint="only the router writes the quarantine; check who may write that topic",
            )
        r = codec.decode(value, expect=QUARANTINE).record
        original = bytes(r["original_value"])
        items.append(
            QuarantineItem(
                quarantine_id=r["quarantine_id"],
                reason_code=r["reason_code"],
                detail=r["detail"],
                concern_id=r["concern_id"],
                source_topic=r["source_topic"],
                source_partition=r["source_partition"],
                source_offset=r["source_offset"],
                original_key=r["original_key"],
                original_headers={k: bytes(v) for k, v in r["original_headers"].items()},
                original_value=original,
                original_sha256=r["original_sha256"] or hashlib.sha256(original).hexdigest(),
                original_size=r["original_size"] or len(original),
                original_truncated=r["original_truncated"],
                dropped_headers=r["dropped_headers"],
                at=r["at"],
            )
        )
    return items


async def fetch_original(
    bootstrap_servers: str, item: QuarantineItem, *, security: dict[str, Any] | None = None
) -> bytes:
    """The original bytes: inline, or read back from the source position and checked."""
    if not item.original_truncated:
        return item.original_value
    consumer = make_consumer(bootstrap_servers, **(security or {}))
    await consumer.start()
    try:
        tp = TopicPartition(item.source_topic, item.source_partition)
        consumer.assign([tp])
        consumer.seek(tp, item.source_offset)
        try:
            batch = await fetch(consumer, tp, timeout_ms=5000, max_records=1)
        except SaferError as exc:
            raise BrokerError(
                f"the original of {item.quarantine_id} is gone from {item.source} "
                f"(past the topic's retention): {exc.code}",
                code=ReasonCode.POSITION_LOST,
                retriable=False,
                hint="ask the publisher to send the concern again",
            ) from None
    finally:
        await consumer.stop()
    found = [m for m in batch.get(tp, []) if m.offset == item.source_offset]
    value = (found[0].value or b"") if found else b""
    if hashlib.sha256(value).hexdigest() != item.original_sha256:
        raise BrokerError(
            f"the bytes at {item.source} are not the quarantined original",
            code=ReasonCode.PAYLOAD_MISMATCH,
            retriable=False,
            hint="the source position no longer holds it; ask the publisher to send it again",
        )
    return value


def replay_record(item: QuarantineItem, original: bytes) -> OutRecord:
    """The original record, unchanged, marked as a replay of ``item``."""
    headers = [(k, v) for k, v in item.original_headers.items() if k != Headers.REPLAY_OF]
    headers.append((Headers.REPLAY_OF, item.quarantine_id.encode("ascii")))
    return OutRecord(item.source_topic, item.original_key, original, tuple(headers))
