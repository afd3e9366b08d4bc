"""audit/_fhir.py: FHIR R4 AuditEvents following IHE BALP PrivacyDisclosure.

``fhir.resources`` 8.3.0 ships R5 models (the default package), R4B and STU3,
but no R4 package. R4B's AuditEvent is R4's (R4B changed no element of it),
while R5 reshaped it (``type`` became ``code``, ``outcome`` a backbone), so the
export is validated against the R4B models. BALP constraints that a base
model cannot know (fixed codes, slices, ``val-audit-source``) are checked here.
"""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as R4BAuditEvent
from fhir.resources.R4B.bundle import Bundle as R4BBundle

from audit import AuditRecord, AuditStore, Labels, Period, entry_id_for, fhir_bundle
from audit._fhir import BALP_RECIPIENT, BALP_SOURCE, PSEUDONYM_SYSTEM, fhir_audit_events
from schemas import AuditEvent

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
CHILD = "c" * 32
PARENT = "a" * 32
DCM = "http://dicom.nema.org/resources/ontology/DCM"
LABELS = Labels(
    names={"police": "Test Constabulary", "csc": "Test MASH"},
    citations={"CA2004-S11": "Children Act 2004 section 11"},
)


def _disclosed(
    n: int,
    *,
    event: AuditEvent = AuditEvent.DISCLOSED,
    concern: str = "k1",
    codes: tuple[str, ...] = (),
    at: datetime = T0,
) -> AuditRecord:
    disclosure = f"{n:032x}"
    return AuditRecord(
        entry_id=entry_id_for(event, disclosure),
        event=event,
        disclosure_id=disclosure,
        decision_id=f"dec{n}",
        concern_id=concern,
        subject_pseudonyms=(CHILD, PARENT),
        source="police",
        recipient="csc",
        lscp="hampshire",
        lawful_basis=None if event is AuditEvent.WITHHELD else "CA2004-S11",
        purpose=None if event is AuditEvent.WITHHELD else "front-door screening",
        consent_state="NOT_SOUGHT",
        reason_codes=codes,
        reasons=("policy reason",),
        policy_revision="sha256:rev",
        fields_disclosed=() if event is AuditEvent.WITHHELD else ("concern_id", "narrative"),
        payload_sha256=None if event is AuditEvent.WITHHELD else "ab" * 32,
        at=at,
        actor="safer-router",
    )


def _received(of: AuditRecord, *, codes: tuple[str, ...] = ()) -> AuditRecord:
    assert of.disclosure_id
    return AuditRecord(
        entry_id=entry_id_for(AuditEvent.RECEIVED, f"{of.disclosure_id}:RECEIVED"),
        event=AuditEvent.RECEIVED,
        disclosure_id=of.disclosure_id,
        concern_id=of.concern_id,
        subject_pseudonyms=of.subject_pseudonyms,
        source=of.source,
        recipient=of.recipient,
        lscp=of.lscp,
        lawful_basis=of.lawful_basis,
        reason_codes=codes,
        reasons=("receipt status RECEIVED",),
        payload_sha256=of.payload_sha256,
        at=of.at + timedelta(seconds=30),
        actor=of.recipient or "",
    )


def _records() -> list[AuditRecord]:
    d1 = _disclosed(1)
    r1 = _disclosed(2, event=AuditEvent.REFERRED, concern="k2", codes=("RESTRICTED_RECORD",))
    return [
        d1,
        _received(d1),
        _disclosed(3, event=AuditEvent.WITHHELD, codes=("NO_LAWFUL_BASIS",)),
        r1,
        _received(r1),
    ]


def _agents(event: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [
        a
        for a in event["agent"]
        if any(c["system"] == DCM and c["code"] == code for c in a["type"]["coding"])
    ]


def _check_balp(event: dict[str, Any]) -> None:
    """The BALP PrivacyDisclosure constraints, as written in the IG (Disclose.fsh)."""
    source_side = event["meta"]["profile"] == [BALP_SOURCE]
    assert source_side or event["meta"]["profile"] == [BALP_RECIPIENT]
    assert event["type"]["system"] == DCM
    assert event["type"]["code"] == ("110106" if source_side else "110107")
    assert event["action"] == ("R" if source_side else "C")
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle",
        "code": "disclose",
        "display": "Disclose Record Lifecycle Event",
    } in event["subtype"]
    assert event["recorded"] and event["outcome"] in {"0", "4", "8", "12"}
    assert "modifierExtension" not in event
    (source,) = _agents(event, "110153")
    (recipient,) = _agents(event, "110152")
    for agent in (source, recipient):
        assert agent["who"] and agent["network"]["address"]
    # val-audit-source: the agent on whose side the event is recorded is the observer.
    assert (source if source_side else recipient)["who"] == event["source"]["observer"]
    patients = [
        e
        for e in event["entity"]
        if e["type"]["system"] == "http://terminology.hl7.org/CodeSystem/audit-entity-type"
        and e["type"]["code"] == "1"
    ]
    assert len(patients) == 1  # entity[patient] 1..1
    (patient,) = patients
    assert patient["role"] == {
        "system": "http://terminology.hl7.org/CodeSystem/object-role",
        "code": "1",
        "display": "Patient",
    }
    assert patient["what"]["type"] == "Patient"
    assert patient["what"]["identifier"]["system"] == PSEUDONYM_SYSTEM
    assert len(event["entity"]) >= 2


def test_bundle_validates_as_fhir_r4_and_follows_balp(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        store.append(_records())
        bundle = fhir_bundle(store.records(), labels=LABELS, generated_at=T0)
    parsed = R4BBundle.model_validate(bundle)
    assert parsed.type == "collection"
    resources = [e["resource"] for e in bundle["entry"]]
    # 2 disclosures + 2 receipts, each about 2 people; the WITHHELD decision is not a disclosure.
    assert len(resources) == 8
    for entry, resource in zip(bundle["entry"], resources, strict=True):
        assert isinstance(R4BAuditEvent.model_validate(resource), R4BAuditEvent)
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        _check_balp(resource)
    assert len({r["id"] for r in resources}) == 8
    kinds = [(r["subtype"][1]["code"], r["meta"]["profile"][0]) for r in resources]
    assert kinds.count(("DISCLOSED", BALP_SOURCE)) == 2
    assert kinds.count(("RECEIVED", BALP_RECIPIENT)) == 4


def test_source_event_says_who_what_when_why_and_basis() -> None:
    event = fhir_audit_events(_disclosed(1), patients={CHILD}, labels=LABELS)[0]
    assert event["recorded"] == "2025-06-01T10:00:00.000Z"
    assert event["outcome"] == "0"
    assert event["outcomeDesc"] == "disclosed to Test MASH under Children Act 2004 section 11"
    (source,) = _agents(event, "110153")
    assert source["who"]["display"] == "Test Constabulary"
    assert source["policy"] == ["urn:safer:lawful-basis:CA2004-S11"]
    (recipient,) = _agents(event, "110152")
    assert recipient["who"]["identifier"]["value"] == "csc"
    (app,) = _agents(event, "110150")
    assert app["who"]["display"] == "safer-router"
    assert event["purposeOfEvent"] == [
        {
            "coding": [
                {
                    "system": "urn:safer:lawful-basis",
                    "code": "CA2004-S11",
                    "display": "Children Act 2004 section 11",
                }
            ],
            "text": "front-door screening",
        }
    ]
    details = {d["type"]: d["valueString"] for d in event["entity"][1]["detail"]}
    assert details["fields_disclosed"] == "concern_id,narrative"
    assert details["payload_sha256"] == "ab" * 32
    assert details["concern_id"] == "k1"


def test_one_event_per_patient_and_a_subject_export_names_only_the_subject() -> None:
    both = fhir_audit_events(_disclosed(1))
    assert [e["entity"][0]["what"]["identifier"]["value"] for e in both] == [CHILD, PARENT]
    bundle = fhir_bundle(_records(), patients={CHILD}, generated_at=T0)
    text = json.dumps(bundle)
    assert CHILD in text and PARENT not in text
    assert len(bundle["entry"]) == 4


def test_restricted_concerns_are_labelled_including_their_receipts() -> None:
    bundle = fhir_bundle(_records(), patients={CHILD}, generated_at=T0)
    labelled = {
        (r["subtype"][1]["code"], "securityLabel" in r["entity"][1])
        for r in (e["resource"] for e in bundle["entry"])
    }
    assert labelled == {
        ("DISCLOSED", False),
        ("RECEIVED", False),  # the disclosure's receipt
        ("REFERRED", True),
        ("RECEIVED", True),  # the restricted referral's receipt
    }


def test_a_payload_mismatch_receipt_is_a_minor_failure() -> None:
    (event,) = fhir_audit_events(
        _received(_disclosed(1), codes=("PAYLOAD_MISMATCH",)), patients={CHILD}
    )
    assert event["outcome"] == "4"
    R4BAuditEvent.model_validate(event)


def test_period_and_determinism() -> None:
    records = [*_records(), _disclosed(9, at=T0 + timedelta(days=2))]
    a = fhir_bundle(records, generated_at=T0, period=Period(T0 + timedelta(days=1), None))
    assert [e["resource"]["recorded"] for e in a["entry"]] == ["2025-06-03T10:00:00.000Z"] * 2
    b = fhir_bundle(
        list(reversed(records)),
        generated_at=T0 + timedelta(hours=1),
        period=Period(T0 + timedelta(days=1), None),
    )
    assert a["id"] == b["id"] and a["entry"] == b["entry"]
    assert a["timestamp"] != b["timestamp"]


def test_the_validator_is_strict_enough_to_catch_an_r5_shape() -> None:
    event = fhir_audit_events(_disclosed(1), patients={CHILD})[0]
    r5_style = dict(event, identifier={"system": "urn:x", "value": "1"})  # not in R4
    with pytest.raises(ValueError):
        R4BAuditEvent.model_validate(r5_style)
    without_observer = dict(event, source={"site": "x"})  # source.observer is 1..1
    with pytest.raises(ValueError):
        R4BAuditEvent.model_validate(without_observer)


def test_audit_does_not_depend_on_a_fhir_library_at_runtime() -> None:
    for path in (ROOT / "audit").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] == "fhir" for n in names), path
