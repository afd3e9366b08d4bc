"""Free text is minimised for every recipient (issue 11, point 3).

An alleged perpetrator's name once reached the health team and a school through
the child's own words (``voice_of_child.said``): free text was scrubbed only of
third-party-protected people. Now every person, and every identifying part of a
person, that a recipient's profile leaves out is redacted from every free-text
field that recipient may see.

Table-driven over every shipped profile and every subject role, then over one
recipient of every agency type through ``decide()``. Pure: the only I/O is
reading the shipped policy and directory as text.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from consent import (
    Deny,
    Directory,
    PolicySet,
    Profile,
    decide,
    minimise,
    parse_directory,
    parse_policy,
)
from consent._minimise import FREE_TEXT_PATHS, REDACTED
from schemas import AgencyType, ConcernModel, SubjectRole

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

# The child is always visible to every recipient that gets any subject at all.
CHILD = {"given": "Mia", "family": "Thornbury"}
# The person under test, by role. Distinctive values, each checked separately.
OTHER = {
    "given": "Dorian",
    "family": "Quennell",
    "nhs": "4857773456",
    "police": "HC-P-3047719",
    "phone": "07700 900123",
    "line1": "3 Tamarisk Walk",
    "line2": "Flat 2",
    "postcode": "PO4 8QT",
}
# How each kind of text is written in the prose: with other spacing and case, as
# officers write. The values checked for absence are the canonical ones too.
WRITTEN = {
    "full_name": "dorian  QUENNELL",
    "family_name": "Quennell",
    "given_name": "Dorian",
    "nhs_number": "485 777 3456",
    "police_person_id": "HC-P-3047719",
    "phone": "07700-900-123",
    "address_line": "3 Tamarisk Walk",
    "postcode": "PO48QT",
}
# What must not survive for each kind (each spelling a reader could search for).
NEEDLES = {
    "full_name": ["dorian  quennell", "dorian quennell"],
    "family_name": ["quennell"],
    "given_name": ["dorian"],
    "nhs_number": ["485 777 3456", "4857773456"],
    "police_person_id": ["hc-p-3047719"],
    "phone": ["07700-900-123", "07700 900123", "07700900123"],
    "address_line": ["tamarisk"],
    "postcode": ["po48qt", "po4 8qt"],
}
# Which profile paths make each kind visible for a visible person.
SHARED_BY = {
    "full_name": ("subjects.given_name", "subjects.family_name"),
    "family_name": ("subjects.family_name",),
    "given_name": ("subjects.given_name",),
    "nhs_number": ("subjects.nhs_number",),
    "police_person_id": ("subjects.police_person_id",),
    "phone": ("subjects.phone",),
    "address_line": ("subjects.address",),
    "postcode": ("subjects.address",),
}


def _prose() -> str:
    return (
        f"{WRITTEN['full_name']} came home. Later {WRITTEN['family_name']} shouted; "
        f"{CHILD['given']} hid from {WRITTEN['given_name']}. NHS {WRITTEN['nhs_number']}, "
        f"ref {WRITTEN['police_person_id']}, tel {WRITTEN['phone']}, "
        f"{WRITTEN['address_line']}, {OTHER['line2']}, {WRITTEN['postcode']}."
    )


def _concern(role: SubjectRole, **extra: Any) -> ConcernModel:
    other: dict[str, Any] = {
        "subject_ref": "S2",
        "role": role.value,
        "given_name": OTHER["given"],
        "family_name": OTHER["family"],
        "date_of_birth": "1990-03-04" if role is not SubjectRole.SIBLING else "2014-02-02",
        "nhs_number": OTHER["nhs"],
        "police_person_id": OTHER["police"],
        "phone": OTHER["phone"],
        "address": {
            "line1": OTHER["line1"],
            "line2": OTHER["line2"],
            "town": "Portsmouth",
            "postcode": OTHER["postcode"],
            "la_code": "E06000044",
        },
    }
    if role is SubjectRole.CHILD:
        other["date_of_birth"] = "2012-05-05"
    record: dict[str, Any] = {
        "concern_id": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
        "source_agency": "hampshire-constabulary",
        "source_ref": "44260012345",
        "reported_at": "2026-11-23T23:10:00+00:00",
        "occurred_at": "2026-11-23T22:40:00+00:00",
        "concern_type": "DOMESTIC_ABUSE",
        "risk_grade": "HIGH",
        "subjects": [
            {
                "subject_ref": "S1",
                "role": "CHILD",
                "given_name": CHILD["given"],
                "family_name": CHILD["family"],
                "date_of_birth": "2017-06-01",
                "nhs_number": "9434765919",
                "school_urn": "116439",
                "address": {
                    "line1": "12 Bramble Close",
                    "town": "Eastleigh",
                    "postcode": "SO50 5AA",
                    "la_code": "E10000014",
                },
            },
            other,
        ],
        "incident_location": {"description": f"outside {_prose()}", "la_code": "E10000014"},
        "child_present": True,
        "voice_of_child": {"said": _prose(), "observed": _prose()},
        "narrative": _prose(),
        "immediate_actions": _prose(),
        "consent": {
            "state": "NOT_SOUGHT",
            "reason": _prose(),
            "recorded_by": "PC 1234",
            "recorded_at": "2026-11-23T23:00:00+00:00",
        },
        "officer": {"name": "PC Alex Morgan", "email": "alex.morgan@police.example.uk"},
    }
    record.update(extra)
    return ConcernModel.model_validate(record)


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    files = sorted((ROOT / "deploy" / "policy").glob("*.toml"))
    return parse_policy({f"deploy/policy/{p.name}": p.read_text(encoding="utf-8") for p in files})


@pytest.fixture(scope="module")
def directory() -> Directory:
    text = (ROOT / "deploy" / "directory.toml").read_text(encoding="utf-8")
    return parse_directory(text, "deploy/directory.toml")


def _shared_texts(data: dict[str, Any]) -> list[str]:
    texts = []
    for path in FREE_TEXT_PATHS:
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            texts.append(node)
    return texts


def _visible_kinds(profile: Profile, role: SubjectRole, withheld: bool) -> set[str]:
    if withheld or role not in profile.subject_roles:
        return set()
    fields = set(profile.fields)
    if "subjects" in fields:
        return set(SHARED_BY)
    return {
        kind
        for kind, paths in SHARED_BY.items()
        if all(any(f == p or f.startswith(p + ".") for f in fields) for p in paths)
    }


SHIPPED_PROFILES = [
    "safeguarding-full",
    "encompass-notification",
    "encompass-ehe-notification",
    "health-safeguarding",
    "youth-justice",
    "adult-safeguarding",
]


def test_every_shipped_profile_is_in_the_table(policy: PolicySet) -> None:
    assert sorted(p.name for p in policy.profiles) == sorted(SHIPPED_PROFILES)


@pytest.mark.parametrize("withheld", [False, True], ids=["in-profile-roles", "protected"])
@pytest.mark.parametrize("role", list(SubjectRole), ids=lambda r: r.value)
@pytest.mark.parametrize("profile_name", SHIPPED_PROFILES)
def test_free_text_keeps_only_what_the_profile_shares(
    policy: PolicySet, profile_name: str, role: SubjectRole, withheld: bool
) -> None:
    profile = policy.profile(profile_name)
    concern = _concern(role, third_party_protection=["S2"] if withheld else [])
    payload = minimise(concern, profile, ("S2",) if withheld else ())
    texts = _shared_texts(payload.data)
    visible = _visible_kinds(profile, role, withheld)
    hidden = set(NEEDLES) - visible
    lowered = " ".join(texts).lower()
    for kind in hidden:
        for needle in NEEDLES[kind]:
            assert needle not in lowered, f"{kind} leaked to {profile_name}"
    if texts and hidden:
        assert REDACTED in " ".join(texts)
        assert payload.redactions, "a redaction must be recorded"
        (redaction,) = payload.redactions
        assert redaction.subject_ref == "S2" and redaction.role == role.value
        # The reason says who (by reference) and what kind, never the value.
        reason = " ".join(payload.redaction_reasons).lower()
        for needles in NEEDLES.values():
            for needle in needles:
                assert needle not in reason
        assert "S2" in payload.redaction_reasons[0]
    if not texts:
        assert payload.redactions == ()
    # Kinds the profile shares stay readable in the prose, as in the structured data.
    if texts and "full_name" in visible:
        assert "dorian  QUENNELL" in texts[0]
    if texts and "nhs_number" in visible:
        assert WRITTEN["nhs_number"] in texts[0]
    # The child the recipient may see keeps their name in the prose.
    if texts and ("subjects.given_name" in profile.fields or "subjects" in profile.fields):
        assert any(CHILD["given"] in t for t in texts)


def test_visible_child_keeps_a_shared_family_name(policy: PolicySet) -> None:
    """A hidden parent's family name is cut, but not out of the visible child's name."""
    concern = _concern(
        SubjectRole.ALLEGED_PERPETRATOR,
        narrative="Mia Thornbury said Mr Thornbury and Dorian Thornbury argued.",
    )
    subjects = [s.model_copy(update={"family_name": "Thornbury"}) for s in concern.subjects]
    concern = concern.model_copy(update={"subjects": tuple(subjects)})
    payload = minimise(concern, policy.profile("adult-safeguarding"), ("S2",))
    assert payload.data["narrative"] == (f"Mia Thornbury said Mr {REDACTED} and {REDACTED} argued.")


def test_a_forename_shared_with_a_visible_person_is_kept(policy: PolicySet) -> None:
    """Forenames alone are redacted only where unambiguous."""
    concern = _concern(SubjectRole.ALLEGED_PERPETRATOR)
    subjects = [
        concern.subjects[0].model_copy(update={"given_name": "Dorian"}),
        concern.subjects[1],
    ]
    concern = concern.model_copy(
        update={
            "subjects": tuple(subjects),
            "voice_of_child": None,
            "narrative": "Dorian Quennell shouted at Dorian Thornbury. Dorian cried.",
        }
    )
    payload = minimise(concern, policy.profile("safeguarding-full"), ("S2",))
    assert payload.data["narrative"] == (f"{REDACTED} shouted at Dorian Thornbury. Dorian cried.")


def test_unshared_free_text_records_no_redaction(policy: PolicySet) -> None:
    concern = _concern(SubjectRole.ALLEGED_PERPETRATOR, voice_of_child=None)
    # The school gets no narrative and, here, no voice of the child: nothing to scrub.
    concern = concern.model_copy(update={"incident_location": None})
    payload = minimise(concern, policy.profile("encompass-notification"), ())
    assert _shared_texts(payload.data) == []
    assert payload.redactions == ()


def test_redaction_is_deterministic(policy: PolicySet) -> None:
    concern = _concern(SubjectRole.ALLEGED_PERPETRATOR)
    profile = policy.profile("health-safeguarding")
    first = minimise(concern, profile, ())
    second = minimise(concern, profile, ())
    assert first.canonical_bytes() == second.canonical_bytes()
    assert first.redactions == second.redactions


# One recipient of every agency type, through decide(): the reported leak, end to end.
RECIPIENT_OF_TYPE = {
    AgencyType.CHILDRENS_SOCIAL_CARE: "hampshire-csc",
    AgencyType.HEALTH: "hampshire-health",
    AgencyType.EDUCATION: "school-116439",
    AgencyType.LA_EDUCATION: "hampshire-la-education",
    AgencyType.YOUTH_JUSTICE: "hampshire-yjs",
    AgencyType.ADULT_SOCIAL_CARE: "hampshire-adult-safeguarding",
}


def test_every_recipient_type_is_in_the_table() -> None:
    assert set(RECIPIENT_OF_TYPE) == set(AgencyType) - {AgencyType.POLICE}


@pytest.mark.parametrize("role", list(SubjectRole), ids=lambda r: r.value)
@pytest.mark.parametrize("agency_type", list(RECIPIENT_OF_TYPE), ids=lambda a: a.value)
def test_no_recipient_reads_a_person_its_profile_leaves_out(
    policy: PolicySet, directory: Directory, agency_type: AgencyType, role: SubjectRole
) -> None:
    recipient = directory.recipient(RECIPIENT_OF_TYPE[agency_type])
    assert recipient is not None
    # Make the child one this recipient's agreement covers.
    child_update: dict[str, Any] = {
        AgencyType.LA_EDUCATION: {"home_educated": True, "school_urn": None},
        # Youth justice works with children aged 10 to 17.
        AgencyType.YOUTH_JUSTICE: {"date_of_birth": date(2011, 1, 1)},
        # A young adult (18-24) at risk: the adult-at-risk basis applies.
        AgencyType.ADULT_SOCIAL_CARE: {"date_of_birth": date(2005, 1, 1)},
    }.get(agency_type, {})
    base = _concern(role)
    subjects = [base.subjects[0].model_copy(update=child_update), base.subjects[1]]
    extra: dict[str, Any] = {"subjects": [s.model_dump(mode="json") for s in subjects]}
    if agency_type is AgencyType.YOUTH_JUSTICE:
        extra["concern_type"] = "YOUTH_OFFENDING"
    concern = _concern(role, **extra)
    decision = decide(concern, recipient, policy, concern.consent.state, NOW)
    if isinstance(decision, Deny):
        pytest.fail(f"{recipient.id}: expected a share, got {decision.reason}: {decision.reasons}")
    payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
    visible = _visible_kinds(decision.profile, role, withheld=False)
    if role is SubjectRole.CHILD:
        # A second child is visible only to a recipient responsible for them.
        visible = visible if "S2" not in decision.withheld_subject_refs else set()
    blob = json.dumps(_shared_texts(payload.data)).lower()
    for kind in set(NEEDLES) - visible:
        for needle in NEEDLES[kind]:
            assert needle not in blob, f"{kind} of a {role.value} leaked to {recipient.id}"


def test_one_recipients_scrubbing_never_reaches_anothers_payload(policy: PolicySet) -> None:
    """A concern is prepared once and minimised for each recipient in turn."""
    concern = _concern(SubjectRole.ALLEGED_PERPETRATOR)
    assert concern.voice_of_child is not None
    original = concern.voice_of_child.said
    school = minimise(concern, policy.profile("encompass-notification"), ())
    assert REDACTED in school.data["voice_of_child"]["said"]
    full = minimise(concern, policy.profile("safeguarding-full"), ())
    assert full.data["voice_of_child"]["said"] == original
    assert minimise(concern, policy.profile("encompass-notification"), ()).data == school.data
