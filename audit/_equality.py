"""Equality monitoring, aggregate only (issue 14; docs/EQUALITY.md).

Pure functions over audit records, like ``_risk``. The router never keeps a
child's detailed ethnic group: with every decision about a concern it writes
one reason line that counts the concern's children by ONS 2021 *high-level*
group, with no subject reference (``equality_reasons``). ``equality_counts``
reads those lines back, each concern once per partnership, and adds them up
per partnership and concern type. Nothing here returns anything per child.

Rates and the relative rate index (RRI) are computed against the shipped
child-population reference data (``deploy/equality/population-0-17.toml``,
read by ``load_population``). Suppression is the caller's: the analysts'
dashboard applies its own rule to every count before anything leaves, and
hides a rate or an RRI wherever the count behind it is hidden.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from schemas import AuditEvent, ConcernModel, EthnicGroupHigh

from ._record import AuditRecord

__all__ = [
    "MONITORED_GROUPS",
    "Population",
    "equality_counts",
    "equality_reasons",
    "is_equality_reason",
    "load_population",
    "parse_equality_reason",
    "rate_per_10k",
    "relative_rate_index",
]

#: The groups with a census population (rates and RRI); NOT_STATED is counted only.
MONITORED_GROUPS: tuple[EthnicGroupHigh, ...] = (
    EthnicGroupHigh.ASIAN,
    EthnicGroupHigh.BLACK,
    EthnicGroupHigh.MIXED,
    EthnicGroupHigh.WHITE,
    EthnicGroupHigh.OTHER,
)
_PREFIX = "equality monitoring (aggregate): children by ethnic group for concern type "
_LINE = re.compile(
    r"\A" + re.escape(_PREFIX) + r"(?P<ctype>[A-Z_]+): (?P<counts>[A-Z_]+ \d+(?:, [A-Z_]+ \d+)*)\Z"
)
_GROUPS = {g.value for g in EthnicGroupHigh}
_DECISIONS = {AuditEvent.DISCLOSED, AuditEvent.WITHHELD, AuditEvent.REFERRED}


def equality_reasons(concern: ConcernModel) -> tuple[str, ...]:
    """The concern's children counted by high-level group, as one reason line.

    Empty when no child has an ethnicity recorded (concerns before v4, or not
    asked): those concerns are not in the monitoring. A child with none among
    children who have one counts as NOT_STATED. No subject reference, no
    detailed category.
    """
    children = concern.children()
    if not any(c.ethnicity is not None for c in children):
        return ()
    counts = Counter(
        (c.ethnicity.high_level if c.ethnicity is not None else EthnicGroupHigh.NOT_STATED)
        for c in children
    )
    body = ", ".join(f"{g.value} {counts[g]}" for g in EthnicGroupHigh if counts[g])
    return (f"{_PREFIX}{concern.concern_type.value}: {body}",)


def parse_equality_reason(reason: str) -> tuple[str, Counter[str]] | None:
    """(concern type, children per high-level group) from a reason line, or None."""
    match = _LINE.match(reason)
    if match is None:
        return None
    counts: Counter[str] = Counter()
    for part in match.group("counts").split(", "):
        group, _, number = part.partition(" ")
        if group not in _GROUPS:
            return None
        counts[group] += int(number)
    return match.group("ctype"), counts


def is_equality_reason(reason: str) -> bool:
    """True for the router's equality line: views of one subject's trail leave it out."""
    return reason.startswith(_PREFIX)


def equality_counts(
    records: Iterable[AuditRecord],
    *,
    lscp: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Counter[str]]:
    """Children per concern type and high-level group, for one partnership.

    Each concern counts once for the partnership (its first decision there
    that carries the equality line), in ``[start, end)`` when given.
    """
    table: dict[str, Counter[str]] = {}
    seen: set[str] = set()
    for r in records:
        if r.event not in _DECISIONS or r.lscp != lscp or not r.concern_id:
            continue
        if r.concern_id in seen:
            continue
        if (start is not None and r.at < start) or (end is not None and r.at >= end):
            continue
        for reason in r.reasons:
            parsed = parse_equality_reason(reason)
            if parsed is None:
                continue
            seen.add(r.concern_id)
            ctype, counts = parsed
            table.setdefault(ctype, Counter()).update(counts)
            break
    return table


@dataclass(frozen=True)
class Population:
    """Children aged 0-17 per partnership and high-level group (reference data)."""

    source: str
    caveat: str
    children: Mapping[str, Mapping[str, int]]  # lscp -> group -> children
    checked: str = ""  # when and against what the figures were checked; "" if never

    @property
    def warning(self) -> str:
        """What to say beside every rate until the figures have been checked."""
        return "" if self.checked else self.caveat or "reference data not yet checked"

    def of(self, lscp: str) -> Mapping[str, int]:
        return self.children.get(lscp, {})


def load_population(path: Path) -> Population:
    """Read the child-population reference file; say what to fix if it is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(
            f"cannot read the population reference data {path}: {exc}; "
            "restore it from deploy/equality/ in the release"
        ) from None
    children: dict[str, dict[str, int]] = {}
    for lscp, groups in data.get("children_0_17", {}).items():
        row = {g.value: int(groups.get(g.value, 0)) for g in MONITORED_GROUPS}
        if any(v <= 0 for v in row.values()):
            raise ValueError(
                f"{path}: partnership {lscp} needs a positive child population for "
                f"every group ({', '.join(g.value for g in MONITORED_GROUPS)})"
            )
        children[lscp] = row
    return Population(
        str(data.get("source", "")),
        str(data.get("caveat", "")),
        children,
        str(data.get("checked", "")),
    )


def rate_per_10k(count: int, population: int) -> float | None:
    """Children per 10,000 of the group's child population (None without a population)."""
    if population <= 0:
        return None
    return count * 10_000 / population


def relative_rate_index(rate: float | None, white_rate: float | None) -> float | None:
    """Rate for a group divided by the rate for the White group (None when undefined)."""
    if rate is None or white_rate is None or white_rate == 0:
        return None
    return rate / white_rate
