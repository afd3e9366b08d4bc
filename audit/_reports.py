"""The questions auditors and DPOs ask, as pure functions over audit records.

Every function here takes an iterable of ``AuditRecord`` (in any order; the
CLI passes what ``AuditStore.records`` yields) and returns small frozen
dataclasses. Nothing here does I/O, and nothing here decides policy: names of
recipients and citations of lawful bases arrive as a ``Labels`` value built by
the caller from the directory and the lawful-basis catalogue.

- ``trail``: every event about one person, ordered, with who received what,
  when, why and under which basis;
- ``s62_log``: the DPA 2018 s.62 log of disclosures in a period;
- ``subject_access_report``: what a subject access request must answer, with
  restricted items withheld (DPA 2018 s.45(4)) and nothing about anyone else;
- ``audit_stats``: volumes and time to receipt.

**Other people's data.** An audit record lists the pseudonyms of *every*
subject of a concern. Subject-scoped results (trail, SAR) keep only records
that name one of the requested pseudonyms and never carry any pseudonym at
all, so another subject's pseudonym cannot leak through them.

**Restricted concerns.** A concern is restricted when any of its records
carries ``RESTRICTED_RECORD``. Receipts do not repeat the decision's reason
codes, so restriction is decided per concern, over all the records given,
before any filter applies.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas import AuditEvent, ConcernType, ReasonCode, ValidationError

from ._equality import is_equality_reason
from ._record import AuditRecord

__all__ = [
    "ALL_TIME",
    "ANY_EVENT",
    "DISCLOSURE_EVENTS",
    "NO_LABELS",
    "S45_EXEMPTION",
    "Labels",
    "Period",
    "ReceiptTimes",
    "S62Entry",
    "SarDecision",
    "SarDisclosure",
    "SarErasure",
    "SarRestriction",
    "Stats",
    "SubjectAccessReport",
    "TrailEntry",
    "TrailQuery",
    "audit_stats",
    "concern_type_of",
    "restricted_concerns",
    "s62_log",
    "subject_access_report",
    "trail",
]

#: Events that put data in a recipient's hands (a referral goes to a front door).
DISCLOSURE_EVENTS = frozenset({AuditEvent.DISCLOSED, AuditEvent.REFERRED})

#: The exemption a restricted item is withheld under in a subject access report.
S45_EXEMPTION = "Data Protection Act 2018 section 45(4)"

#: Label used when a value is not in the audit record.
NOT_RECORDED = "not recorded"

_CONCERN_TYPE = re.compile(r"\bconcern type ([A-Z][A-Z_]+)\b")
_CONCERN_TYPES = frozenset(t.value for t in ConcernType)
_RESTRICTED = ReasonCode.RESTRICTED_RECORD.value


# Time helpers of their own (rather than ``_record``'s), so that these reports
# depend only on AuditRecord's fields: ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC.


def utc_millis(name: str, value: datetime) -> datetime:
    """``value`` in UTC, truncated to milliseconds; ``ValidationError`` if naive."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{name} must be a timezone-aware datetime",
            fields=(name,),
            hint="pass datetime.now(UTC), not datetime.now()",
        )
    moment = value.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def format_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of an aware datetime, in UTC."""
    return utc_millis("time", moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time`` (accepts any ISO 8601 time with an offset)."""
    moment = datetime.fromisoformat(text)
    return utc_millis("time", moment)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


# -- labels and periods -----------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """Human names for ids: recipients and publishers, and lawful-basis citations.

    Built by the caller (``safer``) from ``deploy/directory.toml`` and
    ``consent.LAWFUL_BASES``; an unknown id is shown as itself.
    """

    names: Mapping[str, str] = field(default_factory=dict)
    citations: Mapping[str, str] = field(default_factory=dict)

    def name(self, agency_id: str | None) -> str | None:
        if agency_id is None:
            return None
        return self.names.get(agency_id, agency_id)

    def citation(self, basis: str | None) -> str | None:
        if basis is None:
            return None
        return self.citations.get(basis, basis)


@dataclass(frozen=True)
class Period:
    """A half-open time range ``[start, end)``; either end may be open."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None:
            object.__setattr__(self, "start", utc_millis("start", self.start))
        if self.end is not None:
            object.__setattr__(self, "end", utc_millis("end", self.end))
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValidationError(
                "the end of the period must be after its start",
                fields=("from", "to"),
                hint="--to is exclusive for a date-time and covers the whole day for a date",
            )

    def contains(self, moment: datetime) -> bool:
        if self.start is not None and moment < self.start:
            return False
        return self.end is None or moment < self.end

    def to_json(self) -> dict[str, str | None]:
        return {"from": _iso(self.start), "to": _iso(self.end)}


#: Defaults: no names (ids shown as they are) and no time limit.
NO_LABELS = Labels()
ALL_TIME = Period()


# -- shared helpers ---------------------------------------------------------------------


def restricted_concerns(records: Iterable[AuditRecord]) -> set[str]:
    """Concern ids any of whose records carries ``RESTRICTED_RECORD``."""
    return {r.concern_id for r in records if r.concern_id and _RESTRICTED in r.reason_codes}


def _shown_reasons(reasons: tuple[str, ...]) -> tuple[str, ...]:
    """Reasons for a view of trails and the s.62 log: without the router's equality
    monitoring line (counts of the concern's children by ethnic group), which is only
    ever read in aggregate (docs/EQUALITY.md). The hashed record keeps it; the subject
    access report shows it to the subject, whose data it is."""
    return tuple(r for r in reasons if not is_equality_reason(r))


def concern_type_of(record: AuditRecord) -> str | None:
    """The concern type a decision record names in its reasons, if any.

    The audit record has no concern-type field. ``consent.decide`` writes the
    type into its reasons ("... for concern type DOMESTIC_ABUSE ...") whenever
    an agreement was considered, so it can be read back from the hashed
    record, as trustworthy as the record itself. Decisions that never reached
    an agreement (no agreement between the parties at all) do not name it.
    """
    for reason in record.reasons:
        for match in _CONCERN_TYPE.finditer(reason):
            if match.group(1) in _CONCERN_TYPES:
                return match.group(1)
    return None


def _about(record: AuditRecord, subjects: Collection[str]) -> bool:
    return any(p in subjects for p in record.subject_pseudonyms)


def _unique(records: Iterable[AuditRecord]) -> list[AuditRecord]:
    """Records once each (by seq, else entry id), in (time, seq) order."""
    seen: dict[object, AuditRecord] = {}
    for r in records:
        seen.setdefault(r.seq if r.seq is not None else r.entry_id, r)
    return sorted(seen.values(), key=lambda r: (r.at, r.seq or 0))


# -- trail ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrailQuery:
    """Filters for ``trail``; an empty set means "any"."""

    recipients: frozenset[str] = frozenset()
    lawful_bases: frozenset[str] = frozenset()
    events: frozenset[AuditEvent] = frozenset()
    period: Period = field(default_factory=Period)

    def matches(self, record: AuditRecord) -> bool:
        if self.events and record.event not in self.events:
            return False
        if self.recipients and record.recipient not in self.recipients:
            return False
        if self.lawful_bases and record.lawful_basis not in self.lawful_bases:
            return False
        return self.period.contains(record.at)


@dataclass(frozen=True)
class TrailEntry:
    """One event in a person's trail. Carries no subject pseudonym."""

    seq: int
    at: datetime
    event: str
    concern_id: str | None
    disclosure_id: str | None
    source: str
    actor: str
    recipient: str | None
    lscp: str | None
    lawful_basis: str | None
    purpose: str | None
    consent_state: str | None
    fields: tuple[str, ...]
    reason_codes: tuple[str, ...]
    reasons: tuple[str, ...]
    payload_sha256: str | None
    restricted: bool

    def to_json(self, labels: Labels = NO_LABELS) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_time(self.at),
            "event": self.event,
            "concern_id": self.concern_id,
            "disclosure_id": self.disclosure_id,
            "source": self.source,
            "source_name": labels.name(self.source),
            "actor": self.actor,
            "recipient": self.recipient,
            "recipient_name": labels.name(self.recipient),
            "lscp": self.lscp,
            "lawful_basis": self.lawful_basis,
            "lawful_basis_citation": labels.citation(self.lawful_basis),
            "purpose": self.purpose,
            "consent_state": self.consent_state,
            "fields": list(self.fields),
            "reason_codes": list(self.reason_codes),
            "reasons": list(self.reasons),
            "payload_sha256": self.payload_sha256,
            "restricted": self.restricted,
        }


#: A query that matches every event.
ANY_EVENT = TrailQuery()


def trail(
    records: Iterable[AuditRecord],
    *,
    subjects: Collection[str],
    query: TrailQuery = ANY_EVENT,
) -> list[TrailEntry]:
    """Every event about the person with these pseudonyms, in time order.

    ``records`` may hold anything (the function keeps only records naming one
    of ``subjects``); for a correct ``restricted`` flag it must hold all of the
    person's records, not a pre-filtered subset. Returns an empty list when
    ``subjects`` is empty.
    """
    wanted = frozenset(subjects)
    mine = _unique(r for r in records if _about(r, wanted))
    restricted = restricted_concerns(mine)
    out: list[TrailEntry] = []
    for r in mine:
        if not query.matches(r):
            continue
        out.append(
            TrailEntry(
                seq=r.seq or 0,
                at=r.at,
                event=r.event.value,
                concern_id=r.concern_id,
                disclosure_id=r.disclosure_id,
                source=r.source,
                actor=r.actor,
                recipient=r.recipient,
                lscp=r.lscp,
                lawful_basis=r.lawful_basis,
                purpose=r.purpose,
                consent_state=r.consent_state,
                fields=r.fields_disclosed,
                reason_codes=r.reason_codes,
                reasons=_shown_reasons(r.reasons),
                payload_sha256=r.payload_sha256,
                restricted=r.concern_id in restricted,
            )
        )
    return out


# -- s.62 log ---------------------------------------------------------------------------


@dataclass(frozen=True)
class S62Entry:
    """One disclosure in the DPA 2018 s.62 log.

    s.62 asks for the justification, the date and time, who disclosed and the
    recipients. ``disclosed_by`` is the controller the data came from,
    ``recorded_by`` the system or person that acted for it.
    """

    seq: int
    at: datetime
    event: str
    disclosure_id: str | None
    concern_id: str | None
    disclosed_by: str
    recorded_by: str
    recipient: str | None
    lscp: str | None
    lawful_basis: str | None
    purpose: str | None
    consent_state: str | None
    reason_codes: tuple[str, ...]
    reasons: tuple[str, ...]
    policy_revision: str | None
    fields: tuple[str, ...]
    payload_sha256: str | None
    received_at: datetime | None

    def justification(self, labels: Labels = NO_LABELS) -> str:
        parts = []
        if self.lawful_basis:
            parts.append(f"lawful basis: {labels.citation(self.lawful_basis)}")
        if self.purpose:
            parts.append(f"purpose: {self.purpose}")
        parts.extend(self.reasons)
        return "; ".join(parts)

    def to_json(self, labels: Labels = NO_LABELS) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "date_time": format_time(self.at),
            "event": self.event,
            "disclosure_id": self.disclosure_id,
            "concern_id": self.concern_id,
            "disclosed_by": self.disclosed_by,
            "disclosed_by_name": labels.name(self.disclosed_by),
            "recorded_by": self.recorded_by,
            "recipient": self.recipient,
            "recipient_name": labels.name(self.recipient),
            "lscp": self.lscp,
            "lawful_basis": self.lawful_basis,
            "lawful_basis_citation": labels.citation(self.lawful_basis),
            "purpose": self.purpose,
            "justification": self.justification(labels),
            "consent_state": self.consent_state,
            "reason_codes": list(self.reason_codes),
            "policy_revision": self.policy_revision,
            "fields": list(self.fields),
            "payload_sha256": self.payload_sha256,
            "received_at": _iso(self.received_at),
        }


def s62_log(records: Iterable[AuditRecord], period: Period) -> list[S62Entry]:
    """Disclosures and referrals made in ``period``, in time order, with first receipt.

    Receipts are matched on ``disclosure_id`` wherever they fall in time, so
    pass every record (not only those in the period) to get ``received_at``.
    """
    chosen: dict[str, AuditRecord] = {}
    loose: list[AuditRecord] = []  # disclosures without an id (never written by the router)
    received: dict[str, datetime] = {}
    for r in records:
        if r.event is AuditEvent.RECEIVED and r.disclosure_id:
            first = received.get(r.disclosure_id)
            if first is None or r.at < first:
                received[r.disclosure_id] = r.at
        elif r.event in DISCLOSURE_EVENTS and period.contains(r.at):
            if r.disclosure_id:
                chosen.setdefault(f"{r.event.value}:{r.disclosure_id}", r)
            else:
                loose.append(r)
    out = [
        S62Entry(
            seq=r.seq or 0,
            at=r.at,
            event=r.event.value,
            disclosure_id=r.disclosure_id,
            concern_id=r.concern_id,
            disclosed_by=r.source,
            recorded_by=r.actor,
            recipient=r.recipient,
            lscp=r.lscp,
            lawful_basis=r.lawful_basis,
            purpose=r.purpose,
            consent_state=r.consent_state,
            reason_codes=r.reason_codes,
            reasons=_shown_reasons(r.reasons),
            policy_revision=r.policy_revision,
            fields=r.fields_disclosed,
            payload_sha256=r.payload_sha256,
            received_at=received.get(r.disclosure_id) if r.disclosure_id else None,
        )
        for r in _unique([*chosen.values(), *loose])
    ]
    return out


# -- subject access report ----------------------------------------------------------


@dataclass(frozen=True)
class SarDisclosure:
    """Something shared about the subject: with whom, when, what, why, on which basis."""

    seq: int
    at: datetime
    event: str
    concern_id: str | None
    disclosure_id: str | None
    source: str
    recipient: str | None
    lscp: str | None
    lawful_basis: str | None
    purpose: str | None
    consent_state: str | None
    fields: tuple[str, ...]
    reasons: tuple[str, ...]
    received_at: datetime | None

    def to_json(self, labels: Labels = NO_LABELS) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_time(self.at),
            "kind": "referral for review" if self.event == "REFERRED" else "disclosure",
            "concern_id": self.concern_id,
            "disclosure_id": self.disclosure_id,
            "shared_by": self.source,
            "shared_by_name": labels.name(self.source),
            "shared_with": self.recipient,
            "shared_with_name": labels.name(self.recipient),
            "partnership": self.lscp,
            "what": list(self.fields),
            "why": self.purpose,
            "lawful_basis": self.lawful_basis,
            "lawful_basis_citation": labels.citation(self.lawful_basis),
            "consent_state": self.consent_state,
            "reasons": list(self.reasons),
            "received_at": _iso(self.received_at),
        }


@dataclass(frozen=True)
class SarDecision:
    """A recorded decision *not* to share the subject's data with someone."""

    seq: int
    at: datetime
    concern_id: str | None
    recipient: str | None
    lscp: str | None
    reason_codes: tuple[str, ...]
    reasons: tuple[str, ...]

    def to_json(self, labels: Labels = NO_LABELS) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_time(self.at),
            "concern_id": self.concern_id,
            "not_shared_with": self.recipient,
            "not_shared_with_name": labels.name(self.recipient),
            "partnership": self.lscp,
            "reason_codes": list(self.reason_codes),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class SarRestriction:
    """Items withheld from the report because the concern is restricted.

    Only the log positions, the recorded reason and the exemption are given:
    no date, recipient, basis or concern reference, since any of those could
    defeat the restriction.
    """

    log_entries: tuple[int, ...]
    reason_codes: tuple[str, ...]
    reasons: tuple[str, ...]
    exemption: str = S45_EXEMPTION

    def to_json(self) -> dict[str, Any]:
        return {
            "items_withheld": len(self.log_entries),
            "log_entries": list(self.log_entries),
            "reason_codes": list(self.reason_codes),
            "recorded_reasons": list(self.reasons),
            "exemption": self.exemption,
        }


@dataclass(frozen=True)
class SarErasure:
    """A KEY_SHREDDED entry: the subject vault's key for this person was destroyed."""

    seq: int
    at: datetime
    actor: str
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_time(self.at),
            "actor": self.actor,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class SubjectAccessReport:
    generated_at: datetime
    disclosures: tuple[SarDisclosure, ...]
    not_shared: tuple[SarDecision, ...]
    restricted: tuple[SarRestriction, ...]
    erasures: tuple[SarErasure, ...]
    #: Log entries about the subject in none of the sections above (e.g. consent changes).
    other_events: Mapping[str, int]

    @property
    def withheld_count(self) -> int:
        return sum(len(r.log_entries) for r in self.restricted)

    def to_json(self, labels: Labels = NO_LABELS) -> dict[str, Any]:
        return {
            "generated_at": format_time(self.generated_at),
            "disclosures": [d.to_json(labels) for d in self.disclosures],
            "decisions_not_to_share": [d.to_json(labels) for d in self.not_shared],
            "withheld_restricted": [r.to_json() for r in self.restricted],
            "erasures": [e.to_json() for e in self.erasures],
            "other_events": dict(self.other_events),
        }


def subject_access_report(
    records: Iterable[AuditRecord], *, subjects: Collection[str], now: datetime
) -> SubjectAccessReport:
    """What a subject access request about the person with these pseudonyms must answer.

    Disclosures and referrals (with the first receipt), decisions not to
    share, and erasures (KEY_SHREDDED). Every record of a restricted concern
    is withheld, grouped per concern with its recorded reasons. Records not
    naming one of ``subjects`` are ignored, and no pseudonym is reported.
    """
    wanted = frozenset(subjects)
    mine = _unique(r for r in records if _about(r, wanted))
    restricted_ids = restricted_concerns(mine)
    received: dict[str, datetime] = {}
    for r in mine:
        if (
            r.event is AuditEvent.RECEIVED
            and r.disclosure_id
            and r.concern_id not in restricted_ids
        ):
            first = received.get(r.disclosure_id)
            if first is None or r.at < first:
                received[r.disclosure_id] = r.at
    disclosures: list[SarDisclosure] = []
    not_shared: list[SarDecision] = []
    erasures: list[SarErasure] = []
    withheld: dict[str, list[AuditRecord]] = {}
    other: Counter[str] = Counter()
    for r in mine:
        if r.concern_id in restricted_ids:
            withheld.setdefault(r.concern_id or "", []).append(r)
        elif r.event in DISCLOSURE_EVENTS:
            disclosures.append(
                SarDisclosure(
                    seq=r.seq or 0,
                    at=r.at,
                    event=r.event.value,
                    concern_id=r.concern_id,
                    disclosure_id=r.disclosure_id,
                    source=r.source,
                    recipient=r.recipient,
                    lscp=r.lscp,
                    lawful_basis=r.lawful_basis,
                    purpose=r.purpose,
                    consent_state=r.consent_state,
                    fields=r.fields_disclosed,
                    reasons=r.reasons,
                    received_at=received.get(r.disclosure_id) if r.disclosure_id else None,
                )
            )
        elif r.event is AuditEvent.WITHHELD:
            not_shared.append(
                SarDecision(
                    seq=r.seq or 0,
                    at=r.at,
                    concern_id=r.concern_id,
                    recipient=r.recipient,
                    lscp=r.lscp,
                    reason_codes=r.reason_codes,
                    reasons=r.reasons,
                )
            )
        elif r.event is AuditEvent.KEY_SHREDDED:
            erasures.append(SarErasure(seq=r.seq or 0, at=r.at, actor=r.actor, reasons=r.reasons))
        elif r.event is not AuditEvent.RECEIVED:
            other[r.event.value] += 1
    restrictions = []
    for group in withheld.values():
        codes = dict.fromkeys(c for r in group for c in r.reason_codes if c == _RESTRICTED)
        reasons = dict.fromkeys(
            reason
            for r in group
            if _RESTRICTED in r.reason_codes
            for reason in r.reasons
            if "restricted" in reason
        )
        restrictions.append(
            SarRestriction(
                log_entries=tuple(r.seq or 0 for r in group),
                reason_codes=tuple(codes) or (_RESTRICTED,),
                reasons=tuple(reasons),
            )
        )
    restrictions.sort(key=lambda x: x.log_entries)
    return SubjectAccessReport(
        generated_at=utc_millis("now", now),
        disclosures=tuple(disclosures),
        not_shared=tuple(not_shared),
        restricted=tuple(restrictions),
        erasures=tuple(erasures),
        other_events=dict(sorted(other.items())),
    )


# -- statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptTimes:
    """Seconds from delivery (DISCLOSED or REFERRED) to the first receipt."""

    delivered: int
    received: int
    median_s: float | None
    p90_s: float | None
    max_s: float | None

    @property
    def pending(self) -> int:
        return self.delivered - self.received

    @classmethod
    def of(cls, delivered: int, seconds: list[float]) -> ReceiptTimes:
        if not seconds:
            return cls(delivered, 0, None, None, None)
        ordered = sorted(seconds)
        # p90 by nearest rank: the smallest value with at least 90% at or below it.
        rank = max(1, math.ceil(0.9 * len(ordered)))
        return cls(
            delivered=delivered,
            received=len(ordered),
            median_s=float(statistics.median(ordered)),
            p90_s=ordered[rank - 1],
            max_s=ordered[-1],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "received": self.received,
            "pending": self.pending,
            "median_s": self.median_s,
            "p90_s": self.p90_s,
            "max_s": self.max_s,
        }


@dataclass(frozen=True)
class Stats:
    period: Period
    entries: int
    by_event: Mapping[str, int]
    by_partnership: Mapping[str, Mapping[str, int]]
    by_recipient: Mapping[str, Mapping[str, int]]
    by_concern_type: Mapping[str, Mapping[str, int]]
    concerns: int
    concerns_with_type: int
    time_to_receipt: Mapping[str, ReceiptTimes]
    time_to_receipt_all: ReceiptTimes

    def to_json(self, labels: Labels = NO_LABELS) -> dict[str, Any]:
        return {
            "period": self.period.to_json(),
            "entries": self.entries,
            "by_event": dict(self.by_event),
            "by_partnership": {k: dict(v) for k, v in self.by_partnership.items()},
            "by_recipient": {
                k: {"name": labels.name(k), **dict(v)} for k, v in self.by_recipient.items()
            },
            "by_concern_type": {k: dict(v) for k, v in self.by_concern_type.items()},
            "concern_type_source": "derived from the recorded decision reasons "
            "(the audit record has no concern-type field)",
            "concerns": self.concerns,
            "concerns_with_type": self.concerns_with_type,
            "time_to_receipt": {k: v.to_json() for k, v in self.time_to_receipt.items()},
            "time_to_receipt_all": self.time_to_receipt_all.to_json(),
        }


def _nested(counts: Mapping[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {k: dict(sorted(counts[k].items())) for k in sorted(counts)}


def audit_stats(records: Iterable[AuditRecord], period: Period = ALL_TIME) -> Stats:
    """Volumes per partnership, recipient, concern type and outcome, and time to receipt.

    Outcomes are the audit events. Entries count when their time is in
    ``period``; a receipt counts towards its delivery's time to receipt
    wherever it falls. The partnership of a quarantined record (never routed)
    is ``(none)``. Concern types come from ``concern_type_of``; a concern none
    of whose records names one is counted as "not recorded".
    """
    entries = 0
    by_event: Counter[str] = Counter()
    by_lscp: dict[str, Counter[str]] = {}
    by_recipient: dict[str, Counter[str]] = {}
    per_concern: dict[str, Counter[str]] = {}
    concern_types: dict[str, str] = {}
    no_concern: Counter[str] = Counter()
    delivered: dict[str, tuple[str, datetime]] = {}
    receipts: dict[str, datetime] = {}
    seen: set[str] = set()
    for r in records:
        if r.entry_id in seen:
            continue
        seen.add(r.entry_id)
        if r.concern_id and r.concern_id not in concern_types:
            found = concern_type_of(r)
            if found:
                concern_types[r.concern_id] = found
        if r.event is AuditEvent.RECEIVED and r.disclosure_id:
            first = receipts.get(r.disclosure_id)
            if first is None or r.at < first:
                receipts[r.disclosure_id] = r.at
        if not period.contains(r.at):
            continue
        entries += 1
        event = r.event.value
        by_event[event] += 1
        by_lscp.setdefault(r.lscp or "(none)", Counter())[event] += 1
        if r.recipient:
            by_recipient.setdefault(r.recipient, Counter())[event] += 1
        if r.concern_id:
            per_concern.setdefault(r.concern_id, Counter())[event] += 1
        else:
            no_concern[event] += 1
        if r.event in DISCLOSURE_EVENTS and r.disclosure_id:
            delivered.setdefault(r.disclosure_id, (r.lscp or "(none)", r.at))
    by_type: dict[str, Counter[str]] = {}
    for concern_id, counts in per_concern.items():
        by_type.setdefault(concern_types.get(concern_id, NOT_RECORDED), Counter()).update(counts)
    if no_concern:
        by_type.setdefault("(no concern id)", Counter()).update(no_concern)
    waits: dict[str, list[float]] = {}
    totals: Counter[str] = Counter()
    for disclosure_id, (lscp, at) in delivered.items():
        totals[lscp] += 1
        got = receipts.get(disclosure_id)
        bucket = waits.setdefault(lscp, [])
        if got is not None:
            bucket.append((got - at).total_seconds())
    every = [s for lscp in sorted(waits) for s in waits[lscp]]
    return Stats(
        period=period,
        entries=entries,
        by_event=dict(sorted(by_event.items())),
        by_partnership=_nested(by_lscp),
        by_recipient=_nested(by_recipient),
        by_concern_type=_nested(by_type),
        concerns=len(per_concern),
        concerns_with_type=sum(1 for c in per_concern if c in concern_types),
        time_to_receipt={k: ReceiptTimes.of(totals[k], waits[k]) for k in sorted(waits)},
        time_to_receipt_all=ReceiptTimes.of(sum(totals.values()), every),
    )
