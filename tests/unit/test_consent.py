"""consent/: directory and policy parsing, decide(), minimise(), minimum dataset, purity.

Pure tests: the only I/O is reading deploy/directory.toml and deploy/policy/*.toml
as text in fixtures.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from consent import (
    LAWFUL_BASES,
    Consent,
    Decision,
    Deny,
    Directory,
    Permit,
    PolicySet,
    Recipient,
    Refer,
    decide,
    minimise,
    missing_minimum_dataset,
    parse_directory,
    parse_policy,
)
from schemas import (
    AgencyType,
    ConcernModel,
    ConcernType,
    ConsentState,
    Lscp,
    OverrideJustification,
    PolicyError,
    ReasonCode,
    RiskGrade,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
CONCERN_ID = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"

# Synthetic people. Their names must never appear in reasons or logs, and a withheld
# person's name never in a minimised payload.
CHILD_NAME = ("Mia", "Thornbury")
MOTHER_NAME = ("Jade", "Thornbury")
PERPETRATOR_NAME = ("Dean", "Kessler")
PROTECTED_NAME = ("Rosa", "Quillfeather")
NARRATIVE = (
    "Officers attended after a neighbour reported shouting. Dean Kessler had assaulted "
    "Jade Thornbury in the kitchen. Rosa Quillfeather, who now lives at 7 Larkspur Row, "
    "SO16 4QQ, had taken the children in earlier that week."
)
PII = [*CHILD_NAME, *MOTHER_NAME, *PERPETRATOR_NAME, *PROTECTED_NAME, "Larkspur", "SO16 4QQ"]


# ---------------------------------------------------------------- fixtures and factory


@pytest.fixture(scope="module")
def policy_files() -> dict[str, str]:
    files = sorted((ROOT / "deploy" / "policy").glob("*.toml"))
    assert files, "deploy/policy/*.toml is missing"
    return {f"deploy/policy/{p.name}": p.read_text(encoding="utf-8") for p in files}


@pytest.fixture(scope="module")
def policy(policy_files: dict[str, str]) -> PolicySet:
    return parse_policy(policy_files)


@pytest.fixture(scope="module")
def directory() -> Directory:
    text = (ROOT / "deploy" / "directory.toml").read_text(encoding="utf-8")
    return parse_directory(text, "deploy/directory.toml")


def dob_for_age(age: int) -> str:
    return date(NOW.year - age, 6, 1).isoformat()


def child(ref: str = "S1", age: int | None = 9, **extra: Any) -> dict[str, Any]:
    subject: dict[str, Any] = {
        "subject_ref": ref,
        "role": "CHILD",
        "given_name": CHILD_NAME[0],
        "family_name": CHILD_NAME[1],
        "date_of_birth": dob_for_age(age) if age is not None else None,
        "nhs_number": "9434765919",
        "address": {
            "line1": "12 Bramble Close",
            "town": "Eastleigh",
            "postcode": "SO50 5AA",
            "la_code": "E10000014",
        },
        "school_urn": "116439",
    }
    subject.update(extra)
    return subject


def adult(ref: str, role: str, name: tuple[str, str], **extra: Any) -> dict[str, Any]:
    subject: dict[str, Any] = {
        "subject_ref": ref,
        "role": role,
        "given_name": name[0],
        "family_name": name[1],
        "date_of_birth": "1990-03-04",
    }
    subject.update(extra)
    return subject


def make_concern(
    *,
    concern_type: str = "DOMESTIC_ABUSE",
    risk: str = "MEDIUM",
    consent: str = "NOT_SOUGHT",
    subjects: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> ConcernModel:
    record: dict[str, Any] = {
        "concern_id": CONCERN_ID,
        "source_agency": "hampshire-constabulary",
        "source_ref": "44260012345",
        "reported_at": "2026-11-23T23:10:00+00:00",
        "occurred_at": "2026-11-23T22:40:00+00:00",
        "concern_type": concern_type,
        "risk_grade": risk,
        "subjects": subjects
        if subjects is not None
        else [
            child(),
            adult("S2", "PARENT_CARER", MOTHER_NAME),
            adult("S3", "ALLEGED_PERPETRATOR", PERPETRATOR_NAME, police_person_id="HC-0099"),
        ],
        "incident_location": {
            "description": "family home, kitchen",
            "postcode": "SO50 5AA",
            "la_code": "E10000014",
        },
        "child_present": True,
        "voice_of_child": {"said": "I hid upstairs", "observed": "quiet, flinched at noise"},
        "narrative": NARRATIVE,
        "immediate_actions": "Dean Kessler arrested; safety plan agreed with Jade Thornbury",
        "consent": {
            "state": consent,
            "recorded_by": "PC 1234",
            "recorded_at": "2026-11-23T23:00:00+00:00",
        },
        "officer": {
            "name": "PC Alex Morgan",
            "collar_number": "1234",
            "email": "alex.morgan@police.example.uk",
        },
    }
    record.update(extra)
    return ConcernModel.model_validate(record)


def run(
    concern: ConcernModel,
    recipient: Recipient,
    policy: PolicySet,
    state: ConsentState | None = None,
    **kw: Any,
) -> Decision:
    return decide(concern, recipient, policy, state or concern.consent.state, NOW, **kw)


def rec(directory: Directory, recipient_id: str) -> Recipient:
    found = directory.recipient(recipient_id)
    assert found is not None, recipient_id
    return found


def assert_no_pii(texts: Any) -> None:
    blob = json.dumps(texts, default=str)
    for word in [*PII, NARRATIVE[:30], "I hid upstairs", "Bramble"]:
        assert word not in blob, f"personal data {word!r} leaked into {blob[:200]}"


# ---------------------------------------------------------------- directory


def test_directory_loads_with_one_front_door_per_partnership(directory: Directory) -> None:
    for lscp in Lscp:
        door = directory.front_door(lscp)
        assert door.agency_type is AgencyType.CHILDRENS_SOCIAL_CARE and door.front_door
        assert door in directory.for_lscp(lscp)
        assert {r.lscp for r in directory.for_lscp(lscp)} == {lscp}
    school = directory.school("116439")
    assert school is not None and school.id == "school-116439"
    assert directory.school("999999") is None
    publisher = directory.publisher("hampshire-constabulary")
    assert publisher is not None and publisher.agency_type is AgencyType.POLICE
    assert directory.publisher("nobody") is None
    assert directory.recipient("nobody") is None


_DOOR = """
[[recipient]]
id = "{lscp}-csc"
lscp = "{lscp}"
agency_type = "social-care"
name = "Front door"
front_door = true
"""


def _doors(skip: str = "") -> str:
    return "".join(_DOOR.format(lscp=lscp.value) for lscp in Lscp if lscp.value != skip)


def test_directory_error_names_file_entry_and_field() -> None:
    text = _doors() + '[[recipient]]\nid = "x-health"\nlscp = "wessex"\n'
    text += 'agency_type = "health"\nname = "Health"\n'
    with pytest.raises(PolicyError) as info:
        parse_directory(text, "deploy/directory.toml")
    message = str(info.value)
    assert "deploy/directory.toml" in message
    assert "recipient 'x-health'" in message
    assert "field 'lscp'" in message
    assert info.value.code is ReasonCode.CONFIG_INVALID


def test_directory_rejects_duplicate_ids_and_missing_front_door() -> None:
    dup = _doors() + _DOOR.format(lscp="hampshire").replace("front_door = true", "")
    with pytest.raises(PolicyError, match="'hampshire-csc': duplicate id"):
        parse_directory(dup, "dir.toml")
    with pytest.raises(PolicyError, match="partnership 'portsmouth': field 'front_door'"):
        parse_directory(_doors(skip="portsmouth"), "dir.toml")
    with pytest.raises(PolicyError, match=re.escape("dir.toml: not valid TOML")):
        parse_directory("[[recipient", "dir.toml")


def test_directory_school_needs_urn() -> None:
    text = _doors() + '[[recipient]]\nid = "school-x"\nlscp = "hampshire"\n'
    text += 'agency_type = "education"\nname = "School"\n'
    with pytest.raises(PolicyError, match=r"recipient 'school-x'.*needs school_urn"):
        parse_directory(text, "dir.toml")


# ---------------------------------------------------------------- policy parsing


def test_policy_files_hold_the_expected_agreements(policy: PolicySet) -> None:
    ids = [a.id for a in policy.agreements]
    assert ids == sorted(ids)
    assert set(ids) == {
        "police-asc-young-adult-at-risk",
        "police-asc-young-adult-consent",
        "police-csc-front-door",
        "police-csc-young-adult-care-leaver",
        "police-health-early-years",
        "police-health-safeguarding",
        "police-la-education-ehe",
        "police-school-encompass",
        "police-yjs",
    }
    assert policy.revision.startswith("sha256:") and len(policy.revision) == 7 + 64
    for agreement in policy.agreements:
        assert all(b in LAWFUL_BASES for b in agreement.lawful_bases)
        assert policy.profile(agreement.profile).name == agreement.profile


def test_policy_revision_tracks_content_not_file_layout(policy_files: dict[str, str]) -> None:
    first = parse_policy(policy_files)
    assert parse_policy(dict(reversed(list(policy_files.items())))).revision == first.revision
    merged = {"all.toml": "\n".join(policy_files.values())}
    assert parse_policy(merged).revision == first.revision
    changed = dict(policy_files)
    name = "deploy/policy/police-to-health.toml"
    changed[name] = changed[name].replace('retention = "P25Y"', 'retention = "P24Y"')
    assert parse_policy(changed).revision != first.revision


def test_policy_revision_is_computed_not_chosen(policy: PolicySet) -> None:
    again = PolicySet.model_validate(policy.model_dump())
    assert again.revision == policy.revision
    forged = {**policy.model_dump(), "revision": "sha256:" + "0" * 64}
    with pytest.raises(ValueError, match="revision does not match"):
        PolicySet.model_validate(forged)


def test_bad_policy_error_names_file_agreement_and_field(policy_files: dict[str, str]) -> None:
    name = "deploy/policy/police-to-schools.toml"
    broken = dict(policy_files)
    broken[name] = broken[name].replace('min_risk_grade = "LOW"', 'min_risk_grade = "AMBER"')
    with pytest.raises(PolicyError) as info:
        parse_policy(broken)
    assert (
        "deploy/policy/police-to-schools.toml: agreement 'police-school-encompass': "
        "field 'min_risk_grade': Input should be 'HIGH', 'MEDIUM' or 'LOW'"
    ) in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'profile = "youth-justice"',
            'profile = "nope"',
            "field 'profile': unknown profile 'nope'",
        ),
        (
            '"CDA1998-S115",',
            '"MADE-UP-1",',
            "field 'lawful_bases': unknown lawful basis id(s) MADE-UP-1",
        ),
        ('retention = "P6Y"', 'retention = "6 years"', "field 'retention'"),
        ('consent_rule = "overridable_at_risk"', 'consent_rule = "maybe"', "field 'consent_rule'"),
        ("min_age = 10", "min_age = 10\ncolour = 1", "field 'colour': Extra inputs"),
    ],
)
def test_policy_reference_errors(
    policy_files: dict[str, str], old: str, new: str, expected: str
) -> None:
    name = "deploy/policy/police-to-youth-justice.toml"
    broken = dict(policy_files)
    assert old in broken[name]
    broken[name] = broken[name].replace(old, new)
    with pytest.raises(PolicyError) as info:
        parse_policy(broken)
    assert f"{name}: agreement 'police-yjs': {expected}" in str(info.value)


def test_policy_duplicate_ids_and_bad_profile_paths(policy_files: dict[str, str]) -> None:
    dup = dict(policy_files)
    dup["deploy/policy/zz-copy.toml"] = dup["deploy/policy/police-to-youth-justice.toml"]
    with pytest.raises(
        PolicyError, match=re.escape("zz-copy.toml: agreement 'police-yjs': field 'id'")
    ):
        parse_policy(dup)
    bad = dict(policy_files)
    name = "deploy/policy/profiles.toml"
    bad[name] = bad[name].replace('"subjects.nhs_number",', '"subjects.nhs_numbr",', 1)
    with pytest.raises(
        PolicyError, match=r"profile 'health-safeguarding': field 'fields'.*nhs_numbr"
    ):
        parse_policy(bad)
    with pytest.raises(PolicyError, match=re.escape("x.toml: field 'agreements'")):
        parse_policy({"x.toml": "[[agreements]]\nid = 'a'\n"})


# ---------------------------------------------------------------- rule 2: lawful basis


def test_front_door_permit_when_consent_not_sought(policy: PolicySet, directory: Directory) -> None:
    decision = run(make_concern(risk="LOW"), rec(directory, "hampshire-csc"), policy)
    assert isinstance(decision, Permit)
    assert decision.kind == "PERMIT"
    assert decision.agreement_ids == ("police-csc-front-door",)
    assert decision.profile.name == "safeguarding-full"
    assert decision.lawful_basis == "DPA18-S35+SCH8-P4"  # first listed
    assert decision.reason_codes == ()
    assert any("consent is not needed where a child is at risk" in r for r in decision.reasons)
    assert any("NOT_SOUGHT" in r for r in decision.reasons)


def test_no_agreement_for_the_parties(policy: PolicySet, directory: Directory) -> None:
    decision = run(
        make_concern(),
        rec(directory, "hampshire-csc"),
        policy,
        source_agency_type=AgencyType.HEALTH,
    )
    assert isinstance(decision, Deny) and decision.reason is ReasonCode.NO_LAWFUL_BASIS
    assert decision.reasons == ("no data-sharing agreement lets health share with social-care",)
    assert decision.agreement_ids == ()


def test_concern_type_not_covered(policy: PolicySet, directory: Directory) -> None:
    decision = run(make_concern(concern_type="NEGLECT"), rec(directory, "hampshire-yjs"), policy)
    assert isinstance(decision, Deny) and decision.reason is ReasonCode.NO_LAWFUL_BASIS
    assert "concern type NEGLECT" in decision.reasons[0]
    assert decision.agreement_ids == ("police-yjs",)


def test_encompass_goes_only_to_the_childs_school(policy: PolicySet, directory: Directory) -> None:
    concern = make_concern(risk="LOW")
    own = run(concern, rec(directory, "school-116439"), policy)
    assert isinstance(own, Permit)
    assert own.agreement_ids == ("police-school-encompass",)
    assert own.profile.name == "encompass-notification"
    assert own.lawful_basis == "DAA2021-S49A"
    other = run(concern, rec(directory, "school-116205"), policy)
    assert isinstance(other, Deny) and other.reason is ReasonCode.NO_LAWFUL_BASIS
    assert "school URN" in other.reasons[0]


def test_encompass_only_for_domestic_abuse(policy: PolicySet, directory: Directory) -> None:
    decision = run(make_concern(concern_type="NEGLECT"), rec(directory, "school-116439"), policy)
    assert isinstance(decision, Deny) and decision.reason is ReasonCode.NO_LAWFUL_BASIS


@pytest.mark.parametrize(("age", "shared"), [(3, False), (4, True), (16, True), (17, True)])
def test_encompass_school_age_4_to_17(
    policy: PolicySet, directory: Directory, age: int, shared: bool
) -> None:
    concern = make_concern(subjects=[child(age=age)])
    decision = run(concern, rec(directory, "school-116439"), policy)
    assert isinstance(decision, Permit) is shared
    if not shared:
        assert isinstance(decision, Deny)
        assert "aged 4 to 17" in decision.reasons[0]


def test_encompass_withholds_a_sibling_at_another_school(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(
        subjects=[child("S1"), child("S4", age=12, given_name="Leo", school_urn="116205")]
    )
    decision = run(concern, rec(directory, "school-116439"), policy)
    assert isinstance(decision, Permit)
    assert decision.withheld_subject_refs == ("S4",)
    payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
    assert payload.data["subjects"][1] == {
        "subject_ref": "S4",
        "role": "CHILD",
        "withheld": "third-party protection",
    }
    assert b"Leo" not in payload.canonical_bytes()


def test_home_educated_child_goes_to_la_education(policy: PolicySet, directory: Directory) -> None:
    home = make_concern(subjects=[child(school_urn=None, home_educated=True)])
    decision = run(home, rec(directory, "hampshire-la-education"), policy)
    assert isinstance(decision, Permit)
    assert decision.agreement_ids == ("police-la-education-ehe",)
    assert decision.profile.name == "encompass-ehe-notification"
    at_school = run(make_concern(), rec(directory, "hampshire-la-education"), policy)
    assert isinstance(at_school, Deny) and at_school.reason is ReasonCode.NO_LAWFUL_BASIS
    assert "home-educated" in at_school.reasons[0]


def _birthday(years_ago: int, day_offset: int) -> str:
    return date(NOW.year - years_ago, NOW.month, NOW.day + day_offset).isoformat()


def test_seventeen_is_a_child_eighteen_a_young_adult(
    policy: PolicySet, directory: Directory
) -> None:
    csc = rec(directory, "hampshire-csc")
    asc = rec(directory, "hampshire-adult-safeguarding")
    seventeen = make_concern(subjects=[child(date_of_birth=_birthday(18, 1))])  # 18 tomorrow
    eighteen = make_concern(subjects=[child(date_of_birth=_birthday(18, 0))])  # 18 today
    assert isinstance(run(seventeen, csc, policy), Permit)
    young = run(seventeen, asc, policy)
    assert isinstance(young, Deny) and young.reason is ReasonCode.NO_LAWFUL_BASIS
    assert young.summary.age_bands == ("child",)

    adult_csc = run(eighteen, csc, policy)
    assert isinstance(adult_csc, Deny) and adult_csc.reason is ReasonCode.NO_LAWFUL_BASIS
    assert any("care leaver" in r for r in adult_csc.reasons)
    adult_asc = run(eighteen, asc, policy)
    assert isinstance(adult_asc, Permit)
    assert adult_asc.agreement_ids == ("police-asc-young-adult-at-risk",)
    assert adult_asc.lawful_basis == "CA2014-S42"
    assert adult_asc.summary.age_bands == ("young_adult",)


def test_care_leaver_aged_19_goes_to_both_csc_and_adult_safeguarding(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(subjects=[child(age=19, care_leaver=True, school_urn=None)])
    csc = run(concern, rec(directory, "southampton-csc"), policy)
    assert isinstance(csc, Permit)
    assert csc.agreement_ids == ("police-csc-young-adult-care-leaver",)
    assert csc.lawful_basis == "CA1989-S23C"
    asc = run(concern, rec(directory, "southampton-adult-safeguarding"), policy)
    assert isinstance(asc, Permit)
    assert asc.agreement_ids == ("police-asc-young-adult-at-risk",)


def test_first_matching_agreement_by_id(policy: PolicySet, directory: Directory) -> None:
    concern = make_concern(
        subjects=[child("S1", age=10), child("S5", age=19, care_leaver=True, school_urn=None)]
    )
    decision = run(concern, rec(directory, "hampshire-csc"), policy)
    assert isinstance(decision, Permit)
    assert decision.agreement_ids == ("police-csc-front-door",)  # sorts before ...-young-adult-...
    assert decision.withheld_subject_refs == ()


def test_over_24_is_neither_child_nor_young_adult(policy: PolicySet, directory: Directory) -> None:
    concern = make_concern(subjects=[child(age=30)])
    for recipient_id in ("hampshire-csc", "hampshire-adult-safeguarding"):
        decision = run(concern, rec(directory, recipient_id), policy)
        assert isinstance(decision, Deny) and decision.reason is ReasonCode.NO_LAWFUL_BASIS
    assert decision.summary.age_bands == ("adult",)


def test_child_without_date_of_birth_is_taken_as_a_child(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(subjects=[child(age=None)])
    assert isinstance(run(concern, rec(directory, "hampshire-csc"), policy), Permit)
    assert isinstance(run(concern, rec(directory, "school-116439"), policy), Permit)
    asc = run(concern, rec(directory, "hampshire-adult-safeguarding"), policy)
    assert isinstance(asc, Deny)
    assert asc.summary.age_bands == ("unknown",)


def test_no_child_subject_is_no_lawful_basis(policy: PolicySet, directory: Directory) -> None:
    concern = make_concern(subjects=[adult("S2", "PARENT_CARER", MOTHER_NAME)])
    decision = run(concern, rec(directory, "hampshire-csc"), policy)
    assert isinstance(decision, Deny) and decision.reason is ReasonCode.NO_LAWFUL_BASIS
    assert "has none" in decision.reasons[0]


# ---------------------------------------------------------------- rule 1: restricted


def test_restricted_record_is_referred_to_front_door_only(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(risk="HIGH", consent="GIVEN", restricted=True)
    door = run(concern, rec(directory, "hampshire-csc"), policy)
    assert isinstance(door, Refer) and door.kind == "REFER"
    assert door.reason is ReasonCode.RESTRICTED_RECORD
    assert door.reason_codes == (ReasonCode.RESTRICTED_RECORD,)
    assert door.profile.name == "safeguarding-full"
    for recipient_id in ("hampshire-health", "school-116439", "hampshire-yjs"):
        other = run(concern, rec(directory, recipient_id), policy)
        assert isinstance(other, Deny) and other.kind == "DENY"
        assert other.reason is ReasonCode.RESTRICTED_RECORD


def test_restricted_record_without_any_basis_is_denied_at_front_door(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(subjects=[child(age=20)], restricted=True)
    decision = run(concern, rec(directory, "hampshire-csc"), policy)
    assert isinstance(decision, Deny) and decision.reason is ReasonCode.RESTRICTED_RECORD
    assert decision.reason_codes == (ReasonCode.RESTRICTED_RECORD, ReasonCode.NO_LAWFUL_BASIS)


# ---------------------------------------------------------------- rule 3: threshold


def test_below_threshold(policy: PolicySet, directory: Directory) -> None:
    decision = run(make_concern(risk="LOW"), rec(directory, "hampshire-health"), policy)
    assert isinstance(decision, Deny) and decision.reason is ReasonCode.BELOW_THRESHOLD
    assert "risk grade LOW is below the minimum MEDIUM" in decision.reasons[0]
    assert decision.agreement_ids == ("police-health-safeguarding",)
    assert isinstance(
        run(make_concern(risk="MEDIUM"), rec(directory, "hampshire-health"), policy), Permit
    )


# ---------------------------------------------------------------- rule 4: consent


def test_consent_refused_at_high_risk_is_overridden(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(risk="HIGH", consent="REFUSED")
    for recipient_id in ("hampshire-csc", "hampshire-health"):
        decision = run(concern, rec(directory, recipient_id), policy)
        assert isinstance(decision, Permit)
        assert decision.consent_state is ConsentState.REFUSED
        assert any("protecting a child takes priority over privacy" in r for r in decision.reasons)


def test_consent_refused_at_low_risk_is_referred_at_front_door(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(risk="LOW", consent="REFUSED")
    door = run(concern, rec(directory, "portsmouth-csc"), policy)
    assert isinstance(door, Refer)
    assert door.reason is ReasonCode.CONSENT_REFUSED
    assert door.reason_codes == (ReasonCode.CONSENT_REFUSED,)
    assert door.profile.name == "safeguarding-full"
    assert door.lawful_basis and door.purpose


def test_consent_refused_at_low_risk_is_denied_elsewhere(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(concern_type="YOUTH_OFFENDING", risk="LOW", consent="REFUSED")
    subjects = [child(age=15)]
    concern = concern.model_copy(update={"subjects": make_concern(subjects=subjects).subjects})
    decision = run(concern, rec(directory, "portsmouth-yjs"), policy)
    assert isinstance(decision, Deny) and decision.reason is ReasonCode.CONSENT_REFUSED
    assert decision.agreement_ids == ("police-yjs",)


@pytest.mark.parametrize("state", [ConsentState.WITHDRAWN, ConsentState.EXPIRED])
def test_consent_withdrawn_or_expired(
    policy: PolicySet, directory: Directory, state: ConsentState
) -> None:
    medium = run(make_concern(risk="MEDIUM"), rec(directory, "hampshire-csc"), policy, state)
    assert isinstance(medium, Permit)
    assert any(f"consent {state.value} overridden" in r for r in medium.reasons)
    low = run(make_concern(risk="LOW"), rec(directory, "hampshire-csc"), policy, state)
    assert isinstance(low, Refer) and low.reason is ReasonCode.CONSENT_REFUSED
    assert low.consent_state is state


def test_consent_given_permits(policy: PolicySet, directory: Directory) -> None:
    decision = run(
        make_concern(risk="LOW"), rec(directory, "hampshire-csc"), policy, ConsentState.GIVEN
    )
    assert isinstance(decision, Permit)
    assert "consent GIVEN" in decision.reasons


def test_an_override_needs_a_recorded_justification(
    policy: PolicySet, directory: Directory
) -> None:
    door = rec(directory, "hampshire-csc")
    low = make_concern(risk="LOW")
    # A bare OVERRIDDEN state says nothing about why: the refusal it claims to override
    # stands, and at LOW the front door is asked to judge.
    bare = run(low, door, policy, ConsentState.OVERRIDDEN)
    assert isinstance(bare, Refer) and bare.reason is ReasonCode.CONSENT_REFUSED
    assert any("no recorded justification" in r for r in bare.reasons)
    justified = Consent(
        state=ConsentState.OVERRIDDEN,
        justification=OverrideJustification.SIGNIFICANT_HARM,
        justified=True,
        source="consent-record",
        record_id="ab" * 16,
        recorded_at=NOW,
    )
    permit = run(low, door, policy, justified)
    assert isinstance(permit, Permit)
    assert any("SIGNIFICANT_HARM" in r for r in permit.reasons)
    assert any(f"consent record {'ab' * 16}" in r for r in permit.reasons)
    assert permit.summary.consent_source == "consent-record"
    assert permit.summary.consent_reason == "SIGNIFICANT_HARM"
    # On the concern itself, an officer's written justification counts.
    written = make_concern(
        risk="LOW",
        consent="OVERRIDDEN",
    ).model_copy()
    stated = written.model_copy(
        update={
            "consent": written.consent.model_copy(
                update={"reason": "overridden: the child is at risk of significant harm"}
            )
        }
    )
    assert isinstance(run(stated, door, policy), Permit)
    assert isinstance(run(written, door, policy), Refer)  # no reason recorded at all
    # Under a consent-required agreement an override is not consent.
    adult = make_concern(risk="LOW", subjects=[child(age=21)])
    asc = run(adult, rec(directory, "hampshire-adult-safeguarding"), policy, justified)
    assert isinstance(asc, Deny) and asc.reason is ReasonCode.CONSENT_REFUSED
    assert any("an override is not consent" in r for r in asc.reasons)


def test_consent_not_required_ignores_refusal(policy: PolicySet, directory: Directory) -> None:
    concern = make_concern(risk="LOW", consent="REFUSED")
    decision = run(concern, rec(directory, "school-116439"), policy)
    assert isinstance(decision, Permit)
    assert any("consent is not required" in r for r in decision.reasons)


def test_consent_required_young_adult(policy: PolicySet, directory: Directory) -> None:
    asc = rec(directory, "hampshire-adult-safeguarding")
    concern = make_concern(risk="LOW", subjects=[child(age=21)])
    not_sought = run(concern, asc, policy, ConsentState.NOT_SOUGHT)
    assert isinstance(not_sought, Deny) and not_sought.reason is ReasonCode.CONSENT_REFUSED
    assert "NOT_SOUGHT" in not_sought.reasons[0]
    refused = run(concern, asc, policy, ConsentState.REFUSED)
    assert isinstance(refused, Deny) and refused.reason is ReasonCode.CONSENT_REFUSED
    given = run(concern, asc, policy, ConsentState.GIVEN)
    assert isinstance(given, Permit)
    assert given.agreement_ids == ("police-asc-young-adult-consent",)


def test_first_permitting_agreement_wins(policy_files: dict[str, str]) -> None:
    # Two agreements for the same parties: the first by id needs consent, the second not.
    extra = """
[[agreement]]
id = "a-needs-consent"
title = "Needs consent"
source_agency_types = ["police"]
recipient_agency_types = ["health"]
concern_types = ["*"]
min_risk_grade = "LOW"
subject_ages = "child"
lawful_bases = ["UKGDPR-6-1-e", "UKGDPR-9-2-g+DPA18-S1-P18"]
consent_rule = "required"
profile = "health-safeguarding"
purpose = "test"
retention = "P1Y"
"""
    policy = parse_policy({**policy_files, "extra.toml": extra})
    health = Recipient("h", Lscp.HAMPSHIRE, AgencyType.HEALTH, "Health")
    refused = decide(make_concern(risk="HIGH"), health, policy, ConsentState.REFUSED, NOW)
    assert isinstance(refused, Permit)
    assert refused.agreement_ids == ("police-health-safeguarding",)
    low = decide(make_concern(risk="LOW"), health, policy, ConsentState.REFUSED, NOW)
    assert isinstance(low, Deny) and low.reason is ReasonCode.CONSENT_REFUSED
    assert low.agreement_ids == ("a-needs-consent",)


# ---------------------------------------------------------------- rule 5 and minimisation


def test_third_party_protection_withholds_subject(policy: PolicySet, directory: Directory) -> None:
    protected = adult("S9", "OTHER_ADULT", PROTECTED_NAME, police_person_id="HC-7777")
    protected["address"] = {"line1": "7 Larkspur Row", "town": "Southampton", "postcode": "SO164QQ"}
    concern = make_concern(
        risk="HIGH",
        subjects=[child(), adult("S2", "PARENT_CARER", MOTHER_NAME), protected],
        third_party_protection=("S9",),
    )
    decision = run(concern, rec(directory, "hampshire-csc"), policy)
    assert isinstance(decision, Permit)
    assert decision.withheld_subject_refs == ("S9",)
    assert any("withheld to protect third parties" in r for r in decision.reasons)
    payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
    stub = payload.data["subjects"][2]
    assert stub == {
        "subject_ref": "S9",
        "role": "OTHER_ADULT",
        "withheld": "third-party protection",
    }
    raw = payload.canonical_bytes()
    for needle in ("Rosa", "Quillfeather", "Larkspur", "SO16 4QQ", "HC-7777"):
        assert needle.encode() not in raw, needle
    assert "[withheld]" in payload.data["narrative"]
    # The rest of the narrative survives: the front door needs it.
    assert "Dean Kessler had assaulted" in payload.data["narrative"]


def test_school_profile_keeps_exactly_its_fields(policy: PolicySet, directory: Directory) -> None:
    concern = make_concern(risk="HIGH")
    decision = run(concern, rec(directory, "school-116439"), policy)
    assert isinstance(decision, Permit)
    payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
    assert set(payload.fields) <= {"concern_id", *decision.profile.fields}
    assert set(payload.data) == {
        "concern_id",
        "source_ref",
        "concern_type",
        "occurred_at",
        "incident_location",
        "subjects",
        "child_present",
        "voice_of_child",
        "officer",
    }
    assert "narrative" not in payload.data and "narrative" not in payload.fields
    assert payload.data["subjects"] == [
        {
            "subject_ref": "S1",
            "role": "CHILD",
            "given_name": "Mia",
            "family_name": "Thornbury",
            "date_of_birth": dob_for_age(9),
            "school_urn": "116439",
        }
    ]
    assert payload.data["officer"] == {
        "name": "PC Alex Morgan",
        "collar_number": "1234",
        "email": "alex.morgan@police.example.uk",
    }
    raw = payload.canonical_bytes()
    for needle in ("Kessler", "Jade", "assaulted", "arrested", "Bramble", "9434765919"):
        assert needle.encode() not in raw, needle


def test_health_profile_has_no_offence_detail_or_perpetrator(
    policy: PolicySet, directory: Directory
) -> None:
    concern = make_concern(risk="HIGH")
    decision = run(concern, rec(directory, "hampshire-health"), policy)
    assert isinstance(decision, Permit)
    payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
    assert "narrative" not in payload.data and "incident_location" not in payload.data
    assert [s["role"] for s in payload.data["subjects"]] == ["CHILD", "PARENT_CARER"]
    assert payload.data["subjects"][0]["nhs_number"] == "9434765919"
    assert "subjects.nhs_number" in payload.fields


def test_minimise_fields_canonical_bytes_and_hash(policy: PolicySet) -> None:
    import hashlib

    concern = make_concern(voice_of_child=None)
    profile = policy.profile("encompass-notification")
    payload = minimise(concern, profile, ())
    assert payload.data["concern_id"] == CONCERN_ID and payload.fields[0] == "concern_id"
    assert "voice_of_child" not in payload.fields  # absent values are not "present"
    assert "officer.phone" not in payload.fields
    absent = {"voice_of_child", "officer.unit", "officer.phone"}
    # make_concern has no risk assessment (concern v3), so none of its paths is present.
    assert payload.fields == tuple(
        p for p in profile.fields if p not in absent and not p.startswith("risk_assessments")
    )
    raw = payload.canonical_bytes()
    assert raw == json.dumps(payload.data, sort_keys=True, separators=(",", ":")).encode()
    assert payload.sha256 == hashlib.sha256(raw).hexdigest()
    assert minimise(concern, profile, ()).sha256 == payload.sha256  # deterministic


# ---------------------------------------------------------------- decision ids, reasons, logs


def test_decision_id_is_deterministic_and_tracks_policy(
    policy: PolicySet, policy_files: dict[str, str], directory: Directory
) -> None:
    concern = make_concern()
    door = rec(directory, "hampshire-csc")
    first = run(concern, door, policy)
    again = run(concern, door, parse_policy(policy_files))
    assert first.decision_id == again.decision_id and len(first.decision_id) == 32
    assert first == again
    other = run(concern, rec(directory, "hampshire-health"), policy)
    assert other.decision_id != first.decision_id
    changed = dict(policy_files)
    name = "deploy/policy/police-to-social-care.toml"
    changed[name] = changed[name].replace('retention = "P6Y"', 'retention = "P7Y"', 1)
    new_policy = parse_policy(changed)
    moved = run(concern, door, new_policy)
    assert moved.policy_revision == new_policy.revision != policy.revision
    assert moved.decision_id != first.decision_id


def _all_decisions(policy: PolicySet, directory: Directory) -> Iterator[tuple[Recipient, Decision]]:
    concerns = [
        make_concern(concern_type=t.value, risk=g.value, restricted=r)
        for t in (ConcernType.DOMESTIC_ABUSE, ConcernType.YOUTH_OFFENDING, ConcernType.NEGLECT)
        for g in RiskGrade
        for r in (False, True)
    ]
    concerns.append(make_concern(subjects=[child(age=19, care_leaver=True)]))
    concerns.append(make_concern(subjects=[child(school_urn=None, home_educated=True)]))
    for concern in concerns:
        for state in ConsentState:
            for recipient in directory.recipients:
                yield recipient, decide(concern, recipient, policy, state, NOW)


def test_every_decision_is_well_formed_and_pid_free(
    policy: PolicySet, directory: Directory
) -> None:
    kinds: set[str] = set()
    for recipient, decision in _all_decisions(policy, directory):
        kinds.add(decision.kind)
        assert decision.recipient_id == recipient.id
        assert decision.reasons
        if isinstance(decision, Refer):
            assert recipient.front_door  # only a front door triages
        if isinstance(decision, Deny):
            assert decision.reason_codes[0] is decision.reason
        log = decision.to_log()
        assert log["result"]["decision"] == decision.kind
        assert log["bundles"]["safer-policy"]["revision"] == policy.revision
        assert_no_pii([decision.reasons, log])
    assert kinds == {"PERMIT", "DENY", "REFER"}


def test_to_log_shape(policy: PolicySet, directory: Directory) -> None:
    concern = make_concern(risk="HIGH", consent="REFUSED", third_party_protection=("S3",))
    decision = run(concern, rec(directory, "hampshire-csc"), policy)
    log = decision.to_log()
    assert set(log) == {"decision_id", "labels", "path", "input", "result", "bundles"}
    assert "timestamp" not in log  # consent/ never reads the clock
    assert decision.to_log(NOW)["timestamp"] == NOW.isoformat()
    assert log["input"] == {
        "concern_id": CONCERN_ID,
        "recipient_id": "hampshire-csc",
        "consent_state": "REFUSED",
        "concern_type": "DOMESTIC_ABUSE",
        "risk_grade": "HIGH",
        "restricted": False,
        "source_agency_type": "police",
        "recipient_agency_type": "social-care",
        "recipient_lscp": "hampshire",
        "front_door": True,
        "age_bands": ["child"],
        "consent_source": "concern",
        "consent_reason": None,
    }
    assert log["result"]["decision"] == "PERMIT"
    assert log["result"]["profile"] == "safeguarding-full"
    assert log["result"]["withheld_subjects"] == 1
    json.dumps(log)  # JSON-ready


# ---------------------------------------------------------------- minimum dataset


def test_minimum_dataset_complete() -> None:
    assert missing_minimum_dataset(make_concern()) == []


def test_minimum_dataset_lists_missing_fields() -> None:
    bare_child = child(age=None, nhs_number=None, address=None)
    concern = make_concern(
        subjects=[adult("S2", "PARENT_CARER", MOTHER_NAME), bare_child],
        incident_location={"description": "street"},
        officer={"name": "PC Alex Morgan"},
    )
    missing = missing_minimum_dataset(concern)
    assert missing == [
        "subjects[1].date_of_birth_or_identifier",
        "subjects[1].address_or_incident_location",
        "officer.email_or_phone",
    ]
    assert_no_pii(missing)
    no_child = make_concern(subjects=[adult("S2", "PARENT_CARER", MOTHER_NAME)])
    assert missing_minimum_dataset(no_child) == ["subjects[role=CHILD]"]
    # An incident location with an LA code stands in for the child's address.
    located = make_concern(subjects=[child(address=None)])
    assert missing_minimum_dataset(located) == []


# ---------------------------------------------------------------- purity

_ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "itertools",
    "json",
    # A pure JSON encoder (no I/O): canonical_json's fast path for hashed bytes.
    "orjson",
    "pydantic",
    "re",
    "schemas",
    "tomllib",
    "types",
    "typing",
}
_FORBIDDEN_NAMES = {"open", "input", "print", "exec", "eval", "__import__", "breakpoint"}
_FORBIDDEN_ATTRS = {"now", "today", "utcnow", "time", "monotonic", "perf_counter", "urandom"}
_FORBIDDEN_WORDS = {"socket", "aiokafka", "random", "secrets", "subprocess", "os", "pathlib"}


def _impurities(source: str, name: str) -> list[str]:
    """I/O, clock or randomness in ``source``: imports outside the allow-list,
    calls such as open() or datetime.now() / time.time(), and any identifier
    naming socket, aiokafka or random. Docstrings and comments are ignored."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module or ""]
        else:
            modules = []
        problems.extend(
            f"{name}:{node.lineno} imports {m}"
            for m in modules
            if m.split(".")[0] not in _ALLOWED_IMPORTS
        )
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _FORBIDDEN_NAMES:
                problems.append(f"{name}:{node.lineno} calls {func.id}()")
            if isinstance(func, ast.Attribute) and func.attr in _FORBIDDEN_ATTRS:
                problems.append(f"{name}:{node.lineno} calls .{func.attr}()")
        ident = (
            node.id
            if isinstance(node, ast.Name)
            else node.attr
            if isinstance(node, ast.Attribute)
            else None
        )
        if ident in _FORBIDDEN_WORDS:
            problems.append(f"{name}:{node.lineno} uses {ident}")
    return problems


def test_consent_is_pure() -> None:
    files = sorted((ROOT / "consent").glob("*.py"))
    assert {p.name for p in files} >= {
        "__init__.py",
        "_decide.py",
        "_decision.py",
        "_dataset.py",
        "_minimise.py",
        "_policy.py",
        "_recipient.py",
    }
    problems = [
        problem
        for path in files
        for problem in _impurities(path.read_text(encoding="utf-8"), path.name)
    ]
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        "import random\n",
        "import socket\n",
        "from aiokafka import AIOKafkaProducer\n",
        "from datetime import datetime\nx = datetime.now()\n",
        "import time\nx = time.time()\n",
        "with open('f') as f:\n    pass\n",
        "from pathlib import Path\nPath('x').read_text()\n",
        "import schemas\nx = schemas.random\n",
    ],
)
def test_purity_checker_catches_violations(source: str) -> None:
    assert _impurities(source, "bad.py")
