"""The router's transactional produce path: aiokafka as used against the alternatives.

Issue 12 asks for the produce path to be measured with aiokafka against explicit
partitioning and against confluent-kafka (librdkafka), and for the choice to be
made by numbers. Same process, same run, same bytes, on the local Apache Kafka:

* **aiokafka (as used)**: ``broker.make_producer(..., transactional_id=...)`` and
  ``broker.send_all`` (one awaited ``send`` per record, then one gather), then
  ``send_offsets_to_transaction`` and ``commit_transaction``: what the router does.
* **aiokafka (offsets overlapped)**: as used, but ``send_offsets_to_transaction``
  runs beside the sends (``asyncio.gather``) instead of after them, so its round
  trips (AddOffsetsToTxn, TxnOffsetCommit) overlap the produce's.
* **aiokafka (explicit partition)**: the same producer, but each ``send`` gets
  ``partition=``, computed once per key per transaction with aiokafka's own
  partitioner (the same partitions as the default), so aiokafka skips its
  pure-Python murmur2 per record.
* **aiokafka (send_batch)**: the same producer; records grouped per partition into
  ``BatchBuilder`` objects and handed over with ``send_batch`` (one future per
  batch, not per record).
* **confluent-kafka**: ``confluent_kafka.Producer`` (transactional, idempotent,
  acks=all, same linger, batch and size limits) driven from asyncio the way the
  router would have to: ``produce`` per record on the event loop (it only queues
  into librdkafka; a full queue is drained with ``poll`` in a thread), and the
  blocking ``send_offsets_to_transaction`` and ``commit_transaction`` (which
  flushes) in a worker thread with ``asyncio.to_thread``. The offsets carry the
  group metadata of a ``confluent_kafka.Consumer`` that joined the group (member
  id and generation: KIP-447 fencing). Delivery reports: errors only
  (``delivery.report.only.error``), as the router needs only failures.
  (confluent-kafka's own ``aio.AIOProducer`` refuses headers, so it cannot carry
  the router's signature headers.)

Workload per transaction (the router's shape): ``--concerns`` concerns, each with
2.2 disclosures on average (~3 KB, 4 headers, keyed by subject pseudonym, to 24
single-partition recipient topics), one ledger record (16 B, keyed by concern id),
one signal record (~300 B, keyed by pseudonym), plus one signed audit batch
(~250 KB, 3 headers, no key) per 200 concerns; the transaction also commits
offsets for a 12-partition input topic. Payloads come from ``os.urandom`` before
timing starts.

``--concerns 2`` gives the transactions of a router at low load (the latency
regime), where round trips count more than bytes.

Measures: records/s and transactions/s (wall clock), and the CPU of this Python
process per 1,000 records (``time.process_time``: every thread, librdkafka's
included) and of the main (event-loop) thread alone (``time.thread_time``), since
the router is CPU-bound in its own process. Each client runs one untimed warm-up
transaction first. Rounds alternate the clients (rotating their order) to spread
machine noise; the best of each is reported. The last line of stdout is one JSON
object.

Needs the ``bench`` extra (confluent-kafka): ``pip install -e '.[bench]'``.
Usage: python bench/bench_produce.py [--concerns N] [--transactions T] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench_common import show_result
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from rich.console import Console

from broker import (
    Headers,
    OutRecord,
    Settings,
    TopicSpec,
    create_topics,
    kafka_engine,
    make_producer,
    send_all,
)
from broker._limits import SIZE_LIMITS
from broker._router import AUDIT_CHUNK
from safer._logging import configure_logging

try:
    import confluent_kafka
except ImportError:  # pragma: no cover - the message is the point
    confluent_kafka = None

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)

RECIPIENT_TOPICS = 24
INPUT_PARTITIONS = 12
DISCLOSURE_BYTES = 3 * 1024
SIGNAL_BYTES = 300
LEDGER_BYTES = 16
AUDIT_BATCH_BYTES = 250 * 1024
CLIENTS = (
    "aiokafka",
    "aiokafka_offsets_overlapped",
    "aiokafka_partition",
    "aiokafka_send_batch",
    "confluent",
)


@dataclass(frozen=True)
class Txn:
    """One transaction's records and the input offsets it commits."""

    records: list[OutRecord]
    offsets: dict[int, int]  # input partition -> next offset


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    main_cpu_s: float
    records: int
    transactions: int


def workload(prefix: str, concerns: int, transactions: int, seed: int) -> list[Txn]:
    """``transactions`` transactions of the router's shape; bytes from os.urandom."""
    rng = random.Random(seed)
    recipients = [f"{prefix}.recipient{i:02d}" for i in range(RECIPIENT_TOPICS)]
    key_id = b"safer-router-2026-01"
    txns: list[Txn] = []
    for t in range(transactions):
        records: list[OutRecord] = []
        for c in range(concerns):
            pseudonym = os.urandom(16).hex().encode()
            concern_id = str(uuid.UUID(bytes=os.urandom(16))).encode()
            disclosures = 2 + (rng.random() < 0.2)  # 2.2 per concern on average
            for topic in rng.sample(recipients, disclosures):
                headers = (
                    (Headers.SCHEMA_ID, b"7"),
                    (Headers.KEY_ID, key_id),
                    (Headers.SIGNATURE, os.urandom(64)),
                    (Headers.DISCLOSURE_ID, os.urandom(16).hex().encode()),
                )
                records.append(OutRecord(topic, pseudonym, os.urandom(DISCLOSURE_BYTES), headers))
            records.append(OutRecord(f"{prefix}.routed", concern_id, os.urandom(LEDGER_BYTES), ()))
            records.append(OutRecord(f"{prefix}.signals", pseudonym, os.urandom(SIGNAL_BYTES), ()))
            if (c + 1) % AUDIT_CHUNK == 0 or c == concerns - 1:
                headers = (
                    (Headers.SCHEMA_ID, b"9"),
                    (Headers.KEY_ID, key_id),
                    (Headers.SIGNATURE, os.urandom(64)),
                )
                records.append(
                    OutRecord(f"{prefix}.audit", None, os.urandom(AUDIT_BATCH_BYTES), headers)
                )
        offsets = {p: (t + 1) * (concerns // INPUT_PARTITIONS + 1) for p in range(INPUT_PARTITIONS)}
        txns.append(Txn(records, offsets))
    return txns


def topic_specs(prefix: str) -> list[TopicSpec]:
    configs = {"max.message.bytes": str(SIZE_LIMITS.message_bytes), "min.insync.replicas": "1"}
    names = [f"{prefix}.recipient{i:02d}" for i in range(RECIPIENT_TOPICS)]
    names += [f"{prefix}.routed", f"{prefix}.signals", f"{prefix}.audit"]
    specs = [TopicSpec(n, 1, 1, configs) for n in names]
    return [*specs, TopicSpec(f"{prefix}.inbound", INPUT_PARTITIONS, 1, configs)]


# -- aiokafka ---------------------------------------------------------------------------


class _Partitions:
    """Each key's partition, computed once (aiokafka's partitioner: murmur2, as Java's)."""

    def __init__(self, producer: Any) -> None:
        self._metadata = producer.client.cluster
        self._counts: dict[str, list[int]] = {}
        self._hashes: dict[bytes, int] = {}

    def __call__(self, topic: str, key: bytes | None) -> int | None:
        partitions = self._counts.get(topic)
        if partitions is None:
            known = self._metadata.partitions_for_topic(topic)
            if not known:
                return None  # not in the metadata yet: aiokafka's send waits for it
            partitions = self._counts[topic] = sorted(known)
        if key is None:
            return random.choice(partitions)  # as aiokafka does for a record with no key
        h = self._hashes.get(key)
        if h is None:
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[h % len(partitions)]


async def send_partitioned(producer: Any, records: list[OutRecord]) -> None:
    """``send_all`` with ``partition=`` given (cache per call, i.e. per transaction)."""
    partition_of = _Partitions(producer)
    futures = [
        await producer.send(
            r.topic,
            r.value,
            key=r.key,
            partition=partition_of(r.topic, r.key),
            headers=list(r.headers),
        )
        for r in records
    ]
    await asyncio.gather(*futures)


async def send_batches(producer: Any, records: list[OutRecord]) -> None:
    """Records grouped per partition into BatchBuilders; one ``send_batch`` each."""
    partition_of = _Partitions(producer)
    open_batches: dict[tuple[str, int], BatchBuilder] = {}
    futures = []
    for r in records:
        partition = partition_of(r.topic, r.key)
        if partition is None:
            await producer.client._wait_on_metadata(r.topic)
            partition = partition_of(r.topic, r.key)
            assert partition is not None
        tp = (r.topic, partition)
        headers = list(r.headers)
        batch = open_batches.get(tp)
        if batch is None:
            batch = open_batches[tp] = producer.create_batch()
        if batch.append(key=r.key, value=r.value, timestamp=None, headers=headers) is None:
            batch.close()
            futures.append(await producer.send_batch(batch, tp[0], partition=tp[1]))
            batch = open_batches[tp] = producer.create_batch()
            if batch.append(key=r.key, value=r.value, timestamp=None, headers=headers) is None:
                raise ValueError("a record larger than a batch")
    for (topic, partition), batch in open_batches.items():
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)


async def run_aiokafka(
    bootstrap: str,
    prefix: str,
    txns: list[Txn],
    tag: str,
    send: Callable[[Any, list[OutRecord]], Awaitable[None]],
    *,
    overlap_offsets: bool = False,
) -> Sample:
    producer = make_producer(bootstrap, transactional_id=f"{tag}-txn")
    await producer.start()
    group = f"{tag}-group"
    inbound = f"{prefix}.inbound"

    async def transact(txn: Txn) -> None:
        await producer.begin_transaction()
        offsets = {TopicPartition(inbound, p): o for p, o in txn.offsets.items()}
        if overlap_offsets:  # measured no faster; the router sends the offsets after
            await asyncio.gather(
                send(producer, txn.records), producer.send_offsets_to_transaction(offsets, group)
            )
        else:
            await send(producer, txn.records)
            await producer.send_offsets_to_transaction(offsets, group)
        await producer.commit_transaction()

    try:
        await transact(txns[0])  # warm-up: metadata, connections, coordinator
        return await _timed(transact, txns[1:])
    finally:
        await producer.stop()


# -- confluent-kafka --------------------------------------------------------------------


class _Assigned:
    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, consumer: Any, partitions: Any) -> None:
        self.event.set()


async def run_confluent(bootstrap: str, prefix: str, txns: list[Txn], tag: str) -> Sample:
    assert confluent_kafka is not None
    ck = confluent_kafka
    inbound = f"{prefix}.inbound"
    failures: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:  # served in whichever thread polls
        if err is not None:
            failures.append(err)

    producer = ck.Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"{tag}-txn",
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": 30_000,
            "linger.ms": 2,
            "batch.size": 512 * 1024,
            "message.max.bytes": SIZE_LIMITS.message_bytes,
            "request.timeout.ms": 30_000,
            "delivery.report.only.error": True,
            "on_delivery": on_delivery,
        }
    )
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{tag}-group",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    assigned = _Assigned()
    consumer.subscribe([inbound], on_assign=assigned)
    deadline = time.monotonic() + 30
    while not assigned.event.is_set():  # join the group: the metadata gets a generation
        if time.monotonic() > deadline:
            raise TimeoutError("the confluent consumer was given no partitions in 30 s")
        await asyncio.to_thread(consumer.poll, 0.2)
    await asyncio.to_thread(producer.init_transactions, 30)

    async def transact(txn: Txn) -> None:
        producer.begin_transaction()  # local state only: no network, no thread needed
        produce = producer.produce
        for r in txn.records:
            headers = list(r.headers)  # it takes a list or a dict, not a tuple
            try:
                produce(r.topic, r.value, r.key, headers=headers)
            except BufferError:  # librdkafka's queue is full: serve it off the loop
                await asyncio.to_thread(producer.poll, 0.05)
                produce(r.topic, r.value, r.key, headers=headers)
        offsets = [ck.TopicPartition(inbound, p, o) for p, o in txn.offsets.items()]
        metadata = consumer.consumer_group_metadata()
        await asyncio.to_thread(producer.send_offsets_to_transaction, offsets, metadata, 30)
        await asyncio.to_thread(producer.commit_transaction, 30)  # flushes, then commits
        if failures:
            raise RuntimeError(f"confluent-kafka delivery failures: {failures[:3]}")

    try:
        await transact(txns[0])
        return await _timed(transact, txns[1:])
    finally:
        await asyncio.to_thread(producer.flush, 10)
        await asyncio.to_thread(consumer.close)


# -- timing -----------------------------------------------------------------------------


async def _timed(transact: Callable[[Txn], Awaitable[None]], txns: list[Txn]) -> Sample:
    wall, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    for txn in txns:
        await transact(txn)
    return Sample(
        wall_s=time.perf_counter() - wall,
        cpu_s=time.process_time() - cpu,
        main_cpu_s=time.thread_time() - main_cpu,
        records=sum(len(t.records) for t in txns),
        transactions=len(txns),
    )


async def run(client: str, bootstrap: str, prefix: str, txns: list[Txn], tag: str) -> Sample:
    if client == "aiokafka":
        return await run_aiokafka(bootstrap, prefix, txns, tag, send_all)
    if client == "aiokafka_offsets_overlapped":
        return await run_aiokafka(bootstrap, prefix, txns, tag, send_all, overlap_offsets=True)
    if client == "aiokafka_partition":
        return await run_aiokafka(bootstrap, prefix, txns, tag, send_partitioned)
    if client == "aiokafka_send_batch":
        return await run_aiokafka(bootstrap, prefix, txns, tag, send_batches)
    return await run_confluent(bootstrap, prefix, txns, tag)


async def main(concerns: int, transactions: int, rounds: int) -> dict[str, Any]:
    prefix = "bench"
    txns = workload(prefix, concerns, transactions + 1, seed=12)  # +1: the warm-up
    per_txn = len(txns[0].records)
    mib = sum(len(r.value) for r in txns[0].records) / 2**20
    console.print(f"workload: {per_txn} records ({mib:.1f} MiB) per transaction")
    samples: dict[str, list[Sample]] = {c: [] for c in CLIENTS}
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp), deploy_dir=REPO / "deploy")
        with kafka_engine(base, progress=lambda m: console.print(f"kafka: {m}")) as engine:
            bootstrap = engine.bootstrap_servers
            await create_topics(bootstrap, topic_specs(prefix))
            console.print("warm-up (untimed): the broker's JIT and page cache")
            await run("aiokafka", bootstrap, prefix, txns, f"warm-{os.urandom(3).hex()}")
            for round_no in range(rounds):
                order = CLIENTS[round_no % len(CLIENTS) :] + CLIENTS[: round_no % len(CLIENTS)]
                for client in order:
                    tag = f"{client}-{round_no}-{os.urandom(3).hex()}"
                    sample = await run(client, bootstrap, prefix, txns, tag)
                    samples[client].append(sample)
                    console.print(
                        f"round {round_no + 1}/{rounds} {client}: "
                        f"{sample.records / sample.wall_s:,.0f} records/s, "
                        f"{1000 * sample.cpu_s / sample.records:.3f} CPU s/1k records "
                        f"(main thread {1000 * sample.main_cpu_s / sample.records:.3f})"
                    )
            engine_name = engine.name
    best_rate = {c: max(s.records / s.wall_s for s in v) for c, v in samples.items()}
    best_txn = {c: max(s.transactions / s.wall_s for s in v) for c, v in samples.items()}
    best_cpu = {c: min(1000 * s.cpu_s / s.records for s in v) for c, v in samples.items()}
    best_main = {c: min(1000 * s.main_cpu_s / s.records for s in v) for c, v in samples.items()}
    result: dict[str, Any] = {
        "engine": engine_name,
        "concerns_per_transaction": concerns,
        "records_per_transaction": per_txn,
        "mib_per_transaction": round(mib, 2),
        "transactions": transactions,
        "rounds": rounds,
    }
    base_rate, base_cpu = best_rate["aiokafka"], best_cpu["aiokafka"]
    for c in CLIENTS:
        result[f"{c}_records_per_s"] = round(best_rate[c])
        result[f"{c}_transactions_per_s"] = round(best_txn[c], 2)
        result[f"{c}_cpu_s_per_1k_records"] = round(best_cpu[c], 4)
        result[f"{c}_main_thread_cpu_s_per_1k_records"] = round(best_main[c], 4)
        if c != "aiokafka":
            result[f"{c}_rate_ratio"] = round(best_rate[c] / base_rate, 3)
            result[f"{c}_cpu_ratio"] = round(best_cpu[c] / base_cpu, 3)
    show_result(f"transactional produce on {engine_name} (best of {rounds})", result)
    return result


if __name__ == "__main__":
    configure_logging(level="WARNING")  # stdout is for the JSON result only
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concerns", type=int, default=500, help="concerns per transaction")
    parser.add_argument("--transactions", type=int, default=8, help="timed, per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if confluent_kafka is None:
        console.print(
            "bench_produce needs confluent-kafka (the `bench` extra): pip install -e '.[bench]'",
            markup=False,  # else rich takes [bench] for a style
        )
        sys.exit(2)
    print(json.dumps(asyncio.run(main(args.concerns, args.transactions, args.rounds))))
    sys.exit(0)
