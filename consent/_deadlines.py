"""Deadlines: when each disclosure must be acted on (DESIGN §11, docs/TIMELINESS.md).

Pure, like the rest of ``consent``: no file I/O, no clock, no randomness.
Calendars arrive as TOML *text* (``parse_calendar``/``parse_calendars``), the
decision time arrives as ``decided_at``, and the Europe/London time zone
arrives as ``zone`` (the shell builds it with ``zoneinfo.ZoneInfo(LONDON)``;
loading tz data reads files, so it is not done here).

The rules, in the order they are considered:

* ``ENCOMPASS_NEXT_SCHOOL_DAY``: a domestic-abuse notification to a school
  (``education``) or, for a child not in school, to the local authority
  (``la-education``) is due at 08:30 on the next school day; on a school day it
  is due at 08:30 the same day when decided at least ``encompass_notice``
  (60 minutes) before. When it applies it is the only rule: a school can act
  only on a school day.
* ``HIGH_REVIEW_24H``: a HIGH-grade disclosure must be reviewed within 24 hours
  of elapsed time (across a clock change that is 23 or 25 hours on the wall clock).
* ``REFERRAL_ONE_WORKING_DAY``: a referral to children's social care (a REFER
  outcome, or any disclosure to a ``social-care`` recipient) needs a decision
  within one working day: 8 working hours of 09:00 to 17:00, Monday to Friday,
  bank holidays excluded.
* ``AGREEMENT_RESPONSE``: the agreement's own response time (an ISO 8601
  duration of elapsed time), when it sets one.
* ``LOCAL_MEDIUM_RESPONSE``, ``LOCAL_LOW_RESPONSE`` and ``LOCAL_NOTIFICATION``:
  the deployment's own policy (``deploy/timeliness.toml``, parsed by
  ``parse_local_timeliness``) gives MEDIUM and LOW concerns, and notifications
  to agencies that need not act (schools, the LA), a number of working days,
  so that every disclosure has a clock.

Apart from Encompass, every rule that applies is computed and the earliest due
time wins; ``Deadline.considered`` keeps the others for the record.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time
from enum import StrEnum
from typing import Any, Literal, NamedTuple, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from schemas import AgencyType, ConcernType, Lscp, PolicyError, ReasonCode, RiskGrade
from schemas import ValidationError as SaferValidationError

__all__ = [
    "DEFAULT_ENCOMPASS_NOTICE",
    "ENCOMPASS_TIME",
    "LONDON",
    "WORKING_DAY_END",
    "WORKING_DAY_START",
    "AlertPoints",
    "Calendar",
    "CalendarKind",
    "Calendars",
    "Closure",
    "Deadline",
    "DeadlineRule",
    "LocalRule",
    "LocalTimeliness",
    "alert_points",
    "deadline_for",
    "parse_calendar",
    "parse_calendars",
    "parse_local_timeliness",
    "parse_response_duration",
]

#: The IANA key of the only zone deadlines are computed in.
LONDON = "Europe/London"
#: Operation Encompass: schools must know before this local time.
ENCOMPASS_TIME = time(8, 30)
#: On a school day, a notification decided at least this long before 08:30 is due that day.
DEFAULT_ENCOMPASS_NOTICE = dt.timedelta(minutes=60)
#: The working day, in Europe/London local time (referral decisions).
WORKING_DAY_START = time(9, 0)
WORKING_DAY_END = time(17, 0)
#: "One working day" is this many working hours.
_WORKING_DAY_LENGTH = dt.timedelta(hours=8)
_HIGH_REVIEW = dt.timedelta(hours=24)
#: A calendar that closes more than this many days in a row is a mistake, not a holiday.
_MAX_SEARCH_DAYS = 400
_MAX_RESPONSE = dt.timedelta(days=366)
_UTC = dt.UTC

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


class DeadlineRule(StrEnum):
    """Which rule set a deadline. Stable strings: alerts and audit records carry them."""

    ENCOMPASS_NEXT_SCHOOL_DAY = "ENCOMPASS_NEXT_SCHOOL_DAY"
    HIGH_REVIEW_24H = "HIGH_REVIEW_24H"
    REFERRAL_ONE_WORKING_DAY = "REFERRAL_ONE_WORKING_DAY"
    AGREEMENT_RESPONSE = "AGREEMENT_RESPONSE"
    LOCAL_MEDIUM_RESPONSE = "LOCAL_MEDIUM_RESPONSE"
    LOCAL_LOW_RESPONSE = "LOCAL_LOW_RESPONSE"
    LOCAL_NOTIFICATION = "LOCAL_NOTIFICATION"


class CalendarKind(StrEnum):
    BANK_HOLIDAYS = "bank-holidays"
    SCHOOL = "school"


# --------------------------------------------------------------------------- calendars


@dataclass(frozen=True)
class Closure:
    """Days ``first`` to ``last`` (inclusive) on which the calendar is closed."""

    first: dt.date
    last: dt.date
    name: str

    def days(self) -> Iterator[dt.date]:
        day = self.first
        while day <= self.last:
            yield day
            day += dt.timedelta(days=1)


@dataclass(frozen=True)
class Calendar:
    """A parsed calendar file: bank holidays, or one partnership's school holidays.

    ``covers_from``/``covers_to`` bound the dates the file speaks for. Outside
    them nothing is known to be closed: deadlines treat such a day as open (the
    earlier answer) and carry a warning.
    """

    kind: CalendarKind
    name: str
    source: str
    covers_from: dt.date
    covers_to: dt.date
    closures: tuple[Closure, ...]
    lscp: Lscp | None = None
    _closed: Mapping[dt.date, str] = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        closed: dict[dt.date, str] = {}
        for closure in self.closures:
            for day in closure.days():
                closed[day] = closure.name
        object.__setattr__(self, "_closed", closed)
        # The hash the dataclass would compute (over the compared fields), once: a
        # calendar is part of ``deadline_for``'s memo key, hashed on every call.
        object.__setattr__(self, "_hash", self._compared_hash())

    def _compared_hash(self) -> int:
        return hash(
            (
                self.kind,
                self.name,
                self.source,
                self.covers_from,
                self.covers_to,
                self.closures,
                self.lscp,
            )
        )

    def __hash__(self) -> int:
        return self._hash

    def __getstate__(self) -> dict[str, Any]:
        # String hashes differ between processes: a copy sent to another recomputes it.
        state = dict(self.__dict__)
        del state["_hash"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        object.__setattr__(self, "_hash", self._compared_hash())

    def covers(self, day: dt.date) -> bool:
        return self.covers_from <= day <= self.covers_to

    def closed_on(self, day: dt.date) -> str | None:
        """The closure's name if ``day`` is inside one, else None."""
        return self._closed.get(day)


@dataclass(frozen=True)
class Calendars:
    """Every calendar a deployment has: the bank holidays and each partnership's schools."""

    bank_holidays: Calendar
    schools: Mapping[Lscp, Calendar]

    def school(self, lscp: Lscp | str) -> Calendar | None:
        """The partnership's school calendar, or None if it has none."""
        try:
            return self.schools.get(Lscp(lscp))
        except ValueError:
            raise SaferValidationError(
                f"unknown partnership {str(lscp)[:40]!r}", fields=("lscp",)
            ) from None

    def missing(self) -> tuple[Lscp, ...]:
        """Partnerships with no school calendar (their deadlines carry a warning)."""
        return tuple(lscp for lscp in Lscp if lscp not in self.schools)


class _ClosedEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=100)
    date: dt.date | None = Field(default=None, strict=True)
    first: dt.date | None = Field(default=None, strict=True)
    last: dt.date | None = Field(default=None, strict=True)

    @pydantic.model_validator(mode="after")
    def _one_form(self) -> _ClosedEntry:
        if self.date is not None:
            if self.first is not None or self.last is not None:
                raise ValueError("give either 'date' or 'first' and 'last', not both")
        elif self.first is None or self.last is None:
            raise ValueError("give 'date', or both 'first' and 'last'")
        elif self.last < self.first:
            raise ValueError("'last' is before 'first'")
        elif (self.last - self.first).days > 120:
            raise ValueError("a closure longer than 120 days is not a holiday; check the dates")
        return self

    def closure(self) -> Closure:
        first = self.date if self.date is not None else self.first
        last = self.date if self.date is not None else self.last
        assert first is not None and last is not None  # checked by _one_form
        return Closure(first=first, last=last, name=self.name)


class _CalendarFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
    version: Literal[1] = 1
    kind: CalendarKind
    name: str = Field(min_length=1, max_length=100)
    lscp: Lscp | None = None
    source: str = ""
    covers_from: dt.date = Field(strict=True)
    covers_to: dt.date = Field(strict=True)
    closed: tuple[_ClosedEntry, ...] = ()

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> _CalendarFile:
        if self.covers_to < self.covers_from:
            raise ValueError("'covers_to' is before 'covers_from'")
        if self.kind is CalendarKind.SCHOOL and self.lscp is None:
            raise ValueError("a school calendar must name its partnership in 'lscp'")
        if self.kind is CalendarKind.BANK_HOLIDAYS and self.lscp is not None:
            raise ValueError("bank holidays are not per partnership: remove 'lscp'")
        return self


def parse_calendar(text: str, source_name: str) -> Calendar:
    """Validate one calendar file's TOML ``text`` (``source_name`` names it in errors).

    Raises ``PolicyError`` (``CONFIG_INVALID``) naming the file, the entry and the
    field, listing every problem found.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _calendar_error(f"{source_name}: not valid TOML ({exc})") from None
    try:
        shape = _CalendarFile.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise _calendar_error(f"{source_name}: {_describe(exc)}") from None

    problems: list[str] = []
    closures = [entry.closure() for entry in shape.closed]
    seen: dict[dt.date, int] = {}
    for index, closure in enumerate(closures):
        label = f"closed[{index}] ({closure.name!r})"
        if closure.first < shape.covers_from or closure.last > shape.covers_to:
            problems.append(
                f"{label}: lies outside covers_from..covers_to "
                f"({shape.covers_from}..{shape.covers_to})"
            )
        if shape.kind is CalendarKind.BANK_HOLIDAYS and closure.first != closure.last:
            problems.append(f"{label}: a bank holiday is one day: use 'date'")
        for day in closure.days():
            if day in seen:
                other = closures[seen[day]].name
                problems.append(f"{label}: overlaps closed[{seen[day]}] ({other!r}) on {day}")
                break
            seen[day] = index
    if problems:
        raise _calendar_error(f"{source_name}: " + "; ".join(problems))
    return Calendar(
        kind=shape.kind,
        name=shape.name,
        source=source_name,
        covers_from=shape.covers_from,
        covers_to=shape.covers_to,
        closures=tuple(sorted(closures, key=lambda c: c.first)),
        lscp=shape.lscp,
    )


def parse_calendars(files: Mapping[str, str]) -> Calendars:
    """Validate every calendar file (``{filename: TOML text}``) of a deployment.

    Exactly one file must hold the bank holidays; at most one may hold each
    partnership's school holidays. A partnership without one is allowed (its
    Encompass deadlines skip only weekends and bank holidays, with a warning).
    """
    problems: list[str] = []
    bank: list[Calendar] = []
    schools: dict[Lscp, Calendar] = {}
    for name in sorted(files):
        try:
            calendar = parse_calendar(files[name], name)
        except PolicyError as exc:
            problems.append(exc.message)
            continue
        if calendar.kind is CalendarKind.BANK_HOLIDAYS:
            bank.append(calendar)
        else:
            assert calendar.lscp is not None  # checked by _CalendarFile
            if calendar.lscp in schools:
                problems.append(
                    f"{name}: a second school calendar for {calendar.lscp.value} "
                    f"(also in {schools[calendar.lscp].source})"
                )
            else:
                schools[calendar.lscp] = calendar
    if len(bank) != 1 and not problems:
        problems.append(
            f"exactly one bank-holidays calendar is needed, found {len(bank)}"
            + (f" ({', '.join(c.source for c in bank)})" if bank else "")
        )
    if problems:
        raise _calendar_error("; ".join(problems))
    return Calendars(bank_holidays=bank[0], schools=schools)


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = ""
        for part in err["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        parts.append(f"field '{where}': {msg}" if where else msg)
    return "; ".join(parts)


def _calendar_error(message: str) -> PolicyError:
    return PolicyError(
        message,
        code=ReasonCode.CONFIG_INVALID,
        hint="fix the named calendar file in deploy/calendars/ (see docs/TIMELINESS.md)",
    )


# --------------------------------------------------------------------------- durations

_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)


def parse_response_duration(text: str) -> dt.timedelta:
    """An agreement's response time, e.g. ``PT4H``, ``P2D``, ``P1W`` or ``P1DT12H``.

    Elapsed time: ``P1D`` is 24 hours, whatever the clocks do. Years and months
    are refused (their length varies); so are zero and anything over a year.
    """
    value = text.strip()
    match = _DURATION.match(value)
    if match is None or value == "P" or value.endswith("T"):
        raise PolicyError(
            f"response time {text!r} is not an ISO 8601 duration of weeks, days, hours, "
            "minutes or seconds",
            code=ReasonCode.CONFIG_INVALID,
            hint="write e.g. 'PT4H', 'P2D' or 'P1W' (years and months are not allowed)",
        )
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    duration = dt.timedelta(
        weeks=parts.get("w", 0),
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )
    if not dt.timedelta(0) < duration <= _MAX_RESPONSE:
        raise PolicyError(
            f"response time {text!r} must be more than zero and at most a year",
            code=ReasonCode.CONFIG_INVALID,
            hint="write e.g. 'PT4H', 'P2D' or 'P1W'",
        )
    return duration


# --------------------------------------------------------------------------- local policy


@dataclass(frozen=True)
class LocalRule:
    """One rule of the deployment's own timeliness policy: working days, and why."""

    working_days: int
    source: str


@dataclass(frozen=True)
class LocalTimeliness:
    """The deployment's own clocks where no statute sets one (``deploy/timeliness.toml``).

    ``medium``/``low`` apply to every disclosure of that grade; ``notification``
    to disclosures to ``notification_types`` (agencies told so they know, not
    asked to act: a school, the LA). Each is a number of working days
    (09:00-17:00 Mon-Fri, bank holidays excluded) and names its source.
    """

    name: str
    source_name: str
    medium: LocalRule | None
    low: LocalRule | None
    notification: LocalRule | None
    notification_types: tuple[AgencyType, ...] = ()


class _LocalRuleEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
    working_days: int = Field(ge=1, le=30, strict=True)
    source: str = Field(min_length=10, max_length=600)


class _NotificationEntry(_LocalRuleEntry):
    agency_types: tuple[AgencyType, ...] = Field(min_length=1)


class _GradeEntries(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    MEDIUM: _LocalRuleEntry | None = None
    LOW: _LocalRuleEntry | None = None


class _LocalFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=100)
    grade: _GradeEntries = _GradeEntries()
    notification: _NotificationEntry | None = None


def parse_local_timeliness(text: str, source_name: str) -> LocalTimeliness:
    """Validate the local timeliness policy's TOML ``text`` (docs/TIMELINESS.md).

    Raises ``PolicyError`` (``CONFIG_INVALID``) naming the file and the field.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _calendar_error(f"{source_name}: not valid TOML ({exc})") from None
    try:
        shape = _LocalFile.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise _calendar_error(f"{source_name}: {_describe(exc)}") from None

    def rule(entry: _LocalRuleEntry | None) -> LocalRule | None:
        return None if entry is None else LocalRule(entry.working_days, entry.source)

    return LocalTimeliness(
        name=shape.name,
        source_name=source_name,
        medium=rule(shape.grade.MEDIUM),
        low=rule(shape.grade.LOW),
        notification=rule(shape.notification),
        notification_types=shape.notification.agency_types if shape.notification else (),
    )


# --------------------------------------------------------------------------- deadlines


class AlertPoints(NamedTuple):
    """When the monitor alerts: 50% and 90% of the time allowed, and at breach (``due``)."""

    at_50: dt.datetime
    at_90: dt.datetime
    due: dt.datetime


@dataclass(frozen=True, kw_only=True)
class Deadline:
    """When a disclosure must be acted on, under which rule, and why.

    ``due`` and ``decided_at`` are aware UTC datetimes in whole milliseconds
    (what Avro ``timestamp-millis`` holds, so ``due`` survives the round trip
    through a ``Disclosure`` unchanged). ``explanation`` is built only from rule
    wording, calendar names and times: no personal data. ``considered`` lists
    every rule that applied with its due time, earliest first (the first is
    this deadline). ``warnings`` say where a calendar did not cover a date.
    """

    due: dt.datetime
    rule: DeadlineRule
    decided_at: dt.datetime
    explanation: str
    considered: tuple[tuple[DeadlineRule, dt.datetime], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def time_allowed(self) -> dt.timedelta:
        return self.due - self.decided_at

    def alert_points(self) -> AlertPoints:
        return alert_points(self.decided_at, self.due)


def alert_points(decided_at: dt.datetime, due: dt.datetime) -> AlertPoints:
    """The monitor's alert times: 50% and 90% of the time from ``decided_at`` to ``due``.

    Elapsed time, in whole milliseconds rounded down (an alert is never late).
    """
    start = _aware_utc(decided_at, "decided_at")
    end = _aware_utc(due, "due")
    if end <= start:
        raise SaferValidationError(
            "due must be later than decided_at", fields=("decided_at", "due")
        )
    allowed = end - start
    return AlertPoints(
        at_50=_floor_ms(start + allowed * 50 // 100),
        at_90=_floor_ms(start + allowed * 90 // 100),
        due=_floor_ms(end),
    )


_OUTCOMES = {"PERMIT": "PERMIT", "DISCLOSURE": "PERMIT", "REFER": "REFER", "REFERRAL": "REFER"}
_ENCOMPASS_RECIPIENTS = (AgencyType.EDUCATION, AgencyType.LA_EDUCATION)


def deadline_for(
    *,
    concern_type: ConcernType | str,
    risk_grade: RiskGrade | str,
    recipient_agency_type: AgencyType | str,
    outcome: str,
    decided_at: dt.datetime,
    school_calendar: Calendar | None,
    bank_holidays: Calendar,
    zone: dt.tzinfo,
    default_response: str | None = None,
    encompass_notice: dt.timedelta = DEFAULT_ENCOMPASS_NOTICE,
    local: LocalTimeliness | None = None,
) -> Deadline | None:
    """The deadline of one disclosure, or None when no rule sets one.

    Args:
        concern_type, risk_grade: from the concern.
        recipient_agency_type: the recipient's agency type.
        outcome: ``PERMIT``/``REFER`` (a ``Decision.kind``) or the ``Disclosure``
            kind ``DISCLOSURE``/``REFERRAL``. A DENY shares nothing and has no deadline.
        decided_at: when the router decided (aware); the clock starts here.
        school_calendar: the recipient partnership's school holidays (None: only
            weekends and bank holidays are skipped, with a warning).
        bank_holidays: the England and Wales bank holidays.
        zone: ``zoneinfo.ZoneInfo("Europe/London")``.
        default_response: the agreement's response time (ISO 8601 duration), if any.
        encompass_notice: the least notice that makes 08:30 today practicable.
        local: the deployment's own policy for MEDIUM, LOW and notifications
            (None: only the statutory rules and the agreement's response time).

    Raises ``ValidationError`` for an impossible input (naive time, wrong zone,
    unknown enum value, DENY) and ``PolicyError`` for a bad ``default_response``.

    Memoised on every input (a router decides a whole batch at one ``decided_at``,
    and many of its disclosures share type, grade, recipient type and calendar).
    The memo is keyed on the decision time in UTC, whole milliseconds (all the
    result depends on: equal aware datetimes in one zone may be different instants,
    across a clock change), and holds only successful results: an invalid input
    is checked, and raises, on every call.
    """
    try:
        start = _floor_ms(_aware_utc(decided_at, "decided_at"))
        key = _DeadlineKey(
            concern_type,
            risk_grade,
            recipient_agency_type,
            outcome,
            start,
            school_calendar,
            bank_holidays,
            zone,
            default_response,
            encompass_notice,
            local,
        )
        hash(key)
    except (SaferValidationError, TypeError):  # raise as the unmemoised path does
        return _deadline_for(
            concern_type,
            risk_grade,
            recipient_agency_type,
            outcome,
            decided_at,
            school_calendar,
            bank_holidays,
            zone,
            default_response,
            encompass_notice,
            local,
        )
    return _memo_deadline(key)


class _DeadlineKey(NamedTuple):
    """``deadline_for``'s arguments, in order (the memo's key)."""

    concern_type: ConcernType | str
    risk_grade: RiskGrade | str
    recipient_agency_type: AgencyType | str
    outcome: str
    decided_at: dt.datetime
    school_calendar: Calendar | None
    bank_holidays: Calendar
    zone: dt.tzinfo
    default_response: str | None
    encompass_notice: dt.timedelta
    local: LocalTimeliness | None


#: Bounded: a batch needs at most one entry per (type, grade, recipient type, outcome,
#: partnership) it meets; ``decided_at`` moves on with every batch.
@functools.lru_cache(maxsize=1024)
def _memo_deadline(key: _DeadlineKey) -> Deadline | None:
    return _deadline_for(*key)


def _deadline_for(
    concern_type: ConcernType | str,
    risk_grade: RiskGrade | str,
    recipient_agency_type: AgencyType | str,
    outcome: str,
    decided_at: dt.datetime,
    school_calendar: Calendar | None,
    bank_holidays: Calendar,
    zone: dt.tzinfo,
    default_response: str | None,
    encompass_notice: dt.timedelta,
    local: LocalTimeliness | None,
) -> Deadline | None:
    """``deadline_for``, computed."""
    concern = _enum(ConcernType, concern_type, "concern_type")
    grade = _enum(RiskGrade, risk_grade, "risk_grade")
    agency = _enum(AgencyType, recipient_agency_type, "recipient_agency_type")
    kind = _OUTCOMES.get(str(outcome).upper())
    if kind is None:
        raise SaferValidationError(
            f"outcome {outcome!r} has no deadline: only PERMIT/DISCLOSURE and "
            "REFER/REFERRAL share anything",
            fields=("outcome",),
        )
    start = _floor_ms(_aware_utc(decided_at, "decided_at"))
    if getattr(zone, "key", None) != LONDON:
        raise SaferValidationError(
            f"deadlines are computed in {LONDON}; pass zoneinfo.ZoneInfo({LONDON!r})",
            fields=("zone",),
        )
    if bank_holidays.kind is not CalendarKind.BANK_HOLIDAYS:
        raise SaferValidationError(
            f"{bank_holidays.source} is not a bank-holidays calendar", fields=("bank_holidays",)
        )
    if school_calendar is not None and school_calendar.kind is not CalendarKind.SCHOOL:
        raise SaferValidationError(
            f"{school_calendar.source} is not a school calendar", fields=("school_calendar",)
        )
    if not dt.timedelta(0) <= encompass_notice < dt.timedelta(hours=8, minutes=30):
        raise SaferValidationError(
            "encompass_notice must be between 0 and 8h30", fields=("encompass_notice",)
        )
    clock = _Clock(zone=zone, bank=bank_holidays, school=school_calendar)

    if concern is ConcernType.DOMESTIC_ABUSE and agency in _ENCOMPASS_RECIPIENTS:
        return clock.encompass(start, encompass_notice, agency)

    candidates: list[tuple[DeadlineRule, dt.datetime, str]] = []
    if grade is RiskGrade.HIGH:
        due = start + _HIGH_REVIEW
        candidates.append(
            (
                DeadlineRule.HIGH_REVIEW_24H,
                due,
                "HIGH risk: review within 24 hours (elapsed time, whatever the clocks do)",
            )
        )
    if kind == "REFER" or agency is AgencyType.CHILDRENS_SOCIAL_CARE:
        due, skipped = clock.add_working_time(start, _WORKING_DAY_LENGTH)
        candidates.append(
            (
                DeadlineRule.REFERRAL_ONE_WORKING_DAY,
                due,
                "referral to children's social care: a decision within one working day "
                "(8 working hours, 09:00-17:00 Mon-Fri, bank holidays excluded)"
                + _skipped_text(skipped),
            )
        )
    if default_response is not None:
        allowed = parse_response_duration(default_response)
        candidates.append(
            (
                DeadlineRule.AGREEMENT_RESPONSE,
                _floor_ms(start + allowed),
                f"the data-sharing agreement's response time {default_response.strip()} "
                "(elapsed time)",
            )
        )
    if local is not None:
        for rule_name, local_rule, what in (
            (
                DeadlineRule.LOCAL_MEDIUM_RESPONSE,
                local.medium if grade is RiskGrade.MEDIUM else None,
                "MEDIUM risk",
            ),
            (
                DeadlineRule.LOCAL_LOW_RESPONSE,
                local.low if grade is RiskGrade.LOW else None,
                "LOW risk",
            ),
            (
                DeadlineRule.LOCAL_NOTIFICATION,
                local.notification if agency in local.notification_types else None,
                f"a notification to {agency.value}",
            ),
        ):
            if local_rule is None:
                continue
            days = local_rule.working_days
            due, skipped = clock.add_working_time(start, _WORKING_DAY_LENGTH * days)
            candidates.append(
                (
                    rule_name,
                    due,
                    f"{what}: {local.name} allows {days} working day{'s' if days > 1 else ''} "
                    f"(source: {local_rule.source})" + _skipped_text(skipped),
                )
            )
    if not candidates:
        return None
    order = list(DeadlineRule)
    candidates.sort(key=lambda c: (c[1], order.index(c[0])))
    rule, due, why = candidates[0]
    text = f"{why}. Decided {clock.show(start)}; due {clock.show(due)}."
    others = [f"{r.value} due {clock.show(d)}" for r, d, _ in candidates[1:]]
    if others:
        text += " Also applied (later, so not used): " + "; ".join(others) + "."
    return Deadline(
        due=due,
        rule=rule,
        decided_at=start,
        explanation=text,
        considered=tuple((r, d) for r, d, _ in candidates),
        warnings=clock.warnings(),
    )


@dataclass
class _Clock:
    """Local-time arithmetic over one bank-holiday and (optionally) one school calendar."""

    zone: dt.tzinfo
    bank: Calendar
    school: Calendar | None
    _warned: dict[str, str] = field(default_factory=dict)

    def warnings(self) -> tuple[str, ...]:
        return tuple(self._warned.values())

    def _warn(self, key: str, text: str) -> None:
        self._warned.setdefault(key, text)

    def local(self, instant: dt.datetime) -> dt.datetime:
        """Naive local wall time of an aware instant."""
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def instant(self, wall: dt.datetime) -> dt.datetime:
        """The UTC instant of a naive local wall time (only ever 08:30-17:00: no DST gap)."""
        return _floor_ms(wall.replace(tzinfo=self.zone).astimezone(_UTC))

    def show(self, instant: dt.datetime) -> str:
        aware = instant.astimezone(self.zone)
        return (
            f"{_day_text(aware.date())} {aware.hour:02d}:{aware.minute:02d} "
            f"{aware.tzname() or ''}".rstrip()
        )

    def closed_reason(self, day: dt.date, *, school: bool) -> str | None:
        """Why ``day`` is not a working day (or, with ``school``, not a school day).

        A weekday the calendars cannot speak for counts as open (the earlier
        deadline) and leaves a warning.
        """
        holiday = self.bank.closed_on(day)
        if holiday is not None:
            return holiday
        if school and self.school is not None:
            closure = self.school.closed_on(day)
            if closure is not None:
                return closure
        if day.weekday() >= 5:
            return "weekend"
        if not self.bank.covers(day):
            self._warn(
                "bank",
                f"{self.bank.source} covers {self.bank.covers_from} to {self.bank.covers_to}; "
                f"{day} and any later day outside it were taken to be no bank holiday",
            )
        if not school:
            return None
        if self.school is None:
            self._warn(
                "school",
                "no school calendar for this partnership: only weekends and bank holidays "
                "were skipped",
            )
        elif not self.school.covers(day):
            self._warn(
                "school",
                f"{self.school.source} covers {self.school.covers_from} to "
                f"{self.school.covers_to}; {day} and any later day outside it were taken "
                "to be school days",
            )
        return None

    def encompass(self, start: dt.datetime, notice: dt.timedelta, agency: AgencyType) -> Deadline:
        wall = self.local(start)
        day = wall.date()
        skipped: list[tuple[dt.date, str]] = []
        first_reason = self.closed_reason(day, school=True)
        opening = dt.datetime.combine(day, ENCOMPASS_TIME)
        if first_reason is None and wall < opening and wall + notice <= opening:
            note = "in time for 08:30 today"
        else:
            if first_reason is None:
                note = (
                    f"too late for 08:30 that day (which needs {_minutes(notice)}' notice), "
                    "so the next school day"
                )
            else:
                note = "not on a school day"
                skipped.append((day, first_reason))
            for _ in range(_MAX_SEARCH_DAYS):
                day += dt.timedelta(days=1)
                reason = self.closed_reason(day, school=True)
                if reason is None:
                    break
                skipped.append((day, reason))
            else:
                raise PolicyError(
                    f"no school day within {_MAX_SEARCH_DAYS} days of {wall.date()} in "
                    f"{self.school.source if self.school else 'the calendars'}",
                    code=ReasonCode.CONFIG_INVALID,
                    hint="a closure in the school calendar is far too long; fix the file",
                )
        due = self.instant(dt.datetime.combine(day, ENCOMPASS_TIME))
        who = "the school" if agency is AgencyType.EDUCATION else "the local authority"
        text = (
            f"Operation Encompass (Domestic Abuse Act 2021 s.49A): notify {who} before "
            f"08:30 on the next school day. Decided {self.show(start)}, {note}"
            f"{_skipped_text(skipped)}; due {self.show(due)}."
        )
        return Deadline(
            due=due,
            rule=DeadlineRule.ENCOMPASS_NEXT_SCHOOL_DAY,
            decided_at=start,
            explanation=text,
            considered=((DeadlineRule.ENCOMPASS_NEXT_SCHOOL_DAY, due),),
            warnings=self.warnings(),
        )

    def add_working_time(
        self, start: dt.datetime, amount: dt.timedelta
    ) -> tuple[dt.datetime, list[tuple[dt.date, str]]]:
        """``amount`` of working time after ``start``, and the non-working days skipped."""
        cursor = self.local(start)
        remaining = amount
        skipped: list[tuple[dt.date, str]] = []
        for _ in range(_MAX_SEARCH_DAYS):
            day = cursor.date()
            reason = self.closed_reason(day, school=False)
            opens = dt.datetime.combine(day, WORKING_DAY_START)
            closes = dt.datetime.combine(day, WORKING_DAY_END)
            if reason is not None:
                skipped.append((day, reason))
            elif cursor < closes:
                cursor = max(cursor, opens)
                available = closes - cursor
                if remaining <= available:
                    return self.instant(cursor + remaining), skipped
                remaining -= available
            cursor = dt.datetime.combine(day + dt.timedelta(days=1), WORKING_DAY_START)
        raise PolicyError(  # pragma: no cover - bank holidays cannot close 400 days
            "no working day found", code=ReasonCode.CONFIG_INVALID
        )


def _skipped_text(skipped: list[tuple[dt.date, str]]) -> str:
    """``; skipped Sat 25 Oct-Sun 26 Oct 2025 (weekend), ...`` with runs grouped."""
    if not skipped:
        return ""
    runs: list[tuple[dt.date, dt.date, str]] = []
    for day, reason in skipped:
        if runs and runs[-1][2] == reason and (day - runs[-1][1]).days == 1:
            runs[-1] = (runs[-1][0], day, reason)
        else:
            runs.append((day, day, reason))
    shown = [
        f"{_day_text(a)} ({why})" if a == b else f"{_day_text(a, b.year)} to {_day_text(b)} ({why})"
        for a, b, why in runs
    ]
    if len(shown) > 6:
        shown = [*shown[:5], f"... {len(shown) - 5} more"]
    return "; skipped " + ", ".join(shown)


def _day_text(day: dt.date, omit_year: int | None = None) -> str:
    """``Mon 3 Nov 2025`` (without the year when it is ``omit_year``)."""
    text = f"{_DAY_NAMES[day.weekday()]} {day.day} {_MONTH_NAMES[day.month - 1]}"
    return text if day.year == omit_year else f"{text} {day.year}"


def _minutes(amount: dt.timedelta) -> str:
    return f"{int(amount.total_seconds() // 60)} minutes"


def _aware_utc(value: dt.datetime, name: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise SaferValidationError(f"{name} must be a timezone-aware datetime", fields=(name,))
    return value.astimezone(_UTC)


def _floor_ms(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


_E = TypeVar("_E", ConcernType, RiskGrade, AgencyType)


def _enum(kind: type[_E], value: _E | str, name: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise SaferValidationError(
            f"{name}: unknown value {str(value)[:40]!r}", fields=(name,)
        ) from None
