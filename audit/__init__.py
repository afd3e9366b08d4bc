"""Audit: the append-only, tamper-evident record of every disclosure decision.

``audit/`` owns the audit record (``AuditRecord``, mirroring
``schemas/avro/audit_record/v1.avsc``), its canonical log-entry bytes, the
durable append-only store (``AuditStore``, SQLite in WAL mode, hash-chained
with RFC 9162 leaf hashes and checkpoints) and the offline verifier
(``verify_store``). It decides no policy and never touches Kafka: the broker's
audit feed consumes the topics and calls ``AuditStore.append``, passing its
consumer positions so they are stored atomically with the entries.

Floor 2: imports only ``schemas`` (DESIGN §2).
"""

from ._record import AuditRecord, entry_id_for
from ._store import AppendResult, AuditLog, AuditStore, Checkpoint
from ._verify import LogSummary, verify_store

__all__ = [
    "AppendResult",
    "AuditLog",
    "AuditRecord",
    "AuditStore",
    "Checkpoint",
    "LogSummary",
    "entry_id_for",
    "verify_store",
]
