"""Decisions: PERMIT, DENY or REFER (DESIGN §9), as frozen values.

Every decision carries a deterministic ``decision_id``, the policy revision it
was made under, the agreements it rests on, and reasons. Reasons are written
only from policy text (agreement titles, lawful-basis citations) and enum
names: never from a concern's names, narrative or other free text, so they
are safe to audit and log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas import AgencyType, ConcernType, ConsentState, Lscp, ReasonCode, RiskGrade

from ._policy import Profile

__all__ = [
    "Decision",
    "DecisionInput",
    "Deny",
    "Permit",
    "Refer",
    "decision_id_for",
]

#: The OPA-style path under which decisions are logged.
DECISION_PATH = "safer/consent/decide"


def decision_id_for(concern_id: str, recipient_id: str, policy_revision: str) -> str:
    """First 32 hex digits of SHA-256 over the concern, the recipient and the policy revision.

    The same concern decided for the same recipient under the same policy has
    the same id (so a replay after a crash is recognisable); a policy change
    gives a new id. Fields are NUL-separated after a domain tag.
    """
    material = "\0".join(("safer-decision-v1", concern_id, recipient_id, policy_revision))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True)
class DecisionInput:
    """What a decision was made on, without personal data (for logs and audit).

    ``age_bands`` has one entry per CHILD subject: ``child`` (under 18),
    ``young_adult`` (18 to 24), ``adult`` (25 or over) or ``unknown`` (no date
    of birth). ``consent_source`` says where the consent position came from
    (``concern``, ``consent-record`` or ``caller``) and ``consent_reason`` is
    the stable code that explains it (a NOT_SOUGHT reason or an override's
    justification), if any.
    """

    concern_type: ConcernType
    risk_grade: RiskGrade
    restricted: bool
    source_agency_type: AgencyType
    recipient_agency_type: AgencyType
    recipient_lscp: Lscp
    front_door: bool
    age_bands: tuple[str, ...]
    consent_source: str = "caller"
    consent_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "concern_type": self.concern_type.value,
            "risk_grade": self.risk_grade.value,
            "restricted": self.restricted,
            "source_agency_type": self.source_agency_type.value,
            "recipient_agency_type": self.recipient_agency_type.value,
            "recipient_lscp": self.recipient_lscp.value,
            "front_door": self.front_door,
            "age_bands": list(self.age_bands),
            "consent_source": self.consent_source,
            "consent_reason": self.consent_reason,
        }


@dataclass(frozen=True, kw_only=True)
class _DecisionBase:
    decision_id: str
    concern_id: str
    recipient_id: str
    policy_revision: str
    agreement_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    reason_codes: tuple[ReasonCode, ...]
    consent_state: ConsentState
    summary: DecisionInput

    @property
    def kind(self) -> Literal["PERMIT", "DENY", "REFER"]:
        raise NotImplementedError

    def _result(self) -> dict[str, Any]:
        return {}

    def to_log(self, timestamp: datetime | None = None) -> dict[str, Any]:
        """An OPA-style decision log entry: id, PID-free input summary, result, revision.

        The shape follows OPA's decision logs (``decision_id``, ``path``,
        ``input``, ``result``, ``bundles.<name>.revision``, ``labels``,
        ``timestamp``). consent/ never reads the clock: pass ``timestamp`` (the
        decision's ``now``) to include it.
        """
        entry: dict[str, Any] = {
            "decision_id": self.decision_id,
            "labels": {"app": "safer-exchange", "engine": "consent.decide"},
            "path": DECISION_PATH,
            "input": {
                "concern_id": self.concern_id,
                "recipient_id": self.recipient_id,
                "consent_state": self.consent_state.value,
                **self.summary.to_dict(),
            },
            "result": {
                "decision": self.kind,
                "agreement_ids": list(self.agreement_ids),
                "reason_codes": [c.value for c in self.reason_codes],
                "reasons": list(self.reasons),
                **self._result(),
            },
            "bundles": {"safer-policy": {"revision": self.policy_revision}},
        }
        if timestamp is not None:
            entry["timestamp"] = timestamp.isoformat()
        return entry


@dataclass(frozen=True, kw_only=True)
class _Shares:
    """What a PERMIT or REFER shares, and under which agreement."""

    profile: Profile
    lawful_basis: str
    purpose: str
    retention: str
    withheld_subject_refs: tuple[str, ...] = ()

    def _shared(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "lawful_basis": self.lawful_basis,
            "purpose": self.purpose,
            "retention": self.retention,
            "withheld_subjects": len(self.withheld_subject_refs),
        }


@dataclass(frozen=True, kw_only=True)
class Permit(_Shares, _DecisionBase):
    """Share ``profile``'s fields with the recipient under ``lawful_basis``.

    ``withheld_subject_refs`` are subjects to replace by a stub (third-party
    protection, or children the recipient has no relationship with).
    """

    @property
    def kind(self) -> Literal["PERMIT"]:
        return "PERMIT"

    def _result(self) -> dict[str, Any]:
        return self._shared()


@dataclass(frozen=True, kw_only=True)
class Deny(_DecisionBase):
    """Do not share. ``reason`` is the stable code; the decision is still audited."""

    reason: ReasonCode

    @property
    def kind(self) -> Literal["DENY"]:
        return "DENY"

    def _result(self) -> dict[str, Any]:
        return {"reason": self.reason.value}


@dataclass(frozen=True, kw_only=True)
class Refer(_Shares, _DecisionBase):
    """Send to the partnership's front door for human triage, not as a disclosure.

    ``profile``, ``lawful_basis`` and ``purpose`` describe the triage copy.
    """

    reason: ReasonCode

    @property
    def kind(self) -> Literal["REFER"]:
        return "REFER"

    def _result(self) -> dict[str, Any]:
        return {"reason": self.reason.value, **self._shared()}


Decision = Permit | Deny | Refer
