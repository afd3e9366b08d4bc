"""Typed domain model mirroring the Avro schemas (DESIGN §7).

pydantic validates records at the edges (agency JSON, decoded Avro); inside,
the models are frozen so that pure code can pass them around safely.
``to_avro()`` and ``from_avro()`` convert to and from the dicts fastavro uses.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DASH_MAX",
    "LA_CODES",
    "NOT_SOUGHT_REASONS",
    "OVERRIDE_JUSTIFICATIONS",
    "Address",
    "AgencyType",
    "AuditEvent",
    "ConcernModel",
    "ConcernType",
    "ConsentState",
    "ConsentStatement",
    "IncidentLocation",
    "Lscp",
    "NotSoughtReason",
    "Officer",
    "OverrideJustification",
    "RiskAssessment",
    "RiskFactor",
    "RiskGrade",
    "RiskMethod",
    "Subject",
    "SubjectRole",
    "VoiceOfChild",
    "age_on",
]


class ConcernType(StrEnum):
    DOMESTIC_ABUSE = "DOMESTIC_ABUSE"
    NEGLECT = "NEGLECT"
    PHYSICAL_ABUSE = "PHYSICAL_ABUSE"
    EMOTIONAL_ABUSE = "EMOTIONAL_ABUSE"
    SEXUAL_ABUSE = "SEXUAL_ABUSE"
    CHILD_SEXUAL_EXPLOITATION = "CHILD_SEXUAL_EXPLOITATION"
    CHILD_CRIMINAL_EXPLOITATION = "CHILD_CRIMINAL_EXPLOITATION"
    MISSING = "MISSING"
    ONLINE_GROOMING = "ONLINE_GROOMING"
    RADICALISATION = "RADICALISATION"
    KNIFE_SERIOUS_VIOLENCE = "KNIFE_SERIOUS_VIOLENCE"
    YOUTH_OFFENDING = "YOUTH_OFFENDING"
    OTHER = "OTHER"


class RiskGrade(StrEnum):
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        """Higher is more serious; used for "at least this grade" rules."""
        return {"LOW": 0, "MEDIUM": 1, "HIGH": 2}[self.value]


class RiskMethod(StrEnum):
    """How a risk grade was reached (concern v3; docs/RISK.md)."""

    PROFESSIONAL_JUDGEMENT = "PROFESSIONAL_JUDGEMENT"
    DASH = "DASH"
    OTHER_TOOL = "OTHER_TOOL"


class RiskFactor(StrEnum):
    """Coded risk factors (concern v3; docs/RISK.md). Never rename or reuse a value.

    Adverse childhood experiences: DOMESTIC_ABUSE, PARENTAL_SUBSTANCE_MISUSE,
    PARENTAL_MENTAL_HEALTH, NEGLECT. Exploitation: CHILD_SEXUAL_EXPLOITATION,
    CHILD_CRIMINAL_EXPLOITATION, COUNTY_LINES. Also MISSING_EPISODES (with a
    count), ONLINE_HARM and RADICALISATION; OTHER is what an unknown future code
    reads as.
    """

    DOMESTIC_ABUSE = "DOMESTIC_ABUSE"
    PARENTAL_SUBSTANCE_MISUSE = "PARENTAL_SUBSTANCE_MISUSE"
    PARENTAL_MENTAL_HEALTH = "PARENTAL_MENTAL_HEALTH"
    NEGLECT = "NEGLECT"
    CHILD_SEXUAL_EXPLOITATION = "CHILD_SEXUAL_EXPLOITATION"
    CHILD_CRIMINAL_EXPLOITATION = "CHILD_CRIMINAL_EXPLOITATION"
    COUNTY_LINES = "COUNTY_LINES"
    MISSING_EPISODES = "MISSING_EPISODES"
    ONLINE_HARM = "ONLINE_HARM"
    RADICALISATION = "RADICALISATION"
    OTHER = "OTHER"


class SubjectRole(StrEnum):
    CHILD = "CHILD"
    PARENT_CARER = "PARENT_CARER"
    SIBLING = "SIBLING"
    ALLEGED_PERPETRATOR = "ALLEGED_PERPETRATOR"
    OTHER_ADULT = "OTHER_ADULT"


class ConsentState(StrEnum):
    GIVEN = "GIVEN"
    REFUSED = "REFUSED"
    WITHDRAWN = "WITHDRAWN"
    NOT_SOUGHT = "NOT_SOUGHT"
    OVERRIDDEN = "OVERRIDDEN"
    EXPIRED = "EXPIRED"


class NotSoughtReason(StrEnum):
    """Why consent was deliberately not sought (the 2024 information-sharing advice).

    Stable codes: a ``ConsentRecord`` carries one with every NOT_SOUGHT state, and
    decisions name the one that applied. Never rename or reuse a value.
    """

    RISK_TO_CHILD = "RISK_TO_CHILD"
    PREJUDICE_PREVENTION_DETECTION = "PREJUDICE_PREVENTION_DETECTION"
    NOT_PRACTICABLE = "NOT_PRACTICABLE"
    CHILD_NOT_COMPETENT = "CHILD_NOT_COMPETENT"


#: What each NOT_SOUGHT reason means, in words a practitioner would use.
NOT_SOUGHT_REASONS: dict[NotSoughtReason, str] = {
    NotSoughtReason.RISK_TO_CHILD: "seeking consent would place the child at risk",
    NotSoughtReason.PREJUDICE_PREVENTION_DETECTION: (
        "seeking consent would prejudice the prevention or detection of crime"
    ),
    NotSoughtReason.NOT_PRACTICABLE: "seeking consent is not practicable",
    NotSoughtReason.CHILD_NOT_COMPETENT: (
        "the child is not competent to consent (and no one with parental responsibility "
        "can safely be asked)"
    ),
}


class OverrideJustification(StrEnum):
    """Why a professional shared despite a refusal or withdrawal (state OVERRIDDEN).

    Stable codes, carried by ``ConsentRecord`` with who decided. Never rename or
    reuse a value.
    """

    SIGNIFICANT_HARM = "SIGNIFICANT_HARM"
    PREVENT_DETECT_CRIME = "PREVENT_DETECT_CRIME"
    RISK_TO_OTHERS = "RISK_TO_OTHERS"
    LEGAL_DUTY = "LEGAL_DUTY"


#: What each override justification means.
OVERRIDE_JUSTIFICATIONS: dict[OverrideJustification, str] = {
    OverrideJustification.SIGNIFICANT_HARM: (
        "the child is suffering, or is likely to suffer, significant harm"
    ),
    OverrideJustification.PREVENT_DETECT_CRIME: (
        "sharing is necessary to prevent or detect a serious crime"
    ),
    OverrideJustification.RISK_TO_OTHERS: "there is a risk of serious harm to another person",
    OverrideJustification.LEGAL_DUTY: "a statutory duty or a court order requires the sharing",
}


class AuditEvent(StrEnum):
    DISCLOSED = "DISCLOSED"
    WITHHELD = "WITHHELD"
    REFERRED = "REFERRED"
    QUARANTINED = "QUARANTINED"
    RECEIVED = "RECEIVED"
    CONSENT_CHANGED = "CONSENT_CHANGED"
    KEY_SHREDDED = "KEY_SHREDDED"
    OTHER = "OTHER"
    #: Issue 5: a disclosure not received within its expiry (non-delivery report sent).
    NOT_DELIVERED = "NOT_DELIVERED"
    #: Issue 11: an exact replay of a concern already routed (nothing produced).
    REPLAYED = "REPLAYED"
    #: Issue 11: an operator re-submitted a quarantined record (`safer quarantine replay`).
    QUARANTINE_REPLAYED = "QUARANTINE_REPLAYED"
    #: Issue 15: key lifecycle and retention.
    KEY_ROTATED = "KEY_ROTATED"
    KEY_REVOKED = "KEY_REVOKED"
    PURGED = "PURGED"
    #: Issue 14: a view of a subject's trail or SAR (BALP Query).
    QUERIED = "QUERIED"
    #: Issue 16: a cumulative-concern flag raised for a child.
    RISK_FLAGGED = "RISK_FLAGGED"


class Lscp(StrEnum):
    """The four HIPS Local Safeguarding Children Partnerships."""

    HAMPSHIRE = "hampshire"
    ISLE_OF_WIGHT = "isle-of-wight"
    PORTSMOUTH = "portsmouth"
    SOUTHAMPTON = "southampton"


#: ONS local authority code of each partnership's LA (DESIGN §10).
LA_CODES: dict[str, Lscp] = {
    "E10000014": Lscp.HAMPSHIRE,
    "E06000046": Lscp.ISLE_OF_WIGHT,
    "E06000044": Lscp.PORTSMOUTH,
    "E06000045": Lscp.SOUTHAMPTON,
}


class AgencyType(StrEnum):
    """Kinds of agency. The value is used in topic names, so keep it short."""

    POLICE = "police"
    CHILDRENS_SOCIAL_CARE = "social-care"
    HEALTH = "health"
    EDUCATION = "education"
    LA_EDUCATION = "la-education"
    YOUTH_JUSTICE = "youth-justice"
    ADULT_SOCIAL_CARE = "adult-social-care"


_FROZEN = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Address(BaseModel):
    model_config = _FROZEN
    line1: str = Field(min_length=1)
    line2: str | None = None
    town: str = Field(min_length=1)
    postcode: str = Field(min_length=2)
    la_code: str | None = None

    @field_validator("postcode")
    @classmethod
    def _normalise_postcode(cls, value: str) -> str:
        return " ".join(value.upper().split())


class Subject(BaseModel):
    model_config = _FROZEN
    subject_ref: str = Field(min_length=1)
    role: SubjectRole
    given_name: str = Field(min_length=1)
    family_name: str = Field(min_length=1)
    date_of_birth: date | None = None
    nhs_number: str | None = None
    police_person_id: str | None = None
    phone: str | None = None
    address: Address | None = None
    school_urn: str | None = None
    looked_after: bool = False
    responsible_la: str | None = None
    home_educated: bool = False
    care_leaver: bool = False

    @field_validator("nhs_number")
    @classmethod
    def _nhs_number_digits(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(" ", "")
        if not (digits.isdigit() and len(digits) == 10):
            # The value itself is personal data: never echo it.
            raise ValueError("nhs_number must be 10 digits")
        return digits

    def identifiers(self) -> list[str]:
        """Every identifier of this person, in a stable ``scheme:value`` form.

        These are what get pseudonymised (DESIGN §4.4). When a person has no
        formal identifier, name and date of birth stand in.
        """
        ids: list[str] = []
        if self.nhs_number:
            ids.append(f"nhs:{self.nhs_number}")
        if self.police_person_id:
            ids.append(f"police:{self.police_person_id.strip().upper()}")
        if not ids:
            dob = self.date_of_birth.isoformat() if self.date_of_birth else "unknown"
            ids.append(
                f"name-dob:{self.family_name.strip().lower()}|"
                f"{self.given_name.strip().lower()}|{dob}"
            )
        return ids


class IncidentLocation(BaseModel):
    model_config = _FROZEN
    description: str = Field(min_length=1)
    postcode: str | None = None
    la_code: str | None = None


class VoiceOfChild(BaseModel):
    model_config = _FROZEN
    said: str | None = None
    observed: str | None = None


class ConsentStatement(BaseModel):
    model_config = _FROZEN
    state: ConsentState
    reason: str | None = None
    recorded_by: str = Field(min_length=1)
    recorded_at: AwareDatetime


class Officer(BaseModel):
    model_config = _FROZEN
    name: str = Field(min_length=1)
    collar_number: str | None = None
    unit: str | None = None
    email: str | None = None
    phone: str | None = None


#: The highest DASH score (27 questions, one point per "yes").
DASH_MAX = 27


class RiskAssessment(BaseModel):
    """One child's structured risk assessment (concern v3; docs/RISK.md).

    Shape only is checked here (ranges, a count only with its factor); the rules
    that refuse a concern (HIGH without a rationale, a method without its
    detail, an assessment of someone who is not a child of the concern) are in
    ``consent.risk_problems`` so that they carry their reason codes.
    """

    model_config = _FROZEN
    subject_ref: str = Field(min_length=1)
    grade: RiskGrade
    rationale: str | None = None
    method: RiskMethod = RiskMethod.PROFESSIONAL_JUDGEMENT
    dash_score: int | None = Field(default=None, ge=0, le=DASH_MAX)
    tool_name: str | None = None
    factors: tuple[RiskFactor, ...] = ()
    missing_episodes: int | None = Field(default=None, ge=1)
    assessed_by: str = Field(min_length=1)
    assessed_at: AwareDatetime


class ConcernModel(BaseModel):
    """A safeguarding concern (the Avro ``Concern`` record)."""

    model_config = _FROZEN
    concern_id: str
    source_agency: str = Field(min_length=1)
    source_ref: str = Field(min_length=1)
    reported_at: AwareDatetime
    occurred_at: AwareDatetime
    concern_type: ConcernType
    risk_grade: RiskGrade
    subjects: tuple[Subject, ...] = Field(min_length=1)
    incident_location: IncidentLocation | None = None
    child_present: bool = False
    voice_of_child: VoiceOfChild | None = None
    narrative: str = Field(min_length=1)
    immediate_actions: str | None = None
    consent: ConsentStatement
    third_party_protection: tuple[str, ...] = ()
    restricted: bool = False
    officer: Officer
    #: v3: a structured risk assessment per child (empty before v3).
    risk_assessments: tuple[RiskAssessment, ...] = ()

    @field_validator("concern_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("concern_id must be a UUID") from None

    def children(self) -> list[Subject]:
        return [s for s in self.subjects if s.role is SubjectRole.CHILD]

    def to_avro(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        return cls.model_validate(record)


def age_on(date_of_birth: date, when: datetime | date) -> int:
    """Whole years of age on ``when`` (birthdays on 29 February fall on 1 March)."""
    day = when.astimezone(UTC).date() if isinstance(when, datetime) else when
    years = day.year - date_of_birth.year
    if (day.month, day.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years
