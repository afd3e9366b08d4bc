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


# --------------------------------------------------------------------------- risk assessments

OBSERVATION = REPO / "deploy/examples/fhir-bundle-observation.json"
#: Entries of the Observation example: 0 Patient, 1 father, 2 brother, 3 Practitioner,
#: 4 Observation, 5 the child's RiskAssessment, 6 the brother's, 7 Consent.
RISK1 = "Bundle.entry[5].resource"
RISK2 = "Bundle.entry[6].resource"


def _observation(change: Any = None) -> dict[str, Any]:
    bundle = copy.deepcopy(_load(OBSERVATION))
    if change is not None:
        change(bundle)
    return bundle


def _risk(bundle: dict[str, Any], n: int) -> dict[str, Any]:
    resource: dict[str, Any] = bundle["entry"][4 + n]["resource"]
    assert resource["resourceType"] == "RiskAssessment"
    return resource


def test_the_example_carries_a_childs_and_a_siblings_risk_assessment() -> None:
    concern = _concern(_load(OBSERVATION))
    child, brother = concern.risk_assessments
    assert (child.subject_ref, child.grade.value, child.method.value) == (
        "child",
        "MEDIUM",
        "PROFESSIONAL_JUDGEMENT",
    )
    assert (brother.subject_ref, brother.grade.value) == ("brother", "LOW")
    roles = {s.subject_ref: s.role.value for s in concern.subjects}
    assert roles["brother"] == "SIBLING"
    assert [f.value for f in child.factors] == ["NEGLECT"]
    assert child.assessed_by == "Health visitor Sarah Okafor"
    assert child.assessed_at == datetime(2026, 11, 25, 11, 45, tzinfo=UTC)


def _with_assessments(assessments: list[dict[str, Any]]) -> ConcernModel:
    record = _concern(_load(OBSERVATION)).model_dump(mode="json")
    base = {"assessed_by": "Health visitor Sarah Okafor", "assessed_at": "2026-11-25T11:45:00Z"}
    record["risk_assessments"] = [{**base, **a} for a in assessments]
    return ConcernModel.model_validate(record)


@pytest.mark.parametrize("kind", ["Flag", "Observation", "Communication"])
def test_every_risk_field_survives_concern_bundle_concern(kind: str) -> None:
    concern = _with_assessments(
        [
            {
                "subject_ref": "child",
                "grade": "HIGH",
                "rationale": "DASH 16 and a third incident this year.",
                "method": "DASH",
                "dash_score": 16,
                "factors": ["DOMESTIC_ABUSE", "PARENTAL_SUBSTANCE_MISUSE", "MISSING_EPISODES"],
                "missing_episodes": 3,
            },
            {
                "subject_ref": "brother",
                "grade": "MEDIUM",
                "method": "OTHER_TOOL",
                "tool_name": "Hampshire CCE screening tool v2",
                "factors": ["CHILD_CRIMINAL_EXPLOITATION", "COUNTY_LINES"],
            },
        ]
    )
    bundle = concern_to_bundle(concern.model_dump(mode="json"), kind)
    again = _concern(bundle)
    assert again.risk_assessments == concern.risk_assessments
    assert concern_to_bundle(again.model_dump(mode="json"), kind) == bundle
    assert any(e["resource"]["resourceType"] == "RiskAssessment" for e in bundle["entry"]), (
        "the assessments go out as RiskAssessment resources"
    )


def test_synthetic_risk_assessments_survive_the_round_trip() -> None:
    concerns = [c for c in _single_child(40) if c.risk_assessments]
    assert len(concerns) >= 10
    methods = {a.method.value for c in concerns for a in c.risk_assessments}
    assert "DASH" in methods
    for concern in concerns:
        bundle = concern_to_bundle(concern.model_dump(mode="json"), "Flag")
        back = ConcernModel.model_validate(bundle_to_concern(bundle, concern.source_agency))
        assert back.risk_assessments == concern.risk_assessments


def _hl7_only(bundle: dict[str, Any]) -> None:
    prediction = _risk(bundle, 1)["prediction"][0]
    prediction["qualitativeRisk"]["coding"] = [
        {"system": "http://terminology.hl7.org/CodeSystem/risk-probability", "code": "high"}
    ]


def _by_reference(bundle: dict[str, Any]) -> None:
    risk = _risk(bundle, 1)
    risk["subject"] = {"reference": bundle["entry"][0]["fullUrl"]}
    risk["performer"] = {"reference": "Practitioner/reporter"}
    risk["note"] = [{"text": "Discussed with the named nurse."}]
    risk.pop("method")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # HL7's risk-probability codes are read as the grade (high → HIGH).
        (_hl7_only, {"grade": "HIGH"}),
        # References by fullUrl; the performer as the Bundle's Practitioner; notes join the
        # rationale; no method is professional judgement.
        (
            _by_reference,
            {
                "assessed_by": "Sarah Okafor",
                "method": "PROFESSIONAL_JUDGEMENT",
                "rationale": (
                    "Faltering growth, missed immunisations and an untreated nappy rash point "
                    "to neglect of Maisie's basic care; her father agreed to the GP appointment "
                    "and to family support.\nDiscussed with the named nurse."
                ),
            },
        ),
    ],
)
def test_risk_assessment_variants_that_are_accepted(change: Any, expected: dict[str, Any]) -> None:
    assessment = _concern(_observation(change)).risk_assessments[0].model_dump(mode="json")
    assert {k: assessment[k] for k in expected} == expected


def _set(n: int, **values: Any) -> Any:
    return lambda b: _risk(b, n).update(values)


def _prediction(n: int, **values: Any) -> Any:
    return lambda b: _risk(b, n)["prediction"][0].update(values)


def _grade_codings(*codings: tuple[str, str]) -> Any:
    systems = {
        "ours": "https://safer-exchange.example/fhir/CodeSystem/risk-grade",
        "hl7": "http://terminology.hl7.org/CodeSystem/risk-probability",
    }
    qualitative = {"coding": [{"system": systems[s], "code": c} for s, c in codings]}
    return _prediction(1, qualitativeRisk=qualitative)


def _factor(code: str) -> Any:
    return lambda b: _risk(b, 1)["reasonCode"][0]["coding"][0].update(code=code)


def _dash(score: int) -> Any:
    url = "https://safer-exchange.example/fhir/StructureDefinition/dash-score"
    system = "https://safer-exchange.example/fhir/CodeSystem/risk-method"
    return _set(
        1,
        extension=[{"url": url, "valueInteger": score}],
        method={"coding": [{"system": system, "code": "DASH"}]},
    )


def _high_without_rationale(bundle: dict[str, Any]) -> None:
    _grade_codings(("ours", "HIGH"))(bundle)
    _risk(bundle, 1)["prediction"][0].pop("rationale")


def _sibling_reference(reference: str) -> Any:
    return lambda b: _risk(b, 2)["extension"][0]["valueReference"].update(reference=reference)


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        # The rules of every way in (consent.risk_problems), at the FHIR path:
        (_high_without_rationale, "RISK_RATIONALE_MISSING", f"{RISK1}.prediction[0].rationale"),
        (
            _sibling_reference("RelatedPerson/father"),
            "RISK_ASSESSMENT_INVALID",
            f"{RISK2}.extension[0].valueReference",
        ),
        (
            lambda b: _risk(b, 2).pop("extension"),  # a second assessment of the child
            "RISK_ASSESSMENT_INVALID",
            f"{RISK2}.subject",
        ),
        (
            lambda b: _dash(9)(b) or _risk(b, 1).pop("extension"),
            "RISK_ASSESSMENT_INVALID",
            f"{RISK1}.extension",
        ),
        (_dash(30), "SCHEMA_INVALID", f"{RISK1}.extension[0].valueInteger"),
        (
            _set(1, occurrenceDateTime="2026-11-25"),
            "SCHEMA_INVALID",
            f"{RISK1}.occurrenceDateTime",
        ),
        # Unknown codes:
        (_factor("WITCHCRAFT"), FHIR_UNMAPPABLE, f"{RISK1}.reasonCode[0]"),
        (
            lambda b: _risk(b, 1)["reasonCode"][0]["coding"][0].update(
                system="http://snomed.info/sct"
            ),
            FHIR_UNMAPPABLE,
            f"{RISK1}.reasonCode[0]",
        ),
        (
            _grade_codings(("hl7", "certain")),
            FHIR_UNMAPPABLE,
            f"{RISK1}.prediction[0].qualitativeRisk",
        ),
        (
            _grade_codings(("ours", "LOW"), ("hl7", "high")),
            FHIR_UNMAPPABLE,
            f"{RISK1}.prediction[0].qualitativeRisk",
        ),
        (_grade_codings(), FHIR_UNMAPPABLE, f"{RISK1}.prediction[0].qualitativeRisk"),
        (
            _set(1, method={"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}),
            FHIR_UNMAPPABLE,
            f"{RISK1}.method",
        ),
        # About someone not in the Bundle:
        (
            _set(1, subject={"reference": "Patient/someone-else"}),
            FHIR_UNMAPPABLE,
            f"{RISK1}.subject",
        ),
        (
            _sibling_reference("RelatedPerson/cousin"),
            FHIR_UNMAPPABLE,
            f"{RISK2}.extension[0].valueReference",
        ),
        # R4 subject is Patient|Group: a sibling is named by the extension, not the subject.
        (
            _set(2, subject={"reference": "RelatedPerson/brother"}),
            FHIR_UNMAPPABLE,
            f"{RISK2}.subject",
        ),
        # Content we would otherwise drop:
        (
            _prediction(1, probabilityDecimal=0.7),
            FHIR_UNMAPPABLE,
            f"{RISK1}.prediction[0].probabilityDecimal",
        ),
        (_set(1, mitigation="safety plan"), FHIR_UNMAPPABLE, f"{RISK1}.mitigation"),
        (
            _set(1, extension=[{"url": "https://example.org/x", "valueInteger": 1}]),
            FHIR_UNMAPPABLE,
            f"{RISK1}.extension[0]",
        ),
        (
            lambda b: _risk(b, 1)["prediction"].append({"rationale": "again"}),
            FHIR_UNMAPPABLE,
            f"{RISK1}.prediction",
        ),
        # Incomplete:
        (_set(1, status="preliminary"), FHIR_UNMAPPABLE, f"{RISK1}.status"),
        (
            lambda b: _risk(b, 1).pop("occurrenceDateTime"),
            FHIR_UNMAPPABLE,
            f"{RISK1}.occurrenceDateTime",
        ),
        (lambda b: _risk(b, 1).pop("performer"), FHIR_UNMAPPABLE, f"{RISK1}.performer"),
    ],
)
def test_unmappable_or_invalid_risk_assessments_are_refused_with_their_fhir_path(
    change: Any, code: str, path: str
) -> None:
    bundle = _observation(change)
    with pytest.raises(FhirRefusal) as refused:
        bundle_to_concern(bundle, PUBLISHER)
    assert (refused.value.code, refused.value.path) == (code, path), refused.value.detail
    text = f"{refused.value.path} {refused.value.detail}"
    for value in ("Maisie", "Ollie", "Rowe", "9995026178", "9995010003", "WITCHCRAFT", "30"):
        assert value not in text


def test_validate_record_refuses_what_the_adapter_refuses() -> None:
    """The gateway validates the mapped record as any other: the same rule, the same code."""
    record = bundle_to_concern(_load(OBSERVATION), PUBLISHER)
    record["risk_assessments"][0]["grade"] = "HIGH"
    record["risk_assessments"][0]["rationale"] = "  "
    parsed = validate_record(record, label="t", publisher_id=PUBLISHER, now=NOW)
    assert parsed.status == "RISK_RATIONALE_MISSING"
