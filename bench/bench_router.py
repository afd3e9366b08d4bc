"""Router throughput on Apache Kafka: against its crypto floor, and with against without txns.

Same process, same run, same records (``--concerns`` synthetic concerns):

* **floor**: only the cryptography the design cannot avoid (issue 12), for the
  very disclosures the router produced: verify the publisher's signature, and
  per permitted recipient one sealed envelope (X25519 + HKDF + AES-256-GCM, the
  real ``seal``) and one Ed25519 signature, plus one signature per audit batch.
* **core**: ``RouterCore.plan`` alone, no Kafka (decode, verify, validate, route,
  decide, minimise, seal, sign, audit records).
* **router (transactional)**: the real router on the local Apache Kafka: each
  batch's audit batch, disclosures, ledger entries and input offsets in ONE
  Kafka transaction, subject-vault enrolment included.
* **router (pipelined)**: the same transactional router planning batch N+1
  while batch N's transaction is in flight (``Router(pipelined=True)``, off by
  default), for comparison.
* **router (no transactions)**: the same router code with the transaction
  replaced, for comparison only, by produce-then-commit (not exactly-once).
* **raw**: aiokafka consume/produce pass-through of the same bytes (context).

Rounds alternate the Kafka measures to spread machine noise; the best of each
is reported. Group-join time is excluded (first fetched batch to last commit).
The last line of stdout is one JSON object with ``concerns_per_s``,
``floor_per_s`` and ``ratio_to_floor``.
Usage: python bench/bench_router.py [--concerns N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _bench_common import show_result
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from rich.console import Console

from adapters import synthetic_concerns
from broker import (
    Headers,
    OutRecord,
    Plan,
    Router,
    Settings,
    TopicSpec,
    create_topics,
    kafka_engine,
    make_producer,
    seal,
    send_all,
    sign_record,
)
from broker._router import AUDIT_CHUNK
from safer import Runtime
from safer._logging import configure_logging
from schemas import ConcernModel, split_wire

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


async def _produce(runtime: Runtime, records: list[OutRecord], topic: str) -> None:
    producer = make_producer(runtime.bootstrap)
    await producer.start()
    try:
        await send_all(producer, [OutRecord(topic, r.key, r.value, r.headers) for r in records])
    finally:
        await producer.stop()


async def raw_passthrough(runtime: Runtime, records: list[OutRecord], tag: str) -> float:
    source, sink = f"{tag}.raw.in", f"{tag}.raw.out"
    await create_topics(
        runtime.bootstrap,
        [TopicSpec(source, runtime.settings.inbound_partitions, 1), TopicSpec(sink, 1, 1)],
    )
    await _produce(runtime, records, source)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=runtime.bootstrap,
        group_id=f"{tag}-raw",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1500,
        max_poll_records=500,
    )
    producer = make_producer(runtime.bootstrap)
    await producer.start()
    await consumer.start()
    done = 0
    first: float | None = None
    try:
        while done < len(records):
            batch = await consumer.getmany(timeout_ms=250, max_records=500)
            if not batch:
                continue
            first = first or time.monotonic()
            out = [
                OutRecord(sink, m.key, m.value, tuple(m.headers))
                for msgs in batch.values()
                for m in msgs
            ]
            await send_all(producer, out)
            await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in batch.items()})
            done += len(out)
        assert first is not None
        return len(records) / (time.monotonic() - first)
    finally:
        await consumer.stop()
        await producer.stop()


class _NoTransactionRouter(Router):
    """The baseline: the router with its transaction swapped for produce-then-commit."""

    def _producer(self) -> AIOKafkaProducer:
        return make_producer(self._bootstrap)

    async def _transact(
        self,
        producer: AIOKafkaProducer,
        records: list[OutRecord],
        offsets: dict[TopicPartition, int] | None,
        stop: asyncio.Event,
        *,
        consumer: AIOKafkaConsumer | None = None,
        before_commit: Callable[[], Awaitable[None]] | None = None,
        still_current: Callable[[], bool] | None = None,
    ) -> bool:
        if still_current is not None and not still_current():
            return False
        await send_all(producer, records)
        if before_commit is not None:
            await before_commit()
        if offsets and consumer is not None:
            await consumer.commit(offsets)
        return True


async def routed(
    runtime: Runtime, records: list[OutRecord], *, transactional: bool, pipelined: bool = False
) -> tuple[float, dict[str, int]]:
    await _produce(runtime, records, runtime.settings.topics.inbound("police"))
    kind = Router if transactional else _NoTransactionRouter
    router = kind(
        runtime.router_core(),
        bootstrap_servers=runtime.bootstrap,
        inbound_topics=[runtime.settings.topics.inbound("police")],
        group_id=f"{runtime.settings.topic_prefix}-router",
        on_delivered=runtime.enrol_routed_subjects,
        pipelined=pipelined,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop))
    while router.totals["inbound"] < len(records):
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert router.first_batch_at is not None and router.last_batch_at is not None
    rate = len(records) / (router.last_batch_at - router.first_batch_at)
    return rate, dict(router.totals)


def core_only(runtime: Runtime, records: list[OutRecord]) -> tuple[float, list[Plan]]:
    core = runtime.router_core()
    now = datetime.now(UTC)
    plans: list[Plan] = []
    start = time.perf_counter()
    for i, r in enumerate(records):
        plans.append(
            core.plan(
                topic="bench",
                partition=0,
                offset=i,
                key=r.key,
                value=r.value,
                headers=r.headers,
                now=now,
            )
        )
        if core.ledger is not None:
            core.ledger.aborted()  # as if each were a first sighting
    return len(records) / (time.perf_counter() - start), plans


def floor_only(runtime: Runtime, records: list[OutRecord], plans: list[Plan]) -> float:
    """The crypto the design cannot avoid, for exactly the disclosures ``plans`` made."""
    keyring = runtime.keyring()
    identity = runtime.keys.signing_identity("safer-router")
    work: list[tuple[OutRecord, list[tuple[str, str, bytes, X25519PublicKey]]]] = []
    audits = 0
    for record, plan in zip(records, plans, strict=True):
        sealed = []
        for out in plan.outputs:
            decoded = runtime.codec.decode(out.value).record
            if "payload" not in decoded:
                continue
            size = len(decoded["payload"]["ciphertext"]) - 16  # the plaintext's size
            recipient = decoded["recipient_id"]
            sealed.append(
                (
                    decoded["disclosure_id"],
                    recipient,
                    secrets.token_bytes(size),
                    runtime.keys.encryption_public(recipient),
                )
            )
        audits += len(plan.audits)
        work.append((record, sealed))
    batches = -(-audits // AUDIT_CHUNK)
    start = time.perf_counter()
    for record, sealed in work:
        headers = dict(record.headers)
        schema_id, body = split_wire(record.value)
        keyring.verify(
            headers[Headers.KEY_ID].decode(),
            headers[Headers.SIGNATURE],
            schema_id=schema_id,
            record_id=headers[Headers.CONCERN_ID].decode(),
            body=body,
        )
        for disclosure_id, recipient, plaintext, key in sealed:
            envelope = seal(plaintext, key, disclosure_id=disclosure_id, recipient_id=recipient)
            sign_record(identity, schema_id=1, record_id=disclosure_id, body=envelope.ciphertext)
    for _ in range(batches):
        sign_record(identity, schema_id=1, record_id="", body=b"\0" * 64 * 1024)
    return len(records) / (time.perf_counter() - start)


async def main(concerns: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp), deploy_dir=REPO / "deploy")
        with kafka_engine(base, progress=lambda m: console.print(f"kafka: {m}")) as engine:
            bootstrap = engine.bootstrap_servers
            settings = base.model_copy(update={"bootstrap_servers": bootstrap})
            now = datetime.now(UTC)
            items = [
                ConcernModel.model_validate(d)
                for d in synthetic_concerns(concerns, seed=99, now=now)
            ]
            rates: dict[str, list[float]] = {
                "raw": [],
                "txn": [],
                "pipelined": [],
                "no_txn": [],
                "core": [],
                "floor": [],
            }
            totals: dict[str, int] = {}
            for round_no in range(rounds):
                for measure in ("raw", "txn", "pipelined", "no_txn", "core"):
                    tag = f"bench{secrets.token_hex(3)}"
                    runtime = Runtime(settings.model_copy(update={"topic_prefix": tag}), bootstrap)
                    runtime.init_keys()
                    await runtime.create_topics()
                    records = [runtime.police_adapter().prepare(c) for c in items]
                    console.print(f"round {round_no + 1}/{rounds}: {measure} …")
                    if measure == "raw":
                        rates["raw"].append(await raw_passthrough(runtime, records, tag))
                    elif measure == "core":
                        core_rate, plans = core_only(runtime, records)
                        rates["core"].append(core_rate)
                        rates["floor"].append(floor_only(runtime, records, plans))
                    else:
                        rate, totals = await routed(
                            runtime,
                            records,
                            transactional=measure != "no_txn",
                            pipelined=measure == "pipelined",
                        )
                        rates[measure].append(rate)
    best = {k: max(v) for k, v in rates.items()}
    result: dict[str, Any] = {
        "engine": engine.name,
        "concerns": concerns,
        "rounds": rounds,
        "concerns_per_s": round(best["txn"], 1),
        "floor_per_s": round(best["floor"], 1),
        "ratio_to_floor": round(best["txn"] / best["floor"], 3),
        "core_plan_per_s": round(best["core"], 1),
        "core_to_floor_ratio": round(best["core"] / best["floor"], 3),
        "router_pipelined_per_s": round(best["pipelined"], 1),
        "pipelined_to_not_pipelined_ratio": round(best["pipelined"] / best["txn"], 3),
        "router_no_transactions_per_s": round(best["no_txn"], 1),
        "transactional_to_no_transactions_ratio": round(best["txn"] / best["no_txn"], 3),
        "raw_passthrough_per_s": round(best["raw"], 1),
        "router_to_raw_ratio": round(best["txn"] / best["raw"], 3),
        "outputs_per_concern": round(
            (totals.get("DISCLOSED", 0) + totals.get("REFERRED", 0)) / concerns, 2
        ),
        "decisions_per_concern": round(
            sum(totals.get(k, 0) for k in ("DISCLOSED", "REFERRED", "WITHHELD")) / concerns, 2
        ),
    }
    show_result(f"router on {engine.name} ({concerns} concerns, best of {rounds})", result)
    return result


if __name__ == "__main__":
    configure_logging(level="WARNING")  # stdout is for the JSON result only
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concerns", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.concerns, args.rounds))))
    sys.exit(0)
