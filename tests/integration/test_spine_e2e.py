"""Acceptance a, b and d of the spine, on the embedded broker (no mocks).

One module-scoped run publishes 200 synthetic concerns and 5 bad records
through the police adapter, runs the router, the audit feed and every
recipient adapter, and waits until everything is accounted for. The tests
then check that run from different angles.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters import Inbox, synthetic_people
from audit import AuditStore, verify_store
from broker import Headers, SealedPayload, audit_records_in, open_sealed
from consent import FREE_TEXT_PATHS
from safer import Runtime
from safer._demo import bad_records
from safer._logging import configure_logging
from schemas import ConcernModel, CryptoError

from .spine import Accounting, concerns, make_runtime, read_all, run_flow

pytestmark = pytest.mark.kafka

N_CONCERNS = 200


@dataclass
class SpineRun:
    runtime: Runtime
    concerns: list[ConcernModel]
    bad: list[tuple[str, str]]  # (expected code, concern id)
    accounting: Accounting
    topics: dict[str, list[Any]]
    log_file: Path


async def _run(runtime: Runtime, log_file: Path) -> SpineRun:
    await runtime.create_topics()
    items = concerns(N_CONCERNS, seed=11)
    bad = bad_records(runtime, items[0])
    expected = {c.concern_id for c in items}
    bad_ids = [(code, dict(r.headers)[Headers.CONCERN_ID].decode()) for code, r in bad]
    expected |= {cid for _, cid in bad_ids}

    acc = await run_flow(runtime, items, [r for _, r in bad], expected=expected)
    t = runtime.settings.topics
    names = [t.inbound("police"), t.audit, t.receipts, t.quarantine, *t.all_recipient_topics()]
    return SpineRun(runtime, items, bad_ids, acc, await read_all(runtime, names), log_file)


@pytest.fixture(scope="module")
def spine(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> SpineRun:
    tmp = tmp_path_factory.mktemp("spine")
    log_file = tmp / "safer.log"
    configure_logging(log_file=log_file)
    runtime = make_runtime(tmp, kafka_bootstrap, prefix=f"e2e{secrets.token_hex(3)}")
    return asyncio.run(_run(runtime, log_file))


def _recipient_records(spine: SpineRun) -> list[Any]:
    t = spine.runtime.settings.topics
    return [r for name in t.all_recipient_topics() for r in spine.topics[name]]


def test_every_published_record_is_accounted_for(spine: SpineRun) -> None:
    acc = spine.accounting
    published = {c.concern_id for c in spine.concerns} | {cid for _, cid in spine.bad}
    assert published <= set(acc.decided)
    good = {c.concern_id for c in spine.concerns}
    assert all(acc.decided[cid] & {"DISCLOSED", "WITHHELD", "REFERRED"} for cid in good)
    assert acc.delivered, "the run disclosed nothing"
    assert acc.delivered <= acc.received


def test_bad_records_are_quarantined_with_their_reason_code(spine: SpineRun) -> None:
    for code, concern_id in spine.bad:
        assert spine.accounting.quarantine_codes.get(concern_id) == [code], code
    quarantined = spine.topics[spine.runtime.settings.topics.quarantine]
    assert len(quarantined) == len(spine.bad)
    for record in quarantined:
        assert record.key is None
        decoded = spine.runtime.codec.decode(record.value, expect="quarantine").record
        assert decoded["original_value"], "original bytes must be kept for replay"


def test_only_the_addressee_can_decrypt(spine: SpineRun) -> None:
    keys = spine.runtime.keys
    recipients = [r.id for r in spine.runtime.deployment.directory.recipients]
    private = {rid: keys.encryption_private(rid) for rid in recipients}
    checked = 0
    for record in _recipient_records(spine):
        disclosure = spine.runtime.codec.decode(record.value, expect="disclosure").record
        sealed = SealedPayload(**disclosure["payload"])
        for rid in recipients:
            if rid == disclosure["recipient_id"]:
                plaintext = open_sealed(
                    sealed,
                    private[rid],
                    disclosure_id=disclosure["disclosure_id"],
                    recipient_id=rid,
                )
                assert json.loads(plaintext)["concern_id"] == disclosure["concern_id"]
            else:
                with pytest.raises(CryptoError):
                    open_sealed(
                        sealed,
                        private[rid],
                        disclosure_id=disclosure["disclosure_id"],
                        recipient_id=rid,
                    )
        checked += 1
    assert checked == len(spine.accounting.delivered)


def test_audit_record_precedes_every_recipient_record(spine: SpineRun) -> None:
    codec = spine.runtime.codec
    audited: dict[str, int] = {}
    for record in spine.topics[spine.runtime.settings.topics.audit]:
        for entry in audit_records_in(codec, record.value):
            if entry["event"] in ("DISCLOSED", "REFERRED") and entry["disclosure_id"]:
                audited.setdefault(entry["disclosure_id"], record.timestamp)
    recipient_records = _recipient_records(spine)
    assert recipient_records
    for record in recipient_records:
        disclosure_id = dict(record.headers)[Headers.DISCLOSURE_ID].decode()
        assert disclosure_id in audited, f"disclosure {disclosure_id} has no audit record"
        assert audited[disclosure_id] <= record.timestamp, f"{disclosure_id} delivered before audit"


def test_each_inbox_holds_exactly_its_own_disclosures_once(spine: SpineRun) -> None:
    store = AuditStore(spine.runtime.settings.audit_db)
    try:
        expected: dict[str, set[str]] = {}
        for record in store.records():
            if (
                str(record.event)
                in ("DISCLOSED", "REFERRED", "AuditEvent.DISCLOSED", "AuditEvent.REFERRED")
                and record.recipient
            ):
                expected.setdefault(record.recipient, set()).add(record.disclosure_id or "")
    finally:
        store.close()
    for recipient in spine.runtime.deployment.directory.recipients:
        path = spine.runtime.inbox_path(recipient.id)
        with Inbox(path) as inbox:
            ids = inbox.disclosure_ids()
            assert len(ids) == len(set(ids))
            assert set(ids) == expected.get(recipient.id, set()), recipient.id
            assert not inbox.pending_receipts()
            assert not inbox.rejections()


def test_audit_log_verifies(spine: SpineRun) -> None:
    summary = verify_store(spine.runtime.settings.audit_db)
    assert summary.entries == spine.accounting.entries


def _needles(spine: SpineRun) -> list[bytes]:
    people = synthetic_people([c.model_dump(mode="json") for c in spine.concerns])
    needles: set[str] = set()
    for kind, values in people.items():
        for value in values:
            # Very short names could match random signature bytes by chance.
            if kind == "names" and len(value) < 4:
                continue
            needles.add(value)
    return sorted(n.encode() for n in needles)


def test_no_personal_data_in_keys_headers_logs_or_audit_store(spine: SpineRun) -> None:
    needles = _needles(spine)
    assert len(needles) > 100, "the scan needs the synthetic people to look for"
    metadata: list[bytes] = []
    for records in spine.topics.values():
        for record in records:
            metadata.append(record.key or b"")
            metadata.extend(k.encode() + b"=" + v for k, v in record.headers or ())
    blob = b"\n".join(metadata)
    logs = spine.log_file.read_bytes()
    assert len(logs) > 1000, "expected the services to have logged"
    db = spine.runtime.settings.audit_db
    with AuditStore(db) as store:
        assert store.count() > 100 and list(store.records(recipient="no-such-recipient")) == []
    # Every byte of the store's files: the SQLite file (entry columns, query
    # index, tree rows, checkpoints), its WAL, and the segment files (entries).
    files = [p for p in db.parent.glob(f"{db.name}*") if p.is_file()]
    files += sorted(db.with_name(f"{db.name}-segments").glob("*.jsonl"))
    assert any(p.suffix == ".jsonl" for p in files)
    store_text = b"".join(p.read_bytes() for p in files)
    for needle in needles:
        assert needle not in blob, "personal data in a Kafka key or header"
        assert needle not in logs, "personal data in a log line"
        assert needle not in store_text, "personal data in the audit store"


def test_inbound_values_do_carry_the_data_the_scan_looks_for(spine: SpineRun) -> None:
    # Guards the scan above: the needles are really in the (plaintext) inbound values.
    inbound = b"".join(
        r.value for r in spine.topics[spine.runtime.settings.topics.inbound("police")]
    )
    needles = _needles(spine)
    assert sum(1 for n in needles if n in inbound) > len(needles) // 2


def _free_text(concern: ConcernModel) -> str:
    doc = concern.model_dump(mode="json")
    parts = []
    for path in FREE_TEXT_PATHS:
        node: Any = doc
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            parts.append(node)
    return " ".join(parts).lower()


def test_no_inbox_names_a_person_its_profile_leaves_out(spine: SpineRun) -> None:
    """Issue 11: free text is minimised for every recipient, end to end.

    For every disclosure in every inbox, the decrypted payload must not hold the
    names or identifiers of a person the recipient's profile leaves out (a role it
    does not cover, or third-party protection), wherever in the payload they
    would appear (the synthetic children's words name the alleged perpetrator).
    """
    policy = spine.runtime.deployment.policy
    by_id = {c.concern_id: c for c in spine.concerns}
    checked = mentioned = 0
    for recipient in spine.runtime.deployment.directory.recipients:
        with Inbox(spine.runtime.inbox_path(recipient.id)) as inbox:
            items = list(inbox.items())
        for item in items:
            concern = by_id[item.concern_id]
            profile = policy.profile(item.profile)
            text = json.dumps(item.payload, ensure_ascii=False).lower()
            visible = {s["subject_ref"] for s in item.payload.get("subjects", [])}
            visible -= {
                s["subject_ref"] for s in item.payload.get("subjects", []) if "withheld" in s
            }
            for subject in concern.subjects:
                if subject.subject_ref in visible and subject.role in profile.subject_roles:
                    continue
                # What a visible person shares with a hidden one (a family name, a
                # home address) is the visible person's too; the rest must be absent.
                kept = {
                    v.lower()
                    for s in concern.subjects
                    if s.subject_ref in visible
                    for v in (
                        f"{s.given_name} {s.family_name}",
                        s.given_name,
                        s.family_name,
                        s.nhs_number,
                        s.police_person_id,
                        s.phone,
                        s.address.line1 if s.address else None,
                    )
                    if v
                }
                for value in (
                    f"{subject.given_name} {subject.family_name}",
                    subject.family_name,
                    subject.given_name,
                    subject.nhs_number,
                    subject.police_person_id,
                    subject.phone,
                    subject.address.line1 if subject.address else None,
                ):
                    if value and len(value) >= 4 and value.lower() not in kept:
                        mentioned += value.lower() in _free_text(concern)
                        assert value.lower() not in text, (
                            f"{recipient.id} ({profile.name}) holds text of hidden "
                            f"{subject.role.value} {subject.subject_ref}"
                        )
            checked += 1
    assert checked == len(spine.accounting.delivered)
    # Each redaction is recorded with the decision, by kind and never by value.
    with AuditStore(spine.runtime.settings.audit_db) as store:
        redacted = [
            reason
            for record in store.records()
            for reason in record.reasons
            if reason.startswith("free text:")
        ]
    assert redacted and all("redacted from" in reason for reason in redacted)
    # Guards the check: hidden people really are named in the concerns' free text.
    assert mentioned > 20, "the synthetic free text must mention hidden people"
