"""FHIR R4 health adapter: a safeguarding concern as a FHIR Bundle ↔ our Concern.

Models: ``fhir.resources.R4B``. fhir.resources 8.3.0 ships R5 (its default
package), R4B and STU3, and no R4 package. R4B (4.3.0) left every resource
used here as R4 had it (Bundle, Patient, RelatedPerson, Practitioner, Flag,
Observation, Communication, Consent, RiskAssessment), so an R4 Bundle validates against the
R4B models unchanged, while R5-only elements are refused as unknown (tested).
The R5 package would accept R5 shapes an R4 system never sends and refuse
some R4 ones (e.g. R4's ``Consent.scope``). docs/fhir.md has the full mapping.

In (``bundle_to_concern``): a Bundle with one ``Patient`` (the child),
``RelatedPerson``s (family), one ``Practitioner`` (who to contact), the concern
as exactly one ``Flag``, ``Observation`` or ``Communication``, optionally a
``Consent``, and a ``RiskAssessment`` per assessed child (the structured risk
assessment of concern v3: the Patient, or a sibling ``RelatedPerson`` named by
our ``risk-assessed-person`` extension; the rules of ``consent.risk_problems``
are applied here too, so a refusal names the FHIR path). What cannot be
mapped is refused (``FhirRefusal``) with the FHIR path and a reason code,
never a value:

- ``FHIR_INVALID``: not a valid R4 resource (the path of the first error);
- ``FHIR_UNMAPPABLE``: valid FHIR that has no place in a Concern (another
  resource type, a second Patient, a concern type or relationship we do not
  code, a missing identifier);
- for a ``RiskAssessment``, the reason codes every way in uses
  (``RISK_RATIONALE_MISSING``, ``RISK_ASSESSMENT_INVALID``, ``SCHEMA_INVALID``
  for a DASH score outside 0 to 27), at the path of the FHIR element.

Out (``concern_to_bundle``): the same shape from a Concern (the examples in
deploy/examples/ are made with it, and round-trip tests check that
``bundle_to_concern(concern_to_bundle(c)) == c`` for what FHIR carries);
``disclosure_to_communication`` for a health recipient that takes FHIR, and
``consent_to_fhir`` for consent records.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from consent import ConsentRecord, risk_problems
from schemas import (
    ConcernModel,
    ConcernType,
    ConsentState,
    ReasonCode,
    RiskFactor,
    RiskGrade,
    RiskMethod,
    SubjectRole,
)

__all__ = [
    "CONCERN_TYPE_SYSTEM",
    "DISCLOSURE_ID_SYSTEM",
    "FHIR_INVALID",
    "FHIR_UNMAPPABLE",
    "NHS_NUMBER_SYSTEM",
    "RISK_ASSESSED_PERSON_URL",
    "RISK_DASH_SCORE_URL",
    "RISK_FACTOR_SYSTEM",
    "RISK_GRADE_SYSTEM",
    "RISK_METHOD_SYSTEM",
    "RISK_MISSING_EPISODES_URL",
    "FhirRefusal",
    "bundle_to_concern",
    "concern_to_bundle",
    "consent_to_fhir",
    "consents_bundle",
    "disclosure_to_communication",
    "validate_r4",
]

FHIR_INVALID = "FHIR_INVALID"
FHIR_UNMAPPABLE = "FHIR_UNMAPPABLE"

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
#: Our code systems (the codes are the Avro enum symbols).
CONCERN_TYPE_SYSTEM = "https://safer-exchange.example/fhir/CodeSystem/concern-type"
RISK_GRADE_SYSTEM = "https://safer-exchange.example/fhir/CodeSystem/risk-grade"
RISK_METHOD_SYSTEM = "https://safer-exchange.example/fhir/CodeSystem/risk-method"
RISK_FACTOR_SYSTEM = "https://safer-exchange.example/fhir/CodeSystem/risk-factor"
#: HL7's qualitative risk codes (R4 value set risk-probability), also accepted for the grade.
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
_EXTENSION = "https://safer-exchange.example/fhir/StructureDefinition/"
#: RiskAssessment extensions (docs/fhir.md): who was assessed when it is not the
#: Patient (R4 ``RiskAssessment.subject`` is Patient|Group, so a sibling, a
#: RelatedPerson, is named here while ``subject`` stays the Patient), the DASH
#: score, and the number of missing episodes (each a valueInteger).
RISK_ASSESSED_PERSON_URL = _EXTENSION + "risk-assessed-person"
RISK_DASH_SCORE_URL = _EXTENSION + "dash-score"
RISK_MISSING_EPISODES_URL = _EXTENSION + "missing-episodes"
SOURCE_REF_SYSTEM = "https://safer-exchange.example/fhir/Id/source-ref"
SCHOOL_URN_SYSTEM = "https://fhir.hl7.org.uk/Id/urn-school-number"
POLICE_PERSON_SYSTEM = "https://safer-exchange.example/fhir/Id/police-person-id"
ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
DISCLOSURE_ID_SYSTEM = "https://safer-exchange.example/fhir/Id/disclosure-id"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LA_CODE = re.compile(r"\AE[0-9]{8}\Z")

#: v3-RoleCode → our role. Unlisted codes are refused (FHIR_UNMAPPABLE).
_ROLES: dict[str, SubjectRole] = {
    **{c: SubjectRole.PARENT_CARER for c in ("PRN", "MTH", "FTH", "STPPRN", "FSTPRN", "GUARD")},
    **{c: SubjectRole.SIBLING for c in ("SIB", "BRO", "SIS", "HSIB")},
    **{c: SubjectRole.OTHER_ADULT for c in ("GRPRN", "GRMTH", "GRFTH", "AUNT", "UNCLE", "FRND")},
    "ALLEGED_PERPETRATOR": SubjectRole.ALLEGED_PERPETRATOR,
}
_ROLE_OUT = {
    SubjectRole.CHILD: "SIB",  # a second child travels as the first one's sibling
    SubjectRole.PARENT_CARER: "PRN",
    SubjectRole.SIBLING: "SIB",
    SubjectRole.OTHER_ADULT: "FRND",
    SubjectRole.ALLEGED_PERPETRATOR: "ALLEGED_PERPETRATOR",
}
_PERPETRATOR_SYSTEM = "https://safer-exchange.example/fhir/CodeSystem/subject-role"
_CONCERN_RESOURCES = ("Flag", "Observation", "Communication")
_MAPPED_RESOURCES = (
    "Patient",
    "RelatedPerson",
    "Practitioner",
    "Consent",
    "RiskAssessment",
    *_CONCERN_RESOURCES,
)
_CONSENT_IN = {"permit": ConsentState.GIVEN, "deny": ConsentState.REFUSED}


class FhirRefusal(Exception):
    """Content that cannot become a Concern: the FHIR path, a reason code, and why."""

    def __init__(self, code: str, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.code = code
        self.path = path
        self.detail = detail


# --------------------------------------------------------------------------- validation


def _fhir_path(loc: Sequence[int | str], root: str = "Bundle") -> str:
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_r4(document: Any, root: str = "Bundle") -> None:
    """Validate against the R4(B) models; raise FHIR_INVALID at the first bad path."""
    if not isinstance(document, dict) or document.get("resourceType") != root:
        raise FhirRefusal(FHIR_INVALID, root, f"not a FHIR {root} (resourceType)")
    model = get_fhir_model_class(root)
    try:
        model.model_validate(document)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        # The error type, not its message: a message may quote the value.
        raise FhirRefusal(
            FHIR_INVALID, _fhir_path(first["loc"], root), f"not valid R4 ({first['type']})"
        ) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise FhirRefusal(FHIR_INVALID, root, f"not valid R4 ({type(exc).__name__})") from None


# --------------------------------------------------------------------------- in


def _codes(concept: Any, system: str) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [
        str(c.get("code"))
        for c in concept.get("coding") or []
        if isinstance(c, dict) and c.get("system") == system and c.get("code")
    ]


def _identifier(resource: Mapping[str, Any], system: str) -> str | None:
    for ident in resource.get("identifier") or []:
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def _name(resource: Mapping[str, Any], path: str) -> tuple[str, str]:
    names = resource.get("name") or []
    if not names:
        raise FhirRefusal(FHIR_UNMAPPABLE, f"{path}.name", "a person needs a name")
    name = names[0]
    given = " ".join(name.get("given") or [])
    family = name.get("family") or ""
    if not given or not family:
        raise FhirRefusal(
            FHIR_UNMAPPABLE, f"{path}.name[0]", "a person needs given and family names"
        )
    return given, family


def _address(resource: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    addresses = resource.get("address") or []
    if not addresses:
        return None
    address = addresses[0]
    lines = address.get("line") or []
    if not lines or not address.get("city") or not address.get("postalCode"):
        raise FhirRefusal(
            FHIR_UNMAPPABLE, f"{path}.address[0]", "an address needs line, city and postalCode"
        )
    district = address.get("district")
    return {
        "line1": lines[0],
        "line2": ", ".join(lines[1:]) or None,
        "town": address["city"],
        "postcode": address["postalCode"],
        "la_code": district if isinstance(district, str) and LA_CODE.match(district) else None,
    }


def _telecom(resource: Mapping[str, Any], system: str) -> str | None:
    for point in resource.get("telecom") or []:
        if point.get("system") == system and point.get("value"):
            return str(point["value"])
    return None


def _person(resource: Mapping[str, Any], path: str, role: SubjectRole) -> dict[str, Any]:
    given, family = _name(resource, path)
    nhs = _identifier(resource, NHS_NUMBER_SYSTEM)
    if nhs is not None and not re.fullmatch(r"[0-9]{10}", nhs.replace(" ", "")):
        raise FhirRefusal(
            FHIR_UNMAPPABLE, f"{path}.identifier", "the NHS number identifier is not 10 digits"
        )
    if not resource.get("id"):
        raise FhirRefusal(FHIR_UNMAPPABLE, f"{path}.id", "every person needs a resource id")
    return {
        "subject_ref": resource["id"],
        "role": role.value,
        "given_name": given,
        "family_name": family,
        "date_of_birth": resource.get("birthDate"),
        "nhs_number": nhs.replace(" ", "") if nhs else None,
        "police_person_id": _identifier(resource, POLICE_PERSON_SYSTEM),
        "phone": _telecom(resource, "phone"),
        "address": _address(resource, path),
        "school_urn": _identifier(resource, SCHOOL_URN_SYSTEM),
    }


def _relationship(resource: Mapping[str, Any], path: str) -> SubjectRole:
    for index, concept in enumerate(resource.get("relationship") or []):
        for code in (*_codes(concept, ROLE_SYSTEM), *_codes(concept, _PERPETRATOR_SYSTEM)):
            if code in _ROLES:
                return _ROLES[code]
        if concept:
            raise FhirRefusal(
                FHIR_UNMAPPABLE,
                f"{path}.relationship[{index}]",
                "no v3-RoleCode we map (PRN, MTH, FTH, GUARD, SIB, GRPRN, ...)",
            )
    raise FhirRefusal(FHIR_UNMAPPABLE, f"{path}.relationship", "a RelatedPerson needs one")


_HL7_GRADES = {"high": RiskGrade.HIGH, "moderate": RiskGrade.MEDIUM, "low": RiskGrade.LOW}
_HL7_GRADE_OUT = {grade: code for code, grade in _HL7_GRADES.items()}
#: RiskAssessment elements we read or may ignore (identifiers, the assessment's type,
#: narrative text); any other one (basis, condition, mitigation, reasonReference,
#: occurrencePeriod, modifierExtension, ...) is refused, not dropped.
_RISK_ELEMENTS = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "language",
        "text",
        "identifier",
        "status",
        "code",
        "subject",
        "occurrenceDateTime",
        "performer",
        "method",
        "reasonCode",
        "prediction",
        "note",
        "extension",
    }
)
_PREDICTION_ELEMENTS = frozenset({"id", "qualitativeRisk", "rationale"})
_RISK_STATUSES = ("final", "amended", "corrected")


def _reference(value: Any) -> str:
    return str(value.get("reference") or "") if isinstance(value, dict) else ""


def _whole_number(extension: Mapping[str, Any], path: str) -> int:
    value = extension.get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool):
        raise FhirRefusal(FHIR_UNMAPPABLE, path, "this extension needs a valueInteger")
    return value


def _risk_grade(concept: Any, path: str) -> str:
    grades: set[str] = set()
    codings = concept.get("coding") or [] if isinstance(concept, dict) else []
    for coding in codings:
        system, code = coding.get("system"), coding.get("code")
        if system == RISK_GRADE_SYSTEM and code in RiskGrade.__members__:
            grades.add(str(code))
        elif system == RISK_PROBABILITY_SYSTEM and code in _HL7_GRADES:
            grades.add(_HL7_GRADES[str(code)].value)
        elif system in (RISK_GRADE_SYSTEM, RISK_PROBABILITY_SYSTEM):
            grades.add(f"?{code}")
    if len(grades) != 1 or next(iter(grades)).startswith("?"):
        raise FhirRefusal(
            FHIR_UNMAPPABLE,
            path,
            f"needs one grade: HIGH, MEDIUM or LOW in {RISK_GRADE_SYSTEM}, or high, moderate "
            f"or low in {RISK_PROBABILITY_SYSTEM} (agreeing, if both)",
        )
    return grades.pop()


def _risk_assessment(
    resource: Mapping[str, Any],
    path: str,
    people: Mapping[str, tuple[str, str]],
    practitioners: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, str]]:
    """One ``RiskAssessment`` as a police-JSON risk assessment, and the FHIR path of
    each of its fields (for the refusals of ``consent.risk_problems``)."""
    for key in resource:
        if key not in _RISK_ELEMENTS:
            raise FhirRefusal(
                FHIR_UNMAPPABLE, f"{path}.{key}", "not mapped to a risk assessment (docs/fhir.md)"
            )
    if resource.get("status") not in _RISK_STATUSES:
        raise FhirRefusal(
            FHIR_UNMAPPABLE, f"{path}.status", "only a final, amended or corrected assessment"
        )
    paths = {"": path, "subject_ref": f"{path}.subject"}
    subject = people.get(_reference(resource.get("subject")))
    if subject is None or subject[0] != "Patient":
        raise FhirRefusal(
            FHIR_UNMAPPABLE,
            f"{path}.subject",
            "must reference the Patient of this Bundle (R4: Patient or Group); a sibling is "
            f"named by the extension {RISK_ASSESSED_PERSON_URL}",
        )
    out: dict[str, Any] = {"subject_ref": subject[1]}
    paths["dash_score"] = paths["missing_episodes"] = f"{path}.extension"
    seen: set[str] = set()
    for index, extension in enumerate(resource.get("extension") or []):
        where = f"{path}.extension[{index}]"
        url = str(extension.get("url"))
        if url in seen:
            raise FhirRefusal(FHIR_UNMAPPABLE, where, "this extension is repeated")
        seen.add(url)
        if url == RISK_ASSESSED_PERSON_URL:
            person = people.get(_reference(extension.get("valueReference")))
            if person is None or person[0] != "RelatedPerson":
                raise FhirRefusal(
                    FHIR_UNMAPPABLE,
                    f"{where}.valueReference",
                    "must reference a RelatedPerson (a sibling) of this Bundle",
                )
            out["subject_ref"] = person[1]
            paths["subject_ref"] = f"{where}.valueReference"
        elif url == RISK_DASH_SCORE_URL:
            out["dash_score"] = _whole_number(extension, where)
            paths["dash_score"] = f"{where}.valueInteger"
        elif url == RISK_MISSING_EPISODES_URL:
            out["missing_episodes"] = _whole_number(extension, where)
            paths["missing_episodes"] = f"{where}.valueInteger"
        else:
            raise FhirRefusal(FHIR_UNMAPPABLE, where, "an extension we do not map")
    predictions = resource.get("prediction") or []
    if len(predictions) != 1:
        raise FhirRefusal(
            FHIR_UNMAPPABLE, f"{path}.prediction", "exactly one prediction (the grade)"
        )
    prediction = predictions[0]
    where = f"{path}.prediction[0]"
    for key in prediction:
        if key not in _PREDICTION_ELEMENTS:
            raise FhirRefusal(
                FHIR_UNMAPPABLE,
                f"{where}.{key}",
                "a prediction carries qualitativeRisk and rationale only",
            )
    out["grade"] = _risk_grade(prediction.get("qualitativeRisk"), f"{where}.qualitativeRisk")
    paths["grade"] = f"{where}.qualitativeRisk"
    texts = [prediction.get("rationale")] + [n.get("text") for n in resource.get("note") or []]
    out["rationale"] = "\n".join(t for t in texts if t) or None
    paths["rationale"] = f"{where}.rationale"
    method = resource.get("method")
    if method:
        codes = [c for c in method.get("coding") or [] if c.get("system") == RISK_METHOD_SYSTEM]
        if len(codes) != 1 or codes[0].get("code") not in RiskMethod.__members__:
            raise FhirRefusal(
                FHIR_UNMAPPABLE,
                f"{path}.method",
                f"needs one coding in {RISK_METHOD_SYSTEM}: DASH, PROFESSIONAL_JUDGEMENT or "
                "OTHER_TOOL",
            )
        out["method"] = codes[0]["code"]
        out["tool_name"] = method.get("text")
    paths["method"] = f"{path}.method"
    paths["tool_name"] = f"{path}.method.text"
    factors: list[str] = []
    for index, concept in enumerate(resource.get("reasonCode") or []):
        ours = _codes(concept, RISK_FACTOR_SYSTEM)
        if not ours or any(c not in RiskFactor.__members__ for c in ours):
            raise FhirRefusal(
                FHIR_UNMAPPABLE,
                f"{path}.reasonCode[{index}]",
                f"needs a risk factor coded in {RISK_FACTOR_SYSTEM} (docs/RISK.md)",
            )
        factors.extend(c for c in ours if c not in factors)
    out["factors"] = factors
    paths["factors"] = f"{path}.reasonCode"
    performer = resource.get("performer") or {}
    identifier = performer.get("identifier") or {}
    out["assessed_by"] = (
        performer.get("display")
        or practitioners.get(_reference(performer))
        or identifier.get("value")
    )
    paths["assessed_by"] = f"{path}.performer"
    if not out["assessed_by"]:
        raise FhirRefusal(
            FHIR_UNMAPPABLE,
            f"{path}.performer",
            "who assessed: a display, a Practitioner of this Bundle, or an identifier",
        )
    out["assessed_at"] = resource.get("occurrenceDateTime")
    paths["assessed_at"] = f"{path}.occurrenceDateTime"
    if not out["assessed_at"]:
        raise FhirRefusal(FHIR_UNMAPPABLE, f"{path}.occurrenceDateTime", "when it was assessed")
    return out, paths


_RISK_FIELD = re.compile(r"\Arisk_assessments\[([0-9]+)\]\.([a-z_]+)\Z")


def _check_risk(record: Mapping[str, Any], paths: Sequence[Mapping[str, str]]) -> None:
    """Refuse, with the FHIR path, what every way in refuses in the risk assessments:
    their schema (ranges) and ``consent.risk_problems`` (reason codes as for police JSON)."""
    candidate = {**record, "concern_id": record.get("concern_id") or str(uuid.UUID(int=0))}
    try:
        concern = ConcernModel.model_validate(candidate)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            loc = error["loc"]
            if len(loc) > 1 and loc[0] == "risk_assessments" and isinstance(loc[1], int):
                where = paths[loc[1]]
                field = str(loc[2]) if len(loc) > 2 else ""
                raise FhirRefusal(
                    ReasonCode.SCHEMA_INVALID.value,
                    where.get(field, where[""]),
                    f"{field or 'risk assessment'}: not valid ({error['type']})",
                ) from None
        return  # anything else is refused by validate_record, as for every record
    for problem in risk_problems(concern):
        match = _RISK_FIELD.match(problem.field)
        where = paths[int(match.group(1))] if match else {"": "Bundle.entry"}
        field = match.group(2) if match else ""
        raise FhirRefusal(
            problem.code.value, where.get(field, where[""]), f"{field}: {problem.reason}"
        )


def bundle_to_concern(bundle: Any, source_agency: str) -> dict[str, Any]:
    """A police-JSON-shaped Concern from a FHIR R4 Bundle (then validated as any record).

    Raises ``FhirRefusal`` with the FHIR path of what cannot be mapped.
    """
    validate_r4(bundle)
    if not _identifier({"identifier": [bundle.get("identifier") or {}]}, SOURCE_REF_SYSTEM):
        raise FhirRefusal(
            FHIR_UNMAPPABLE,
            "Bundle.identifier",
            f"the Bundle needs an identifier in {SOURCE_REF_SYSTEM} (your reference)",
        )
    if not bundle.get("timestamp"):
        raise FhirRefusal(FHIR_UNMAPPABLE, "Bundle.timestamp", "when it was reported")
    by_type: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    #: A reference (``Kind/id`` or an entry's fullUrl) → (kind, id).
    people: dict[str, tuple[str, str]] = {}
    for index, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") or {}
        kind = resource.get("resourceType", "")
        path = f"Bundle.entry[{index}].resource"
        if kind not in _MAPPED_RESOURCES:
            raise FhirRefusal(FHIR_UNMAPPABLE, path, f"{kind} is not mapped to a Concern")
        by_type.setdefault(kind, []).append((path, resource))
        if resource.get("id"):
            people[f"{kind}/{resource['id']}"] = (kind, str(resource["id"]))
            if entry.get("fullUrl"):
                people[str(entry["fullUrl"])] = (kind, str(resource["id"]))
    patients = by_type.get("Patient", [])
    if len(patients) != 1:
        raise FhirRefusal(
            FHIR_UNMAPPABLE, "Bundle.entry", f"{len(patients)} Patients; exactly one (the child)"
        )
    concerns = [c for kind in _CONCERN_RESOURCES for c in by_type.get(kind, [])]
    if len(concerns) != 1:
        raise FhirRefusal(
            FHIR_UNMAPPABLE,
            "Bundle.entry",
            f"{len(concerns)} concern resources; exactly one Flag, Observation or Communication",
        )
    practitioners = by_type.get("Practitioner", [])
    if len(practitioners) != 1:
        raise FhirRefusal(
            FHIR_UNMAPPABLE, "Bundle.entry", "exactly one Practitioner (who to contact)"
        )
    subjects = [_person(patients[0][1], patients[0][0], SubjectRole.CHILD)]
    for path, related in by_type.get("RelatedPerson", []):
        subjects.append(_person(related, path, _relationship(related, path)))
    officer_path, officer = practitioners[0]
    given, family = _name(officer, officer_path)
    officer_name = f"{given} {family}"
    path, concern = concerns[0]
    kind = concern["resourceType"]
    types = _codes(concern.get("code"), CONCERN_TYPE_SYSTEM)
    if kind == "Communication":
        types = [t for c in concern.get("reasonCode") or [] for t in _codes(c, CONCERN_TYPE_SYSTEM)]
    valid_types = [t for t in types if t in ConcernType.__members__]
    if not valid_types:
        where = f"{path}.reasonCode" if kind == "Communication" else f"{path}.code"
        raise FhirRefusal(
            FHIR_UNMAPPABLE, where, f"needs a coding in {CONCERN_TYPE_SYSTEM} that we know"
        )
    grades = [
        g
        for c in concern.get("category") or []
        for g in _codes(c, RISK_GRADE_SYSTEM)
        if g in RiskGrade.__members__
    ]
    if not grades:
        raise FhirRefusal(
            FHIR_UNMAPPABLE, f"{path}.category", f"needs a coding in {RISK_GRADE_SYSTEM}"
        )
    if kind == "Flag":
        narrative = (concern.get("code") or {}).get("text")
        occurred = (concern.get("period") or {}).get("start")
    elif kind == "Observation":
        narrative = concern.get("valueString")
        occurred = concern.get("effectiveDateTime")
    else:
        payloads = [p.get("contentString") for p in concern.get("payload") or []]
        narrative = "\n".join(p for p in payloads if p) or None
        occurred = concern.get("sent")
    if not narrative:
        raise FhirRefusal(FHIR_UNMAPPABLE, path, "no narrative text (see docs/fhir.md)")
    notes = [n.get("text") for n in concern.get("note") or [] if n.get("text")]
    restricted = any(
        s.get("system") == CONFIDENTIALITY_SYSTEM and s.get("code") in ("R", "V")
        for s in (bundle.get("meta") or {}).get("security") or []
    )
    reported_at = bundle["timestamp"]
    consent: dict[str, Any] = {
        "state": ConsentState.NOT_SOUGHT.value,
        "reason": "no Consent resource in the FHIR submission",
        "recorded_by": officer_name,
        "recorded_at": reported_at,
    }
    for cpath, record in by_type.get("Consent", []):
        decision = (record.get("provision") or {}).get("type")
        state = _CONSENT_IN.get(str(decision))
        if record.get("status") == "inactive":
            state = ConsentState.WITHDRAWN
        if state is None or not record.get("dateTime"):
            raise FhirRefusal(
                FHIR_UNMAPPABLE,
                f"{cpath}.provision.type",
                "a Consent needs provision.type permit or deny, and dateTime",
            )
        consent = {
            "state": state.value,
            "reason": (record.get("policyRule") or {}).get("text"),
            "recorded_by": officer_name,
            "recorded_at": record["dateTime"],
        }
    bundle_id = bundle.get("id")
    concern_id: str | None = None
    if isinstance(bundle_id, str):
        try:
            concern_id = str(uuid.UUID(bundle_id))
        except ValueError:
            concern_id = None
    record_out: dict[str, Any] = {
        "source_agency": source_agency,
        "source_ref": bundle["identifier"]["value"],
        "reported_at": reported_at,
        "occurred_at": occurred or reported_at,
        "concern_type": valid_types[0],
        "risk_grade": grades[0],
        "subjects": subjects,
        "narrative": narrative,
        "immediate_actions": "\n".join(notes) or None,
        "consent": consent,
        "restricted": restricted,
        "officer": {
            "name": officer_name,
            "unit": None,
            "email": _telecom(officer, "email"),
            "phone": _telecom(officer, "phone"),
        },
    }
    if concern_id is not None:
        record_out["concern_id"] = concern_id
    names = {
        ref: officer_name
        for ref, (kind, rid) in people.items()
        if kind == "Practitioner" and rid == officer.get("id")
    }
    assessments = [
        _risk_assessment(resource, rpath, people, names)
        for rpath, resource in by_type.get("RiskAssessment", [])
    ]
    if assessments:
        record_out["risk_assessments"] = [a for a, _ in assessments]
        _check_risk(record_out, [p for _, p in assessments])
    return record_out


# --------------------------------------------------------------------------- out


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _person_out(subject: Mapping[str, Any]) -> dict[str, Any]:
    identifiers = []
    if subject.get("nhs_number"):
        identifiers.append({"system": NHS_NUMBER_SYSTEM, "value": subject["nhs_number"]})
    if subject.get("police_person_id"):
        identifiers.append({"system": POLICE_PERSON_SYSTEM, "value": subject["police_person_id"]})
    if subject.get("school_urn"):
        identifiers.append({"system": SCHOOL_URN_SYSTEM, "value": subject["school_urn"]})
    person: dict[str, Any] = {
        "id": subject["subject_ref"],
        "name": [{"given": [subject["given_name"]], "family": subject["family_name"]}],
    }
    if identifiers:
        person["identifier"] = identifiers
    if subject.get("date_of_birth"):
        person["birthDate"] = _iso(subject["date_of_birth"])
    if subject.get("phone"):
        person["telecom"] = [{"system": "phone", "value": subject["phone"]}]
    address = subject.get("address")
    if address:
        lines = [address["line1"]] + ([address["line2"]] if address.get("line2") else [])
        out: dict[str, Any] = {
            "line": lines,
            "city": address["town"],
            "postalCode": address["postcode"],
        }
        if address.get("la_code"):
            out["district"] = address["la_code"]
        person["address"] = [out]
    return person


def _risk_out(assessment: Mapping[str, Any], index: int, patient_ref: str) -> dict[str, Any]:
    """A risk assessment (``model_dump(mode="json")``) as a FHIR R4 ``RiskAssessment``."""
    extensions: list[dict[str, Any]] = []
    if f"Patient/{assessment['subject_ref']}" != patient_ref:
        extensions.append(
            {
                "url": RISK_ASSESSED_PERSON_URL,
                "valueReference": {"reference": f"RelatedPerson/{assessment['subject_ref']}"},
            }
        )
    if assessment.get("dash_score") is not None:
        extensions.append({"url": RISK_DASH_SCORE_URL, "valueInteger": assessment["dash_score"]})
    if assessment.get("missing_episodes") is not None:
        extensions.append(
            {"url": RISK_MISSING_EPISODES_URL, "valueInteger": assessment["missing_episodes"]}
        )
    grade = RiskGrade(assessment["grade"])
    prediction: dict[str, Any] = {
        "qualitativeRisk": {
            "coding": [
                {"system": RISK_GRADE_SYSTEM, "code": grade.value},
                {"system": RISK_PROBABILITY_SYSTEM, "code": _HL7_GRADE_OUT[grade]},
            ]
        }
    }
    if assessment.get("rationale"):
        prediction["rationale"] = assessment["rationale"]
    method: dict[str, Any] = {
        "coding": [
            {
                "system": RISK_METHOD_SYSTEM,
                "code": str(assessment.get("method") or "PROFESSIONAL_JUDGEMENT"),
            }
        ]
    }
    if assessment.get("tool_name"):
        method["text"] = assessment["tool_name"]
    resource: dict[str, Any] = {"resourceType": "RiskAssessment", "id": f"risk{index + 1}"}
    if extensions:
        resource["extension"] = extensions
    resource.update(
        status="final",
        method=method,
        subject={"reference": patient_ref},
        occurrenceDateTime=_iso(assessment["assessed_at"]),
        performer={"display": assessment["assessed_by"]},
    )
    if assessment.get("factors"):
        resource["reasonCode"] = [
            {"coding": [{"system": RISK_FACTOR_SYSTEM, "code": str(factor)}]}
            for factor in assessment["factors"]
        ]
    resource["prediction"] = [prediction]
    return resource


def concern_to_bundle(concern: Mapping[str, Any], kind: str = "Flag") -> dict[str, Any]:
    """A FHIR R4 Bundle (type collection) for a concern (``ConcernModel.model_dump()``)."""
    entries: list[dict[str, Any]] = []
    patient_ref = ""
    for subject in concern["subjects"]:
        person = _person_out(subject)
        role = SubjectRole(subject["role"])
        if role is SubjectRole.CHILD and not patient_ref:
            person["resourceType"] = "Patient"
            patient_ref = f"Patient/{person['id']}"
        else:
            system = _PERPETRATOR_SYSTEM if role is SubjectRole.ALLEGED_PERPETRATOR else ROLE_SYSTEM
            person = {
                "resourceType": "RelatedPerson",
                **person,
                "patient": {"reference": "PATIENT"},
                "relationship": [{"coding": [{"system": system, "code": _ROLE_OUT[role]}]}],
            }
        entries.append(person)
    for entry in entries:
        if entry.get("patient") == {"reference": "PATIENT"}:
            entry["patient"] = {"reference": patient_ref}
    officer = concern["officer"]
    given, _, family = officer["name"].rpartition(" ")
    telecom = [
        {"system": system, "value": officer[field]}
        for system, field in (("email", "email"), ("phone", "phone"))
        if officer.get(field)
    ]
    practitioner: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": "reporter",
        "name": [{"given": [given or officer["name"]], "family": family or officer["name"]}],
    }
    if telecom:
        practitioner["telecom"] = telecom
    entries.append(practitioner)
    type_coding = {"coding": [{"system": CONCERN_TYPE_SYSTEM, "code": concern["concern_type"]}]}
    grade = {"coding": [{"system": RISK_GRADE_SYSTEM, "code": concern["risk_grade"]}]}
    occurred = _iso(concern["occurred_at"])
    resource: dict[str, Any] = {"resourceType": kind, "id": "concern", "category": [grade]}
    if kind == "Flag":
        resource.update(
            status="active",
            code={**type_coding, "text": concern["narrative"]},
            subject={"reference": patient_ref},
            period={"start": occurred},
            author={"reference": "Practitioner/reporter"},
        )
    elif kind == "Observation":
        resource.update(
            status="final",
            code=type_coding,
            subject={"reference": patient_ref},
            effectiveDateTime=occurred,
            valueString=concern["narrative"],
            performer=[{"reference": "Practitioner/reporter"}],
        )
    else:
        resource.update(
            status="completed",
            reasonCode=[type_coding],
            subject={"reference": patient_ref},
            sent=occurred,
            sender={"reference": "Practitioner/reporter"},
            payload=[{"contentString": concern["narrative"]}],
        )
    if concern.get("immediate_actions") and kind != "Flag":
        resource["note"] = [{"text": concern["immediate_actions"]}]
    entries.append(resource)
    for index, assessment in enumerate(concern.get("risk_assessments") or ()):
        entries.append(_risk_out(assessment, index, patient_ref))
    consent = concern["consent"]
    if consent["state"] in ("GIVEN", "REFUSED", "WITHDRAWN"):
        state = consent["state"]
        record: dict[str, Any] = {
            "resourceType": "Consent",
            "id": "consent",
            "status": "inactive" if state == "WITHDRAWN" else "active",
            "scope": {"coding": [{"system": _CONSENT_SCOPE, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": _LOINC, "code": "59284-0"}]}],
            "patient": {"reference": patient_ref},
            "dateTime": _iso(consent["recorded_at"]),
            "provision": {"type": "deny" if state == "REFUSED" else "permit"},
        }
        if consent.get("reason"):
            record["policyRule"] = {"text": consent["reason"]}
        entries.append(record)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": concern["concern_id"],
        "identifier": {"system": SOURCE_REF_SYSTEM, "value": concern["source_ref"]},
        "type": "collection",
        "timestamp": _iso(concern["reported_at"]),
        "entry": [{"fullUrl": _full_url(r), "resource": r} for r in entries],
    }
    if concern.get("restricted"):
        bundle["meta"] = {"security": [{"system": CONFIDENTIALITY_SYSTEM, "code": "R"}]}
    return bundle


def _full_url(resource: Mapping[str, Any]) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, resource['resourceType'] + resource['id'])}"


_CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
_LOINC = "http://loinc.org"


def disclosure_to_communication(
    disclosure: Mapping[str, Any], payload: Mapping[str, Any]
) -> dict[str, Any]:
    """A disclosure (clear metadata + decrypted minimised payload) as a FHIR R4 Communication.

    ``payload`` is what the recipient's profile allowed; it travels as the
    Communication's text payload (JSON), its coded metadata as reasonCode and
    category, and the ids as identifiers, so the recipient deduplicates on them.
    """
    import json

    metadata = {k: _iso(v) if isinstance(v, date) else v for k, v in disclosure.items()}
    reason = [{"coding": [{"system": CONCERN_TYPE_SYSTEM, "code": metadata["concern_type"]}]}]
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "id": str(metadata["disclosure_id"]),
        "identifier": [
            {"system": DISCLOSURE_ID_SYSTEM, "value": metadata["disclosure_id"]},
            {
                "system": "https://safer-exchange.example/fhir/Id/concern-id",
                "value": metadata["concern_id"],
            },
        ],
        "status": "completed",
        "category": [{"coding": [{"system": RISK_GRADE_SYSTEM, "code": metadata["risk_grade"]}]}],
        "reasonCode": reason,
        "recipient": [{"display": str(metadata["recipient_id"])}],
        "sender": {"display": "SAFER Exchange router"},
        "payload": [
            {
                "contentString": json.dumps(
                    dict(payload), sort_keys=True, default=_iso, ensure_ascii=False
                )
            }
        ],
        "note": [
            {
                "text": f"lawful basis {metadata.get('lawful_basis')}; purpose "
                f"{metadata.get('purpose')}; profile {metadata.get('profile')}"
            }
        ],
    }
    if metadata.get("decided_at"):
        communication["sent"] = metadata["decided_at"]
    return communication


def consent_to_fhir(record: ConsentRecord) -> dict[str, Any]:
    """A consent record as a FHIR R4 ``Consent``.

    The person is named only by pseudonym (an identifier in our system), as
    everywhere outside an encrypted payload; the recording agency is the
    organization, and who decided is the performer. ``provision.type`` is deny
    for REFUSED and WITHDRAWN, else permit; our state, and the NOT_SOUGHT
    reason or OVERRIDDEN justification, are codings of ``policyRule``.
    """
    state = record.state.value
    codings = [{"system": CONSENT_STATE_SYSTEM, "code": state}]
    if record.not_sought_reason is not None:
        codings.append({"system": _NOT_SOUGHT_SYSTEM, "code": record.not_sought_reason.value})
    if record.justification is not None:
        codings.append({"system": _JUSTIFICATION_SYSTEM, "code": record.justification.value})
    provision: dict[str, Any] = {"type": "deny" if state in ("REFUSED", "WITHDRAWN") else "permit"}
    if record.expires_at is not None:
        provision["period"] = {"end": _iso(record.expires_at)}
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "id": record.consent_record_id,
        "status": "inactive" if state in ("WITHDRAWN", "EXPIRED") else "active",
        "scope": {"coding": [{"system": _CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": _LOINC, "code": "59284-0"}]}],
        "patient": {
            "identifier": {"system": SUBJECT_PSEUDONYM_SYSTEM, "value": record.subject_pseudonym}
        },
        "dateTime": _iso(record.recorded_at),
        "performer": [{"display": record.decided_by}],
        "organization": [{"identifier": {"system": AGENCY_SYSTEM, "value": record.agency_id}}],
        "policyRule": {"coding": codings},
        "provision": provision,
    }
    if record.source_ref:
        consent["identifier"] = [{"system": SOURCE_REF_SYSTEM, "value": record.source_ref}]
    return consent


def consents_bundle(records: Sequence[ConsentRecord]) -> dict[str, Any]:
    """A FHIR R4 Bundle (collection) of ``consent_to_fhir`` resources."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _iso(datetime.now(UTC)),
        "entry": [{"fullUrl": _full_url(c), "resource": c} for c in map(consent_to_fhir, records)],
    }


CONSENT_STATE_SYSTEM = "https://safer-exchange.example/fhir/CodeSystem/consent-state"
SUBJECT_PSEUDONYM_SYSTEM = "https://safer-exchange.example/fhir/Id/subject-pseudonym"
AGENCY_SYSTEM = "https://safer-exchange.example/fhir/Id/agency"
_NOT_SOUGHT_SYSTEM = "https://safer-exchange.example/fhir/CodeSystem/not-sought-reason"
_JUSTIFICATION_SYSTEM = "https://safer-exchange.example/fhir/CodeSystem/override-justification"
