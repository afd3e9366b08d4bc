"""audit/: records, canonical entries, the append-only store and its verifier.

Every test uses a real SQLite file in tmp_path. Tampering is done the way an
attacker with the file would do it: a raw sqlite3 connection that first drops
the append-only triggers.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from audit import (
    AppendResult,
    AuditLog,
    AuditRecord,
    AuditStore,
    LogSummary,
    entry_id_for,
    verify_store,
)
from schemas import (
    AUDIT_RECORD,
    AuditError,
    AuditEvent,
    Codec,
    DecodeError,
    EmbeddedRegistry,
    LogTamperedError,
    ReasonCode,
    ValidationError,
    latest,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 4, 8, 30, 0, 123000, tzinfo=UTC)


def _record(
    n: int, *, event: AuditEvent = AuditEvent.DISCLOSED, **overrides: object
) -> AuditRecord:
    disclosure_id = f"{n:032x}"
    values: dict[str, object] = {
        "entry_id": entry_id_for(event, disclosure_id),
        "event": event,
        "disclosure_id": disclosure_id,
        "decision_id": f"dec-{n}",
        "concern_id": f"concern-{n % 3}",
        "subject_pseudonyms": (f"{n:032x}"[::-1], "5a1f" * 8),
        "source": "police-hampshire",
        "recipient": f"recipient-{n % 2}",
        "lscp": "hampshire",
        "lawful_basis": "CA1989_S47",
        "purpose": "safeguarding",
        "consent_state": "NOT_SOUGHT",
        "reason_codes": (),
        "reasons": ("risk of significant harm recorded",),
        "policy_revision": "rev-1",
        "fields_disclosed": ("concern_type", "risk_grade"),
        "payload_sha256": hashlib.sha256(str(n).encode()).hexdigest(),
        "deadline": T0 + timedelta(hours=24),
        "at": T0 + timedelta(seconds=n),
        "actor": "router-1",
    }
    values.update(overrides)
    return AuditRecord(**values)  # type: ignore[arg-type]


def _fill(path: Path, n: int, *, checkpoint: bool = False) -> None:
    with AuditStore(path) as store:
        store.append([_record(i) for i in range(1, n + 1)])
        if checkpoint:
            store.checkpoint(at=T0)


def _tamper(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Edit the file as an attacker would: drop the triggers, then write."""
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


def _problems(path: Path) -> list[str]:
    with pytest.raises(LogTamperedError) as caught:
        verify_store(path)
    assert caught.value.code == ReasonCode.AUDIT_TAMPERED
    assert caught.value.problems
    return caught.value.problems


def _entry(path: Path, seq: int) -> bytes:
    conn = sqlite3.connect(path)
    try:
        return bytes(conn.execute("SELECT entry FROM entries WHERE seq = ?", (seq,)).fetchone()[0])
    finally:
        conn.close()


def _chain(entries: Iterable[bytes]) -> bytes:
    head = bytes(32)
    for entry in entries:
        leaf = hashlib.sha256(b"\x00" + entry).digest()
        head = hashlib.sha256(b"\x01" + head + leaf).digest()
    return head


# -- the record ----------------------------------------------------------------


def test_record_mirrors_the_avsc_field_for_field() -> None:
    avsc = [f["name"] for f in latest(AUDIT_RECORD).source["fields"]]
    assert [f.name for f in dataclasses.fields(AuditRecord)] == avsc


def test_avro_round_trip_through_the_real_codec() -> None:
    codec = Codec(EmbeddedRegistry())
    for record in (_record(7), _record(8, deadline=None, reason_codes=("CONSENT_REFUSED",))):
        decoded = codec.decode(codec.encode(AUDIT_RECORD, record.to_avro()), expect=AUDIT_RECORD)
        assert AuditRecord.from_avro(decoded.record) == record
    assert _record(7).to_avro()["event"] == "DISCLOSED"


def test_from_avro_rejects_a_dict_that_does_not_fit() -> None:
    avro = _record(1).to_avro()
    del avro["actor"]
    with pytest.raises(ValidationError, match="actor"):
        AuditRecord.from_avro(avro)
    with pytest.raises(ValidationError, match="event"):
        AuditRecord.from_avro({**_record(1).to_avro(), "event": "SHARED_BY_EMAIL"})


def test_canonical_bytes_are_stable_and_round_trip() -> None:
    a = _record(5)
    b = AuditRecord.from_avro(_record(5).to_avro())
    assert a == b and a.canonical_bytes() == b.canonical_bytes()
    assert a.canonical_bytes() != _record(6).canonical_bytes()
    for record in (a, a.with_seq(42), _record(9, deadline=None, subject_pseudonyms=())):
        assert AuditRecord.from_canonical(record.canonical_bytes()) == record
    text = a.with_seq(3).canonical_bytes().decode()
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)
    assert ", " not in text and ": " not in text
    assert parsed["seq"] == 3
    assert parsed["at"] == "2025-03-04T08:30:05.123Z"
    assert parsed["deadline"] == "2025-03-05T08:30:00.123Z"
    assert parsed["subject_pseudonyms"] == list(a.subject_pseudonyms)
    assert set(parsed) == {f.name for f in dataclasses.fields(AuditRecord)}
    assert a.entry_bytes(3) == a.with_seq(3).canonical_bytes()


def test_canonical_bytes_keep_unicode_and_reject_other_forms() -> None:
    record = _record(1, reasons=("référé à l'équipe",))
    raw = record.canonical_bytes()
    assert "référé".encode() in raw
    assert AuditRecord.from_canonical(raw) == record
    spaced = json.dumps(json.loads(raw), sort_keys=True).encode()
    with pytest.raises(DecodeError, match="canonical"):
        AuditRecord.from_canonical(spaced)
    with pytest.raises(DecodeError):
        AuditRecord.from_canonical(b"not json")
    with pytest.raises(DecodeError, match="fields"):
        AuditRecord.from_canonical(b'{"seq":1}')


def test_timestamps_are_utc_millis_and_must_be_aware() -> None:
    plus_one = timezone(timedelta(hours=1))
    record = _record(1, at=datetime(2025, 6, 1, 10, 0, 0, 987654, tzinfo=plus_one))
    assert record.at == datetime(2025, 6, 1, 9, 0, 0, 987000, tzinfo=UTC)
    assert record.at.tzinfo == UTC
    with pytest.raises(ValidationError, match="timezone-aware"):
        _record(1, at=datetime(2025, 6, 1, 10, 0))
    with pytest.raises(ValidationError, match="event"):
        _record(1, event="EMAILED")  # type: ignore[arg-type]


def test_entry_id_for_is_deterministic_per_event_and_key() -> None:
    expected = hashlib.sha256(b"DISCLOSED\x00abc").hexdigest()[:32]
    assert entry_id_for(AuditEvent.DISCLOSED, "abc") == expected
    assert entry_id_for("DISCLOSED", "abc") == expected
    assert entry_id_for(AuditEvent.WITHHELD, "abc") != expected
    assert len(expected) == 32


# -- appending and reading -------------------------------------------------------


def test_append_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    records = [_record(i) for i in range(1, 7)]
    with AuditStore(path) as store:
        assert isinstance(store, AuditLog)
        assert store.count() == 0 and store.head() == (0, bytes(32))
        results = store.append(records)
        assert results == [AppendResult(r.entry_id, i, False) for i, r in enumerate(records, 1)]
        assert store.count() == 6
        assert list(store.records()) == [r.with_seq(i) for i, r in enumerate(records, 1)]
        assert store.get(2) == records[1].with_seq(2)
        assert store.get(99) is None
        assert store.has_entry(records[0].entry_id) and not store.has_entry("nope")
        assert [r.seq for r in store.records(concern_id="concern-0")] == [3, 6]
        assert [r.seq for r in store.records(recipient="recipient-1")] == [1, 3, 5]
        assert [r.seq for r in store.records(disclosure_id=records[3].disclosure_id)] == [4]
        assert [r.seq for r in store.records(subject=records[4].subject_pseudonyms[0])] == [5]
        assert [r.seq for r in store.records(event="DISCLOSED", recipient="recipient-0")] == [
            2,
            4,
            6,
        ]
        assert list(store.records(event=AuditEvent.WITHHELD)) == []
        size, head = store.head()
        assert size == 6
        assert head == _chain(r.with_seq(i).canonical_bytes() for i, r in enumerate(records, 1))


def test_records_pages_through_a_long_log(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        store.append([_record(i) for i in range(1, 2502)])
        assert [r.seq for r in store.records()] == list(range(1, 2502))
        assert sum(1 for _ in store.records(recipient="recipient-0")) == 1250


def test_events_for_disclosures(tmp_path: Path) -> None:
    withheld = _record(2, event=AuditEvent.WITHHELD)
    received = _record(1, event=AuditEvent.RECEIVED, entry_id=entry_id_for("RECEIVED", "x"))
    with AuditStore(tmp_path / "audit.db") as store:
        store.append([_record(1), withheld, received, _record(3, disclosure_id=None)])
        assert store.events_for_disclosures() == {
            _record(1).disclosure_id: {"DISCLOSED", "RECEIVED"},
            withheld.disclosure_id: {"WITHHELD"},
        }


def test_duplicates_are_skipped_within_and_across_batches(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        first = store.append([_record(1), _record(2), _record(1)])
        assert [(r.seq, r.duplicate) for r in first] == [(1, False), (2, False), (1, True)]
        again = store.append([_record(2), _record(3), _record(1).with_seq(77)])
        assert [(r.seq, r.duplicate) for r in again] == [(2, True), (3, False), (1, True)]
        assert store.count() == 3
        assert [r.seq for r in store.records()] == [1, 2, 3]
        assert store.append([]) == []
    assert verify_store(tmp_path / "audit.db").entries == 3


def test_seq_is_contiguous_across_batches_and_ignores_a_carried_seq(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        for start in range(1, 40, 7):
            store.append([_record(i).with_seq(1000 + i) for i in range(start, start + 7)])
        assert [r.seq for r in store.records()] == list(range(1, 43))


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 3)
    with AuditStore(path) as store:
        results = store.append([_record(3), _record(4), _record(5)])
        assert [(r.seq, r.duplicate) for r in results] == [(3, True), (4, False), (5, False)]
        head = store.head()
    with AuditStore(path) as store:
        assert store.head() == head
        assert [r.seq for r in store.records()] == [1, 2, 3, 4, 5]
    summary = verify_store(path)
    assert summary == LogSummary(entries=5, head=head[1].hex(), checkpoints_verified=0)


# -- feed offsets ----------------------------------------------------------------


def test_offsets_are_stored_with_the_entries_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        assert store.feed_offsets() == {}
        store.append([_record(1)], offsets={("hips.audit", 0): 1, ("hips.receipts", 2): 10})
        store.append([], offsets={("hips.audit", 0): 5})  # a batch of duplicates only
    with AuditStore(path) as store:
        assert store.feed_offsets() == {("hips.audit", 0): 5, ("hips.receipts", 2): 10}
        with pytest.raises(ValidationError, match="offsets"):
            store.append([_record(2)], offsets={("hips.audit", 0): -1})
        assert store.count() == 1


def test_a_failed_batch_writes_neither_entries_nor_offsets(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        store.append([_record(1)], offsets={("hips.audit", 0): 1})
        # Make the offset write fail inside the transaction, after the entries.
        conn = sqlite3.connect(path)
        conn.execute(
            "CREATE TRIGGER fail_offsets BEFORE UPDATE ON feed_offsets "
            "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )
        conn.commit()
        conn.close()
        with pytest.raises(AuditError, match="simulated failure"):
            store.append([_record(2), _record(3)], offsets={("hips.audit", 0): 3})
        assert store.count() == 1
        assert store.feed_offsets() == {("hips.audit", 0): 1}
        assert not store.has_entry(_record(2).entry_id)


# -- append-only -----------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE entries SET recipient = 'someone-else' WHERE seq = 1",
        "UPDATE entries SET entry = x'00' WHERE seq = 2",
        "DELETE FROM entries WHERE seq = 2",
        "DELETE FROM entries",
        "UPDATE checkpoints SET size = 1",
        "DELETE FROM checkpoints",
    ],
)
def test_update_and_delete_are_refused_by_the_database(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 3, checkpoint=True)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
    finally:
        conn.close()
    assert verify_store(path).entries == 3


def test_an_insert_out_of_sequence_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 2)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(
                "INSERT INTO entries SELECT seq + 5, 'x', event, disclosure_id, concern_id, "
                "recipient, lscp, lawful_basis, at, subject_pseudonyms, entry, leaf_hash, "
                "chain_hash FROM entries WHERE seq = 1"
            )
    finally:
        conn.close()


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.db")
    store.close()
    store.close()
    with pytest.raises(AuditError, match="closed"):
        store.append([_record(1)])


# -- verification ----------------------------------------------------------------


def test_verify_passes_on_a_clean_store(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        empty = store.checkpoint(at=T0)
        assert (empty.size, empty.chain_hash) == (0, bytes(32))
        store.append([_record(i) for i in range(1, 11)])
        cp = store.checkpoint(at=T0 + timedelta(minutes=1))
        store.append([_record(i) for i in range(11, 16)])
        assert cp.size == 10 and str(cp).startswith("size 10, chain head ")
        assert [c.size for c in store.checkpoints()] == [0, 10]
        live = store.verify()  # while the store is open (WAL not yet checkpointed)
        head = store.head()
    summary = verify_store(path)
    assert summary == live
    assert summary == LogSummary(entries=15, head=head[1].hex(), checkpoints_verified=2)


def test_verify_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 5, checkpoint=True)
    before = path.read_bytes()
    verify_store(path)
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_modified_entry_blob_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 5)
    forged = _entry(path, 3).replace(b'"recipient":"recipient-1"', b'"recipient":"recipient-0"')
    _tamper(path, ("UPDATE entries SET entry = ? WHERE seq = 3", (forged,)))
    problems = _problems(path)
    assert problems[0] == "entry 3 modified: leaf hash mismatch"
    assert "entry 3 index columns do not match the entry: recipient" in problems


def test_modified_entry_with_recomputed_leaf_is_caught_by_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 5)
    forged = _entry(path, 2).replace(b'"lawful_basis":"CA1989_S47"', b'"lawful_basis":"CONSENT"')
    leaf = hashlib.sha256(b"\x00" + forged).digest()
    _tamper(
        path,
        (
            "UPDATE entries SET entry = ?, leaf_hash = ?, lawful_basis = 'CONSENT' WHERE seq = 2",
            (forged, leaf),
        ),
    )
    problems = _problems(path)
    assert problems[0] == "entry 2 chain hash does not follow from entry 1"


def test_modified_plain_column_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 4)
    _tamper(path, ("UPDATE entries SET entry_id = 'f' || entry_id WHERE seq = 2", ()))
    assert _problems(path) == [
        "entry 2 index columns do not match the entry: entry_id",
        *_TRIGGER_PROBLEMS,
    ]


def test_deleted_row_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 6)
    _tamper(path, ("DELETE FROM entries WHERE seq IN (3, 4)", ()))
    problems = _problems(path)
    assert problems[0] == "entries 3..4 missing (deleted?)"
    assert problems[1:] == _TRIGGER_PROBLEMS  # later entries do not cascade
    _tamper(path, ("DELETE FROM entries WHERE seq = 1", ()))
    assert _problems(path)[:2] == ["entry 1 missing (deleted?)", "entries 3..4 missing (deleted?)"]


def test_swapped_entries_are_detected_as_reordered(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 5)
    conn = sqlite3.connect(path)
    rows = {
        seq: (entry, leaf, chain)
        for seq, entry, leaf, chain in conn.execute(
            "SELECT seq, entry, leaf_hash, chain_hash FROM entries WHERE seq IN (2, 4)"
        )
    }
    conn.close()
    update = "UPDATE entries SET entry = ?, leaf_hash = ?, chain_hash = ? WHERE seq = ?"
    _tamper(path, (update, (*rows[4], 2)), (update, (*rows[2], 4)))
    problems = _problems(path)
    assert problems[0] == "entry at seq 2 claims seq 4 (reordered?)"
    assert "entry at seq 4 claims seq 2 (reordered?)" in problems


def test_truncation_after_a_checkpoint_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 5, checkpoint=True)
    _tamper(path, ("DELETE FROM entries WHERE seq > 3", ()))
    problems = _problems(path)
    assert problems[0] == (
        "log truncated: checkpoint at size 5 but only 3 entries (entry 4 onward missing)"
    )


def test_forged_checkpoint_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 5, checkpoint=True)
    _tamper(
        path,
        (
            "INSERT INTO checkpoints(size, chain_hash, at) "
            "VALUES (5, ?, '2025-03-04T09:00:00.000Z')",
            (hashlib.sha256(b"forged").digest(),),
        ),
    )
    problems = _problems(path)
    assert problems[0].startswith(
        "checkpoint 2 at size 5 does not match the chain recomputed at entry 5"
    )


def test_a_consistently_rewritten_tail_is_caught_by_an_earlier_checkpoint(tmp_path: Path) -> None:
    """An attacker who recomputes every hash after the change still breaks the checkpoint."""
    path = tmp_path / "audit.db"
    _fill(path, 6, checkpoint=True)
    entries = [_entry(path, seq) for seq in range(1, 7)]
    entries[3] = entries[3].replace(b'"purpose":"safeguarding"', b'"purpose":"marketing"')
    statements: list[tuple[str, tuple[object, ...]]] = []
    head = bytes(32)
    for seq, entry in enumerate(entries, 1):
        leaf = hashlib.sha256(b"\x00" + entry).digest()
        head = hashlib.sha256(b"\x01" + head + leaf).digest()
        statements.append(
            (
                "UPDATE entries SET entry = ?, leaf_hash = ?, chain_hash = ? WHERE seq = ?",
                (entry, leaf, head, seq),
            )
        )
    _tamper(path, *statements)
    problems = _problems(path)
    assert problems[0].startswith("checkpoint 1 at size 6 does not match")


def test_dropped_triggers_alone_fail_verification(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _fill(path, 2)
    _tamper(path)
    assert (
        _problems(path)[0]
        == "append-only trigger entries_append_only_update is missing (the store was altered)"
    )


_TRIGGERS = (
    "entries_append_only_update",
    "entries_append_only_delete",
    "entries_contiguous_seq",
    "checkpoints_append_only_update",
    "checkpoints_append_only_delete",
)
_TRIGGER_PROBLEMS = [
    f"append-only trigger {name} is missing (the store was altered)" for name in _TRIGGERS
]


def test_verify_store_explains_a_wrong_path(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit store") as caught:
        verify_store(tmp_path / "missing.db")
    assert not isinstance(caught.value, LogTamperedError) and caught.value.hint
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(AuditError, match="not a SAFER audit store"):
        verify_store(junk)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    with pytest.raises(AuditError, match="not a SAFER audit store"):
        verify_store(other)
    with pytest.raises(AuditError, match="not a SAFER audit store"):
        AuditStore(other)


# -- boundaries ------------------------------------------------------------------


def test_no_audit_module_imports_kafka() -> None:
    for path in (ROOT / "audit").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "aiokafka" not in source, f"{path} mentions aiokafka"
        for node in ast.walk(ast.parse(source)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert "kafka" not in top, f"{path} imports {name}"
                assert top not in {"broker", "adapters", "safer", "consent"}, (
                    f"{path} imports {name}"
                )
