"""RouterCore.plan: the whole pipeline for one record, with real crypto and no Kafka."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from audit import AuditRecord
from broker import Headers, OutRecord, RouterCore, disclosure_id_for
from safer import Runtime
from schemas import ConcernModel, ConfigError, ReasonCode

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def _core_with(runtime: Runtime, recipient_key: Callable[[str], X25519PublicKey]) -> RouterCore:
    """A router core whose recipient-key lookup is injected (no patching)."""
    return RouterCore(
        codec=runtime.codec,
        deployment=runtime.deployment,
        keyring=runtime.keyring(),
        identity=runtime.keys.signing_identity("safer-router"),
        recipient_key=recipient_key,
        pseudonym_secret=runtime.keys.pseudonym_secret(),
        topics=runtime.settings.topics,
    )


def _plan(core: RouterCore, record: OutRecord, *, key: bytes | None = None) -> Any:
    return core.plan(
        topic="hips.inbound.police",
        partition=0,
        offset=7,
        key=record.key if key is None else key,
        value=record.value,
        headers=record.headers,
        now=NOW,
    )


def _signed(runtime: Runtime, data: dict[str, Any]) -> OutRecord:
    return runtime.police_adapter().prepare(ConcernModel.model_validate(data))


def _audits(runtime: Runtime, plan: Any) -> list[AuditRecord]:
    # Through the wire: the signed AuditBatch the router would produce, decoded again.
    return [
        AuditRecord.from_avro(r)
        for out in runtime.router_core().audit_out(plan.audits)
        for r in runtime.codec.decode(out.value, expect="audit_batch").record["records"]
    ]


def test_a_good_concern_is_decided_for_every_candidate_and_audited(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    plan = _plan(runtime.router_core(), _signed(runtime, example_concern))
    assert plan.quarantine_code is None
    audits = _audits(runtime, plan)
    recipients = {a.recipient for a in audits}
    assert {"portsmouth-csc", "portsmouth-health", "school-116330"} <= recipients
    assert all(a.entry_id and a.policy_revision and a.decision_id for a in audits)
    delivered = {dict(o.headers)[Headers.DISCLOSURE_ID].decode() for o in plan.outputs}
    disclosed = {a.disclosure_id for a in audits if a.event.value in ("DISCLOSED", "REFERRED")}
    assert delivered == disclosed
    school = disclosure_id_for(example_concern["concern_id"], "school-116330")
    assert school in delivered
    assert {o.topic for o in plan.outputs} >= {
        "hips.portsmouth.social-care.disclosures",
        "hips.portsmouth.education.disclosures",
    }


def test_replanning_gives_the_same_ids(runtime: Runtime, example_concern: dict[str, Any]) -> None:
    core = runtime.router_core()
    assert core.ledger is not None
    record = _signed(runtime, example_concern)
    first = _audits(runtime, _plan(core, record))
    core.ledger.aborted()  # the batch's transaction aborted: it is planned again
    second = _audits(runtime, _plan(core, record))
    assert [a.entry_id for a in first] == [a.entry_id for a in second]
    assert [a.decision_id for a in first] == [a.decision_id for a in second]


def test_an_exact_replay_of_a_routed_concern_is_recorded_once_and_produces_nothing(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    core = runtime.router_core()
    assert core.ledger is not None
    record = _signed(runtime, example_concern)
    routed = _plan(core, record)
    assert routed.outputs and [r.topic for r in routed.bookkeeping] == [
        "hips.routed",
        "hips.signals",  # issue 16: the child's cumulative-concern state
    ]
    core.ledger.committed()
    replays = [_plan(core, record), _plan(core, record)]
    for replay in replays:
        assert replay.outputs == [] and replay.bookkeeping == []
        (audit,) = _audits(runtime, replay)
        assert audit.event.value == "REPLAYED" and audit.reason_codes == ("REPLAY",)
    # The same entry id both times: the audit log keeps one REPLAYED entry.
    assert len({_audits(runtime, r)[0].entry_id for r in replays}) == 1


def test_a_different_body_under_a_routed_concern_id_is_a_conflict(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    core = runtime.router_core()
    assert core.ledger is not None
    _plan(core, _signed(runtime, example_concern))
    core.ledger.committed()
    changed = copy.deepcopy(example_concern)
    changed["narrative"] = changed["narrative"] + " Updated later."
    plan = _plan(core, _signed(runtime, changed))
    assert _code(runtime, plan) == ReasonCode.CONCERN_ID_CONFLICT


def test_a_replay_within_one_batch_is_caught_before_commit(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    core = runtime.router_core()
    record = _signed(runtime, example_concern)
    first, second = _plan(core, record), _plan(core, record)
    assert first.outputs and not second.outputs
    assert _audits(runtime, second)[0].event.value == "REPLAYED"


def _code(runtime: Runtime, plan: Any) -> str:
    assert plan.quarantine_code is not None
    (audit,) = _audits(runtime, plan)
    assert audit.event.value == "QUARANTINED"
    assert plan.outputs[0].topic == "hips.quarantine"
    return str(plan.quarantine_code)


def test_personal_data_in_the_key_is_quarantined(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    plan = _plan(runtime.router_core(), _signed(runtime, example_concern), key=b"Poppy Walker")
    assert _code(runtime, plan) == ReasonCode.PID_IN_METADATA


def test_a_pseudonym_with_a_trailing_newline_is_not_a_pseudonym(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    record = _signed(runtime, example_concern)
    assert record.key is not None
    plan = _plan(runtime.router_core(), record, key=record.key + b"\n")
    assert _code(runtime, plan) == ReasonCode.PID_IN_METADATA


@pytest.mark.parametrize("name", ["safer-trace-id", "safer-disclosure-id", "safer-replay-of"])
def test_an_empty_allowed_header_is_invalid(
    runtime: Runtime, example_concern: dict[str, Any], name: str
) -> None:
    record = _signed(runtime, example_concern)
    record = OutRecord(record.topic, record.key, record.value, (*record.headers, (name, b"")))
    assert _code(runtime, _plan(runtime.router_core(), record)) == ReasonCode.HEADER_INVALID


def test_a_quarantine_copies_only_headers_of_their_own_form(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    # A name where the concern id goes (short enough to pass the length check) is not of
    # its header's form; its quarantine record must not keep the name, nor echo a bad key id.
    record = _signed(runtime, example_concern)
    headers = dict(record.headers)
    headers[Headers.CONCERN_ID] = b"Poppy Walker"
    headers[Headers.KEY_ID] = b"Gemma Walker 9993185620"
    plan = _plan(
        runtime.router_core(),
        OutRecord(record.topic, record.key, record.value, tuple(headers.items())),
    )
    assert _code(runtime, plan) == ReasonCode.HEADER_INVALID
    quarantined = runtime.codec.decode(plan.outputs[0].value, expect="quarantine").record
    assert set(quarantined["original_headers"]) == {Headers.SCHEMA_ID, Headers.SIGNATURE}
    assert quarantined["dropped_headers"] == 2
    kept = b"".join(quarantined["original_headers"].values()) + quarantined["detail"].encode()
    for value in (b"Poppy", b"Gemma", b"9993185620"):
        assert value not in plan.audits[0].canonical_bytes() and value not in kept


def test_an_unexpected_header_is_quarantined(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    record = _signed(runtime, example_concern)
    record = OutRecord(
        record.topic, record.key, record.value, (*record.headers, ("safer-child-name", b"Poppy"))
    )
    assert _code(runtime, _plan(runtime.router_core(), record)) == ReasonCode.PID_IN_METADATA


def test_an_oversized_record_is_quarantined(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    example_concern["narrative"] = "x" * (1024 * 1024 + 10)
    plan = _plan(runtime.router_core(), _signed(runtime, example_concern))
    assert _code(runtime, plan) == ReasonCode.TOO_LARGE


def test_an_unsigned_record_is_quarantined(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    record = _signed(runtime, example_concern)
    unsigned = OutRecord(record.topic, record.key, record.value, ())
    assert _code(runtime, _plan(runtime.router_core(), unsigned)) == ReasonCode.SIGNATURE_INVALID


def test_a_signature_moved_to_another_concern_is_quarantined(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    record = _signed(runtime, example_concern)
    other = copy.deepcopy(example_concern)
    other["concern_id"] = "11111111-2222-4333-8444-555555555555"
    forged = OutRecord(record.topic, record.key, _signed(runtime, other).value, record.headers)
    assert _code(runtime, _plan(runtime.router_core(), forged)) == ReasonCode.SIGNATURE_INVALID


def test_an_address_outside_hips_is_quarantined_as_unresolved(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    example_concern["incident_location"] = None
    example_concern["subjects"][0]["address"] = {
        "line1": "1 Bournemouth Road",
        "town": "Bournemouth",
        "postcode": "BH1 1AA",
        "la_code": "E06000058",
    }
    plan = _plan(runtime.router_core(), _signed(runtime, example_concern))
    assert _code(runtime, plan) == ReasonCode.ADDRESS_UNRESOLVED


def test_a_recipient_without_keys_quarantines_the_concern_for_replay(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    def missing(recipient_id: str) -> X25519PublicKey:
        raise ConfigError(f"no key for {recipient_id}", code=ReasonCode.KEY_MISSING)

    core = _core_with(runtime, missing)
    plan = _plan(core, _signed(runtime, example_concern))
    assert _code(runtime, plan) == ReasonCode.KEY_MISSING


def test_a_bug_is_quarantined_without_leaking_its_message(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    def broken(recipient_id: str) -> X25519PublicKey:
        raise RuntimeError("Poppy Walker 9992048719")  # a careless message with personal data

    core = _core_with(runtime, broken)
    plan = _plan(core, _signed(runtime, example_concern))
    assert _code(runtime, plan) == ReasonCode.PROCESSING_ERROR
    (audit,) = _audits(runtime, plan)
    text = json.dumps(audit.to_avro(), default=str)
    assert "Poppy" not in text and "9992048719" not in text
    assert "RuntimeError" in text


def test_quarantine_keeps_the_original_bytes_and_no_personal_data_in_detail(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    example_concern["subjects"][0]["date_of_birth"] = None
    example_concern["subjects"][0]["nhs_number"] = None
    data = ConcernModel.model_validate(example_concern)
    record = runtime.police_adapter().prepare(data)
    plan = _plan(runtime.router_core(), record)
    assert _code(runtime, plan) == ReasonCode.MINIMUM_DATASET_MISSING
    quarantined = runtime.codec.decode(plan.outputs[0].value, expect="quarantine").record
    assert quarantined["original_value"] == record.value
    assert quarantined["concern_id"] == example_concern["concern_id"]
    assert "Poppy" not in quarantined["detail"] and "Walker" not in quarantined["detail"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("safer-trace-id", b"Gemma Walker"),
        ("safer-trace-id", b"9993185620"),
        ("safer-disclosure-id", b"Poppy Walker 9993185620"),
        ("safer-replay-of", b"NHS 999 318 5620"),
        ("safer-schema-id", b"12"),
    ],
)
def test_personal_data_in_an_allowed_header_is_refused_even_on_a_valid_concern(
    runtime: Runtime, example_concern: dict[str, Any], name: str, value: bytes
) -> None:
    """Every header value must have the form SAFER gives it (the schema id must be the
    record's own), so nothing can ride along with a concern that would otherwise route."""
    record = _signed(runtime, example_concern)
    headers = {**dict(record.headers), name: value}
    plan = _plan(
        runtime.router_core(),
        OutRecord(record.topic, record.key, record.value, tuple(headers.items())),
    )
    assert _code(runtime, plan) == ReasonCode.HEADER_INVALID
