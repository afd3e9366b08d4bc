"""``ConsentRecord``: one person's latest consent position, as published to ``hips.consent``.

Mirrors ``schemas/avro/consent_record/v1.avsc`` field for field. It carries the
person only as a pseudonym (DESIGN §4.4); the Kafka key is the same
pseudonym, so the compacted topic keeps the latest record per person.

The rules a record must meet (checked by ``ConsentRecord.create`` and
``from_avro``, so a malformed record never reaches ``decide()``):

* NOT_SOUGHT carries one of the four ``NotSoughtReason`` codes, and no other
  state carries one;
* OVERRIDDEN carries an ``OverrideJustification`` code and who decided, and no
  other state carries a justification;
* ``expires_at`` is for GIVEN only, and later than ``recorded_at``;
* ``consent_record_id`` is derived from the content, so a tampered or
  hand-made id is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas import (
    ConsentState,
    NotSoughtReason,
    OverrideJustification,
    ReasonCode,
    ValidationError,
)

__all__ = ["ConsentRecord", "consent_record_id_for", "utc_millis"]

# Used with fullmatch: `$` alone also matches before a final newline.
_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
_AGENCY = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DECIDED_BY = re.compile(r"^[^\x00-\x1f\x7f]{1,120}$")
_SOURCE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.:-]{0,63}$")
_HINT = (
    "a consent record needs the subject's pseudonym, a state, who decided (a role and staff "
    "number) and the recording agency; NOT_SOUGHT needs a reason code and OVERRIDDEN a "
    "justification code"
)


def utc_millis(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC truncated to milliseconds (Avro ``timestamp-millis``)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationError(
            f"{name} must be timezone-aware",
            code=ReasonCode.SCHEMA_INVALID,
            fields=(name,),
            hint="pass an aware datetime, e.g. datetime.now(UTC)",
        )
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def consent_record_id_for(
    subject_pseudonym: str, state: ConsentState, recorded_at: datetime, agency_id: str
) -> str:
    """First 32 hex digits of SHA-256 over the record's identity (NUL-separated, tagged)."""
    millis = int(utc_millis(recorded_at, "recorded_at").timestamp() * 1000)
    material = "\0".join(
        ("safer-consent-v1", subject_pseudonym, state.value, str(millis), agency_id)
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def _invalid(message: str, *fields: str) -> ValidationError:
    return ValidationError(
        message, code=ReasonCode.SCHEMA_INVALID, fields=tuple(fields), hint=_HINT
    )


@dataclass(frozen=True, kw_only=True)
class ConsentRecord:
    """A validated consent record. Build with ``create`` or ``from_avro``."""

    consent_record_id: str
    subject_pseudonym: str
    state: ConsentState
    not_sought_reason: NotSoughtReason | None
    justification: OverrideJustification | None
    decided_by: str
    agency_id: str
    recorded_at: datetime
    expires_at: datetime | None = None
    source_ref: str | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        try:
            put(self, "state", ConsentState(self.state))
            if self.not_sought_reason is not None:
                put(self, "not_sought_reason", NotSoughtReason(self.not_sought_reason))
            if self.justification is not None:
                put(self, "justification", OverrideJustification(self.justification))
        except ValueError:
            raise _invalid(
                "state, not_sought_reason or justification is not a known code",
                "state",
                "not_sought_reason",
                "justification",
            ) from None
        if not isinstance(self.subject_pseudonym, str) or not _PSEUDONYM.fullmatch(
            self.subject_pseudonym
        ):
            raise _invalid(
                "subject_pseudonym must be a 128-bit pseudonym (32 lowercase hex digits), "
                "never an identifier",
                "subject_pseudonym",
            )
        if not isinstance(self.agency_id, str) or not _AGENCY.fullmatch(self.agency_id):
            raise _invalid("agency_id must be a directory id", "agency_id")
        decided_by = self.decided_by.strip() if isinstance(self.decided_by, str) else ""
        if not _DECIDED_BY.fullmatch(decided_by):
            raise _invalid(
                "decided_by must be 1 to 120 printable characters: a role and staff number",
                "decided_by",
            )
        put(self, "decided_by", decided_by)
        if self.source_ref is not None and not _SOURCE_REF.fullmatch(self.source_ref):
            raise _invalid(
                "source_ref must be a case or occurrence reference (letters, digits, / _ . : -)",
                "source_ref",
            )
        if not isinstance(self.recorded_at, datetime):
            raise _invalid("recorded_at must be a datetime", "recorded_at")
        put(self, "recorded_at", utc_millis(self.recorded_at, "recorded_at"))
        if self.expires_at is not None:
            if not isinstance(self.expires_at, datetime):
                raise _invalid("expires_at must be a datetime", "expires_at")
            put(self, "expires_at", utc_millis(self.expires_at, "expires_at"))
        self._check_rules()

    def _check_rules(self) -> None:
        state = self.state
        if state is ConsentState.NOT_SOUGHT and self.not_sought_reason is None:
            raise _invalid(
                "NOT_SOUGHT needs a reason: RISK_TO_CHILD, PREJUDICE_PREVENTION_DETECTION, "
                "NOT_PRACTICABLE or CHILD_NOT_COMPETENT",
                "not_sought_reason",
            )
        if state is not ConsentState.NOT_SOUGHT and self.not_sought_reason is not None:
            raise _invalid("only NOT_SOUGHT carries a not_sought_reason", "not_sought_reason")
        if state is ConsentState.OVERRIDDEN and self.justification is None:
            raise _invalid(
                "OVERRIDDEN needs a justification: SIGNIFICANT_HARM, PREVENT_DETECT_CRIME, "
                "RISK_TO_OTHERS or LEGAL_DUTY",
                "justification",
            )
        if state is not ConsentState.OVERRIDDEN and self.justification is not None:
            raise _invalid("only OVERRIDDEN carries a justification", "justification")
        if self.expires_at is not None:
            if state is not ConsentState.GIVEN:
                raise _invalid("only GIVEN consent can have expires_at", "expires_at")
            if self.expires_at <= self.recorded_at:
                raise _invalid("expires_at must be later than recorded_at", "expires_at")
        expected = consent_record_id_for(
            self.subject_pseudonym, state, self.recorded_at, self.agency_id
        )
        if self.consent_record_id != expected:
            raise _invalid(
                "consent_record_id does not match the record (it is derived, not chosen)",
                "consent_record_id",
            )

    @classmethod
    def create(
        cls,
        *,
        subject_pseudonym: str,
        state: ConsentState,
        decided_by: str,
        agency_id: str,
        recorded_at: datetime,
        not_sought_reason: NotSoughtReason | None = None,
        justification: OverrideJustification | None = None,
        expires_at: datetime | None = None,
        source_ref: str | None = None,
    ) -> ConsentRecord:
        """A new record with its derived id; raises ``ValidationError`` if it breaks a rule."""
        state = ConsentState(state)
        if not isinstance(recorded_at, datetime):
            raise _invalid("recorded_at must be a datetime", "recorded_at")
        record_id = (
            consent_record_id_for(subject_pseudonym, state, recorded_at, agency_id)
            if isinstance(subject_pseudonym, str) and isinstance(agency_id, str)
            else ""
        )
        return cls(
            consent_record_id=record_id,
            subject_pseudonym=subject_pseudonym,
            state=state,
            not_sought_reason=not_sought_reason,
            justification=justification,
            decided_by=decided_by,
            agency_id=agency_id,
            recorded_at=recorded_at,
            expires_at=expires_at,
            source_ref=source_ref,
        )

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes with ``consent_record`` (enums as strings)."""
        return {
            "consent_record_id": self.consent_record_id,
            "subject_pseudonym": self.subject_pseudonym,
            "state": self.state.value,
            "not_sought_reason": None
            if self.not_sought_reason is None
            else self.not_sought_reason.value,
            "justification": None if self.justification is None else self.justification.value,
            "decided_by": self.decided_by,
            "agency_id": self.agency_id,
            "recorded_at": self.recorded_at,
            "expires_at": self.expires_at,
            "source_ref": self.source_ref,
        }

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> ConsentRecord:
        """Build from a decoded record; raises ``ValidationError`` if it breaks a rule."""
        if not isinstance(data, Mapping):
            raise _invalid("consent record must be a mapping")
        required = ("consent_record_id", "subject_pseudonym", "state", "decided_by")
        missing = [n for n in (*required, "agency_id", "recorded_at") if data.get(n) is None]
        if missing:
            raise _invalid(f"consent record lacks {', '.join(missing)}", *missing)
        return cls(
            consent_record_id=str(data["consent_record_id"]),
            subject_pseudonym=data["subject_pseudonym"],
            state=data["state"],
            not_sought_reason=data.get("not_sought_reason"),
            justification=data.get("justification"),
            decided_by=data["decided_by"],
            agency_id=data["agency_id"],
            recorded_at=data["recorded_at"],
            expires_at=data.get("expires_at"),
            source_ref=data.get("source_ref"),
        )
