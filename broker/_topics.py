"""Topic names (DESIGN §5) and the record headers SAFER Exchange may set."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import AgencyType, Lscp

__all__ = ["HEADER_NAMES", "Headers", "Topics"]


class Headers:
    """Header names. Headers are the only metadata outside the payload; they
    carry ids and signatures, never a name, date of birth, address or NHS number."""

    SCHEMA_ID = "safer-schema-id"
    KEY_ID = "safer-key-id"
    SIGNATURE = "safer-sig"
    CONCERN_ID = "safer-concern-id"
    DISCLOSURE_ID = "safer-disclosure-id"
    TRACE_ID = "safer-trace-id"


HEADER_NAMES = frozenset(
    {
        Headers.SCHEMA_ID,
        Headers.KEY_ID,
        Headers.SIGNATURE,
        Headers.CONCERN_ID,
        Headers.DISCLOSURE_ID,
        Headers.TRACE_ID,
    }
)


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
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    def all_recipient_topics(self) -> list[str]:
        names = [
            self.disclosures(lscp, agency_type)
            for lscp in Lscp
            for agency_type in AgencyType
            if agency_type is not AgencyType.POLICE
        ]
        names += [self.triage(lscp) for lscp in Lscp]
        return names
