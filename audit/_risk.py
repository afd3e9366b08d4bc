"""Risk reporting: risk-factor prevalence and cumulative-concern flags (issue 16).

Pure functions over audit records, like ``_reports``. The audit record has no
risk-assessment field: the router writes one canonical line per assessed
child into the reasons of every decision about a concern
(``risk_assessment_reasons``), so prevalence is read back from the hashed
records, as trustworthy as the records themselves (the same way
``concern_type_of`` reads the concern type). Cumulative-concern flags are the
RISK_FLAGGED entries.

``risk_report`` aggregates per partnership and calendar month (Europe/London):
children assessed, their grades, each coded factor, and flags. Aggregates
leave the exchange only with small-number suppression, the rule of the
analysts' dashboard: a count from 1 to 4 is shown as ``"<5"`` (0 stays 0:
nothing to protect), and because the grades add up to the children assessed,
when exactly one grade is suppressed the next smallest non-zero grade is
hidden too (``"x"``), so the total cannot give the suppressed one away. Risk
factors do not add up to anything (a child may have several), so they need
no secondary suppression.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas import AuditEvent, RiskAssessment, RiskFactor, RiskGrade, RiskMethod

from ._record import AuditRecord
from ._reports import ALL_TIME, Period

__all__ = [
    "HIDDEN",
    "RISK_CSV_HEADER",
    "SUPPRESSED",
    "SUPPRESS_BELOW",
    "ParsedAssessment",
    "RiskRow",
    "parse_risk_reason",
    "risk_assessment_reasons",
    "risk_report",
    "risk_tables",
    "suppress",
    "suppress_parts",
]

#: Counts from 1 to below this are shown as ``SUPPRESSED``.
SUPPRESS_BELOW = 5
SUPPRESSED = "<5"
#: What hides a second cell of a row with a total (secondary suppression).
HIDDEN = "x"
_LONDON = ZoneInfo("Europe/London")
_LINE = re.compile(
    r"\Arisk assessment of child (?P<ref>[A-Za-z0-9._-]+): grade (?P<grade>HIGH|MEDIUM|LOW)"
    r" by (?P<method>[A-Z_]+)(?: \(DASH score (?P<dash>\d+)\))?; factors: (?P<factors>.*)\Z"
)
_NONE = "none recorded"
_THRESHOLD = re.compile(r"cumulative-concern threshold '([a-z0-9][a-z0-9-]*)'")


def risk_assessment_reasons(assessments: Sequence[RiskAssessment]) -> tuple[str, ...]:
    """One canonical reason line per assessed child (codes and the subject ref only)."""
    lines = []
    for a in assessments:
        dash = (
            f" (DASH score {a.dash_score})"
            if a.method is RiskMethod.DASH and a.dash_score is not None
            else ""
        )
        factors = ", ".join(f.value for f in a.factors) or _NONE
        if a.missing_episodes is not None and RiskFactor.MISSING_EPISODES in a.factors:
            factors = factors.replace(
                "MISSING_EPISODES", f"MISSING_EPISODES ({a.missing_episodes} episodes)"
            )
        lines.append(
            f"risk assessment of child {a.subject_ref}: grade {a.grade.value} by "
            f"{a.method.value}{dash}; factors: {factors}"
        )
    return tuple(lines)


@dataclass(frozen=True)
class ParsedAssessment:
    subject_ref: str
    grade: RiskGrade
    factors: tuple[RiskFactor, ...]


def parse_risk_reason(reason: str) -> ParsedAssessment | None:
    """A line written by ``risk_assessment_reasons``, read back (None for any other line)."""
    match = _LINE.match(reason)
    if match is None:
        return None
    factors: list[RiskFactor] = []
    text = match.group("factors")
    if text != _NONE:
        for part in text.split(", "):
            code = part.split(" ", 1)[0]
            try:
                factors.append(RiskFactor(code))
            except ValueError:
                factors.append(RiskFactor.OTHER)
    return ParsedAssessment(match.group("ref"), RiskGrade(match.group("grade")), tuple(factors))


def suppress(count: int) -> int | str:
    """``count``, or ``"<5"`` when it is from 1 to 4 (0 stays 0)."""
    return SUPPRESSED if 0 < count < SUPPRESS_BELOW else count


def suppress_parts(counts: Sequence[int]) -> list[int | str]:
    """Counts that add up to a published total: primary suppression, then, if exactly
    one is suppressed, the next smallest non-zero one is hidden (``"x"``) too."""
    shown = [suppress(c) for c in counts]
    hidden = [i for i, c in enumerate(counts) if 0 < c < SUPPRESS_BELOW]
    if len(hidden) == 1:
        others = sorted((c, i) for i, c in enumerate(counts) if i not in hidden and c > 0)
        if others:
            shown[others[0][1]] = HIDDEN
    return shown


@dataclass
class RiskRow:
    """One partnership's month: what was assessed, and how often a flag was raised."""

    lscp: str
    month: str  # YYYY-MM, Europe/London
    children_assessed: int = 0
    grades: Counter[str] = field(default_factory=Counter)
    factors: Counter[str] = field(default_factory=Counter)
    flags: int = 0

    def to_json(self, *, suppressed: bool = True) -> dict[str, Any]:
        show = suppress if suppressed else (lambda n: n)
        grades = [self.grades[g.value] for g in RiskGrade]
        shown = suppress_parts(grades) if suppressed else list(grades)
        return {
            "partnership": self.lscp,
            "month": self.month,
            "children_assessed": show(self.children_assessed),
            "grades": {g.value: v for g, v in zip(RiskGrade, shown, strict=True)},
            "factors": {f.value: show(self.factors[f.value]) for f in RiskFactor},
            "cumulative_flags": show(self.flags),
        }

    def csv_row(self) -> list[int | str]:
        data = self.to_json()
        return [
            self.lscp,
            self.month,
            data["children_assessed"],
            *(data["grades"][g.value] for g in RiskGrade),
            *(data["factors"][f.value] for f in RiskFactor),
            data["cumulative_flags"],
        ]


#: The CSV header that ``RiskRow.csv_row`` fills.
RISK_CSV_HEADER: tuple[str, ...] = (
    "partnership",
    "month",
    "children_assessed",
    *(f"grade_{g.value}" for g in RiskGrade),
    *(f"factor_{f.value}" for f in RiskFactor),
    "cumulative_flags",
)


def _month(moment: datetime) -> str:
    return moment.astimezone(_LONDON).strftime("%Y-%m")


def risk_report(
    records: Iterable[AuditRecord], period: Period = ALL_TIME, *, lscp: str | None = None
) -> list[RiskRow]:
    """Per partnership and month (of the decision, Europe/London), sorted.

    A child's assessment counts once per partnership that decided on its
    concern (any decision: disclosed, withheld or referred), in the month of
    the first such decision; a flag counts once per flagged child and
    partnership. Only records whose time is in ``period`` count.
    """
    rows: dict[tuple[str, str], RiskRow] = {}
    seen_children: set[tuple[str, str, str]] = set()
    seen_flags: set[tuple[str, str, tuple[str, ...]]] = set()
    seen_entries: set[str] = set()
    decisions = {AuditEvent.DISCLOSED, AuditEvent.WITHHELD, AuditEvent.REFERRED}
    for r in records:
        if r.entry_id in seen_entries or not r.lscp or not r.concern_id:
            continue
        seen_entries.add(r.entry_id)
        if (lscp is not None and r.lscp != lscp) or not period.contains(r.at):
            continue
        key = (r.lscp, _month(r.at))
        if r.event is AuditEvent.RISK_FLAGGED:
            flag = (r.lscp, r.concern_id, tuple(sorted(r.subject_pseudonyms)))
            if flag not in seen_flags:
                seen_flags.add(flag)
                rows.setdefault(key, RiskRow(*key)).flags += 1
            continue
        if r.event not in decisions:
            continue
        for reason in r.reasons:
            parsed = parse_risk_reason(reason)
            if parsed is None:
                continue
            child = (r.lscp, r.concern_id, parsed.subject_ref)
            if child in seen_children:
                continue
            seen_children.add(child)
            row = rows.setdefault(key, RiskRow(*key))
            row.children_assessed += 1
            row.grades[parsed.grade.value] += 1
            row.factors.update(f.value for f in set(parsed.factors))
    return [rows[k] for k in sorted(rows)]


def risk_tables(
    records: Iterable[AuditRecord], *, lscp: str, start: datetime, end: datetime
) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """For the analysts' dashboard: one partnership's ``[start, end)``.

    Returns (children assessed per risk factor, with the child's grade as the
    column: each child once, in the period of the first decision about its
    concern; a child with no factor is under "none recorded"), and (flags per
    threshold, column ``RISK_FLAGGED``; a flag that met two thresholds counts
    under each). Counts only: no id, pseudonym or text leaves this function.
    """
    factors: dict[str, Counter[str]] = {}
    flags: dict[str, Counter[str]] = {}
    seen: set[tuple[str, str]] = set()
    flagged: set[tuple[str, tuple[str, ...]]] = set()
    decisions = {AuditEvent.DISCLOSED, AuditEvent.WITHHELD, AuditEvent.REFERRED}
    for r in sorted(records, key=lambda r: r.at):
        if r.lscp != lscp or not r.concern_id or not start <= r.at < end:
            continue
        if r.event is AuditEvent.RISK_FLAGGED:
            key = (r.concern_id, tuple(sorted(r.subject_pseudonyms)))
            if key in flagged:
                continue
            flagged.add(key)
            for threshold in dict.fromkeys(m for x in r.reasons for m in _THRESHOLD.findall(x)):
                flags.setdefault(threshold, Counter())["RISK_FLAGGED"] += 1
            continue
        if r.event not in decisions:
            continue
        for reason in r.reasons:
            parsed = parse_risk_reason(reason)
            if parsed is None or (r.concern_id, parsed.subject_ref) in seen:
                continue
            seen.add((r.concern_id, parsed.subject_ref))
            for factor in dict.fromkeys(f.value for f in parsed.factors) or (_NONE,):
                factors.setdefault(factor, Counter())[parsed.grade.value] += 1
    return factors, flags
