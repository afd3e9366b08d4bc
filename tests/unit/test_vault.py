"""audit/_vault.py: the subject vault and crypto-shredding, on real SQLite files."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from audit import (
    AuditStore,
    SubjectVault,
    canonical_identifier,
    derive_vault_key,
    enrol_subjects,
    shred_subject,
    vault_path_for,
    verify_store,
)
from audit._record import entry_id_for
from schemas import AuditEvent, CryptoError, SaferError, Subject, SubjectRole, ValidationError

SECRET = b"s" * 32
NHS_OK = "nhs:9434765919"  # valid modulus-11 check digit
POLICE = "police:HC-P-1234567"
T0 = datetime(2025, 5, 6, 9, 0, tzinfo=UTC)


def _pseudonym(identifier: str) -> str:
    # The router's function (broker.pseudonym), restated: audit must not import broker.
    return hmac.new(SECRET, identifier.encode(), hashlib.sha256).hexdigest()[:32]


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[SubjectVault]:
    with SubjectVault(
        vault_path_for(tmp_path / "audit.db"), vault_key=derive_vault_key(SECRET)
    ) as v:
        yield v


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(tmp_path / "audit.db") as s:
        yield s


def _raw_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


# -- identifiers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("9434765919", "nhs:9434765919"),
        ("943 476 5919", "nhs:9434765919"),
        ("NHS:943 476 5919", "nhs:9434765919"),
        (" police:hc-p-1234567 ", "police:HC-P-1234567"),
        ("name-dob:Smith | Amy |2014-03-02", "name-dob:smith|amy|2014-03-02"),
        ("name-dob:smith|amy|UNKNOWN", "name-dob:smith|amy|unknown"),
    ],
)
def test_canonical_identifier_accepts_the_documented_forms(given: str, canonical: str) -> None:
    assert canonical_identifier(given) == canonical


def test_an_nhs_number_recorded_with_a_wrong_check_digit_can_still_be_asked_for() -> None:
    assert canonical_identifier("9434765918", check_nhs=False) == "nhs:9434765918"


def test_canonical_identifier_matches_what_the_router_pseudonymises() -> None:
    subject = Subject(
        subject_ref="S1",
        role=SubjectRole.CHILD,
        given_name=" Amy ",
        family_name="Smith",
        date_of_birth=date(2014, 3, 2),
    )
    (router_form,) = subject.identifiers()
    assert canonical_identifier("name-dob:SMITH|amy|2014-03-02") == router_form


@pytest.mark.parametrize(
    "bad",
    [
        "9434765918",  # wrong check digit: a typo must not find someone else
        "nhs:12345",
        "police:",
        "passport:123456789",
        "name-dob:smith|amy",
        "name-dob:smith|amy|02/03/2014",
        "just text",
    ],
)
def test_canonical_identifier_rejects_without_echoing_the_value(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        canonical_identifier(bad)
    text = str(caught.value)
    for part in ("9434765918", "12345", "123456789", "02/03/2014", "just text"):
        assert part not in text


# -- enrolment -------------------------------------------------------------------------


def test_enrol_links_a_persons_identifiers_under_one_key(vault: SubjectVault) -> None:
    key_id = vault.enrol([NHS_OK, POLICE], _pseudonym, at=T0)
    ref = vault.lookup(_pseudonym(POLICE))
    assert ref is not None and ref.key_id == key_id
    assert ref.identifiers == (NHS_OK, POLICE)
    assert set(ref.pseudonyms) == {_pseudonym(NHS_OK), _pseudonym(POLICE)}
    assert not ref.shredded
    assert vault.linked_pseudonyms({_pseudonym(NHS_OK)}) == {
        _pseudonym(NHS_OK),
        _pseudonym(POLICE),
    }
    assert vault.enrol([POLICE], _pseudonym) == key_id  # idempotent
    assert vault.lookup("0" * 32) is None
    assert vault.counts() == {"live": 1, "shredded": 0}


def test_entries_found_to_be_one_person_are_merged(vault: SubjectVault) -> None:
    first = vault.enrol([NHS_OK], _pseudonym, at=T0)
    vault.enrol([POLICE], _pseudonym, at=datetime(2025, 5, 7, tzinfo=UTC))
    merged = vault.enrol([NHS_OK, POLICE], _pseudonym)
    assert merged == first  # the oldest entry survives
    ref = vault.lookup(_pseudonym(POLICE))
    assert ref is not None and ref.key_id == first and ref.identifiers == (NHS_OK, POLICE)
    assert vault.counts() == {"live": 1, "shredded": 0}


def test_enrol_subjects_uses_each_persons_own_identifiers(vault: SubjectVault) -> None:
    child = Subject(
        subject_ref="S1",
        role=SubjectRole.CHILD,
        given_name="Amy",
        family_name="Smith",
        nhs_number="9434765919",
        police_person_id="hc-p-1234567",
    )
    parent = Subject(
        subject_ref="S2", role=SubjectRole.PARENT_CARER, given_name="Jo", family_name="Smith"
    )
    keys = enrol_subjects(vault, [child, parent], _pseudonym, at=T0)
    assert len(set(keys)) == 2  # two people, two keys
    ref = vault.lookup(_pseudonym(POLICE))
    assert ref is not None and ref.identifiers == (NHS_OK, POLICE)
    parent_ref = vault.lookup(_pseudonym("name-dob:smith|jo|unknown"))
    assert parent_ref is not None and parent_ref.key_id == keys[1]


def test_the_vault_file_holds_no_identifier_in_clear(vault: SubjectVault) -> None:
    vault.enrol([NHS_OK, POLICE, "name-dob:smith|amy|2014-03-02"], _pseudonym, at=T0)
    raw = _raw_bytes(vault.path)
    for clear in (b"9434765919", b"HC-P-1234567", b"smith", b"2014-03-02"):
        assert clear not in raw
    assert _pseudonym(NHS_OK).encode() in raw  # the index holds pseudonyms only


def test_a_wrong_vault_key_opens_nothing(vault: SubjectVault) -> None:
    vault.enrol([NHS_OK], _pseudonym, at=T0)
    with (
        SubjectVault(vault.path, vault_key=derive_vault_key(b"t" * 32)) as other,
        pytest.raises(CryptoError) as caught,
    ):
        other.lookup(_pseudonym(NHS_OK))
    assert caught.value.code == "DECRYPT_FAILED"


def test_an_altered_reference_is_detected(vault: SubjectVault) -> None:
    key_id = vault.enrol([NHS_OK], _pseudonym, at=T0)
    with sqlite3.connect(vault.path) as raw:
        (ciphertext,) = raw.execute(
            "SELECT ciphertext FROM vault_refs WHERE key_id = ?", (key_id,)
        ).fetchone()
        flipped = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        raw.execute("UPDATE vault_refs SET ciphertext = ? WHERE key_id = ?", (flipped, key_id))
    with pytest.raises(CryptoError):
        vault.lookup(_pseudonym(NHS_OK))


def test_not_a_vault_and_missing_vault(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE t (x)")
    with pytest.raises(SaferError):
        SubjectVault(other, vault_key=derive_vault_key(SECRET))
    with pytest.raises(SaferError):
        SubjectVault(tmp_path / "absent.db", vault_key=derive_vault_key(SECRET), create=False)
    assert not (tmp_path / "absent.db").exists()


# -- shredding ------------------------------------------------------------------------------


def test_shred_records_key_shredded_then_destroys_the_key(
    vault: SubjectVault, store: AuditStore
) -> None:
    key_id = vault.enrol([NHS_OK, POLICE], _pseudonym, at=T0)
    with sqlite3.connect(vault.path) as raw:
        (wrapped,) = raw.execute(
            "SELECT wrapped_key FROM vault_keys WHERE key_id = ?", (key_id,)
        ).fetchone()
    before = store.count()
    outcomes = shred_subject(
        store, vault, {_pseudonym(NHS_OK)}, reason="erasure", actor="dpo-7", at=T0
    )
    assert [(o.key_id, o.seq, o.already_logged) for o in outcomes] == [(key_id, before + 1, False)]
    record = store.get(before + 1)
    assert record is not None
    assert record.event is AuditEvent.KEY_SHREDDED
    assert record.entry_id == entry_id_for(AuditEvent.KEY_SHREDDED, key_id)
    assert set(record.subject_pseudonyms) == {_pseudonym(NHS_OK), _pseudonym(POLICE)}
    assert record.actor == "dpo-7" and record.source == "subject-vault"
    assert "9434765919" not in record.canonical_bytes().decode()
    # The key is gone, from the table and from the file's bytes (secure_delete, WAL truncated).
    ref = vault.lookup(_pseudonym(POLICE))
    assert ref is not None and ref.shredded and ref.identifiers == ()
    assert ref.shredded_at == T0
    assert wrapped not in _raw_bytes(vault.path)
    with sqlite3.connect(vault.path) as raw:
        assert raw.execute("SELECT count(*) FROM vault_keys").fetchone() == (0,)
        assert raw.execute("SELECT count(*) FROM vault_refs").fetchone() == (1,)  # tombstone
    assert vault.linked_pseudonyms({_pseudonym(NHS_OK)}) == {_pseudonym(NHS_OK)}
    assert vault.counts() == {"live": 0, "shredded": 1}
    # The log is untouched apart from the new entry, and still verifies end to end.
    assert verify_store(store.path).entries == before + 1


def test_shred_twice_adds_nothing(vault: SubjectVault, store: AuditStore) -> None:
    vault.enrol([NHS_OK], _pseudonym, at=T0)
    shred_subject(store, vault, {_pseudonym(NHS_OK)}, reason="retention", actor="dpo")
    size = store.count()
    assert shred_subject(store, vault, {_pseudonym(NHS_OK)}, reason="retention", actor="dpo") == []
    assert store.count() == size


def test_an_interrupted_shred_is_finished_without_a_second_entry(
    vault: SubjectVault, store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.enrol([NHS_OK], _pseudonym, at=T0)

    def crash(self: SubjectVault, key_id: str, *, at: datetime | None = None) -> bool:
        raise RuntimeError("power cut")

    monkeypatch.setattr(SubjectVault, "destroy_key", crash)
    with pytest.raises(RuntimeError):
        shred_subject(store, vault, {_pseudonym(NHS_OK)}, reason="erasure", actor="dpo")
    size = store.count()  # audit first: the entry is there, the key too
    ref = vault.lookup(_pseudonym(NHS_OK))
    assert ref is not None and not ref.shredded
    monkeypatch.undo()
    (outcome,) = shred_subject(store, vault, {_pseudonym(NHS_OK)}, reason="erasure", actor="dpo")
    assert outcome.already_logged and outcome.seq == size
    assert store.count() == size
    ref = vault.lookup(_pseudonym(NHS_OK))
    assert ref is not None and ref.shredded
    verify_store(store.path)


def test_enrolling_after_a_shred_starts_a_new_entry(vault: SubjectVault, store: AuditStore) -> None:
    old = vault.enrol([NHS_OK], _pseudonym, at=T0)
    shred_subject(store, vault, {_pseudonym(NHS_OK)}, reason="erasure", actor="dpo")
    new = vault.enrol([NHS_OK], _pseudonym)
    assert new != old
    ref = vault.lookup(_pseudonym(NHS_OK))
    assert ref is not None and ref.key_id == new and ref.identifiers == (NHS_OK,)
    (outcome,) = shred_subject(store, vault, {_pseudonym(NHS_OK)}, reason="erasure", actor="dpo")
    assert outcome.key_id == new  # a second erasure gets its own KEY_SHREDDED entry


def test_shred_needs_a_known_reason_and_an_actor(vault: SubjectVault, store: AuditStore) -> None:
    vault.enrol([NHS_OK], _pseudonym, at=T0)
    with pytest.raises(ValidationError):
        shred_subject(store, vault, {_pseudonym(NHS_OK)}, reason="because", actor="dpo")
    with pytest.raises(ValidationError):
        shred_subject(store, vault, {_pseudonym(NHS_OK)}, reason="erasure", actor=" ")
    assert store.count() == 0
    assert shred_subject(store, vault, {"0" * 32}, reason="erasure", actor="dpo") == []
