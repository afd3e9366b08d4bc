"""Adapters: agency formats ↔ SAFER schemas.

Floor 4. The police adapter publishes to ``hips.inbound.police`` only; the
recipient adapter reads a recipient's own topics. No adapter writes to a
recipient topic: everything for a recipient goes through the router.
"""

from ._inbox import Inbox, InboxItem, Rejection
from ._police import ParsedRecord, PoliceAdapter, PublishOutcome, parse_police_json
from ._recipient import RecipientAdapter, receipt_id_for
from ._synthetic import synthetic_concerns, synthetic_people

__all__ = [
    "Inbox",
    "InboxItem",
    "ParsedRecord",
    "PoliceAdapter",
    "PublishOutcome",
    "RecipientAdapter",
    "Rejection",
    "parse_police_json",
    "receipt_id_for",
    "synthetic_concerns",
    "synthetic_people",
]
