"""Topic names (DESIGN §5), how each topic is made, and the headers SAFER may set."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from schemas import AgencyType, Lscp

from ._limits import SIZE_LIMITS

__all__ = [
    "HEADER_NAMES",
    "MAX_HEADER_BYTES",
    "Headers",
    "TopicLayout",
    "TopicSpec",
    "Topics",
    "header_has_form",
    "topic_plan",
]

_DAY_MS = 24 * 3600 * 1000


class Headers:
    """Header names. Headers are the only metadata outside the payload; they
    carry ids and signatures, never a name, date of birth, address or NHS number."""

    SCHEMA_ID = "safer-schema-id"
    KEY_ID = "safer-key-id"
    SIGNATURE = "safer-sig"
    CONCERN_ID = "safer-concern-id"
    DISCLOSURE_ID = "safer-disclosure-id"
    TRACE_ID = "safer-trace-id"
    #: Set by `safer quarantine replay`: the quarantine record this is a replay of.
    REPLAY_OF = "safer-replay-of"


HEADER_NAMES = frozenset(
    {
        Headers.SCHEMA_ID,
        Headers.KEY_ID,
        Headers.SIGNATURE,
        Headers.CONCERN_ID,
        Headers.DISCLOSURE_ID,
        Headers.TRACE_ID,
        Headers.REPLAY_OF,
    }
)
#: The longest header value any allowed header needs (an Ed25519 signature is 64 bytes).
MAX_HEADER_BYTES = 128
#: What each allowed header's value looks like when SAFER sets it. Anything else
#: in an allowed header can never verify, and may be personal data.
_HEADER_FORMS: dict[str, re.Pattern[bytes]] = {
    Headers.SCHEMA_ID: re.compile(rb"\A[0-9]{1,10}\Z"),
    Headers.KEY_ID: re.compile(rb"\A[0-9a-f]{16}\Z"),
    Headers.SIGNATURE: re.compile(rb"\A.{64}\Z", re.DOTALL),
    Headers.CONCERN_ID: re.compile(rb"\A[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\Z"),
    Headers.DISCLOSURE_ID: re.compile(rb"\A[0-9a-f]{32}\Z"),
    #: A W3C trace id (32 lower-case hex digits); nothing SAFER sends sets one yet.
    Headers.TRACE_ID: re.compile(rb"\A[0-9a-f]{32}\Z"),
    Headers.REPLAY_OF: re.compile(rb"\A[0-9a-f]{32}\Z"),
}


def header_has_form(name: str, value: bytes | None) -> bool:
    """Whether ``name`` is an allowed header and ``value`` has the form SAFER gives it."""
    form = _HEADER_FORMS.get(name)
    return form is not None and value is not None and form.match(value) is not None


@dataclass(frozen=True)
class Topics:
    prefix: str = "hips"

    def inbound(self, agency: str) -> str:
        return f"{self.prefix}.inbound.{agency}"

    def disclosures(self, lscp: Lscp | str, agency_type: AgencyType | str) -> str:
        return f"{self.prefix}.{Lscp(lscp).value}.{AgencyType(agency_type).value}.disclosures"

    def triage(self, lscp: Lscp | str) -> str:
        return f"{self.prefix}.{Lscp(lscp).value}.triage"

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}.quarantine"

    @property
    def audit(self) -> str:
        return f"{self.prefix}.audit"

    @property
    def receipts(self) -> str:
        return f"{self.prefix}.receipts"

    @property
    def consent(self) -> str:
        return f"{self.prefix}.consent"

    @property
    def routed(self) -> str:
        """The router's ledger of routed concerns (replay detection; compacted)."""
        return f"{self.prefix}.routed"

    @property
    def keys(self) -> str:
        """Signed key events: rotation and revocation (compacted; ``broker._trust``)."""
        return f"{self.prefix}.keys"

    @property
    def signals(self) -> str:
        """The cumulative-concern signal per child pseudonym (issue 16; compacted)."""
        return f"{self.prefix}.signals"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    def notices(self, agency_type: AgencyType | str) -> str:
        """Non-delivery reports for one kind of publisher (e.g. ``hips.notices.police``)."""
        return f"{self.prefix}.notices.{AgencyType(agency_type).value}"

    def all_recipient_topics(self) -> list[str]:
        names = [
            self.disclosures(lscp, agency_type)
            for lscp in Lscp
            for agency_type in AgencyType
            if agency_type is not AgencyType.POLICE
        ]
        names += [self.triage(lscp) for lscp in Lscp]
        return names


@dataclass(frozen=True)
class TopicLayout:
    """How many partitions and copies topics get (from ``Settings``; DESIGN §6).

    ``inbound_partitions`` bounds how many routers can share the work (at least 12).
    On the 3-node cluster and in production: ``replication_factor`` 3 and
    ``min_insync_replicas`` 2, so an acknowledged record survives losing a broker.
    """

    inbound_partitions: int = 12
    replication_factor: int = 1
    min_insync_replicas: int = 1
    #: Retention of topics that hold personal data in clear (inbound, quarantine).
    clear_text_retention_days: int = 14
    #: Retention of encrypted recipient topics, alerts and notices.
    delivery_retention_days: int = 30


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the admin step creates it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)


def topic_plan(
    topics: Topics,
    layout: TopicLayout,
    *,
    publisher_agency_types: Iterable[str],
    agreement_retention_days: Mapping[str, int] | None = None,
) -> list[TopicSpec]:
    """Every topic SAFER Exchange uses, with partitions, replication and retention.

    * ``hips.audit`` and ``hips.receipts`` are kept forever: the audit store can be
      rebuilt from them.
    * ``hips.consent`` is compacted: the latest record per subject is what counts.
    * ``hips.keys`` is compacted: the latest state of each signing key is what counts.
    * ``hips.signals`` is compacted too (the latest state per child pseudonym); a
      tombstone and its record are gone from the log within a day of a shred.
    * Inbound and quarantine hold concerns in clear, so they are kept only long
      enough to route and to replay after a fix.
    * A recipient topic keeps its records for the delivery retention, or for the
      shortest retention an agreement for that agency type sets if that is shorter
      (``agreement_retention_days``: agency type -> days; issue 15.5). Triage
      topics follow the social-care agreements.
    """
    rf = layout.replication_factor
    base = {
        "min.insync.replicas": str(layout.min_insync_replicas),
        "max.message.bytes": str(SIZE_LIMITS.message_bytes),
    }

    def retain(days: int) -> dict[str, str]:
        return {**base, "retention.ms": str(days * _DAY_MS), "cleanup.policy": "delete"}

    forever = {**base, "retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    clear = retain(layout.clear_text_retention_days)
    delivery = retain(layout.delivery_retention_days)
    agency_types = sorted(set(publisher_agency_types))
    specs = [
        TopicSpec(topics.inbound(a), layout.inbound_partitions, rf, clear) for a in agency_types
    ]
    shortest = dict(agreement_retention_days or {})

    def for_agency(agency_type: str) -> dict[str, str]:
        days = shortest.get(agency_type)
        if days is None or days >= layout.delivery_retention_days:
            return delivery
        return retain(max(days, 1))

    specs += [
        TopicSpec(topics.disclosures(lscp, agency), 1, rf, for_agency(agency.value))
        for lscp in Lscp
        for agency in AgencyType
        if agency is not AgencyType.POLICE
    ]
    specs += [
        TopicSpec(topics.triage(lscp), 1, rf, for_agency(AgencyType.CHILDRENS_SOCIAL_CARE.value))
        for lscp in Lscp
    ]
    specs += [
        TopicSpec(topics.quarantine, 1, rf, clear),
        TopicSpec(topics.audit, 1, rf, forever),
        TopicSpec(topics.receipts, 1, rf, forever),
        TopicSpec(topics.alerts, 1, rf, delivery),
        TopicSpec(topics.consent, 1, rf, {**base, "cleanup.policy": "compact"}),
        TopicSpec(topics.routed, 1, rf, {**base, "cleanup.policy": "compact"}),
        TopicSpec(topics.keys, 1, rf, {**base, "cleanup.policy": "compact"}),
        # Pseudonyms, concern ids and counts only; a shred's tombstone removes a child's
        # state, and compaction removes it from the log within a day.
        TopicSpec(
            topics.signals,
            1,
            rf,
            {
                **base,
                "cleanup.policy": "compact",
                "delete.retention.ms": str(_DAY_MS),
                "max.compaction.lag.ms": str(_DAY_MS),
            },
        ),
    ]
    specs += [TopicSpec(topics.notices(a), 1, rf, delivery) for a in agency_types]
    return specs
