"""adapters/_fhir.py: FHIR R4 Bundles ↔ Concern, refusals with FHIR paths, FHIR out."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.consent import Consent

from adapters import (
    FHIR_INVALID,
    FHIR_UNMAPPABLE,
    FhirRefusal,
    bundle_to_concern,
    concern_to_bundle,
    consent_to_fhir,
    consents_bundle,
    disclosure_to_communication,
    synthetic_concerns,
    validate_record,
)
from schemas import ConcernModel

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "deploy" / "examples").glob("fhir-bundle-*.json"))
PUBLISHER = "hampshire-constabulary"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _concern(bundle: dict[str, Any]) -> ConcernModel:
    parsed = validate_record(
        bundle_to_concern(bundle, PUBLISHER), label="t", publisher_id=PUBLISHER, now=NOW
    )
    assert parsed.concern is not None, (parsed.status, parsed.detail)
    return parsed.concern


def test_there_is_an_example_of_each_concern_resource() -> None:
    kinds = {
        e["resource"]["resourceType"]
        for path in EXAMPLES
        for e in _load(path)["entry"]
        if e["resource"]["id"] == "concern"
    }
    assert kinds == {"Flag", "Observation", "Communication"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_bundles_round_trip(path: Path) -> None:
    bundle = _load(path)
    concern = _concern(bundle)
    kind = next(
        e["resource"]["resourceType"] for e in bundle["entry"] if e["resource"]["id"] == "concern"
    )
    again = concern_to_bundle(concern.model_dump(mode="json"), kind)
    # Consent NOT_SOUGHT has no resource; everything else comes back identical.
    assert again == bundle
    assert _concern(again) == concern


def _single_child(n: int) -> list[ConcernModel]:
    out = []
    for doc in synthetic_concerns(n, seed=13, now=NOW):
        concern = ConcernModel.model_validate(doc)
        if len(concern.children()) == 1 and concern.subjects[0].role.value == "CHILD":
            out.append(concern)
    return out


@pytest.mark.parametrize("kind", ["Flag", "Observation", "Communication"])
def test_synthetic_concerns_keep_what_fhir_carries(kind: str) -> None:
    concerns = _single_child(40)
    assert len(concerns) >= 10
    for concern in concerns:
        bundle = concern_to_bundle(concern.model_dump(mode="json"), kind)
        back = ConcernModel.model_validate(bundle_to_concern(bundle, concern.source_agency))
        assert back.concern_id == concern.concern_id
        assert (back.source_ref, back.concern_type, back.risk_grade, back.narrative) == (
            concern.source_ref,
            concern.concern_type,
            concern.risk_grade,
            concern.narrative,
        )
        assert (back.reported_at, back.occurred_at, back.restricted) == (
            concern.reported_at,
            concern.occurred_at,
            concern.restricted,
        )
        for mine, theirs in zip(back.subjects, concern.subjects, strict=True):
            assert (mine.given_name, mine.family_name, mine.date_of_birth) == (
                theirs.given_name,
                theirs.family_name,
                theirs.date_of_birth,
            )
            assert (mine.nhs_number, mine.police_person_id, mine.address) == (
                theirs.nhs_number,
                theirs.police_person_id,
                theirs.address,
            )
            if theirs.role.value != "CHILD" or mine is back.subjects[0]:
                assert mine.role == theirs.role
        if concern.consent.state.value in ("GIVEN", "REFUSED", "WITHDRAWN"):
            assert back.consent.state == concern.consent.state


def _mutated(change: Any) -> dict[str, Any]:
    bundle = copy.deepcopy(_load(REPO / "deploy/examples/fhir-bundle-flag.json"))
    change(bundle)
    return bundle


def _entry(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind)


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        (
            lambda b: b["entry"].append({"resource": {"resourceType": "Medication", "id": "m"}}),
            FHIR_UNMAPPABLE,
            "Bundle.entry[4].resource",
        ),
        (
            lambda b: b["entry"].append({"resource": dict(_entry(b, "Patient"), id="p2")}),
            FHIR_UNMAPPABLE,
            "Bundle.entry",
        ),
        (
            lambda b: _entry(b, "Patient")["identifier"][0].update(value="12345"),
            FHIR_UNMAPPABLE,
            "Bundle.entry[0].resource.identifier",
        ),
        (
            lambda b: _entry(b, "Patient").update(birthDate="24/06/2024"),
            FHIR_INVALID,
            "Bundle.entry[0].resource.birthDate",
        ),
        (
            lambda b: _entry(b, "Flag")["code"]["coding"][0].update(code="HAUNTING"),
            FHIR_UNMAPPABLE,
            "Bundle.entry[3].resource.code",
        ),
        (
            lambda b: _entry(b, "Flag").pop("category"),
            FHIR_UNMAPPABLE,
            "Bundle.entry[3].resource.category",
        ),
        (
            lambda b: _entry(b, "RelatedPerson")["relationship"][0]["coding"][0].update(
                code="NBOR"
            ),
            FHIR_UNMAPPABLE,
            "Bundle.entry[1].resource.relationship[0]",
        ),
        (lambda b: b.pop("identifier"), FHIR_UNMAPPABLE, "Bundle.identifier"),
        # An element R4 does not define (as R5-only elements are) is refused, not dropped:
        (
            lambda b: _entry(b, "Patient").update(unknownR5Element=True),
            FHIR_INVALID,
            "Bundle.entry[0].resource.unknownR5Element",
        ),
        (lambda b: b.update(resourceType="Parameters"), FHIR_INVALID, "Bundle"),
    ],
)
def test_unmappable_content_is_refused_with_path_and_code(
    change: Any, code: str, path: str
) -> None:
    bundle = _mutated(change)
    with pytest.raises(FhirRefusal) as refused:
        bundle_to_concern(bundle, PUBLISHER)
    assert (refused.value.code, refused.value.path) == (code, path)
    text = f"{refused.value.path} {refused.value.detail}"
    for value in ("Alfie", "Brennan", "9991873402", "24/06/2024", "12345", "SO15 5NF"):
        assert value not in text


def test_a_disclosure_goes_out_as_a_valid_r4_communication() -> None:
    metadata = {
        "disclosure_id": "0" * 32,
        "concern_id": "5b0e7c2a-91d4-4f3e-8a6b-2c7d9e1f0a31",
        "recipient_id": "southampton-health",
        "concern_type": "PHYSICAL_ABUSE",
        "risk_grade": "HIGH",
        "lawful_basis": "CA1989-S47",
        "purpose": "safeguarding",
        "profile": "health-full",
        "decided_at": datetime(2026, 11, 24, 3, 21, tzinfo=UTC),
    }
    communication = disclosure_to_communication(metadata, {"narrative": "text"})
    parsed = Communication.model_validate(communication)
    assert parsed.identifier[0].value == "0" * 32
    assert json.loads(communication["payload"][0]["contentString"]) == {"narrative": "text"}


@pytest.mark.parametrize("state", ["GIVEN", "REFUSED", "WITHDRAWN", "NOT_SOUGHT", "OVERRIDDEN"])
def test_consent_records_export_as_r4_consent(state: str) -> None:
    from consent import ConsentRecord
    from schemas import ConsentState, NotSoughtReason, OverrideJustification

    record = ConsentRecord.create(
        subject_pseudonym="a" * 32,
        state=ConsentState(state),
        decided_by="MASH team manager 4471",
        agency_id="portsmouth-csc",
        recorded_at=datetime(2026, 11, 25, 11, 50, tzinfo=UTC),
        not_sought_reason=NotSoughtReason.RISK_TO_CHILD if state == "NOT_SOUGHT" else None,
        justification=OverrideJustification.SIGNIFICANT_HARM if state == "OVERRIDDEN" else None,
        source_ref="MASH/2026/1187",
    )
    consent = consent_to_fhir(record)
    parsed = Consent.model_validate(consent)
    assert parsed.provision.type == ("deny" if state in ("REFUSED", "WITHDRAWN") else "permit")
    assert parsed.policyRule.coding[0].code == state
    assert parsed.patient.identifier.value == "a" * 32
    assert parsed.id == record.consent_record_id
    bundle = consents_bundle([record])
    Bundle.model_validate(bundle)


def test_the_directory_says_which_recipient_takes_fhir() -> None:
    from consent import parse_directory
    from schemas import SaferError

    text = (REPO / "deploy" / "directory.toml").read_text()
    start = text.index('id = "southampton-health"')
    end = text.index('delivery = "kafka"', start)
    webhook = (
        'delivery = "webhook"\nwebhook_url = "https://health.example/hook"\n'
        'disclosure_format = "fhir-r4"'
    )
    fhir = text[:end] + webhook + text[end + len('delivery = "kafka"') :]
    formats = {r.id: r.disclosure_format for r in parse_directory(fhir, "d.toml").recipients}
    assert formats["southampton-health"] == "fhir-r4"
    assert formats["portsmouth-health"] == "safer-json"
    with pytest.raises(SaferError, match="disclosure_format"):
        parse_directory(fhir.replace('"fhir-r4"', '"hl7v2"'), "d.toml")
