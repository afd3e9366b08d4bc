"""The durable, append-only audit store: an RFC 9162 Merkle log in one SQLite file.

Why one SQLite file in WAL mode (the full argument is in docs/AUDIT_LOG.md):

- **Durable group commit.** ``append`` takes a whole batch and writes it in
  one transaction; with ``synchronous=FULL`` that is one fsync at COMMIT. The
  feed hands over one fetched batch at a time, so a batch is bounded by the
  fetch size and by how long the broker took to return it.
- **Exactly-once from Kafka.** The feed's positions (``feed_offsets``) are
  committed in the same transaction as the entries they produced, so after a
  crash the log and the position agree. Entries are also deduplicated on
  their deterministic ``entry_id`` (replays from the router or a recipient).
- **Append-only in the engine.** Triggers refuse UPDATE and DELETE and any
  row that does not extend the log. Someone with the file can drop them, so
  the hashes make tampering *evident*: see ``verify_store``.
- **Fast appends.** An entry is one short row plus its share of one ``tree``
  row (the batch's leaf hashes in one blob). Queries use a derived index
  that is brought up to date in bulk before a read needs it.
- WAL lets auditors read, prove and verify while the feed writes.

The writer keeps two things in memory: the tree's frontier (O(log n) hashes,
to compute roots) and a map from a 64-bit fingerprint of each entry id to its
seq (about 100 bytes per entry), loaded on the first append. A full tree for
proofs (64 bytes per entry) is built only when a proof is asked for.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

from schemas import AuditError, AuditEvent, ReasonCode, ValidationError

from ._bundle import make_bundle
from ._format import APPLICATION_ID, FORMAT_VERSION, INDEX_COLUMNS, INDEX_TABLES, SCHEMA
from ._merkle import HASH_SIZE, Frontier, MerkleTree
from ._note import DEFAULT_ORIGIN, LogKey, LogSigner, format_body, parse_note
from ._record import AuditRecord, as_event, format_time, parse_time, utc_millis
from ._verify import LogSummary, verify_store

__all__ = ["AppendResult", "AuditLog", "AuditStore", "Checkpoint"]

_INSERT = (
    f"INSERT INTO entries(seq, {', '.join(INDEX_COLUMNS)}, entry) "  # noqa: S608
    f"VALUES ({', '.join('?' * (len(INDEX_COLUMNS) + 2))})"
)
_UPSERT_OFFSET = (
    "INSERT INTO feed_offsets(topic, partition, next_offset) VALUES (?, ?, ?) "
    "ON CONFLICT(topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
)
_LAST_TREE_ROW = (
    "SELECT first_seq, length(leaves) / 32, frontier FROM tree ORDER BY first_seq DESC LIMIT 1"
)
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
    """A batch ready to write: what ``_prepare`` computed, before the file or memory move."""

    results: list[AppendResult]
    fresh: dict[str, int]  # entry_id -> seq of the new entries
    rows: list[tuple[object, ...]]  # (seq, query columns..., entry)
    leaves: list[bytes]
    first_seq: int
    frontier: Frontier  # after the batch


class _Writer:
    """What the appending process keeps in memory: size, frontier, entry-id map."""

    __slots__ = ("collisions", "frontier", "ids", "ids_loaded", "size")

    def __init__(self, size: int, frontier: Frontier) -> None:
        self.size = size
        self.frontier = frontier
        self.ids_loaded = False
        self.ids: dict[int, int] = {}  # fingerprint(entry_id) -> seq
        self.collisions: dict[str, int] = {}  # entry_id -> seq, for fingerprint clashes


class AuditStore:
    """Append-only RFC 9162 Merkle log in one SQLite (WAL) file. Synchronous; thread-safe.

    ``signer`` signs checkpoints (C2SP signed notes); without one, checkpoints
    are written unsigned. Use as a context manager, or call ``close()``.
    """

    #: Entries indexed per transaction when the query index catches up.
    index_chunk: ClassVar[int] = 50_000

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
                else "v1 stores (hash chain, before the Merkle log) were development data: "
                "move the file away and let the feed rebuild the log from Kafka",
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

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._writer = None
            self._tree = None

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
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()[0])

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
            self._writer = None
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
                self._writer = None
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

    def _load_ids(self, conn: sqlite3.Connection, writer: _Writer, *, after: int) -> None:
        fingerprint = self._fingerprint
        ids = writer.ids
        cursor = conn.execute(
            "SELECT seq, entry_id FROM entries WHERE seq > ? ORDER BY seq", (after,)
        )
        while rows := cursor.fetchmany(10_000):
            for seq, entry_id in rows:
                key = fingerprint(entry_id)
                if key in ids:
                    self._remember_clash(conn, writer, entry_id, key, seq)
                else:
                    ids[key] = seq

    @staticmethod
    def _entry_id_at(conn: sqlite3.Connection, seq: int) -> str | None:
        row = conn.execute("SELECT entry_id FROM entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

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
        """Append a batch in one durable transaction (one fsync).

        Each record gets the next seq, unless an entry with its ``entry_id`` is
        already in the log (or earlier in this batch): then it is skipped and
        its result says ``duplicate`` with the existing seq. Any ``seq`` a record
        carries is replaced. ``offsets`` ((topic, partition) -> next offset) are
        stored in the same transaction. All or nothing: on error nothing is
        written and ``AuditError`` is raised.
        """
        batch = _check_records(records)
        offset_rows = _check_offsets(offsets or {})
        prepared: list[tuple[_Writer, _Staged]] = []

        def write(conn: sqlite3.Connection) -> None:
            writer = self._writer_for(conn)
            staged = self._prepare(conn, writer, batch)
            self._write(conn, staged, offset_rows)
            prepared.append((writer, staged))

        with self._lock:  # the file and this process's memory move together
            try:
                self._transaction("append", write)
            except BaseException:
                self._writer = None  # reload from the file on the next append
                raise
            writer, staged = prepared[0]
            self._commit_memory(writer, staged)
        return staged.results

    def _prepare(
        self,
        conn: sqlite3.Connection,
        writer: _Writer,
        batch: list[AuditRecord],
    ) -> _Staged:
        """Dedup, encode and hash a batch; neither the file nor the writer's memory changes."""
        results: list[AppendResult] = []
        rows: list[tuple[object, ...]] = []
        leaves: list[bytes] = []
        fresh: dict[str, int] = {}
        ids = writer.ids
        fingerprint = self._fingerprint
        sha = hashlib.sha256
        seq = writer.size
        for record in batch:
            entry_id = record.entry_id
            existing = fresh.get(entry_id)
            if existing is None and (fingerprint(entry_id) in ids or writer.collisions):
                existing = self._existing(conn, writer, entry_id)
            if existing is not None:
                results.append(AppendResult(entry_id, existing, True))
                continue
            seq += 1
            fresh[entry_id] = seq
            entry = record.entry_bytes(seq)
            rows.append((seq, *record.query_columns(), entry))
            leaves.append(sha(b"\x00" + entry).digest())
            results.append(AppendResult(entry_id, seq, False))
        frontier = writer.frontier
        if rows:
            frontier = frontier.copy()
            frontier.extend(leaves)
        return _Staged(results, fresh, rows, leaves, writer.size + 1, frontier)

    @staticmethod
    def _write(
        conn: sqlite3.Connection, staged: _Staged, offset_rows: list[tuple[str, int, int]]
    ) -> None:
        """Insert a prepared batch and the feed positions (inside a transaction)."""
        if staged.rows:
            conn.executemany(_INSERT, staged.rows)
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
        rows = self._query("SELECT COALESCE(MAX(seq), 0) FROM entries")
        return int(rows[0][0])

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

    def get(self, seq: int) -> AuditRecord | None:
        """The entry with this seq, or None."""
        rows = self._query("SELECT entry FROM entries WHERE seq = ?", (seq,))
        return AuditRecord.from_log(bytes(rows[0][0])) if rows else None

    def entry_bytes(self, seq: int) -> bytes | None:
        """The exact bytes of entry ``seq`` (what the leaf hash covers), or None."""
        rows = self._query("SELECT entry FROM entries WHERE seq = ?", (seq,))
        return bytes(rows[0][0]) if rows else None

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
            return bool(
                self._query(
                    "SELECT 1 FROM ix_entry WHERE entry_id = ? AND seq <= ? UNION ALL "
                    "SELECT 1 FROM entries WHERE seq > ? AND entry_id = ? LIMIT 1",
                    (entry_id, indexed, indexed, entry_id),
                )
            )

    def _catch_up(self) -> int:
        """Bring the query index up to the log; returns the indexed size.

        Best effort: on a read-only or busy file the index stays behind and
        queries scan the unindexed tail instead, so results are always complete.
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
        for table, column, select in INDEX_TABLES:
            glue = " AND" if " WHERE " in select else " WHERE"
            conn.execute(
                f"INSERT OR IGNORE INTO {table}({column}, seq) {select}{glue} "
                "e.seq > ? AND e.seq <= ?",
                (indexed, upto),
            )
        conn.execute("UPDATE index_state SET indexed_seq = ? WHERE id = 1", (upto,))
        return upto

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
        if event is not None:
            where.append("e.event = ?")
            params.append(as_event(event).value)
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
        low = None if since is None else format_time(utc_millis("since", since))
        high = None if until is None else format_time(utc_millis("until", until))
        if low is not None:
            where.append("e.at >= ?")
            params.append(low)
        if high is not None:
            where.append("e.at < ?")
            params.append(high)
        if subject is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(e.subject_pseudonyms) WHERE value = ?)")
            params.append(subject)
        driver = self._driver(subject, disclosure_id, concern_id, recipient, low, high)
        if driver is None:
            yield from self._scan(where, params, after=0)
            return
        indexed = self._catch_up()
        sql, driver_params = driver
        seqs = [int(r[0]) for r in self._query(sql, [*driver_params, indexed])]
        seqs.sort()
        clause = " AND ".join(where)
        for start in range(0, len(seqs), _IN_CHUNK):
            chunk = seqs[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT e.entry FROM entries e WHERE e.seq IN ({marks}) AND {clause} "  # noqa: S608
                "ORDER BY e.seq",
                [*chunk, *params],
            )
            for (entry,) in rows:
                yield AuditRecord.from_log(bytes(entry))
        yield from self._scan(where, params, after=indexed)

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

    def _scan(self, where: list[str], params: list[object], *, after: int) -> Iterator[AuditRecord]:
        clause = "".join(f" AND {w}" for w in where)
        sql = (
            f"SELECT e.seq, e.entry FROM entries e WHERE e.seq > ?{clause} "  # noqa: S608
            f"ORDER BY e.seq LIMIT {_PAGE}"
        )
        while True:
            rows = self._query(sql, [after, *params])
            for _, entry in rows:
                yield AuditRecord.from_log(bytes(entry))
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

    def verify(self, *, key: LogKey | None = None) -> LogSummary:
        """Verify the file from scratch (read-only); see ``verify_store``.

        Checks checkpoint signatures with ``key``, or with the store's own key.
        """
        return verify_store(self._path, key=key or self.key, origin=self._origin)
