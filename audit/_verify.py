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

from schemas import AuditError, LogTamperedError, ReasonCode, SaferError

from ._format import APPLICATION_ID, FORMAT_VERSION, INDEX_COLUMNS, INDEX_TABLES, TABLES, TRIGGERS
from ._merkle import EMPTY_ROOT, HASH_SIZE, Frontier, MerkleTree
from ._note import LogKey, open_checkpoint, parse_body, parse_note
from ._record import AuditRecord

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
    the log. ``consistent``: no entry is missing, and the log matches every
    checkpoint (and every kept anchor), none of which is beyond its end.
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
    """Findings, ordered by the entry they are about, then by how telling they are."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, int, str]] = []

    def add(self, seq: int, problem: str, rank: int = 6) -> None:
        self.items.append((seq, rank, len(self.items), problem))

    def final(self) -> list[str]:
        ordered = [text for *_, text in sorted(self.items)]
        if len(ordered) > MAX_PROBLEMS:
            cut = len(ordered) - MAX_PROBLEMS
            return [*ordered[:MAX_PROBLEMS], f"... and {cut} more problems"]
        return ordered


# Ranks: what to list first among problems about the same entry.
_R_MISSING, _R_MOVED, _R_LEAF, _R_SIGNED, _R_COLUMNS, _R_CHECKPOINT = range(6)


@dataclass
class _Checkpoint:
    label: str  # "checkpoint 3" or "kept checkpoint 1"
    size: int
    root: bytes
    signed: bool  # signature verified by the log key
    trusted: bool  # signed, or no key was given (then the file is all there is to go on)
    stored: bool  # a row of the store (not an anchor the caller kept)
    frontier: Frontier | None = None
    matched: bool | None = None  # None: could not be checked (entries missing)
    first_diff: int | None = None  # first entry that differs from its signed leaf


@dataclass
class _SignedLeaves:
    """The leaf hashes a checkpoint row keeps for entries ``first``.. (since the previous one).

    They are bound to the checkpoint's signed root only if, folded onto the
    previous checkpoint's (verified) frontier, they give that root. The fold
    costs a hash per leaf, so it is done only when the leaves disagree with
    the entries, to decide whether the disagreement can be pinned on an entry.
    """

    first: int
    leaves: bytes
    checkpoint: _Checkpoint
    start: Frontier
    _holds: bool | None = None

    def holds(self) -> bool:
        if self._holds is None:
            folded = self.start.copy()
            data = self.leaves
            folded.extend(data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))
            self._holds = folded.root() == self.checkpoint.root
        return self._holds


@dataclass
class _State:
    problems: _Problems = field(default_factory=_Problems)
    checkpoints: list[_Checkpoint] = field(default_factory=list)
    forged: int = 0
    signed_leaves: list[_SignedLeaves] = field(default_factory=list)


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
    conn.execute("PRAGMA temp_store = MEMORY")  # the index checks sort in memory
    return conn


def verify_store(
    path: Path,
    *,
    key: LogKey | None = None,
    origin: str | None = None,
    anchors: Sequence[str] = (),
    index: bool = True,
) -> LogSummary:
    """Recompute the whole log; return a ``LogSummary`` or raise ``StoreTamperedError``.

    ``key`` is the log's public key: with it, checkpoint signatures are
    checked and forged checkpoints reported. ``origin`` (default: the origin
    of the first checkpoint) is the log every checkpoint must name.
    ``anchors`` are signed checkpoint notes kept outside the store (by an
    auditor, a ticket, an email); the log must still match each of them, which
    catches truncation even when the attacker also removed stored checkpoints.
    With ``index`` (the default) the plain query columns and the query index
    are checked against the entries too; without it only the log itself (the
    entries, their order, the tree and the checkpoints) is checked, which is
    what the signatures cover and several times faster.

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
        summary, problems = _verify(conn, key, origin, anchors, index)
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
        cp = _Checkpoint(label, body.size, body.root, trusted, trusted or key is None, stored=True)
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
            cp.trusted
            and cp.frontier is not None
            and len(delta) == (body.size - previous_size) * HASH_SIZE
            and (
                previous_size == 0
                or (previous is not None and previous.trusted and previous.frontier is not None)
            )
        ):
            start = Frontier() if previous_size == 0 or previous is None else previous.frontier
            if start is not None and delta:
                state.signed_leaves.append(_SignedLeaves(previous_size + 1, delta, cp, start))
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
        state.checkpoints.append(_Checkpoint(label, body.size, body.root, True, True, stored=False))


def _stored_leaves(conn: sqlite3.Connection, problems: _Problems) -> tuple[bytes, bytes]:
    """All stored leaf hashes (from seq 1, contiguous) and the last stored frontier."""
    parts: list[bytes] = []
    end = 0
    frontier = b""
    for first, blob, last_frontier in conn.execute(
        "SELECT first_seq, leaves, frontier FROM tree ORDER BY first_seq"
    ):
        data = bytes(blob) if isinstance(blob, bytes) else b""
        if first != end + 1 or not data or len(data) % HASH_SIZE:
            problems.add(
                first if isinstance(first, int) else _LAST,
                f"tree row at entry {first} does not follow the one before it (tree rows altered)",
            )
            break
        parts.append(data)
        end += len(data) // HASH_SIZE
        frontier = bytes(last_frontier) if isinstance(last_frontier, bytes) else b""
    return b"".join(parts), frontier


def _diagnose(seq: int, entry: bytes, columns: tuple[Any, ...], problems: _Problems) -> None:
    """Explain why an entry's bytes do not fit its row (the slow, exact path)."""
    try:
        parsed = json.loads(entry.decode("utf-8"))
        if not isinstance(parsed, dict):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        problems.add(seq, f"entry {seq} modified: it is not a canonical audit record", _R_COLUMNS)
        return
    claimed = parsed.get("seq")
    if claimed != seq:
        problems.add(seq, f"entry at seq {seq} claims seq {claimed} (reordered?)", _R_MOVED)
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
        problems.add(
            seq,
            f"entry {seq} index columns do not match the entry: {', '.join(wrong)}",
            _R_COLUMNS,
        )
    elif claimed == seq:
        try:
            AuditRecord.from_canonical(entry)
        except SaferError as exc:
            problems.add(
                seq,
                f"entry {seq} modified: it is not a canonical audit record ({exc.message})",
                _R_COLUMNS,
            )


#: Rows whose entry may not carry their seq and plain columns: a fast filter in
#: SQL (SQLite renders both sides the same way), each hit checked exactly by ``_diagnose``.
_SUSPECTS = f"""
SELECT seq, {", ".join(INDEX_COLUMNS)}, entry FROM entries
WHERE json_extract(CAST(entry AS TEXT), '$.seq', '$.entry_id', '$.event', '$.disclosure_id',
    '$.concern_id', '$.recipient', '$.lscp', '$.lawful_basis', '$.at', '$.subject_pseudonyms')
  IS NOT json_array(seq, entry_id, event, disclosure_id, concern_id, recipient, lscp,
    lawful_basis, at, json(subject_pseudonyms))
ORDER BY seq
"""  # noqa: S608


def _ranges_differ(a: bytes, b: bytes, first_seq: int, skip: set[int]) -> Iterator[int]:
    """Seqs whose 32-byte leaf differs between ``a`` and ``b`` (same length), chunk by chunk."""
    step = 4096 * HASH_SIZE
    for start in range(0, len(a), step):
        if a[start : start + step] == b[start : start + step]:
            continue
        stop = min(len(a), start + step)
        for offset in range(start, stop, HASH_SIZE):
            seq = first_seq + offset // HASH_SIZE
            if a[offset : offset + HASH_SIZE] != b[offset : offset + HASH_SIZE] and seq not in skip:
                yield seq


def _verify(
    conn: sqlite3.Connection,
    key: LogKey | None,
    origin: str | None,
    anchors: Sequence[str],
    index: bool,
) -> tuple[LogSummary, list[str]]:
    state = _State()
    problems = state.problems
    origin = _load_checkpoints(conn, key, origin, state)
    if key is not None:
        _load_anchors(anchors, key, origin, state)
    stored, stored_frontier = _stored_leaves(conn, problems)

    # One pass over the entries: recompute every leaf. A missing entry's place is
    # taken by its stored leaf hash (if any), so later checkpoints can still be checked.
    computed = bytearray()
    suspects: list[int] = []  # entries whose claimed seq did not read back as their own
    missing: set[int] = set()
    unknown_from: int | None = None  # first seq with no leaf at all
    present = 0
    expected = 1
    sha = hashlib.sha256
    cursor = conn.execute("SELECT seq, entry FROM entries ORDER BY seq")
    while rows := cursor.fetchmany(4096):
        for seq, entry in rows:
            if seq != expected:
                if not isinstance(seq, int) or seq < expected:
                    problems.add(_LAST, f"row with seq {seq!r} is out of sequence")
                    continue
                problems.add(expected, _missing(expected, seq - 1), _R_MISSING)
                missing.update(range(expected, seq))
                fill = stored[(expected - 1) * HASH_SIZE : (seq - 1) * HASH_SIZE]
                if len(fill) != (seq - expected) * HASH_SIZE:
                    if unknown_from is None:
                        unknown_from = expected + len(fill) // HASH_SIZE
                    fill = fill.ljust((seq - expected) * HASH_SIZE, b"\0")
                computed += fill
            if type(entry) is not bytes:
                problems.add(seq, f"entry {seq} modified: it is not a blob", _R_LEAF)
                entry = str(entry).encode()
            computed += sha(b"\x00" + entry).digest()
            # The seq the entry claims: in canonical JSON ',"seq":' occurs once, near the end.
            at = entry.rfind(b',"seq":')
            if at < 0 or entry[at + 7 : entry.find(b",", at + 7)] != b"%d" % seq:
                suspects.append(seq)
            present += 1
            expected = seq + 1
    size = expected - 1

    # Stored leaf hashes, and the leaf hashes signed checkpoints vouch for.
    common = min(len(stored), len(computed))
    leaf_mismatch = False
    for seq in _ranges_differ(bytes(computed[:common]), stored[:common], 1, missing):
        leaf_mismatch = True
        problems.add(seq, f"entry {seq} modified: it does not match its stored leaf hash", _R_LEAF)
    if len(stored) < len(computed):
        first = len(stored) // HASH_SIZE + 1
        problems.add(
            first,
            f"entries from {first} have no stored leaf hashes (tree rows removed)",
            _R_LEAF,
        )
    for signed in state.signed_leaves:
        first, blob, cp = signed.first, signed.leaves, signed.checkpoint
        start = (first - 1) * HASH_SIZE
        mine = bytes(computed[start : start + len(blob)])
        differ = list(_ranges_differ(mine, blob[: len(mine)], first, missing))
        if not differ or not signed.holds():
            continue
        for seq in differ:
            problems.add(
                seq,
                f"entry {seq} differs from the entry signed in {cp.label} "
                f"(size {cp.size}): changed after it was signed",
                _R_SIGNED,
            )
            if cp.first_diff is None:
                cp.first_diff = seq

    # Every entry must carry its own seq and, with ``index``, the row's plain columns.
    columns = ", ".join(INDEX_COLUMNS)
    rows = conn.execute(_SUSPECTS).fetchall() if index else []
    for start in range(0, min(len(suspects), MAX_PROBLEMS), 500):
        chunk = suspects[start : start + 500]
        rows += conn.execute(
            f"SELECT seq, {columns}, entry FROM entries "  # noqa: S608
            f"WHERE seq IN ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
    diagnosed: set[int] = set()
    for row in sorted(rows, key=lambda r: r[0]):
        if row[0] in diagnosed:
            continue
        diagnosed.add(row[0])
        entry = row[-1] if isinstance(row[-1], bytes) else str(row[-1]).encode()
        _diagnose(row[0], entry, tuple(row[1:-1]), problems)

    # Roots at every checkpoint's size, from one tree over the recomputed leaves.
    known = size if unknown_from is None else unknown_from - 1
    tree = MerkleTree.from_leaf_bytes(bytes(computed[: known * HASH_SIZE]))
    for cp in state.checkpoints:
        if cp.size <= known:
            cp.matched = tree.root(cp.size) == cp.root
        elif cp.size <= size:
            cp.matched = None
    frontier_ok = unknown_from is None
    gaps = bool(missing)

    tree_end = len(stored) // HASH_SIZE
    if tree_end > size:
        problems.add(
            size + 1,
            f"log truncated: the tree holds leaf hashes up to entry {tree_end} but the "
            f"log ends at entry {size} (entry {size + 1} onward missing)",
            _R_MISSING,
        )
    elif (
        tree_end == size
        and size
        and frontier_ok
        and not leaf_mismatch
        and stored_frontier != tree.frontier(size).to_bytes()
    ):
        problems.add(_LAST, "the stored tree state does not match the entries (tree rows altered)")

    entry_problems = [
        seq
        for seq, rank, _, _ in problems.items
        if rank in (_R_MISSING, _R_MOVED, _R_LEAF, _R_SIGNED) and seq < _LAST
    ]
    first_bad = min(entry_problems, default=None)
    consistent = _judge_checkpoints(state, size, present, first_bad) and not gaps
    if index:
        _check_index(conn, problems)
    present_triggers = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    for name in TRIGGERS:
        if name not in present_triggers:
            problems.add(_LAST, f"append-only trigger {name} is missing (the store was altered)")

    stored_cps = [cp for cp in state.checkpoints if cp.stored]
    latest = stored_cps[-1] if stored_cps else None
    root = tree.root() if frontier_ok else EMPTY_ROOT
    summary = LogSummary(
        entries=present,
        root=root.hex(),
        checkpoints=len(stored_cps) + state.forged,
        checkpoints_verified=sum(1 for cp in stored_cps if cp.signed and cp.matched),
        checkpoint_verified=key is not None
        and state.forged == 0
        and not gaps
        and latest is not None
        and latest.signed
        and bool(latest.matched),
        consistent=consistent,
    )
    return summary, problems.final()


def _judge_checkpoints(state: _State, size: int, present: int, first_bad: int | None) -> bool:
    """Report checkpoints the log no longer matches; True when it matches them all.

    The changed entry is named from the checkpoint's own signed leaves, else
    from the first entry found bad, else as the range since the last
    checkpoint that still matches.
    """
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
                _R_MISSING,
            )
            continue
        if cp.matched is None:
            problems.add(
                cp.size,
                f"{cp.label} at size {cp.size} cannot be checked: entries missing",
                _R_CHECKPOINT,
            )
            consistent = False
            continue
        if cp.matched:
            continue
        consistent = False
        good_before = max((o.size for o in ordered if o.matched and o.size < cp.size), default=0)
        named = cp.first_diff
        if named is None and first_bad is not None and good_before < first_bad <= cp.size:
            named = first_bad
        first = named or good_before + 1
        where = (
            f"entry {first} changed"
            if named is not None
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
                _R_CHECKPOINT,
            )
        else:
            problems.add(
                first,
                f"{cp.label} (size {cp.size}) does not match the log: entries were changed "
                f"after it was written ({where})",
                _R_CHECKPOINT,
            )
    return consistent


def _check_index(conn: sqlite3.Connection, problems: _Problems) -> None:
    """The query index must hold exactly the entries' keys up to ``indexed_seq``.

    The plain columns are copied once into an in-memory temporary table keyed
    by seq. For each index table a quick count decides: every index row must
    match its entry, and there must be as many as the entries give. Only when
    the counts disagree is the exact (sorting) comparison run to say what is
    wrong and where.
    """
    row = conn.execute("SELECT indexed_seq FROM index_state WHERE id = 1").fetchone()
    indexed = int(row[0]) if row is not None and isinstance(row[0], int) else -1
    if indexed < 0:
        problems.add(_LAST, "query index state is missing (the store was altered)")
        return
    conn.execute(f"CREATE TEMP TABLE plain(seq INTEGER PRIMARY KEY, {', '.join(INDEX_COLUMNS)})")
    conn.execute(
        f"INSERT INTO temp.plain SELECT seq, {', '.join(INDEX_COLUMNS)} "  # noqa: S608
        "FROM main.entries WHERE seq <= ?",
        (indexed,),
    )
    try:
        for table, column, select in INDEX_TABLES:
            if table == "ix_subject":
                matches = f"instr(e.subject_pseudonyms, json_quote(i.{column})) > 0"
                expected_sql = "SELECT total(json_array_length(subject_pseudonyms)) FROM temp.plain"
            else:
                matches = f"e.{column} = i.{column}"
                expected_sql = f"SELECT count({column}) FROM temp.plain"  # noqa: S608
            kept, valid = conn.execute(
                f"SELECT count(*), count(e.seq) FROM main.{table} i "  # noqa: S608
                f"LEFT JOIN temp.plain e ON e.seq = i.seq AND {matches}"
            ).fetchone()
            expected = int(conn.execute(expected_sql).fetchone()[0])
            if kept == valid == expected:
                continue
            _explain_index(conn, table, column, select, problems)
    finally:
        conn.execute("DROP TABLE temp.plain")


def _explain_index(
    conn: sqlite3.Connection, table: str, column: str, select: str, problems: _Problems
) -> None:
    """The exact comparison of one index table with the entries it is derived from."""
    derived = select.replace("FROM entries e", "FROM temp.plain e")
    kept = f"SELECT {column}, seq FROM main.{table}"  # noqa: S608
    missing = conn.execute(
        f"SELECT MIN(seq), count(*) FROM ({derived} EXCEPT {kept})"  # noqa: S608
    ).fetchone()
    extra = conn.execute(
        f"SELECT MIN(seq), count(*) FROM ({kept} EXCEPT {derived})"  # noqa: S608
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
