"""Broker: everything that touches Kafka, plus envelope crypto and routing.

Floor 3: imports schemas, consent and audit; never adapters or safer.
"""

from ._config import ROUTER_ID, Deployment, Settings, default_deploy_dir, load_deployment
from ._consent_view import (
    ConsentView,
    consent_out_record,
    ensure_consent_topic,
    verify_consent_record,
)
from ._crypto import (
    Keyring,
    SealedPayload,
    SigningIdentity,
    key_id,
    open_sealed,
    pseudonym,
    seal,
    sign_record,
    verify_record,
)
from ._embedded import EmbeddedBroker, kafka_cluster, running_tansu_pids, tansu_binary
from ._feed import AuditFeed
from ._gaps import OffsetGapGuard
from ._kafka import (
    OutRecord,
    VerifiedOrigin,
    create_topics,
    header,
    make_producer,
    read_topic,
    send_all,
    signed_record,
    verify_origin,
)
from ._keys import KeyStore
from ._monitor import RECEIPT_PREFIX, TimelinessMonitor, tracked_from_records
from ._router import Plan, Router, RouterCore, disclosure_id_for, subject_key
from ._routing import (
    Candidate,
    PostcodeTable,
    Routing,
    candidate_recipients,
    parse_postcode_table,
    postcode_district,
    resolve_partnerships,
)
from ._topics import HEADER_NAMES, Headers, Topics

__all__ = [
    "HEADER_NAMES",
    "RECEIPT_PREFIX",
    "ROUTER_ID",
    "AuditFeed",
    "Candidate",
    "ConsentView",
    "Deployment",
    "EmbeddedBroker",
    "Headers",
    "KeyStore",
    "Keyring",
    "OffsetGapGuard",
    "OutRecord",
    "Plan",
    "PostcodeTable",
    "Router",
    "RouterCore",
    "Routing",
    "SealedPayload",
    "Settings",
    "SigningIdentity",
    "TimelinessMonitor",
    "Topics",
    "VerifiedOrigin",
    "candidate_recipients",
    "consent_out_record",
    "create_topics",
    "default_deploy_dir",
    "disclosure_id_for",
    "ensure_consent_topic",
    "header",
    "kafka_cluster",
    "key_id",
    "load_deployment",
    "make_producer",
    "open_sealed",
    "parse_postcode_table",
    "postcode_district",
    "pseudonym",
    "read_topic",
    "resolve_partnerships",
    "running_tansu_pids",
    "seal",
    "send_all",
    "sign_record",
    "signed_record",
    "subject_key",
    "tansu_binary",
    "tracked_from_records",
    "verify_consent_record",
    "verify_origin",
    "verify_record",
]
