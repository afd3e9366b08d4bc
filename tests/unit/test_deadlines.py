"""Deadlines (DESIGN §11, docs/TIMELINESS.md): pure rules over the shipped calendars.

Times are written in Europe/London wall time (``_at``) and compared as
instants, so each expectation reads the way a practitioner would say it.
"""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent._deadlines import (
    LONDON,
    Calendar,
    CalendarKind,
    Calendars,
    DeadlineRule,
    alert_points,
    deadline_for,
    parse_calendar,
    parse_calendars,
    parse_local_timeliness,
    parse_response_duration,
)
from schemas import (
    AgencyType,
    ConcernType,
    Lscp,
    PolicyError,
    ReasonCode,
    RiskGrade,
    ValidationError,
)

ROOT = Path(__file__).resolve().parents[2]
CALENDAR_DIR = ROOT / "deploy" / "calendars"
ZONE = ZoneInfo(LONDON)


def _load() -> Calendars:
    return parse_calendars({p.name: p.read_text("utf-8") for p in CALENDAR_DIR.glob("*.toml")})


CALENDARS = _load()
BANK = CALENDARS.bank_holidays


def _at(text: str) -> datetime:
    """A Europe/London wall time, e.g. ``2025-10-24 19:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=ZONE)


def _due(**overrides: Any) -> datetime:
    deadline = _deadline(**overrides)
    assert deadline is not None
    return deadline.due


def _deadline(**overrides: Any) -> Any:
    args: dict[str, Any] = {
        "concern_type": "DOMESTIC_ABUSE",
        "risk_grade": "MEDIUM",
        "recipient_agency_type": "education",
        "outcome": "PERMIT",
        "school_calendar": CALENDARS.school("hampshire"),
        "bank_holidays": BANK,
        "zone": ZONE,
    }
    if isinstance(overrides.get("decided_at"), str):
        overrides["decided_at"] = _at(overrides["decided_at"])
    if isinstance(overrides.get("lscp"), str):
        args["school_calendar"] = CALENDARS.school(overrides.pop("lscp"))
    args.update(overrides)
    return deadline_for(**args)


def _referral(when: str | datetime, **overrides: Any) -> datetime:
    return _due(
        concern_type="NEGLECT",
        recipient_agency_type="social-care",
        decided_at=when,
        **overrides,
    )


# --------------------------------------------------------------------------- shipped calendars


def _easter(year: int) -> date:
    """Anonymous Gregorian algorithm (Meeus/Jones/Butcher), independent of the data file."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def test_shipped_calendars_cover_every_partnership_for_two_school_years() -> None:
    assert set(CALENDARS.schools) == set(Lscp)
    assert CALENDARS.missing() == ()
    for lscp, calendar in CALENDARS.schools.items():
        assert calendar.kind is CalendarKind.SCHOOL
        assert calendar.source == f"{lscp.value}.toml"
        assert calendar.covers_from <= date(2025, 9, 1)
        assert calendar.covers_to >= date(2027, 7, 31)
    assert BANK.covers_from <= date(2025, 1, 1)
    assert BANK.covers_to >= date(2027, 12, 31)


@pytest.mark.parametrize("year", [2025, 2026, 2027])
def test_bank_holidays_are_the_england_and_wales_dates(year: int) -> None:
    days = {c.first: c.name for c in BANK.closures if c.first.year == year}
    assert len(days) == 8
    assert all(day.weekday() < 5 for day in days)  # substitutes are weekdays
    easter = _easter(year)
    assert days[easter - timedelta(days=2)] == "Good Friday"
    assert days[easter + timedelta(days=1)] == "Easter Monday"
    mondays = sorted(d for d in days if d.weekday() == 0 and d.month in (5, 8))
    assert [d.month for d in mondays] == [5, 5, 8]
    assert mondays[0].day <= 7  # first Monday in May
    assert (mondays[1] + timedelta(days=7)).month == 6  # last Monday in May
    assert (mondays[2] + timedelta(days=7)).month == 9  # last Monday in August


def test_christmas_and_boxing_day_substitutes() -> None:
    assert BANK.closed_on(date(2026, 12, 25)) == "Christmas Day"
    assert BANK.closed_on(date(2026, 12, 26)) is None  # a Saturday
    assert BANK.closed_on(date(2026, 12, 28)) == "Boxing Day (substitute day)"
    assert BANK.closed_on(date(2027, 12, 27)) == "Christmas Day (substitute day)"
    assert BANK.closed_on(date(2027, 12, 28)) == "Boxing Day (substitute day)"


def test_the_isle_of_wight_alone_has_a_second_october_week_off() -> None:
    second_week = date(2025, 11, 4)
    closed = {lscp: cal.closed_on(second_week) for lscp, cal in CALENDARS.schools.items()}
    assert closed[Lscp.ISLE_OF_WIGHT] is not None
    assert [lscp for lscp, name in closed.items() if name] == [Lscp.ISLE_OF_WIGHT]


# --------------------------------------------------------------------------- Operation Encompass


def test_encompass_school_day_0700_is_due_0830_the_same_day() -> None:
    deadline = _deadline(decided_at="2025-11-04 07:00")
    assert deadline.due == _at("2025-11-04 08:30")
    assert deadline.rule is DeadlineRule.ENCOMPASS_NEXT_SCHOOL_DAY
    assert "in time for 08:30 today" in deadline.explanation
    assert deadline.warnings == ()


@pytest.mark.parametrize(
    ("decided", "due"),
    [
        ("2025-11-04 00:10", "2025-11-04 08:30"),
        ("2025-11-04 07:30", "2025-11-04 08:30"),  # exactly 60 minutes' notice
        ("2025-11-04 07:30:00.001", "2025-11-05 08:30"),  # a millisecond too late
        ("2025-11-04 08:00", "2025-11-05 08:30"),
        ("2025-11-04 08:30", "2025-11-05 08:30"),
        ("2025-11-04 22:00", "2025-11-05 08:30"),
        ("2025-11-09 07:00", "2025-11-10 08:30"),  # Sunday morning: Monday
    ],
)
def test_encompass_notice_window(decided: str, due: str) -> None:
    assert _due(decided_at=decided) == _at(due)


def test_encompass_notice_window_is_a_parameter() -> None:
    assert _due(decided_at="2025-11-04 08:00", encompass_notice=timedelta(minutes=15)) == _at(
        "2025-11-04 08:30"
    )
    assert _due(decided_at="2025-11-04 08:20", encompass_notice=timedelta(minutes=15)) == _at(
        "2025-11-05 08:30"
    )


def test_encompass_friday_evening_is_due_monday_morning() -> None:
    deadline = _deadline(decided_at="2025-11-07 19:45")
    assert deadline.due == _at("2025-11-10 08:30")
    assert "(weekend)" in deadline.explanation


def test_encompass_across_half_term_and_the_october_clock_change() -> None:
    # Friday 24 Oct 2025 is BST; clocks go back on Sunday 26 Oct; half-term follows.
    deadline = _deadline(decided_at="2025-10-24 19:00")
    assert deadline.due == datetime(2025, 11, 3, 8, 30, tzinfo=UTC)  # 08:30 GMT
    assert "Autumn half-term 2025" in deadline.explanation
    assert deadline.time_allowed == timedelta(days=9, hours=14, minutes=30)  # 25-hour Sunday


def test_encompass_across_easter_and_the_march_clock_change() -> None:
    # Last day of spring term 2026; clocks go forward Sunday 29 March; Easter holidays.
    deadline = _deadline(decided_at="2026-03-27 18:00")
    assert deadline.due == datetime(2026, 4, 13, 7, 30, tzinfo=UTC)  # 08:30 BST
    assert "Easter holidays 2026" in deadline.explanation


@pytest.mark.parametrize(
    ("lscp", "due"),
    [
        ("hampshire", "2025-11-05 08:30"),
        ("portsmouth", "2025-11-05 08:30"),
        ("southampton", "2025-11-05 08:30"),
        ("isle-of-wight", "2025-11-10 08:30"),
    ],
)
def test_encompass_half_term_in_one_partnership_only(lscp: str, due: str) -> None:
    assert _due(decided_at="2025-11-04 19:00", lscp=lscp) == _at(due)


def test_encompass_skips_a_term_time_bank_holiday() -> None:
    # Early May bank holiday, Monday 4 May 2026, falls in term time.
    deadline = _deadline(decided_at="2026-05-01 18:00")
    assert deadline.due == _at("2026-05-05 08:30")
    assert "Early May bank holiday" in deadline.explanation


def test_encompass_without_a_school_calendar_still_skips_bank_holidays_and_warns() -> None:
    deadline = _deadline(decided_at="2025-10-24 19:00", school_calendar=None)
    assert deadline.due == _at("2025-10-27 08:30")  # half-term unknown: earlier, not later
    assert any("no school calendar" in w for w in deadline.warnings)
    assert _due(decided_at="2026-05-01 18:00", school_calendar=None) == _at("2026-05-05 08:30")


def test_encompass_during_the_summer_holidays_is_due_on_the_first_day_of_term() -> None:
    deadline = _deadline(decided_at="2026-08-10 14:00")
    assert deadline.due == _at("2026-09-02 08:30")
    assert "Summer holidays 2026" in deadline.explanation
    assert "Summer bank holiday" in deadline.explanation


def test_summer_term_ends_on_different_days_per_partnership() -> None:
    # Thursday 23 July 2026: Hampshire and Southampton have broken up, the Island has not.
    assert _due(decided_at="2026-07-22 20:00", lscp="isle-of-wight") == _at("2026-07-23 08:30")
    assert _due(decided_at="2026-07-22 20:00", lscp="hampshire") == _at("2026-09-02 08:30")


def test_encompass_to_the_local_authority_for_a_child_not_in_school() -> None:
    deadline = _deadline(decided_at="2025-11-07 19:45", recipient_agency_type="la-education")
    assert deadline.rule is DeadlineRule.ENCOMPASS_NEXT_SCHOOL_DAY
    assert deadline.due == _at("2025-11-10 08:30")
    assert "the local authority" in deadline.explanation


def test_encompass_alone_governs_a_high_grade_notification_to_a_school() -> None:
    deadline = _deadline(decided_at="2025-11-07 20:00", risk_grade="HIGH")
    assert deadline.rule is DeadlineRule.ENCOMPASS_NEXT_SCHOOL_DAY
    assert deadline.due == _at("2025-11-10 08:30")
    assert deadline.considered == ((DeadlineRule.ENCOMPASS_NEXT_SCHOOL_DAY, deadline.due),)


def test_outside_calendar_coverage_is_treated_as_open_and_warned() -> None:
    deadline = _deadline(decided_at="2028-12-22 19:00")  # a Friday; no 2028 data shipped
    assert deadline.due == _at("2028-12-25 08:30")  # earliest plausible: Christmas unknown
    assert len(deadline.warnings) == 2
    assert any("bank-holidays.toml" in w for w in deadline.warnings)
    assert any("hampshire.toml" in w for w in deadline.warnings)


# --------------------------------------------------------------------------- HIGH: 24 hours


@pytest.mark.parametrize(
    ("decided", "due_wall"),
    [
        ("2026-03-28 10:00", "2026-03-29 11:00"),  # clocks go forward: 11:00 BST
        ("2026-10-24 12:00", "2026-10-25 11:00"),  # clocks go back: 11:00 GMT
        ("2025-12-24 16:00", "2025-12-25 16:00"),  # bank holidays do not stop the clock
    ],
)
def test_high_is_24_elapsed_hours_across_dst(decided: str, due_wall: str) -> None:
    deadline = _deadline(
        decided_at=decided,
        concern_type="NEGLECT",
        risk_grade="HIGH",
        recipient_agency_type="health",
    )
    assert deadline.rule is DeadlineRule.HIGH_REVIEW_24H
    assert deadline.time_allowed == timedelta(hours=24)
    assert deadline.due == _at(due_wall)


# ------------------------------------------------------------------ referral: 1 working day


@pytest.mark.parametrize(
    ("decided", "due"),
    [
        ("2025-11-07 16:00", "2025-11-10 16:00"),  # Friday 16:00 lands Monday
        ("2025-11-04 09:00", "2025-11-04 17:00"),
        ("2025-11-04 08:00", "2025-11-04 17:00"),  # before opening: starts at 09:00
        ("2025-11-04 12:30", "2025-11-05 12:30"),
        ("2025-11-04 17:00", "2025-11-05 17:00"),  # at closing: starts next morning
        ("2025-11-04 23:00", "2025-11-05 17:00"),
        ("2025-11-08 10:00", "2025-11-10 17:00"),  # Saturday
        ("2026-05-22 16:00", "2026-05-26 16:00"),  # Spring bank holiday Monday
        ("2025-12-24 16:00", "2025-12-29 16:00"),  # Christmas and Boxing Day
        ("2026-12-24 12:00", "2026-12-29 12:00"),  # Boxing Day substitute Monday 28th
        ("2027-12-24 15:00", "2027-12-29 15:00"),  # both substitute days
        ("2026-04-02 10:00", "2026-04-07 10:00"),  # Good Friday to Easter Monday
    ],
)
def test_referral_is_one_working_day(decided: str, due: str) -> None:
    assert _referral(decided) == _at(due)


def test_referral_across_the_march_clock_change_counts_working_hours() -> None:
    due = _referral("2026-03-27 15:00")
    assert due == _at("2026-03-30 15:00")
    assert due - _at("2026-03-27 15:00") == timedelta(hours=71)  # one hour lost on Sunday


def test_a_refer_outcome_is_a_referral_whoever_the_recipient() -> None:
    deadline = _deadline(
        decided_at="2025-11-07 16:00",
        concern_type="NEGLECT",
        recipient_agency_type="social-care",
        outcome="REFER",
    )
    assert deadline.rule is DeadlineRule.REFERRAL_ONE_WORKING_DAY
    same = _deadline(
        decided_at="2025-11-07 16:00",
        concern_type="NEGLECT",
        recipient_agency_type="health",
        outcome="REFERRAL",
    )
    assert same.due == deadline.due == _at("2025-11-10 16:00")


def test_high_referral_takes_the_earlier_clock_and_records_both() -> None:
    deadline = _deadline(
        decided_at="2025-11-07 16:00",
        concern_type="NEGLECT",
        risk_grade="HIGH",
        recipient_agency_type="social-care",
    )
    assert deadline.rule is DeadlineRule.HIGH_REVIEW_24H
    assert deadline.due == _at("2025-11-08 16:00")
    assert deadline.considered == (
        (DeadlineRule.HIGH_REVIEW_24H, _at("2025-11-08 16:00")),
        (DeadlineRule.REFERRAL_ONE_WORKING_DAY, _at("2025-11-10 16:00")),
    )
    assert "REFERRAL_ONE_WORKING_DAY" in deadline.explanation


def test_a_midweek_high_referral_in_office_hours_is_due_at_the_same_time() -> None:
    # Both rules give Wednesday 12:30: the tie goes to HIGH (listed first).
    deadline = _deadline(
        decided_at="2025-11-04 12:30",
        concern_type="NEGLECT",
        risk_grade="HIGH",
        recipient_agency_type="social-care",
    )
    assert deadline.rule is DeadlineRule.HIGH_REVIEW_24H
    assert [d for _, d in deadline.considered] == [_at("2025-11-05 12:30")] * 2


# --------------------------------------------------------------------------- agreement response


def test_agreement_response_time_applies_when_nothing_else_does() -> None:
    health = {"concern_type": "NEGLECT", "recipient_agency_type": "health"}
    assert _deadline(decided_at="2025-11-04 12:00", **health) is None
    deadline = _deadline(decided_at="2025-11-04 12:00", default_response="P2D", **health)
    assert deadline.rule is DeadlineRule.AGREEMENT_RESPONSE
    assert deadline.due == _at("2025-11-06 12:00")


def test_agreement_response_can_be_stricter_than_high_but_never_laxer() -> None:
    common = {"concern_type": "NEGLECT", "risk_grade": "HIGH", "recipient_agency_type": "health"}
    strict = _deadline(decided_at="2025-11-04 12:00", default_response="PT4H", **common)
    assert (strict.rule, strict.due) == (DeadlineRule.AGREEMENT_RESPONSE, _at("2025-11-04 16:00"))
    lax = _deadline(decided_at="2025-11-04 12:00", default_response="P1W", **common)
    assert (lax.rule, lax.due) == (DeadlineRule.HIGH_REVIEW_24H, _at("2025-11-05 12:00"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT4H", timedelta(hours=4)),
        ("P2D", timedelta(days=2)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT12H", timedelta(hours=36)),
        ("PT90M", timedelta(minutes=90)),
        (" PT30S ", timedelta(seconds=30)),
    ],
)
def test_response_durations(text: str, expected: timedelta) -> None:
    assert parse_response_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "P1M", "P1Y", "PT0S", "P400D", "4h"])
def test_bad_response_durations_are_policy_errors(text: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_response_duration(text)
    assert caught.value.code is ReasonCode.CONFIG_INVALID


# --------------------------------------------------------------------------- inputs and errors


def test_due_is_utc_in_whole_milliseconds() -> None:
    deadline = _deadline(
        decided_at=_at("2025-11-04 12:00:00.123456"),
        concern_type="NEGLECT",
        risk_grade="HIGH",
        recipient_agency_type="health",
    )
    assert deadline.due.tzinfo is UTC
    assert deadline.due.microsecond == 123000
    assert deadline.decided_at.microsecond == 123000


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"decided_at": datetime(2025, 11, 4, 7, 0)}, "decided_at"),  # naive
        ({"zone": UTC}, "zone"),
        ({"outcome": "DENY"}, "outcome"),
        ({"concern_type": "SHOPLIFTING"}, "concern_type"),
        ({"risk_grade": "AMBER"}, "risk_grade"),
        ({"bank_holidays": CALENDARS.school("hampshire")}, "bank_holidays"),
        ({"school_calendar": BANK}, "school_calendar"),
    ],
)
def test_impossible_inputs_are_validation_errors(override: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"decided_at": "2025-11-04 07:00", **override}
    with pytest.raises(ValidationError) as caught:
        _deadline(**args)
    assert caught.value.fields == (field,)


# --------------------------------------------------------------------------- alert points


def test_alert_points_at_50_and_90_percent() -> None:
    start = datetime(2025, 11, 4, 8, 0, tzinfo=UTC)
    points = alert_points(start, start + timedelta(hours=10))
    assert points.at_50 == start + timedelta(hours=5)
    assert points.at_90 == start + timedelta(hours=9)
    assert points.due == start + timedelta(hours=10)
    at_50, at_90, due = points  # a plain tuple too
    assert at_50 < at_90 < due


def test_alert_points_round_down_to_the_millisecond_and_follow_the_deadline() -> None:
    start = datetime(2025, 11, 4, 8, 0, tzinfo=UTC)
    points = alert_points(start, start + timedelta(milliseconds=3))
    assert points.at_50 == start + timedelta(milliseconds=1)  # 1.5 ms -> 1 ms
    assert points.at_90 == start + timedelta(milliseconds=2)  # 2.7 ms -> 2 ms
    deadline = _deadline(decided_at="2025-11-07 19:00")
    assert deadline.alert_points() == alert_points(deadline.decided_at, deadline.due)


def test_alert_points_refuse_a_due_time_not_after_the_start() -> None:
    start = datetime(2025, 11, 4, 8, 0, tzinfo=UTC)
    with pytest.raises(ValidationError):
        alert_points(start, start)
    with pytest.raises(ValidationError):
        alert_points(start.replace(tzinfo=None), start + timedelta(hours=1))


# --------------------------------------------------------------------------- parse_calendar

_GOOD = """
version = 1
kind = "school"
name = "Test"
lscp = "portsmouth"
covers_from = 2025-09-01
covers_to = 2026-08-31
[[closed]]
name = "Half-term"
first = 2025-10-27
last = 2025-10-31
[[closed]]
name = "Staff day"
date = 2025-11-14
"""


def test_parse_calendar_reads_dates_and_ranges() -> None:
    calendar = parse_calendar(_GOOD, "test.toml")
    assert isinstance(calendar, Calendar)
    assert calendar.lscp is Lscp.PORTSMOUTH
    assert calendar.closed_on(date(2025, 10, 29)) == "Half-term"
    assert calendar.closed_on(date(2025, 11, 14)) == "Staff day"
    assert calendar.closed_on(date(2025, 11, 13)) is None
    assert calendar.covers(date(2026, 8, 31)) and not calendar.covers(date(2026, 9, 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("last = 2025-10-31", "last = 2025-10-20"), "'last' is before 'first'"),
        (("date = 2025-11-14", 'date = "2025-11-14"'), "closed[1].date"),
        (("date = 2025-11-14", "date = 2027-11-14"), "outside covers_from"),
        (("date = 2025-11-14", "date = 2025-10-30"), "overlaps"),
        (('lscp = "portsmouth"', 'lscp = "wessex"'), "lscp"),
        (('lscp = "portsmouth"', ""), "must name its partnership"),
        (('name = "Staff day"', 'name = "Staff day"\nnote = "x"'), "closed[1].note"),
        (("covers_to = 2026-08-31", "covers_to = 2024-08-31"), "'covers_to' is before"),
        (("[[closed]]", "[[closed"), "not valid TOML"),
        (("last = 2025-10-31", "last = 2026-05-31"), "longer than 120 days"),
    ],
)
def test_parse_calendar_errors_name_the_file_and_field(
    change: tuple[str, str], message: str
) -> None:
    text = _GOOD.replace(*change, 1)
    with pytest.raises(PolicyError) as caught:
        parse_calendar(text, "deploy/calendars/test.toml")
    assert caught.value.code is ReasonCode.CONFIG_INVALID
    assert str(caught.value.message).startswith("deploy/calendars/test.toml")
    assert message in caught.value.message


def test_bank_holidays_are_single_days_and_not_per_partnership() -> None:
    text = (CALENDAR_DIR / "bank-holidays.toml").read_text("utf-8")
    with pytest.raises(PolicyError, match="one day"):
        parse_calendar(
            text.replace("date = 2025-12-26", "first = 2025-12-26\nlast = 2025-12-29"), "b.toml"
        )
    with pytest.raises(PolicyError, match="remove 'lscp'"):
        parse_calendar(
            text.replace('kind = "bank-holidays"', 'kind = "bank-holidays"\nlscp = "portsmouth"'),
            "b.toml",
        )


def test_parse_calendars_needs_one_bank_holiday_file_and_one_file_per_partnership() -> None:
    files = {p.name: p.read_text("utf-8") for p in CALENDAR_DIR.glob("*.toml")}
    without_bank = {k: v for k, v in files.items() if k != "bank-holidays.toml"}
    with pytest.raises(PolicyError, match="exactly one bank-holidays"):
        parse_calendars(without_bank)
    with pytest.raises(PolicyError, match="second school calendar for portsmouth"):
        parse_calendars({**files, "extra.toml": files["portsmouth.toml"]})
    partial = parse_calendars({k: files[k] for k in ("bank-holidays.toml", "portsmouth.toml")})
    assert partial.school("portsmouth") is not None
    assert partial.school(Lscp.HAMPSHIRE) is None
    assert set(partial.missing()) == set(Lscp) - {Lscp.PORTSMOUTH}
    with pytest.raises(ValidationError):
        partial.school("wessex")


# --------------------------------------------------------------------------- properties

# Instants from September 2025 to July 2027, to the minute (within the shipped calendars).
_INSTANTS = st.integers(
    min_value=int(datetime(2025, 9, 1, tzinfo=UTC).timestamp()) // 60,
    max_value=int(datetime(2027, 7, 15, tzinfo=UTC).timestamp()) // 60,
).map(lambda minutes: datetime.fromtimestamp(minutes * 60, tz=UTC))


def _school_day(day: date, calendar: Calendar) -> bool:
    return day.weekday() < 5 and BANK.closed_on(day) is None and calendar.closed_on(day) is None


@settings(max_examples=300, deadline=None)
@given(decided=_INSTANTS, lscp=st.sampled_from(list(Lscp)))
def test_encompass_due_is_the_first_practicable_0830_on_a_school_day(
    decided: datetime, lscp: Lscp
) -> None:
    calendar = CALENDARS.schools[lscp]
    due = _due(decided_at=decided, school_calendar=calendar)
    local = due.astimezone(ZONE)
    assert (local.hour, local.minute) == (8, 30)
    assert _school_day(local.date(), calendar)
    assert due - decided >= timedelta(minutes=60)
    # No earlier 08:30 on a school day leaves 60 minutes' notice: walk back day by day.
    day = local.date() - timedelta(days=1)
    while datetime(day.year, day.month, day.day, 8, 30, tzinfo=ZONE) - decided >= timedelta(
        minutes=60
    ):
        assert not _school_day(day, calendar), f"{day} was an earlier school day"
        day -= timedelta(days=1)


@settings(max_examples=120, deadline=None)
@given(decided=_INSTANTS)
def test_referral_due_is_exactly_eight_working_hours_later(decided: datetime) -> None:
    due = _referral(decided)
    # Count working minutes by brute force, one minute at a time, in wall time.
    start = decided.astimezone(ZONE).replace(tzinfo=None)
    end = due.astimezone(ZONE).replace(tzinfo=None)
    worked = 0
    cursor = start
    while cursor < end:
        working_day = cursor.weekday() < 5 and BANK.closed_on(cursor.date()) is None
        if working_day and 9 <= cursor.hour < 17:
            worked += 1
        cursor += timedelta(minutes=1)
    assert worked == 8 * 60
    assert 9 <= end.hour <= 17 and (end.hour < 17 or end.minute == 0)


# --------------------------------------------------------------------------- local policy

LOCAL_FILE = ROOT / "deploy" / "timeliness.toml"
LOCAL = parse_local_timeliness(LOCAL_FILE.read_text("utf-8"), "timeliness.toml")


def test_the_shipped_local_policy_names_a_source_for_every_rule() -> None:
    assert LOCAL.medium is not None and LOCAL.medium.working_days == 3
    assert LOCAL.low is not None and LOCAL.low.working_days == 5
    assert LOCAL.notification is not None and LOCAL.notification.working_days == 1
    assert set(LOCAL.notification_types) == {AgencyType.EDUCATION, AgencyType.LA_EDUCATION}
    for rule in (LOCAL.medium, LOCAL.low, LOCAL.notification):
        assert "Working Together" in rule.source or "Keeping Children Safe" in rule.source


def test_medium_to_health_gets_three_working_days() -> None:
    health = {"concern_type": "NEGLECT", "recipient_agency_type": "health"}
    deadline = _deadline(decided_at="2025-11-04 12:00", local=LOCAL, **health)
    assert deadline.rule is DeadlineRule.LOCAL_MEDIUM_RESPONSE
    assert deadline.due == _at("2025-11-07 12:00")
    assert "HIPS local timeliness policy allows 3 working days" in deadline.explanation


def test_low_skips_the_weekend_and_a_bank_holiday() -> None:
    # Friday 19 Dec 2025 16:00 + 5 working days: Christmas Day, Boxing Day and the
    # weekends are skipped, so Monday 22, Tue 23, Wed 24, Mon 29, Tue 30 -> Tue 30 Dec 16:00.
    low = {"concern_type": "NEGLECT", "risk_grade": "LOW", "recipient_agency_type": "health"}
    deadline = _deadline(decided_at="2025-12-19 16:00", local=LOCAL, **low)
    assert deadline.rule is DeadlineRule.LOCAL_LOW_RESPONSE
    assert deadline.due == _at("2025-12-30 16:00")
    assert "Christmas Day" in deadline.explanation


def test_a_notification_to_a_school_beats_the_grade_clock() -> None:
    school = {"concern_type": "NEGLECT", "recipient_agency_type": "education"}
    deadline = _deadline(decided_at="2025-11-04 12:00", local=LOCAL, **school)
    assert deadline.rule is DeadlineRule.LOCAL_NOTIFICATION
    assert deadline.due == _at("2025-11-05 12:00")
    assert [r for r, _ in deadline.considered] == [
        DeadlineRule.LOCAL_NOTIFICATION,
        DeadlineRule.LOCAL_MEDIUM_RESPONSE,
    ]


def test_local_rules_never_touch_encompass_or_make_high_laxer() -> None:
    encompass = _deadline(decided_at="2025-11-04 19:00", local=LOCAL)
    assert encompass.rule is DeadlineRule.ENCOMPASS_NEXT_SCHOOL_DAY
    assert len(encompass.considered) == 1
    high = _deadline(
        decided_at="2025-11-04 12:00",
        concern_type="NEGLECT",
        risk_grade="HIGH",
        recipient_agency_type="education",
        local=LOCAL,
    )
    assert high.rule is DeadlineRule.HIGH_REVIEW_24H  # the 1-day notification ties, HIGH wins


@pytest.mark.parametrize("outcome", ["PERMIT", "REFER"])
def test_with_the_local_policy_every_disclosure_has_a_deadline(outcome: str) -> None:
    missing = []
    for concern_type in ConcernType:
        for grade in RiskGrade:
            for agency in AgencyType:
                deadline = _deadline(
                    decided_at="2025-11-04 12:00",
                    concern_type=concern_type,
                    risk_grade=grade,
                    recipient_agency_type=agency,
                    outcome=outcome,
                    local=LOCAL,
                )
                if deadline is None:
                    missing.append((concern_type, grade, agency))
                elif grade is not RiskGrade.HIGH and agency not in LOCAL.notification_types:
                    # proves the local rule is what closed the gap
                    assert deadline.due <= _at("2025-11-11 12:00")
    assert missing == []
    # ...and without it the gap is real (the reason for the local policy)
    assert (
        _deadline(
            decided_at="2025-11-04 12:00", concern_type="NEGLECT", recipient_agency_type="health"
        )
        is None
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            'version = 1\nname = "x"\n[grade.MEDIUM]\nworking_days = 0\nsource = "a long source"',
            "grade.MEDIUM.working_days",
        ),
        (
            'version = 1\nname = "x"\n[grade.URGENT]\nworking_days = 1\nsource = "a long source"',
            "grade.URGENT",
        ),
        (
            'version = 1\nname = "x"\n[grade.LOW]\nworking_days = 1\nsource = "?"',
            "grade.LOW.source",
        ),
        (
            'version = 1\nname = "x"\n[notification]\nagency_types = ["school"]\n'
            'working_days = 1\nsource = "a long source"',
            "notification.agency_types",
        ),
        ("version = [", "not valid TOML"),
    ],
)
def test_a_bad_local_policy_names_the_file_and_field(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_local_timeliness(text, "deploy/timeliness.toml")
    assert caught.value.code is ReasonCode.CONFIG_INVALID
    assert "deploy/timeliness.toml" in caught.value.message
    assert needle in caught.value.message


def test_memo_keeps_the_two_instants_of_a_repeated_wall_time_apart() -> None:
    """01:30 on the night the clocks go back happens twice; the two compare equal
    in one zone but are an hour apart, and so are their deadlines."""
    first = datetime(2026, 10, 25, 1, 30, tzinfo=ZONE)
    second = first.replace(fold=1)
    assert first == second  # same zone: Python compares wall times
    args: dict[str, Any] = {"concern_type": "NEGLECT", "risk_grade": "HIGH"}
    args["recipient_agency_type"] = "health"
    due_first = _due(decided_at=first, **args)
    due_second = _due(decided_at=second, **args)
    assert due_second - due_first == timedelta(hours=1)
    assert _due(decided_at=first, **args) == due_first  # a memo hit gives the same answer


def test_memo_still_refuses_a_bad_input_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValidationError):
            _deadline(decided_at=datetime(2026, 3, 2, 9, 0))  # naive
        with pytest.raises(ValidationError):
            _deadline(decided_at="2026-03-02 09:00", outcome="DENY")


def test_a_calendar_copy_recomputes_its_hash_rather_than_carrying_it() -> None:
    """String hashes differ between processes: a pickled calendar must not carry this
    process's hash to another (it would then never be found in a memo or a dict)."""
    state = BANK.__getstate__()
    assert "_hash" not in state
    copy = pickle.loads(pickle.dumps(BANK))
    assert copy == BANK and hash(copy) == hash(BANK) == BANK._compared_hash()
