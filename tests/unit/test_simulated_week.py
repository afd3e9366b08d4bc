"""Issue 5 §7: a simulated week on a fake clock, checked against the monitor's rules.

The week (Thu 30 Apr – Thu 7 May 2026) has a weekend, the Early May bank
holiday and a half-term for the Isle of Wight only; recipients answer
promptly, slowly, late, never, or never even receive. The monitor core runs
every 10 minutes of fake time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from consent._deadlines import LONDON, alert_points, deadline_for, parse_calendars
from consent._timeliness import AlertLevel, completed_at
from safer._simulate import WeekReport, _with_injected_closure, simulate_week, summary

REPO = Path(__file__).resolve().parents[2]
TICK = timedelta(minutes=10)


@pytest.fixture(scope="module")
def week() -> WeekReport:
    return simulate_week(REPO / "deploy", seed=11, concerns=200, tick=TICK)


def _alerts_for(week: WeekReport, disclosure_id: str) -> dict[AlertLevel, datetime]:
    return {
        alert.level: seen
        for alert, seen in week.first_seen.values()
        if alert.disclosure_id == disclosure_id
    }


def test_the_week_exercises_every_behaviour_and_rule(week: WeekReport) -> None:
    assert set(week.behaviours) == {"prompt", "slow", "late", "never", "down"}
    assert set(week.by_rule) >= {
        "HIGH_REVIEW_24H",
        "REFERRAL_ONE_WORKING_DAY",
        "ENCOMPASS_NEXT_SCHOOL_DAY",
    }
    assert week.due_in_week > 100
    print("simulated week:", summary(week))  # the share met, for the record (-s)


def test_no_deadline_passes_without_a_breach_alert(week: WeekReport) -> None:
    missed = [
        t
        for t in week.tracked
        if t.due is not None
        and t.due <= week.end - TICK
        and (completed_at(t) is None or completed_at(t) > t.due)  # type: ignore[operator]
    ]
    assert missed, "the week must contain breaches to test anything"
    for item in missed:
        seen = _alerts_for(week, item.disclosure_id).get(AlertLevel.BREACH)
        assert seen is not None, f"{item.disclosure_id} breached without an alert"
        assert item.due is not None and item.due <= seen < item.due + TICK


def test_no_alert_for_a_disclosure_done_in_good_time(week: WeekReport) -> None:
    prompt = [
        t
        for t in week.tracked
        if t.due is not None
        and (done := completed_at(t)) is not None
        and done <= alert_points(t.decided_at, t.due).at_50
    ]
    assert len(prompt) > 100
    for item in prompt:
        alerts = _alerts_for(week, item.disclosure_id)
        assert not alerts, f"{item.disclosure_id} was done in time but alerted {alerts}"


def test_no_warning_is_raised_after_the_work_was_done(week: WeekReport) -> None:
    for alert, seen in week.first_seen.values():
        if alert.level not in (AlertLevel.HALF_TIME, AlertLevel.NINETY_PERCENT):
            continue
        item = next(t for t in week.tracked if t.disclosure_id == alert.disclosure_id)
        done = completed_at(item)
        assert done is None or seen < done


def test_an_undelivered_disclosure_gets_a_non_delivery_report(week: WeekReport) -> None:
    down = [t for t in week.tracked if t.recipient_id == "isle-of-wight-yjs"]
    expiring = [t for t in down if t.decided_at + timedelta(hours=4) <= week.end - TICK]
    for item in expiring:
        assert AlertLevel.NOT_DELIVERED in _alerts_for(week, item.disclosure_id)
    delivered = [t for t in week.tracked if t.received_at is not None]
    for item in delivered:
        assert AlertLevel.NOT_DELIVERED not in _alerts_for(week, item.disclosure_id)


def test_the_injected_half_term_applies_to_one_partnership_only() -> None:
    calendar_files = {str(p): p.read_text() for p in (REPO / "deploy/calendars").glob("*.toml")}
    calendars = parse_calendars(calendar_files)
    friday_evening = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)

    def due(lscp: str) -> datetime:
        deadline = deadline_for(
            concern_type="DOMESTIC_ABUSE",
            risk_grade="MEDIUM",
            recipient_agency_type="education",
            outcome="PERMIT",
            decided_at=friday_evening,
            school_calendar=_with_injected_closure(calendars, lscp),
            bank_holidays=calendars.bank_holidays,
            zone=ZoneInfo(LONDON),
        )
        assert deadline is not None
        return deadline.due.astimezone(ZoneInfo(LONDON))

    # Weekend and the bank holiday skipped: Tuesday 08:30 in Portsmouth ...
    assert due("portsmouth") == datetime(2026, 5, 5, 8, 30, tzinfo=ZoneInfo(LONDON))
    # ... and past the Isle of Wight's half-term too: Monday 11 May 08:30.
    assert due("isle-of-wight") == datetime(2026, 5, 11, 8, 30, tzinfo=ZoneInfo(LONDON))
