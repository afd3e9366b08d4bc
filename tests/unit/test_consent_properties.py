"""Property tests of the consent engine (hypothesis).

Concerns are generated over every ConcernModel field that the rules look at
(type, grade, consent and its reason, restriction, third-party protection, and
subjects with roles, ages, addresses, schools and flags), together with every
recipient in the directory, any source agency type and any consent position.

* ``decide()`` never returns PERMIT (or REFER, which also shares) without a
  lawful basis from the catalogue that an agreement covering these parties
  cites, and that fits the parties and the subject's age band.
* ``minimise()`` never exposes a field outside the profile: not for the shipped
  profiles, and not for arbitrary generated ones.
* ``parse_policy`` either loads a policy or raises ``PolicyError``: a mangled
  policy file never escapes as another exception.
"""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consent import (
    LAWFUL_BASES,
    WITHHELD_REASON,
    Consent,
    Deny,
    Directory,
    PolicySet,
    Profile,
    Recipient,
    concern_field_paths,
    decide,
    minimise,
    parse_directory,
    parse_policy,
)
from schemas import (
    LA_CODES,
    AgencyType,
    ConcernModel,
    ConcernType,
    ConsentState,
    NotSoughtReason,
    OverrideJustification,
    PolicyError,
    RiskGrade,
    SubjectRole,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
POLICY_FILES = {
    str(p): p.read_text(encoding="utf-8") for p in sorted((ROOT / "deploy/policy").glob("*.toml"))
}
POLICY: PolicySet = parse_policy(POLICY_FILES)
DIRECTORY: Directory = parse_directory(
    (ROOT / "deploy/directory.toml").read_text(encoding="utf-8"), "deploy/directory.toml"
)
SCHOOL_URNS = [r.school_urn for r in DIRECTORY.recipients if r.school_urn]
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------- strategies

_words = st.text(alphabet=string.ascii_letters + " -'", min_size=1, max_size=12).filter(
    lambda s: s.strip() != ""
)


@st.composite
def _address(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    return {
        "line1": draw(st.sampled_from(["1 High Street", "Flat 2, 9 Mill Lane", "7 Larkspur Row"])),
        "town": draw(st.sampled_from(["Eastleigh", "Newport", "Portsmouth"])),
        "postcode": draw(
            st.sampled_from(["SO50 5AA", "PO30 1AA", "PO6 3LS", "ZZ1 1ZZ", "SO16 4QQ"])
        ),
        "la_code": draw(st.sampled_from([None, "E99999999", *LA_CODES])),
    }


@st.composite
def _subject(draw: st.DrawFn, ref: str, role: SubjectRole) -> dict[str, Any]:
    age = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=40)))
    born: str | None = None
    if age is not None:
        born = (
            date(NOW.year - age, NOW.month, NOW.day) - timedelta(days=draw(st.integers(-200, 200)))
        ).isoformat()
    return {
        "subject_ref": ref,
        "role": role.value,
        "given_name": draw(_words),
        "family_name": draw(_words),
        "date_of_birth": born,
        "nhs_number": draw(st.one_of(st.none(), st.from_regex(r"\A9[0-9]{9}\Z"))),
        "police_person_id": draw(st.one_of(st.none(), st.from_regex(r"\AHC-P-[0-9]{5}\Z"))),
        "address": draw(_address()),
        "school_urn": draw(st.one_of(st.none(), st.sampled_from([*SCHOOL_URNS, "999999"]))),
        "looked_after": draw(st.booleans()),
        "responsible_la": draw(st.sampled_from([None, *LA_CODES])),
        "home_educated": draw(st.booleans()),
        "care_leaver": draw(st.booleans()),
    }


@st.composite
def concerns(draw: st.DrawFn) -> ConcernModel:
    roles = draw(st.lists(st.sampled_from(list(SubjectRole)), min_size=1, max_size=5))
    if draw(st.sampled_from([True, True, True, False])):
        roles[0] = SubjectRole.CHILD
    subjects = [draw(_subject(f"S{i + 1}", role)) for i, role in enumerate(roles)]
    refs = [s["subject_ref"] for s in subjects]
    state = draw(st.sampled_from(list(ConsentState)))
    reason = draw(
        st.one_of(
            st.none(),
            st.sampled_from(
                [
                    "seeking consent would place the child at risk",
                    "seeking consent would prejudice the prevention or detection of crime",
                    "NOT_PRACTICABLE",
                    "CHILD_NOT_COMPETENT: too young",
                    "overridden because the child is at risk of significant harm",
                ]
            ),
            _words,
        )
    )
    record: dict[str, Any] = {
        "concern_id": str(draw(st.uuids(version=4))),
        "source_agency": "hampshire-constabulary",
        "source_ref": "44260000001",
        "reported_at": NOW.isoformat(),
        "occurred_at": (NOW - timedelta(hours=3)).isoformat(),
        "concern_type": draw(st.sampled_from(list(ConcernType))).value,
        "risk_grade": draw(st.sampled_from(list(RiskGrade))).value,
        "subjects": subjects,
        "incident_location": draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {
                        "description": st.sampled_from(["home", "park", "school gates"]),
                        "postcode": st.sampled_from([None, "PO2 8RL", "SO19 6LJ"]),
                        "la_code": st.sampled_from([None, *LA_CODES]),
                    }
                ),
            )
        ),
        "child_present": draw(st.booleans()),
        "voice_of_child": draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"said": st.one_of(st.none(), _words), "observed": st.one_of(st.none(), _words)}
                ),
            )
        ),
        "narrative": draw(_words),
        "immediate_actions": draw(st.one_of(st.none(), _words)),
        "consent": {
            "state": state.value,
            "reason": reason,
            "recorded_by": "PC 1",
            "recorded_at": (NOW - timedelta(hours=2)).isoformat(),
        },
        "third_party_protection": draw(st.lists(st.sampled_from([*refs, "S99"]), max_size=3)),
        "restricted": draw(st.sampled_from([False, False, False, True])),
        "officer": {"name": "PC Alex Morgan", "email": "a@p.example"},
    }
    return ConcernModel.model_validate(record)


@st.composite
def consents(draw: st.DrawFn, concern: ConcernModel) -> ConsentState | Consent:
    if draw(st.booleans()):
        return draw(st.sampled_from([concern.consent.state, *ConsentState]))
    state = draw(st.sampled_from(list(ConsentState)))
    justification = (
        draw(st.sampled_from(list(OverrideJustification)))
        if state is ConsentState.OVERRIDDEN and draw(st.booleans())
        else None
    )
    return Consent(
        state=state,
        not_sought_reason=draw(st.sampled_from(list(NotSoughtReason)))
        if state is ConsentState.NOT_SOUGHT
        else None,
        justification=justification,
        justified=justification is not None,
        source="consent-record",
        record_id="ab" * 16,
        recorded_at=NOW - timedelta(hours=1),
        expires_at=draw(st.one_of(st.none(), st.just(NOW - timedelta(minutes=1)))),
    )


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    """Any valid profile: a set of concern field paths, no path under another."""
    paths = sorted(concern_field_paths())
    chosen = draw(st.sets(st.sampled_from(paths), min_size=1, max_size=12))
    kept = sorted(p for p in chosen if not any(p.startswith(f"{q}.") for q in chosen))
    if any(p.startswith("subjects.") for p in kept) and "subjects" not in kept:
        kept = sorted({*kept, "subjects.subject_ref", "subjects.role"})
    roles = draw(st.sets(st.sampled_from(list(SubjectRole)), min_size=1))
    return Profile(
        name="generated",
        description="generated by hypothesis",
        fields=tuple(kept),
        subject_roles=tuple(sorted(roles)),
    )


# ---------------------------------------------------------------- helpers


def leaf_paths(value: Any, prefix: str = "") -> set[str]:
    """Every dotted path to a value in a JSON tree (lists are transparent)."""
    if isinstance(value, dict):
        found: set[str] = set()
        for key, inner in value.items():
            found |= leaf_paths(inner, f"{prefix}.{key}" if prefix else key)
        return found
    if isinstance(value, list):
        found = set()
        for item in value:
            found |= leaf_paths(item, prefix)
        return found or {prefix}
    return {prefix}


def assert_within_profile(payload_data: dict[str, Any], profile: Profile) -> None:
    allowed = ("concern_id", *profile.fields)
    stubs = [s for s in payload_data.get("subjects", []) if "withheld" in s]
    for stub in stubs:
        assert set(stub) == {"subject_ref", "role", "withheld"}
        assert stub["withheld"] == WITHHELD_REASON
    others = {k: v for k, v in payload_data.items() if k != "subjects"}
    shown = leaf_paths(others)
    real = [s for s in payload_data.get("subjects", []) if "withheld" not in s]
    if real:
        shown |= leaf_paths({"subjects": real})
    if stubs:
        shown |= {"subjects.subject_ref", "subjects.role"}
    for path in shown:
        assert any(path == f or path.startswith(f"{f}.") for f in allowed), (
            f"{path} is outside profile {profile.name}: {profile.fields}"
        )
    roles = {r.value for r in profile.subject_roles}
    assert {s["role"] for s in payload_data.get("subjects", [])} <= roles


# ---------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(
    concern=concerns(),
    recipient=st.sampled_from(DIRECTORY.recipients),
    # Mostly police (the only source with agreements), sometimes any agency type.
    source=st.sampled_from([AgencyType.POLICE] * 6 + list(AgencyType)),
    data=st.data(),
)
def test_decide_never_permits_without_a_catalogued_basis(
    concern: ConcernModel, recipient: Recipient, source: AgencyType, data: st.DataObject
) -> None:
    consent = data.draw(consents(concern))
    decision = decide(concern, recipient, POLICY, consent, NOW, source_agency_type=source)
    event(decision.kind)
    assert decision.reasons
    assert decision.policy_revision == POLICY.revision
    if isinstance(decision, Deny):
        assert decision.reason_codes[0] is decision.reason
        return
    # PERMIT or REFER: something is shared, so there must be a lawful basis.
    assert decision.lawful_basis in LAWFUL_BASES
    assert decision.agreement_ids, "a share without an agreement"
    agreement = POLICY.agreement(decision.agreement_ids[0])
    assert agreement is not None
    assert decision.lawful_basis == agreement.lawful_bases[0]
    assert source in agreement.source_agency_types
    assert recipient.agency_type in agreement.recipient_agency_types
    assert agreement.covers(concern.concern_type)
    basis = LAWFUL_BASES[decision.lawful_basis]
    assert not basis.problems_for(
        (source,), (recipient.agency_type,), agreement.subject_ages, agreement.model_dump()
    )
    assert decision.profile.name == agreement.profile
    if decision.kind == "REFER":
        assert recipient.is_front_door
    else:
        assert not concern.restricted
        assert concern.risk_grade.rank >= agreement.min_risk_grade.rank
    # Every withheld third party stays withheld.
    present = {s.subject_ref for s in concern.subjects}
    assert set(concern.third_party_protection) & present <= set(decision.withheld_subject_refs)
    # And what minimise() would send stays inside the profile.
    payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
    assert_within_profile(payload.data, decision.profile)


@PROPERTY_SETTINGS
@given(concern=concerns(), profile=profiles(), data=st.data())
def test_minimise_never_exposes_a_field_outside_the_profile(
    concern: ConcernModel, profile: Profile, data: st.DataObject
) -> None:
    refs = [s.subject_ref for s in concern.subjects]
    withheld = data.draw(st.lists(st.sampled_from(refs), max_size=len(refs)))
    payload = minimise(concern, profile, withheld)
    assert_within_profile(payload.data, profile)
    assert set(payload.fields) <= {"concern_id", *profile.fields}
    assert payload.data["concern_id"] == concern.concern_id
    # Withheld people never appear by name in what is shared.
    blob = payload.canonical_bytes().decode("utf-8")
    visible = {s.nhs_number for s in concern.subjects if s.subject_ref not in withheld}
    for subject in concern.subjects:
        number = subject.nhs_number
        if subject.subject_ref in withheld and number and number not in visible:
            assert number not in blob


@PROPERTY_SETTINGS
@given(concern=concerns(), name=st.sampled_from(sorted(p.name for p in POLICY.profiles)))
def test_minimise_keeps_shipped_profiles(concern: ConcernModel, name: str) -> None:
    profile = POLICY.profile(name)
    payload = minimise(concern, profile, concern.third_party_protection)
    assert_within_profile(payload.data, profile)


_MUTATIONS = st.sampled_from(
    [
        ('min_risk_grade = "LOW"', 'min_risk_grade = "AMBER"'),
        ('consent_rule = "not_required"', "consent_rule = 3"),
        ('profile = "', 'profile = "x'),
        ("[[agreement]]", "[[agreement]]\nunknown_field = true"),
        ("[[agreement]]", "[agreement"),
        ('lawful_bases = ["', 'lawful_bases = ["CA1989-S47", "'),
        ('subject_ages = "child"', 'subject_ages = "adult"'),
        ("max_age = 17", "max_age = 99"),
        ('retention = "P', 'retention = "X'),
        ('"DOMESTIC_ABUSE"', '"DOMESTIC"'),
        ("id = ", "id = 7\nname = "),
        ("fields = [", 'fields = ["nope", '),
        ("subject_roles = [", 'subject_roles = ["NOBODY", '),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(POLICY_FILES)),
    mutation=_MUTATIONS,
    junk=st.text(max_size=20),
    where=st.integers(min_value=0, max_value=5000),
)
def test_a_mangled_policy_file_is_a_policy_error_never_a_crash(
    name: str, mutation: tuple[str, str], junk: str, where: int
) -> None:
    files = dict(POLICY_FILES)
    text = files[name].replace(mutation[0], mutation[1], 1)
    at = where % (len(text) + 1)
    files[name] = text[:at] + junk + text[at:]
    try:
        parse_policy(files)
    except PolicyError as exc:
        assert exc.code.value == "CONFIG_INVALID"
        assert exc.hint


def test_the_property_helpers_catch_a_leak() -> None:
    profile = POLICY.profile("encompass-notification")
    with pytest.raises(AssertionError):
        assert_within_profile({"concern_id": "x", "narrative": "leak"}, profile)
    with pytest.raises(AssertionError):
        assert_within_profile(
            {"concern_id": "x", "subjects": [{"subject_ref": "S1", "role": "ALLEGED_PERPETRATOR"}]},
            profile,
        )
    assert leaf_paths({"a": [{"b": 1}, {"c": {"d": 2}}]}) == {"a.b", "a.c.d"}
