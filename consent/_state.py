"""Consent as a state with reasons: what ``decide()`` weighs.

A ``Consent`` is the consent position that applies to one decision: the state
(GIVEN, REFUSED, WITHDRAWN, NOT_SOUGHT, OVERRIDDEN, EXPIRED) and what explains
it (the NOT_SOUGHT reason, the override's justification), plus where it came
from:

* ``concern``: the officer's own statement on the concern;
* ``consent-record``: the latest record on ``hips.consent`` for a person in
  the concern, used only when it was recorded *after* the concern's statement
  (``current_consent``);
* ``caller``: a bare state passed to ``decide()`` with nothing to explain it.

A concern's statement carries its reason as free text (Concern v1). A reason
that starts with a stable code (``RISK_TO_CHILD: ...``) gives that code;
otherwise the standard wording of the 2024 information-sharing advice is
recognised (``seeking consent would place the child at risk`` and so on). The
text itself is never copied anywhere: only the code is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Literal

from schemas import (
    NOT_SOUGHT_REASONS,
    OVERRIDE_JUSTIFICATIONS,
    ConsentState,
    ConsentStatement,
    NotSoughtReason,
    OverrideJustification,
)

from ._record import ConsentRecord

__all__ = [
    "NOT_SOUGHT_CITATIONS",
    "Consent",
    "ConsentSource",
    "current_consent",
    "justification_from_text",
    "not_sought_reason_from_text",
]

ConsentSource = Literal["concern", "consent-record", "caller"]

#: The legal condition each NOT_SOUGHT reason maps to: DPA 2018 Sch 1 para 18(2)
#: (and Sch 8 para 4(2) for the police) lists when safeguarding processing may go
#: ahead without consent; crime prevention is Sch 1 para 10 / Part 3.
NOT_SOUGHT_CITATIONS: dict[NotSoughtReason, str] = {
    NotSoughtReason.RISK_TO_CHILD: "DPA 2018 Sch 1 para 18(2)(c): obtaining consent would "
    "prejudice the protection",
    NotSoughtReason.PREJUDICE_PREVENTION_DETECTION: "DPA 2018 Sch 1 para 10 and Part 3: "
    "seeking consent would prejudice the prevention or detection of crime",
    NotSoughtReason.NOT_PRACTICABLE: "DPA 2018 Sch 1 para 18(2)(b): consent cannot "
    "reasonably be obtained",
    NotSoughtReason.CHILD_NOT_COMPETENT: "DPA 2018 Sch 1 para 18(2)(a): consent cannot be "
    "given by the data subject",
}

# Recognised wording, most protective reason first. Lower-case substrings.
_NOT_SOUGHT_WORDING: tuple[tuple[NotSoughtReason, tuple[str, ...]], ...] = (
    (
        NotSoughtReason.RISK_TO_CHILD,
        ("child at risk", "child in danger", "risk to the child", "risk of significant harm"),
    ),
    (
        NotSoughtReason.PREJUDICE_PREVENTION_DETECTION,
        ("prevention or detection", "detection of crime", "prejudice the investigation"),
    ),
    (
        NotSoughtReason.NOT_PRACTICABLE,
        ("not practicable", "impracticable", "could not be contacted", "unable to contact"),
    ),
    (
        NotSoughtReason.CHILD_NOT_COMPETENT,
        ("not competent", "not gillick", "too young to", "lacks capacity"),
    ),
)
_JUSTIFICATION_WORDING: tuple[tuple[OverrideJustification, tuple[str, ...]], ...] = (
    (
        OverrideJustification.SIGNIFICANT_HARM,
        ("significant harm", "child is at risk", "child at risk"),
    ),
    (
        OverrideJustification.PREVENT_DETECT_CRIME,
        ("prevention or detection", "prevent or detect", "serious crime"),
    ),
    (OverrideJustification.RISK_TO_OTHERS, ("risk to others", "harm to another", "harm to others")),
    (OverrideJustification.LEGAL_DUTY, ("court order", "statutory duty", "legal duty")),
)


def _leading_code(text: str) -> str:
    head = text.strip().split(":", 1)[0].split(None, 1)
    return head[0].upper() if head else ""


@lru_cache(maxsize=256)
def not_sought_reason_from_text(text: str | None) -> NotSoughtReason | None:
    """The NOT_SOUGHT reason a free-text reason states, or None if it states none."""
    if not text or not text.strip():
        return None
    code = _leading_code(text)
    if code in NotSoughtReason.__members__:
        return NotSoughtReason(code)
    lowered = text.lower()
    for reason, phrases in _NOT_SOUGHT_WORDING:
        if any(p in lowered for p in phrases):
            return reason
    return None


@lru_cache(maxsize=256)
def justification_from_text(text: str | None) -> OverrideJustification | None:
    """The override justification a free-text reason states, or None."""
    if not text or not text.strip():
        return None
    code = _leading_code(text)
    if code in OverrideJustification.__members__:
        return OverrideJustification(code)
    lowered = text.lower()
    for justification, phrases in _JUSTIFICATION_WORDING:
        if any(p in lowered for p in phrases):
            return justification
    return None


@dataclass(frozen=True)
class Consent:
    """The consent position one decision is made on. PID-free: codes and ids only.

    ``justified`` is True for an OVERRIDDEN state whose justification is
    recorded (a code, or on a concern a non-empty reason); an override without
    one is not an override, and the refusal it claims to override stands.
    """

    state: ConsentState
    not_sought_reason: NotSoughtReason | None = None
    justification: OverrideJustification | None = None
    justified: bool = False
    source: ConsentSource = "caller"
    record_id: str | None = None
    recorded_at: datetime | None = None
    expires_at: datetime | None = None

    @classmethod
    def from_statement(cls, statement: ConsentStatement) -> Consent:
        """The officer's statement on a concern (reason text read for a code only)."""
        return _from_statement(statement.state, statement.reason, statement.recorded_at)

    @classmethod
    def from_record(cls, record: ConsentRecord) -> Consent:
        return cls(
            state=record.state,
            not_sought_reason=record.not_sought_reason,
            justification=record.justification,
            justified=record.justification is not None,
            source="consent-record",
            record_id=record.consent_record_id,
            recorded_at=record.recorded_at,
            expires_at=record.expires_at,
        )

    def on(self, now: datetime) -> Consent:
        """This position at ``now``: GIVEN consent past its expiry reads as EXPIRED."""
        if (
            self.state is ConsentState.GIVEN
            and self.expires_at is not None
            and now >= self.expires_at
        ):
            return dataclasses.replace(self, state=ConsentState.EXPIRED)
        return self

    @property
    def reason_code(self) -> str | None:
        """The stable code that explains the state, if any (for logs and audit)."""
        if self.not_sought_reason is not None:
            return self.not_sought_reason.value
        if self.justification is not None:
            return self.justification.value
        return None

    def origin_text(self) -> str:
        """Where the position came from, in words (ids and times only)."""
        if self.source == "consent-record":
            when = self.recorded_at.isoformat() if self.recorded_at else "unknown time"
            return (
                f"consent record {self.record_id} of {when}, newer than the concern's own "
                "consent statement"
            )
        if self.source == "concern":
            return "the officer's consent statement on the concern"
        return "the consent state given to decide()"

    def describe(self) -> str:
        """The state and what explains it, e.g. ``consent NOT_SOUGHT (RISK_TO_CHILD: ...)``."""
        text = f"consent {self.state.value}"
        if self.state is ConsentState.NOT_SOUGHT:
            if self.not_sought_reason is None:
                return text + " with no recorded reason for not seeking it"
            reason = self.not_sought_reason
            return (
                f"{text} ({reason.value}: {NOT_SOUGHT_REASONS[reason]}; "
                f"{NOT_SOUGHT_CITATIONS[reason]})"
            )
        if self.state is ConsentState.OVERRIDDEN:
            if self.justification is not None:
                why = OVERRIDE_JUSTIFICATIONS[self.justification]
                return f"{text} ({self.justification.value}: {why})"
            if self.justified:
                return f"{text} (justification recorded as text on the concern)"
            return f"{text} with no recorded justification"
        if self.state is ConsentState.EXPIRED and self.expires_at is not None:
            return f"{text} (lapsed {self.expires_at.isoformat()})"
        return text


def _from_statement(state: ConsentState, reason: str | None, recorded_at: datetime) -> Consent:
    not_sought = not_sought_reason_from_text(reason) if state is ConsentState.NOT_SOUGHT else None
    justification = justification_from_text(reason) if state is ConsentState.OVERRIDDEN else None
    return Consent(
        state=state,
        not_sought_reason=not_sought,
        justification=justification,
        justified=state is ConsentState.OVERRIDDEN and bool(reason and reason.strip()),
        source="concern",
        recorded_at=recorded_at,
    )


def current_consent(statement: ConsentStatement, record: ConsentRecord | None) -> Consent:
    """The consent position for a decision: the record if it is newer, else the statement.

    A record recorded at the same moment as the statement or earlier does not
    replace it (the concern was written knowing it).
    """
    if record is not None and record.recorded_at > statement.recorded_at:
        return Consent.from_record(record)
    return Consent.from_statement(statement)
