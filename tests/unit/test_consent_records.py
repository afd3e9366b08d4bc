"""Consent as a state with reasons, ConsentRecords, the lawful-basis catalogue's
conditions, and the router's use of hips.consent (RouterCore with a ConsentView,
real keys and codec, no Kafka)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit import AuditRecord, entry_id_for
from broker import (
    ConsentView,
    OutRecord,
    RouterCore,
    consent_out_record,
    pseudonym,
    signed_record,
    verify_consent_record,
)
from consent import (
    LAWFUL_BASES,
    Consent,
    ConsentRecord,
    current_consent,
    justification_from_text,
    not_sought_reason_from_text,
    parse_policy,
)
from safer import Runtime
from safer._cli_policy import canonical_identifier
from schemas import (
    CONSENT_RECORD,
    AuditEvent,
    ConcernModel,
    ConsentState,
    ConsentStatement,
    NotSoughtReason,
    OverrideJustification,
    PolicyError,
    SaferError,
    ValidationError,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PSEUDONYM = "0123456789abcdef0123456789abcdef"


def record(**extra: Any) -> ConsentRecord:
    values: dict[str, Any] = {
        "subject_pseudonym": PSEUDONYM,
        "state": ConsentState.WITHDRAWN,
        "decided_by": "PC 21874",
        "agency_id": "hampshire-constabulary",
        "recorded_at": NOW,
    }
    values.update(extra)
    return ConsentRecord.create(**values)


# ---------------------------------------------------------------- reasons as stable codes


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("seeking consent would place the child at risk", NotSoughtReason.RISK_TO_CHILD),
        (
            "seeking consent would place the child at risk of significant harm",
            NotSoughtReason.RISK_TO_CHILD,
        ),
        (
            "seeking consent would prejudice the prevention or detection of crime",
            NotSoughtReason.PREJUDICE_PREVENTION_DETECTION,
        ),
        ("NOT_PRACTICABLE: family abroad", NotSoughtReason.NOT_PRACTICABLE),
        ("child_not_competent", NotSoughtReason.CHILD_NOT_COMPETENT),
        ("the child is too young to understand", NotSoughtReason.CHILD_NOT_COMPETENT),
        ("because I said so", None),
        ("", None),
        (None, None),
    ],
)
def test_not_sought_reasons_read_as_stable_codes(
    text: str | None, code: NotSoughtReason | None
) -> None:
    assert not_sought_reason_from_text(text) is code


def test_justifications_read_as_stable_codes() -> None:
    text = "consent refused; overridden because the child is at risk of significant harm"
    assert justification_from_text(text) is OverrideJustification.SIGNIFICANT_HARM
    assert justification_from_text("LEGAL_DUTY") is OverrideJustification.LEGAL_DUTY
    assert justification_from_text("a court order requires it") is OverrideJustification.LEGAL_DUTY
    assert justification_from_text("felt right") is None


def _statement(state: str, reason: str | None, at: datetime = NOW) -> ConsentStatement:
    return ConsentStatement(
        state=ConsentState(state), reason=reason, recorded_by="PC 1", recorded_at=at
    )


def test_a_statement_becomes_a_consent_with_reasons_and_never_keeps_the_text() -> None:
    consent = Consent.from_statement(
        _statement("NOT_SOUGHT", "seeking consent would place the child at risk: Dad is violent")
    )
    assert consent.not_sought_reason is NotSoughtReason.RISK_TO_CHILD
    assert consent.source == "concern"
    assert "Dad" not in consent.describe()
    assert "DPA 2018 Sch 1 para 18(2)(c)" in consent.describe()
    overridden = Consent.from_statement(_statement("OVERRIDDEN", "manager decided: serious crime"))
    assert overridden.justified
    assert overridden.justification is OverrideJustification.PREVENT_DETECT_CRIME
    bare = Consent.from_statement(_statement("OVERRIDDEN", None))
    assert not bare.justified and "no recorded justification" in bare.describe()


def test_the_newer_of_statement_and_record_wins() -> None:
    statement = _statement("GIVEN", None, NOW)
    newer = record(recorded_at=NOW + timedelta(seconds=1))
    older = record(recorded_at=NOW - timedelta(seconds=1))
    same = record(recorded_at=NOW)
    assert current_consent(statement, newer).state is ConsentState.WITHDRAWN
    assert current_consent(statement, newer).record_id == newer.consent_record_id
    assert current_consent(statement, older).state is ConsentState.GIVEN
    assert current_consent(statement, same).state is ConsentState.GIVEN
    assert current_consent(statement, None).source == "concern"


def test_given_consent_expires() -> None:
    given = record(state=ConsentState.GIVEN, expires_at=NOW + timedelta(days=30))
    consent = Consent.from_record(given)
    assert consent.on(NOW).state is ConsentState.GIVEN
    assert consent.on(NOW + timedelta(days=30)).state is ConsentState.EXPIRED
    assert "lapsed" in consent.on(NOW + timedelta(days=31)).describe()


# ---------------------------------------------------------------- ConsentRecord rules


def test_a_record_has_a_derived_id_and_survives_avro(runtime: Runtime) -> None:
    first = record(not_sought_reason=None)
    assert first == record()
    assert len(first.consent_record_id) == 32
    assert first.consent_record_id != record(state=ConsentState.REFUSED).consent_record_id
    wire = runtime.codec.encode(CONSENT_RECORD, first.to_avro())
    back = ConsentRecord.from_avro(runtime.codec.decode(wire, expect=CONSENT_RECORD).record)
    assert back == first
    tampered = {**first.to_avro(), "state": "GIVEN"}
    with pytest.raises(ValidationError, match="consent_record_id does not match"):
        ConsentRecord.from_avro(tampered)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"state": ConsentState.NOT_SOUGHT}, "NOT_SOUGHT needs a reason"),
        ({"not_sought_reason": NotSoughtReason.RISK_TO_CHILD}, "only NOT_SOUGHT carries"),
        ({"state": ConsentState.OVERRIDDEN}, "OVERRIDDEN needs a justification"),
        ({"justification": OverrideJustification.LEGAL_DUTY}, "only OVERRIDDEN carries"),
        ({"expires_at": NOW + timedelta(days=1)}, "only GIVEN consent can have expires_at"),
        (
            {"state": ConsentState.GIVEN, "expires_at": NOW - timedelta(days=1)},
            "later than recorded_at",
        ),
        ({"subject_pseudonym": "nhs:9434765919"}, "never an identifier"),
        ({"decided_by": ""}, "decided_by"),
        ({"decided_by": "PC 1\nJane Doe lives at"}, "decided_by"),
        ({"agency_id": "Hampshire Police"}, "agency_id"),
        ({"recorded_at": datetime(2026, 11, 24, 10, 0)}, "timezone-aware"),
        ({"source_ref": "ref with spaces"}, "source_ref"),
        # A final newline once passed every pattern (`$` matches before it).
        ({"subject_pseudonym": "0" * 32 + "\n"}, "never an identifier"),
        ({"agency_id": "hampshire-constabulary\n"}, "agency_id"),
        ({"source_ref": "44260481273\n"}, "source_ref"),
    ],
)
def test_a_record_that_breaks_a_rule_is_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        record(**extra)
    assert info.value.hint
    assert "9434765919" not in str(info.value)


def test_the_subject_is_given_as_an_identifier_and_leaves_as_a_pseudonym() -> None:
    assert canonical_identifier("NHS:943 476 5919") == "nhs:9434765919"
    assert canonical_identifier("police: hc-p-3047719 ") == "police:HC-P-3047719"
    for bad in ("9434765919", "nhs:123", "email:x@y", "nhs:"):
        with pytest.raises(ValidationError):
            canonical_identifier(bad)


# ---------------------------------------------------------------- signing and verification


def _verify(runtime: Runtime, out: OutRecord) -> ConsentRecord:
    return verify_consent_record(
        runtime.codec,
        runtime.keyring(),
        runtime.deployment.directory,
        key=out.key,
        value=out.value,
        headers=out.headers,
    )


def test_a_signed_record_verifies_and_forgeries_do_not(runtime: Runtime) -> None:
    good = record()
    out = consent_out_record(
        runtime.codec, runtime.keys.signing_identity("hampshire-constabulary"), good, topic="t"
    )
    assert out.key == PSEUDONYM.encode()
    assert _verify(runtime, out) == good
    # A recipient agency may record consent too (the MASH, say), with its own key.
    mash = record(agency_id="portsmouth-csc")
    signed = consent_out_record(
        runtime.codec, runtime.keys.signing_identity("portsmouth-csc"), mash, topic="t"
    )
    assert _verify(runtime, signed) == mash
    with pytest.raises(SaferError, match="cannot be signed by"):
        consent_out_record(
            runtime.codec, runtime.keys.signing_identity("portsmouth-csc"), good, topic="t"
        )
    forged = signed_record(
        runtime.codec,
        runtime.keys.signing_identity("school-116439"),
        CONSENT_RECORD,
        good.to_avro(),
        topic="t",
        key=out.key,
        record_id="",
        id_header=None,
    )
    with pytest.raises(SaferError) as names_other:
        _verify(runtime, forged)
    assert names_other.value.code.value == "UNKNOWN_PUBLISHER"
    by_router = signed_record(
        runtime.codec,
        runtime.keys.signing_identity("safer-router"),
        CONSENT_RECORD,
        good.to_avro(),
        topic="t",
        key=out.key,
        record_id="",
        id_header=None,
    )
    with pytest.raises(SaferError, match="outside the directory"):
        _verify(runtime, by_router)
    with pytest.raises(SaferError) as bad_key:
        _verify(runtime, OutRecord("t", b"Poppy Walker", out.value, out.headers))
    assert bad_key.value.code.value == "PID_IN_METADATA"
    with pytest.raises(SaferError) as tombstone:
        _verify(runtime, OutRecord("t", out.key, b"", out.headers))
    assert tombstone.value.code.value == "DECODE_ERROR"
    flipped = out.value[:-1] + bytes([out.value[-1] ^ 1])
    with pytest.raises(SaferError):
        _verify(runtime, OutRecord("t", out.key, flipped, out.headers))


# ---------------------------------------------------------------- the router and the view


def _core(runtime: Runtime, view: ConsentView) -> RouterCore:
    return RouterCore(
        codec=runtime.codec,
        deployment=runtime.deployment,
        keyring=runtime.keyring(),
        identity=runtime.keys.signing_identity("safer-router"),
        recipient_key=runtime.keys.encryption_public,
        pseudonym_secret=runtime.keys.pseudonym_secret(),
        topics=runtime.settings.topics,
        consent_view=view,
    )


def _audits(runtime: Runtime, plan: Any) -> list[AuditRecord]:
    # Through the wire: the signed AuditBatch the router would produce, decoded again.
    return [
        AuditRecord.from_avro(r)
        for out in runtime.router_core().audit_out(plan.audits)
        for r in runtime.codec.decode(out.value, expect="audit_batch").record["records"]
    ]


def _plan_consent(core: RouterCore, out: OutRecord) -> Any:
    return core.plan_consent(
        topic="hips.consent",
        partition=0,
        offset=3,
        key=out.key,
        value=out.value,
        headers=out.headers,
        now=NOW,
    )


def _front_door(runtime: Runtime, core: RouterCore, data: dict[str, Any]) -> AuditRecord:
    concern = ConcernModel.model_validate(data)
    prepared = runtime.police_adapter().prepare(concern)
    plan = core.plan(
        topic="hips.inbound.police",
        partition=0,
        offset=1,
        key=prepared.key,
        value=prepared.value,
        headers=prepared.headers,
        now=NOW,
    )
    return next(a for a in _audits(runtime, plan) if a.recipient == "portsmouth-csc")


def _low_given(example: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(example))
    data["risk_grade"] = "LOW"
    data["consent"] = {
        "state": "GIVEN",
        "reason": None,
        "recorded_by": "PC 1",
        "recorded_at": "2026-11-22T23:50:00Z",
    }
    return data


def test_the_router_audits_a_consent_record_then_uses_it(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    view = runtime.consent_view()
    core = _core(runtime, view)
    data = _low_given(example_concern)
    before = _front_door(runtime, core, data)
    assert (before.event, before.consent_state) == (AuditEvent.DISCLOSED, "GIVEN")

    secret = runtime.keys.pseudonym_secret()
    mother = pseudonym(secret, "nhs:9993185620")  # the child's parent/carer (S2)
    withdrawal = record(subject_pseudonym=mother, recorded_at=NOW - timedelta(hours=1))
    out = consent_out_record(
        runtime.codec,
        runtime.keys.signing_identity("hampshire-constabulary"),
        withdrawal,
        topic="t",
    )
    plan, applied = _plan_consent(core, out)
    assert applied == withdrawal
    (audit,) = _audits(runtime, plan)
    assert audit.event is AuditEvent.CONSENT_CHANGED
    assert audit.entry_id == entry_id_for(AuditEvent.CONSENT_CHANGED, withdrawal.consent_record_id)
    assert audit.subject_pseudonyms == (mother,)
    assert audit.consent_state == "WITHDRAWN"
    assert audit.policy_revision == runtime.deployment.policy.revision
    assert any("decided by PC 21874" in r for r in audit.reasons)
    assert plan.outputs == []
    # Replanning gives the same entry id: the audit log deduplicates a replay.
    assert _audits(runtime, _plan_consent(core, out)[0])[0].entry_id == audit.entry_id

    view.apply(withdrawal)
    after = _front_door(runtime, core, data)
    assert (after.event, after.consent_state) == (AuditEvent.REFERRED, "WITHDRAWN")
    assert after.reason_codes == ("CONSENT_REFUSED",)
    assert any(withdrawal.consent_record_id in r for r in after.reasons)
    assert after.decision_id == before.decision_id  # same concern, recipient and policy
    assert after.policy_revision == runtime.deployment.policy.revision

    # An alleged perpetrator's "consent" does not count.
    view2 = runtime.consent_view()
    view2.apply(record(subject_pseudonym=pseudonym(secret, "police:HC-P-1186402")))
    untouched = _front_door(runtime, _core(runtime, view2), data)
    assert untouched.consent_state == "GIVEN"
    # A record older than the concern's own statement does not replace it.
    view3 = runtime.consent_view()
    view3.apply(record(subject_pseudonym=mother, recorded_at=datetime(2026, 11, 1, tzinfo=UTC)))
    assert _front_door(runtime, _core(runtime, view3), data).consent_state == "GIVEN"


def test_a_bad_consent_record_is_quarantined_not_applied(runtime: Runtime) -> None:
    core = _core(runtime, runtime.consent_view())
    plan, applied = core.plan_consent(
        topic="hips.consent",
        partition=0,
        offset=9,
        key=PSEUDONYM.encode(),
        value=b"\x00\x00\x00\x00\x01junk",
        headers=(),
        now=NOW,
    )
    assert applied is None
    assert plan.quarantine_code is not None
    (audit,) = _audits(runtime, plan)
    assert audit.event is AuditEvent.QUARANTINED
    assert plan.outputs[0].topic == runtime.settings.topics.quarantine


def test_the_view_keeps_the_last_record_per_subject_and_looks_up_the_newest() -> None:
    view = ConsentView(topic="t", bootstrap_servers="127.0.0.1:1")
    other = "f" * 32
    first = record(recorded_at=NOW)
    later_in_topic = record(state=ConsentState.GIVEN, recorded_at=NOW - timedelta(hours=1))
    view.apply(first)
    view.apply(later_in_topic)  # topic order wins for one subject (what compaction keeps)
    assert view.lookup([PSEUDONYM]) == later_in_topic
    newest = record(subject_pseudonym=other, recorded_at=NOW + timedelta(minutes=5))
    view.apply(newest)
    assert view.lookup([PSEUDONYM, other]) == newest  # across people: most recently recorded
    assert view.lookup(["e" * 32]) is None
    assert len(view) == 2 and view.applied == 3


# ---------------------------------------------------------------- the catalogue's conditions


def _one_agreement(**changes: str) -> str:
    fields = {
        "id": '"a-test"',
        "title": '"Test"',
        "source_agency_types": '["police"]',
        "recipient_agency_types": '["education"]',
        "concern_types": '["DOMESTIC_ABUSE"]',
        "min_risk_grade": '"LOW"',
        "subject_ages": '"child"',
        "requires_school_match": "true",
        "lawful_bases": '["DAA2021-S49A", "UKGDPR-6-1-c", "UKGDPR-9-2-g+DPA18-S1-P18"]',
        "consent_rule": '"not_required"',
        "profile": '"p"',
        "purpose": '"test"',
        "retention": '"P1Y"',
    }
    fields.update(changes)
    body = "\n".join(f"{k} = {v}" for k, v in fields.items() if v)
    profile = (
        '[[profile]]\nname = "p"\ndescription = "d"\nfields = ["concern_id", "concern_type"]\n'
    )
    return f"[[agreement]]\n{body}\n{profile}"


def test_the_catalogue_has_every_basis_the_issue_names() -> None:
    assert {
        "UKGDPR-6-1-c",
        "UKGDPR-6-1-e",
        "UKGDPR-9-2-g+DPA18-S1-P18",
        "UKGDPR-9-2-h+DPA18-S1-P2",
        "DPA18-S35+SCH8-P4",
        "CA1989-S17",
        "CA1989-S47",
        "CA2004-S10",
        "CA2004-S11",
        "CDA1998-S115",
        "DAA2021-S49A",
    } <= set(LAWFUL_BASES)
    assert LAWFUL_BASES["CDA1998-S115"].kind == "power"
    assert LAWFUL_BASES["DAA2021-S49A"].kind == "duty"
    for basis in LAWFUL_BASES.values():
        assert basis.citation and basis.conditions and basis.url.startswith("https://")
    assert parse_policy({"x.toml": _one_agreement()}).agreements[0].id == "a-test"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"requires_school_match": ""}, "DAA2021-S49A needs requires_school_match = true"),
        (
            {"recipient_agency_types": '["health"]', "requires_school_match": ""},
            "DAA2021-S49A does not reach health",
        ),
        ({"source_agency_types": '["health"]'}, "DAA2021-S49A cannot be relied on by health"),
        (
            {"subject_ages": '"young_adult"'},
            "DAA2021-S49A covers subject_ages 'child', not 'young_adult'",
        ),
        (
            {"lawful_bases": '["CDA1998-S115", "UKGDPR-6-1-e", "UKGDPR-9-2-g+DPA18-S1-P18"]'},
            "CDA1998-S115 does not reach education",
        ),
        (
            {"lawful_bases": '["DAA2021-S49A", "UKGDPR-6-1-c"]'},
            "Article 9 condition",
        ),
        (
            {"lawful_bases": '["DAA2021-S49A", "DAA2021-S49A", "DPA18-S35+SCH8-P4"]'},
            "listed twice",
        ),
    ],
)
def test_a_basis_must_fit_its_agreement(changes: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy({"x.toml": _one_agreement(**changes)})
    text = str(info.value)
    assert "x.toml: agreement 'a-test': field 'lawful_bases'" in text
    assert message in text
