"""The hostile corpus on the real broker, interleaved with valid traffic (issue 11, point 6).

On the session's Apache Kafka, with every service running (router, audit feed,
monitor, every recipient adapter: ``Runtime.run_services``), one run:

* offers the REFUSED cases to the first hop, which must refuse each (the SAFER
  producer itself, or the broker's ``max.message.bytes`` for a producer set to
  send it anyway);
* produces every other hostile record straight onto ``hips.inbound.police``,
  interleaved with 120 valid signed concerns (replays after their originals);
* waits until everything is accounted for, stops the services, and asserts:
  each hostile record is quarantined (on ``hips.quarantine`` and audited
  QUARANTINED) with exactly its expected code, or, for an exact replay, recorded
  REPLAYED and not quarantined; no record is unaccounted for; every valid
  concern is decided and every disclosure received; the router never restarted
  (one ``router.started``, no ``service.crashed``, and its own totals match);
  ``safer audit verify`` passes; and no personal value the corpus carries is in
  a log line, in a key or header of any topic the exchange writes (or of a valid
  inbound record), in the audit topic, or anywhere in the audit store's files.

Waiting has an upper bound only so that a broken run fails instead of hanging;
nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from audit import AuditStore, entry_id_for, verify_store
from broker import SIZE_LIMITS, Headers, OutRecord, make_producer, read_topic
from safer import Runtime
from safer import _logging as safer_logging
from safer._logging import configure_logging
from schemas import AuditEvent

from ..integration.spine import REPO, account, make_runtime
from .corpus import REFUSED, REPLAY, Corpus, HostileCase, build_corpus

pytestmark = pytest.mark.kafka

SEED = 11
#: Upper bound on waiting for the run to be accounted for (a hang fails, it is not timed).
PATIENCE = 240.0


@dataclass(frozen=True)
class Sent:
    case: HostileCase | None  # None: valid traffic
    record: OutRecord
    partition: int
    offset: int


async def _offer_refused(runtime: Runtime, cases: list[HostileCase]) -> dict[str, str]:
    """Offer each REFUSED case to its first hop; return label -> the error that refused it."""
    refused: dict[str, str] = {}
    for case in cases:
        if case.refused_by == "producer":
            producer = make_producer(runtime.bootstrap)
        else:  # a producer that lets it through: the broker's topic limit must refuse it
            producer = AIOKafkaProducer(
                bootstrap_servers=runtime.bootstrap, max_request_size=16_000_000, acks="all"
            )
        await producer.start()
        try:
            r = case.record
            await producer.send_and_wait(r.topic, r.value, key=r.key, headers=list(r.headers))
        except KafkaError as exc:
            refused[case.label] = type(exc).__name__
        finally:
            await producer.stop()
    return refused


async def _produce(
    runtime: Runtime, order: list[tuple[HostileCase | None, OutRecord]]
) -> list[Sent]:
    producer = make_producer(runtime.bootstrap)
    await producer.start()
    try:
        futures = [
            await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers))
            for _, r in order
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        Sent(case, record, meta.partition, meta.offset)
        for (case, record), meta in zip(order, metadata, strict=True)
    ]


async def _wait_accounted(
    store: AuditStore,
    corpus: Corpus,
    *,
    quarantines: int,
    replayed: set[str],
    services: asyncio.Task[None],
) -> None:
    valid = {c.concern_id for c in corpus.valid_concerns}
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while True:
        acc = account(store)
        decided = {cid for cid, events in acc.decided.items() if events - {"QUARANTINED"}}  # routed
        events = Counter(r.event.value for r in store.records(event=AuditEvent.QUARANTINED))
        done_replays = {r.concern_id for r in store.records(event=AuditEvent.REPLAYED)}
        if (
            valid <= decided
            and acc.delivered <= acc.received
            and events["QUARANTINED"] >= quarantines
            and replayed <= done_replays
        ):
            return
        if services.done():
            services.result()
            raise AssertionError("the services stopped on their own")
        assert asyncio.get_running_loop().time() < deadline, (
            f"not accounted for: {len(valid - decided)} valid undecided, "
            f"{len(acc.delivered - acc.received)} unreceived, "
            f"{events['QUARANTINED']}/{quarantines} quarantined, "
            f"{len(replayed - done_replays)} replays unrecorded"
        )
        await asyncio.sleep(0.5)


def _log_events(log_file: Path) -> list[dict[str, Any]]:
    events = []
    for line in log_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@dataclass
class Run:
    runtime: Runtime
    corpus: Corpus
    sent: list[Sent]
    refused: dict[str, str]
    log_file: Path
    topics: dict[str, list[Any]]


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("hostile-e2e")
    log_file = tmp / "safer.log"
    # Log to a file of this run's own, then give the tests that follow the set-up they had.
    saved, previous = structlog.get_config(), safer_logging._handle
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    safer_logging._handle = None  # so that configuring does not close another test's file
    configure_logging(log_file=log_file)
    try:
        runtime = make_runtime(tmp, kafka_bootstrap, prefix=f"hx{secrets.token_hex(3)}")
        yield asyncio.run(_run(runtime, log_file))
    finally:
        if safer_logging._handle is not None:
            safer_logging._handle.close()
        safer_logging._handle = previous
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


async def _run(runtime: Runtime, log_file: Path) -> Run:
    await runtime.create_topics()
    corpus = build_corpus(runtime, seed=SEED, now=datetime.now(UTC))
    refused_cases = [c for c in corpus.cases if c.expected == REFUSED]
    order = corpus.interleaved()
    quarantines = sum(1 for c, _ in order if c is not None and c.fate == "QUARANTINED")
    replayed = {c.original for c, _ in order if c is not None and c.expected == REPLAY}
    store = AuditStore(runtime.settings.audit_db)
    stop, ready = asyncio.Event(), asyncio.Event()
    services = asyncio.create_task(runtime.run_services(stop, store=store, on_ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 90)
        refused = await _offer_refused(runtime, refused_cases)
        sent = await _produce(runtime, order)
        await _wait_accounted(
            store,
            corpus,
            quarantines=quarantines,
            replayed={r for r in replayed if r is not None},
            services=services,
        )
    finally:
        stop.set()
        await services
        store.close()
    t = runtime.settings.topics
    names = [
        t.inbound("police"),
        t.quarantine,
        t.audit,
        t.receipts,
        t.routed,
        t.alerts,
        t.consent,
        *t.all_recipient_topics(),
        *(t.notices(p.agency_type) for p in runtime.deployment.directory.publishers),
    ]
    topics = {name: await read_topic(runtime.bootstrap, name, timeout=60) for name in names}
    return Run(runtime, corpus, sent, refused, log_file, topics)


def _quarantined(run: Run) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Quarantine records by the (partition, offset) of the inbound record they hold."""
    inbound = run.runtime.settings.topics.inbound("police")
    by_position: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for record in run.topics[run.runtime.settings.topics.quarantine]:
        q = run.runtime.codec.decode(record.value, expect="quarantine").record
        assert q["source_topic"] == inbound
        by_position.setdefault((q["source_partition"], q["source_offset"]), []).append(q)
    return by_position


def test_the_first_hop_refuses_records_over_the_topic_limit(run: Run) -> None:
    refused = [c for c in run.corpus.cases if c.expected == REFUSED]
    assert {c.refused_by for c in refused} == {"producer", "broker"}
    for case in refused:
        assert case.label in run.refused, f"{case.label} was not refused by the {case.refused_by}"
        assert run.refused[case.label] == MessageSizeTooLargeError.__name__, case.label
    # Nothing of them reached the topic: it holds exactly what was sent, all under the limit.
    inbound = run.topics[run.runtime.settings.topics.inbound("police")]
    assert len(inbound) == len(run.sent)
    assert max(len(r.value or b"") for r in inbound) < SIZE_LIMITS.message_bytes


def test_every_hostile_record_gets_exactly_its_code_and_none_is_unaccounted(run: Run) -> None:
    quarantined = _quarantined(run)
    runtime = run.runtime
    with AuditStore(runtime.settings.audit_db) as store:
        audited = {r.entry_id: r for r in store.records(event=AuditEvent.QUARANTINED)}
        replays = Counter(r.concern_id for r in store.records(event=AuditEvent.REPLAYED))
        acc = account(store)
    wrong: list[str] = []
    observed: Counter[tuple[str, str]] = Counter()
    for sent in run.sent:
        here = quarantined.get((sent.partition, sent.offset), [])
        case = sent.case
        if case is None:  # valid traffic: routed, never quarantined
            assert not here, "a valid concern was quarantined"
            continue
        if case.expected == REPLAY:
            observed[(case.kind, REPLAY)] += 1
            if here or not replays[case.original]:
                wrong.append(
                    f"{case.label}: expected REPLAYED, got {[q['reason_code'] for q in here]}"
                )
            continue
        codes = [q["reason_code"] for q in here]
        observed[(case.kind, codes[0] if len(codes) == 1 else f"{len(codes)} records")] += 1
        if codes != [case.expected]:
            wrong.append(f"{case.label}: expected {case.expected}, got {codes or 'nothing'}")
            continue
        (q,) = here
        audit = audited.get(entry_id_for(AuditEvent.QUARANTINED, q["quarantine_id"]))
        if audit is None or audit.reason_codes != (case.expected,):
            wrong.append(f"{case.label}: no QUARANTINED audit entry with {case.expected}")
    assert not wrong, f"{len(wrong)} hostile record(s) wrong:\n" + "\n".join(wrong[:40])
    hostile = [s for s in run.sent if s.case is not None]
    quarantine_cases = [s for s in hostile if s.case and s.case.expected != REPLAY]
    # Nothing else was quarantined or audited as quarantined: one each, no more.
    assert sum(len(v) for v in quarantined.values()) == len(quarantine_cases)
    assert len(audited) == len(quarantine_cases)
    # An exact replay is recorded once per concern, however often it came.
    assert set(replays.values()) == {1}
    # 0 unaccounted: every record sent ends decided, REPLAYED or QUARANTINED.
    routed = {cid for cid, events in acc.decided.items() if events - {"QUARANTINED"}}
    for sent in run.sent:
        if sent.case is None:
            cid = dict(sent.record.headers)[Headers.CONCERN_ID].decode()
            assert cid in routed
    _print_table(run, observed)


def _print_table(run: Run, observed: Counter[tuple[str, str]]) -> None:
    """The reason codes observed (shown with `pytest -s`)."""
    for case in run.corpus.cases:
        if case.expected == REFUSED:
            observed[(case.kind, f"REFUSED by {case.refused_by}")] += 1
    by_code: Counter[str] = Counter()
    for (_, code), n in observed.items():
        by_code[code] += n
    print(f"\nhostile corpus: {len(run.corpus.cases)} cases, {len(run.corpus.kinds())} kinds")
    for code, n in sorted(by_code.items(), key=lambda x: -x[1]):
        print(f"  {code:<28} {n:>5}")
    for (kind, code), n in sorted(observed.items()):
        print(f"  {kind:<32} {code:<28} {n:>5}")


def test_valid_traffic_interleaved_with_the_corpus_is_routed_and_received(run: Run) -> None:
    valid = {c.concern_id for c in run.corpus.valid_concerns}
    with AuditStore(run.runtime.settings.audit_db) as store:
        acc = account(store)
    conflicts = Counter(c.original for c in run.corpus.cases if c.expected == "CONCERN_ID_CONFLICT")
    for cid in valid:
        assert acc.decided[cid] & {"DISCLOSED", "WITHHELD", "REFERRED"}, cid
        # Quarantined under this id: only the different bodies sent under it later.
        assert acc.quarantine_codes.get(cid, []) == ["CONCERN_ID_CONFLICT"] * conflicts[cid]
    assert len(acc.delivered) > len(valid), "the valid traffic disclosed too little"
    assert acc.delivered <= acc.received
    # Recipient topics hold exactly the audited disclosures, each once: no hostile
    # record and no replay produced anything.
    seen: Counter[str] = Counter()
    for name in run.runtime.settings.topics.all_recipient_topics():
        for record in run.topics[name]:
            seen[dict(record.headers)[Headers.DISCLOSURE_ID].decode()] += 1
            concern = run.runtime.codec.decode(record.value, expect="disclosure").record
            assert concern["concern_id"] in valid
    assert set(seen) == acc.delivered and set(seen.values()) == {1}


def test_the_router_stayed_up(run: Run) -> None:
    events = _log_events(run.log_file)
    names = Counter(e.get("event") for e in events)
    assert names["service.crashed"] == 0, [e for e in events if e["event"] == "service.crashed"]
    assert names["router.started"] == 1, "the router (re)started more than once"
    (stopped,) = [e for e in events if e.get("event") == "router.stopped"]
    hostile = [s.case for s in run.sent if s.case is not None]
    # The router's own totals: every record it read, each handled once, in one run.
    assert stopped["inbound"] == len(run.sent)
    assert stopped["QUARANTINED"] == sum(1 for c in hostile if c.expected != REPLAY)
    assert stopped["REPLAYED"] == sum(1 for c in hostile if c.expected == REPLAY)
    assert names["router.batch"] >= 1


def test_safer_audit_verify_passes(run: Run) -> None:
    settings = run.runtime.settings
    with AuditStore(settings.audit_db) as store:
        entries = store.count()
    assert verify_store(settings.audit_db, key=run.runtime.log_key()).entries == entries
    env = dict(os.environ, SAFER_DEPLOY_DIR=str(REPO / "deploy"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "safer",
            "--data-dir",
            str(settings.data_dir),
            "audit",
            "verify",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["entries"] == entries


def test_no_personal_data_in_logs_metadata_or_the_audit_store(run: Run) -> None:
    needles = sorted(n.encode() for n in run.corpus.personal_data)
    assert len(needles) > 300
    inbound = run.runtime.settings.topics.inbound("police")
    valid_positions = {(s.partition, s.offset) for s in run.sent if s.case is None}
    metadata: list[bytes] = []
    for name, records in run.topics.items():
        for record in records:
            if name == inbound and (record.partition, record.offset) not in valid_positions:
                continue  # the attacker's own records: their keys and headers are the attack
            metadata.append(record.key or b"")
            metadata.extend(k.encode() + b"=" + v for k, v in record.headers or ())
            if name in (run.runtime.settings.topics.audit, run.runtime.settings.topics.routed):
                metadata.append(record.value or b"")
    for positions in _quarantined(run).values():
        for q in positions:  # all but the original bytes, which are kept for replay
            metadata += [q["detail"].encode(), q["original_key"] or b""]
            metadata += [k.encode() + b"=" + v for k, v in q["original_headers"].items()]
    blob = b"\n".join(metadata)
    logs = run.log_file.read_bytes()
    assert len(logs) > 10_000, "expected the services to have logged"
    db = run.runtime.settings.audit_db
    files = [p for p in db.parent.glob(f"{db.name}*") if p.is_file()]
    files += sorted(db.with_name(f"{db.name}-segments").glob("*.jsonl"))
    store_text = b"".join(p.read_bytes() for p in files)
    assert len(store_text) > 100_000
    for needle in needles:
        assert needle not in blob, "personal data in a Kafka key, header or audit record"
        assert needle not in logs, "personal data in a log line"
        assert needle not in store_text, "personal data in the audit store"
    # Guard: the scan looks for values the hostile records really carry in keys and headers.
    attack = b"".join(
        (r.key or b"") + b"".join(k.encode() + v for k, v in r.headers or ())
        for r in run.topics[inbound]
        if (r.partition, r.offset) not in valid_positions
    )
    assert sum(1 for n in needles if n in attack) > 50
