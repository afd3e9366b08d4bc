"""A simulated week of traffic on a fake clock, for the timeliness monitor (issue 5).

Synthetic concerns arrive across a week that has a weekend, a bank holiday
and a half-term for one partnership. Each is routed and decided by the real
pure code (routing, ``consent.decide``, ``consent.deadline_for``). Recipients
behave like real ones: most answer promptly, some slowly, one never answers
and one never even receives (its adapter is down). The monitor's pure core
(``consent.alerts_due``) is evaluated every ``tick`` of fake time, exactly as
the running monitor does, and every alert is recorded when first seen.

No I/O beyond reading the deploy/ files once; no wall clock; deterministic
for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from adapters import synthetic_concerns
from broker import candidate_recipients, load_deployment, resolve_partnerships
from consent import Deny, Permit, decide
from consent._deadlines import (
    LONDON,
    Calendar,
    Calendars,
    Closure,
    deadline_for,
    parse_calendars,
)
from consent._timeliness import DueAlert, Tracked, alerts_due, completed_at
from schemas import AgencyType, ConcernModel

__all__ = ["INJECTED_CLOSURE", "WEEK_START", "WeekReport", "simulate_week", "summary"]

#: Thursday 30 April 2026, 00:00 London: the week holds Sat/Sun 2–3 May and the
#: Early May bank holiday (Mon 4 May).
WEEK_START = datetime(2026, 4, 29, 23, 0, tzinfo=UTC)
#: Injected, because no real 2026 week has a bank holiday and a half-term for
#: only one partnership: the Isle of Wight's schools are closed 5–8 May.
INJECTED_CLOSURE = ("isle-of-wight", date(2026, 5, 5), date(2026, 5, 8), "half term (simulated)")


@dataclass
class WeekReport:
    disclosures: int = 0
    with_deadline: int = 0
    due_in_week: int = 0
    met: int = 0
    breached: int = 0
    alerts: dict[str, int] = field(default_factory=dict)
    behaviours: dict[str, int] = field(default_factory=dict)
    by_rule: dict[str, int] = field(default_factory=dict)
    tracked: list[Tracked] = field(default_factory=list)
    first_seen: dict[str, tuple[DueAlert, datetime]] = field(default_factory=dict)
    end: datetime = WEEK_START
    tick: timedelta = timedelta(minutes=5)

    @property
    def met_share(self) -> float:
        return self.met / self.due_in_week if self.due_in_week else 1.0


def _behaviour(rng: random.Random, recipient_id: str, never: set[str], down: set[str]) -> str:
    if recipient_id in down:
        return "down"
    if recipient_id in never:
        return "never"
    roll = rng.random()
    return "prompt" if roll < 0.75 else "slow" if roll < 0.95 else "late"


def _with_injected_closure(calendars: Calendars, lscp: str) -> Calendar | None:
    school = calendars.school(lscp)
    if school is None or lscp != INJECTED_CLOSURE[0]:
        return school
    closure = Closure(first=INJECTED_CLOSURE[1], last=INJECTED_CLOSURE[2], name=INJECTED_CLOSURE[3])
    return replace(school, closures=(*school.closures, closure))


def simulate_week(
    deploy_dir: Path,
    *,
    seed: int = 7,
    concerns: int = 400,
    tick: timedelta = timedelta(minutes=5),
    never_answers: set[str] | None = None,
    adapter_down: set[str] | None = None,
    expiry: timedelta = timedelta(hours=4),
) -> WeekReport:
    rng = random.Random(seed)  # noqa: S311 (simulation, not security)
    deployment = load_deployment(deploy_dir)
    calendar_files = {
        str(p): p.read_text(encoding="utf-8")
        for p in sorted((deploy_dir / "calendars").glob("*.toml"))
    }
    calendars = parse_calendars(calendar_files)
    zone = ZoneInfo(LONDON)
    never = never_answers if never_answers is not None else {"southampton-health"}
    down = adapter_down if adapter_down is not None else {"isle-of-wight-yjs"}

    report = WeekReport(tick=tick)
    end = WEEK_START + timedelta(days=7)
    report.end = end
    raw = synthetic_concerns(concerns, seed=seed, now=end)
    for index, data in enumerate(raw):
        concern = ConcernModel.model_validate(data)
        decided_at = WEEK_START + timedelta(seconds=rng.uniform(0, 7 * 86400))
        routing = resolve_partnerships(concern, deployment.postcodes)
        for candidate in candidate_recipients(concern, routing, deployment.directory):
            recipient = candidate.recipient
            decision = decide(
                concern, recipient, deployment.policy, concern.consent.state, decided_at
            )
            if isinstance(decision, Deny):
                continue
            outcome = "PERMIT" if isinstance(decision, Permit) else "REFER"
            deadline = deadline_for(
                concern_type=concern.concern_type,
                risk_grade=concern.risk_grade,
                recipient_agency_type=recipient.agency_type,
                outcome=outcome,
                decided_at=decided_at,
                school_calendar=_with_injected_closure(calendars, recipient.lscp.value),
                bank_holidays=calendars.bank_holidays,
                zone=zone,
                local=deployment.timeliness,
            )
            report.disclosures += 1
            due = deadline.due if deadline else None
            if deadline is not None:
                report.with_deadline += 1
                report.by_rule[deadline.rule.value] = report.by_rule.get(deadline.rule.value, 0) + 1
            behaviour = _behaviour(rng, recipient.id, never, down)
            report.behaviours[behaviour] = report.behaviours.get(behaviour, 0) + 1
            allowed = (due - decided_at) if due else timedelta(hours=24)
            received = (
                None if behaviour == "down" else decided_at + timedelta(seconds=rng.uniform(1, 30))
            )
            if behaviour == "prompt":
                acted = decided_at + allowed * rng.uniform(0.05, 0.45)
            elif behaviour == "slow":
                acted = decided_at + allowed * rng.uniform(0.55, 0.98)
            elif behaviour == "late":
                acted = decided_at + allowed * rng.uniform(1.05, 1.6)
            else:
                acted = None
            notification = recipient.agency_type in (AgencyType.EDUCATION, AgencyType.LA_EDUCATION)
            report.tracked.append(
                Tracked(
                    disclosure_id=f"sim-{index}-{recipient.id}",
                    concern_id=concern.concern_id,
                    recipient_id=recipient.id,
                    lscp=recipient.lscp.value,
                    source=concern.source_agency,
                    decided_at=decided_at,
                    due=due,
                    notification_only=notification,
                    received_at=received,
                    opened_at=acted,
                    actioned_at=acted,
                )
            )

    # The monitor, evaluated every tick of fake time over what is known by then.
    now = WEEK_START
    while now <= end:
        known = [_as_known_at(t, now) for t in report.tracked if t.decided_at <= now]
        for alert in alerts_due(known, now, expiry=expiry):
            report.first_seen.setdefault(alert.alert_id, (alert, now))
        now += tick

    for item in report.tracked:
        if item.due is not None and item.due <= end:
            report.due_in_week += 1
            done = completed_at(item)
            if done is not None and done <= item.due:
                report.met += 1
            else:
                report.breached += 1
    counts: dict[str, int] = {}
    for alert, _ in report.first_seen.values():
        counts[alert.level.value] = counts.get(alert.level.value, 0) + 1
    report.alerts = counts
    return report


def _as_known_at(item: Tracked, now: datetime) -> Tracked:
    """The monitor only knows the receipts that have happened by ``now``."""

    def seen(t: datetime | None) -> datetime | None:
        return t if t is not None and t <= now else None

    return replace(
        item,
        received_at=seen(item.received_at),
        opened_at=seen(item.opened_at),
        actioned_at=seen(item.actioned_at),
    )


def summary(report: WeekReport) -> Mapping[str, object]:
    return {
        "disclosures": report.disclosures,
        "with_deadline": report.with_deadline,
        "due_in_week": report.due_in_week,
        "met": report.met,
        "breached": report.breached,
        "met_share": round(report.met_share, 4),
        "alerts": report.alerts,
        "behaviours": report.behaviours,
        "by_rule": report.by_rule,
    }
