"""The analysts' dashboard: one partnership's aggregates per week or month.

Pure functions over audit records (read from the audit log by the app) and
the tracked progress of each disclosure (``broker.tracked_from_records``).
Nothing here names a person, a concern or a disclosure: every figure is a
count or a median of a group.

Small-number suppression (``suppress``):
- primary: a count from 1 to 4 is shown as ``"<5"`` (0 stays 0: nothing to protect);
- secondary: in a row with a total, if exactly one cell is suppressed, the next
  smallest non-zero cell is hidden too (shown as ``"x"``), so the total cannot
  give the suppressed one away; a total under 5 is itself ``"<5"``;
- a median or other statistic over fewer than 5 cases is not shown (``"<5 cases"``).
The charts, their tables and the CSV/JSON exports all come from the same
suppressed cells, so an export never reveals more than the page.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from statistics import median
from zoneinfo import ZoneInfo

from audit import AuditRecord, risk_tables
from audit._reports import concern_type_of  # the concern type the router wrote in the reasons
from consent import Tracked, completed_at
from schemas import AuditEvent

__all__ = [
    "SMALL",
    "Cell",
    "Chart",
    "Dashboard",
    "bucket_of",
    "buckets",
    "build_dashboard",
    "suppress",
]

LONDON = ZoneInfo("Europe/London")
#: Counts below this are suppressed.
SMALL = 5
DECISIONS = ("DISCLOSED", "WITHHELD", "REFERRED")
GRADES = ("HIGH", "MEDIUM", "LOW", "not recorded")
_GRADE = re.compile(r"\brisk grade (HIGH|MEDIUM|LOW)\b")


# -- periods ----------------------------------------------------------------------------


def bucket_of(moment: datetime, grain: str) -> str:
    """``2026-W49`` (ISO week, UK time) or ``2026-12`` (calendar month, UK time)."""
    local = moment.astimezone(LONDON).date()
    if grain == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{local.year}-{local.month:02d}"


def _bucket_bounds(bucket: str) -> tuple[datetime, datetime]:
    if "-W" in bucket:
        start = date.fromisocalendar(int(bucket[:4]), int(bucket[6:]), 1)
        end = start + timedelta(days=7)
    else:
        year, month = int(bucket[:4]), int(bucket[5:])
        start = date(year, month, 1)
        end = date(year + month // 12, month % 12 + 1, 1)
    zone = LONDON
    return (
        datetime(start.year, start.month, start.day, tzinfo=zone),
        datetime(end.year, end.month, end.day, tzinfo=zone),
    )


def buckets(records: Iterable[AuditRecord], grain: str) -> list[str]:
    """The periods that have any decision, newest first."""
    found = {bucket_of(r.at, grain) for r in records if r.event.value in DECISIONS}
    return sorted(found, reverse=True)


# -- suppression --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A count as published: ``value`` is None when it is suppressed."""

    shown: str
    value: int | None

    @property
    def suppressed(self) -> bool:
        return self.value is None


def _primary(count: int) -> Cell:
    if 0 < count < SMALL:
        return Cell("<5", None)
    return Cell(str(count), count)


def suppress(counts: Sequence[int]) -> tuple[list[Cell], Cell]:
    """A row of counts and its total, with primary and secondary suppression."""
    cells = [_primary(c) for c in counts]
    hidden = [i for i, c in enumerate(cells) if c.suppressed]
    if len(hidden) == 1:
        others = sorted((c, i) for i, c in enumerate(counts) if i not in hidden and c > 0)
        if others:
            cells[others[0][1]] = Cell("x", None)
    return cells, _primary(sum(counts))


# -- charts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """One chart and the table behind it (rows × columns of suppressed cells)."""

    key: str
    title: str
    row_label: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Cell, ...], Cell], ...]  # (label, cells, total)
    note: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "chart": self.key,
            "title": self.title,
            "suppression": "counts 1-4 shown as <5; x hides a second cell so a total "
            "cannot reveal a suppressed one",
            "columns": [self.row_label, *self.columns, "total"],
            "rows": [
                [label, *(c.shown for c in cells), total.shown] for label, cells, total in self.rows
            ],
        }

    def csv_rows(self) -> list[list[str]]:
        data = self.to_json()
        columns = data["columns"]
        rows = data["rows"]
        assert isinstance(columns, list) and isinstance(rows, list)
        return [[str(c) for c in columns], *[[str(v) for v in row] for row in rows]]

    def svg(self) -> str:
        """A horizontal stacked bar per row, drawn on the server (no script, no CDN).

        Each shown count is a segment of its width; a suppressed cell is a hatched
        segment of a fixed small width labelled with what the table shows.
        """
        palette = ("#1d70b8", "#d4351c", "#f47738", "#00703c", "#4c2c92", "#505a5f")
        width, left, bar, gap = 720, 240, 22, 10
        biggest = max((sum(c.value or 0 for c in cells) for _, cells, _ in self.rows), default=0)
        scale = (width - left - 60) / max(biggest, 1)
        height = 30 + len(self.rows) * (bar + gap) + 30
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'aria-label="{escape(self.title)}" data-chart="{escape(self.key)}">',
            '<defs><pattern id="hatch-' + escape(self.key) + '" width="6" height="6" '
            'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
            '<rect width="6" height="6" fill="#f3f2f1"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#b1b4b6" stroke-width="3"/>'
            "</pattern></defs>",
        ]
        for n, column in enumerate(self.columns):
            key_x = left + n * 110
            parts.append(
                f'<rect x="{key_x}" y="4" width="12" height="12" fill="{palette[n % 6]}"/>'
                f'<text x="{key_x + 16}" y="14" font-size="11">{escape(column.lower())}</text>'
            )
        for i, (label, cells, total) in enumerate(self.rows):
            y = 30 + i * (bar + gap)
            parts.append(
                f'<text x="{left - 6}" y="{y + 15}" font-size="12" text-anchor="end">'
                f"{escape(label)}</text>"
            )
            x = float(left)
            for n, cell in enumerate(cells):
                if cell.value == 0:
                    continue
                if cell.value is None:
                    w = 18.0
                    fill = f"url(#hatch-{escape(self.key)})"
                else:
                    w = cell.value * scale
                    fill = palette[n % 6]
                parts.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{fill}" '
                    f'data-column="{escape(self.columns[n])}" data-shown="{escape(cell.shown)}">'
                    f"<title>{escape(label)}, {escape(self.columns[n].lower())}: "
                    f"{escape(cell.shown)}</title></rect>"
                )
                x += w
            parts.append(
                f'<text x="{x + 6:.1f}" y="{y + 15}" font-size="12" class="total">'
                f"{escape(total.shown)}</text>"
            )
        parts.append("</svg>")
        return "".join(parts)


def _chart(
    key: str,
    title: str,
    row_label: str,
    columns: Sequence[str],
    table: dict[str, Counter[str]],
    order: Sequence[str] | None = None,
    note: str = "",
) -> Chart:
    labels = list(order) if order is not None else sorted(table)
    rows = []
    for label in labels:
        counts = table.get(label, Counter())
        cells, total = suppress([counts.get(c, 0) for c in columns])
        rows.append((label, tuple(cells), total))
    return Chart(key, title, row_label, tuple(columns), tuple(rows), note)


# -- the dashboard -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeliness:
    """Deadlines and times for one period (statistics over fewer than 5 cases hidden)."""

    with_deadline: Cell
    met: Cell
    breached: Cell
    open_in_time: Cell
    receipt_median: str
    action_median: str


@dataclass(frozen=True)
class Dashboard:
    partnership: str
    grain: str
    bucket: str
    periods: tuple[str, ...]
    charts: tuple[Chart, ...]
    timeliness: Timeliness
    notes: tuple[str, ...] = field(default=())

    def chart(self, key: str) -> Chart | None:
        return next((c for c in self.charts if c.key == key), None)


def _hours(values: list[float]) -> str:
    if len(values) < SMALL:
        return "<5 cases" if values else "no cases"
    value = median(values) / 3600
    return f"{value:.1f} h" if value >= 1 else f"{value * 60:.0f} min"


def build_dashboard(
    records: Sequence[AuditRecord],
    tracked: Sequence[Tracked],
    *,
    partnership: str,
    grain: str,
    bucket: str | None,
    now: datetime | None = None,
) -> Dashboard:
    """The partnership's dashboard for one week or month (the newest with data by default).

    ``records`` may hold the whole log: only decisions of ``partnership`` count.
    Quarantined records have no partnership (they were never routed), so the
    quarantine chart is the exchange's, labelled as such.
    """
    moment = now or datetime.now(UTC)
    grain = "week" if grain == "week" else "month"
    own = [r for r in records if r.lscp == partnership]
    periods = buckets(own, grain) or [bucket_of(moment, grain)]
    chosen = bucket if bucket in periods else periods[0]
    start, end = _bucket_bounds(chosen)

    def inside(at: datetime) -> bool:
        return start <= at < end

    concern_types: dict[str, str] = {}
    grades: dict[str, str] = {}
    for r in records:
        if not r.concern_id:
            continue
        if r.concern_id not in concern_types:
            found = concern_type_of(r)
            if found:
                concern_types[r.concern_id] = found
        if r.concern_id not in grades:
            for reason in r.reasons:
                match = _GRADE.search(reason)
                if match:
                    grades[r.concern_id] = match.group(1)
                    break
    by_type: dict[str, Counter[str]] = {}
    by_grade: dict[str, Counter[str]] = {}
    for r in own:
        event = r.event.value
        if event not in DECISIONS or not inside(r.at):
            continue
        concern = r.concern_id or ""
        by_type.setdefault(concern_types.get(concern, "not recorded"), Counter())[event] += 1
        by_grade.setdefault(grades.get(concern, "not recorded"), Counter())[event] += 1
    quarantine: dict[str, Counter[str]] = {}
    for r in records:
        if r.event is AuditEvent.QUARANTINED and inside(r.at):
            for code in r.reason_codes or ("(no code)",):
                quarantine.setdefault(code, Counter())["QUARANTINED"] += 1
    mine = [t for t in tracked if t.lscp == partnership and inside(t.decided_at)]
    with_deadline = [t for t in mine if t.due is not None]
    met = breached = open_in_time = 0
    for t in with_deadline:
        assert t.due is not None
        done = completed_at(t)
        if done is not None and done <= t.due:
            met += 1
        elif (done is not None and done > t.due) or t.due <= moment:
            breached += 1
        else:
            open_in_time += 1
    receipt_waits = [(t.received_at - t.decided_at).total_seconds() for t in mine if t.received_at]
    action_waits = [(t.actioned_at - t.decided_at).total_seconds() for t in mine if t.actioned_at]
    timeliness_counts: dict[str, Counter[str]] = {
        "deadlines": Counter({"MET": met, "BREACHED": breached, "OPEN": open_in_time})
    }
    risk_factors, risk_flags = risk_tables(records, lscp=partnership, start=start, end=end)
    charts = (
        _chart(
            "concern-type",
            "Decisions by concern type",
            "concern type",
            DECISIONS,
            by_type,
        ),
        _chart(
            "risk-grade",
            "Decisions by risk grade",
            "risk grade",
            DECISIONS,
            by_grade,
            order=[g for g in GRADES if g in by_grade],
        ),
        _chart(
            "timeliness",
            "Deadlines: met, breached, still open in time",
            "disclosures",
            ("MET", "BREACHED", "OPEN"),
            timeliness_counts,
        ),
        # Issue 16 (docs/RISK.md): risk-factor prevalence and cumulative-concern flags.
        _chart(
            "risk-factors",
            "Children assessed, by risk factor and grade (a child may have several factors)",
            "risk factor",
            ("HIGH", "MEDIUM", "LOW"),
            risk_factors,
        ),
        _chart(
            "cumulative-flags",
            "Cumulative-concern flags, by threshold met (a flag may meet more than one)",
            "threshold",
            ("RISK_FLAGGED",),
            risk_flags,
        ),
        _chart(
            "quarantine",
            "Quarantine by reason (the whole exchange: a quarantined record has no partnership)",
            "reason code",
            ("QUARANTINED",),
            quarantine,
        ),
    )
    cells, total = suppress([met, breached, open_in_time])
    return Dashboard(
        partnership=partnership,
        grain=grain,
        bucket=chosen,
        periods=tuple(periods),
        charts=charts,
        timeliness=Timeliness(
            with_deadline=total,
            met=cells[0],
            breached=cells[1],
            open_in_time=cells[2],
            receipt_median=_hours(receipt_waits),
            action_median=_hours(action_waits),
        ),
    )
