"""Signed checkpoints (C2SP signed notes) and offline proof bundles."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import (
    BUNDLE_FORMAT,
    DEFAULT_ORIGIN,
    AuditStore,
    LogKey,
    LogSigner,
    open_checkpoint,
    verify_bundle,
)
from audit._note import format_body, parse_note
from schemas import AuditError, ReasonCode

from .test_audit_store import fill, make_record, signer

# -- signed notes --------------------------------------------------------------------


def test_key_hash_and_signature_line_follow_c2sp_signed_note() -> None:
    key = signer()
    raw = key.key.raw
    expected_hash = hashlib.sha256(DEFAULT_ORIGIN.encode() + b"\n\x01" + raw).digest()[:4]
    assert key.key.key_hash == expected_hash
    body = format_body(DEFAULT_ORIGIN, 7, bytes(range(32)))
    assert body == f"{DEFAULT_ORIGIN}\n7\n{base64.b64encode(bytes(range(32))).decode()}\n"
    note = key.sign(body)
    assert note.startswith(body + "\n\u2014 " + DEFAULT_ORIGIN + " ") and note.endswith("\n")
    blob = base64.b64decode(note.split("\n")[4].rsplit(" ", 1)[1])
    assert blob[:4] == expected_hash and len(blob) == 4 + 64
    key.key.public_key.verify(blob[4:], body.encode())  # signs exactly the body
    opened = open_checkpoint(note, key.key, origin=DEFAULT_ORIGIN)
    assert (opened.origin, opened.size, opened.root) == (DEFAULT_ORIGIN, 7, bytes(range(32)))


def test_a_verifier_key_line_round_trips_and_catches_typos() -> None:
    key = signer().key
    line = key.vkey()
    name, hash_hex, encoded = line.split("+", 2)
    assert (name, bytes.fromhex(hash_hex)) == (DEFAULT_ORIGIN, key.key_hash)
    assert base64.b64decode(encoded) == b"\x01" + key.raw
    assert LogKey.from_vkey(line) == key and LogKey.parse(line).raw == key.raw
    pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert LogKey.parse(pem.decode()).raw == key.raw
    typo = line[:-3] + ("A" if line[-3] != "A" else "B") + line[-2:]
    with pytest.raises(AuditError, match="hash does not match"):
        LogKey.from_vkey(typo)
    with pytest.raises(AuditError, match="not a verifier key"):
        LogKey.from_vkey("just-a-name")


def test_opening_a_note_refuses_other_keys_edits_and_other_logs() -> None:
    key, other = signer(), signer()
    note = key.sign(format_body(DEFAULT_ORIGIN, 3, b"\x07" * 32))
    with pytest.raises(AuditError, match="not signed by the log key"):
        open_checkpoint(note, other.key)
    with pytest.raises(AuditError, match="does not verify"):
        open_checkpoint(note.replace("\n3\n", "\n4\n"), key.key)
    with pytest.raises(AuditError, match="is for log"):
        open_checkpoint(note, key.key, origin="somewhere.else/log")
    cosigned = note + LogSigner("witness.example", Ed25519PrivateKey.generate()).signature_line(
        parse_note(note).text
    )
    assert open_checkpoint(cosigned, key.key).size == 3  # a witness's cosignature is fine
    for broken in ("", "no blank line\n", note.replace("\u2014", "-"), note[:-1] + "!"):
        with pytest.raises(AuditError):
            open_checkpoint(broken, key.key)


# -- proof bundles -----------------------------------------------------------------------


@pytest.fixture
def bundle_and_key(tmp_path: Path) -> tuple[dict[str, Any], LogKey]:
    key = signer()
    fill(tmp_path / "audit.db", 37, key=key, checkpoint=True, batch=10)
    with AuditStore(tmp_path / "audit.db", signer=key) as store:
        store.append([make_record(i) for i in range(38, 41)])  # beyond the checkpoint
        bundle = store.proof_bundle(13)
    return bundle, key.key


def test_a_bundle_verifies_offline_with_the_key_alone(
    bundle_and_key: tuple[dict[str, Any], LogKey],
) -> None:
    bundle, key = bundle_and_key
    assert bundle["format"] == BUNDLE_FORMAT and bundle["seq"] == 13
    assert bundle["tree_size"] == 37  # the newest signed checkpoint covering entry 13
    text = json.dumps(bundle)
    summary = verify_bundle(text, key)
    assert (summary.seq, summary.tree_size, summary.origin) == (13, 37, DEFAULT_ORIGIN)
    assert summary.record == make_record(13).with_seq(13)
    assert verify_bundle(text.encode(), key, origin=DEFAULT_ORIGIN).root == summary.root


def _tampered(bundle: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**bundle, **changes}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: _tampered(b, seq=14), "not in the tree"),
        (lambda b: _tampered(b, tree_size=38), "the checkpoint is for size 37"),
        (
            lambda b: _tampered(b, entry=b["entry"].replace("recipient-1", "recipient-0")),
            "leaf_hash is not the hash of the entry",
        ),
        (
            lambda b: {
                k: v
                for k, v in _tampered(
                    b, entry=b["entry"].replace("recipient-1", "recipient-0")
                ).items()
                if k != "leaf_hash"
            },
            "not in the tree",
        ),
        (
            lambda b: _tampered(b, inclusion_proof=list(reversed(b["inclusion_proof"]))),
            "not in the tree",
        ),
        (
            lambda b: _tampered(b, checkpoint=b["checkpoint"].replace("\n37\n", "\n38\n")),
            "does not verify",
        ),
        (lambda b: _tampered(b, format="something/else"), "format is not"),
        (lambda b: _tampered(b, seq="13"), "'seq' is missing or of the wrong type"),
        (lambda b: _tampered(b, inclusion_proof=["not base64!"]), "not base64"),
    ],
)
def test_an_altered_bundle_does_not_verify(
    bundle_and_key: tuple[dict[str, Any], LogKey], change: Any, message: str
) -> None:
    bundle, key = bundle_and_key
    with pytest.raises(AuditError, match=message) as caught:
        verify_bundle(change(bundle), key)
    assert caught.value.code == ReasonCode.AUDIT_TAMPERED and caught.value.hint


def test_a_bundle_does_not_verify_with_another_key(
    bundle_and_key: tuple[dict[str, Any], LogKey],
) -> None:
    bundle, _ = bundle_and_key
    with pytest.raises(AuditError, match="not signed by the log key"):
        verify_bundle(bundle, signer().key)
    with pytest.raises(AuditError, match="not JSON"):
        verify_bundle(b"{", signer().key)


def test_prove_signs_a_checkpoint_when_none_covers_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill(path, 5)
    with AuditStore(path) as store, pytest.raises(AuditError, match="no signed checkpoint"):
        store.proof_bundle(3)
    key = signer()
    with AuditStore(path, signer=key) as store:
        bundle = store.proof_bundle(5)
        assert bundle["tree_size"] == 5 and len(store.checkpoints()) == 1
        with pytest.raises(AuditError, match="no entry 6"):
            store.proof_bundle(6)
    assert verify_bundle(bundle, key.key).seq == 5
