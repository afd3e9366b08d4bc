"""Adapters: agency formats ↔ SAFER schemas.

Floor 4. The police adapter publishes to ``hips.inbound.police`` only; the
recipient adapter reads a recipient's own topics. No adapter writes to a
recipient topic: everything for a recipient goes through the router.
"""

from ._inbox import STATUS_ORDER, Inbox, InboxItem, PendingReceipt, Rejection
from ._metrics import ADAPTER_METRICS
from ._police import ParsedRecord, PoliceAdapter, PublishOutcome, parse_police_json
from ._recipient import RecipientAdapter, publish_receipts, receipt_id_for, receipt_records
from ._synthetic import synthetic_concerns, synthetic_people
from ._webhook import (
    HEADER_DISCLOSURE_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WEBHOOK_METADATA_FIELDS,
    Attempt,
    DeliveryOutcome,
    DeliveryReason,
    DeliveryResult,
    RetryPolicy,
    WebhookSender,
    sign_webhook,
    verify_webhook,
    webhook_body,
)

__all__ = [
    "ADAPTER_METRICS",
    "HEADER_DISCLOSURE_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "STATUS_ORDER",
    "WEBHOOK_METADATA_FIELDS",
    "Attempt",
    "DeliveryOutcome",
    "DeliveryReason",
    "DeliveryResult",
    "Inbox",
    "InboxItem",
    "ParsedRecord",
    "PendingReceipt",
    "PoliceAdapter",
    "PublishOutcome",
    "RecipientAdapter",
    "Rejection",
    "RetryPolicy",
    "WebhookSender",
    "parse_police_json",
    "publish_receipts",
    "receipt_id_for",
    "receipt_records",
    "sign_webhook",
    "synthetic_concerns",
    "synthetic_people",
    "verify_webhook",
    "webhook_body",
]
