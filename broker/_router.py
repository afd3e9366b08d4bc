"""The router: inbound concern → decisions → audited, encrypted disclosures.

``RouterCore.plan`` is synchronous and does no I/O: it turns one inbound record
into the audit records and the outputs it must cause. ``Router`` is the async
shell: it produces a batch's audit records, disclosures, referrals and
quarantines and commits the batch's inbound offsets in one Kafka transaction
(DESIGN §4.1-4.3, §6), so they become visible together or not at all. Every
failure inside ``plan`` becomes a quarantine; nothing a publisher sends can
stop the loop (§4.7).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import KafkaError, ProducerFenced, UnsupportedVersionError
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from audit import AuditRecord, entry_id_for, equality_reasons, risk_assessment_reasons
from consent import (
    LONDON,
    Consent,
    ConsentRecord,
    CumulativeFlag,
    Decision,
    Deny,
    MinimisedPayload,
    Permit,
    Recipient,
    SignalEvent,
    concern_sha256,
    cumulative_flag,
    current_consent,
    deadline_for,
    decide,
    decision_input,
    input_sha256,
    minimise,
    missing_minimum_dataset,
    risk_problems,
    risk_warnings,
)
from schemas import (
    AUDIT_BATCH,
    CONCERN,
    DISCLOSURE,
    NOT_SOUGHT_REASONS,
    OVERRIDE_JUSTIFICATIONS,
    QUARANTINE,
    AuditEvent,
    BrokerError,
    Codec,
    ConcernModel,
    Lscp,
    Problem,
    ReasonCode,
    SaferError,
    Subject,
    SubjectRole,
    ValidationError,
    limit_problems,
    plausibility_problems,
)

from ._config import Deployment
from ._consent_view import ConsentView, verify_consent_record
from ._crypto import Keyring, SigningIdentity, pseudonym, seal
from ._kafka import (
    OutRecord,
    fetch,
    header,
    make_consumer,
    make_producer,
    send_all,
    signed_record,
    stop_clients,
    verify_origin,
)
from ._ledger import RoutedLedger, Seen, routed_digest
from ._limits import SIZE_LIMITS
from ._routing import candidate_recipients, resolve_partnerships
from ._signals import SignalStore
from ._topics import Headers, Topics, header_has_form
from ._trust import KeyFollower

__all__ = ["Plan", "Router", "RouterCore", "disclosure_id_for", "subject_key"]

_log = structlog.get_logger("safer.router")
#: Audit records per signed AuditBatch (a few hundred KB at most, well under the
#: topic's max.message.bytes even with long reasons).
AUDIT_CHUNK = 200
AUDIT_CHUNK_BYTES = 512 * 1024
#: The broker holds an inbound fetch at most this long waiting for records.
FETCH_MAX_WAIT_MS = 20
_LONDON = ZoneInfo(LONDON)
#: ``\A``/``\Z``: ``$`` would also accept 32 hex digits followed by a newline.
_HEX32 = re.compile(r"\A[0-9a-f]{32}\Z")
#: Whose consent counts for a concern: the child's own, and that of a parent or carer.
CONSENT_ROLES = frozenset({SubjectRole.CHILD, SubjectRole.PARENT_CARER})


def disclosure_id_for(concern_id: str, recipient_id: str) -> str:
    """Deterministic: the same concern and recipient always give the same id (§4.3)."""
    digest = hashlib.sha256(f"safer-disclosure-v1\x00{concern_id}\x00{recipient_id}".encode())
    return digest.hexdigest()[:32]


def subject_key(concern: ConcernModel, secret: bytes) -> str:
    """Kafka key: the pseudonym of the first child's primary identifier."""
    subjects = concern.children() or list(concern.subjects)
    return pseudonym(secret, subjects[0].identifiers()[0])


def _safe_uuid(raw: bytes | None) -> str | None:
    """An id copied from an unverified header, only if it really is a UUID."""
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        return None


def _refuse(problems: Sequence[Problem]) -> None:
    """Raise the first problem's code with every problem's field and reason (no values)."""
    if problems:
        shown = "; ".join(p.describe() for p in problems[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValidationError(
            f"implausible concern: {shown}{more}",
            code=problems[0].code,
            fields=tuple(p.field for p in problems),
            hint="fix these fields and publish again (docs/REASON_CODES.md)",
        )


def _allowed_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    """The headers a quarantine record may copy: allowed names, first of each, and only
    values of the form SAFER gives them (anything else can never verify on a replay, and
    may be personal data: a name where the concern id goes)."""
    kept: dict[str, bytes] = {}
    for name, value in headers or ():
        if name not in kept and header_has_form(name, value):
            kept[name] = value
    return kept


def _pydantic_detail(exc: pydantic.ValidationError) -> tuple[str, tuple[str, ...]]:
    """Field paths and messages only; pydantic's 'input' may hold personal data."""
    fields = tuple(".".join(str(p) for p in err["loc"]) for err in exc.errors())
    messages = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
    )
    return messages, fields


def _consent_reasons(record: ConsentRecord) -> tuple[str, ...]:
    """Why a consent record changed the picture: codes and their meaning, no personal data."""
    reasons = [
        f"consent record {record.consent_record_id}: consent {record.state.value} recorded by "
        f"{record.agency_id} (decided by {record.decided_by}) at {record.recorded_at.isoformat()}"
    ]
    if record.not_sought_reason is not None:
        reason = record.not_sought_reason
        reasons.append(f"not sought because {reason.value}: {NOT_SOUGHT_REASONS[reason]}")
    if record.justification is not None:
        why = record.justification
        reasons.append(f"overridden because {why.value}: {OVERRIDE_JUSTIFICATIONS[why]}")
    if record.expires_at is not None:
        reasons.append(f"consent lapses at {record.expires_at.isoformat()}")
    if record.source_ref:
        reasons.append(f"full note kept by {record.agency_id} under reference {record.source_ref}")
    reasons.append(
        "applies to the subject's concerns decided from now on whose own consent statement "
        "is older than this record"
    )
    return tuple(reasons)


@dataclass
class Plan:
    """What one inbound record must cause, audit records first."""

    concern_id: str | None
    #: Audit records; the router signs them in batches (``RouterCore.audit_out``).
    audits: list[AuditRecord] = field(default_factory=list)
    outputs: list[OutRecord] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    quarantine_code: ReasonCode | None = None
    #: The people in a routed concern (for the subject vault); empty otherwise.
    subjects: tuple[Subject, ...] = ()
    #: The router's own bookkeeping (the ``hips.routed`` ledger entry), in the same
    #: transaction as the outputs.
    bookkeeping: list[OutRecord] = field(default_factory=list)


class RouterCore:
    def __init__(
        self,
        *,
        codec: Codec,
        deployment: Deployment,
        keyring: Keyring,
        identity: SigningIdentity,
        recipient_key: Callable[[str], X25519PublicKey],
        pseudonym_secret: bytes,
        topics: Topics,
        actor: str = "safer-router",
        consent_view: ConsentView | None = None,
        ledger: RoutedLedger | None = None,
        key_follower: KeyFollower | None = None,
        signals: SignalStore | None = None,
    ) -> None:
        self._consent_view = consent_view
        self._key_follower = key_follower
        if key_follower is not None:
            key_follower.watch(keyring)
        self._ledger = ledger
        self._signals = signals
        self._codec = codec
        self._deployment = deployment
        self._keyring = keyring
        self._identity = identity
        self._recipient_key = recipient_key
        self._secret = pseudonym_secret
        self._topics = topics
        self._actor = actor

    @property
    def consent_view(self) -> ConsentView | None:
        """The latest consent records per subject, or None (concern statements only)."""
        return self._consent_view

    @property
    def key_follower(self) -> KeyFollower | None:
        """Follows ``hips.keys``: rotations and revocations reach the keyring (issue 15)."""
        return self._key_follower

    @property
    def ledger(self) -> RoutedLedger | None:
        """Concerns already routed (replay detection), or None (no detection)."""
        return self._ledger

    @property
    def signals(self) -> SignalStore | None:
        """The cumulative-concern state per child pseudonym, or None (no signal)."""
        return self._signals

    # -- public -----------------------------------------------------------------

    def plan(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        now: datetime,
    ) -> Plan:
        try:
            plan = self._plan_concern(key, value or b"", headers, now)
        except Exception as exc:  # a bug must not stop routing either; keep the record
            plan = self._quarantine_failure(
                exc, "router.internal_error", topic, partition, offset, key, value, headers, now
            )
        replay_of = header(headers, Headers.REPLAY_OF)
        if replay_of is not None:
            self._audit_quarantine_replay(plan, replay_of, topic, partition, offset, now)
        return plan

    def unproducible(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        now: datetime,
        error: str,
    ) -> Plan:
        """The quarantine of a record whose outputs Kafka refused (a bounded copy only)."""
        return self._quarantine(
            ReasonCode.UNPRODUCIBLE,
            f"the broker refused this record's outputs ({error}, not retriable)",
            topic,
            partition,
            offset,
            key,
            value,
            headers,
            now,
            inline=False,
        )

    def _audit_quarantine_replay(
        self, plan: Plan, replay_of: bytes, topic: str, partition: int, offset: int, now: datetime
    ) -> None:
        """`safer quarantine replay` re-submitted this record: log that, and its outcome."""
        quarantine_id = replay_of.decode("ascii", errors="replace")
        if not _HEX32.match(quarantine_id):
            return  # a forged header; the record was judged on its own merits above
        outcome = ", ".join(sorted(plan.outcomes)) or "nothing"
        audit = AuditRecord(
            seq=None,
            entry_id=entry_id_for(
                AuditEvent.QUARANTINE_REPLAYED, f"{quarantine_id}:{topic}:{partition}:{offset}"
            ),
            event=AuditEvent.QUARANTINE_REPLAYED,
            concern_id=plan.concern_id,
            source=topic,
            reason_codes=(plan.quarantine_code.value,) if plan.quarantine_code else (),
            reasons=(
                f"marked as a replay of quarantine record {quarantine_id} (the "
                "safer-replay-of header `safer quarantine replay` sets; a header is not "
                "signed, so this records the claim, not who made it)",
                f"outcome of the replay: {outcome}",
            ),
            at=now,
            actor=self._actor,
        )
        plan.audits.append(audit)
        plan.outcomes[AuditEvent.QUARANTINE_REPLAYED.value] += 1

    def _replayed(self, concern: ConcernModel, digest: bytes, now: datetime) -> Plan:
        """An exact replay of a routed concern: one REPLAYED entry (deduplicated), no output."""
        plan = Plan(concern.concern_id)
        audit = AuditRecord(
            seq=None,
            entry_id=entry_id_for(AuditEvent.REPLAYED, f"{concern.concern_id}:{digest.hex()}"),
            event=AuditEvent.REPLAYED,
            concern_id=concern.concern_id,
            source=concern.source_agency,
            reason_codes=(ReasonCode.REPLAY.value,),
            reasons=(
                "an exact replay (same concern_id, same signed bytes) of a concern already "
                "routed; nothing was sent again",
            ),
            at=now,
            actor=self._actor,
        )
        plan.audits.append(audit)
        plan.outcomes[AuditEvent.REPLAYED.value] += 1
        _log.info("router.replay", concern_id=concern.concern_id)
        return plan

    def _quarantine_failure(
        self,
        exc: Exception,
        log_event: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        now: datetime,
    ) -> Plan:
        """Quarantine a record whose processing failed: a SaferError with its own
        code, anything else (a bug) as PROCESSING_ERROR with only the type name."""
        if isinstance(exc, SaferError):
            return self._quarantine(
                exc.code, exc.message, topic, partition, offset, key, value, headers, now
            )
        _log.error(log_event, error=type(exc).__name__, topic=topic)
        return self._quarantine(
            ReasonCode.PROCESSING_ERROR,
            f"internal error ({type(exc).__name__}); report it and replay after the fix",
            topic,
            partition,
            offset,
            key,
            value,
            headers,
            now,
        )

    # -- the pipeline -----------------------------------------------------------

    def _plan_concern(
        self,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] | None,
        now: datetime,
    ) -> Plan:
        limit = SIZE_LIMITS.inbound_value_bytes
        if len(value) > limit:
            raise ValidationError(
                f"record is {len(value)} bytes; the limit is {limit}",
                code=ReasonCode.TOO_LARGE,
                hint="split the concern or shorten its free text (docs/REASON_CODES.md)",
            )
        if key is not None and not _HEX32.match(key.decode("ascii", errors="replace")):
            raise ValidationError(
                "record key is not a subject pseudonym", code=ReasonCode.PID_IN_METADATA
            )
        decoded = self._codec.decode(value, expect=CONCERN)
        origin = verify_origin(self._keyring, value, headers, id_header=Headers.CONCERN_ID, now=now)
        _refuse(limit_problems(decoded.record))
        try:
            concern = ConcernModel.from_avro(decoded.record)
        except pydantic.ValidationError as exc:
            detail, fields = _pydantic_detail(exc)
            raise ValidationError(f"concern fails validation: {detail}", fields=fields) from None
        if concern.concern_id != origin.record_id:
            raise ValidationError(
                "signed concern_id header does not match the record",
                code=ReasonCode.SIGNATURE_INVALID,
            )
        publisher = self._deployment.directory.publisher(origin.agency_id)
        if publisher is None or concern.source_agency != origin.agency_id:
            raise ValidationError(
                "concern names a source agency other than its signer",
                code=ReasonCode.UNKNOWN_PUBLISHER,
            )
        _refuse(plausibility_problems(concern, now))
        digest = routed_digest(value)
        if self._ledger is not None:
            seen = self._ledger.check(concern.concern_id, digest)
            if seen is Seen.REPLAY:
                return self._replayed(concern, digest, now)
            if seen is Seen.CONFLICT:
                raise ValidationError(
                    "a different concern was already routed under this concern_id",
                    code=ReasonCode.CONCERN_ID_CONFLICT,
                    hint="give a new concern a new concern_id; to correct a routed concern, "
                    "publish a new one that refers to it by source_ref",
                )
        missing = missing_minimum_dataset(concern)
        if missing:
            raise ValidationError(
                f"minimum dataset missing: {', '.join(missing)}",
                code=ReasonCode.MINIMUM_DATASET_MISSING,
                fields=tuple(missing),
            )
        _refuse(risk_problems(concern))
        routing = resolve_partnerships(concern, self._deployment.postcodes)
        if not routing.lscps:
            raise ValidationError(
                "no HIPS partnership found from residence, placement or incident location",
                code=ReasonCode.ADDRESS_UNRESOLVED,
            )
        candidates = candidate_recipients(concern, routing, self._deployment.directory)
        if not candidates:
            raise ValidationError("no candidate recipient", code=ReasonCode.NO_RECIPIENT)

        by_subject = [
            (s.role, [pseudonym(self._secret, ident) for ident in s.identifiers()])
            for s in concern.subjects
        ]
        pseudonyms = tuple(dict.fromkeys(p for _, ids in by_subject for p in ids))
        consent = self._consent(
            concern, [p for role, ids in by_subject if role in CONSENT_ROLES for p in ids]
        )
        subject = subject_key(concern, self._secret).encode()
        plan = Plan(concern.concern_id, subjects=concern.subjects)
        if self._ledger is not None:
            plan.bookkeeping.append(self._ledger.note(concern.concern_id, digest))
        flags = self._cumulative(concern, routing.lscps, plan)
        concern_digest = concern_sha256(concern)  # once, for every recipient's input hash
        # Recorded with every decision, computed once: each child's risk assessment in
        # codes (read back by `safer audit risk`), a DASH score that disagrees with its
        # grade, and equality monitoring (issue 14, docs/EQUALITY.md: the children counted
        # by high-level ethnic group only; no subject ref, no detailed group).
        concern_lines = (
            *risk_assessment_reasons(concern.risk_assessments),
            *risk_warnings(concern),
            *equality_reasons(concern),
        )
        for candidate in candidates:
            recipient = candidate.recipient
            raised = flags.get(recipient.lscp, []) if recipient.is_front_door else []
            decision = decide(
                concern,
                recipient,
                self._deployment.policy,
                consent,
                now,
                source_agency_type=publisher.agency_type,
                cumulative=[flag for flag, _ in raised],
            )
            digest_in = input_sha256(
                decision_input(
                    concern, recipient, decision, consent, now, concern_digest=concern_digest
                )
            )
            self._plan_decision(
                plan,
                concern,
                recipient,
                decision,
                pseudonyms,
                subject,
                now,
                raised,
                decision_input_sha256=digest_in,
                concern_lines=concern_lines,
            )
        return plan

    def _cumulative(
        self, concern: ConcernModel, lscps: Sequence[Lscp], plan: Plan
    ) -> dict[Lscp, list[tuple[CumulativeFlag, tuple[str, ...]]]]:
        """Issue 16: count this concern for each child, and the flags each partnership's
        thresholds raise (with the child's pseudonyms, for the audit record).

        The child's history is read before this concern is counted; the new state
        joins the batch's transaction (``plan.bookkeeping``).
        """
        store = self._signals
        thresholds = self._deployment.policy.thresholds
        if store is None:
            return {}
        grades = {a.subject_ref: a.grade for a in concern.risk_assessments}
        flags: dict[Lscp, list[tuple[CumulativeFlag, tuple[str, ...]]]] = {}
        for child in concern.children():
            own = tuple(
                dict.fromkeys(pseudonym(self._secret, ident) for ident in child.identifiers())
            )
            event = SignalEvent(
                concern_id=concern.concern_id,
                reported_at=concern.reported_at,
                source_agency=concern.source_agency,
                grade=grades.get(child.subject_ref, concern.risk_grade),
                lscps=tuple(lscp.value for lscp in lscps),
            )
            history = store.history(own)
            for lscp in lscps:
                flag = cumulative_flag(
                    history, event, lscp, thresholds, subject_ref=child.subject_ref
                )
                if flag is not None:
                    flags.setdefault(lscp, []).append((flag, own))
            plan.bookkeeping.extend(store.note(own, event))
        return flags

    def _risk_flagged(
        self,
        plan: Plan,
        concern: ConcernModel,
        recipient: Recipient,
        decision: Decision,
        disclosure_id: str,
        raised: Sequence[tuple[CumulativeFlag, tuple[str, ...]]],
        now: datetime,
    ) -> None:
        """One RISK_FLAGGED audit record per flagged child and front door, with its reasons."""
        for flag, own in raised:
            plan.audits.append(
                AuditRecord(
                    seq=None,
                    entry_id=entry_id_for(
                        AuditEvent.RISK_FLAGGED,
                        f"{concern.concern_id}:{recipient.id}:{flag.subject_ref}",
                    ),
                    event=AuditEvent.RISK_FLAGGED,
                    disclosure_id=disclosure_id,
                    decision_id=decision.decision_id,
                    concern_id=concern.concern_id,
                    subject_pseudonyms=own,
                    source=concern.source_agency,
                    recipient=recipient.id,
                    lscp=recipient.lscp.value,
                    reason_codes=(ReasonCode.CUMULATIVE_CONCERN.value,),
                    reasons=(
                        *flag.reasons(),
                        f"front-door decision: {decision.kind}",
                    ),
                    policy_revision=decision.policy_revision,
                    at=now,
                    actor=self._actor,
                )
            )
            plan.outcomes[AuditEvent.RISK_FLAGGED.value] += 1

    def _consent(self, concern: ConcernModel, pseudonyms: list[str]) -> Consent:
        """The concern's own consent statement, or a newer consent record for its child/carers."""
        view = self._consent_view
        record = view.lookup(pseudonyms) if view is not None and len(view) else None
        return current_consent(concern.consent, record)

    def plan_consent(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        now: datetime,
    ) -> tuple[Plan, ConsentRecord | None]:
        """One ``hips.consent`` record → its CONSENT_CHANGED audit record, or a quarantine.

        Returns the verified record to apply once the audit record is acknowledged
        (None when the record was quarantined instead).
        """
        try:
            record = verify_consent_record(
                self._codec,
                self._keyring,
                self._deployment.directory,
                key=key,
                value=value,
                headers=headers,
            )
        except Exception as exc:  # a bug must not stop the consent view either
            return self._quarantine_failure(
                exc,
                "router.consent_internal_error",
                topic,
                partition,
                offset,
                key,
                value,
                headers,
                now,
            ), None
        plan = Plan(None)
        audit = AuditRecord(
            seq=None,
            entry_id=entry_id_for(AuditEvent.CONSENT_CHANGED, record.consent_record_id),
            event=AuditEvent.CONSENT_CHANGED,
            subject_pseudonyms=(record.subject_pseudonym,),
            source=record.agency_id,
            consent_state=record.state.value,
            reason_codes=tuple(
                c.value for c in (record.not_sought_reason, record.justification) if c is not None
            ),
            reasons=_consent_reasons(record),
            policy_revision=self._deployment.policy.revision,
            at=record.recorded_at,
            actor=self._actor,
        )
        plan.audits.append(audit)
        plan.outcomes[AuditEvent.CONSENT_CHANGED.value] += 1
        return plan, record

    def _deadline(
        self, concern: ConcernModel, recipient: Recipient, outcome: str, now: datetime
    ) -> datetime | None:
        """This disclosure's clock (docs/TIMELINESS.md): statutory, or the local policy's."""
        calendars = self._deployment.calendars
        if calendars is None:
            return None
        deadline = deadline_for(
            concern_type=concern.concern_type,
            risk_grade=concern.risk_grade,
            recipient_agency_type=recipient.agency_type,
            outcome=outcome,
            decided_at=now,
            # The school's own partnership calendar: that is when the school is open.
            school_calendar=calendars.school(recipient.lscp),
            bank_holidays=calendars.bank_holidays,
            zone=_LONDON,
            local=self._deployment.timeliness,
        )
        return deadline.due if deadline is not None else None

    def _plan_decision(
        self,
        plan: Plan,
        concern: ConcernModel,
        recipient: Recipient,
        decision: Decision,
        pseudonyms: tuple[str, ...],
        subject: bytes,
        now: datetime,
        raised: Sequence[tuple[CumulativeFlag, tuple[str, ...]]] = (),
        decision_input_sha256: str | None = None,
        concern_lines: tuple[str, ...] = (),
    ) -> None:
        disclosure_id = disclosure_id_for(concern.concern_id, recipient.id)
        deadline: datetime | None = None
        reasons = (*decision.reasons, *concern_lines)
        if isinstance(decision, Deny):
            event = AuditEvent.WITHHELD
            payload_sha256 = None
            fields: tuple[str, ...] = ()
            lawful_basis = None
            purpose = None
        else:
            payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
            if raised:
                # The front door's copy carries the flag: counts and earlier concern ids.
                payload = MinimisedPayload(
                    data={
                        **payload.data,
                        "cumulative_concern": [flag.to_payload() for flag, _ in raised],
                    },
                    fields=(*payload.fields, "cumulative_concern"),
                    redactions=payload.redactions,
                )
            # What minimisation cut from the free text is part of why this is lawful.
            reasons = (*reasons, *payload.redaction_reasons)
            plaintext = payload.canonical_bytes()
            sealed = seal(
                plaintext,
                self._recipient_key(recipient.id),
                disclosure_id=disclosure_id,
                recipient_id=recipient.id,
            )
            referral = not isinstance(decision, Permit)
            event = AuditEvent.REFERRED if referral else AuditEvent.DISCLOSED
            payload_sha256 = hashlib.sha256(plaintext).hexdigest()
            fields = payload.fields
            lawful_basis = decision.lawful_basis
            purpose = decision.purpose
            deadline = self._deadline(concern, recipient, "REFER" if referral else "PERMIT", now)
            record: dict[str, Any] = {
                "disclosure_id": disclosure_id,
                "concern_id": concern.concern_id,
                "source_agency": concern.source_agency,
                "recipient_id": recipient.id,
                "lscp": recipient.lscp.value,
                "kind": "REFERRAL" if referral else "DISCLOSURE",
                "decision_id": decision.decision_id,
                "lawful_basis": lawful_basis,
                "purpose": purpose,
                "profile": decision.profile.name,
                "policy_revision": decision.policy_revision,
                "reason_codes": [str(c) for c in decision.reason_codes],
                "concern_type": concern.concern_type.value,
                "risk_grade": concern.risk_grade.value,
                "deadline": deadline,
                "decided_at": now,
                "payload_sha256": payload_sha256,
                "payload": {
                    "ciphertext": sealed.ciphertext,
                    "nonce": sealed.nonce,
                    "wrapped_key": sealed.wrapped_key,
                    "wrap_nonce": sealed.wrap_nonce,
                    "ephemeral_public_key": sealed.ephemeral_public_key,
                    "recipient_key_id": sealed.recipient_key_id,
                    "algorithm": sealed.algorithm,
                },
            }
            topic = (
                self._topics.triage(recipient.lscp)
                if referral
                else self._topics.disclosures(recipient.lscp, recipient.agency_type)
            )
            plan.outputs.append(
                signed_record(
                    self._codec,
                    self._identity,
                    DISCLOSURE,
                    record,
                    topic=topic,
                    key=subject,
                    record_id=disclosure_id,
                    id_header=Headers.DISCLOSURE_ID,
                )
            )
        audit = AuditRecord(
            seq=None,
            entry_id=entry_id_for(event, disclosure_id),
            event=event,
            disclosure_id=disclosure_id,
            decision_id=decision.decision_id,
            concern_id=concern.concern_id,
            subject_pseudonyms=pseudonyms,
            source=concern.source_agency,
            recipient=recipient.id,
            lscp=recipient.lscp.value,
            lawful_basis=lawful_basis,
            purpose=purpose,
            consent_state=decision.consent_state.value,
            reason_codes=tuple(str(c) for c in decision.reason_codes),
            reasons=reasons,
            policy_revision=decision.policy_revision,
            fields_disclosed=fields,
            payload_sha256=payload_sha256,
            deadline=deadline,
            at=now,
            actor=self._actor,
            input_sha256=decision_input_sha256,
        )
        plan.audits.append(audit)
        plan.outcomes[event.value] += 1
        if raised:
            self._risk_flagged(plan, concern, recipient, decision, disclosure_id, raised, now)

    def audit_out(self, audits: Sequence[AuditRecord]) -> list[OutRecord]:
        """``audits`` as signed AuditBatch records on ``hips.audit``: one signature per
        chunk, not per record (issue 12). The feed expands each into log entries."""
        chunks: list[list[AuditRecord]] = [[]]
        size = 0
        for audit in audits:
            # A generous estimate of the record's encoded size: fixed fields + texts.
            weight = 1024 + sum(map(len, audit.reasons)) + 40 * len(audit.subject_pseudonyms)
            if chunks[-1] and (len(chunks[-1]) >= AUDIT_CHUNK or size + weight > AUDIT_CHUNK_BYTES):
                chunks.append([])
                size = 0
            chunks[-1].append(audit)
            size += weight
        return [
            signed_record(
                self._codec,
                self._identity,
                AUDIT_BATCH,
                {"records": [a.to_avro() for a in chunk]},
                topic=self._topics.audit,
                key=None,
                record_id="",
                id_header=None,
            )
            for chunk in chunks
            if chunk
        ]

    def _quarantine(
        self,
        code: ReasonCode,
        detail: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        now: datetime,
        *,
        inline: bool = True,
    ) -> Plan:
        original = value or b""
        original_sha256 = hashlib.sha256(original).digest()
        quarantine_id = hashlib.sha256(
            f"safer-quarantine-v1\x00{topic}\x00{partition}\x00{offset}\x00".encode()
            + original_sha256
        ).hexdigest()[:32]
        concern_id = _safe_uuid(header(headers, Headers.CONCERN_ID))
        # A bounded copy: the quarantine record must fit wherever the original did not,
        # and must not carry what may be personal data outside the original bytes.
        truncated = not inline or len(original) > SIZE_LIMITS.quarantine_inline_bytes
        kept = _allowed_headers(headers)
        key_kept = key if key is not None and _HEX32.match(key.decode("ascii", "replace")) else None
        record = {
            "quarantine_id": quarantine_id,
            "reason_code": code.value,
            "detail": detail,
            "concern_id": concern_id,
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "original_key": key_kept,
            "original_headers": kept,
            "original_value": b"" if truncated else original,
            "original_sha256": original_sha256.hex(),
            "original_size": len(original),
            "original_truncated": truncated,
            "dropped_headers": len(headers or ()) - len(kept),
            "at": now,
        }
        if truncated:
            detail = (
                f"{detail} (original {len(original)} bytes not copied: it stays at "
                f"{topic}/{partition}/{offset}, SHA-256 {original_sha256.hex()[:16]}…)"
            )
        plan = Plan(concern_id, quarantine_code=code)
        audit = AuditRecord(
            seq=None,
            entry_id=entry_id_for(AuditEvent.QUARANTINED, quarantine_id),
            event=AuditEvent.QUARANTINED,
            concern_id=concern_id,
            source=topic,
            reason_codes=(code.value,),
            reasons=(detail,),
            at=now,
            actor=self._actor,
        )
        plan.audits.append(audit)
        plan.outputs.append(
            signed_record(
                self._codec,
                self._identity,
                QUARANTINE,
                record,
                topic=self._topics.quarantine,
                key=None,
                record_id="",
                id_header=None,
            )
        )
        plan.outcomes[AuditEvent.QUARANTINED.value] += 1
        _log.warning(
            "router.quarantined",
            reason_code=code.value,
            concern_id=concern_id,
            topic=topic,
            partition=partition,
            offset=offset,
        )
        return plan


class Router:
    """Consumer-group loop around ``RouterCore``: one Kafka transaction per batch.

    Each batch's audit records, disclosures, referrals and quarantines, and the
    batch's input offsets, are committed in one transaction (DESIGN §6):
    readers (``read_committed``) see all of them or none, so no disclosure is
    ever visible without its audit record, and a router killed mid-batch leaves
    nothing visible; its replay (same deterministic ids) writes the batch once.

    ``transactional_id`` must be stable across restarts of one router and
    distinct between routers running at once (``safer route --instance``): a
    restarted router fences its predecessor and aborts what it left open.
    """

    def __init__(
        self,
        core: RouterCore,
        *,
        bootstrap_servers: str,
        inbound_topics: Sequence[str],
        group_id: str = "safer-router",
        instance: str = "0",
        batch_size: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        security: dict[str, Any] | None = None,
        on_delivered: Callable[[Sequence[Plan]], Awaitable[None] | None] | None = None,
        pipelined: bool = False,
    ) -> None:
        self._core = core
        #: Plan batch N+1 while batch N's transaction is in flight. Off by default:
        #: on a 2-core machine with the broker on the other core the router is CPU-bound
        #: and pipelining measured no faster (docs/ARCHITECTURE.md, "Router speed");
        #: it can pay where the transaction's round trips are long (a remote cluster).
        self._pipelined = pipelined
        #: Called with each batch's plans inside its transaction, before the commit
        #: (e.g. to enrol subjects in the audit's subject vault; it may be a coroutine,
        #: to keep blocking work off the event loop); it must be idempotent: if it
        #: fails, the transaction aborts and the batch is replayed.
        self._on_delivered = on_delivered
        self._bootstrap = bootstrap_servers
        self._inbound = list(inbound_topics)
        self._group_id = group_id
        self.transactional_id = f"{group_id}.{instance}"
        self._batch_size = batch_size
        self._clock = clock
        self._security = security or {}
        # One transaction at a time on the producer (the consent view shares it), and
        # a rebalance waits for the open one to finish before giving partitions away.
        self._txn_lock = asyncio.Lock()
        #: Bumped when partitions are revoked: a batch planned before that is stale.
        self._generation = 0
        self.totals: Counter[str] = Counter()
        #: Monotonic times of the first fetched and the last committed batch (for metrics).
        self.first_batch_at: float | None = None
        self.last_batch_at: float | None = None

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        consumer = make_consumer(
            self._bootstrap,
            group_id=self._group_id,
            # A new group starts at the beginning: every concern ever published is routed.
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            max_poll_records=self._batch_size,
            # A fetch in flight covers only the partitions with nothing buffered; a
            # concern landing on another waits for it to return. Short waits bound
            # that (issue 12's latency), at the cost of a few small requests when idle.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **self._security,
        )
        producer = self._producer()
        await producer.start()  # InitProducerId: fences a predecessor, aborts its transaction
        followers: list[asyncio.Task[None]] = []
        committing: asyncio.Task[_Planned] | None = None
        try:
            followers = await self._start_followers(producer, stop)
            await consumer.start()
            consumer.subscribe(
                self._inbound, listener=_FinishBeforeRevoke(self._txn_lock, self._rebalanced)
            )
            _log.info(
                "router.started",
                topics=self._inbound,
                group_id=self._group_id,
                transactional_id=self.transactional_id,
            )
            if ready is not None:
                ready.set()
            while not stop.is_set():
                for task in followers:
                    if task.done():
                        task.result()  # a failed view fails the router; its supervisor restarts
                        raise BrokerError(
                            f"{task.get_name()} stopped", hint="the router restarts and rebuilds it"
                        )
                batch = await fetch(consumer, timeout_ms=250, max_records=self._batch_size)
                if not batch:
                    if committing is not None:
                        previous, committing = committing, None
                        await self._settle(previous, [], producer, consumer, stop)
                    continue
                # Pipelined (issue 12): batch N+1 is planned while batch N's transaction
                # is in flight; its own transaction starts only once N's has ended.
                # Not pipelined: N's transaction ends before N+1 is fetched.
                planned = await self._plan_batch(batch, overlapped=committing is not None)
                if committing is not None:
                    previous, committing = committing, None
                    settled = await self._settle(previous, [planned], producer, consumer, stop)
                    if not settled:
                        continue  # planned was discarded with it and will be read again
                committing = asyncio.create_task(
                    self._commit_planned(planned, producer, consumer, stop)
                )
                if not self._pipelined:
                    previous, committing = committing, None
                    await self._settle(previous, [], producer, consumer, stop)
        finally:
            try:
                if committing is not None:
                    # Let the open transaction end (commit or abort) rather than cut it off.
                    done, _ = await asyncio.wait({committing}, timeout=30)
                    if not done:
                        committing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._settle(committing, [], producer, consumer, stop)
            finally:
                for task in followers:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await stop_clients(consumer, producer)
            _log.info("router.stopped", **dict(self.totals))

    def _producer(self) -> AIOKafkaProducer:
        return make_producer(
            self._bootstrap, transactional_id=self.transactional_id, **self._security
        )

    async def _start_followers(
        self, producer: Any, stop: asyncio.Event
    ) -> list[asyncio.Task[None]]:
        """Follow ``hips.consent``, ``hips.routed``, ``hips.keys`` and ``hips.signals``;
        return once all are caught up.

        Routing must not start before the router knows every consent record,
        every concern already routed (else a replay would be routed again),
        every revoked key and every child's cumulative-concern counts.
        """
        starts: list[tuple[str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]]] = []
        view = self._core.consent_view
        if view is not None:

            async def handle(records: Sequence[Any]) -> bool:
                return await self._apply_consent(view, records, producer, stop)

            starts.append(
                ("consent-view", lambda done: view.run(stop, handle=handle, caught_up=done))
            )
        ledger = self._core.ledger
        if ledger is not None:
            starts.append(("routed-ledger", lambda done: ledger.run(stop, done)))
        follower = self._core.key_follower
        if follower is not None:
            starts.append(("key-events", lambda done: follower.run(stop, done)))
        signals = self._core.signals
        if signals is not None:
            starts.append(("signal-store", lambda done: signals.run(stop, done)))
        tasks: list[asyncio.Task[None]] = []
        for name, start in starts:
            done = asyncio.Event()
            task = asyncio.create_task(start(done), name=name)
            tasks.append(task)
            waiter = asyncio.create_task(done.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task.done() and not stop.is_set():
                task.result()
                raise BrokerError(
                    f"{name} stopped before catching up",
                    hint="the router restarts and rebuilds it",
                )
        return tasks

    async def _apply_consent(
        self, view: ConsentView, records: Sequence[Any], producer: Any, stop: asyncio.Event
    ) -> bool:
        """Audit a batch of consent records in one transaction, then apply the verified ones."""
        now = self._clock()
        planned = [
            self._core.plan_consent(
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                key=msg.key,
                value=msg.value,
                headers=msg.headers,
                now=now,
            )
            for msg in records
        ]
        out = self._core.audit_out([a for plan, _ in planned for a in plan.audits])
        out += [r for plan, _ in planned for r in plan.outputs]
        # No decision rests on a consent change the log does not hold: apply after commit.
        if not await self._transact(producer, out, None, stop):
            return False
        for plan, record in planned:
            if record is not None:
                view.apply(record)
            self.totals.update(plan.outcomes)
        _log.info(
            "router.consent_batch",
            records=len(planned),
            applied=sum(1 for _, r in planned if r is not None),
        )
        return True

    def _rebalanced(self) -> None:
        self._generation += 1

    def _books(self) -> list[RoutedLedger | SignalStore]:
        return [b for b in (self._core.ledger, self._core.signals) if b is not None]

    async def _plan_batch(
        self, batch: dict[TopicPartition, list[Any]], *, overlapped: bool
    ) -> _Planned:
        """Plan every record of ``batch`` and its signed audit batches.

        ``overlapped``: another batch's transaction is in flight, so yield to the
        event loop between records to let its produce and commit progress.
        """
        if self.first_batch_at is None:
            self.first_batch_at = time.monotonic()
        generation = self._generation
        now = self._clock()
        records = [msg for msgs in batch.values() for msg in msgs]
        # How long the oldest record waited between its publish and this fetch
        # (the producer's CreateTime; for latency breakdowns, not for decisions).
        waited_ms = max(0.0, time.time() * 1000 - min(msg.timestamp for msg in records))
        for book in self._books():
            book.begin()
        started = time.perf_counter()
        plans: list[Plan] = []
        for msg in records:
            plans.append(self._plan(msg, now))
            if overlapped:
                await asyncio.sleep(0)
        out = self._core.audit_out([a for p in plans for a in p.audits])
        out += [r for p in plans for r in (*p.outputs, *p.bookkeeping)]
        return _Planned(
            batch=batch,
            plans=plans,
            out=out,
            now=now,
            generation=generation,
            plan_s=time.perf_counter() - started,
            waited_ms=waited_ms,
        )

    async def _commit_planned(
        self,
        planned: _Planned,
        producer: Any,
        consumer: AIOKafkaConsumer,
        stop: asyncio.Event,
    ) -> _Planned:
        started = time.perf_counter()
        try:
            planned.committed = await self._commit(
                producer,
                consumer,
                planned.plans,
                planned.offsets,
                stop,
                out=planned.out,
                still_current=lambda: planned.generation == self._generation,
            )
        except _Unproducible as exc:
            planned.unproducible = exc.error
        except _Stale:
            planned.stale = True
        planned.commit_s = time.perf_counter() - started
        planned.ended_at = time.monotonic()
        return planned

    async def _settle(
        self,
        committing: asyncio.Task[_Planned],
        later: Sequence[_Planned],
        producer: Any,
        consumer: AIOKafkaConsumer,
        stop: asyncio.Event,
    ) -> bool:
        """Wait for a batch's transaction; True if the ``later`` batches may follow it.

        If it did not commit, nothing of it is visible and every batch planned after
        it rests on its ledger and signal notes: those are discarded and read again.
        """
        planned = await committing
        if planned.unproducible is not None:
            # One record the broker refuses must not stall the rest: route each
            # record of the batch in its own transaction, quarantining any it refuses.
            _log.warning(
                "router.isolating_batch", records=len(planned.records), error=planned.unproducible
            )
            self._discard(later, consumer)
            await self._isolate(planned, producer, consumer, stop)
            return False
        if planned.stale:
            # Its partitions were revoked while it was planned; whoever owns them now
            # reads them from the last committed offsets.
            _log.info("router.stale_batch", records=len(planned.records))
            self._discard([planned, *later], consumer)
            return False
        if not planned.committed:
            # Nothing of the batch is visible; read it again from its first offsets.
            self._discard([planned, *later], consumer)
            return False
        self._count(
            planned.plans,
            plan_s=planned.plan_s,
            commit_s=planned.commit_s,
            waited_ms=planned.waited_ms,
        )
        self.last_batch_at = planned.ended_at
        return True

    def _discard(self, planned: Sequence[_Planned], consumer: AIOKafkaConsumer) -> None:
        """Forget planned batches that were never committed (and their notes), and
        rewind the consumer to read them again.

        Only batches fetched since the last revoke are rewound: an assignment
        resets every position to the committed offset, so an older batch's
        offsets no longer say where reading stands (seeking to them could skip).
        """
        if not planned:
            return
        for book in self._books():
            book.aborted()
        first: dict[TopicPartition, int] = {}
        for batch in planned:  # oldest first: keep each partition's earliest offset
            if batch.generation != self._generation:
                continue
            for tp, msgs in batch.batch.items():
                first.setdefault(tp, msgs[0].offset)
        owned = consumer.assignment()
        for tp, offset in first.items():
            if tp in owned:
                consumer.seek(tp, offset)

    def _plan(self, msg: Any, now: datetime) -> Plan:
        return self._core.plan(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            headers=msg.headers,
            now=now,
        )

    def _count(
        self,
        plans: Sequence[Plan],
        *,
        plan_s: float = 0.0,
        commit_s: float = 0.0,
        waited_ms: float = 0.0,
    ) -> None:
        for plan in plans:
            self.totals.update(plan.outcomes)
        self.totals["inbound"] += len(plans)
        self.last_batch_at = time.monotonic()
        _log.info(
            "router.batch",
            inbound=len(plans),
            records=sum(len(p.audits) + len(p.outputs) for p in plans),
            # Where a batch's time goes, for operators tuning latency (issue 12):
            # the oldest record's wait from its publish to its fetch, then planning
            # and the transaction.
            waited_ms=round(waited_ms, 1),
            plan_ms=round(plan_s * 1000, 1),
            commit_ms=round(commit_s * 1000, 1),
            **{k.lower(): v for k, v in sum((p.outcomes for p in plans), Counter()).items()},
        )

    async def _commit(
        self,
        producer: Any,
        consumer: AIOKafkaConsumer,
        plans: Sequence[Plan],
        offsets: dict[TopicPartition, int],
        stop: asyncio.Event,
        *,
        out: list[OutRecord] | None = None,
        still_current: Callable[[], bool] | None = None,
    ) -> bool:
        """One transaction for ``plans`` (``out``: their records, if already built) and
        ``offsets``; the ledger and the signal store follow its outcome."""
        if out is None:
            out = self._core.audit_out([a for p in plans for a in p.audits])
            out += [r for p in plans for r in (*p.outputs, *p.bookkeeping)]

        async def delivered() -> None:
            if self._on_delivered is not None:
                result = self._on_delivered(plans)
                if inspect.isawaitable(result):
                    await result

        books = self._books()
        try:
            committed = await self._transact(
                producer,
                out,
                offsets,
                stop,
                consumer=consumer,
                before_commit=delivered,
                still_current=still_current,
            )
        except BaseException:
            for book in books:
                book.aborted()
            raise
        for book in books:
            if committed:
                book.committed()
            else:
                book.aborted()
        return committed

    async def _isolate(
        self,
        planned: _Planned,
        producer: Any,
        consumer: AIOKafkaConsumer,
        stop: asyncio.Event,
    ) -> None:
        """Route a refused batch one record at a time, in offset order per partition."""
        now = planned.now

        def still_current() -> bool:
            return planned.generation == self._generation

        for msg in planned.records:
            tp = TopicPartition(msg.topic, msg.partition)
            offsets = {tp: msg.offset + 1}
            for book in self._books():
                book.begin()
            plan = self._plan(msg, now)
            try:
                committed = await self._commit(
                    producer, consumer, [plan], offsets, stop, still_current=still_current
                )
            except _Stale:
                return  # revoked meanwhile: the new owner reads on from the committed offsets
            except _Unproducible as exc:
                plan = self._core.unproducible(
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    key=msg.key,
                    value=msg.value,
                    headers=msg.headers,
                    now=now,
                    error=exc.error,
                )
                try:
                    committed = await self._commit(
                        producer, consumer, [plan], offsets, stop, still_current=still_current
                    )
                except _Stale:
                    return
                except _Unproducible as again:
                    raise BrokerError(
                        f"the broker refuses even a quarantine record ({again.error})",
                        retriable=False,
                        hint="check the broker's topic limits and ACLs for hips.quarantine "
                        "and hips.audit (docs/OPERATIONS.md)",
                    ) from None
            if not committed:
                consumer.seek(tp, msg.offset)
                return
            self._count([plan])

    async def _transact(
        self,
        producer: Any,
        records: list[OutRecord],
        offsets: dict[TopicPartition, int] | None,
        stop: asyncio.Event,
        *,
        consumer: AIOKafkaConsumer | None = None,
        before_commit: Callable[[], Awaitable[None]] | None = None,
        still_current: Callable[[], bool] | None = None,
    ) -> bool:
        """Produce ``records`` and commit ``offsets`` in one transaction; retry what can be.

        Returns False (nothing visible, nothing committed) only when stopping. A
        retriable Kafka error aborts and tries again with backoff. A fenced
        producer (another router took over this transactional id) is raised: the
        supervisor restarts the router, whose new producer and consumer resume
        from the last committed batch. Any other error Kafka says cannot succeed
        on retry (a record too large for a topic, a topic this router may not
        write) raises ``_Unproducible``, so the caller can isolate the record.
        ``still_current`` is asked under the transaction lock, which a rebalance
        waits for: if it says no, the partitions moved since the records were
        planned, and ``_Stale`` is raised before anything is written.
        """
        delay = 0.2
        while True:
            async with self._txn_lock:
                if still_current is not None and not still_current():
                    raise _Stale
                await producer.begin_transaction()
                try:
                    # The commit waits for both; side by side, the hook's work (the
                    # subject vault's fsync) hides behind the broker's acks.
                    sent, hooked = await asyncio.gather(
                        send_all(producer, records),
                        before_commit() if before_commit is not None else asyncio.sleep(0),
                        return_exceptions=True,
                    )
                    for failure in (sent, hooked):
                        if isinstance(failure, BaseException):
                            raise failure
                    if offsets:
                        await producer.send_offsets_to_transaction(offsets, self._group_id)
                    await producer.commit_transaction()
                    return True
                except (ProducerFenced, UnsupportedVersionError):
                    raise
                except (KafkaError, BrokerError) as exc:
                    with contextlib.suppress(KafkaError):
                        await producer.abort_transaction()
                    if not exc.retriable:
                        raise _Unproducible(type(exc).__name__) from exc
                    _log.warning("router.transaction_retry", error=type(exc).__name__, delay=delay)
                except BaseException:
                    with contextlib.suppress(KafkaError):
                        await producer.abort_transaction()
                    raise
            if stop.is_set():
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass
class _Planned:
    """One fetched batch, planned: what its transaction will write and commit."""

    batch: dict[TopicPartition, list[Any]]
    plans: list[Plan]
    out: list[OutRecord]
    now: datetime
    #: The router's rebalance count when the batch was fetched.
    generation: int
    plan_s: float
    #: The oldest record's time from its publish (CreateTime) to the fetch.
    waited_ms: float = 0.0
    commit_s: float = 0.0
    #: Monotonic time its transaction ended.
    ended_at: float = 0.0
    committed: bool = False
    #: Set when Kafka refused the transaction for a reason retrying cannot fix.
    unproducible: str | None = None
    #: Set when its partitions were revoked before its transaction began.
    stale: bool = False

    @property
    def records(self) -> list[Any]:
        return [msg for msgs in self.batch.values() for msg in msgs]

    @property
    def offsets(self) -> dict[TopicPartition, int]:
        """Where each partition's reading stands once the batch is committed."""
        return {tp: msgs[-1].offset + 1 for tp, msgs in self.batch.items()}


class _Stale(Exception):
    """The batch's partitions were revoked after it was fetched."""


class _Unproducible(Exception):
    """Kafka refused a transaction for a reason retrying cannot fix."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class _FinishBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hold a rebalance until the open transaction (if any) has committed or aborted.

    Otherwise the next owner of a partition could read offsets that this
    router's transaction is about to commit, and route a batch twice.
    """

    def __init__(self, lock: asyncio.Lock, on_revoked: Callable[[], None]) -> None:
        self._lock = lock
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._lock:
            # Under the lock: no transaction is open, and a batch planned before now
            # sees the change before it starts one.
            self._on_revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # For operators sharing the work across routers: which partitions this one has.
        _log.info(
            "router.assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        )
