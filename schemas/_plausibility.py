"""Is a concern plausible? Bounds and semantic checks beyond its schema (issue 11).

The Avro schema says what shape a concern has; these checks say whether its
content can be true and is of a size a real Public Protection Notice has. They
are pure (``now`` is an argument) and report field paths and reasons, never a
value (values may be personal data).

Two steps, so that hostile input costs little:

1. ``limit_problems(record)`` runs on the raw decoded dict, before any model
   is built: counts and lengths (``LIMIT_EXCEEDED``) and canonical agency and
   subject ids (``ID_NOT_CANONICAL``: no whitespace or case tricks).
2. ``plausibility_problems(concern, now)`` runs on the validated model: dates
   in plausible ranges (``IMPLAUSIBLE_DATE``), an incident not after its
   report, ages that fit roles (``AGE_ROLE_MISMATCH``), and third-party
   protection naming real subjects (``SCHEMA_INVALID``).

The bounds (``LIMITS``) are sized for real PPNs with a wide margin; they are
listed, with their reasons, in docs/REASON_CODES.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ._errors import ReasonCode
from ._model import ConcernModel, SubjectRole, age_on

__all__ = [
    "CANONICAL_ID",
    "LIMITS",
    "Limits",
    "Problem",
    "limit_problems",
    "plausibility_problems",
]

#: An agency, recipient or publisher id: lower-case words joined by single hyphens.
#: ``\A``/``\Z``, not ``^``/``$``: ``$`` also matches before a final newline, and the
#: model strips whitespace afterwards, so "id\n" would pass as the id itself.
CANONICAL_ID = re.compile(r"\A[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_SUBJECT_REF = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,15}\Z")


@dataclass(frozen=True)
class Limits:
    """Bounds on one concern. A PPN names a household: a few children and adults."""

    subjects: int = 40
    third_party_protection: int = 40
    #: A long PPN narrative is a few thousand words; 40,000 characters is ~6,000.
    narrative_chars: int = 40_000
    #: Voice of the child, observed behaviour, immediate actions.
    statement_chars: int = 10_000
    #: Incident description, consent reason, officer fields, names, references.
    short_chars: int = 1_000
    identifier_chars: int = 64


LIMITS = Limits()

# Earliest plausible dates. A date of birth before 1900 or an incident before 1950
# is a typing error (or an attack), not a person or a safeguarding concern.
_EARLIEST_BIRTH = date(1900, 1, 1)
_EARLIEST_INCIDENT = datetime(1950, 1, 1, tzinfo=UTC)
#: How far back a report may be dated (a quarantined concern replayed after a fix
#: keeps its original report time).
_REPORT_HORIZON = timedelta(days=2 * 366)
#: Clocks differ: a report or incident up to this far in the future is accepted.
_CLOCK_SKEW = timedelta(minutes=15)
_OLDEST = 120
#: A CHILD subject may be a young adult up to 24 (the adult-at-risk basis applies).
_CHILD_MAX_AGE = 24
_PARENT_MIN_AGE = 11


@dataclass(frozen=True)
class Problem:
    """One reason a concern is refused: a stable code, the field path, and why."""

    code: ReasonCode
    field: str
    reason: str

    def describe(self) -> str:
        return f"{self.field}: {self.reason}"


def _text_length(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else 0


def limit_problems(record: Mapping[str, Any], limits: Limits = LIMITS) -> list[Problem]:
    """Counts, lengths and canonical ids of a raw decoded concern (no model built yet)."""
    problems: list[Problem] = []

    def too_long(path: str, value: Any, limit: int) -> None:
        if _text_length(value) > limit:
            problems.append(
                Problem(
                    ReasonCode.LIMIT_EXCEEDED,
                    path,
                    f"{_text_length(value)} characters; the limit is {limit}",
                )
            )

    agency = record.get("source_agency")
    if isinstance(agency, str) and not CANONICAL_ID.match(agency):
        problems.append(
            Problem(
                ReasonCode.ID_NOT_CANONICAL,
                "source_agency",
                "must be the directory id exactly: lower-case letters, digits and single "
                "hyphens, no spaces",
            )
        )
    subjects = record.get("subjects")
    if isinstance(subjects, list) and len(subjects) > limits.subjects:
        problems.append(
            Problem(
                ReasonCode.LIMIT_EXCEEDED,
                "subjects",
                f"{len(subjects)} subjects; the limit is {limits.subjects}",
            )
        )
        subjects = []  # do not walk a hostile list
    protected = record.get("third_party_protection")
    if isinstance(protected, list) and len(protected) > limits.third_party_protection:
        problems.append(
            Problem(
                ReasonCode.LIMIT_EXCEEDED,
                "third_party_protection",
                f"{len(protected)} entries; the limit is {limits.third_party_protection}",
            )
        )
    too_long("narrative", record.get("narrative"), limits.narrative_chars)
    too_long("immediate_actions", record.get("immediate_actions"), limits.statement_chars)
    too_long("source_ref", record.get("source_ref"), limits.identifier_chars)
    voice = record.get("voice_of_child")
    if isinstance(voice, Mapping):
        too_long("voice_of_child.said", voice.get("said"), limits.statement_chars)
        too_long("voice_of_child.observed", voice.get("observed"), limits.statement_chars)
    location = record.get("incident_location")
    if isinstance(location, Mapping):
        too_long("incident_location.description", location.get("description"), limits.short_chars)
    consent = record.get("consent")
    if isinstance(consent, Mapping):
        too_long("consent.reason", consent.get("reason"), limits.short_chars)
        too_long("consent.recorded_by", consent.get("recorded_by"), limits.short_chars)
    officer = record.get("officer")
    if isinstance(officer, Mapping):
        for key in ("name", "collar_number", "unit", "email", "phone"):
            too_long(f"officer.{key}", officer.get(key), limits.short_chars)
    for index, subject in enumerate(subjects if isinstance(subjects, list) else []):
        if not isinstance(subject, Mapping):
            continue
        ref = subject.get("subject_ref")
        if isinstance(ref, str) and not _SUBJECT_REF.match(ref):
            problems.append(
                Problem(
                    ReasonCode.ID_NOT_CANONICAL,
                    f"subjects[{index}].subject_ref",
                    "must be a short reference such as S1 (letters, digits, '.', '_', '-')",
                )
            )
        for key in ("given_name", "family_name"):
            too_long(f"subjects[{index}].{key}", subject.get(key), limits.short_chars)
        for key in ("nhs_number", "police_person_id", "phone", "school_urn", "responsible_la"):
            too_long(f"subjects[{index}].{key}", subject.get(key), limits.identifier_chars)
        address = subject.get("address")
        if isinstance(address, Mapping):
            for key in ("line1", "line2", "town"):
                too_long(f"subjects[{index}].address.{key}", address.get(key), limits.short_chars)
            for key in ("postcode", "la_code"):
                too_long(
                    f"subjects[{index}].address.{key}", address.get(key), limits.identifier_chars
                )
    assessments = record.get("risk_assessments")
    if isinstance(assessments, list) and len(assessments) > limits.subjects:
        problems.append(
            Problem(
                ReasonCode.LIMIT_EXCEEDED,
                "risk_assessments",
                f"{len(assessments)} assessments; the limit is {limits.subjects}",
            )
        )
        assessments = []  # do not walk a hostile list
    for index, assessment in enumerate(assessments if isinstance(assessments, list) else []):
        if not isinstance(assessment, Mapping):
            continue
        where = f"risk_assessments[{index}]"
        too_long(f"{where}.rationale", assessment.get("rationale"), limits.statement_chars)
        too_long(f"{where}.tool_name", assessment.get("tool_name"), limits.short_chars)
        too_long(f"{where}.assessed_by", assessment.get("assessed_by"), limits.short_chars)
        too_long(f"{where}.subject_ref", assessment.get("subject_ref"), limits.identifier_chars)
        factors = assessment.get("factors")
        if isinstance(factors, list) and len(factors) > limits.subjects:
            problems.append(
                Problem(
                    ReasonCode.LIMIT_EXCEEDED,
                    f"{where}.factors",
                    f"{len(factors)} factors; the limit is {limits.subjects}",
                )
            )
    return problems


def plausibility_problems(concern: ConcernModel, now: datetime) -> list[Problem]:
    """Dates, ages and references that cannot be true of a real concern."""
    problems: list[Problem] = []
    latest = now + _CLOCK_SKEW
    if concern.reported_at > latest:
        problems.append(Problem(ReasonCode.IMPLAUSIBLE_DATE, "reported_at", "is in the future"))
    elif concern.reported_at < now - _REPORT_HORIZON:
        problems.append(
            Problem(
                ReasonCode.IMPLAUSIBLE_DATE,
                "reported_at",
                "is more than two years ago; report the concern afresh",
            )
        )
    if concern.occurred_at < _EARLIEST_INCIDENT:
        problems.append(Problem(ReasonCode.IMPLAUSIBLE_DATE, "occurred_at", "is before 1950"))
    # A difference, not ``reported_at + skew``: that overflows for a report in 9999.
    if concern.occurred_at - concern.reported_at > _CLOCK_SKEW:
        problems.append(
            Problem(ReasonCode.IMPLAUSIBLE_DATE, "occurred_at", "is after the report (reported_at)")
        )
    when = min(concern.occurred_at, latest)
    refs = [s.subject_ref for s in concern.subjects]
    if len(set(refs)) != len(refs):
        problems.append(
            Problem(ReasonCode.SCHEMA_INVALID, "subjects", "subject_ref values must be unique")
        )
    problems += _ref_problems(concern)
    for index, subject in enumerate(concern.subjects):
        born = subject.date_of_birth
        if born is None:
            continue
        path = f"subjects[{index}].date_of_birth"
        if born < _EARLIEST_BIRTH:
            problems.append(Problem(ReasonCode.IMPLAUSIBLE_DATE, path, "is before 1900"))
            continue
        if born > when.astimezone(UTC).date():
            problems.append(Problem(ReasonCode.IMPLAUSIBLE_DATE, path, "is after the incident"))
            continue
        age = age_on(born, when)
        if age > _OLDEST:
            problems.append(
                Problem(ReasonCode.IMPLAUSIBLE_DATE, path, f"gives an age over {_OLDEST}")
            )
        elif subject.role is SubjectRole.CHILD and age > _CHILD_MAX_AGE:
            problems.append(
                Problem(
                    ReasonCode.AGE_ROLE_MISMATCH,
                    path,
                    f"a CHILD subject is under 25 (a young adult 18-24 at most); this one is "
                    f"{age}: give an adult a PARENT_CARER or OTHER_ADULT role",
                )
            )
        elif subject.role is SubjectRole.PARENT_CARER and age < _PARENT_MIN_AGE:
            problems.append(
                Problem(
                    ReasonCode.AGE_ROLE_MISMATCH,
                    path,
                    f"a PARENT_CARER is at least {_PARENT_MIN_AGE}; this one is {age}",
                )
            )
    unknown = [ref for ref in concern.third_party_protection if ref not in set(refs)]
    if unknown:
        problems.append(
            Problem(
                ReasonCode.SCHEMA_INVALID,
                "third_party_protection",
                f"{len(unknown)} entry(ies) name no subject_ref of this concern",
            )
        )
    return problems


#: A subject_ref travels into audit reasons (redaction and risk lines), so beyond its
#: form (``_SUBJECT_REF``, checked on the raw record) it must not spell anyone's identity.
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def _ref_problems(concern: ConcernModel) -> list[Problem]:
    identities = {
        _NOT_WORD.sub("", value.lower())
        for subject in concern.subjects
        for value in (
            subject.given_name,
            subject.family_name,
            subject.nhs_number,
            subject.police_person_id,
            subject.phone,
        )
        if value
    }
    identities = {text for text in identities if len(text) >= 3}
    return [
        Problem(
            ReasonCode.PID_IN_METADATA,
            f"subjects[{index}].subject_ref",
            "repeats a name or identifier of a subject: use a plain reference such as S1",
        )
        for index, subject in enumerate(concern.subjects)
        if any(text in _NOT_WORD.sub("", subject.subject_ref.lower()) for text in identities)
    ]
