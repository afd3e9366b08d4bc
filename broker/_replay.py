"""Replay a logged decision: recompute it from the audit log and the stored concern (issue 15.4).

``replay_decision`` takes a decision's audit record (DISCLOSED, REFERRED or
WITHHELD), the concern it was made on, and the log's CONSENT_CHANGED entries
for the subject, and runs ``consent.decide`` and the minimiser again exactly as
the router did (same recipient, same time, same policy if it is still the one
in force). It compares the recomputed canonical input hash, decision id,
outcome, reason codes, lawful basis, fields and payload hash with what the log
holds, and says why when they differ. No I/O and no Kafka: the shell (``safer
policy explain --replay``) fetches the record, the concern and the consent
entries.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from audit import AuditRecord
from consent import (
    LONDON,
    Consent,
    Decision,
    Deny,
    Permit,
    current_consent,
    deadline_for,
    decide,
    decision_input,
    input_sha256,
    minimise,
)
from schemas import (
    AuditEvent,
    ConcernModel,
    ConsentState,
    NotSoughtReason,
    OverrideJustification,
)

from ._config import Deployment

__all__ = ["Replay", "ReplayCheck", "replay_decision"]

_LONDON = ZoneInfo(LONDON)
_DECISION_EVENTS = {
    AuditEvent.DISCLOSED: "PERMIT",
    AuditEvent.REFERRED: "REFER",
    AuditEvent.WITHHELD: "DENY",
}
_RECORD_ID = re.compile(r"\Aconsent record ([0-9a-f-]{8,64}):")
_LAPSES = "consent lapses at "


@dataclass(frozen=True)
class ReplayCheck:
    """One logged value beside its recomputation."""

    name: str
    logged: Any
    recomputed: Any

    @property
    def ok(self) -> bool:
        return bool(self.logged == self.recomputed)


@dataclass
class Replay:
    """The outcome of replaying one decision."""

    disclosure_id: str
    logged_input_sha256: str | None
    input_sha256: str
    input: dict[str, Any]
    consent_from: str
    checks: list[ReplayCheck] = field(default_factory=list)
    why_not: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return (
            self.logged_input_sha256 is not None
            and self.logged_input_sha256 == self.input_sha256
            and all(c.ok for c in self.checks)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "disclosure_id": self.disclosure_id,
            "matches": self.matches,
            "input_sha256": {"logged": self.logged_input_sha256, "recomputed": self.input_sha256},
            "consent_from": self.consent_from,
            "checks": [
                {"name": c.name, "ok": c.ok, "logged": c.logged, "recomputed": c.recomputed}
                for c in self.checks
            ],
            "input": self.input,
            "why_not": list(self.why_not),
        }


def _consent_from_entry(entry: AuditRecord) -> Consent | None:
    """The consent position a CONSENT_CHANGED entry records (None if it cannot be read)."""
    if entry.consent_state is None or not entry.reasons:
        return None
    found = _RECORD_ID.match(entry.reasons[0])
    if found is None:
        return None
    not_sought: NotSoughtReason | None = None
    justification: OverrideJustification | None = None
    for code in entry.reason_codes:
        if code in NotSoughtReason.__members__.values():
            not_sought = NotSoughtReason(code)
        elif code in OverrideJustification.__members__.values():
            justification = OverrideJustification(code)
    expires: datetime | None = None
    for reason in entry.reasons:
        if reason.startswith(_LAPSES):
            expires = datetime.fromisoformat(reason.removeprefix(_LAPSES))
    return Consent(
        state=ConsentState(entry.consent_state),
        not_sought_reason=not_sought,
        justification=justification,
        justified=justification is not None,
        source="consent-record",
        record_id=found.group(1),
        recorded_at=entry.at,
        expires_at=expires,
    )


def replay_decision(
    deployment: Deployment,
    record: AuditRecord,
    concern: ConcernModel,
    consent_entries: Iterable[AuditRecord] = (),
) -> Replay:
    """Recompute the decision ``record`` logs from ``concern`` (see the module docstring).

    ``consent_entries``: CONSENT_CHANGED entries about the subject; the newest
    one recorded before the decision whose position reproduces the logged
    input is used, else the concern's own statement.
    """
    disclosure_id = record.disclosure_id or ""
    why: list[str] = []
    if record.event not in _DECISION_EVENTS:
        raise ValueError(f"{record.event.value} is not a decision")
    if concern.concern_id != record.concern_id:
        why.append(
            f"the concern given is {concern.concern_id}, the decision was about "
            f"{record.concern_id}: give the concern this decision was made on"
        )
    directory = deployment.directory
    recipient = directory.recipient(record.recipient or "")
    publisher = directory.publisher(concern.source_agency)
    if recipient is None or publisher is None:
        missing = "recipient" if recipient is None else "publisher"
        why.append(
            f"the {missing} is no longer in the directory: replay with the deploy/ folder "
            "in force at the time (--deploy-dir)"
        )
        return Replay(disclosure_id, record.input_sha256, "", {}, "", why_not=why)
    if record.policy_revision != deployment.policy.revision:
        why.append(
            f"the policy changed since: the decision was made under {record.policy_revision}, "
            f"the deploy/ folder now holds {deployment.policy.revision}; replay with the "
            "policy files of that revision (--deploy-dir)"
        )
    now = record.at
    statement = current_consent(concern.consent, None)
    candidates: list[tuple[str, Consent]] = [("the concern's own consent statement", statement)]
    earlier = sorted(
        (e for e in consent_entries if e.event is AuditEvent.CONSENT_CHANGED and e.at <= now),
        key=lambda e: e.seq or 0,
        reverse=True,
    )
    for entry in earlier:
        position = _consent_from_entry(entry)
        if position is not None:
            candidates.append(
                (f"consent record {position.record_id} (audit seq {entry.seq})", position)
            )

    def run(consent: Consent) -> tuple[Decision, dict[str, Any], str]:
        decision = decide(
            concern,
            recipient,
            deployment.policy,
            consent,
            now,
            source_agency_type=publisher.agency_type,
        )
        document = decision_input(concern, recipient, decision, consent, now)
        return decision, document, input_sha256(document)

    consent_from, consent = candidates[0]
    decision, document, digest = run(consent)
    for label, other in candidates[1:]:
        if digest == record.input_sha256:
            break
        attempt = run(other)
        if attempt[2] == record.input_sha256:
            consent_from, (decision, document, digest) = label, attempt
    if record.input_sha256 is None:
        why.append(
            "this decision was logged before decisions carried input_sha256 (issue 15); only "
            "the outcome can be compared"
        )
    elif digest != record.input_sha256 and not why:
        why.append(
            "the recomputed input differs from the logged one: the concern given is not the "
            "one decided (a corrected copy?), or consent came from a record this log does not "
            "hold"
        )

    fields: tuple[str, ...] = ()
    payload_sha256: str | None = None
    lawful_basis: str | None = None
    deadline: datetime | None = None
    if not isinstance(decision, Deny):
        payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
        fields = payload.fields
        payload_sha256 = hashlib.sha256(payload.canonical_bytes()).hexdigest()
        lawful_basis = decision.lawful_basis
        calendars = deployment.calendars
        if calendars is not None:
            due = deadline_for(
                concern_type=concern.concern_type,
                risk_grade=concern.risk_grade,
                recipient_agency_type=recipient.agency_type,
                outcome="PERMIT" if isinstance(decision, Permit) else "REFER",
                decided_at=now,
                school_calendar=calendars.school(recipient.lscp),
                bank_holidays=calendars.bank_holidays,
                zone=_LONDON,
                local=deployment.timeliness,
            )
            deadline = due.due if due is not None else None
    checks = [
        ReplayCheck("decision", _DECISION_EVENTS[record.event], decision.kind),
        ReplayCheck("decision_id", record.decision_id, decision.decision_id),
        ReplayCheck("policy_revision", record.policy_revision, decision.policy_revision),
        ReplayCheck("consent_state", record.consent_state, decision.consent_state.value),
        ReplayCheck(
            "reason_codes", list(record.reason_codes), [c.value for c in decision.reason_codes]
        ),
        ReplayCheck("lawful_basis", record.lawful_basis, lawful_basis),
        ReplayCheck("fields_disclosed", list(record.fields_disclosed), list(fields)),
        ReplayCheck("payload_sha256", record.payload_sha256, payload_sha256),
        ReplayCheck(
            "deadline",
            None if record.deadline is None else record.deadline.isoformat(),
            None if deadline is None else deadline.isoformat(),
        ),
    ]
    if any(c.name == "deadline" and not c.ok for c in checks):
        why.append(
            "the deadline differs: the calendars or deploy/timeliness.toml changed since, "
            "or the decision predates the local timeliness policy"
        )
    return Replay(
        disclosure_id=disclosure_id,
        logged_input_sha256=record.input_sha256,
        input_sha256=digest,
        input=document,
        consent_from=consent_from,
        checks=checks,
        why_not=why,
    )
