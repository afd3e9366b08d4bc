"""Audit: the append-only, tamper-evident record of every disclosure decision.

``audit/`` owns the audit record (``AuditRecord``, mirroring
``schemas/avro/audit_record/v1.avsc``) and its canonical log-entry bytes; the
RFC 9162 Merkle tree maths and proofs (``_merkle``, pure); C2SP signed
checkpoints (``_note``, pure); the durable append-only store (``AuditStore``,
one SQLite file in WAL mode); the offline verifier of a store file
(``verify_store``) and of a proof bundle (``verify_bundle``, which needs only
the bundle and the log's public key). It decides no policy and never touches
Kafka: the broker's audit feed consumes the topics and calls
``AuditStore.append``, passing its consumer positions so they are stored
atomically with the entries. Keys come in as arguments; nothing here reads
the key store.

Floor 2: imports only ``schemas`` (DESIGN §2).
"""

from ._bundle import BUNDLE_FORMAT, BundleSummary, make_bundle, verify_bundle
from ._merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from ._note import DEFAULT_ORIGIN, LogKey, LogSigner, open_checkpoint
from ._record import AuditRecord, entry_id_for
from ._store import AppendResult, AuditLog, AuditStore, Checkpoint
from ._verify import LogSummary, StoreTamperedError, verify_store

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_ORIGIN",
    "EMPTY_ROOT",
    "AppendResult",
    "AuditLog",
    "AuditRecord",
    "AuditStore",
    "BundleSummary",
    "Checkpoint",
    "Frontier",
    "LogKey",
    "LogSigner",
    "LogSummary",
    "MerkleTree",
    "StoreTamperedError",
    "entry_id_for",
    "leaf_hash",
    "make_bundle",
    "node_hash",
    "open_checkpoint",
    "root_of",
    "verify_bundle",
    "verify_consistency",
    "verify_inclusion",
    "verify_store",
]

# The questions auditors and DPOs ask, the FHIR export and the subject vault.
from ._equality import (
    MONITORED_GROUPS,
    Population,
    equality_counts,
    equality_reasons,
    is_equality_reason,
    load_population,
    parse_equality_reason,
    rate_per_10k,
    relative_rate_index,
)
from ._fhir import fhir_audit_events, fhir_bundle
from ._reports import (
    Labels,
    Period,
    S62Entry,
    Stats,
    SubjectAccessReport,
    TrailEntry,
    TrailQuery,
    audit_stats,
    s62_log,
    subject_access_report,
    trail,
)
from ._risk import (
    HIDDEN,
    RISK_CSV_HEADER,
    SUPPRESSED,
    RiskRow,
    parse_risk_reason,
    risk_assessment_reasons,
    risk_report,
    risk_tables,
    suppress,
    suppress_parts,
)
from ._vault import (
    SHRED_REASONS,
    ShredOutcome,
    SubjectReference,
    SubjectVault,
    canonical_identifier,
    derive_vault_key,
    enrol_subjects,
    shred_subject,
    vault_path_for,
)

# The witnessed log (issue 15.3): consistency bundles, cosignatures, the witness's rule.
from ._witness import (
    CONSISTENCY_FORMAT,
    ConsistencySummary,
    Cosigner,
    CosignerKey,
    WitnessRefusal,
    WitnessState,
    add_cosignatures,
    count_cosignatures,
    make_consistency_bundle,
    verify_consistency_bundle,
    witness_step,
)

__all__ += [
    "HIDDEN",
    "MONITORED_GROUPS",
    "RISK_CSV_HEADER",
    "SHRED_REASONS",
    "SUPPRESSED",
    "Labels",
    "Period",
    "Population",
    "RiskRow",
    "S62Entry",
    "ShredOutcome",
    "Stats",
    "SubjectAccessReport",
    "SubjectReference",
    "SubjectVault",
    "TrailEntry",
    "TrailQuery",
    "audit_stats",
    "canonical_identifier",
    "derive_vault_key",
    "enrol_subjects",
    "equality_counts",
    "equality_reasons",
    "fhir_audit_events",
    "fhir_bundle",
    "is_equality_reason",
    "load_population",
    "parse_equality_reason",
    "parse_risk_reason",
    "rate_per_10k",
    "relative_rate_index",
    "risk_assessment_reasons",
    "risk_report",
    "risk_tables",
    "s62_log",
    "shred_subject",
    "subject_access_report",
    "suppress",
    "suppress_parts",
    "trail",
    "vault_path_for",
]
__all__ += [
    "CONSISTENCY_FORMAT",
    "ConsistencySummary",
    "Cosigner",
    "CosignerKey",
    "WitnessRefusal",
    "WitnessState",
    "add_cosignatures",
    "count_cosignatures",
    "make_consistency_bundle",
    "verify_consistency_bundle",
    "witness_step",
]
