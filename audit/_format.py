"""On-disk format of the audit store (v3), shared by the writer and the verifier.

The log is one SQLite file in WAL mode (say ``audit.db``) and, next to it, a
folder of **segment files** (``audit.db-segments/``) that hold the entries.
``docs/AUDIT_LOG.md`` explains the choice.

Segment files (``entries-00000001.jsonl``, ...) are JSON Lines: each entry's
canonical bytes followed by ``\\n``. The RFC 9162 leaf is ``SHA-256(0x00 ‖
entry)``, without the newline. Canonical JSON never holds a raw newline, so a
segment is readable with standard tools (``jq``, ``grep``). A segment is only
ever appended to; the writer starts a new one when it passes
``SEGMENT_LIMIT`` bytes, and a batch never spans two segments.

SQLite tables:

- ``batches``: one row per appended batch: where its entries are (segment
  number, byte offset, and the end of each entry relative to that offset, as
  little-endian uint64, each end just after the entry's newline) and the
  batch's entry ids (a JSON array; the writer's dedup map is loaded from it).
- ``tree``: one row per appended batch: the batch's 32-byte leaf hashes,
  concatenated, and the tree's frontier after it. Loading a million leaves is
  reading 32 MB, not a million rows.
- ``checkpoints``: signed C2SP checkpoints, with the frontier at that size and
  the leaf hashes added since the previous checkpoint. Both are bound to the
  signed root, so a verifier can trust them as far as the signature goes and
  name the exact entry that changed after signing.
- ``feed_offsets``: the audit feed's Kafka positions, written in the same
  transaction as the batch they produced.
- ``entry_columns``, ``ix_*`` and ``index_state``: the query index, derived
  in bulk from the entries before a query needs it: ``entry_columns`` holds
  each entry's plain ids and pseudonyms (``INDEX_COLUMNS``), and each ``ix_*``
  table one key column of it. The verifier checks them against the entries.

An append writes its entries to the segment and fdatasyncs it, then commits
the ``batches`` and ``tree`` rows (and feed positions) in one transaction.
Bytes past the last committed batch are a batch whose commit never happened
(a crash): no row points at them, readers never see them, and the next
writer cuts them off.

Triggers refuse UPDATE and DELETE of batches, tree rows, entry columns and
checkpoints, a batch or tree row that does not start where the last one
ended, and a checkpoint beyond the log or behind an earlier one.
"""

from __future__ import annotations

import sys
from array import array
from pathlib import Path

__all__ = [
    "APPEND_ONLY",
    "APPLICATION_ID",
    "FORMAT_VERSION",
    "INDEX_COLUMNS",
    "INDEX_TABLES",
    "SCHEMA",
    "SEGMENT_LIMIT",
    "TABLES",
    "TRIGGERS",
    "pack_ends",
    "segment_path",
    "segments_dir",
    "unpack_ends",
]

#: ``PRAGMA application_id`` of a SAFER audit store ("SAFA" in ASCII).
APPLICATION_ID = 0x53414641
#: ``PRAGMA user_version``: the on-disk format this build writes.
FORMAT_VERSION = 3
#: A new segment file is started once the current one holds this many bytes.
SEGMENT_LIMIT = 256 * 1024 * 1024

APPEND_ONLY = "audit log is append-only"

TABLES = ("batches", "tree", "checkpoints", "feed_offsets", "index_state", "entry_columns")

#: Plain (queryable) columns of ``entry_columns``, derived from the entry itself.
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

#: Query-index tables: (table, key column, SELECT producing (key, seq) from entry_columns).
INDEX_TABLES: tuple[tuple[str, str, str], ...] = (
    ("ix_entry", "entry_id", "SELECT entry_id, seq FROM entry_columns e"),
    (
        "ix_disclosure",
        "disclosure_id",
        "SELECT disclosure_id, seq FROM entry_columns e WHERE disclosure_id IS NOT NULL",
    ),
    (
        "ix_concern",
        "concern_id",
        "SELECT concern_id, seq FROM entry_columns e WHERE concern_id IS NOT NULL",
    ),
    (
        "ix_recipient",
        "recipient",
        "SELECT recipient, seq FROM entry_columns e WHERE recipient IS NOT NULL",
    ),
    (
        "ix_subject",
        "pseudonym",
        "SELECT DISTINCT j.value, e.seq FROM entry_columns e, json_each(e.subject_pseudonyms) j",
    ),
    ("ix_at", "at", "SELECT at, seq FROM entry_columns e"),
)

TRIGGERS = (
    "batches_append_only_update",
    "batches_append_only_delete",
    "batches_contiguous",
    "tree_append_only_update",
    "tree_append_only_delete",
    "tree_contiguous",
    "entry_columns_append_only_update",
    "entry_columns_append_only_delete",
    "entry_columns_contiguous_seq",
    "checkpoints_append_only_update",
    "checkpoints_append_only_delete",
    "checkpoints_in_order",
)

_INDEX_DDL = "\n".join(
    f"CREATE TABLE IF NOT EXISTS {table}({column} TEXT NOT NULL, seq INTEGER NOT NULL, "
    f"PRIMARY KEY({column}, seq)) WITHOUT ROWID;"
    for table, column, _ in INDEX_TABLES
)


def _refuse_update_and_delete(table: str) -> str:
    return "\n".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_append_only_{action.lower()} "
        f"BEFORE {action} ON {table}\nBEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;"
        for action in ("UPDATE", "DELETE")
    )


_APPEND_ONLY_BATCHES = _refuse_update_and_delete("batches")
_APPEND_ONLY_TREE = _refuse_update_and_delete("tree")
_APPEND_ONLY_ENTRY_COLUMNS = _refuse_update_and_delete("entry_columns")
_APPEND_ONLY_CHECKPOINTS = _refuse_update_and_delete("checkpoints")

# The size of the log: where the last batch ends (0 when empty).
_LOG_SIZE = (
    "(SELECT COALESCE(MAX(first_seq + length(ends) / 8 - 1), 0) FROM batches "
    "WHERE first_seq = (SELECT MAX(first_seq) FROM batches))"
)

# Only module constants are interpolated: no input reaches this SQL.
SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS batches(
    first_seq INTEGER PRIMARY KEY,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    ends BLOB NOT NULL,
    entry_ids TEXT NOT NULL
);
{_APPEND_ONLY_BATCHES}
CREATE TRIGGER IF NOT EXISTS batches_contiguous BEFORE INSERT ON batches
WHEN NEW.first_seq IS NOT {_LOG_SIZE} + 1
  OR length(NEW.ends) % 8 != 0 OR length(NEW.ends) = 0 OR NEW.segment < 1 OR NEW.offset < 0
  OR NEW.segment < (SELECT COALESCE(MAX(segment), 1) FROM batches)
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: batches must follow each other'); END;

CREATE TABLE IF NOT EXISTS tree(
    first_seq INTEGER PRIMARY KEY,
    leaves BLOB NOT NULL,
    frontier BLOB NOT NULL
);
{_APPEND_ONLY_TREE}
CREATE TRIGGER IF NOT EXISTS tree_contiguous BEFORE INSERT ON tree
WHEN NEW.first_seq IS NOT COALESCE(
    (SELECT first_seq + length(leaves) / 32 FROM tree ORDER BY first_seq DESC LIMIT 1), 1
) OR length(NEW.leaves) % 32 != 0 OR length(NEW.leaves) = 0
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: tree rows must follow each other'); END;

CREATE TABLE IF NOT EXISTS entry_columns(
    seq INTEGER PRIMARY KEY,
    entry_id TEXT NOT NULL,
    event TEXT NOT NULL,
    disclosure_id TEXT,
    concern_id TEXT,
    recipient TEXT,
    lscp TEXT,
    lawful_basis TEXT,
    at TEXT NOT NULL,
    subject_pseudonyms TEXT NOT NULL
);
{_APPEND_ONLY_ENTRY_COLUMNS}
CREATE TRIGGER IF NOT EXISTS entry_columns_contiguous_seq BEFORE INSERT ON entry_columns
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM entry_columns)
  OR NEW.seq > {_LOG_SIZE}
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: seq must be the next one'); END;

CREATE TABLE IF NOT EXISTS checkpoints(
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    frontier BLOB NOT NULL,
    leaves BLOB NOT NULL,
    at TEXT NOT NULL
);
{_APPEND_ONLY_CHECKPOINTS}
CREATE TRIGGER IF NOT EXISTS checkpoints_in_order BEFORE INSERT ON checkpoints
WHEN NEW.size > {_LOG_SIZE}
  OR NEW.size < (SELECT COALESCE(MAX(size), 0) FROM checkpoints)
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: a checkpoint must not pass the log or go back'); END;

CREATE TABLE IF NOT EXISTS feed_offsets(
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY(topic, partition)
);
CREATE TABLE IF NOT EXISTS index_state(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO index_state(id, indexed_seq) VALUES (1, 0);
{_INDEX_DDL}
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {FORMAT_VERSION};
COMMIT;
"""  # noqa: S608

_BIG_ENDIAN = sys.byteorder == "big"


def pack_ends(ends: array[int]) -> bytes:
    """A batch's entry ends (``array('Q')``) as stored: little-endian uint64."""
    if _BIG_ENDIAN:
        ends = array("Q", ends)
        ends.byteswap()
    return ends.tobytes()


def unpack_ends(data: bytes) -> array[int]:
    """Inverse of ``pack_ends``; ``ValueError`` if ``data`` is not whole uint64s."""
    ends = array("Q")
    ends.frombytes(data)
    if _BIG_ENDIAN:
        ends.byteswap()
    return ends


def segments_dir(store: Path) -> Path:
    """The folder of segment files that belongs to the SQLite file ``store``."""
    return store.with_name(store.name + "-segments")


def segment_path(folder: Path, number: int) -> Path:
    return folder / f"entries-{number:08d}.jsonl"
