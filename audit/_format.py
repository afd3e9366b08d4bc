"""On-disk format of the audit store, shared by the writer and the verifier.

Hashing follows RFC 9162 §2.1.1 so that the Merkle log can reuse the leaves:

- ``leaf_hash = SHA-256(0x00 ‖ entry)``, entry = the record's canonical bytes;
- ``chain_hash = SHA-256(0x01 ‖ previous chain_hash ‖ leaf_hash)``, with 32
  zero bytes before seq 1. The chain lets a verifier replay the whole log
  without a tree; checkpoints pin its value at a size.
"""

from __future__ import annotations

import hashlib
import json

from ._record import AuditRecord, format_time

__all__ = [
    "APPLICATION_ID",
    "FORMAT_VERSION",
    "GENESIS",
    "INDEX_COLUMNS",
    "TABLES",
    "TRIGGERS",
    "chain_hash",
    "index_values",
    "leaf_hash",
]

#: ``PRAGMA application_id`` of a SAFER audit store ("SAFA" in ASCII).
APPLICATION_ID = 0x53414641
#: ``PRAGMA user_version``: the on-disk format this build writes.
FORMAT_VERSION = 1
#: The chain hash "before" seq 1.
GENESIS = bytes(32)

TABLES = ("entries", "checkpoints", "feed_offsets")
TRIGGERS = (
    "entries_append_only_update",
    "entries_append_only_delete",
    "entries_contiguous_seq",
    "checkpoints_append_only_update",
    "checkpoints_append_only_delete",
)

#: Plain (queryable) columns of ``entries`` derived from the entry itself.
INDEX_COLUMNS = (
    "entry_id",
    "event",
    "disclosure_id",
    "concern_id",
    "recipient",
    "lscp",
    "lawful_basis",
    "at",
    "subject_pseudonyms",
)


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + previous + leaf).digest()


def index_values(record: AuditRecord) -> tuple[str | None, ...]:
    """Values of ``INDEX_COLUMNS`` for a record (pseudonyms and ids only)."""
    return (
        record.entry_id,
        record.event.value,
        record.disclosure_id,
        record.concern_id,
        record.recipient,
        record.lscp,
        record.lawful_basis,
        format_time(record.at),
        json.dumps(list(record.subject_pseudonyms), separators=(",", ":"), ensure_ascii=False),
    )
