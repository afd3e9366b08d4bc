"""Offline verification of an audit store: the SQLite file and its segment files.

``verify_store`` opens the SQLite file read-only, reads each batch's entries
from the segment files where its ``batches`` row says they are, and trusts
nothing stored but what a signature covers. In one pass, in seq order, it:

- recomputes every leaf hash from the entry bytes and the RFC 9162 root at
  every checkpoint's size;
- checks each checkpoint's C2SP signature with the log's key (forged ones are
  reported and otherwise ignored), and that the log still matches every
  checkpoint and every checkpoint the caller kept elsewhere (``anchors``);
- names the exact entry that changed after a checkpoint was signed, using the
  leaf hashes the checkpoint row keeps (they are bound to the signed root);
- checks that the batches follow each other through the segment files, each
  entry ends with its newline, the batches' entry id lists, the stored leaf
  hashes, the sequence numbers the entries claim, the query columns and the
  query index against the entries, and that the append-only triggers are
  still there.

Bytes in a segment past the last batch are a batch whose commit never
happened (a crash); they are not part of the log and are ignored.

Problems are reported in log order, so the first one names the first bad
sequence number. It never writes, so an auditor can run it on a copy (the
SQLite file and its segments folder) or on the live store.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import sqlite3
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from json.encoder import encode_basestring as _json_str
from pathlib import Path
from typing import Any

import orjson

from schemas import AuditError, LogTamperedError, ReasonCode, SaferError

from ._format import (
    APPLICATION_ID,
    FORMAT_VERSION,
    INDEX_COLUMNS,
    INDEX_TABLES,
    TABLES,
    TRIGGERS,
    segment_path,
    segments_dir,
    unpack_ends,
)
from ._merkle import EMPTY_ROOT, HASH_SIZE, Frontier, MerkleTree
from ._note import LogKey, open_checkpoint, parse_body, parse_note
from ._record import AuditRecord
from ._segments import SegmentReader

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

    ``path`` is the SQLite file; the entries are read from the segments
    folder next to it (``audit.db-segments`` for ``audit.db``), so a copy
    for an auditor must include both. A missing or short segment shows as
    missing entries.

    Raises ``AuditError`` if ``path`` is not a SAFER audit store, if a segment
    file exists but cannot be read, or if ``anchors`` are given without a
    ``key``.
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
        # One read snapshot for every table. A live writer only appends to segments,
        # past the batches this snapshot holds, and those bytes are never read.
        conn.execute("BEGIN")
        summary, problems = _verify(conn, segments_dir(path), key, origin, anchors, index)
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


# The plain columns in the order they are read from entry_columns: the text
# ones first (compared with the parsed entry in one C call), the pseudonyms last.
_TEXT_COLUMNS = tuple(name for name in INDEX_COLUMNS if name != "subject_pseudonyms")
_ROW_COLUMNS = (*_TEXT_COLUMNS, "subject_pseudonyms")
_text_values = operator.itemgetter(*_TEXT_COLUMNS)
_loads = orjson.loads
_dumps = orjson.dumps

_ID_KEY = b'"entry_id":'
_NEWLINE = 0x0A


def _diagnose(seq: int, entry: bytes, columns: Sequence[Any] | None, problems: _Problems) -> None:
    """Explain why an entry does not claim its seq or fit its index columns (the slow, exact path).

    ``columns`` is its ``entry_columns`` row in ``_ROW_COLUMNS`` order, or None
    when the columns are not in question.
    """
    try:
        parsed = json.loads(entry.decode("utf-8"))
        if not isinstance(parsed, dict):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        problems.add(seq, f"entry {seq} modified: it is not a canonical audit record", _R_COLUMNS)
        return
    claimed = parsed.get("seq")
    if type(claimed) is not int:
        # Say nothing of what is there instead: it could be anything the attacker wrote.
        problems.add(
            seq,
            f"entry {seq} modified: it is not a canonical audit record (its seq is not a number)",
            _R_MOVED,
        )
    elif claimed != seq:
        problems.add(seq, f"entry at seq {seq} claims seq {claimed} (reordered?)", _R_MOVED)
    wrong = []
    if columns is not None:
        kept = dict(zip(_ROW_COLUMNS, columns, strict=True))
        for name in INDEX_COLUMNS:
            want = parsed.get(name)
            if name == "subject_pseudonyms":
                want = (
                    "[" + ",".join(map(_json_str, want)) + "]"
                    if isinstance(want, list) and all(isinstance(v, str) for v in want)
                    else want
                )
            if want != kept[name]:
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


def _columns_match(entry: bytes, row: tuple[Any, ...]) -> bool:
    """The fast screen: does ``row`` (seq, then ``_ROW_COLUMNS``) hold the entry's values?

    The pseudonyms column is the JSON text of the entry's list, as orjson
    writes it (json.dumps without ASCII escapes writes the same).
    """
    try:
        parsed = _loads(entry)
        return bool(
            row[1:-1] == _text_values(parsed)
            and row[-1] == _dumps(parsed["subject_pseudonyms"]).decode()
        )
    except (TypeError, ValueError, KeyError):  # not JSON, not an object, a key missing
        return False


class _Runs:
    """Seqs noted in increasing order, reported as runs (``entries 3..9``), not one by one."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def add(self, seq: int) -> None:
        if self.runs and self.runs[-1][1] + 1 == seq:
            self.runs[-1][1] = seq
        else:
            self.runs.append([seq, seq])

    def report(self, problems: _Problems, one: str, many: str) -> None:
        for first, last in self.runs:
            text = one.format(first) if first == last else many.format(first, last)
            problems.add(first, text, _R_COLUMNS)


def _positions(blob: object) -> array[int] | None:
    """A batch's entry ends, or None unless they are whole uint64s, at least one, rising from 1."""
    if type(blob) is not bytes or not blob or len(blob) % 8:
        return None
    ends = unpack_ends(blob)
    if ends[0] < 1 or not all(map(operator.lt, ends, islice(ends, 1, None))):
        return None
    return ends


def _entry_ids(text: object, count: int) -> list[str] | None:
    """A batch's entry id list, or None unless it is a JSON list of ``count`` strings."""
    if not isinstance(text, str | bytes):
        return None
    try:
        ids = _loads(text)
    except ValueError:
        return None
    if type(ids) is not list or len(ids) != count or not all(type(i) is str for i in ids):
        return None
    return ids


class _Batches:
    """The entries, batch by batch in seq order, from where the ``batches`` rows put them.

    Iterating yields (first seq, entries). An entry the segment does not hold
    in full is left out, as if deleted, so the caller reports it missing (or
    the log truncated). Overlapping batches are skipped, so each first seq is
    past every entry yielded before. Problems with the rows themselves are
    reported here. ``end`` is the last seq the (well-formed) rows list.
    """

    def __init__(
        self, conn: sqlite3.Connection, reader: SegmentReader, problems: _Problems
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.problems = problems
        self.rows = 0
        self.end = 0
        self._sizes: dict[int, int] = {}

    def __iter__(self) -> Iterator[tuple[int, list[bytes]]]:
        problems = self.problems
        place: tuple[int, int] | None = (1, 0)  # (segment, offset) where the next batch starts
        taken = 0  # the highest seq a batch row has claimed so far
        dumps = _dumps
        for first, segment, offset, blob, id_list in self.conn.execute(
            "SELECT first_seq, segment, offset, ends, entry_ids FROM batches ORDER BY first_seq"
        ):
            self.rows += 1
            if first <= taken:
                problems.add(
                    first,
                    f"batch at entry {first} overlaps the one before it (batches altered)",
                    _R_LEAF,
                )
                continue
            ends = _positions(blob)
            if ends is None:
                problems.add(
                    first,
                    f"batch at entry {first} has malformed entry positions (batches altered)",
                    _R_MISSING,
                )
                taken = first
                place = None  # its length is unknown, and so where the next one starts
                continue
            taken = self.end = first + len(ends) - 1
            valid = type(segment) is int and type(offset) is int and segment >= 1 and offset >= 0
            if not valid or (
                place is not None
                and not (
                    (segment == place[0] and offset == place[1])
                    or (segment > place[0] and offset == 0)
                )
            ):
                problems.add(
                    first,
                    f"batch at entry {first} does not start where the one before it ended "
                    "(segments altered)",
                    _R_MISSING,  # before what follows from it: entries missing or garbled
                )
            if not valid:
                place = None
                continue
            if place is not None and segment != place[0]:
                self.reader.forget()  # segments only go forward: keep one file open, not all
            place = (segment, offset + ends[-1])
            data = self._read(segment, offset, ends[-1])
            ids = _entry_ids(id_list, len(ends))
            if ids is None:
                problems.add(
                    first,
                    f"batch at entry {first} has a malformed entry id list (batches altered)",
                    _R_COLUMNS,
                )
            entries: list[bytes] = []
            have = len(data)
            start = 0
            for i, end in enumerate(ends):
                if end > have:
                    break  # the segment is short: this entry and the rest are absent
                entry = data[start : end - 1]
                if data[end - 1] != _NEWLINE:
                    problems.add(
                        first + i,
                        f"entry {first + i} modified: its bytes in the segment do not end where "
                        "the batch says (segment altered)",
                        _R_LEAF,
                    )
                # Canonical JSON has no whitespace, and a quote inside a string is escaped,
                # so '"entry_id":' occurs only as the key: a byte search is exact.
                if ids is not None and _ID_KEY + dumps(ids[i]) not in entry:
                    problems.add(
                        first + i,
                        f"entry {first + i}: the batch's entry id list does not match the entry "
                        "(batches altered; duplicates could slip in)",
                        _R_COLUMNS,
                    )
                entries.append(entry)
                start = end
            if entries:
                yield first, entries

    def _read(self, segment: int, offset: int, length: int) -> bytes:
        """The batch's bytes: fewer if the segment is short, none if it is gone."""
        size = self._sizes.get(segment)
        if size is None:
            try:
                size = os.stat(segment_path(self.reader.folder, segment)).st_size
            except (FileNotFoundError, NotADirectoryError):
                size = 0
            except OSError:
                size = offset + length  # the reader will say what is wrong
            self._sizes[segment] = size
        # Capped at the file's size, so a forged end cannot make the read allocate gigabytes.
        length = min(length, size - offset)
        return self.reader.read(segment, offset, length) if length > 0 else b""


class _Columns:
    """``entry_columns`` rows, read in seq order alongside the entries (a merge by seq).

    Every entry up to ``indexed`` must have its row, holding its values;
    every row must belong to such an entry. Memory stays bounded: rows are
    fetched in chunks and passed over once.
    """

    def __init__(self, conn: sqlite3.Connection, indexed: int) -> None:
        self.indexed = indexed
        self.lacking = _Runs()  # entries up to ``indexed`` with no row
        self.orphans = _Runs()  # rows of entries that are not in the log
        self._rows = self._fetch(conn)
        self._row = next(self._rows, None)

    @staticmethod
    def _fetch(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
        cursor = conn.execute(
            f"SELECT seq, {', '.join(_ROW_COLUMNS)} FROM entry_columns ORDER BY seq"  # noqa: S608
        )
        while rows := cursor.fetchmany(4096):
            yield from rows

    def row(self, seq: int) -> tuple[Any, ...] | None:
        """The row of entry ``seq`` (asked in increasing order, up to ``indexed``)."""
        row = self._row
        while row is not None and row[0] < seq:
            self.orphans.add(row[0])  # an entry missing from the log
            row = next(self._rows, None)
        if row is None or row[0] != seq:
            self._row = row
            self.lacking.add(seq)
            return None
        self._row = next(self._rows, None)
        return row

    def finish(self, size: int, problems: _Problems) -> None:
        """Report the rows left over, and the entries that had none."""
        beyond = _Runs()  # rows of entries past ``indexed``: the index state was set back
        row = self._row
        while row is not None:
            (beyond if self.indexed < row[0] <= size else self.orphans).add(row[0])
            row = next(self._rows, None)
        self._row = None
        self.lacking.report(
            problems,
            "entry {} has no index columns (the query index was altered)",
            "entries {}..{} have no index columns (the query index was altered)",
        )
        self.orphans.report(
            problems,
            "index columns for entry {} match no entry",
            "index columns for entries {}..{} match no entry",
        )
        beyond.report(
            problems,
            "entry {} has index columns beyond the indexed part of the log "
            "(the query index was altered)",
            "entries {}..{} have index columns beyond the indexed part of the log "
            "(the query index was altered)",
        )
        if self.indexed > size:
            problems.add(
                _LAST,
                f"the query index covers entries up to {self.indexed} but the log ends at "
                f"entry {size} (entries removed?)",
            )


def _indexed_seq(conn: sqlite3.Connection, problems: _Problems) -> int | None:
    row = conn.execute("SELECT indexed_seq FROM index_state WHERE id = 1").fetchone()
    if row is None or type(row[0]) is not int or row[0] < 0:
        problems.add(_LAST, "query index state is missing (the store was altered)")
        return None
    return int(row[0])


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
    folder: Path,
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
    indexed = _indexed_seq(conn, problems) if index else None
    columns = _Columns(conn, indexed) if indexed is not None else None

    # One pass over the entries: recompute every leaf. A missing entry's place is
    # taken by its stored leaf hash (if any), so later checkpoints can still be checked.
    computed = bytearray()
    missing: set[int] = set()
    unknown_from: int | None = None  # first seq with no leaf at all
    present = 0
    expected = 1
    diagnosed = 0
    sha = hashlib.sha256
    reader = SegmentReader(folder)
    batches = _Batches(conn, reader, problems)
    try:
        for first, entries in batches:
            if first != expected:  # never lower: _Batches skips overlapping batches
                problems.add(expected, _missing(expected, first - 1), _R_MISSING)
                missing.update(range(expected, first))
                fill = stored[(expected - 1) * HASH_SIZE : (first - 1) * HASH_SIZE]
                if len(fill) != (first - expected) * HASH_SIZE:
                    if unknown_from is None:
                        unknown_from = expected + len(fill) // HASH_SIZE
                    fill = fill.ljust((first - expected) * HASH_SIZE, b"\0")
                computed += fill
            suspects: dict[int, tuple[Any, ...] | None] = {}  # seq -> its row, if in question
            for seq, entry in enumerate(entries, first):
                computed += sha(b"\x00" + entry).digest()
                # The seq the entry claims: in canonical JSON ',"seq":' occurs once, near the end.
                at = entry.rfind(b',"seq":')
                if at < 0 or entry[at + 7 : entry.find(b",", at + 7)] != b"%d" % seq:
                    suspects[seq] = None
            if columns is not None and first <= columns.indexed:
                # Only here is each entry parsed: the plain columns are not signed, so
                # ``index=False`` (the log alone) skips this.
                for seq, entry in enumerate(entries[: columns.indexed - first + 1], first):
                    row = columns.row(seq)
                    if row is not None and not _columns_match(entry, row):
                        suspects[seq] = row[1:]
            for seq in sorted(suspects):
                if diagnosed < MAX_PROBLEMS:  # beyond that the list is cut anyway
                    diagnosed += 1
                    _diagnose(seq, entries[seq - first], suspects[seq], problems)
            present += len(entries)
            expected = first + len(entries)
    finally:
        reader.close()
    size = expected - 1
    if batches.rows and not folder.is_dir():
        problems.add(_LAST, f"the segments folder {folder.name} is missing: no entry can be read")

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

    # Roots at every checkpoint's size, from one tree over the recomputed leaves.
    known = size if unknown_from is None else unknown_from - 1
    tree = MerkleTree.from_leaf_bytes(bytes(computed[: known * HASH_SIZE]))
    for cp in state.checkpoints:
        if cp.size <= known:
            cp.matched = tree.root(cp.size) == cp.root
        elif cp.size <= size:
            cp.matched = None
    frontier_ok = unknown_from is None
    # Entries the batch rows list but the segments do not hold are missing too.
    gaps = bool(missing) or batches.end > size

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
    if batches.end > size:
        problems.add(
            size + 1,
            f"log truncated: the batches list entries up to entry {batches.end} but the "
            f"segment files hold only up to entry {size} (entry {size + 1} onward missing)",
            _R_MISSING,
        )

    entry_problems = [
        seq
        for seq, rank, _, _ in problems.items
        if rank in (_R_MISSING, _R_MOVED, _R_LEAF, _R_SIGNED) and seq < _LAST
    ]
    first_bad = min(entry_problems, default=None)
    consistent = _judge_checkpoints(state, size, present, first_bad) and not gaps
    if columns is not None:
        columns.finish(size, problems)
        _check_index(conn, columns.indexed, problems)
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


def _check_index(conn: sqlite3.Connection, indexed: int, problems: _Problems) -> None:
    """The query index must hold exactly the keys of ``entry_columns`` up to ``indexed_seq``.

    ``entry_columns`` itself was checked against the entries in the pass. For
    each index table a quick count decides: every index row must match its
    entry's columns (a primary-key lookup), and there must be as many as the
    columns give. Only when the counts disagree is the exact (sorting)
    comparison run to say what is wrong and where.
    """
    for table, column, select in INDEX_TABLES:
        if table == "ix_subject":
            matches = f"instr(e.subject_pseudonyms, json_quote(i.{column})) > 0"
            expected_sql = (
                "SELECT total(json_array_length(subject_pseudonyms)) FROM main.entry_columns "
                "WHERE seq <= ?"
            )
        else:
            matches = f"e.{column} = i.{column}"
            expected_sql = f"SELECT count({column}) FROM main.entry_columns WHERE seq <= ?"  # noqa: S608
        try:
            kept, valid = conn.execute(
                f"SELECT count(*), count(e.seq) FROM main.{table} i "  # noqa: S608
                f"LEFT JOIN main.entry_columns e ON e.seq = i.seq AND e.seq <= ? AND {matches}",
                (indexed,),
            ).fetchone()
            expected = int(conn.execute(expected_sql, (indexed,)).fetchone()[0])
            if kept == valid == expected:
                continue
            _explain_index(conn, table, column, select, indexed, problems)
        except sqlite3.OperationalError as exc:
            # An index table dropped, or a pseudonym column that is no longer JSON
            # (that row is already reported): say so rather than stop verifying.
            problems.add(_LAST, f"query index {table} could not be checked ({exc})")


def _explain_index(
    conn: sqlite3.Connection,
    table: str,
    column: str,
    select: str,
    indexed: int,
    problems: _Problems,
) -> None:
    """The exact comparison of one index table with the columns it is derived from."""
    derived = f"SELECT * FROM ({select}) WHERE seq <= ?"  # noqa: S608
    kept = f"SELECT {column}, seq FROM main.{table}"  # noqa: S608
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
