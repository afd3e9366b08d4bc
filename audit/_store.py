"""The durable, append-only audit store.

Why SQLite in WAL mode (DESIGN §6):

- **Durable group commit.** The feed hands over a whole fetched batch; it is
  written in one transaction and, with ``synchronous=FULL``, fsynced once at
  COMMIT. When ``append`` returns, the batch survives a crash or power loss.
- **Exactly-once from Kafka.** The feed's consumer positions (``feed_offsets``)
  are written in the same transaction as the entries, so after a crash the log
  and the position agree: nothing lost, nothing doubled. Entries are also
  deduplicated on their deterministic ``entry_id``.
- **Append-only in the engine.** Triggers abort any UPDATE or DELETE of an
  entry or checkpoint, and any insert that is not the next seq. Someone with
  the file can drop them, so the hashes make tampering *evident*:
  ``verify_store`` recomputes the chain from the entry blobs alone.
- **Trails are queries.** Plain, indexed columns (ids and pseudonyms only,
  never personal data) answer "every event for this concern/disclosure/
  recipient" without a scan. They are derived from the entry and checked by
  the verifier.
- WAL lets auditors read (and verify) while the feed writes.

``AuditLog`` is the interface the rest of SAFER uses, so an RFC 9162 Merkle
log can replace this hash chain later; the leaf hashes are already RFC 9162's.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from schemas import AuditError, AuditEvent, ReasonCode, ValidationError

from ._format import (
    APPLICATION_ID,
    FORMAT_VERSION,
    GENESIS,
    INDEX_COLUMNS,
    chain_hash,
    index_values,
    leaf_hash,
)
from ._record import AuditRecord, as_event, format_time, parse_time, utc_millis
from ._verify import LogSummary, verify_store

__all__ = ["AppendResult", "AuditLog", "AuditStore", "Checkpoint"]

_APPEND_ONLY = "audit log is append-only"

# Only module constants are interpolated: no input reaches this SQL.
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS entries(
    seq INTEGER PRIMARY KEY,
    entry_id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    disclosure_id TEXT,
    concern_id TEXT,
    recipient TEXT,
    lscp TEXT,
    lawful_basis TEXT,
    at TEXT NOT NULL,
    subject_pseudonyms TEXT NOT NULL,
    entry BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    chain_hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_disclosure_id ON entries(disclosure_id);
CREATE INDEX IF NOT EXISTS entries_concern_id ON entries(concern_id);
CREATE INDEX IF NOT EXISTS entries_recipient ON entries(recipient);
CREATE INDEX IF NOT EXISTS entries_event ON entries(event);
CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS entries_contiguous_seq BEFORE INSERT ON entries
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM entries)
BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}: seq must be the next one'); END;

CREATE TABLE IF NOT EXISTS checkpoints(
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    chain_hash BLOB NOT NULL,
    at TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END;

CREATE TABLE IF NOT EXISTS feed_offsets(
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY(topic, partition)
);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {FORMAT_VERSION};
COMMIT;
"""  # noqa: S608

_INSERT = (
    f"INSERT INTO entries(seq, {', '.join(INDEX_COLUMNS)}, entry, leaf_hash, chain_hash) "  # noqa: S608
    f"VALUES ({', '.join('?' * (len(INDEX_COLUMNS) + 4))})"
)
_UPSERT_OFFSET = (
    "INSERT INTO feed_offsets(topic, partition, next_offset) VALUES (?, ?, ?) "
    "ON CONFLICT(topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
)
_PAGE = 1000
_LOOKUP_CHUNK = 500  # entry ids per duplicate lookup (well under SQLite's variable limit)


@dataclass(frozen=True)
class AppendResult:
    """The outcome for one record passed to ``append``.

    ``duplicate`` is True when an entry with the same ``entry_id`` was already
    in the log (or earlier in the same batch); ``seq`` is then that entry's seq.
    """

    entry_id: str
    seq: int
    duplicate: bool


@dataclass(frozen=True)
class Checkpoint:
    """The log's size and chain hash at a moment (signed in C2SP form later)."""

    size: int
    chain_hash: bytes
    at: datetime

    def __str__(self) -> str:
        return f"size {self.size}, chain head {self.chain_hash.hex()}, at {format_time(self.at)}"


@runtime_checkable
class AuditLog(Protocol):
    """What SAFER needs from an audit log; a Merkle-tree log can implement it too."""

    def append(
        self,
        records: Sequence[AuditRecord],
        *,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> list[AppendResult]: ...

    def records(
        self,
        *,
        event: AuditEvent | str | None = None,
        concern_id: str | None = None,
        disclosure_id: str | None = None,
        recipient: str | None = None,
        subject: str | None = None,
    ) -> Iterator[AuditRecord]: ...

    def count(self) -> int: ...

    def head(self) -> tuple[int, bytes]: ...

    def verify(self) -> LogSummary: ...


def _storage_error(action: str, exc: sqlite3.Error) -> AuditError:
    if isinstance(exc, sqlite3.IntegrityError):
        return AuditError(
            f"audit store refused to {action}: {exc}",
            code=ReasonCode.AUDIT_TAMPERED,
            retriable=False,
            hint="the store holds rows this build did not write; run `safer audit verify`",
        )
    busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
    return AuditError(
        f"audit store could not {action}: {exc}",
        code=ReasonCode.PROCESSING_ERROR,
        retriable=busy,
        hint="another process holds the audit store; retry"
        if busy
        else "check the disk and permissions of the data directory",
    )


def _check_offsets(offsets: Mapping[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    rows = []
    for key, value in offsets.items():
        if (
            not isinstance(key, tuple)
            or len(key) != 2
            or not isinstance(key[0], str)
            or not isinstance(key[1], int)
            or isinstance(key[1], bool)
            or not isinstance(value, int)
            or isinstance(value, bool)
            or key[1] < 0
            or value < 0
        ):
            raise ValidationError(
                "offsets must map (topic, partition) to a non-negative next offset",
                fields=("offsets",),
            )
        rows.append((key[0], key[1], value))
    return rows


class AuditStore:
    """Append-only audit log in one SQLite (WAL) file. Synchronous; thread-safe.

    Use as a context manager, or call ``close()``.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(
                f"cannot create the directory of the audit store {self._path}: {exc.strerror}",
                code=ReasonCode.CONFIG_INVALID,
                hint="check --data-dir and its permissions",
            ) from None
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _storage_error("open", exc) from None
        try:
            self._initialise(self._conn)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _initialise(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError:
            raise AuditError(
                f"{self._path} is not a SAFER audit store (not an SQLite database)",
                code=ReasonCode.CONFIG_INVALID,
                hint="point at a SAFER data directory, or move the file away",
            ) from None
        fresh = application_id == 0 and tables == 0
        if not fresh and application_id != APPLICATION_ID:
            raise AuditError(
                f"{self._path} is not a SAFER audit store",
                code=ReasonCode.CONFIG_INVALID,
                hint="point at a SAFER data directory, or move the file away",
            )
        if version > FORMAT_VERSION:
            raise AuditError(
                f"{self._path} uses audit store format v{version}; "
                f"this build writes v{FORMAT_VERSION}",
                code=ReasonCode.CONFIG_INVALID,
                hint="upgrade SAFER Exchange before writing to this store",
            )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise AuditError(
                    f"audit store {self._path} cannot use WAL mode (got {mode})",
                    code=ReasonCode.CONFIG_INVALID,
                    hint="put the data directory on a local filesystem",
                )
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _storage_error("initialise", exc) from None

    # -- plumbing -------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AuditError(
                "audit store is closed",
                code=ReasonCode.PROCESSING_ERROR,
                hint="open a new AuditStore",
            )
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _head(conn: sqlite3.Connection) -> tuple[int, bytes]:
        row = conn.execute(
            "SELECT seq, chain_hash FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return 0, GENESIS
        return int(row[0]), bytes(row[1])

    # -- writing --------------------------------------------------------------

    def append(
        self,
        records: Sequence[AuditRecord],
        *,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> list[AppendResult]:
        """Append a batch in one durable transaction (one fsync).

        Each record gets the next seq, unless an entry with its ``entry_id`` is
        already in the log (or earlier in this batch): then it is skipped and
        its result says ``duplicate`` with the existing seq. Any ``seq`` a record
        carries is replaced. ``offsets`` ((topic, partition) -> next offset) are
        stored in the same transaction. All or nothing: on error nothing is
        written and ``AuditError`` is raised.
        """
        batch = list(records)
        for record in batch:
            if not isinstance(record, AuditRecord):
                raise ValidationError("append takes AuditRecord instances", fields=("records",))
        offset_rows = _check_offsets(offsets or {})
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    results = self._append_locked(conn, batch)
                    if offset_rows:
                        conn.executemany(_UPSERT_OFFSET, offset_rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _storage_error("append", exc) from None
        return results

    @staticmethod
    def _append_locked(conn: sqlite3.Connection, batch: list[AuditRecord]) -> list[AppendResult]:
        size, previous = AuditStore._head(conn)
        known: dict[str, int] = {}
        ids = list(dict.fromkeys(r.entry_id for r in batch))
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT entry_id, seq FROM entries WHERE entry_id IN ({marks})"  # noqa: S608
            known.update(conn.execute(query, chunk).fetchall())
        results: list[AppendResult] = []
        rows: list[tuple[object, ...]] = []
        for record in batch:
            existing = known.get(record.entry_id)
            if existing is not None:
                results.append(AppendResult(record.entry_id, existing, True))
                continue
            size += 1
            entry = record.entry_bytes(size)
            leaf = leaf_hash(entry)
            previous = chain_hash(previous, leaf)
            rows.append((size, *index_values(record), entry, leaf, previous))
            known[record.entry_id] = size
            results.append(AppendResult(record.entry_id, size, False))
        if rows:
            conn.executemany(_INSERT, rows)
        return results

    def checkpoint(self, *, at: datetime | None = None) -> Checkpoint:
        """Record the current (size, chain hash) in the append-only checkpoints table."""
        moment = utc_millis("at", at or datetime.now(UTC))
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    size, head = self._head(conn)
                    conn.execute(
                        "INSERT INTO checkpoints(size, chain_hash, at) VALUES (?, ?, ?)",
                        (size, head, format_time(moment)),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _storage_error("write a checkpoint", exc) from None
        return Checkpoint(size, head, moment)

    # -- reading --------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._query("SELECT size, chain_hash, at FROM checkpoints ORDER BY id")
        return [Checkpoint(int(s), bytes(h), parse_time(str(a))) for s, h, a in rows]

    def feed_offsets(self) -> dict[tuple[str, int], int]:
        """Stored feed positions: (topic, partition) -> next offset to read."""
        rows = self._query("SELECT topic, partition, next_offset FROM feed_offsets")
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def count(self) -> int:
        """Number of entries (seq is contiguous from 1, so the last seq)."""
        return self.head()[0]

    def head(self) -> tuple[int, bytes]:
        """(size, chain hash after the last entry); (0, 32 zero bytes) when empty."""
        with self._lock:
            conn = self._connection()
            try:
                return self._head(conn)
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def get(self, seq: int) -> AuditRecord | None:
        """The entry with this seq, or None."""
        rows = self._query("SELECT entry FROM entries WHERE seq = ?", (seq,))
        return AuditRecord.from_canonical(bytes(rows[0][0])) if rows else None

    def has_entry(self, entry_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM entries WHERE entry_id = ?", (entry_id,)))

    def records(
        self,
        *,
        event: AuditEvent | str | None = None,
        concern_id: str | None = None,
        disclosure_id: str | None = None,
        recipient: str | None = None,
        subject: str | None = None,
    ) -> Iterator[AuditRecord]:
        """Entries matching every given filter, in seq order.

        ``subject`` is a subject pseudonym (for subject access requests).
        Pages through the log, so appends may continue while this is consumed.
        """
        where = ["seq > ?"]
        params: list[object] = []
        if event is not None:
            where.append("event = ?")
            params.append(as_event(event).value)
        for column, value in (
            ("concern_id", concern_id),
            ("disclosure_id", disclosure_id),
            ("recipient", recipient),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if subject is not None:
            where.append(
                "EXISTS (SELECT 1 FROM json_each(entries.subject_pseudonyms) WHERE value = ?)"
            )
            params.append(subject)
        sql = (
            f"SELECT seq, entry FROM entries WHERE {' AND '.join(where)} "  # noqa: S608
            f"ORDER BY seq LIMIT {_PAGE}"
        )
        after = 0
        while True:
            rows = self._query(sql, [after, *params])
            for _, entry in rows:
                yield AuditRecord.from_canonical(bytes(entry))
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    def events_for_disclosures(self) -> dict[str, set[str]]:
        """disclosure_id -> the events logged for it (for accounting)."""
        out: dict[str, set[str]] = {}
        rows = self._query(
            "SELECT DISTINCT disclosure_id, event FROM entries WHERE disclosure_id IS NOT NULL"
        )
        for disclosure_id, event in rows:
            out.setdefault(str(disclosure_id), set()).add(str(event))
        return out

    def verify(self) -> LogSummary:
        """Verify the file from scratch (read-only); see ``verify_store``."""
        return verify_store(self._path)
