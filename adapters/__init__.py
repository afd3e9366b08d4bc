"""Adapters: agency formats ↔ SAFER schemas.

Floor 4. The police adapter publishes to ``hips.inbound.police`` only; the
recipient adapter reads a recipient's own topics. No adapter writes to a
recipient topic: everything for a recipient goes through the router.
"""

from ._inbox import STATUS_ORDER, Inbox, InboxItem, PendingReceipt, Rejection
from ._police import ParsedRecord, PoliceAdapter, PublishOutcome, parse_police_json
from ._recipient import RecipientAdapter, publish_receipts, receipt_id_for, receipt_records
from ._synthetic import synthetic_concerns, synthetic_people

__all__ = [
    "STATUS_ORDER",
    "Inbox",
    "InboxItem",
    "ParsedRecord",
    "PendingReceipt",
    "PoliceAdapter",
    "PublishOutcome",
    "RecipientAdapter",
    "Rejection",
    "parse_police_json",
    "publish_receipts",
    "receipt_id_for",
    "receipt_records",
    "synthetic_concerns",
    "synthetic_people",
]
