"""Adapters: agency formats ↔ SAFER schemas.

Floor 4. The police adapter publishes to ``hips.inbound.police`` only; the
recipient adapter reads a recipient's own topics. No adapter writes to a
recipient topic: everything for a recipient goes through the router.

Issue 13: CSV batches (``parse_police_csv``), the HTTP ingestion gateway
(``Gateway``, ``gateway_app``, ``serve_gateway``; per-agency ``CredentialStore``).
The gateway writes to ``hips.inbound.<agency>`` and, for its own submission
records, to ``hips.audit``; never to a recipient topic.
"""

from ._client_certs import (
    CertificateH11Protocol,
    certificate_fingerprint,
    issue_client_certificate,
    load_ca,
)
from ._credentials import Credential, CredentialStore, GatewayReason, GatewayRefusal
from ._csv import CSV_COLUMNS, csv_columns, parse_police_csv
from ._fhir import (
    CONCERN_TYPE_SYSTEM,
    FHIR_INVALID,
    FHIR_UNMAPPABLE,
    NHS_NUMBER_SYSTEM,
    RISK_GRADE_SYSTEM,
    FhirRefusal,
    bundle_to_concern,
    concern_to_bundle,
    consent_to_fhir,
    consents_bundle,
    disclosure_to_communication,
    validate_r4,
)
from ._gateway import (
    GATEWAY_SUBMITTED,
    Gateway,
    GatewayLimits,
    IdempotencyStore,
    Submission,
    gateway_app,
    listen,
    openapi_document,
    serve_asgi,
    serve_gateway,
)
from ._inbox import STATUS_ORDER, Inbox, InboxItem, PendingReceipt, Rejection
from ._metrics import ADAPTER_METRICS, counted_elsewhere
from ._police import (
    ParsedRecord,
    PoliceAdapter,
    PublishOutcome,
    concern_id_for,
    parse_police_json,
    validate_record,
)
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
    "CONCERN_TYPE_SYSTEM",
    "CSV_COLUMNS",
    "FHIR_INVALID",
    "FHIR_UNMAPPABLE",
    "GATEWAY_SUBMITTED",
    "HEADER_DISCLOSURE_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "NHS_NUMBER_SYSTEM",
    "RISK_GRADE_SYSTEM",
    "STATUS_ORDER",
    "WEBHOOK_METADATA_FIELDS",
    "Attempt",
    "CertificateH11Protocol",
    "Credential",
    "CredentialStore",
    "DeliveryOutcome",
    "DeliveryReason",
    "DeliveryResult",
    "FhirRefusal",
    "Gateway",
    "GatewayLimits",
    "GatewayReason",
    "GatewayRefusal",
    "IdempotencyStore",
    "Inbox",
    "InboxItem",
    "ParsedRecord",
    "PendingReceipt",
    "PoliceAdapter",
    "PublishOutcome",
    "RecipientAdapter",
    "Rejection",
    "RetryPolicy",
    "Submission",
    "WebhookSender",
    "bundle_to_concern",
    "certificate_fingerprint",
    "concern_id_for",
    "concern_to_bundle",
    "consent_to_fhir",
    "consents_bundle",
    "counted_elsewhere",
    "csv_columns",
    "disclosure_to_communication",
    "gateway_app",
    "issue_client_certificate",
    "listen",
    "load_ca",
    "openapi_document",
    "parse_police_csv",
    "parse_police_json",
    "publish_receipts",
    "receipt_id_for",
    "receipt_records",
    "serve_asgi",
    "serve_gateway",
    "sign_webhook",
    "synthetic_concerns",
    "synthetic_people",
    "validate_r4",
    "validate_record",
    "verify_webhook",
    "webhook_body",
]
