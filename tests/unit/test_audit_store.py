"""audit/: records, canonical entries and the append-only Merkle store.

Every test uses a real SQLite file in tmp_path. Tampering (in
test_audit_tamper.py) is done the way an attacker with the file would do it.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import hashlib
import json
import random
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymerkle import InmemoryTree

from audit import (
    DEFAULT_ORIGIN,
    EMPTY_ROOT,
    AppendResult,
    AuditLog,
    AuditRecord,
    AuditStore,
    LogSigner,
    LogSummary,
    MerkleTree,
    entry_id_for,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_store,
)
from schemas import (
    AUDIT_RECORD,
    AuditError,
    AuditEvent,
    Codec,
    DecodeError,
    EmbeddedRegistry,
    ReasonCode,
    ValidationError,
    latest,
)

from .audit_files import stored_entries

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 4, 8, 30, 0, 123000, tzinfo=UTC)


def make_record(
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
        "lscp": "hampshire" if n % 4 else "portsmouth",
        "lawful_basis": "CA1989_S47" if n % 5 else "CONSENT",
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


def signer() -> LogSigner:
    return LogSigner(DEFAULT_ORIGIN, Ed25519PrivateKey.generate())


def fill(
    path: Path, n: int, *, key: LogSigner | None = None, checkpoint: bool = False, batch: int = 0
) -> None:
    with AuditStore(path, signer=key) as store:
        records = [make_record(i) for i in range(1, n + 1)]
        step = batch or max(n, 1)
        for start in range(0, n, step):
            store.append(records[start : start + step])
        if checkpoint:
            store.checkpoint(at=T0)


def leaves_of(path: Path) -> list[bytes]:
    entries = stored_entries(path)
    return [leaf_hash(entries[seq]) for seq in sorted(entries)]


# -- the record ----------------------------------------------------------------


def test_record_mirrors_the_avsc_field_for_field() -> None:
    avsc = [f["name"] for f in latest(AUDIT_RECORD).source["fields"]]
    assert [f.name for f in dataclasses.fields(AuditRecord)] == avsc


def test_avro_round_trip_through_the_real_codec() -> None:
    codec = Codec(EmbeddedRegistry())
    for record in (
        make_record(7),
        make_record(8, deadline=None, reason_codes=("CONSENT_REFUSED",)),
    ):
        decoded = codec.decode(codec.encode(AUDIT_RECORD, record.to_avro()), expect=AUDIT_RECORD)
        assert AuditRecord.from_avro(decoded.record) == record
    assert make_record(7).to_avro()["event"] == "DISCLOSED"


def test_from_avro_rejects_a_dict_that_does_not_fit() -> None:
    avro = make_record(1).to_avro()
    del avro["actor"]
    with pytest.raises(ValidationError, match="actor"):
        AuditRecord.from_avro(avro)
    with pytest.raises(ValidationError, match="event"):
        AuditRecord.from_avro({**make_record(1).to_avro(), "event": "SHARED_BY_EMAIL"})


def test_canonical_bytes_are_stable_and_round_trip() -> None:
    a = make_record(5)
    b = AuditRecord.from_avro(make_record(5).to_avro())
    assert a == b and a.canonical_bytes() == b.canonical_bytes()
    assert a.canonical_bytes() != make_record(6).canonical_bytes()
    for record in (a, a.with_seq(42), make_record(9, deadline=None, subject_pseudonyms=())):
        assert AuditRecord.from_canonical(record.canonical_bytes()) == record
    text = a.with_seq(3).canonical_bytes().decode()
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)
    assert ", " not in text and ": " not in text
    assert parsed["seq"] == 3
    assert parsed["at"] == "2025-03-04T08:30:05.123Z"
    assert parsed["deadline"] == "2025-03-05T08:30:00.123Z"
    assert parsed["subject_pseudonyms"] == list(a.subject_pseudonyms)
    # v4 extensions (credential, input_sha256, test) appear only when set.
    assert set(parsed) == {f.name for f in dataclasses.fields(AuditRecord)} - {
        "credential",
        "input_sha256",
        "test",
    }
    assert a.entry_bytes(3) == a.with_seq(3).canonical_bytes()


def test_v4_extensions_are_canonical_only_when_set_so_old_entries_stay_valid() -> None:
    old = make_record(5)
    extended = dataclasses.replace(
        old, credential="gateway:client-cert:ab12", input_sha256="f" * 64, test=True
    )
    # An entry written before v4 is byte-identical to a v4 record with nothing set.
    assert "credential" not in old.canonical_bytes().decode()
    for record in (old, extended):
        data = record.with_seq(9).canonical_bytes()
        assert AuditRecord.from_canonical(data) == record.with_seq(9)
        assert AuditRecord.from_log(data) == record.with_seq(9)
    parsed = json.loads(extended.canonical_bytes())
    assert parsed["credential"] == "gateway:client-cert:ab12" and parsed["test"] is True
    # Spelling a default out is not canonical: one record, one byte string.
    spelled = json.loads(old.canonical_bytes())
    spelled["test"] = False
    with pytest.raises(DecodeError):
        AuditRecord.from_canonical(
            json.dumps(spelled, sort_keys=True, separators=(",", ":")).encode()
        )


_AWKWARD = [
    "référé à l'équipe",
    'quote " and backslash \\ and slash /',
    "tab\tnewline\ncontrol\x01\x1f",
    "line sep \u2028 para sep \u2029 bom \ufeff",
    "emoji 🧒 and CJK 児童",
    "",
]


def test_the_fast_encoder_matches_the_json_encoder_byte_for_byte() -> None:
    """``entry_bytes`` (computed once, seq spliced in) equals sorted-key compact json.dumps."""
    rng = random.Random(62)
    for n in range(400):
        text = rng.choice(_AWKWARD) + str(n)
        optional = {
            name: (None if rng.random() < 0.3 else rng.choice(_AWKWARD) + name)
            for name in ("disclosure_id", "decision_id", "concern_id", "recipient", "lscp")
        }
        record = make_record(
            n,
            event=rng.choice(list(AuditEvent)),
            reasons=tuple(rng.sample(_AWKWARD, rng.randint(0, 3))),
            reason_codes=(),
            fields_disclosed=tuple(rng.sample(_AWKWARD, rng.randint(0, 2))),
            subject_pseudonyms=tuple(rng.sample(_AWKWARD, rng.randint(0, 3))),
            purpose=text,
            source=text or "x",
            deadline=None if n % 3 else T0 + timedelta(milliseconds=rng.randint(0, 10**9)),
            at=datetime(1999 + n % 30, 1 + n % 12, 1 + n % 28, n % 24, n % 60, n % 60, tzinfo=UTC)
            + timedelta(milliseconds=n),
            **optional,
        )
        seq = rng.randint(1, 10**12)
        assert record.entry_bytes(seq) == record.reference_bytes(seq)
        assert record.canonical_bytes() == record.reference_bytes(None)
        assert AuditRecord.from_canonical(record.entry_bytes(seq)) == record.with_seq(seq)
        assert AuditRecord.from_log(record.entry_bytes(seq)) == record.with_seq(seq)


def test_the_encoder_matches_the_json_encoder_for_every_unicode_scalar_value() -> None:
    """orjson (the fast path) and json.dumps (the specification) agree on every code point."""
    scalars = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(scalars), 8192):
        text = "".join(map(chr, scalars[start : start + 8192]))
        record = make_record(start, purpose=text, reasons=(text[:100], "x"), source=text)
        assert record.entry_bytes(start + 1) == record.reference_bytes(start + 1)
        assert AuditRecord.from_canonical(record.entry_bytes(start + 1)) == record.with_seq(
            start + 1
        )


def test_text_that_is_not_unicode_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    lone = make_record(1, purpose="half of a pair \ud83e")
    with pytest.raises(ValidationError, match="lone surrogate"):
        lone.entry_bytes(1)
    with AuditStore(tmp_path / "audit.db") as store:
        with pytest.raises(ValidationError, match="lone surrogate"):
            store.append([make_record(2), lone])
        assert store.count() == 0
        assert [r.duplicate for r in store.append([make_record(2)])] == [False]
        assert store.verify().entries == 1


def test_canonical_bytes_keep_unicode_and_reject_other_forms() -> None:
    record = make_record(1, reasons=("référé à l'équipe",))
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
    for junk in (b"not json", b'{"seq":1}', raw.replace(b'"event":"DISCLOSED"', b'"event":"X"')):
        with pytest.raises(DecodeError):
            AuditRecord.from_log(junk)


def test_timestamps_are_utc_millis_and_must_be_aware() -> None:
    plus_one = timezone(timedelta(hours=1))
    record = make_record(1, at=datetime(2025, 6, 1, 10, 0, 0, 987654, tzinfo=plus_one))
    assert record.at == datetime(2025, 6, 1, 9, 0, 0, 987000, tzinfo=UTC)
    assert record.at.tzinfo == UTC
    with pytest.raises(ValidationError, match="timezone-aware"):
        make_record(1, at=datetime(2025, 6, 1, 10, 0))
    with pytest.raises(ValidationError, match="event"):
        make_record(1, event="EMAILED")  # type: ignore[arg-type]


def test_entry_id_for_is_deterministic_per_event_and_key() -> None:
    expected = hashlib.sha256(b"DISCLOSED\x00abc").hexdigest()[:32]
    assert entry_id_for(AuditEvent.DISCLOSED, "abc") == expected
    assert entry_id_for("DISCLOSED", "abc") == expected
    assert entry_id_for(AuditEvent.WITHHELD, "abc") != expected
    assert len(expected) == 32


# -- appending and reading -------------------------------------------------------


def test_append_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    records = [make_record(i) for i in range(1, 7)]
    with AuditStore(path) as store:
        assert isinstance(store, AuditLog)
        assert store.count() == 0 and store.head() == (0, EMPTY_ROOT)
        results = store.append(records)
        assert results == [AppendResult(r.entry_id, i, False) for i, r in enumerate(records, 1)]
        assert store.count() == 6
        assert list(store.records()) == [r.with_seq(i) for i, r in enumerate(records, 1)]
        assert store.get(2) == records[1].with_seq(2)
        assert store.get(99) is None
        assert store.entry_bytes(2) == records[1].entry_bytes(2)
        assert store.has_entry(records[0].entry_id) and not store.has_entry("nope")
        assert [r.seq for r in store.records(concern_id="concern-0")] == [3, 6]
        assert [r.seq for r in store.records(recipient="recipient-1")] == [1, 3, 5]
        assert [r.seq for r in store.records(disclosure_id=records[3].disclosure_id)] == [4]
        assert [r.seq for r in store.records(subject=records[4].subject_pseudonyms[0])] == [5]
        assert [r.seq for r in store.records(subject="5a1f" * 8)] == [1, 2, 3, 4, 5, 6]
        assert [r.seq for r in store.records(event="DISCLOSED", recipient="recipient-0")] == [
            2,
            4,
            6,
        ]
        assert list(store.records(event=AuditEvent.WITHHELD)) == []
        size, root = store.head()
        expected = InmemoryTree()
        expected.append_entries([r.entry_bytes(i) for i, r in enumerate(records, 1)])
        assert size == 6 and root == expected.get_root() == store.root()


def test_more_filters_time_range_basis_and_partnership(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        store.append([make_record(i) for i in range(1, 21)])
        assert [r.seq for r in store.records(lawful_basis="CONSENT")] == [5, 10, 15, 20]
        assert [r.seq for r in store.records(lscp="portsmouth")] == [4, 8, 12, 16, 20]
        window = store.records(since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=6))
        assert [r.seq for r in window] == [3, 4, 5]  # since inclusive, until exclusive
        plus_one = timezone(timedelta(hours=1))
        local = (T0 + timedelta(seconds=18)).astimezone(plus_one)
        assert [r.seq for r in store.records(since=local)] == [18, 19, 20]
        assert [
            r.seq
            for r in store.records(
                recipient="recipient-0", lawful_basis="CONSENT", until=T0 + timedelta(seconds=15)
            )
        ] == [10]
        with pytest.raises(ValidationError, match="timezone-aware"):
            list(store.records(since=datetime(2025, 1, 1)))


def test_records_pages_through_a_long_log(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        store.append([make_record(i) for i in range(1, 2502)])
        assert [r.seq for r in store.records()] == list(range(1, 2502))
        assert sum(1 for _ in store.records(recipient="recipient-0")) == 1250
        assert sum(1 for _ in store.records(subject="5a1f" * 8)) == 2501


def test_queries_are_complete_while_the_index_lags_or_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query index catches up in chunks; entries beyond it are found by a scan."""
    path = tmp_path / "audit.db"
    monkeypatch.setattr(AuditStore, "index_chunk", 7)
    with AuditStore(path) as store:
        store.append([make_record(i) for i in range(1, 31)])
        assert [r.seq for r in store.records(concern_id="concern-1")] == list(range(1, 31, 3))
        indexed = sqlite3.connect(path).execute("SELECT indexed_seq FROM index_state").fetchone()
        assert indexed == (30,)
        store.append([make_record(i) for i in range(31, 41)])
    path.chmod(0o444)  # an auditor's read-only copy: the index cannot catch up
    try:
        with AuditStore(path) as store:
            assert [r.seq for r in store.records(concern_id="concern-1")] == list(range(1, 41, 3))
            assert [r.seq for r in store.records(subject=f"{37:032x}"[::-1])] == [37]
            assert store.has_entry(make_record(38).entry_id)
    finally:
        path.chmod(0o644)
    verify_store(path)


def test_awkward_text_in_query_columns_verifies_and_is_found(tmp_path: Path) -> None:
    """Escapes differ between SQLite's JSON and Python's; the exact check has the last word."""
    path = tmp_path / "audit.db"
    odd = [
        make_record(i, recipient=text or "r", lscp=text, subject_pseudonyms=(text, "p"))
        for i, text in enumerate(_AWKWARD, 1)
    ]
    with AuditStore(path) as store:
        store.append(odd)
        for record in odd:
            found = list(
                store.records(recipient=record.recipient, subject=record.subject_pseudonyms[0])
            )
            assert [r.entry_id for r in found] == [record.entry_id]
    assert verify_store(path).entries == len(odd)


def test_events_for_disclosures(tmp_path: Path) -> None:
    withheld = make_record(2, event=AuditEvent.WITHHELD)
    received = make_record(1, event=AuditEvent.RECEIVED, entry_id=entry_id_for("RECEIVED", "x"))
    with AuditStore(tmp_path / "audit.db") as store:
        store.append([make_record(1), withheld, received, make_record(3, disclosure_id=None)])
        assert store.events_for_disclosures() == {
            make_record(1).disclosure_id: {"DISCLOSED", "RECEIVED"},
            withheld.disclosure_id: {"WITHHELD"},
        }


def test_duplicates_are_skipped_within_and_across_batches(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        first = store.append([make_record(1), make_record(2), make_record(1)])
        assert [(r.seq, r.duplicate) for r in first] == [(1, False), (2, False), (1, True)]
        again = store.append([make_record(2), make_record(3), make_record(1).with_seq(77)])
        assert [(r.seq, r.duplicate) for r in again] == [(2, True), (3, False), (1, True)]
        assert store.count() == 3
        assert [r.seq for r in store.records()] == [1, 2, 3]
        assert store.append([]) == []
    assert verify_store(tmp_path / "audit.db").entries == 3


def test_duplicates_are_found_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill(path, 50, batch=7)
    with AuditStore(path) as store:
        results = store.append([make_record(i) for i in (49, 50, 51, 3)])
        assert [(r.seq, r.duplicate) for r in results] == [
            (49, True),
            (50, True),
            (51, False),
            (3, True),
        ]


def test_fingerprint_clashes_never_drop_or_double_an_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every entry id gets the same 64-bit fingerprint: dedup must still be exact."""
    monkeypatch.setattr(AuditStore, "_fingerprint", staticmethod(lambda entry_id: 7))
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        results = store.append([make_record(i) for i in (1, 2, 3, 2)])
        assert [(r.seq, r.duplicate) for r in results] == [
            (1, False),
            (2, False),
            (3, False),
            (2, True),
        ]
        assert [(r.seq, r.duplicate) for r in store.append([make_record(3), make_record(4)])] == [
            (3, True),
            (4, False),
        ]
    with AuditStore(path) as store:  # the clash map is rebuilt from the file
        results = store.append([make_record(i) for i in (4, 1, 5)])
        assert [(r.seq, r.duplicate) for r in results] == [(4, True), (1, True), (5, False)]
    assert verify_store(path).entries == 5


def test_seq_is_contiguous_across_batches_and_ignores_a_carried_seq(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        for start in range(1, 40, 7):
            store.append([make_record(i).with_seq(1000 + i) for i in range(start, start + 7)])
        assert [r.seq for r in store.records()] == list(range(1, 43))


def test_reopening_continues_the_tree(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill(path, 3)
    with AuditStore(path) as store:
        results = store.append([make_record(3), make_record(4), make_record(5)])
        assert [(r.seq, r.duplicate) for r in results] == [(3, True), (4, False), (5, False)]
        head = store.head()
    with AuditStore(path) as store:
        assert store.head() == head
        assert [r.seq for r in store.records()] == [1, 2, 3, 4, 5]
    assert head[1] == MerkleTree(leaves_of(path)).root()
    summary = verify_store(path)
    assert summary == LogSummary(entries=5, root=head[1].hex())
    assert summary.head == summary.root


def test_two_writers_on_one_file_keep_one_log(tmp_path: Path) -> None:
    """A second process appending in between: each writer picks up the other's entries."""
    path = tmp_path / "audit.db"
    with AuditStore(path) as a, AuditStore(path) as b:
        a.append([make_record(i) for i in range(1, 4)])
        assert [r.duplicate for r in b.append([make_record(i) for i in range(2, 7)])] == [
            True,
            True,
            False,
            False,
            False,
        ]
        assert [r.seq for r in a.append([make_record(6), make_record(7)])] == [6, 7]
        assert a.head() == b.head()
        assert a.root() == MerkleTree(leaves_of(path)).root()
        a.checkpoint()
        b.checkpoint()
    assert verify_store(path).entries == 7


def test_threads_appending_overlapping_batches_keep_one_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:

        def work(offset: int) -> None:
            for start in range(1, 200, 10):
                store.append([make_record(i) for i in range(start + offset, start + offset + 15)])
                store.inclusion_proof(1, 1)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ids = [r.entry_id for r in store.records()]
        assert len(ids) == len(set(ids)) == 208  # records 1..208, each once
        assert store.root() == MerkleTree(leaves_of(path)).root()
    verify_store(path)


# -- feed offsets ----------------------------------------------------------------


def test_offsets_are_stored_with_the_entries_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        assert store.feed_offsets() == {}
        store.append([make_record(1)], offsets={("hips.audit", 0): 1, ("hips.receipts", 2): 10})
        store.append([], offsets={("hips.audit", 0): 5})  # a batch of duplicates only
    with AuditStore(path) as store:
        assert store.feed_offsets() == {("hips.audit", 0): 5, ("hips.receipts", 2): 10}
        with pytest.raises(ValidationError, match="offsets"):
            store.append([make_record(2)], offsets={("hips.audit", 0): -1})
        assert store.count() == 1


def test_a_failed_batch_writes_neither_entries_nor_offsets(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        store.append([make_record(1)], offsets={("hips.audit", 0): 1})
        # Make the offset write fail inside the transaction, after the entries.
        conn = sqlite3.connect(path)
        conn.execute(
            "CREATE TRIGGER fail_offsets BEFORE UPDATE ON feed_offsets "
            "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )
        conn.commit()
        with pytest.raises(AuditError, match="simulated failure"):
            store.append([make_record(2), make_record(3)], offsets={("hips.audit", 0): 3})
        assert store.count() == 1
        assert store.feed_offsets() == {("hips.audit", 0): 1}
        assert not store.has_entry(make_record(2).entry_id)
        conn.execute("DROP TRIGGER fail_offsets")
        conn.commit()
        conn.close()
        # Nothing of the failed batch lingers in memory: the same records append cleanly.
        results = store.append([make_record(2), make_record(3)], offsets={("hips.audit", 0): 3})
        assert [(r.seq, r.duplicate) for r in results] == [(2, False), (3, False)]
    verify_store(path)


# -- segment files ---------------------------------------------------------------


def _segment_files(path: Path) -> list[Path]:
    return sorted((path.parent / f"{path.name}-segments").glob("entries-*.jsonl"))


def test_entries_live_in_json_lines_segments_and_nowhere_else(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    records = [make_record(i) for i in range(1, 8)]
    with AuditStore(path) as store:
        store.append(records[:3])
        store.append(records[3:])
        assert store.segments == tmp_path / "audit.db-segments"
    (segment,) = _segment_files(path)
    assert segment.name == "entries-00000001.jsonl"
    lines = segment.read_bytes().split(b"\n")
    assert lines[-1] == b""  # every entry ends with a newline
    assert lines[:-1] == [r.entry_bytes(seq) for seq, r in enumerate(records, 1)]
    assert [json.loads(line)["seq"] for line in lines[:-1]] == list(range(1, 8))
    for payload in (r.payload_sha256 or "" for r in records):
        assert payload.encode() not in path.read_bytes()  # the SQLite file keeps no entries


def test_segments_roll_over_and_read_back_across_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.db"
    monkeypatch.setattr(AuditStore, "segment_limit", 3000)  # about three entries per file
    with AuditStore(path) as store:
        for start in range(1, 40, 2):
            store.append([make_record(start), make_record(start + 1)])
        assert [r.seq for r in store.records(concern_id="concern-2")] == list(range(2, 41, 3))
        assert store.get(40) == make_record(40).with_seq(40)
    files = _segment_files(path)
    batch_bytes = max(len(make_record(i).entry_bytes(i)) + 1 for i in range(1, 41)) * 2
    # A file takes batches until it holds the limit: it ends at most one batch past it.
    assert len(files) >= 5 and all(f.stat().st_size < 3000 + batch_bytes for f in files)
    assert all(f.stat().st_size >= 3000 for f in files[:-1])
    with AuditStore(path) as store:  # a new writer continues in the newest file
        store.append([make_record(41)])
        assert store.get(41) == make_record(41).with_seq(41)
    assert verify_store(path).entries == 41
    assert b"".join(f.read_bytes() for f in _segment_files(path)) == b"".join(
        make_record(i).entry_bytes(i) + b"\n" for i in range(1, 42)
    )


def test_a_batch_whose_commit_never_happened_is_invisible_then_cut_off(tmp_path: Path) -> None:
    """A crash between the segment write and the commit leaves bytes no row points at."""
    path = tmp_path / "audit.db"
    fill(path, 4, checkpoint=True)
    (segment,) = _segment_files(path)
    committed = segment.read_bytes()
    with segment.open("ab") as file:  # what the crashed writer left behind
        file.write(make_record(5).entry_bytes(5) + b"\n" + b'{"half an ent')
    summary = verify_store(path)
    assert summary.entries == 4 and summary.consistent
    with AuditStore(path) as store:
        assert store.count() == 4 and not store.has_entry(make_record(5).entry_id)
        results = store.append([make_record(6)])
        assert [(r.seq, r.duplicate) for r in results] == [(5, False)]
    assert segment.read_bytes() == committed + make_record(6).entry_bytes(5) + b"\n"
    assert verify_store(path).entries == 5


def test_a_batch_streamed_in_chunks_is_whole_or_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks go to the segment while the batch is encoded; a failure leaves nothing visible."""
    import audit._store

    monkeypatch.setattr(audit._store, "_CHUNK", 2500)  # a chunk every two or three entries
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        store.append([make_record(i) for i in range(1, 31)])
        bad = [make_record(i) for i in range(31, 61)]
        bad[25] = make_record(56, purpose="lone \udc80 surrogate")
        with pytest.raises(ValidationError):
            store.append(bad)  # about ten chunks were already written past the end
        assert store.count() == 30
        store.append([make_record(i) for i in range(61, 71)])
        assert [r.seq for r in store.records(recipient="recipient-1")] == list(range(1, 40, 2))
    entries = stored_entries(path)
    assert entries == {
        seq: make_record(n).entry_bytes(seq)
        for seq, n in enumerate([*range(1, 31), *range(61, 71)], 1)
    }
    # The failed batch's chunks were cut off before the next batch was written.
    assert sum(f.stat().st_size for f in _segment_files(path)) == sum(
        len(entry) + 1 for entry in entries.values()
    )
    assert verify_store(path).entries == 40


def test_the_instance_dict_holds_exactly_the_fields() -> None:
    """``_encode`` serialises the instance dict; nothing else may live there."""
    names = {f.name for f in dataclasses.fields(AuditRecord)}
    record = make_record(3)
    record.entry_bytes(9)
    for made in (
        record,
        AuditRecord.from_avro(record.to_avro()),
        AuditRecord.from_canonical(record.entry_bytes(9)),
        AuditRecord.from_log(record.entry_bytes(9)),
        record.with_seq(4),
    ):
        assert set(made.__dict__) == names


def test_runs_of_equal_timestamps_encode_like_distinct_ones() -> None:
    """The encoder remembers the last timestamp it formatted; that must never leak."""
    moments = [T0, T0, T0 + timedelta(milliseconds=1), T0, T0 + timedelta(days=400), T0]
    records = [
        make_record(i, at=moment, deadline=moments[-1 - i]) for i, moment in enumerate(moments)
    ]
    for seq, record in enumerate(records + records[::-1], 1):
        assert record.entry_bytes(seq) == record.reference_bytes(seq)


# -- append-only -----------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE batches SET offset = 5 WHERE first_seq = 1",
        "UPDATE batches SET entry_ids = '[]'",
        "DELETE FROM batches",
        "UPDATE entry_columns SET recipient = 'someone-else' WHERE seq = 1",
        "DELETE FROM entry_columns WHERE seq = 2",
        "INSERT INTO entry_columns SELECT seq + 5, entry_id, event, disclosure_id, "
        "concern_id, recipient, lscp, lawful_basis, at, subject_pseudonyms "
        "FROM entry_columns WHERE seq = 3",
        "UPDATE tree SET leaves = zeroblob(96)",
        "DELETE FROM tree",
        "UPDATE checkpoints SET size = 1",
        "DELETE FROM checkpoints",
        "INSERT INTO tree VALUES (9, zeroblob(32), x'')",
        "INSERT INTO checkpoints(size, root, note, frontier, leaves, at) "
        "VALUES (4, x'', '', x'', x'', '')",
        "INSERT INTO checkpoints(size, root, note, frontier, leaves, at) "
        "VALUES (2, x'', '', x'', x'', '')",
    ],
)
def test_update_and_delete_are_refused_by_the_database(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "audit.db"
    fill(path, 3, checkpoint=True)
    with AuditStore(path) as store:
        list(store.records(recipient="recipient-0"))  # fills entry_columns
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
    finally:
        conn.close()
    assert verify_store(path).entries == 3


def test_an_insert_out_of_sequence_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill(path, 2)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(
                "INSERT INTO batches SELECT first_seq + 5, segment, offset, ends, entry_ids "
                "FROM batches WHERE first_seq = 1"
            )
    finally:
        conn.close()


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.db")
    store.close()
    store.close()
    with pytest.raises(AuditError, match="closed"):
        store.append([make_record(1)])


def test_a_v1_hash_chain_store_is_refused_with_a_way_forward(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE entries(seq INTEGER PRIMARY KEY, chain_hash BLOB)")
    conn.execute(f"PRAGMA application_id = {0x53414641}")  # "SAFA", as v1 wrote it
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with pytest.raises(AuditError, match="format v1") as caught:
        AuditStore(path)
    assert "move it away" in caught.value.hint and "rebuild" in caught.value.hint
    with pytest.raises(AuditError, match="format v1"):
        verify_store(path)


# -- checkpoints and proofs -----------------------------------------------------------


def test_checkpoints_are_signed_c2sp_notes_of_size_and_root(tmp_path: Path) -> None:
    key = signer()
    path = tmp_path / "audit.db"
    with AuditStore(path, signer=key) as store:
        empty = store.checkpoint(at=T0)
        assert (empty.size, empty.root, empty.id) == (0, EMPTY_ROOT, 1)
        store.append([make_record(i) for i in range(1, 11)])
        cp = store.checkpoint(at=T0 + timedelta(minutes=1))
        store.append([make_record(i) for i in range(11, 16)])
        unsigned = AuditStore(path).checkpoint(at=T0 + timedelta(minutes=2))
        assert cp.signed and not unsigned.signed and str(cp).startswith("checkpoint 2: size 10")
        body = open_checkpoint(cp.note, key.key, origin=DEFAULT_ORIGIN)
        assert (body.size, body.root) == (10, store.root(10))
        lines = cp.note.split("\n")
        assert lines[:3] == [DEFAULT_ORIGIN, "10", base64.b64encode(body.root).decode()]
        assert lines[3] == "" and lines[4].startswith("\u2014 " + DEFAULT_ORIGIN + " ")
        assert [c.size for c in store.checkpoints()] == [0, 10, 15]
        assert store.latest_checkpoint() == unsigned
        assert store.latest_checkpoint(signed=True) == cp
        assert store.latest_checkpoint(signed=True, covering=11) is None
        live = store.verify()
    summary = verify_store(path, key=key.key)
    assert summary == live
    assert summary.checkpoints == 3 and summary.checkpoints_verified == 2
    assert not summary.checkpoint_verified  # the newest is unsigned
    conn = sqlite3.connect(path)
    leaves, frontier = conn.execute(
        "SELECT leaves, frontier FROM checkpoints WHERE id = 2"
    ).fetchone()
    conn.close()
    assert bytes(leaves) == b"".join(leaves_of(path)[:10])
    assert len(frontier) == 2 * 32  # 10 = 8 + 2: two perfect subtrees


def test_store_proofs_verify_with_the_pure_verifier(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        for start in range(1, 120, 17):
            store.append([make_record(i) for i in range(start, start + 17)])
        size, root = store.head()
        leaves = leaves_of(path)
        for seq in (1, 2, 17, 18, 64, 119):
            verify_inclusion(leaves[seq - 1], seq - 1, size, store.inclusion_proof(seq), root)
            verify_inclusion(
                leaves[seq - 1], seq - 1, 119, store.inclusion_proof(seq, 119), store.root(119)
            )
        for old in (1, 16, 17, 100, 119):
            verify_consistency(old, size, store.root(old), root, store.consistency_proof(old))
        store.append([make_record(200)])  # the cached tree follows appends
        verify_inclusion(
            leaves_of(path)[-1], size, size + 1, store.inclusion_proof(size + 1), store.root()
        )


def test_verify_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill(path, 5, checkpoint=True)
    before = path.read_bytes()
    segments = [(f, f.read_bytes()) for f in _segment_files(path)]
    verify_store(path)
    assert path.read_bytes() == before
    assert segments and all(f.read_bytes() == data for f, data in segments)
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_verify_store_explains_a_wrong_path(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit store") as caught:
        verify_store(tmp_path / "missing.db")
    assert caught.value.code == ReasonCode.CONFIG_INVALID and caught.value.hint
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


def test_no_audit_module_imports_kafka_or_reads_the_key_store() -> None:
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
