"""Tamper detection on real store files: every case names the first bad seq.

Each attack is done the way someone holding the files would do it: a raw
sqlite3 connection that drops the append-only triggers and edits rows, and
plain file writes to the segment files (see ``audit_files``). The thorough
attacks also recompute every hash the store keeps (leaf hashes and tree
state), so only the signed checkpoints can give them away.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from audit import (
    DEFAULT_ORIGIN,
    AuditRecord,
    AuditStore,
    MerkleTree,
    StoreTamperedError,
    leaf_hash,
    verify_consistency,
    verify_store,
)
from audit._note import format_body
from schemas import AuditError, LogTamperedError, ReasonCode

from .audit_files import attack, rehash_tree, rewrite_entries, stored_entries
from .test_audit_store import T0, fill, make_record, signer

KEY = signer()


_attack = attack


def _restore_triggers(path: Path) -> None:
    """A careful attacker puts the triggers back so nothing looks altered."""
    with AuditStore(path):
        pass  # opening re-runs CREATE TRIGGER IF NOT EXISTS


def _entry(path: Path, seq: int) -> bytes:
    return stored_entries(path)[seq]


def _edit(path: Path, seq: int, old: bytes, new: bytes) -> None:
    """Change bytes inside entry ``seq`` in its segment file (and nothing else)."""
    entries = stored_entries(path)
    assert old in entries[seq]
    entries[seq] = entries[seq].replace(old, new)
    rewrite_entries(path, entries)


def _rewrite(path: Path, seq: int, record: AuditRecord, *, new_seq: int | None = None) -> None:
    """Replace entry ``seq`` with ``record``, optionally renumbering it."""
    target = seq if new_seq is None else new_seq
    entries = stored_entries(path)
    del entries[seq]
    entries[target] = record.entry_bytes(target)
    rewrite_entries(path, entries)


def _remove(path: Path, *seqs: int) -> None:
    entries = stored_entries(path)
    for seq in seqs:
        del entries[seq]
    rewrite_entries(path, entries)


def _changed(path: Path, seq: int, **changes: object) -> AuditRecord:
    return dataclasses.replace(AuditRecord.from_canonical(_entry(path, seq)), **changes)  # type: ignore[arg-type]


def _problems(path: Path, **kwargs: object) -> StoreTamperedError:
    with pytest.raises(StoreTamperedError) as caught:
        verify_store(path, key=KEY.key, **kwargs)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, LogTamperedError)
    assert error.code == ReasonCode.AUDIT_TAMPERED and error.problems and error.hint
    return error


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Eight entries in two batches and a checkpoint signed at size 8."""
    path = tmp_path / "audit.db"
    fill(path, 8, key=KEY, checkpoint=True, batch=4)
    assert verify_store(path, key=KEY.key).checkpoint_verified
    return path


# -- modified entries -------------------------------------------------------------


def test_modified_entry_is_named(log: Path) -> None:
    _edit(log, 3, b'"recipient":"recipient-1"', b'"recipient":"recipient-0"')
    error = _problems(log)
    assert error.problems[0] == "entry 3 modified: it does not match its stored leaf hash"
    assert (
        "entry 3 differs from the entry signed in checkpoint 1 (size 8): changed after it "
        "was signed" in error.problems
    )
    assert any(
        p.startswith("checkpoint 1 (size 8) does not match the log") and "(entry 3 changed)" in p
        for p in error.problems
    )
    assert not error.summary.consistent and not error.summary.checkpoint_verified
    assert error.summary.entries == 8


def test_the_first_problem_names_the_entry_even_with_several_checkpoints(log: Path) -> None:
    with AuditStore(log, signer=KEY) as store:
        store.checkpoint()  # on demand, at the same size: it keeps no leaves of its own
        store.append([make_record(i) for i in range(9, 12)])
        store.checkpoint()
    _edit(log, 6, b'"purpose":"safeguarding"', b'"purpose":"marketing"')
    error = _problems(log)
    assert error.problems[0] == "entry 6 modified: it does not match its stored leaf hash"
    changed = [p for p in error.problems if p.startswith("checkpoint ")]
    assert len(changed) == 3 and all(p.endswith("(entry 6 changed)") for p in changed)


def test_modified_entry_with_every_stored_hash_recomputed_is_named_by_the_signature(
    log: Path,
) -> None:
    _rewrite(log, 5, _changed(log, 5, lawful_basis="NONE"))
    rehash_tree(log)
    _restore_triggers(log)
    error = _problems(log)
    assert error.problems[0] == (
        "entry 5 differs from the entry signed in checkpoint 1 (size 8): changed after it was "
        "signed"
    )
    assert len(error.problems) == 2  # and the checkpoint itself no longer matches


def test_a_modified_plain_column_is_detected(log: Path) -> None:
    with AuditStore(log) as store:
        list(store.records(recipient="recipient-0"))  # builds the index
    _attack(log, ("UPDATE entry_columns SET recipient = 'recipient-9' WHERE seq = 2", ()))
    error = _problems(log)
    assert error.problems[0] == "entry 2 index columns do not match the entry: recipient"


# -- deleted entries ----------------------------------------------------------------


def test_deleted_entries_are_named_without_cascading(log: Path) -> None:
    _remove(log, 3, 4)
    error = _problems(log)
    assert error.problems[0] == "entries 3..4 missing (deleted?)"
    assert not any("entry 5" in p or "entry 6" in p for p in error.problems)
    assert error.summary.entries == 6 and not error.summary.consistent


def test_deleted_entry_with_the_log_renumbered_and_rehashed_is_named(log: Path) -> None:
    """Entry 3 removed, later entries moved down and re-encoded: the signed leaves give it away."""
    entries = stored_entries(log)
    records = [AuditRecord.from_canonical(entries[seq]) for seq in range(4, 9)]
    del entries[8]
    for seq, record in zip(range(4, 9), records, strict=True):
        entries[seq - 1] = record.entry_bytes(seq - 1)
    rewrite_entries(log, entries)
    rehash_tree(log)
    _restore_triggers(log)
    error = _problems(log)
    assert error.problems[0] == (
        "entry 3 differs from the entry signed in checkpoint 1 (size 8): changed after it was "
        "signed"
    )
    assert (
        "log truncated: checkpoint 1 is at size 8 but the log has only 7 entries "
        "(entry 8 onward missing)" in error.problems
    )


# -- reordered entries ----------------------------------------------------------------


def test_swapped_entries_are_detected_as_reordered(log: Path) -> None:
    entries = stored_entries(log)
    entries[2], entries[4] = entries[4], entries[2]
    rewrite_entries(log, entries)
    rehash_tree(log)  # the stored leaves follow the swap too
    error = _problems(log)
    assert error.problems[0] == "entry at seq 2 claims seq 4 (reordered?)"
    assert "entry at seq 4 claims seq 2 (reordered?)" in error.problems


def test_reordered_entries_renumbered_to_fit_are_named_by_the_signature(log: Path) -> None:
    second = AuditRecord.from_canonical(_entry(log, 2))
    fourth = AuditRecord.from_canonical(_entry(log, 4))
    _rewrite(log, 2, fourth)
    _rewrite(log, 4, second)
    rehash_tree(log)
    _restore_triggers(log)
    error = _problems(log)
    assert error.problems[0].startswith("entry 2 differs from the entry signed in checkpoint 1")


# -- truncation --------------------------------------------------------------------------


def test_truncation_is_detected_by_the_checkpoint_and_the_tree(log: Path) -> None:
    _remove(log, 6, 7, 8)
    error = _problems(log)
    assert error.problems[0] == (
        "log truncated: the tree holds leaf hashes up to entry 8 but the log ends at entry 5 "
        "(entry 6 onward missing)"
    )
    assert (
        "log truncated: checkpoint 1 is at size 8 but the log has only 5 entries "
        "(entry 6 onward missing)" in error.problems
    )


def test_truncation_that_also_removes_the_checkpoints_needs_a_kept_checkpoint(
    log: Path,
) -> None:
    kept = AuditStore(log, signer=KEY).latest_checkpoint(signed=True)
    assert kept is not None
    _remove(log, 6, 7, 8)
    _attack(log, ("DELETE FROM checkpoints", ()))
    rehash_tree(log)
    _restore_triggers(log)
    verify_store(log, key=KEY.key)  # nothing in the file gives it away any more...
    error = _problems(log, anchors=[kept.note])  # ...but the checkpoint the DPO kept does
    assert error.problems == [
        "log truncated: kept checkpoint 1 is at size 8 but the log has only 5 entries "
        "(entry 6 onward missing)"
    ]


# -- forged and inconsistent checkpoints ------------------------------------------------------


def _insert_checkpoint(path: Path, note: str, size: int, root: bytes) -> None:
    _attack(
        path,
        (
            "INSERT INTO checkpoints(size, root, note, frontier, leaves, at) "
            "VALUES (?, ?, ?, x'', x'', '2025-03-04T09:00:00.000Z')",
            (size, root, note),
        ),
    )


def test_a_checkpoint_signed_by_another_key_is_forged(log: Path) -> None:
    root = MerkleTree([leaf_hash(b"a history that never was")] * 8).root()
    note = signer().sign(format_body(DEFAULT_ORIGIN, 8, root))
    _insert_checkpoint(log, note, 8, root)
    error = _problems(log)
    assert error.problems[0] == (
        f"checkpoint 2 (size 8) is forged: checkpoint is not signed by the log key "
        f"{DEFAULT_ORIGIN} (signed by: {DEFAULT_ORIGIN})"
    )
    assert not error.summary.checkpoint_verified
    assert error.summary.consistent  # the log still matches every genuine checkpoint


def test_an_edited_checkpoint_is_forged(log: Path) -> None:
    conn = sqlite3.connect(log)
    note = conn.execute("SELECT note FROM checkpoints WHERE id = 1").fetchone()[0]
    conn.close()
    edited = note.replace("\n8\n", "\n5\n", 1)
    _attack(log, ("UPDATE checkpoints SET note = ?, size = 5 WHERE id = 1", (edited,)))
    error = _problems(log)
    assert error.problems[0].startswith("checkpoint 1 (size 5) is forged: checkpoint signature")
    assert "does not verify" in error.problems[0]


def test_a_checkpoint_inconsistent_with_a_later_one_is_named(tmp_path: Path) -> None:
    """The key holder rewrote entry 3 and signed the new history: the old checkpoint disagrees."""
    path = tmp_path / "audit.db"
    with AuditStore(path, signer=KEY) as store:
        store.append([make_record(i) for i in range(1, 6)])
        store.checkpoint(at=T0)
        store.append([make_record(i) for i in range(6, 9)])
    _rewrite(path, 3, _changed(path, 3, recipient="recipient-7"))
    rehash_tree(path)
    _restore_triggers(path)
    with AuditStore(path, signer=KEY) as store:
        resigned = store.checkpoint(at=T0)  # a valid signature over the rewritten log
        old = store.checkpoints()[0]
        # The RFC 9162 machinery agrees: no consistency proof leads from the old root.
        with pytest.raises(AuditError, match="does not extend"):
            verify_consistency(5, 8, old.root, resigned.root, store.consistency_proof(5))
    error = _problems(path)
    assert error.problems[0] == (
        "entry 3 differs from the entry signed in checkpoint 1 (size 5): changed after it was "
        "signed"
    )
    assert error.problems[1] == (
        "checkpoint 1 (size 5) is not consistent with checkpoint 2 (size 8): both are signed but "
        "the log they describe was rewritten in between (entry 3 changed)"
    )
    assert not error.summary.consistent
    assert error.summary.checkpoint_verified  # the newest (re-signed) checkpoint itself holds


def test_without_the_key_a_rewrite_still_breaks_the_older_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill(path, 6, key=KEY, checkpoint=True)
    _rewrite(path, 2, _changed(path, 2, purpose="marketing"))
    rehash_tree(path)
    _restore_triggers(path)
    with pytest.raises(StoreTamperedError) as caught:
        verify_store(path)
    assert caught.value.problems[0] == (
        "entry 2 differs from the entry signed in checkpoint 1 (size 6): changed after it was "
        "signed"
    )


# -- the rest of the file ----------------------------------------------------------------


def test_a_tampered_query_index_is_detected(log: Path) -> None:
    with AuditStore(log) as store:
        list(store.records(subject="5a1f" * 8))  # builds the index
    _attack(log, ("DELETE FROM ix_subject WHERE seq = 4", ()))
    error = _problems(log)
    assert error.problems[0] == (
        "query index ix_subject lacks 2 entries from entry 4 (trails and reports would omit them)"
    )


def test_a_rekeyed_query_index_row_is_detected(log: Path) -> None:
    """Moving an index row to another key hides the entry from one trail, shows it in another."""
    with AuditStore(log) as store:
        list(store.records(recipient="recipient-0"))
    _attack(
        log,
        ("UPDATE ix_recipient SET recipient = 'recipient-9' WHERE seq = 6", ()),
    )
    error = _problems(log)
    assert error.problems[0] == (
        "query index ix_recipient lacks 1 entries from entry 6 (trails and reports would omit them)"
    )
    assert (
        "query index ix_recipient has 1 rows that match no entry (first at seq 6)" in error.problems
    )


def test_a_tampered_tree_state_is_detected(log: Path) -> None:
    _attack(log, ("UPDATE tree SET frontier = zeroblob(32) WHERE first_seq = 5", ()))
    error = _problems(log)
    assert error.problems == [
        "the stored tree state does not match the entries (tree rows altered)",
        *_TRIGGER_PROBLEMS,
    ]
    with pytest.raises(AuditError, match="tree state does not match"):
        AuditStore(log).append([make_record(99)])


def test_dropped_triggers_alone_fail_verification(log: Path) -> None:
    _attack(log)
    assert _problems(log).problems == _TRIGGER_PROBLEMS


_TRIGGER_PROBLEMS = [
    f"append-only trigger {name} is missing (the store was altered)"
    for name in (
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
]


# -- segment files and batch rows ----------------------------------------------------------


def _segment(path: Path) -> Path:
    (segment,) = sorted(Path(f"{path}-segments").glob("*.jsonl"))
    return segment


def test_an_entry_edited_in_its_segment_file_is_named(log: Path) -> None:
    """A text editor on the JSON Lines file, same length, nothing else touched."""
    segment = _segment(log)
    data = segment.read_bytes()
    lines = data.split(b"\n")
    lines[4] = lines[4].replace(b'"purpose":"safeguarding"', b'"purpose":"safeguardinX"')
    segment.write_bytes(b"\n".join(lines))
    assert segment.read_bytes() != data and len(segment.read_bytes()) == len(data)
    error = _problems(log)
    assert error.problems[0] == "entry 5 modified: it does not match its stored leaf hash"


def test_an_entry_made_longer_in_its_segment_file_breaks_the_framing(log: Path) -> None:
    segment = _segment(log)
    data = segment.read_bytes()
    first = data.index(b"\n")
    segment.write_bytes(data[: first - 1] + b" }" + data[first:])
    error = _problems(log)
    assert error.problems[0] == (
        "entry 1 modified: its bytes in the segment do not end where the batch says "
        "(segment altered)"
    )
    assert "entry 1 modified: it does not match its stored leaf hash" in error.problems


def test_a_segment_file_cut_short_is_truncation(log: Path) -> None:
    segment = _segment(log)
    ends = [i + 1 for i, byte in enumerate(segment.read_bytes()) if byte == 0x0A]
    with segment.open("r+b") as file:
        file.truncate(ends[5] - 3)  # entry 6 loses its last bytes
    error = _problems(log)
    assert error.problems[0] == (
        "log truncated: the tree holds leaf hashes up to entry 8 but the log ends at entry 5 "
        "(entry 6 onward missing)"
    )
    assert (
        "log truncated: the batches list entries up to entry 8 but the segment files hold only "
        "up to entry 5 (entry 6 onward missing)" in error.problems
    )
    assert not error.summary.consistent and error.summary.entries == 5


def test_a_removed_segments_folder_is_reported(log: Path) -> None:
    for file in Path(f"{log}-segments").iterdir():
        file.unlink()
    Path(f"{log}-segments").rmdir()
    error = _problems(log)
    assert "the segments folder audit.db-segments is missing: no entry can be read" in (
        error.problems
    )
    assert error.summary.entries == 0 and not error.summary.consistent


def test_a_rewritten_entry_id_list_is_named(log: Path) -> None:
    """The list that loads the dedup map: altered, a replay could be logged twice."""
    conn = sqlite3.connect(log)
    (ids,) = conn.execute("SELECT entry_ids FROM batches WHERE first_seq = 5").fetchone()
    conn.close()
    altered = ids.replace(make_record(6).entry_id, "0" * 32)
    _attack(log, ("UPDATE batches SET entry_ids = ? WHERE first_seq = 5", (altered,)))
    error = _problems(log)
    assert error.problems[0] == (
        "entry 6: the batch's entry id list does not match the entry "
        "(batches altered; duplicates could slip in)"
    )
