"""Schemas: the Avro records of SAFER Exchange, their wire format and registry.

Bottom floor: imports nothing else from SAFER Exchange. Also home of the one
exception tree and the stable reason codes, so every floor can use them.
Issue 13: ``ConfluentRegistry`` (a client for Confluent-compatible schema
registries; the REST subset is served from ours by the app shell).
"""

from ._codec import SchemaVersion, catalogue, latest, split_wire
from ._compat import check_full_transitive, reader_can_read
from ._confluent import (
    COMPATIBILITY,
    ConfluentRegistry,
    confluent_subject,
    our_subject,
)
from ._errors import (
    AuditError,
    BrokerError,
    ConfigError,
    CryptoError,
    DecodeError,
    LogTamperedError,
    PolicyError,
    ReasonCode,
    SaferError,
    SchemaError,
    SignatureError,
    ValidationError,
)
from ._model import (
    DASH_MAX,
    ETHNIC_GROUP_HIGH,
    LA_CODES,
    NOT_SOUGHT_REASONS,
    OVERRIDE_JUSTIFICATIONS,
    Address,
    AgencyType,
    AuditEvent,
    ConcernModel,
    ConcernType,
    ConsentState,
    ConsentStatement,
    EthnicGroup,
    EthnicGroupHigh,
    IncidentLocation,
    Lscp,
    NotSoughtReason,
    Officer,
    OverrideJustification,
    RiskAssessment,
    RiskFactor,
    RiskGrade,
    RiskMethod,
    Subject,
    SubjectRole,
    VoiceOfChild,
    age_on,
)
from ._plausibility import (
    CANONICAL_ID,
    LIMITS,
    Limits,
    Problem,
    limit_problems,
    plausibility_problems,
)
from ._registry import Codec, Decoded, EmbeddedRegistry, Registry, content_schema_id

#: Subject names of the records SAFER Exchange writes.
CONCERN = "concern"
DISCLOSURE = "disclosure"
AUDIT_RECORD = "audit_record"
#: One signed record carrying many audit records (the router writes these; issue 12).
AUDIT_BATCH = "audit_batch"
RECEIPT = "receipt"
QUARANTINE = "quarantine"
CONSENT_RECORD = "consent_record"

__all__ = [
    "AUDIT_BATCH",
    "AUDIT_RECORD",
    "CANONICAL_ID",
    "COMPATIBILITY",
    "CONCERN",
    "CONSENT_RECORD",
    "DASH_MAX",
    "DISCLOSURE",
    "ETHNIC_GROUP_HIGH",
    "LA_CODES",
    "LIMITS",
    "NOT_SOUGHT_REASONS",
    "OVERRIDE_JUSTIFICATIONS",
    "QUARANTINE",
    "RECEIPT",
    "Address",
    "AgencyType",
    "AuditError",
    "AuditEvent",
    "BrokerError",
    "Codec",
    "ConcernModel",
    "ConcernType",
    "ConfigError",
    "ConfluentRegistry",
    "ConsentState",
    "ConsentStatement",
    "CryptoError",
    "DecodeError",
    "Decoded",
    "EmbeddedRegistry",
    "EthnicGroup",
    "EthnicGroupHigh",
    "IncidentLocation",
    "Limits",
    "LogTamperedError",
    "Lscp",
    "NotSoughtReason",
    "Officer",
    "OverrideJustification",
    "PolicyError",
    "Problem",
    "ReasonCode",
    "Registry",
    "RiskAssessment",
    "RiskFactor",
    "RiskGrade",
    "RiskMethod",
    "SaferError",
    "SchemaError",
    "SchemaVersion",
    "SignatureError",
    "Subject",
    "SubjectRole",
    "ValidationError",
    "VoiceOfChild",
    "age_on",
    "catalogue",
    "check_full_transitive",
    "confluent_subject",
    "content_schema_id",
    "latest",
    "limit_problems",
    "our_subject",
    "plausibility_problems",
    "reader_can_read",
    "split_wire",
]
