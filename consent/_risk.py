"""Structured risk assessment: the rules that refuse one, and the warnings (issue 16).

Pure. ``risk_problems`` lists what makes a concern's risk assessments
unroutable (each with its reason code; field paths and rule text only, never
values); ``risk_warnings`` lists what is recorded but not refused: a DASH score
that disagrees with the grade. docs/RISK.md explains both.

DASH bands (SafeLives DASH risk checklist guidance): 14 or more "yes" answers
is high risk and meets the MARAC referral threshold; this exchange reads 10 to
13 as medium and 0 to 9 as standard (LOW), the local banding several forces
use. SafeLives is explicit that professional judgement may grade a case higher
than its score, so a grade *above* the band is a warning that asks for the
rationale to say why; a grade *below* the band is a warning that the checklist
says otherwise.
"""

from __future__ import annotations

from schemas import (
    ConcernModel,
    Problem,
    ReasonCode,
    RiskFactor,
    RiskGrade,
    RiskMethod,
    SubjectRole,
)

__all__ = [
    "ASSESSED_ROLES",
    "DASH_HIGH",
    "DASH_MEDIUM",
    "dash_band",
    "risk_problems",
    "risk_warnings",
]

#: DASH score at or above which the risk is high (SafeLives: 14+ "yes" = MARAC threshold).
DASH_HIGH = 14
#: DASH score at or above which this exchange reads the risk as medium (local banding).
DASH_MEDIUM = 10
#: Who may be assessed: the child the concern is about and the other children at home.
ASSESSED_ROLES = frozenset({SubjectRole.CHILD, SubjectRole.SIBLING})
_RANK = {grade: grade.rank for grade in RiskGrade}


def dash_band(score: int) -> RiskGrade:
    """The grade a DASH score points to (see the module docstring for the source)."""
    if score >= DASH_HIGH:
        return RiskGrade.HIGH
    if score >= DASH_MEDIUM:
        return RiskGrade.MEDIUM
    return RiskGrade.LOW


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def risk_problems(concern: ConcernModel) -> list[Problem]:
    """Why ``concern``'s risk assessments cannot be routed (empty: they can).

    * ``RISK_RATIONALE_MISSING``: an assessment graded HIGH has no rationale.
    * ``RISK_ASSESSMENT_INVALID``: an assessment names no CHILD or SIBLING
      subject of the concern, or the same one twice; method DASH without a
      score; OTHER_TOOL without a tool name; a missing-episode count without
      the MISSING_EPISODES factor.
    """
    problems: list[Problem] = []
    roles = {s.subject_ref: s.role for s in concern.subjects}
    seen: set[str] = set()
    for index, assessment in enumerate(concern.risk_assessments):
        where = f"risk_assessments[{index}]"
        if assessment.grade is RiskGrade.HIGH and _blank(assessment.rationale):
            problems.append(
                Problem(
                    ReasonCode.RISK_RATIONALE_MISSING,
                    f"{where}.rationale",
                    "a HIGH grade must say why (be explicit and clear in recording risk)",
                )
            )
        role = roles.get(assessment.subject_ref)
        if role not in ASSESSED_ROLES:
            problems.append(
                Problem(
                    ReasonCode.RISK_ASSESSMENT_INVALID,
                    f"{where}.subject_ref",
                    "must name a CHILD or SIBLING subject of this concern",
                )
            )
        elif assessment.subject_ref in seen:
            problems.append(
                Problem(
                    ReasonCode.RISK_ASSESSMENT_INVALID,
                    f"{where}.subject_ref",
                    "this child already has an assessment in this concern",
                )
            )
        seen.add(assessment.subject_ref)
        if assessment.method is RiskMethod.DASH and assessment.dash_score is None:
            problems.append(
                Problem(
                    ReasonCode.RISK_ASSESSMENT_INVALID,
                    f"{where}.dash_score",
                    "method DASH needs the score (0 to 27)",
                )
            )
        if assessment.method is RiskMethod.OTHER_TOOL and _blank(assessment.tool_name):
            problems.append(
                Problem(
                    ReasonCode.RISK_ASSESSMENT_INVALID,
                    f"{where}.tool_name",
                    "method OTHER_TOOL needs the tool's name",
                )
            )
        if (
            assessment.missing_episodes is not None
            and RiskFactor.MISSING_EPISODES not in assessment.factors
        ):
            problems.append(
                Problem(
                    ReasonCode.RISK_ASSESSMENT_INVALID,
                    f"{where}.missing_episodes",
                    "a count of missing episodes needs the factor MISSING_EPISODES",
                )
            )
    return problems


def risk_warnings(concern: ConcernModel) -> list[str]:
    """What is recorded with every decision about ``concern`` but does not stop it.

    One line per DASH-graded assessment whose grade is not the score's band
    (subject refs, grades and scores only; no personal data).
    """
    warnings: list[str] = []
    for index, assessment in enumerate(concern.risk_assessments):
        if assessment.method is not RiskMethod.DASH or assessment.dash_score is None:
            continue
        band = dash_band(assessment.dash_score)
        if band is assessment.grade:
            continue
        where = f"risk_assessments[{index}] (subject {assessment.subject_ref})"
        if _RANK[assessment.grade] > _RANK[band]:
            warnings.append(
                f"warning: {where} is graded {assessment.grade} but its DASH score "
                f"{assessment.dash_score} is in the {band} band; professional judgement may "
                "grade higher than the score, and the rationale should say why"
            )
        else:
            warnings.append(
                f"warning: {where} is graded {assessment.grade} but its DASH score "
                f"{assessment.dash_score} is in the {band} band"
                + (
                    f" ({DASH_HIGH}+ 'yes' answers meets the MARAC referral threshold, "
                    "SafeLives DASH guidance)"
                    if band is RiskGrade.HIGH
                    else ""
                )
            )
    return warnings
