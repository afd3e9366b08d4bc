"""Reading and editing audit store files the way someone holding them would.

The store is a SQLite file plus a folder of JSON Lines segment files (format
v3, ``audit/_format.py``). These helpers read and rewrite both from the
format's description, not through ``AuditStore``: an attacker has the files,
not our code, and the tests should not trust the code they test to read its
own output.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import struct
from collections.abc import Mapping
from pathlib import Path

from audit import Frontier, leaf_hash


def segments_of(path: Path) -> Path:
    return path.with_name(path.name + "-segments")


def stored_entries(path: Path) -> dict[int, bytes]:
    """seq -> entry bytes, as the batch rows and segment files say."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT first_seq, segment, offset, ends FROM batches ORDER BY first_seq"
        ).fetchall()
    finally:
        conn.close()
    entries: dict[int, bytes] = {}
    for first, segment, offset, ends_blob in rows:
        ends = struct.unpack(f"<{len(ends_blob) // 8}Q", ends_blob)
        data = (segments_of(path) / f"entries-{segment:08d}.jsonl").read_bytes()
        start = 0
        for index, end in enumerate(ends):
            chunk = data[offset + start : offset + end]
            assert chunk.endswith(b"\n"), "not a v3 store"
            entries[first + index] = chunk[:-1]
            start = end
    return entries


def attack(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Edit the SQLite file as an attacker would: drop the triggers, then write."""
    conn = sqlite3.connect(path)
    try:
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        for sql, params in statements:
            conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def rewrite_entries(path: Path, entries: Mapping[int, bytes]) -> None:
    """Make the files hold exactly ``entries`` (seq -> bytes); the tree rows stay as they are.

    A careful attacker: one new segment file, one batch row per run of
    consecutive seqs, and batch entry-id lists that match the new entries.
    """
    folder = segments_of(path)
    shutil.rmtree(folder)
    folder.mkdir()
    data = bytearray()
    rows: list[tuple[int, int, bytes, str]] = []
    run: list[int] = []
    for seq in sorted(entries):
        if run and seq != run[-1] + 1:
            rows.append(_batch_row(run, entries, data))
            run = []
        run.append(seq)
    if run:
        rows.append(_batch_row(run, entries, data))
    (folder / "entries-00000001.jsonl").write_bytes(bytes(data))
    attack(
        path,
        ("DELETE FROM batches", ()),
        *(
            (
                "INSERT INTO batches(first_seq, segment, offset, ends, entry_ids) "
                "VALUES (?, 1, ?, ?, ?)",
                row,
            )
            for row in rows
        ),
    )


def _batch_row(
    run: list[int], entries: Mapping[int, bytes], data: bytearray
) -> tuple[int, int, bytes, str]:
    offset = len(data)
    ends = []
    ids = []
    for seq in run:
        data += entries[seq] + b"\n"
        ends.append(len(data) - offset)
        ids.append(json.loads(entries[seq]).get("entry_id") if entries[seq][:1] == b"{" else "")
    return run[0], offset, struct.pack(f"<{len(ends)}Q", *ends), json.dumps(ids)


def rehash_tree(path: Path) -> None:
    """Recompute the stored leaf hashes and tree state from the (altered) entries."""
    entries = stored_entries(path)
    leaves = [leaf_hash(entries[seq]) for seq in sorted(entries)]
    frontier = Frontier()
    frontier.extend(leaves)
    attack(
        path,
        ("DELETE FROM tree", ()),
        (
            "INSERT INTO tree(first_seq, leaves, frontier) VALUES (1, ?, ?)",
            (b"".join(leaves), frontier.to_bytes()),
        ),
    )
