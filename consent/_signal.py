"""The cumulative-concern signal: window arithmetic and thresholds (issue 16).

Pure. Child Safeguarding Practice Reviews keep finding that nobody saw the
pattern across incidents and agencies; Working Together to Safeguard Children
2023 asks practitioners to consider cumulative harm. The router keeps, per
child pseudonym, the concerns it routed (``SignalEvent``: id, time, source
agency, grade and the partnerships it reached; no personal data), and asks
``cumulative_flag`` whether a partnership's ``CumulativeThreshold`` is met by
the new concern and those before it.

Window arithmetic: an earlier concern counts toward a threshold of
``window_days`` when it was reported within the ``window_days`` days ending at
the new concern's report (``now - window < reported_at <= now``), reached the
partnership asking (the signal crosses a partnership boundary only where the
child's routing did), and is not the new concern itself. Concerns reported
after the new one (published out of order) are not "earlier" and do not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from schemas import Lscp, RiskGrade

__all__ = [
    "CumulativeFlag",
    "CumulativeThreshold",
    "SignalEvent",
    "ThresholdMet",
    "cumulative_flag",
    "in_window",
    "prune_events",
]

_RANK = {grade: grade.rank for grade in RiskGrade}


class CumulativeThreshold(BaseModel):
    """One partnership-configured threshold (``[[cumulative_threshold]]`` in deploy/policy/).

    Met when, within ``window_days`` ending at the new concern, the child has at
    least ``min_concerns`` concerns (the new one included) and concerns from at
    least ``min_agencies`` distinct source agencies; give one or both.
    ``lscps`` are the partnerships that use it (default: all four).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str = Field(min_length=1)
    window_days: int = Field(ge=1, le=3650)
    min_concerns: int | None = Field(default=None, ge=2)
    min_agencies: int | None = Field(default=None, ge=2)
    lscps: tuple[Lscp, ...] = tuple(Lscp)
    #: Where the number comes from (guidance, a review's finding, a partnership decision).
    source: str = Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _something_to_count(self) -> CumulativeThreshold:
        if self.min_concerns is None and self.min_agencies is None:
            raise ValueError("give min_concerns, min_agencies or both")
        return self

    def describe(self) -> str:
        parts = []
        if self.min_concerns is not None:
            parts.append(f"{self.min_concerns} concerns")
        if self.min_agencies is not None:
            parts.append(f"{self.min_agencies} agencies")
        return f"{' and '.join(parts)} within {self.window_days} days"


@dataclass(frozen=True, slots=True)
class SignalEvent:
    """One routed concern about a child, as the signal remembers it (no personal data)."""

    concern_id: str
    reported_at: datetime
    source_agency: str
    grade: RiskGrade
    lscps: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "c": self.concern_id,
            "t": int(self.reported_at.timestamp() * 1000),
            "a": self.source_agency,
            "g": self.grade.value,
            "l": list(self.lscps),
        }


@dataclass(frozen=True, slots=True)
class ThresholdMet:
    """A threshold met: the counts in its window and the earlier concerns behind them."""

    threshold_id: str
    title: str
    window_days: int
    concerns: int
    agencies: int
    highest_grade: RiskGrade
    earlier_concern_ids: tuple[str, ...]
    source: str

    def describe(self) -> str:
        return (
            f"cumulative-concern threshold '{self.threshold_id}' ({self.title}) met: "
            f"{self.concerns} concern(s) from {self.agencies} agency(ies) within "
            f"{self.window_days} days, highest grade {self.highest_grade}; earlier concerns "
            f"{', '.join(self.earlier_concern_ids)} (source: {self.source})"
        )


@dataclass(frozen=True, slots=True)
class CumulativeFlag:
    """What the front door of ``lscp`` is told about one child's cumulative concerns."""

    lscp: Lscp
    subject_ref: str
    met: tuple[ThresholdMet, ...]

    @property
    def earlier_concern_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for m in self.met for c in m.earlier_concern_ids))

    def reasons(self) -> tuple[str, ...]:
        return tuple(
            f"child {self.subject_ref}: {m.describe()}; referred to the front door whatever "
            "this concern's own grade (Working Together 2023: cumulative harm)"
            for m in self.met
        )

    def to_payload(self) -> dict[str, Any]:
        """The flag as the front door's disclosure carries it (inside the encrypted payload)."""
        return {
            "subject_ref": self.subject_ref,
            "earlier_concern_ids": list(self.earlier_concern_ids),
            "thresholds": [
                {
                    "id": m.threshold_id,
                    "title": m.title,
                    "window_days": m.window_days,
                    "concerns": m.concerns,
                    "agencies": m.agencies,
                    "highest_grade": m.highest_grade.value,
                }
                for m in self.met
            ],
        }


def in_window(
    history: Iterable[SignalEvent], current: SignalEvent, lscp: Lscp | str, window_days: int
) -> list[SignalEvent]:
    """The earlier concerns of ``history`` that count toward a ``window_days`` window ending
    at ``current`` for partnership ``lscp`` (see the module docstring), oldest first."""
    start = current.reported_at - timedelta(days=window_days)
    seen: dict[str, SignalEvent] = {}
    for event in history:
        if (
            event.concern_id != current.concern_id
            and start < event.reported_at <= current.reported_at
            and Lscp(lscp).value in event.lscps
        ):
            seen.setdefault(event.concern_id, event)
    return sorted(seen.values(), key=lambda e: (e.reported_at, e.concern_id))


def cumulative_flag(
    history: Sequence[SignalEvent],
    current: SignalEvent,
    lscp: Lscp,
    thresholds: Sequence[CumulativeThreshold],
    *,
    subject_ref: str,
) -> CumulativeFlag | None:
    """The flag for ``lscp``'s front door if any of its thresholds is met, else None."""
    met: list[ThresholdMet] = []
    for threshold in thresholds:
        if lscp not in threshold.lscps:
            continue
        earlier = in_window(history, current, lscp, threshold.window_days)
        window = [*earlier, current]
        concerns = len(window)
        agencies = len({e.source_agency for e in window})
        if threshold.min_concerns is not None and concerns < threshold.min_concerns:
            continue
        if threshold.min_agencies is not None and agencies < threshold.min_agencies:
            continue
        met.append(
            ThresholdMet(
                threshold_id=threshold.id,
                title=threshold.title,
                window_days=threshold.window_days,
                concerns=concerns,
                agencies=agencies,
                highest_grade=max((e.grade for e in window), key=_RANK.__getitem__),
                earlier_concern_ids=tuple(e.concern_id for e in earlier),
                source=threshold.source,
            )
        )
    if not met:
        return None
    return CumulativeFlag(lscp=lscp, subject_ref=subject_ref, met=tuple(met))


def prune_events(
    events: Iterable[SignalEvent], newest: datetime, keep_days: int
) -> tuple[SignalEvent, ...]:
    """``events`` without duplicates and without any too old to count for a window of
    ``keep_days`` ending at ``newest``, oldest first (what the state store keeps)."""
    start = newest - timedelta(days=keep_days)
    unique: dict[str, SignalEvent] = {}
    for event in events:
        if event.reported_at > start:
            unique[event.concern_id] = event
    return tuple(sorted(unique.values(), key=lambda e: (e.reported_at, e.concern_id)))
