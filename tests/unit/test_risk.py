"""Issue 16: structured risk assessment: validation, DASH warnings, and who sees what.

Pure tests over the real deploy/ policy and directory (read as text by the
fixtures of test_consent); no I/O beyond that.
"""

from __future__ import annotations

from typing import Any

import pytest

from consent import (
    DASH_HIGH,
    DASH_MEDIUM,
    Deny,
    Directory,
    PolicySet,
    dash_band,
    decide,
    minimise,
    parse_directory,
    parse_policy,
    risk_problems,
    risk_warnings,
)
from schemas import (
    CONCERN,
    Codec,
    ConcernModel,
    EmbeddedRegistry,
    ReasonCode,
    RiskFactor,
    RiskGrade,
    catalogue,
    limit_problems,
)
from tests.unit.test_consent import (
    MOTHER_NAME,
    NOW,
    PERPETRATOR_NAME,
    ROOT,
    adult,
    child,
    make_concern,
    rec,
)

ALL_FACTORS = [f.value for f in RiskFactor if f is not RiskFactor.OTHER]
SCHOOL_FACTORS = {
    "DOMESTIC_ABUSE",
    "PARENTAL_SUBSTANCE_MISUSE",
    "PARENTAL_MENTAL_HEALTH",
    "NEGLECT",
    "MISSING_EPISODES",
    "ONLINE_HARM",
}
DASH_DETAIL = {"method", "dash_score", "tool_name"}


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    files = sorted((ROOT / "deploy" / "policy").glob("*.toml"))
    return parse_policy({f"deploy/policy/{p.name}": p.read_text(encoding="utf-8") for p in files})


@pytest.fixture(scope="module")
def directory() -> Directory:
    text = (ROOT / "deploy" / "directory.toml").read_text(encoding="utf-8")
    return parse_directory(text, "deploy/directory.toml")


def assessment(ref: str = "S1", grade: str = "MEDIUM", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "subject_ref": ref,
        "grade": grade,
        "rationale": "Dean Kessler has assaulted Jade Thornbury three times this year",
        "method": "DASH",
        "dash_score": 11,
        "factors": ALL_FACTORS,
        "missing_episodes": 3,
        "assessed_by": "PC 1234",
        "assessed_at": "2026-11-23T23:05:00+00:00",
    }
    item.update(extra)
    return item


def household(*assessments: dict[str, Any], **extra: Any) -> ConcernModel:
    """A child, a sibling at another school, a mother and an alleged perpetrator."""
    return make_concern(
        subjects=[
            child(),
            child("S4", age=6, role="SIBLING", given_name="Leo", school_urn="116205"),
            adult("S2", "PARENT_CARER", MOTHER_NAME),
            adult("S3", "ALLEGED_PERPETRATOR", PERPETRATOR_NAME, police_person_id="HC-0099"),
        ],
        risk_assessments=list(assessments),
        **extra,
    )


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"grade": "HIGH", "rationale": None}, ReasonCode.RISK_RATIONALE_MISSING, "rationale"),
        ({"grade": "HIGH", "rationale": "   "}, ReasonCode.RISK_RATIONALE_MISSING, "rationale"),
        ({"subject_ref": "S2"}, ReasonCode.RISK_ASSESSMENT_INVALID, "subject_ref"),
        ({"subject_ref": "S9"}, ReasonCode.RISK_ASSESSMENT_INVALID, "subject_ref"),
        ({"dash_score": None}, ReasonCode.RISK_ASSESSMENT_INVALID, "dash_score"),
        (
            {"method": "OTHER_TOOL", "tool_name": None},
            ReasonCode.RISK_ASSESSMENT_INVALID,
            "tool_name",
        ),
        ({"factors": ["NEGLECT"]}, ReasonCode.RISK_ASSESSMENT_INVALID, "missing_episodes"),
    ],
)
def test_a_bad_assessment_is_refused_with_its_code(
    change: dict[str, Any], code: ReasonCode, field: str
) -> None:
    problems = risk_problems(household(assessment(**change)))
    assert [(p.code, p.field) for p in problems] == [(code, f"risk_assessments[0].{field}")]
    assert "Kessler" not in " ".join(p.describe() for p in problems)


@pytest.mark.parametrize(
    "items",
    [
        [],
        [assessment(grade="HIGH", dash_score=17)],
        [assessment(), assessment("S4", grade="LOW", method="PROFESSIONAL_JUDGEMENT")],
        [assessment(grade="LOW", rationale=None, method="PROFESSIONAL_JUDGEMENT")],
        [assessment(method="OTHER_TOOL", tool_name="Brook traffic light", dash_score=None)],
    ],
)
def test_a_good_assessment_passes(items: list[dict[str, Any]]) -> None:
    assert risk_problems(household(*items)) == []


def test_the_same_child_assessed_twice_is_refused() -> None:
    problems = risk_problems(household(assessment(), assessment()))
    assert [p.code for p in problems] == [ReasonCode.RISK_ASSESSMENT_INVALID]
    assert problems[0].field == "risk_assessments[1].subject_ref"


@pytest.mark.parametrize("score", [-1, 28])
def test_a_dash_score_outside_0_to_27_does_not_validate(score: int) -> None:
    with pytest.raises(ValueError, match="dash_score"):
        household(assessment(dash_score=score))


def test_too_many_assessments_exceed_the_limit() -> None:
    record = household().to_avro()
    record["risk_assessments"] = [assessment()] * 41
    problems = limit_problems(record)
    assert [p.field for p in problems] == ["risk_assessments"]


# ---------------------------------------------------------------- DASH bands


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (0, RiskGrade.LOW),
        (DASH_MEDIUM - 1, RiskGrade.LOW),
        (DASH_MEDIUM, RiskGrade.MEDIUM),
        (DASH_HIGH - 1, RiskGrade.MEDIUM),
        (DASH_HIGH, RiskGrade.HIGH),
        (27, RiskGrade.HIGH),
    ],
)
def test_dash_bands(score: int, band: RiskGrade) -> None:
    assert (DASH_MEDIUM, DASH_HIGH) == (10, 14)
    assert dash_band(score) is band


@pytest.mark.parametrize(
    ("grade", "score", "words"),
    [
        ("MEDIUM", 11, None),
        ("HIGH", 14, None),
        ("LOW", 15, "MARAC referral threshold"),
        ("MEDIUM", 20, "MARAC referral threshold"),
        ("HIGH", 3, "professional judgement may grade higher"),
        ("LOW", 12, "in the MEDIUM band"),
    ],
)
def test_a_dash_score_against_its_grade_is_a_warning(
    grade: str, score: int, words: str | None
) -> None:
    concern = household(assessment(grade=grade, dash_score=score))
    assert risk_problems(concern) == []  # a warning, never a refusal
    warnings = risk_warnings(concern)
    if words is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and words in warnings[0]
        assert f"DASH score {score}" in warnings[0] and "Kessler" not in warnings[0]


def test_professional_judgement_gives_no_dash_warning() -> None:
    concern = household(assessment(grade="HIGH", method="PROFESSIONAL_JUDGEMENT", dash_score=2))
    assert risk_warnings(concern) == []


# ---------------------------------------------------------------- schema


def test_concern_v3_round_trips_the_assessment() -> None:
    codec = Codec(EmbeddedRegistry())
    concern = household(assessment(), assessment("S4", grade="LOW", factors=["NEGLECT"]))
    wire = codec.encode(CONCERN, concern.to_avro())
    back = ConcernModel.from_avro(codec.decode(wire, expect=CONCERN).record)
    assert back == concern
    assert catalogue()[CONCERN][-1].version == 3


# ---------------------------------------------------------------- who sees what


def _view(
    concern: ConcernModel, policy: PolicySet, directory: Directory, recipient_id: str
) -> list[dict[str, Any]]:
    decision = decide(concern, rec(directory, recipient_id), policy, concern.consent.state, NOW)
    assert not isinstance(decision, Deny), decision.reasons
    payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
    view: list[dict[str, Any]] = payload.data.get("risk_assessments", [])
    return view


#: recipient → (children whose assessment it sees, keys it sees, factors it sees)
VIEWS: list[tuple[str, set[str], set[str], set[str]]] = [
    (
        "hampshire-csc",  # the front door: everything
        {"S1", "S4"},
        {
            "subject_ref",
            "grade",
            "rationale",
            "method",
            "dash_score",
            "tool_name",  # null here, but part of the whole record the front door gets
            "factors",
            "missing_episodes",
            "assessed_by",
            "assessed_at",
        },
        set(ALL_FACTORS),
    ),
    (
        "school-116439",  # the child's school: grade and supporting factors, no DASH
        {"S1"},
        {"subject_ref", "grade", "factors", "missing_episodes"},
        SCHOOL_FACTORS,
    ),
    (
        "hampshire-health",
        {"S1", "S4"},
        {
            "subject_ref",
            "grade",
            "rationale",
            "factors",
            "missing_episodes",
            "assessed_by",
            "assessed_at",
        },
        set(ALL_FACTORS),
    ),
]


@pytest.mark.parametrize(("recipient_id", "children", "keys", "factors"), VIEWS)
def test_each_recipient_sees_its_part_of_the_assessment(
    policy: PolicySet,
    directory: Directory,
    recipient_id: str,
    children: set[str],
    keys: set[str],
    factors: set[str],
) -> None:
    concern = household(assessment(grade="HIGH", dash_score=16), assessment("S4"))
    view = _view(concern, policy, directory, recipient_id)
    assert {a["subject_ref"] for a in view} == children
    for item in view:
        assert set(item) == keys
        assert set(item["factors"]) == factors
        assert not (DASH_DETAIL & set(item)) or recipient_id == "hampshire-csc"


def test_a_school_never_sees_exploitation_or_a_count_without_its_factor(
    policy: PolicySet, directory: Directory
) -> None:
    concern = household(
        assessment(factors=["COUNTY_LINES", "CHILD_SEXUAL_EXPLOITATION", "MISSING_EPISODES"])
    )
    assert _view(concern, policy, directory, "school-116439") == [
        {
            "subject_ref": "S1",
            "grade": "MEDIUM",
            "factors": ["MISSING_EPISODES"],
            "missing_episodes": 3,
        }
    ]
    only_exploitation = household(assessment(factors=["COUNTY_LINES"], missing_episodes=None))
    assert _view(only_exploitation, policy, directory, "school-116439") == [
        {"subject_ref": "S1", "grade": "MEDIUM"}
    ]


def test_a_rationale_is_scrubbed_of_people_the_recipient_may_not_see(
    policy: PolicySet, directory: Directory
) -> None:
    concern = household(assessment(), third_party_protection=["S3"])
    door = _view(concern, policy, directory, "hampshire-csc")
    assert "Kessler" not in door[0]["rationale"] and "[withheld]" in door[0]["rationale"]
    assert "Jade Thornbury" in door[0]["rationale"]  # the mother is not protected
    health = _view(concern, policy, directory, "hampshire-health")
    assert "Kessler" not in health[0]["rationale"]


def test_the_front_door_profile_has_every_assessment_path(policy: PolicySet) -> None:
    assert "risk_assessments" in policy.profile("safeguarding-full").fields
    assert policy.profile("safeguarding-full").risk_factors is None
    school = policy.profile("encompass-notification")
    assert set(school.risk_factors or ()) == SCHOOL_FACTORS
    assert not {f"risk_assessments.{k}" for k in DASH_DETAIL} & set(school.fields)
