"""aiokafka plumbing shared by the router, the audit feed and the adapters.

Tansu (the embedded broker) has no idempotent producer and no transactions, so
producers run with ``acks="all"`` and ``enable_idempotence=False``; exactly-once
effects come from deterministic ids and idempotent consumers instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from schemas import BrokerError, Codec, ReasonCode, SignatureError, split_wire

from ._crypto import Keyring, SigningIdentity, sign_record
from ._gaps import OffsetGapGuard
from ._topics import HEADER_NAMES, Headers

__all__ = [
    "OutRecord",
    "VerifiedOrigin",
    "create_topics",
    "header",
    "make_producer",
    "read_topic",
    "send_all",
    "signed_record",
    "verify_origin",
]


@dataclass(frozen=True)
class OutRecord:
    """A record ready to produce: topic, key, wire value and headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


def signed_record(
    codec: Codec,
    identity: SigningIdentity,
    subject: str,
    record: Mapping[str, Any],
    *,
    topic: str,
    key: bytes | None,
    record_id: str,
    id_header: str | None,
) -> OutRecord:
    """Encode ``record`` and sign (schema id, record id, body) with ``identity``."""
    value = codec.encode(subject, dict(record))
    schema_id, body = split_wire(value)
    signature = sign_record(identity, schema_id=schema_id, record_id=record_id, body=body)
    headers = [
        (Headers.SCHEMA_ID, str(schema_id).encode()),
        (Headers.KEY_ID, identity.key_id.encode()),
        (Headers.SIGNATURE, signature),
    ]
    if id_header is not None:
        headers.append((id_header, record_id.encode()))
    return OutRecord(topic, key, value, tuple(headers))


@dataclass(frozen=True)
class VerifiedOrigin:
    agency_id: str
    schema_id: int
    record_id: str


def verify_origin(
    keyring: Keyring,
    value: bytes,
    headers: Sequence[tuple[str, bytes]] | None,
    *,
    id_header: str | None,
) -> VerifiedOrigin:
    """Check the signature headers of a record; return who signed it, or raise."""
    unknown = [k for k, _ in headers or () if k.startswith("safer-") and k not in HEADER_NAMES]
    if unknown:
        raise SignatureError(
            "record carries headers outside the allowed set",
            code=ReasonCode.PID_IN_METADATA,
            hint="headers may carry only ids, key ids and signatures (DESIGN §5)",
        )
    key_id = header(headers, Headers.KEY_ID)
    signature = header(headers, Headers.SIGNATURE)
    if key_id is None or signature is None:
        raise SignatureError(
            "record is not signed (no key id or signature header)",
            code=ReasonCode.SIGNATURE_INVALID,
            hint="publish through a SAFER adapter, which signs every record",
        )
    record_id = ""
    if id_header is not None:
        raw_id = header(headers, id_header)
        if raw_id is None:
            raise SignatureError(
                f"record lacks the {id_header} header",
                code=ReasonCode.SIGNATURE_INVALID,
                hint="publish through a SAFER adapter, which sets it",
            )
        record_id = raw_id.decode("utf-8", errors="replace")
    schema_id, body = split_wire(value)
    agency_id = keyring.verify(
        key_id.decode("ascii", errors="replace"),
        signature,
        schema_id=schema_id,
        record_id=record_id,
        body=body,
    )
    return VerifiedOrigin(agency_id, schema_id, record_id)


def make_producer(bootstrap_servers: str, **security: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=False,  # Tansu lacks InitProducerId; ids make retries safe
        linger_ms=2,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=30_000,
        **security,
    )


async def send_all(producer: AIOKafkaProducer, records: Iterable[OutRecord]) -> None:
    """Produce every record and wait until each is acknowledged by the broker."""
    futures = [
        await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers)) for r in records
    ]
    if futures:
        await asyncio.gather(*futures)


async def create_topics(
    bootstrap_servers: str, partitions: Mapping[str, int], **security: Any
) -> None:
    """Create topics that do not exist yet (existing ones are left alone)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **security)
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap_servers} ({type(exc).__name__})",
            hint="check KAFKA_BOOTSTRAP_SERVERS, or unset it to use the embedded broker",
        ) from None
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, count, 1) for name, count in partitions.items() if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a racing creator won
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def read_topic(
    bootstrap_servers: str, topic: str, *, timeout: float = 30.0, **security: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a whole topic from the beginning up to its current high-watermark.

    Uses fetch high-watermarks, not ListOffsets: Tansu answers ListOffsets
    with the last batch's base offset, which undercounts.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **security,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return records
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        gaps = OffsetGapGuard()
        for tp in tps:
            gaps.expect(tp, await consumer.position(tp))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            batch = await gaps.getmany(consumer, *tps, timeout_ms=200)
            for tp_records in batch.values():
                records.extend(tp_records)
            done = True
            for tp in tps:
                high = consumer.highwater(tp)
                if high is None or await consumer.position(tp) < high:
                    done = False
            if done:
                break
            if loop.time() > deadline:
                raise BrokerError(
                    f"timed out reading {topic} to its end",
                    hint="the broker may be overloaded; try again",
                )
    finally:
        await consumer.stop()
    return records
