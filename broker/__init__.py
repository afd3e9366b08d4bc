"""Broker: everything that touches Kafka, plus envelope crypto and routing.

Floor 3: imports schemas, consent and audit; never adapters or safer.
"""

from ._cluster import (
    INTERNAL_TOPICS,
    BrokerInfo,
    ClusterHealth,
    PartitionHealth,
    PartitionState,
    cluster_health,
    wait_healthy,
)
from ._config import ROUTER_ID, Deployment, Settings, default_deploy_dir, load_deployment
from ._consent_view import (
    ConsentView,
    consent_out_record,
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
from ._feed import AuditFeed, audit_records_in
from ._kafka import (
    OutRecord,
    VerifiedOrigin,
    assign_stored,
    caught_up,
    create_topics,
    fetch,
    header,
    make_consumer,
    make_producer,
    read_topic,
    send_all,
    signed_record,
    verify_origin,
)
from ._kafka_dist import KAFKA_VERSION, KafkaDistribution, install_kafka, kafka_distribution
from ._keys import KeyStore
from ._ledger import RoutedLedger, Seen, routed_digest
from ._limits import SIZE_LIMITS, SizeLimits
from ._local_cluster import (
    CLUSTER_MIN_INSYNC_REPLICAS,
    CLUSTER_NODES,
    CLUSTER_REPLICATION_FACTOR,
    cluster_settings,
    loopback_cluster,
)
from ._local_kafka import ENGINE_NAME, Engine, LocalKafka, kafka_engine, running_kafka_pids
from ._manifests import STRIMZI_API_VERSION, strimzi_topics
from ._monitor import RECEIPT_PREFIX, TimelinessMonitor, tracked_from_records
from ._process import child_preexec
from ._quarantine import QuarantineItem, fetch_original, read_quarantine, replay_record
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
from ._topics import HEADER_NAMES, Headers, TopicLayout, Topics, TopicSpec, topic_plan

__all__ = [
    "CLUSTER_MIN_INSYNC_REPLICAS",
    "CLUSTER_NODES",
    "CLUSTER_REPLICATION_FACTOR",
    "ENGINE_NAME",
    "HEADER_NAMES",
    "INTERNAL_TOPICS",
    "KAFKA_VERSION",
    "RECEIPT_PREFIX",
    "ROUTER_ID",
    "SIZE_LIMITS",
    "STRIMZI_API_VERSION",
    "AuditFeed",
    "BrokerInfo",
    "Candidate",
    "ClusterHealth",
    "ConsentView",
    "Deployment",
    "Engine",
    "Headers",
    "KafkaDistribution",
    "KeyStore",
    "Keyring",
    "LocalKafka",
    "OutRecord",
    "PartitionHealth",
    "PartitionState",
    "Plan",
    "PostcodeTable",
    "QuarantineItem",
    "RoutedLedger",
    "Router",
    "RouterCore",
    "Routing",
    "SealedPayload",
    "Seen",
    "Settings",
    "SigningIdentity",
    "SizeLimits",
    "TimelinessMonitor",
    "TopicLayout",
    "TopicSpec",
    "Topics",
    "VerifiedOrigin",
    "assign_stored",
    "audit_records_in",
    "candidate_recipients",
    "caught_up",
    "child_preexec",
    "cluster_health",
    "cluster_settings",
    "consent_out_record",
    "create_topics",
    "default_deploy_dir",
    "disclosure_id_for",
    "fetch",
    "fetch_original",
    "header",
    "install_kafka",
    "kafka_distribution",
    "kafka_engine",
    "key_id",
    "load_deployment",
    "loopback_cluster",
    "make_consumer",
    "make_producer",
    "open_sealed",
    "parse_postcode_table",
    "postcode_district",
    "pseudonym",
    "read_quarantine",
    "read_topic",
    "replay_record",
    "resolve_partnerships",
    "routed_digest",
    "running_kafka_pids",
    "seal",
    "send_all",
    "sign_record",
    "signed_record",
    "strimzi_topics",
    "subject_key",
    "topic_plan",
    "tracked_from_records",
    "verify_consent_record",
    "verify_origin",
    "verify_record",
    "wait_healthy",
]
