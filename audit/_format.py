"""On-disk format of the audit store (v2), shared by the writer and the verifier.

One SQLite file in WAL mode. ``docs/AUDIT_LOG.md`` explains the choice.

- ``entries``: one row per log entry. ``entry`` holds the canonical bytes
  (the RFC 9162 leaf is ``SHA-256(0x00 ‖ entry)``); the other columns are
  plain copies of ids and pseudonyms taken from the entry, for queries. They
  carry no index, so an append costs one short row each.
- ``tree``: one row per appended batch: the batch's 32-byte leaf hashes,
  concatenated, and the tree's frontier after it. Loading a million leaves is
  reading 32 MB, not a million rows.
- ``checkpoints``: signed C2SP checkpoints, with the frontier at that size and
  the leaf hashes added since the previous checkpoint. Both are bound to the
  signed root, so a verifier can trust them as far as the signature goes and
  name the exact entry that changed after signing.
- ``feed_offsets``: the audit feed's Kafka positions, written in the same
  transaction as the entries they produced.
- ``ix_*`` and ``index_state``: the query index. It is derived from the plain
  columns in bulk, by SQL, before a query needs it (random-key B-tree inserts
  are what made per-row indexing slow), and the verifier checks it.

Triggers refuse UPDATE and DELETE of entries, tree rows and checkpoints, an
entry that is not the next seq, a tree row that does not start where the last
one ended, and a checkpoint beyond the log or behind an earlier one.
"""

from __future__ import annotations

from ._record import AuditRecord

__all__ = [
    "APPEND_ONLY",
    "APPLICATION_ID",
    "FORMAT_VERSION",
    "INDEX_COLUMNS",
    "INDEX_TABLES",
    "SCHEMA",
    "TABLES",
    "TRIGGERS",
    "index_values",
]

#: ``PRAGMA application_id`` of a SAFER audit store ("SAFA" in ASCII).
APPLICATION_ID = 0x53414641
#: ``PRAGMA user_version``: the on-disk format this build writes.
FORMAT_VERSION = 2

APPEND_ONLY = "audit log is append-only"

TABLES = ("entries", "tree", "checkpoints", "feed_offsets", "index_state")

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

#: Query-index tables: (table, key column, SELECT producing (key, seq) from entries).
INDEX_TABLES: tuple[tuple[str, str, str], ...] = (
    ("ix_entry", "entry_id", "SELECT entry_id, seq FROM entries e"),
    (
        "ix_disclosure",
        "disclosure_id",
        "SELECT disclosure_id, seq FROM entries e WHERE disclosure_id IS NOT NULL",
    ),
    (
        "ix_concern",
        "concern_id",
        "SELECT concern_id, seq FROM entries e WHERE concern_id IS NOT NULL",
    ),
    (
        "ix_recipient",
        "recipient",
        "SELECT recipient, seq FROM entries e WHERE recipient IS NOT NULL",
    ),
    (
        "ix_subject",
        "pseudonym",
        "SELECT DISTINCT j.value, e.seq FROM entries e, json_each(e.subject_pseudonyms) j",
    ),
    ("ix_at", "at", "SELECT at, seq FROM entries e"),
)

TRIGGERS = (
    "entries_append_only_update",
    "entries_append_only_delete",
    "entries_contiguous_seq",
    "tree_append_only_update",
    "tree_append_only_delete",
    "tree_contiguous",
    "checkpoints_append_only_update",
    "checkpoints_append_only_delete",
    "checkpoints_in_order",
)

_INDEX_DDL = "\n".join(
    f"CREATE TABLE IF NOT EXISTS {table}({column} TEXT NOT NULL, seq INTEGER NOT NULL, "
    f"PRIMARY KEY({column}, seq)) WITHOUT ROWID;"
    for table, column, _ in INDEX_TABLES
)

# Only module constants are interpolated: no input reaches this SQL.
SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS entries(
    seq INTEGER PRIMARY KEY,
    entry_id TEXT NOT NULL,
    event TEXT NOT NULL,
    disclosure_id TEXT,
    concern_id TEXT,
    recipient TEXT,
    lscp TEXT,
    lawful_basis TEXT,
    at TEXT NOT NULL,
    subject_pseudonyms TEXT NOT NULL,
    entry BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS entries_contiguous_seq BEFORE INSERT ON entries
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM entries)
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: seq must be the next one'); END;

CREATE TABLE IF NOT EXISTS tree(
    first_seq INTEGER PRIMARY KEY,
    leaves BLOB NOT NULL,
    frontier BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS tree_append_only_update BEFORE UPDATE ON tree
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS tree_append_only_delete BEFORE DELETE ON tree
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS tree_contiguous BEFORE INSERT ON tree
WHEN NEW.first_seq IS NOT COALESCE(
    (SELECT first_seq + length(leaves) / 32 FROM tree ORDER BY first_seq DESC LIMIT 1), 1
) OR length(NEW.leaves) % 32 != 0 OR length(NEW.leaves) = 0
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: tree rows must follow each other'); END;

CREATE TABLE IF NOT EXISTS checkpoints(
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    frontier BLOB NOT NULL,
    leaves BLOB NOT NULL,
    at TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_in_order BEFORE INSERT ON checkpoints
WHEN NEW.size > (SELECT COALESCE(MAX(seq), 0) FROM entries)
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


def index_values(record: AuditRecord) -> tuple[str | None, ...]:
    """Values of ``INDEX_COLUMNS`` for a record (pseudonyms and ids only)."""
    return record.query_columns()
