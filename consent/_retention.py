"""Retention: how long a recipient may keep a disclosure (issue 15.5). Pure.

Each data-sharing agreement names a retention (an ISO 8601 duration of years,
months, weeks and days, e.g. ``P6Y``). A disclosure is governed by the
agreement it was shared under: the one for the recipient's agency type whose
purpose the disclosure carries. If more than one fits, the longest retention
is used: deleting a safeguarding record early can harm a child, and the
agreements' DPOs chose each period as a maximum, not a minimum.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from schemas import AgencyType

from ._policy import Agreement, PolicySet

__all__ = ["add_retention", "governing_agreement", "retention_days"]

_PARTS = re.compile(r"\AP(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?\Z")


def _parts(duration: str) -> tuple[int, int, int, int]:
    found = _PARTS.match(duration)
    if found is None or duration == "P":
        raise ValueError(f"not a retention duration: {duration[:20]!r}")
    years, months, weeks, days = (int(g or 0) for g in found.groups())
    return years, months, weeks, days


def add_retention(start: datetime, duration: str) -> datetime:
    """``start`` plus ``duration`` in calendar terms (29 Feb + P1Y is 28 Feb)."""
    years, months, weeks, days = _parts(duration)
    month_index = start.month - 1 + months
    year = start.year + years + month_index // 12
    month = month_index % 12 + 1
    day = min(start.day, _days_in(year, month))
    return start.replace(year=year, month=month, day=day) + timedelta(weeks=weeks, days=days)


def _days_in(year: int, month: int) -> int:
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return (following - date(year, month, 1)).days


def retention_days(duration: str) -> int:
    """The shortest number of days ``duration`` can last (for a topic's retention.ms)."""
    years, months, weeks, days = _parts(duration)
    return years * 365 + months * 28 + weeks * 7 + days


def governing_agreement(
    policy: PolicySet, recipient_agency_type: AgencyType | str, purpose: str
) -> Agreement | None:
    """The agreement a disclosure to this agency type with this purpose was shared under."""
    agency = AgencyType(recipient_agency_type)
    matches = [
        a
        for a in policy.agreements
        if agency in a.recipient_agency_types and a.purpose.strip() == purpose.strip()
    ]
    if not matches:
        return None
    return max(matches, key=lambda a: (retention_days(a.retention), a.id))
