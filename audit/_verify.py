"""Offline verification of an audit store file.

``verify_store`` opens the SQLite file read-only and trusts nothing stored but
what a signature covers. In one pass, in seq order, it:

- recomputes every leaf hash from the entry bytes and the RFC 9162 root at
  every checkpoint's size;
- checks each checkpoint's C2SP signature with the log's key (forged ones are
  reported and otherwise ignored), and that the log still matches every
  checkpoint and every checkpoint the caller kept elsewhere (``anchors``);
- names the exact entry that changed after a checkpoint was signed, using the
  leaf hashes the checkpoint row keeps (they are bound to the signed root);
- checks the stored leaf hashes, the sequence numbers the entries claim, the
  plain query columns and the query index against the entries, and that the
  append-only triggers are still there.

Problems are reported in log order, so the first one names the first bad
sequence number. It never writes, so an auditor can run it on a copy or on the
live file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _json_str
from pathlib import Path
from typing import Any

from schemas import AuditError, LogTamperedError, ReasonCode

from ._format import APPLICATION_ID, FORMAT_VERSION, INDEX_COLUMNS, INDEX_TABLES, TABLES, TRIGGERS
from ._merkle import EMPTY_ROOT, HASH_SIZE, Frontier
from ._note import LogKey, open_checkpoint, parse_body, parse_note

__all__ = ["MAX_PROBLEMS", "LogSummary", "StoreTamperedError", "verify_store"]

#: Verification stops listing problems after this many (a wholesale rewrite
#: would otherwise list every entry); the last line says how many were cut.
MAX_PROBLEMS = 1000

_NOT_A_STORE_HINT = (
    "point at the audit database of a SAFER data directory (default ./.safer/audit.db)"
)
_LAST = 1 << 62  # sort key of problems that are about the file, not an entry


@dataclass(frozen=True)
class LogSummary:
    """What verification found.

    ``root`` is the hex RFC 9162 root over the entries present.
    ``checkpoint_verified``: a log key was given, no checkpoint is forged, and
    the newest checkpoint carries a valid signature by that key and matches
    the log. ``consistent``: the log matches every checkpoint (and every kept
    anchor) and none of them is beyond its end.
    """

    entries: int
    root: str
    checkpoints: int = 0
    checkpoints_verified: int = 0
    checkpoint_verified: bool = False
    consistent: bool = True

    @property
    def head(self) -> str:
        """The root (the name the v1 hash-chain store used)."""
        return self.root

    def to_json(self, problems: Sequence[str] = ()) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "root": self.root,
            "checkpoint_verified": self.checkpoint_verified,
            "consistent": self.consistent,
            "problems": list(problems),
        }


class StoreTamperedError(LogTamperedError):
    """``LogTamperedError`` that also carries what verification computed."""

    def __init__(self, problems: list[str], summary: LogSummary) -> None:
        super().__init__(problems)
        self.summary = summary


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[int, int, str]] = []

    def add(self, seq: int, problem: str) -> None:
        self.items.append((seq, len(self.items), problem))

    def final(self) -> list[str]:
        ordered = [text for _, _, text in sorted(self.items)]
        if len(ordered) > MAX_PROBLEMS:
            cut = len(ordered) - MAX_PROBLEMS
            return [*ordered[:MAX_PROBLEMS], f"... and {cut} more problems"]
        return ordered


@dataclass
class _Checkpoint:
    label: str  # "checkpoint 3" or "kept checkpoint 1"
    size: int
    root: bytes
    trusted: bool  # signature verified by the log key
    stored: bool  # a row of the store (not an anchor the caller kept)
    frontier: Frontier | None = None
    matched: bool | None = None  # None: could not be checked (entries missing)
    first_diff: int | None = None  # first entry that differs from its signed leaf


@dataclass
class _State:
    problems: _Problems = field(default_factory=_Problems)
    checkpoints: list[_Checkpoint] = field(default_factory=list)
    forged: int = 0
    # (first seq, leaf hashes, checkpoint) ranges bound to a signed root
    signed_leaves: list[tuple[int, bytes, _Checkpoint]] = field(default_factory=list)


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
    if application_id != APPLICATION_ID:
        conn.close()
        raise AuditError(
            f"{path} is not a SAFER audit store",
            code=ReasonCode.CONFIG_INVALID,
            hint=_NOT_A_STORE_HINT,
        )
    if version != FORMAT_VERSION:
        conn.close()
        raise AuditError(
            f"{path} uses audit store format v{version}; this build reads v{FORMAT_VERSION}",
            code=ReasonCode.CONFIG_INVALID,
            hint="verify it with the SAFER Exchange version that wrote it",
        )
    missing = [t for t in TABLES if t not in tables]
    if missing:
        conn.close()
        raise AuditError(
            f"{path} is not a complete SAFER audit store (tables missing: {', '.join(missing)})",
            code=ReasonCode.AUDIT_TAMPERED,
            hint="keep the file as evidence and restore from a verified copy",
        )
    conn.execute("PRAGMA cache_size = -65536")
    return conn


def verify_store(
    path: Path,
    *,
    key: LogKey | None = None,
    origin: str | None = None,
    anchors: Sequence[str] = (),
) -> LogSummary:
    """Recompute the whole log; return a ``LogSummary`` or raise ``StoreTamperedError``.

    ``key`` is the log's public key: with it, checkpoint signatures are
    checked and forged checkpoints reported. ``origin`` (default: the origin
    of the first checkpoint) is the log every checkpoint must name.
    ``anchors`` are signed checkpoint notes kept outside the store (by an
    auditor, a ticket, an email); the log must still match each of them, which
    catches truncation even when the attacker also removed stored checkpoints.

    Raises ``AuditError`` if ``path`` is not a SAFER audit store, or if
    ``anchors`` are given without a ``key``.
    """
    if anchors and key is None:
        raise AuditError(
            "kept checkpoints can only be checked with the log's public key",
            code=ReasonCode.CONFIG_INVALID,
            hint="pass --key with the log's public key",
        )
    path = Path(path)
    conn = _open_read_only(path)
    try:
        conn.execute("BEGIN")  # one read snapshot for every table
        summary, problems = _verify(conn, key, origin, anchors)
    except sqlite3.DatabaseError as exc:
        raise AuditError(
            f"audit store {path} could not be read ({exc})",
            code=ReasonCode.AUDIT_TAMPERED,
            hint="the file may be damaged; keep it as evidence and restore from a verified copy",
        ) from None
    finally:
        conn.close()
    if problems:
        raise StoreTamperedError(problems, summary)
    return summary


def _missing(first: int, last: int) -> str:
    if first == last:
        return f"entry {first} missing (deleted?)"
    return f"entries {first}..{last} missing (deleted?)"


def _load_checkpoints(
    conn: sqlite3.Connection, key: LogKey | None, origin: str | None, state: _State
) -> str | None:
    problems = state.problems
    expected_id = 1
    previous: _Checkpoint | None = None
    previous_size = 0
    for cid, size, root, note, frontier, leaves, _at in conn.execute(
        "SELECT id, size, root, note, frontier, leaves, at FROM checkpoints ORDER BY id"
    ):
        label = f"checkpoint {cid}"
        if cid != expected_id:
            problems.add(
                int(size) if isinstance(size, int) else _LAST,
                f"checkpoint {expected_id} missing (deleted?)"
                if cid == expected_id + 1
                else f"checkpoints {expected_id}..{cid - 1} missing (deleted?)",
            )
        expected_id = cid + 1
        try:
            parsed = parse_note(str(note))
            body = parse_body(parsed.text)
        except AuditError as exc:
            problems.add(_LAST, f"{label} is malformed: {exc.message}")
            previous = None
            continue
        if origin is None:
            origin = body.origin
        if body.origin != origin:
            problems.add(body.size, f"{label} is for log {body.origin!r}, not {origin!r}")
        if body.size != size or bytes(root) != body.root:
            problems.add(
                body.size, f"{label}: its size or root columns differ from its signed note"
            )
        trusted = False
        if key is not None and parsed.signatures:
            try:
                open_checkpoint(str(note), key)
                trusted = True
            except AuditError as exc:
                state.forged += 1
                problems.add(body.size, f"{label} (size {body.size}) is forged: {exc.message}")
                previous = None
                continue
        cp = _Checkpoint(label, body.size, body.root, trusted, stored=True)
        try:
            stored_frontier = Frontier.from_bytes(body.size, bytes(frontier))
            if stored_frontier.root() == body.root:
                cp.frontier = stored_frontier
        except AuditError:
            pass
        if body.size < previous_size:
            problems.add(
                body.size,
                f"{label} at size {body.size} is smaller than the checkpoint before it "
                f"(size {previous_size})",
            )
        delta = bytes(leaves)
        if (
            trusted
            and cp.frontier is not None
            and len(delta) == (body.size - previous_size) * HASH_SIZE
            and (
                previous_size == 0
                or (previous is not None and previous.trusted and previous.frontier is not None)
            )
        ):
            start = Frontier() if previous_size == 0 or previous is None else previous.frontier
            assert start is not None
            folded = start.copy()
            folded.extend(delta[i : i + HASH_SIZE] for i in range(0, len(delta), HASH_SIZE))
            if folded.root() == body.root and delta:
                state.signed_leaves.append((previous_size + 1, delta, cp))
        state.checkpoints.append(cp)
        previous = cp
        previous_size = body.size
    return origin


def _load_anchors(anchors: Sequence[str], key: LogKey, origin: str | None, state: _State) -> None:
    for number, note in enumerate(anchors, 1):
        label = f"kept checkpoint {number}"
        try:
            body = open_checkpoint(note, key, origin=origin)
        except AuditError as exc:
            state.forged += 1
            state.problems.add(_LAST, f"{label} does not verify: {exc.message}")
            continue
        state.checkpoints.append(_Checkpoint(label, body.size, body.root, True, stored=False))


class _StoredLeaves:
    """The ``tree`` rows, read alongside the entries."""

    def __init__(self, conn: sqlite3.Connection, problems: _Problems) -> None:
        self._rows = conn.execute("SELECT first_seq, leaves, frontier FROM tree ORDER BY first_seq")
        self._problems = problems
        self.first = 1
        self.blob = b""
        self.frontier = b""
        self.end = 0  # last seq covered so far
        self.exhausted = False

    def leaf(self, seq: int) -> bytes | None:
        while seq > self.end and not self.exhausted:
            row = self._rows.fetchone()
            if row is None:
                self.exhausted = True
                break
            first, blob, frontier = int(row[0]), bytes(row[1]), bytes(row[2])
            if first != self.end + 1 or len(blob) % HASH_SIZE or not blob:
                self._problems.add(
                    first, f"tree row at entry {first} does not follow the one before it"
                )
            self.first, self.blob, self.frontier = first, blob, frontier
            self.end = first + len(blob) // HASH_SIZE - 1
        if self.first <= seq <= self.end:
            offset = (seq - self.first) * HASH_SIZE
            return self.blob[offset : offset + HASH_SIZE]
        return None

    def last_end(self) -> int:
        """Read to the end; the last seq any tree row covers."""
        while not self.exhausted:
            self.leaf(self.end + 1)
            if self.exhausted:
                break
        return self.end


def _snippets(values: tuple[Any, ...], seq: int) -> tuple[bytes, ...]:
    """Byte strings a canonical entry with these column values must contain."""
    entry_id, event, disclosure_id, concern_id, recipient, lscp, basis, at, subjects = values

    def j(value: Any) -> str:
        return "null" if value is None else str(_json_str(value))

    return (
        f',"at":{j(at)},"concern_id":{j(concern_id)},'.encode(),
        f',"disclosure_id":{j(disclosure_id)},"entry_id":{j(entry_id)},'
        f'"event":{j(event)},"fields_disclosed":'.encode(),
        f',"lawful_basis":{j(basis)},"lscp":{j(lscp)},"payload_sha256":'.encode(),
        f',"recipient":{j(recipient)},"seq":{seq},"source":'.encode(),
        f',"subject_pseudonyms":{subjects}}}'.encode(),
    )


def _diagnose(seq: int, entry: bytes, columns: tuple[Any, ...], problems: _Problems) -> None:
    """Explain why an entry's bytes do not fit its row (the slow path)."""
    try:
        parsed = json.loads(entry.decode("utf-8"))
        if not isinstance(parsed, dict):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        problems.add(seq, f"entry {seq} modified: it is not a canonical audit record")
        return
    claimed = parsed.get("seq")
    if claimed != seq:
        problems.add(seq, f"entry at seq {seq} claims seq {claimed} (reordered?)")
    wrong = []
    for name, got in zip(INDEX_COLUMNS, columns, strict=True):
        want = parsed.get(name)
        if name == "subject_pseudonyms":
            want = (
                "[" + ",".join(map(_json_str, want)) + "]"
                if isinstance(want, list) and all(isinstance(v, str) for v in want)
                else want
            )
        if want != got:
            wrong.append(name)
    if wrong:
        problems.add(seq, f"entry {seq} index columns do not match the entry: {', '.join(wrong)}")
    elif claimed == seq:
        problems.add(seq, f"entry {seq} modified: it is not a canonical audit record")


def _entries(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    columns = ", ".join(INDEX_COLUMNS)
    cursor = conn.execute(f"SELECT seq, {columns}, entry FROM entries ORDER BY seq")  # noqa: S608
    while batch := cursor.fetchmany(2000):
        yield from batch


def _verify(
    conn: sqlite3.Connection, key: LogKey | None, origin: str | None, anchors: Sequence[str]
) -> tuple[LogSummary, list[str]]:
    state = _State()
    problems = state.problems
    origin = _load_checkpoints(conn, key, origin, state)
    if key is not None:
        _load_anchors(anchors, key, origin, state)

    by_size: dict[int, list[_Checkpoint]] = {}
    for cp in state.checkpoints:
        by_size.setdefault(cp.size, []).append(cp)
    signed = sorted(state.signed_leaves, key=lambda item: item[0])
    signed_at = 0  # index into ``signed``

    stored = _StoredLeaves(conn, problems)
    frontier = Frontier()
    frontier_ok = True

    def check(size: int) -> None:
        for cp in by_size.get(size, ()):
            if not frontier_ok:
                cp.matched = None
            else:
                cp.matched = frontier.root() == cp.root

    check(0)
    sha = hashlib.sha256
    expected = 1
    present = 0
    no_leaf_from: int | None = None
    for row in _entries(conn):
        seq = row[0]
        columns = row[1:-1]
        entry = row[-1]
        present += 1
        if not isinstance(seq, int) or seq < expected:
            problems.add(_LAST, f"row with seq {seq!r} is out of sequence")
            continue
        if seq > expected:
            problems.add(expected, _missing(expected, seq - 1))
            for gap in range(expected, seq):
                leaf = stored.leaf(gap)
                if leaf is None:
                    frontier_ok = False
                elif frontier_ok:
                    frontier.append(leaf)
                check(gap)
        if not isinstance(entry, bytes):
            problems.add(seq, f"entry {seq} modified: it is not a blob")
            entry = str(entry).encode()
        leaf = sha(b"\x00" + entry).digest()
        snippets = _snippets(columns, seq)
        if not (
            snippets[0] in entry
            and snippets[1] in entry
            and snippets[2] in entry
            and snippets[3] in entry
            and entry.endswith(snippets[4])
        ):
            _diagnose(seq, entry, columns, problems)
        stored_leaf = stored.leaf(seq)
        if stored_leaf is None:
            if no_leaf_from is None:
                no_leaf_from = seq
        elif stored_leaf != leaf:
            problems.add(seq, f"entry {seq} modified: it does not match its stored leaf hash")
        while (
            signed_at < len(signed)
            and seq >= signed[signed_at][0] + len(signed[signed_at][1]) // HASH_SIZE
        ):
            signed_at += 1
        if signed_at < len(signed) and seq >= signed[signed_at][0]:
            first, blob, cp = signed[signed_at]
            offset = (seq - first) * HASH_SIZE
            if blob[offset : offset + HASH_SIZE] != leaf:
                problems.add(
                    seq,
                    f"entry {seq} differs from the entry signed in {cp.label} "
                    f"(size {cp.size}): changed after it was signed",
                )
                if cp.first_diff is None:
                    cp.first_diff = seq
        frontier.append(leaf)
        check(seq)
        expected = seq + 1
    size = expected - 1

    if no_leaf_from is not None:
        problems.add(
            no_leaf_from,
            f"entries from {no_leaf_from} have no stored leaf hashes (tree rows removed)",
        )
    tree_end = stored.last_end()
    if tree_end > size:
        problems.add(
            size + 1,
            f"log truncated: the tree holds leaf hashes up to entry {tree_end} but the "
            f"log ends at entry {size} (entry {size + 1} onward missing)",
        )
    elif (
        tree_end == size
        and size
        and stored.frontier
        and frontier_ok
        and stored.frontier != frontier.to_bytes()
    ):
        problems.add(_LAST, "the stored tree state does not match the entries (tree rows altered)")

    consistent = _judge_checkpoints(state, size, present)
    _check_index(conn, problems)
    present_triggers = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    for name in TRIGGERS:
        if name not in present_triggers:
            problems.add(_LAST, f"append-only trigger {name} is missing (the store was altered)")

    stored_cps = [cp for cp in state.checkpoints if cp.stored]
    latest = stored_cps[-1] if stored_cps else None
    root = frontier.root() if frontier_ok else EMPTY_ROOT
    summary = LogSummary(
        entries=present,
        root=root.hex(),
        checkpoints=len(stored_cps) + state.forged,
        checkpoints_verified=sum(1 for cp in stored_cps if cp.trusted and cp.matched),
        checkpoint_verified=key is not None
        and state.forged == 0
        and latest is not None
        and latest.trusted
        and bool(latest.matched),
        consistent=consistent,
    )
    return summary, problems.final()


def _judge_checkpoints(state: _State, size: int, present: int) -> bool:
    """Report checkpoints the log no longer matches; True when it matches them all."""
    problems = state.problems
    consistent = True
    ordered = sorted(state.checkpoints, key=lambda cp: cp.size)
    for cp in ordered:
        if cp.size > size:
            consistent = False
            problems.add(
                size + 1,
                f"log truncated: {cp.label} is at size {cp.size} but the log has only "
                f"{present} entries (entry {size + 1} onward missing)",
            )
            continue
        if cp.matched is None:
            problems.add(
                cp.size, f"{cp.label} at size {cp.size} cannot be checked: entries missing"
            )
            consistent = False
            continue
        if cp.matched:
            continue
        consistent = False
        good_before = max((o.size for o in ordered if o.matched and o.size < cp.size), default=0)
        first = cp.first_diff or good_before + 1
        where = (
            f"entry {first} changed"
            if cp.first_diff is not None
            else f"the first changed entry is in {good_before + 1}..{cp.size}"
        )
        later = [o for o in ordered if o.matched and o.size > cp.size and o.trusted and cp.trusted]
        if later:
            other = later[-1]
            problems.add(
                first,
                f"{cp.label} (size {cp.size}) is not consistent with {other.label} "
                f"(size {other.size}): both are signed but the log they describe was "
                f"rewritten in between ({where})",
            )
        else:
            problems.add(
                first,
                f"{cp.label} (size {cp.size}) does not match the log: entries were changed "
                f"after it was written ({where})",
            )
    return consistent


def _check_index(conn: sqlite3.Connection, problems: _Problems) -> None:
    """The query index must hold exactly the entries' keys up to ``indexed_seq``."""
    row = conn.execute("SELECT indexed_seq FROM index_state WHERE id = 1").fetchone()
    indexed = int(row[0]) if row is not None and isinstance(row[0], int) else -1
    if indexed < 0:
        problems.add(_LAST, "query index state is missing (the store was altered)")
        return
    for table, column, select in INDEX_TABLES:
        glue = " AND" if " WHERE " in select else " WHERE"
        derived = f"{select}{glue} e.seq <= ?1"
        kept = f"SELECT {column}, seq FROM {table}"  # noqa: S608
        missing = conn.execute(
            f"SELECT MIN(seq), count(*) FROM ({derived} EXCEPT {kept})",  # noqa: S608
            (indexed,),
        ).fetchone()
        extra = conn.execute(
            f"SELECT MIN(seq), count(*) FROM ({kept} EXCEPT {derived})",  # noqa: S608
            (indexed,),
        ).fetchone()
        if missing[1]:
            problems.add(
                int(missing[0]),
                f"query index {table} lacks {missing[1]} entries from entry {missing[0]} "
                "(trails and reports would omit them)",
            )
        if extra[1]:
            problems.add(
                _LAST,
                f"query index {table} has {extra[1]} rows that match no entry "
                f"(first at seq {extra[0]})",
            )
