"""The durable, append-only audit store: an RFC 9162 Merkle log in segment files and SQLite.

Why segment files for the entries and SQLite for the rest (the full argument,
with measurements, is in docs/AUDIT_LOG.md):

- **Durable group commit.** ``append`` takes a whole batch: its entries are
  written to the end of the current segment file with one ``pwrite`` and made
  durable with one ``fdatasync``; then one SQLite transaction (WAL,
  ``synchronous=FULL``: one more fsync) commits the batch's row, its leaf
  hashes and the feed's positions. The feed hands over one fetched batch at a
  time, so a batch is bounded by the fetch size and by how long the broker
  took to return it.
- **Every byte written once.** Through SQLite an entry is written twice (WAL,
  then the checkpoint into the database) and costs a row insert; appending it
  to a file costs a memory copy. That halved the time per append.
- **Exactly-once from Kafka.** The feed's positions (``feed_offsets``) are
  committed in the same transaction as the batch they produced; a batch whose
  transaction never committed is invisible (no row points at its bytes) and
  the next writer cuts it off. Entries are also deduplicated on their
  deterministic ``entry_id`` (replays from the router or a recipient).
- **Append-only.** Triggers refuse UPDATE and DELETE and any row that does not
  extend the log; segments are only ever appended to. Someone with the files
  can still edit them, so the hashes make tampering *evident*: see
  ``verify_store``.
- **Queries** use an index derived in bulk (``entry_columns`` and ``ix_*``),
  brought up to date before a read needs it; entries not yet indexed are
  read and filtered directly, so answers are always complete.
- WAL lets auditors read, prove and verify while the feed writes.

The writer keeps in memory the tree's frontier (O(log n) hashes, to compute
roots), the end of the current segment, and a map from a 64-bit fingerprint
of each entry id to its seq (about 100 bytes per entry), loaded on the first
append. A full tree for proofs (64 bytes per entry) is built only when a
proof is asked for.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

import orjson

from schemas import AuditError, AuditEvent, ReasonCode, ValidationError

from ._bundle import make_bundle
from ._format import (
    APPLICATION_ID,
    FORMAT_VERSION,
    INDEX_COLUMNS,
    INDEX_TABLES,
    SCHEMA,
    SEGMENT_LIMIT,
    pack_ends,
    segments_dir,
    unpack_ends,
)
from ._merkle import HASH_SIZE, Frontier, MerkleTree
from ._note import DEFAULT_ORIGIN, LogKey, LogSigner, format_body, parse_note
from ._record import AuditRecord, as_event, format_time, parse_time, utc_millis
from ._segments import SegmentAppender, SegmentReader
from ._verify import LogSummary, verify_store
from ._witness import make_consistency_bundle

__all__ = ["AppendResult", "AuditLog", "AuditStore", "Checkpoint"]

_INSERT_COLUMNS = (
    f"INSERT INTO entry_columns(seq, {', '.join(INDEX_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * (len(INDEX_COLUMNS) + 1))})"
)
_UPSERT_OFFSET = (
    "INSERT INTO feed_offsets(topic, partition, next_offset) VALUES (?, ?, ?) "
    "ON CONFLICT(topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
)
_LAST_TREE_ROW = (
    "SELECT first_seq, length(leaves) / 32, frontier FROM tree ORDER BY first_seq DESC LIMIT 1"
)
_LAST_BATCH = (
    "SELECT first_seq + length(ends) / 8 - 1, segment, offset, substr(ends, -8) "
    "FROM batches ORDER BY first_seq DESC LIMIT 1"
)
_BATCH_OF = (
    "SELECT first_seq, segment, offset, ends FROM batches WHERE first_seq <= ? "
    "ORDER BY first_seq DESC LIMIT 1"
)
_tuple_new = tuple.__new__
#: Bytes of a batch handed to the segment writer thread at a time.
_CHUNK = 256 * 1024
_PAGE = 1000
_IN_CHUNK = 500  # seqs per IN (...) (well under SQLite's variable limit)
_VERIFY_HINT = "run `safer audit verify` and keep the store files as evidence"


class AppendResult(NamedTuple):
    """The outcome for one record passed to ``append`` (immutable).

    ``duplicate`` is True when an entry with the same ``entry_id`` was already
    in the log (or earlier in the same batch); ``seq`` is then that entry's seq.
    A named tuple, not a dataclass: one is made per appended record.
    """

    entry_id: str
    seq: int
    duplicate: bool


@dataclass(frozen=True)
class Checkpoint:
    """A stored checkpoint: the log's size and RFC 9162 root, as a C2SP signed note.

    ``note`` is the checkpoint text; it has no signature line when the store
    had no signing key (such a checkpoint still anchors the size locally).
    """

    size: int
    root: bytes
    at: datetime
    note: str = ""
    id: int = 0

    @property
    def signed(self) -> bool:
        try:
            return bool(parse_note(self.note).signatures)
        except AuditError:
            return False

    def __str__(self) -> str:
        signed = "signed" if self.signed else "unsigned"
        return (
            f"checkpoint {self.id}: size {self.size}, root {self.root.hex()}, "
            f"at {format_time(self.at)}, {signed}"
        )


@runtime_checkable
class AuditLog(Protocol):
    """What SAFER needs from an audit log."""

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


def _inconsistent(message: str) -> AuditError:
    return AuditError(
        f"audit store is inconsistent: {message}",
        code=ReasonCode.AUDIT_TAMPERED,
        retriable=False,
        hint=_VERIFY_HINT,
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


def _check_records(records: Sequence[AuditRecord]) -> list[AuditRecord]:
    batch = list(records)
    for record in batch:
        if not isinstance(record, AuditRecord):
            raise ValidationError("append takes AuditRecord instances", fields=("records",))
    return batch


class _Staged(NamedTuple):
    """A batch ready to write: what ``_prepare`` computed, before the files or memory move."""

    results: list[AppendResult]
    fresh: dict[str, int]  # entry_id -> seq of the new entries
    rest: bytearray  # the last new entries, not yet handed to the segment appender
    ends: array[int]  # end of each new entry in the batch's bytes, just after its newline
    leaves: list[bytes]
    first_seq: int
    frontier: Frontier  # after the batch


class _Writer:
    """What the appending process keeps in memory: size, frontier, entry-id map, segment end."""

    __slots__ = ("appender", "collisions", "frontier", "ids", "ids_loaded", "size")

    def __init__(self, size: int, frontier: Frontier) -> None:
        self.size = size
        self.frontier = frontier
        self.ids_loaded = False
        self.ids: dict[int, int] = {}  # fingerprint(entry_id) -> seq
        self.collisions: dict[str, int] = {}  # entry_id -> seq, for fingerprint clashes
        self.appender: SegmentAppender | None = None

    def close(self) -> None:
        if self.appender is not None:
            self.appender.close()
            self.appender = None


class AuditStore:
    """Append-only RFC 9162 Merkle log: SQLite (WAL) file ``path`` and its segment files.

    The segments live in ``path`` + ``-segments/``; keep the two together.
    ``signer`` signs checkpoints (C2SP signed notes); without one, checkpoints
    are written unsigned. Synchronous and thread-safe. Use as a context
    manager, or call ``close()``.
    """

    #: Entries indexed per transaction when the query index catches up.
    index_chunk: ClassVar[int] = 50_000
    #: A new segment file is started once the current one holds this many bytes.
    segment_limit: ClassVar[int] = SEGMENT_LIMIT

    def __init__(
        self,
        path: Path,
        *,
        signer: LogSigner | None = None,
        origin: str = DEFAULT_ORIGIN,
    ) -> None:
        self._path = Path(path)
        self._signer = signer
        self._origin = origin
        self._lock = threading.RLock()
        self._writer: _Writer | None = None
        self._tree: MerkleTree | None = None
        self._segments = SegmentReader(segments_dir(self._path))
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

    @staticmethod
    def _fingerprint(entry_id: str) -> int:
        """64-bit key of an entry id in the in-memory dedup map (a test forces clashes)."""
        return hash(entry_id)

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
        if not fresh and version != FORMAT_VERSION:
            newer = version > FORMAT_VERSION
            raise AuditError(
                f"{self._path} uses audit store format v{version}; "
                f"this build reads and writes v{FORMAT_VERSION}",
                code=ReasonCode.CONFIG_INVALID,
                hint="upgrade SAFER Exchange before writing to this store"
                if newer
                else "verify it with the SAFER Exchange version that wrote it, then move it "
                "away and let the feed rebuild the log from Kafka (hips.audit keeps every record)",
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
            conn.execute("PRAGMA cache_size = -65536")
            conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _storage_error("initialise", exc) from None

    # -- plumbing -------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def key(self) -> LogKey | None:
        """The public half of the signing key, if the store has one."""
        return None if self._signer is None else self._signer.key

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AuditError(
                "audit store is closed",
                code=ReasonCode.PROCESSING_ERROR,
                hint="open a new AuditStore",
            )
        return self._conn

    @property
    def segments(self) -> Path:
        """The folder of segment files that hold the entries."""
        return self._segments.folder

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._drop_writer()
            self._segments.close()
            self._tree = None

    def _drop_writer(self) -> None:
        """Forget the writer's memory; the next append reloads it from the files."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def _transaction(self, action: str, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``body`` in one BEGIN IMMEDIATE … COMMIT; roll back on any error."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _storage_error(action, exc) from None
            return result

    @staticmethod
    def _size(conn: sqlite3.Connection) -> int:
        row = conn.execute(_LAST_BATCH).fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _segment_end(conn: sqlite3.Connection) -> tuple[int, int]:
        """(segment, end): where the next batch's bytes go."""
        row = conn.execute(_LAST_BATCH).fetchone()
        if row is None:
            return 1, 0
        _, segment, offset, last = row
        return int(segment), int(offset) + int(unpack_ends(bytes(last))[0])

    @staticmethod
    def _stored_frontier(conn: sqlite3.Connection, size: int) -> Frontier:
        row = conn.execute(_LAST_TREE_ROW).fetchone()
        if row is None:
            if size:
                raise _inconsistent(f"{size} entries but no tree rows")
            return Frontier()
        end = int(row[0]) + int(row[1]) - 1
        if end != size:
            raise _inconsistent(f"{size} entries but the tree rows end at entry {end}")
        return Frontier.from_bytes(end, bytes(row[2]))

    # -- the writer's memory --------------------------------------------------

    def _writer_for(self, conn: sqlite3.Connection, *, ids: bool = True) -> _Writer:
        """The in-memory writer state, loaded or brought up to date (inside a transaction).

        The frontier is recomputed from the stored leaf hashes and must equal the
        stored one, so the store never signs a root its own rows contradict. The
        entry-id map is loaded only when ``ids`` is asked for (appending).
        """
        size = self._size(conn)
        writer = self._writer
        if writer is not None and writer.size > size:
            self._drop_writer()
            raise _inconsistent(
                f"the log has {size} entries but this process wrote {writer.size} "
                "(entries were removed underneath it)"
            )
        if writer is None:
            writer = _Writer(0, Frontier())
        if writer.size < size:
            frontier = writer.frontier.copy()
            for (blob,) in conn.execute(
                "SELECT leaves FROM tree WHERE first_seq > ? ORDER BY first_seq", (writer.size,)
            ):
                data = bytes(blob)
                frontier.extend(data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))
            if frontier != self._stored_frontier(conn, size):
                self._drop_writer()
                raise _inconsistent("the stored tree state does not match the stored leaf hashes")
            if writer.ids_loaded:
                self._load_ids(conn, writer, after=writer.size)
            writer.size = size
            writer.frontier = frontier
        if ids and not writer.ids_loaded:
            self._load_ids(conn, writer, after=0)
            writer.ids_loaded = True
        self._writer = writer
        return writer

    def _appender_for(self, conn: sqlite3.Connection, writer: _Writer) -> SegmentAppender:
        """The segment appender, at the committed end (inside the write transaction)."""
        segment, end = self._segment_end(conn)
        appender = writer.appender
        if appender is None or (appender.segment, appender.end) != (segment, end):
            writer.close()
            # Cuts off bytes past the committed end: a batch whose commit never happened.
            appender = writer.appender = SegmentAppender(self._segments.folder, segment, end)
        return appender

    def _load_ids(self, conn: sqlite3.Connection, writer: _Writer, *, after: int) -> None:
        fingerprint = self._fingerprint
        ids = writer.ids
        cursor = conn.execute(
            "SELECT first_seq, entry_ids FROM batches WHERE first_seq > ? ORDER BY first_seq",
            (after,),
        )
        while rows := cursor.fetchmany(1000):
            for first, text in rows:
                try:
                    entry_ids = orjson.loads(text)
                except orjson.JSONDecodeError:
                    entry_ids = None
                if not isinstance(entry_ids, list):
                    raise _inconsistent(f"the batch at entry {first} has a malformed entry id list")
                for seq, entry_id in enumerate(entry_ids, first):
                    key = fingerprint(entry_id)
                    if key in ids:
                        self._remember_clash(conn, writer, entry_id, key, seq)
                    else:
                        ids[key] = seq

    def _entry_id_at(self, conn: sqlite3.Connection, seq: int) -> str | None:
        """The entry id written in entry ``seq`` itself (not the batch's list of ids)."""
        for _, entry in self._read(conn, [seq]):
            entry_id = orjson.loads(entry).get("entry_id")
            return entry_id if isinstance(entry_id, str) else None
        return None

    def _remember_clash(
        self, conn: sqlite3.Connection, writer: _Writer, entry_id: str, key: int, seq: int
    ) -> None:
        if self._entry_id_at(conn, writer.ids[key]) != entry_id:
            writer.collisions.setdefault(entry_id, seq)

    def _existing(self, conn: sqlite3.Connection, writer: _Writer, entry_id: str) -> int | None:
        seq = writer.ids.get(self._fingerprint(entry_id))
        if seq is not None and self._entry_id_at(conn, seq) == entry_id:
            return seq
        return writer.collisions.get(entry_id) if writer.collisions else None

    # -- writing --------------------------------------------------------------

    def append(
        self,
        records: Sequence[AuditRecord],
        *,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> list[AppendResult]:
        """Append a batch durably: one segment write and fdatasync, one transaction.

        Each record gets the next seq, unless an entry with its ``entry_id`` is
        already in the log (or earlier in this batch): then it is skipped and
        its result says ``duplicate`` with the existing seq. Any ``seq`` a record
        carries is replaced. ``offsets`` ((topic, partition) -> next offset) are
        stored in the same transaction. All or nothing: on error nothing is
        committed and ``AuditError`` is raised.
        """
        batch = _check_records(records)
        offset_rows = _check_offsets(offsets or {})
        prepared: list[tuple[_Writer, _Staged]] = []

        def write(conn: sqlite3.Connection) -> None:
            writer = self._writer_for(conn)
            appender = self._appender_for(conn, writer)
            staged = self._prepare(conn, writer, appender, batch)
            self._write(conn, appender, staged, offset_rows)
            prepared.append((writer, staged))

        with self._lock:  # the files and this process's memory move together
            try:
                self._transaction("append", write)
            except BaseException:
                self._drop_writer()  # reload from the files on the next append
                raise
            writer, staged = prepared[0]
            self._commit_memory(writer, staged)
        return staged.results

    def _prepare(
        self,
        conn: sqlite3.Connection,
        writer: _Writer,
        appender: SegmentAppender,
        batch: list[AuditRecord],
    ) -> _Staged:
        """Dedup, encode and hash a batch, streaming full chunks past the segment's end.

        Nothing committed changes: bytes past the committed end stay invisible
        until the batch's rows commit, and the writer's memory moves only then.
        This loop is what bounds the append rate (docs/AUDIT_LOG.md), so each
        step is spelled out rather than called. Each entry is copied into a
        chunk buffer and dropped at once; keeping a batch's entries alive as
        separate objects measured several times slower (fresh memory faults in).
        """
        results: list[AppendResult] = []
        leaves: list[bytes] = []
        ends: array[int] = array("Q")
        fresh: dict[str, int] = {}
        ids = writer.ids
        fingerprint = self._fingerprint
        sha = hashlib.sha256
        new = _tuple_new
        data = bytearray()
        streamed = 0  # bytes of this batch already handed to the appender
        limit = self.segment_limit
        seq = writer.size
        for record in batch:
            entry_id = record.entry_id
            existing = fresh.get(entry_id)
            if existing is None and (fingerprint(entry_id) in ids or writer.collisions):
                existing = self._existing(conn, writer, entry_id)
            if existing is not None:
                results.append(new(AppendResult, (entry_id, existing, True)))
                continue
            seq += 1
            fresh[entry_id] = seq
            entry = record._encode(seq)
            data += entry
            data += b"\n"
            ends.append(streamed + len(data))
            if len(data) >= _CHUNK:
                appender.stream(data, limit)
                streamed += len(data)
                data = bytearray()
            leaves.append(sha(b"\x00" + entry).digest())
            results.append(new(AppendResult, (entry_id, seq, False)))
        frontier = writer.frontier
        if leaves:
            frontier = frontier.copy()
            frontier.extend(leaves)
        return _Staged(results, fresh, data, ends, leaves, writer.size + 1, frontier)

    def _write(
        self,
        conn: sqlite3.Connection,
        appender: SegmentAppender,
        staged: _Staged,
        offset_rows: list[tuple[str, int, int]],
    ) -> None:
        """Finish the batch's segment bytes, then write its rows (inside a transaction).

        The segment is durable before the rows are committed, so a committed
        row never points at bytes a crash could lose.
        """
        if staged.leaves:
            segment, offset = appender.finish(staged.rest, self.segment_limit)
            conn.execute(
                "INSERT INTO batches(first_seq, segment, offset, ends, entry_ids) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    staged.first_seq,
                    segment,
                    offset,
                    pack_ends(staged.ends),
                    orjson.dumps(list(staged.fresh)).decode("utf-8"),
                ),
            )
            conn.execute(
                "INSERT INTO tree(first_seq, leaves, frontier) VALUES (?, ?, ?)",
                (staged.first_seq, b"".join(staged.leaves), staged.frontier.to_bytes()),
            )
        if offset_rows:
            conn.executemany(_UPSERT_OFFSET, offset_rows)

    def _commit_memory(self, writer: _Writer, staged: _Staged) -> None:
        fresh = staged.fresh
        if not fresh:
            return
        ids = writer.ids
        fingerprint = self._fingerprint
        for entry_id, seq in fresh.items():
            key = fingerprint(entry_id)
            if key in ids:
                writer.collisions[entry_id] = seq
            else:
                ids[key] = seq
        writer.size += len(fresh)
        writer.frontier = staged.frontier
        if writer.appender is not None:
            writer.appender.committed()
        tree = self._tree
        if tree is not None and tree.size == writer.size - len(fresh):
            tree.extend_bytes(b"".join(staged.leaves))

    def checkpoint(
        self, *, at: datetime | None = None, signer: LogSigner | None = None
    ) -> Checkpoint:
        """Write a checkpoint of the current size and root, signed if there is a key.

        ``signer`` overrides the store's key for this checkpoint. The stored row
        also keeps the frontier and the leaf hashes added since the previous
        checkpoint, which the signature covers through the root.
        """
        moment = utc_millis("at", at or datetime.now(UTC))
        key = signer or self._signer

        def write(conn: sqlite3.Connection) -> Checkpoint:
            writer = self._writer_for(conn, ids=False)
            size, frontier = writer.size, writer.frontier
            root = frontier.root()
            previous = conn.execute(
                "SELECT size FROM checkpoints ORDER BY id DESC LIMIT 1"
            ).fetchone()
            since = 0 if previous is None else int(previous[0])
            delta = self._leaves_between(conn, since, size)
            body = format_body(self._origin, size, root)
            note = key.sign(body) if key is not None else f"{body}\n"
            cursor = conn.execute(
                "INSERT INTO checkpoints(size, root, note, frontier, leaves, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (size, root, note, frontier.to_bytes(), delta, format_time(moment)),
            )
            return Checkpoint(size, root, moment, note, int(cursor.lastrowid or 0))

        result: Checkpoint = self._transaction("write a checkpoint", write)
        return result

    @staticmethod
    def _leaves_between(conn: sqlite3.Connection, after: int, upto: int) -> bytes:
        """Concatenated stored leaf hashes of entries ``after+1 .. upto``."""
        if upto <= after:
            return b""
        rows = conn.execute(
            "SELECT first_seq, leaves FROM tree WHERE first_seq <= ? "
            "AND first_seq + length(leaves) / 32 > ? ORDER BY first_seq",
            (upto, after + 1),
        ).fetchall()
        if not rows:
            raise _inconsistent(f"no tree rows for entries {after + 1}..{upto}")
        first = int(rows[0][0])
        data = b"".join(bytes(r[1]) for r in rows)
        start = (after + 1 - first) * HASH_SIZE
        out = data[start : start + (upto - after) * HASH_SIZE]
        if len(out) != (upto - after) * HASH_SIZE:
            raise _inconsistent(f"tree rows do not cover entries {after + 1}..{upto}")
        return out

    # -- the tree and proofs --------------------------------------------------

    def tree(self) -> MerkleTree:
        """The full Merkle tree over every entry (built on first use, then kept current)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")
                try:
                    size = self._size(conn)
                    tree = self._tree
                    if tree is None or tree.size > size:
                        tree = MerkleTree()
                    if tree.size < size:
                        rows = conn.execute(
                            "SELECT first_seq, leaves FROM tree WHERE first_seq > ? "
                            "ORDER BY first_seq",
                            (tree.size,),
                        ).fetchall()
                        if rows and int(rows[0][0]) != tree.size + 1:
                            tree = MerkleTree()
                            rows = conn.execute(
                                "SELECT first_seq, leaves FROM tree ORDER BY first_seq"
                            ).fetchall()
                        tree.extend_bytes(b"".join(bytes(r[1]) for r in rows))
                    if tree.size != size:
                        raise _inconsistent(
                            f"{size} entries but the tree rows hold {tree.size} leaves"
                        )
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _storage_error("read the tree", exc) from None
            self._tree = tree
            return tree

    def _tree_for(self, size: int | None) -> MerkleTree:
        """The cached tree when it already covers ``size``, else a current one."""
        cached = self._tree
        if size is not None and cached is not None and 0 <= size <= cached.size:
            return cached  # the log is append-only: the first ``size`` leaves never change
        return self.tree()

    def root(self, size: int | None = None) -> bytes:
        """The RFC 9162 root of the first ``size`` entries (default: all)."""
        if size is None:
            return self.head()[1]
        with self._lock:
            return self._tree_for(size).root(size)

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``seq`` in the tree of ``size`` entries."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValidationError("seq must be a positive integer", fields=("seq",))
        with self._lock:
            return self._tree_for(size).inclusion_proof(seq - 1, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from the tree of ``old_size`` to ``new_size`` entries."""
        with self._lock:
            return self._tree_for(new_size).consistency_proof(old_size, new_size)

    def proof_bundle(self, seq: int, *, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
        """Entry ``seq``, its inclusion proof and a signed checkpoint, as one JSON object.

        Uses ``checkpoint``, else the newest signed checkpoint that covers the
        entry; when there is none and the store has a key, signs a new one.
        See ``verify_bundle`` for checking it offline.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValidationError("seq must be a positive integer", fields=("seq",))
        entry = self.entry_bytes(seq)
        if entry is None:
            raise AuditError(
                f"the log has no entry {seq} (it has {self.count()})",
                code=ReasonCode.PROCESSING_ERROR,
                hint="`safer audit verify` shows the log's size",
            )
        chosen = checkpoint or self.latest_checkpoint(signed=True, covering=seq)
        if chosen is None:
            if self._signer is None:
                raise AuditError(
                    f"no signed checkpoint covers entry {seq}",
                    code=ReasonCode.KEY_MISSING,
                    hint="write one with `safer audit checkpoint` (it needs the log key)",
                )
            chosen = self.checkpoint()
        if chosen.size < seq:
            raise AuditError(
                f"checkpoint of size {chosen.size} does not cover entry {seq}",
                code=ReasonCode.PROCESSING_ERROR,
            )
        proof = self.inclusion_proof(seq, chosen.size)
        return make_bundle(
            seq=seq, entry=entry, tree_size=chosen.size, proof=proof, checkpoint=chosen.note
        )

    def consistency_bundle(self, old_size: int) -> dict[str, Any]:
        """A consistency bundle from ``old_size`` to the newest signed checkpoint.

        Signs a new checkpoint first when the store has a key and the log grew
        since the last one. See ``verify_consistency_bundle``.
        """
        if isinstance(old_size, bool) or not isinstance(old_size, int) or old_size < 0:
            raise ValidationError("the old size must be 0 or more", fields=("old_size",))
        chosen = self.latest_checkpoint(signed=True)
        if self._signer is not None and (chosen is None or chosen.size < self.count()):
            chosen = self.checkpoint()
        if chosen is None:
            raise AuditError(
                "no signed checkpoint to prove consistency to",
                code=ReasonCode.KEY_MISSING,
                hint="write one with `safer audit checkpoint` (it needs the log key)",
            )
        if old_size > chosen.size:
            raise AuditError(
                f"the log's newest signed checkpoint has {chosen.size} entries, fewer than "
                f"{old_size}",
                code=ReasonCode.PROCESSING_ERROR,
                hint="give a size the log has reached (`safer audit verify` shows it)",
            )
        old_note = next(
            (c.note for c in reversed(self.checkpoints()) if c.size == old_size and c.signed),
            None,
        )
        return make_consistency_bundle(
            old_size=old_size,
            old_root=self.root(old_size),
            old_checkpoint=old_note,
            new_size=chosen.size,
            proof=self.consistency_proof(old_size, chosen.size),
            checkpoint=chosen.note,
        )

    # -- reading --------------------------------------------------------------

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint, oldest first."""
        rows = self._query("SELECT id, size, root, note, at FROM checkpoints ORDER BY id")
        return [
            Checkpoint(int(s), bytes(r), parse_time(str(a)), str(n), int(i))
            for i, s, r, n, a in rows
        ]

    def latest_checkpoint(self, *, signed: bool = False, covering: int = 0) -> Checkpoint | None:
        """The newest checkpoint of at least ``covering`` entries (signed ones only if asked)."""
        after = None
        while True:
            rows = self._query(
                "SELECT id, size, root, note, at FROM checkpoints "
                "WHERE size >= ? AND id < ? ORDER BY id DESC LIMIT 100",
                (covering, after if after is not None else 1 << 62),
            )
            for i, s, r, n, a in rows:
                checkpoint = Checkpoint(int(s), bytes(r), parse_time(str(a)), str(n), int(i))
                if checkpoint.signed or not signed:
                    return checkpoint
            if len(rows) < 100:
                return None
            after = int(rows[-1][0])

    def feed_offsets(self) -> dict[tuple[str, int], int]:
        """Stored feed positions: (topic, partition) -> next offset to read."""
        rows = self._query("SELECT topic, partition, next_offset FROM feed_offsets")
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def count(self) -> int:
        """Number of entries (seq is contiguous from 1, so the last seq)."""
        with self._lock:
            try:
                return self._size(self._connection())
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def head(self) -> tuple[int, bytes]:
        """(size, RFC 9162 root); (0, SHA-256 of nothing) when empty."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")
                try:
                    size = self._size(conn)
                    return size, self._stored_frontier(conn, size).root()
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def _read(self, conn: sqlite3.Connection, seqs: Iterable[int]) -> Iterator[tuple[int, bytes]]:
        """(seq, entry bytes) for ascending seqs of committed entries (caller holds the lock)."""
        first = count = segment = offset = 0
        ends: array[int] = array("Q")
        for seq in seqs:
            if not first <= seq < first + count:
                row = conn.execute(_BATCH_OF, (seq,)).fetchone()
                try:
                    ends = unpack_ends(bytes(row[3])) if row is not None else array("Q")
                except ValueError:
                    raise _inconsistent(f"the batch holding entry {seq} is malformed") from None
                if row is None or seq >= int(row[0]) + len(ends):
                    raise _inconsistent(f"no batch holds entry {seq}")
                first, segment, offset, count = int(row[0]), int(row[1]), int(row[2]), len(ends)
            index = seq - first
            start = ends[index - 1] if index else 0
            data = self._segments.read(segment, offset + start, ends[index] - start)
            if len(data) != ends[index] - start or data[-1:] != b"\n":
                raise _inconsistent(
                    f"entry {seq} is not where its batch says (segment {segment} altered or cut)"
                )
            yield seq, data[:-1]

    def _read_page(self, seqs: Sequence[int]) -> list[bytes]:
        with self._lock:
            conn = self._connection()
            try:
                return [entry for _, entry in self._read(conn, seqs)]
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def get(self, seq: int) -> AuditRecord | None:
        """The entry with this seq, or None."""
        entry = self.entry_bytes(seq)
        return None if entry is None else AuditRecord.from_log(entry)

    def entry_bytes(self, seq: int) -> bytes | None:
        """The exact bytes of entry ``seq`` (what the leaf hash covers), or None."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            return None
        with self._lock:
            conn = self._connection()
            try:
                if seq > self._size(conn):
                    return None
                return next(self._read(conn, [seq]))[1]
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def has_entry(self, entry_id: str) -> bool:
        with self._lock:
            if self._writer is not None:
                conn = self._connection()
                try:
                    conn.execute("BEGIN")
                    try:
                        writer = self._writer
                        if writer.size == self._size(conn):
                            return self._existing(conn, writer, entry_id) is not None
                    finally:
                        conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    raise _storage_error("read", exc) from None
            indexed = self._catch_up()
            if self._query(
                "SELECT 1 FROM ix_entry WHERE entry_id = ? AND seq <= ? LIMIT 1",
                (entry_id, indexed),
            ):
                return True
            return any(entry_id == record.entry_id for record in self._tail(indexed))

    def _catch_up(self) -> int:
        """Bring the query index up to the log; returns the indexed size.

        Best effort: on a read-only or busy file the index stays behind and
        queries read the unindexed tail instead, so results are always complete.
        """
        with self._lock:
            conn = self._connection()
            while True:
                try:
                    indexed = int(conn.execute("SELECT indexed_seq FROM index_state").fetchone()[0])
                    if indexed >= self._size(conn):
                        return indexed
                    indexed = self._transaction("update the query index", self._index_chunk)
                except AuditError:
                    return int(self._query("SELECT indexed_seq FROM index_state")[0][0])
                except sqlite3.Error as exc:
                    raise _storage_error("read", exc) from None

    def _index_chunk(self, conn: sqlite3.Connection) -> int:
        indexed = int(conn.execute("SELECT indexed_seq FROM index_state").fetchone()[0])
        upto = min(self._size(conn), indexed + self.index_chunk)
        if upto <= indexed:
            return indexed
        loads, dumps = orjson.loads, orjson.dumps
        rows = []
        for seq, entry in self._read(conn, range(indexed + 1, upto + 1)):
            try:
                v = loads(entry)
                rows.append(
                    (
                        seq,
                        v["entry_id"],
                        v["event"],
                        v["disclosure_id"],
                        v["concern_id"],
                        v["recipient"],
                        v["lscp"],
                        v["lawful_basis"],
                        v["at"],
                        dumps(v["subject_pseudonyms"]).decode("utf-8"),
                    )
                )
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise _inconsistent(f"entry {seq} is not an audit record") from None
        conn.executemany(_INSERT_COLUMNS, rows)
        for table, column, select in INDEX_TABLES:
            glue = " AND" if " WHERE " in select else " WHERE"
            conn.execute(
                f"INSERT OR IGNORE INTO {table}({column}, seq) {select}{glue} "
                "e.seq > ? AND e.seq <= ?",
                (indexed, upto),
            )
        conn.execute("UPDATE index_state SET indexed_seq = ? WHERE id = 1", (upto,))
        return upto

    def _tail(
        self, after: int, keep: Callable[[AuditRecord], bool] | None = None
    ) -> Iterator[AuditRecord]:
        """Entries past ``after`` (the unindexed tail), read and filtered here, in pages."""
        end = self.count()
        while after < end:
            seqs = range(after + 1, min(end, after + _PAGE) + 1)
            for entry in self._read_page(seqs):
                record = AuditRecord.from_log(entry)
                if keep is None or keep(record):
                    yield record
            after = seqs[-1]

    def records(
        self,
        *,
        event: AuditEvent | str | None = None,
        concern_id: str | None = None,
        disclosure_id: str | None = None,
        recipient: str | None = None,
        subject: str | None = None,
        lawful_basis: str | None = None,
        lscp: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[AuditRecord]:
        """Entries matching every given filter, in seq order.

        ``subject`` is a subject pseudonym (for subject access requests);
        ``since`` (inclusive) and ``until`` (exclusive) bound the record's
        ``at``. Results are read in pages, so appends may continue meanwhile;
        entries appended after the call starts may or may not be included.
        """
        where: list[str] = []
        params: list[object] = []
        wanted: dict[str, object] = {}
        if event is not None:
            where.append("e.event = ?")
            params.append(as_event(event).value)
            wanted["event"] = as_event(event)
        for column, value in (
            ("concern_id", concern_id),
            ("disclosure_id", disclosure_id),
            ("recipient", recipient),
            ("lawful_basis", lawful_basis),
            ("lscp", lscp),
        ):
            if value is not None:
                where.append(f"e.{column} = ?")
                params.append(value)
                wanted[column] = value
        since = None if since is None else utc_millis("since", since)
        until = None if until is None else utc_millis("until", until)
        low = None if since is None else format_time(since)
        high = None if until is None else format_time(until)
        if low is not None:
            where.append("e.at >= ?")
            params.append(low)
        if high is not None:
            where.append("e.at < ?")
            params.append(high)
        if subject is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(e.subject_pseudonyms) WHERE value = ?)")
            params.append(subject)

        def keep(record: AuditRecord) -> bool:
            """The same filters, for entries the index does not cover yet."""
            values = record.__dict__
            return (
                all(values[name] == value for name, value in wanted.items())
                and (subject is None or subject in record.subject_pseudonyms)
                and (since is None or record.at >= since)
                and (until is None or record.at < until)
            )

        indexed = self._catch_up()
        driver = self._driver(subject, disclosure_id, concern_id, recipient, low, high)
        if driver is None:
            yield from self._scan(where, params, upto=indexed)
        else:
            sql, driver_params = driver
            seqs = sorted(int(r[0]) for r in self._query(sql, [*driver_params, indexed]))
            clause = " AND ".join(where)
            for start in range(0, len(seqs), _IN_CHUNK):
                chunk = seqs[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._query(
                    f"SELECT e.seq FROM entry_columns e WHERE e.seq IN ({marks}) "  # noqa: S608
                    f"AND {clause} ORDER BY e.seq",
                    [*chunk, *params],
                )
                for entry in self._read_page([int(r[0]) for r in rows]):
                    yield AuditRecord.from_log(entry)
        yield from self._tail(indexed, keep)

    @staticmethod
    def _driver(
        subject: str | None,
        disclosure_id: str | None,
        concern_id: str | None,
        recipient: str | None,
        low: str | None,
        high: str | None,
    ) -> tuple[str, list[object]] | None:
        """The query-index lookup that narrows the search most, if any applies."""
        for table, column, value in (
            ("ix_subject", "pseudonym", subject),
            ("ix_disclosure", "disclosure_id", disclosure_id),
            ("ix_concern", "concern_id", concern_id),
            ("ix_recipient", "recipient", recipient),
        ):
            if value is not None:
                return (
                    f"SELECT seq FROM {table} WHERE {column} = ? AND seq <= ?",  # noqa: S608
                    [value],
                )
        if low is not None or high is not None:
            return (
                "SELECT seq FROM ix_at WHERE at >= ? AND at < ? AND seq <= ?",
                [low or "", high or "\uffff"],
            )
        return None

    def _scan(self, where: list[str], params: list[object], *, upto: int) -> Iterator[AuditRecord]:
        """Indexed entries up to ``upto`` that match ``where``, read page by page."""
        clause = "".join(f" AND {w}" for w in where)
        sql = (
            f"SELECT e.seq FROM entry_columns e WHERE e.seq > ? AND e.seq <= ?{clause} "  # noqa: S608
            f"ORDER BY e.seq LIMIT {_PAGE}"
        )
        after = 0
        while True:
            rows = self._query(sql, [after, upto, *params])
            for entry in self._read_page([int(r[0]) for r in rows]):
                yield AuditRecord.from_log(entry)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    def events_for_disclosures(self) -> dict[str, set[str]]:
        """disclosure_id -> the events logged for it (for accounting)."""
        indexed = self._catch_up()
        out: dict[str, set[str]] = {}
        rows = self._query(
            "SELECT DISTINCT disclosure_id, event FROM entry_columns "
            "WHERE disclosure_id IS NOT NULL AND seq <= ?",
            (indexed,),
        )
        for disclosure_id, event in rows:
            out.setdefault(str(disclosure_id), set()).add(str(event))
        for record in self._tail(indexed):
            if record.disclosure_id is not None:
                out.setdefault(record.disclosure_id, set()).add(record.event.value)
        return out

    def verify(self, *, key: LogKey | None = None) -> LogSummary:
        """Verify the file from scratch (read-only); see ``verify_store``.

        Checks checkpoint signatures with ``key``, or with the store's own key.
        """
        return verify_store(self._path, key=key or self.key, origin=self._origin)
