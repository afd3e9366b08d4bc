"""aiokafka plumbing shared by the router, the audit feed and the adapters.

Every producer is idempotent with ``acks="all"``; the router's is also
transactional. Every consumer reads ``read_committed`` and commits nothing on
its own; a stored position that has vanished is a loud error (POSITION_LOST).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaError,
    OffsetOutOfRangeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from schemas import BrokerError, Codec, ReasonCode, SignatureError, split_wire

from ._crypto import Keyring, SigningIdentity, sign_record
from ._limits import SIZE_LIMITS
from ._topics import HEADER_NAMES, MAX_HEADER_BYTES, Headers, TopicSpec, header_has_form

_log = structlog.get_logger("safer.kafka")

__all__ = [
    "OutRecord",
    "VerifiedOrigin",
    "assign_stored",
    "caught_up",
    "create_topics",
    "fetch",
    "follow_topic",
    "header",
    "make_consumer",
    "make_producer",
    "read_topic",
    "send_all",
    "signed_record",
    "start_client",
    "stop_clients",
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
    now: datetime | None = None,
) -> VerifiedOrigin:
    """Check the headers of a record and its signature; return who signed it, or raise.

    Every header is checked against the allow-list, not only ``safer-*`` ones:
    anything else may carry personal data (PID_IN_METADATA). Allowed headers
    appear once each, each value has the form SAFER gives it (ids are hex or
    UUIDs, the schema id is the record's own), else HEADER_INVALID: a header
    is never a place a name or an NHS number can ride along with a valid record.
    """
    names = [k for k, _ in headers or ()]
    if any(k not in HEADER_NAMES for k in names):
        raise SignatureError(
            "record carries a header outside the allowed set",
            code=ReasonCode.PID_IN_METADATA,
            hint="headers may carry only SAFER's ids, key ids and signatures (DESIGN §5); "
            "send everything else inside the signed record",
        )
    if len(set(names)) != len(names) or any(
        not v or len(v) > MAX_HEADER_BYTES or not header_has_form(k, v) for k, v in headers or ()
    ):
        raise SignatureError(
            "record carries a repeated, empty, oversized or malformed header",
            code=ReasonCode.HEADER_INVALID,
            hint="publish through a SAFER adapter, which sets each header once, in its form",
        )
    stated_schema = header(headers, Headers.SCHEMA_ID)
    if stated_schema is not None and int(stated_schema) != split_wire(value)[0]:
        raise SignatureError(
            "the schema id header differs from the record's own",
            code=ReasonCode.HEADER_INVALID,
            hint="publish through a SAFER adapter, which sets it from the record",
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
        now=now,
    )
    return VerifiedOrigin(agency_id, schema_id, record_id)


def make_producer(
    bootstrap_servers: str, *, transactional_id: str | None = None, **security: Any
) -> AIOKafkaProducer:
    """An idempotent producer (acks=all): a retried send is never written twice.

    With ``transactional_id`` it is transactional (the router): records become
    visible only when their transaction commits, and a restarted producer with
    the same id aborts whatever its crashed predecessor left open.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        transaction_timeout_ms=30_000,
        linger_ms=2,
        max_batch_size=512 * 1024,
        # A record over the topics' max.message.bytes is refused here, before the broker.
        max_request_size=SIZE_LIMITS.message_bytes,
        request_timeout_ms=30_000,
        **security,
    )


async def start_client(client: AIOKafkaProducer | AIOKafkaConsumer, bootstrap_servers: str) -> None:
    """Start a producer or consumer, or raise a BrokerError that says what to check.

    aiokafka reports a refused SCRAM login only as "unable to bootstrap"; the
    hint names the credentials, the usual cause in secure mode.
    """
    try:
        await client.start()
    except KafkaError as exc:
        with contextlib.suppress(Exception):
            await client.stop()
        raise BrokerError(
            f"cannot connect to Kafka at {bootstrap_servers} ({type(exc).__name__})",
            hint="check that the broker runs (`safer up`); in secure mode also that this "
            "agency's Kafka user exists and its password is current (docs/OPERATIONS.md, "
            "'Secure mode')",
        ) from None


#: How long a service waits for its Kafka clients to close before giving up on them.
STOP_TIMEOUT_S = 10.0


async def stop_clients(
    *clients: AIOKafkaProducer | AIOKafkaConsumer, timeout: float = STOP_TIMEOUT_S
) -> None:
    """Stop each client, in order, within ``timeout`` seconds each.

    A service must always finish stopping: a client whose coordinator is gone
    (the broker died, or the event loop is being torn down and cancelled the
    client's own tasks) can otherwise wait for a LeaveGroup or an end of
    transaction that never comes. Nothing is lost by giving up: positions are
    committed with the work they belong to, and an open transaction is aborted
    by the broker or fenced by the next instance.
    """
    for client in clients:
        try:
            async with asyncio.timeout(timeout):
                await client.stop()
        except TimeoutError:
            _log.warning("kafka.stop_timed_out", client=type(client).__name__, timeout_s=timeout)
        except KafkaError as exc:
            _log.warning(
                "kafka.stop_failed", client=type(client).__name__, error=type(exc).__name__
            )


async def send_all(producer: AIOKafkaProducer, records: Iterable[OutRecord]) -> None:
    """Produce every record and wait until each is acknowledged by the broker."""
    try:
        futures = [
            await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers))
            for r in records
        ]
        if futures:
            await asyncio.gather(*futures)
    except UnknownTopicOrPartitionError:
        raise BrokerError(
            "a topic this record goes to does not exist on the broker",
            code=ReasonCode.CONFIG_INVALID,
            retriable=False,
            hint="topics are created on purpose by the admin step: run `safer topics create` "
            "(or start `safer up`, which runs it)",
        ) from None


async def _admin(bootstrap_servers: str, **security: Any) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **security)
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap_servers} ({type(exc).__name__})",
            hint="start it with `safer up` (or `safer broker`), or check KAFKA_BOOTSTRAP_SERVERS",
        ) from None
    return admin


async def create_topics(
    bootstrap_servers: str, specs: Sequence[TopicSpec], **security: Any
) -> list[str]:
    """The admin step: make every topic as ``specs`` say; return what was changed.

    Missing topics are created with their partitions, replication and configs.
    Existing ones get their configs set to the spec and, if they have fewer
    partitions than configured, more partitions (never fewer: Kafka cannot).
    A replication factor that differs is reported, not changed (that is a
    partition reassignment, an operator's decision).
    """
    admin = await _admin(bootstrap_servers, **security)
    changes: list[str] = []
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
            for s in specs
            if s.name not in existing
        ]
        if wanted:
            # A racing creator may win; its topics are as good as ours.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
            changes += [f"created {t.name}" for t in wanted]
        present = [s for s in specs if s.name in existing]
        if present:
            changes += await _reconcile(admin, present)
    finally:
        await admin.close()
    for change in changes:
        _log.info("kafka.topic_changed", change=change)
    return changes


async def _reconcile(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> list[str]:
    changes: list[str] = []
    described = await admin.describe_topics([s.name for s in specs])
    by_name = {d["topic"]: d for d in described}
    grow: dict[str, NewPartitions] = {}
    for spec in specs:
        partitions = by_name.get(spec.name, {}).get("partitions") or []
        if partitions and len(partitions) < spec.partitions:
            grow[spec.name] = NewPartitions(spec.partitions)
            changes.append(f"{spec.name}: partitions {len(partitions)} -> {spec.partitions}")
        replicas = {len(p.get("replicas", ())) for p in partitions}
        if replicas and replicas != {spec.replication_factor}:
            _log.warning(
                "kafka.replication_differs",
                topic=spec.name,
                configured=spec.replication_factor,
                actual=sorted(replicas),
            )
    if grow:
        await admin.create_partitions(grow)
    drifted = await _drifted(admin, specs)
    if drifted:
        responses = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name, dict(s.configs)) for s in drifted]
        )
        for response in responses:
            for code, _message, _type, name in response.resources:
                if code:
                    # In secure mode a DENY ACL protects hips.audit: nobody may alter it.
                    _log.warning("kafka.topic_config_refused", topic=name, error_code=code)
                    changes.append(
                        f"{name}: configs differ from the plan, but the broker refused to "
                        f"change them (Kafka error {code})"
                    )
                else:
                    changes.append(f"{name}: configs set to the plan")
    return changes


async def _drifted(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> list[TopicSpec]:
    """The topics whose configs differ from their spec (only those are altered: an
    unneeded alter would be refused on a topic the ACLs protect, such as hips.audit)."""
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name, dict(s.configs)) for s in specs]
    )
    current: dict[str, dict[str, str | None]] = {}
    for response in responses:
        for code, _message, _type, name, entries in response.resources:
            if not code:
                current[name] = {entry[0]: entry[1] for entry in entries}
    return [
        s
        for s in specs
        if s.name not in current or any(current[s.name].get(k) != v for k, v in s.configs.items())
    ]


def make_consumer(
    bootstrap_servers: str,
    *,
    group_id: str | None = None,
    auto_offset_reset: str = "none",
    **options: Any,
) -> AIOKafkaConsumer:
    """A consumer that sees only committed records (DESIGN §6) and never moves on its own.

    ``read_committed``: a record produced in a transaction (the router's audit
    records and disclosures) is visible only once its transaction commits, so
    no reader ever sees a disclosure without its audit record. Offsets are
    never auto-committed. ``auto_offset_reset="none"``: a stored position that no
    longer exists is an error (``fetch``), never a silent jump.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        isolation_level="read_committed",
        max_partition_fetch_bytes=SIZE_LIMITS.fetch_bytes,
        **options,
    )


async def fetch(
    consumer: AIOKafkaConsumer, *partitions: TopicPartition, timeout_ms: int, max_records: int
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """``getmany``, with a lost position turned into a loud, non-retriable error."""
    try:
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await consumer.getmany(
            *partitions, timeout_ms=timeout_ms, max_records=max_records
        )
    except OffsetOutOfRangeError as exc:
        lost = sorted(f"{tp.topic}[{tp.partition}]@{offset}" for tp, offset in exc.args[0].items())
        raise BrokerError(
            f"stored position(s) {', '.join(lost)} no longer exist on the broker: the topic "
            "was deleted, recreated or truncated since this service last read it",
            code=ReasonCode.POSITION_LOST,
            retriable=False,
            hint="nothing was skipped; find out what happened to the topic (docs/OPERATIONS.md, "
            "'A stored position is lost') before resetting this service's position",
        ) from None
    return batch


async def follow_topic(
    bootstrap_servers: str,
    topic: str,
    stop: asyncio.Event,
    caught_up_event: asyncio.Event,
    apply: Callable[[ConsumerRecord[bytes, bytes]], object],
    *,
    poll_ms: int,
    on_caught_up: Callable[[], None] = lambda: None,
    **security: Any,
) -> None:
    """Read every record of ``topic`` from the beginning into ``apply`` until ``stop``.

    For the state a service rebuilds from a compacted topic (the routed ledger,
    the cumulative-concern signal, key events): ``caught_up_event`` is set, and
    ``on_caught_up`` called, once the state holds everything written before the
    follower started.
    """
    consumer = make_consumer(
        bootstrap_servers, auto_offset_reset="earliest", fetch_max_wait_ms=poll_ms, **security
    )
    await consumer.start()
    try:
        tps = await assign_stored(consumer, [topic], {})
        while not stop.is_set():
            batch = await fetch(consumer, *tps, timeout_ms=poll_ms, max_records=10_000)
            for records in batch.values():
                for record in records:
                    apply(record)
            if not caught_up_event.is_set() and await caught_up(consumer, tps):
                caught_up_event.set()
                on_caught_up()
    finally:
        await stop_clients(consumer)


async def assign_stored(
    consumer: AIOKafkaConsumer,
    topics: Sequence[str],
    stored: Mapping[tuple[str, int], int],
    *,
    wait: float = 30.0,
) -> list[TopicPartition]:
    """Assign every partition of ``topics``, each at its stored position or the beginning.

    For services that keep their position with their own data (the audit feed in
    the audit store, recipients in their inbox), so a restart resumes exactly.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    tps: list[TopicPartition] = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            if loop.time() > deadline:
                raise BrokerError(
                    f"topic {topic} does not exist",
                    hint="topics are created by the admin step: run `safer up` (or "
                    "`safer topics create`) first",
                )
            # Ask for this topic by name: a metadata request for all topics silently
            # leaves out those the principal may not see.
            await consumer._client.add_topic(topic)
            await consumer._client.force_metadata_update()
            if topic in consumer._client.cluster.unauthorized_topics:
                # Secure mode: the broker's ACLs refuse this principal the topic. Say
                # so at once (aiokafka would otherwise retry an assignment forever).
                raise BrokerError(
                    f"not authorized to read topic {topic}",
                    code=ReasonCode.NOT_AUTHORIZED,
                    retriable=False,
                    hint="the broker's ACLs give each principal only its own topics "
                    "(docs/OPERATIONS.md, 'Secure mode'); connect as the right principal",
                )
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await asyncio.sleep(0.2)
        tps += [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    for tp in tps:
        position = stored.get((tp.topic, tp.partition))
        if position is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, position)
    return tps


async def caught_up(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> bool:
    """Every partition read up to its last stable offset (read_committed's end)."""
    for tp in tps:
        end = consumer.last_stable_offset(tp)
        if end is None or await consumer.position(tp) < end:
            return False
    return True


async def read_topic(
    bootstrap_servers: str, topic: str, *, timeout: float = 30.0, **security: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a whole topic's committed records, from the beginning to its current end."""
    consumer = make_consumer(bootstrap_servers, auto_offset_reset="earliest", **security)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        tps = await assign_stored(consumer, [topic], {}, wait=timeout)
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offsets
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pending = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not pending:
                break
            if loop.time() > deadline:
                raise BrokerError(
                    f"timed out reading {topic} to its end",
                    hint="the broker may be overloaded; try again",
                )
            batch = await fetch(consumer, *pending, timeout_ms=200, max_records=10_000)
            for tp_records in batch.values():
                records.extend(tp_records)
    finally:
        await consumer.stop()
    return records
