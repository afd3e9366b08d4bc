"""Offline verification of an audit store file.

``verify_store`` opens the SQLite file read-only and trusts nothing stored but
the ``entry`` blobs: it recomputes every leaf and chain hash, checks the
sequence numbers, the queryable columns and every checkpoint, and reports
every problem it finds, in log order. It never writes, so an auditor can run
it on a copy or on the live file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas import AuditError, LogTamperedError, ReasonCode, SaferError

from ._format import (
    APPLICATION_ID,
    FORMAT_VERSION,
    GENESIS,
    INDEX_COLUMNS,
    TABLES,
    TRIGGERS,
    chain_hash,
    index_values,
    leaf_hash,
)
from ._record import AuditRecord

__all__ = ["MAX_PROBLEMS", "LogSummary", "verify_store"]

#: Verification stops listing problems after this many (a wholesale rewrite
#: would otherwise list every entry); the last line says how many were cut.
MAX_PROBLEMS = 1000

_NOT_A_STORE_HINT = (
    "point at the audit database of a SAFER data directory (default ./.safer/audit.db)"
)


@dataclass(frozen=True)
class LogSummary:
    """What a successful verification found."""

    entries: int
    head: str  # hex chain hash after the last entry (64 zeros for an empty log)
    checkpoints_verified: int


@dataclass(frozen=True)
class _Checkpoint:
    id: int
    size: int
    chain_hash: bytes


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, problem: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(problem)
        else:
            self.dropped += 1

    def final(self) -> list[str]:
        if self.dropped:
            return [*self.items, f"... and {self.dropped} more problems"]
        return list(self.items)


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise AuditError(
            f"no audit store at {path}",
            code=ReasonCode.CONFIG_INVALID,
            hint=f"check the path or --data-dir; {_NOT_A_STORE_HINT}",
        )
    if not path.is_file():
        raise AuditError(
            f"{path} is not a file", code=ReasonCode.CONFIG_INVALID, hint=_NOT_A_STORE_HINT
        )
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise AuditError(
            f"cannot open {path} read-only ({exc})", code=ReasonCode.CONFIG_INVALID
        ) from None
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError:
        conn.close()
        raise AuditError(
            f"{path} is not a SAFER audit store (not an SQLite database)",
            code=ReasonCode.CONFIG_INVALID,
            hint=_NOT_A_STORE_HINT,
        ) from None
    if application_id != APPLICATION_ID or not set(TABLES) <= tables:
        conn.close()
        raise AuditError(
            f"{path} is not a SAFER audit store",
            code=ReasonCode.CONFIG_INVALID,
            hint=_NOT_A_STORE_HINT,
        )
    if version > FORMAT_VERSION:
        conn.close()
        raise AuditError(
            f"{path} uses audit store format v{version}; this build reads up to v{FORMAT_VERSION}",
            code=ReasonCode.CONFIG_INVALID,
            hint="verify it with a newer SAFER Exchange",
        )
    return conn


def _rows(conn: sqlite3.Connection) -> Iterator[tuple[object, ...]]:
    columns = ", ".join(INDEX_COLUMNS)
    cursor = conn.execute(
        f"SELECT seq, {columns}, entry, leaf_hash, chain_hash FROM entries ORDER BY seq"  # noqa: S608
    )
    while batch := cursor.fetchmany(1000):
        yield from batch


def _missing(first: int, last: int) -> str:
    if first == last:
        return f"entry {first} missing (deleted?)"
    return f"entries {first}..{last} missing (deleted?)"


def verify_store(path: Path) -> LogSummary:
    """Recompute the whole log from its entries; raise ``LogTamperedError`` on any problem.

    Raises ``AuditError`` if ``path`` does not exist or is not a SAFER audit store.
    """
    path = Path(path)
    conn = _open_read_only(path)
    try:
        conn.execute("BEGIN")  # one read snapshot for entries and checkpoints
        return _verify(conn)
    except sqlite3.DatabaseError as exc:
        raise AuditError(
            f"audit store {path} could not be read ({exc})",
            code=ReasonCode.AUDIT_TAMPERED,
            hint="the file may be damaged; keep it as evidence and restore from a verified copy",
        ) from None
    finally:
        conn.close()


def _verify(conn: sqlite3.Connection) -> LogSummary:
    problems = _Problems()
    tail: list[str] = []  # structural problems, reported after the log-order ones

    checkpoints: list[_Checkpoint] = []
    expected_id = 1
    last_size = 0
    for cid, size, stored, _at in conn.execute(
        "SELECT id, size, chain_hash, at FROM checkpoints ORDER BY id"
    ):
        if cid != expected_id:
            tail.append(
                f"checkpoint {expected_id} missing (deleted?)"
                if cid == expected_id + 1
                else f"checkpoints {expected_id}..{cid - 1} missing (deleted?)"
            )
        expected_id = cid + 1
        if not isinstance(size, int) or size < 0 or not isinstance(stored, bytes):
            tail.append(f"checkpoint {cid} is malformed")
            continue
        if size < last_size:
            tail.append(f"checkpoint {cid} at size {size} is smaller than an earlier checkpoint")
        last_size = max(last_size, size)
        checkpoints.append(_Checkpoint(cid, size, stored))
    by_size: dict[int, list[_Checkpoint]] = {}
    for cp in checkpoints:
        by_size.setdefault(cp.size, []).append(cp)
    verified = 0

    def check_checkpoints(size: int, running: bytes, trustworthy: bool) -> None:
        nonlocal verified
        for cp in by_size.get(size, ()):
            if not trustworthy:
                problems.add(
                    f"checkpoint {cp.id} at size {size} cannot be checked: entries missing"
                )
            elif cp.chain_hash == running:
                verified += 1
            else:
                problems.add(
                    f"checkpoint {cp.id} at size {size} does not match the chain recomputed "
                    f"at entry {size} (entries up to {size} changed, or checkpoint forged)"
                )

    check_checkpoints(0, GENESIS, True)
    expected = 1
    present = 0
    running = GENESIS  # recomputed from the entry blobs
    stored_prev = GENESIS  # the stored chain hash of the previous row
    for row in _rows(conn):
        seq = row[0]
        columns = row[1 : 1 + len(INDEX_COLUMNS)]
        entry, stored_leaf, stored_chain = row[1 + len(INDEX_COLUMNS) :]
        present += 1
        if not isinstance(seq, int) or seq < expected:
            problems.add(f"row with seq {seq!r} is out of sequence")
            continue
        gap = seq > expected
        if gap:
            problems.add(_missing(expected, seq - 1))
            for size in range(expected, seq):
                check_checkpoints(size, running, False)
        if not isinstance(entry, bytes):
            problems.add(f"entry {seq} modified: entry is not a blob")
            entry = b""
        leaf = leaf_hash(entry)
        try:
            record: AuditRecord | None = AuditRecord.from_canonical(entry)
        except SaferError as exc:
            record = None
            problems.add(f"entry {seq} modified: not a canonical audit record ({exc.message})")
        if record is not None and record.seq != seq:
            problems.add(f"entry at seq {seq} claims seq {record.seq} (reordered?)")
        if leaf != stored_leaf:
            problems.add(f"entry {seq} modified: leaf hash mismatch")
        if record is not None:
            wrong = [
                name
                for name, want, got in zip(
                    INDEX_COLUMNS, index_values(record), columns, strict=True
                )
                if want != got
            ]
            if wrong:
                problems.add(
                    f"entry {seq} index columns do not match the entry: {', '.join(wrong)}"
                )
        if not isinstance(stored_chain, bytes) or not isinstance(stored_leaf, bytes):
            problems.add(f"entry {seq} modified: stored hashes are not blobs")
            stored_chain = b""
        elif not gap and stored_chain != chain_hash(stored_prev, stored_leaf):
            problems.add(f"entry {seq} chain hash does not follow from entry {seq - 1}")
        if gap:
            # The missing entries' leaves are gone; continue from the stored chain
            # so later checks still mean something (the gap is already reported).
            running = stored_chain if len(stored_chain) == 32 else chain_hash(running, leaf)
        else:
            running = chain_hash(running, leaf)
        stored_prev = stored_chain
        check_checkpoints(seq, running, True)
        expected = seq + 1

    size = expected - 1
    if last_size > size:
        problems.add(
            f"log truncated: checkpoint at size {last_size} but only {present} entries "
            f"(entry {size + 1} onward missing)"
        )

    present_triggers = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    tail += [
        f"append-only trigger {name} is missing (the store was altered)"
        for name in TRIGGERS
        if name not in present_triggers
    ]
    for problem in tail:
        problems.add(problem)
    found = problems.final()
    if found:
        raise LogTamperedError(found)
    return LogSummary(entries=present, head=running.hex(), checkpoints_verified=verified)
