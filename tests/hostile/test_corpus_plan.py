"""The hostile corpus through ``RouterCore.plan``: every case gets exactly its code.

Pure (no Kafka): the router's whole pipeline for one record, with real keys,
real Avro and real signatures. The same corpus then runs on the real broker in
``test_hostile_e2e.py``; this test pins, case by case, what the router decides,
so a change of outcome names the case and the kind it belongs to.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker import SIZE_LIMITS, Headers, Plan, RouterCore, Settings, header
from broker._topics import header_has_form
from safer import Runtime
from schemas import ReasonCode

from .corpus import REFUSED, REPLAY, Corpus, HostileCase, build_corpus

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
SEED = 11
#: Codes that say the router itself failed: no hostile record may get them.
BUG_CODES = {ReasonCode.PROCESSING_ERROR.value, ReasonCode.UNPRODUCIBLE.value}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("hostile")
    rt = Runtime(Settings(data_dir=tmp / "data", deploy_dir=REPO / "deploy"), "127.0.0.1:1")
    rt.init_keys()
    return rt


@pytest.fixture(scope="module")
def corpus(runtime: Runtime) -> Corpus:
    return build_corpus(runtime, seed=SEED, now=NOW)


def _plan(core: RouterCore, record: Any, offset: int) -> Plan:
    return core.plan(
        topic="hips.inbound.police",
        partition=3,
        offset=offset,
        key=record.key,
        value=record.value,
        headers=record.headers,
        now=NOW,
    )


def _outcome(plan: Plan) -> str:
    if plan.quarantine_code is not None:
        return plan.quarantine_code.value
    if plan.outcomes.get("REPLAYED"):
        return REPLAY
    return "ROUTED"


def test_the_corpus_is_large_varied_and_well_formed(corpus: Corpus) -> None:
    assert len(corpus.cases) >= 1000
    kinds = corpus.kinds()
    assert len(kinds) >= 20, kinds
    assert min(kinds.values()) >= 3, kinds
    assert len({c.label for c in corpus.cases}) == len(corpus.cases)
    # A hostile record never carries the concern id of valid traffic unless it copies it.
    valid_ids = {c.concern_id.encode() for c in corpus.valid_concerns}
    for case in corpus.cases:
        header_id = dict(case.record.headers).get("safer-concern-id")
        assert (header_id in valid_ids) == (case.original is not None), case.label
    codes = {c.value for c in ReasonCode}
    for case in corpus.cases:
        assert case.expected in codes | {REFUSED}, case.label
        assert case.expected not in BUG_CODES
        if case.expected == REFUSED:
            assert case.refused_by in ("producer", "broker") and case.if_delivered in codes
            size = len(case.record.value) + sum(len(v) for _, v in case.record.headers)
            assert size > SIZE_LIMITS.message_bytes, case.label
        else:
            assert case.refused_by is None
        if case.expected in (REPLAY, ReasonCode.CONCERN_ID_CONFLICT.value):
            assert case.original in {c.concern_id for c in corpus.valid_concerns}
    # Every code a publisher can cause on the inbound path that the runtime can reach.
    assert set(corpus.expected_codes()) >= {
        "DECODE_ERROR",
        "UNKNOWN_SCHEMA",
        "SCHEMA_INVALID",
        "SIGNATURE_INVALID",
        "UNKNOWN_PUBLISHER",
        "REPLAY",
        "CONCERN_ID_CONFLICT",
        "TOO_LARGE",
        "LIMIT_EXCEEDED",
        "ID_NOT_CANONICAL",
        "IMPLAUSIBLE_DATE",
        "AGE_ROLE_MISMATCH",
        "PID_IN_METADATA",
        "HEADER_INVALID",
        "MINIMUM_DATASET_MISSING",
        "ADDRESS_UNRESOLVED",
        REFUSED,
    }
    # Interleaving keeps every record once and puts each replay after its original.
    order = corpus.interleaved()
    sent = [c for c, _ in order if c is not None]
    assert len(sent) == sum(1 for c in corpus.cases if c.expected != REFUSED)
    assert sum(1 for c, _ in order if c is None) == len(corpus.valid)
    position = {
        r.value: i for i, (c, r) in enumerate(order) if c is None
    }  # valid record bytes -> index
    by_id = dict(zip((c.concern_id for c in corpus.valid_concerns), corpus.valid, strict=True))
    for i, (sent_case, _) in enumerate(order):
        if sent_case is not None and sent_case.original is not None:
            assert position[by_id[sent_case.original].value] < i, sent_case.label


def test_the_corpus_is_deterministic(runtime: Runtime, corpus: Corpus) -> None:
    again = build_corpus(runtime, seed=SEED, now=NOW)

    def view(c: Corpus) -> list[tuple[Any, ...]]:
        return [
            (x.kind, x.label, x.expected, x.record.key, x.record.value, x.record.headers)
            for x in c.cases
        ]

    assert view(again) == view(corpus)
    assert again.valid == corpus.valid


@pytest.fixture(scope="module")
def planned(runtime: Runtime, corpus: Corpus) -> list[tuple[HostileCase, Plan]]:
    """Every case through one router core, after the valid traffic was routed."""
    core = runtime.router_core()
    assert core.ledger is not None
    for offset, record in enumerate(corpus.valid):
        assert _plan(core, record, offset).quarantine_code is None
    core.ledger.committed()  # the valid traffic was routed: replays now have originals
    plans = []
    for offset, case in enumerate(corpus.cases, start=len(corpus.valid)):
        plan = _plan(core, case.record, offset)
        if _outcome(plan) == "ROUTED":
            core.ledger.committed()  # as the router would (and a failure of the test)
        plans.append((case, plan))
    return plans


def test_every_case_gets_exactly_its_code_from_the_router(
    runtime: Runtime, planned: list[tuple[HostileCase, Plan]]
) -> None:
    observed: Counter[tuple[str, str]] = Counter()
    wrong: list[str] = []
    for case, plan in planned:
        got = _outcome(plan)
        want = case.if_delivered if case.expected == REFUSED else case.expected
        observed[(case.kind, got)] += 1
        if got != want:
            wrong.append(f"{case.label}: expected {want}, got {got}")
            continue
        _check_plan(runtime, case, plan)
    assert not wrong, f"{len(wrong)} case(s) got another outcome:\n" + "\n".join(wrong[:40])
    assert not {code for _, code in observed} & BUG_CODES


def _check_plan(runtime: Runtime, case: HostileCase, plan: Plan) -> None:
    """What a quarantine or replay writes: one audit record, a bounded copy, nothing else."""
    audits = list(plan.audits)
    assert plan.bookkeeping == [], case.label
    if case.expected == REPLAY:
        assert plan.outputs == [] and [a.event.value for a in audits] == ["REPLAYED"]
        return
    # A `safer-replay-of` header (anyone can set one) also gets its replay audited.
    claims_replay = header_has_form(
        Headers.REPLAY_OF, header(case.record.headers, Headers.REPLAY_OF)
    )
    events = ["QUARANTINED", "QUARANTINE_REPLAYED"] if claims_replay else ["QUARANTINED"]
    assert [a.event.value for a in audits] == events, case.label
    assert audits[0].reason_codes == (plan.quarantine_code,), case.label
    (out,) = plan.outputs
    assert out.topic == "hips.quarantine" and out.key is None
    assert len(out.value) < SIZE_LIMITS.quarantine_inline_bytes + 8192, case.label
    quarantined = runtime.codec.decode(out.value, expect="quarantine").record
    assert quarantined["source_partition"] == 3
    original = case.record.value or b""
    inline = len(original) <= SIZE_LIMITS.quarantine_inline_bytes
    assert quarantined["original_value"] == (original if inline else b""), case.label
    assert quarantined["original_size"] == len(original)


def test_no_personal_data_from_the_corpus_reaches_audit_or_quarantine_metadata(
    runtime: Runtime, corpus: Corpus, planned: list[tuple[HostileCase, Plan]]
) -> None:
    """Audit records (append-only, kept for ever) and the quarantine record's detail,
    key and kept headers carry no personal value of any hostile record, whatever the
    record put in its headers or key. (The original bytes themselves are kept inline
    in the quarantine record by design, like the inbound topic they came from.)"""
    needles = sorted(n.encode() for n in corpus.personal_data)
    assert len(needles) > 300
    blobs: list[bytes] = []
    for _, plan in planned:
        metadata = b"".join(a.canonical_bytes() for a in plan.audits)
        for out in plan.outputs:
            q = runtime.codec.decode(out.value, expect="quarantine").record
            metadata += q["detail"].encode() + (q["original_key"] or b"")
            metadata += b"".join(k.encode() + v for k, v in q["original_headers"].items())
            metadata += b"".join(k.encode() + v for k, v in out.headers) + (out.key or b"")
        blobs.append(metadata)
    everything = b"\x00".join(blobs)
    found = [n for n in needles if n in everything]
    leaks = [
        case.label
        for (case, _), blob in zip(planned, blobs, strict=True)
        if any(n in blob for n in found)
    ]
    assert not leaks, f"personal data in the metadata of {sorted(set(leaks))[:20]}"
    # Guard: the hostile records really do carry those values in keys and headers.
    smuggled = b"".join(
        (c.record.key or b"") + b"".join(k.encode() + v for k, v in c.record.headers)
        for c in corpus.cases
        if c.expected != REFUSED
    )
    assert sum(1 for n in needles if n in smuggled) > 50
