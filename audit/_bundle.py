"""Proof bundles: one entry, its RFC 9162 inclusion proof and a signed checkpoint.

A bundle lets anyone check, offline and without the store, that an entry is
in the log the operator signed. It is a JSON object::

    {
      "format": "safer-exchange/audit-proof/v1",
      "seq": 42,
      "entry": "<the entry's canonical JSON, exactly the bytes that were hashed>",
      "leaf_hash": "<base64 SHA-256(0x00 ‖ entry)>",
      "tree_size": 100,
      "inclusion_proof": ["<base64 hash>", ...],
      "checkpoint": "<C2SP signed note of size 100>"
    }

``verify_bundle`` needs only the bundle and the log's public key. It checks
the checkpoint's signature, recomputes the leaf from the entry, runs the RFC
9162 inclusion check against the signed root, and parses the entry. The
entry holds pseudonyms and ids only, never personal data (DESIGN §4.4).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas import AuditError, DecodeError, ReasonCode

from ._merkle import leaf_hash, verify_inclusion
from ._note import LogKey, checkpoint_body_of_size, open_checkpoint
from ._record import AuditRecord

__all__ = ["BUNDLE_FORMAT", "BundleSummary", "make_bundle", "verify_bundle"]

BUNDLE_FORMAT = "safer-exchange/audit-proof/v1"
_MAX_BUNDLE = 1024 * 1024


@dataclass(frozen=True)
class BundleSummary:
    """What a verified bundle proves: ``record`` is entry ``seq`` of ``origin``'s log."""

    seq: int
    origin: str
    tree_size: int
    root: bytes
    key_name: str
    record: AuditRecord


def _bad(message: str) -> AuditError:
    return AuditError(
        f"proof bundle does not verify: {message}",
        code=ReasonCode.AUDIT_TAMPERED,
        retriable=False,
        hint="the bundle was altered, is for another log, or the key is not the log's; "
        "ask the operator for a fresh `safer audit prove` and check the key you hold",
    )


def make_bundle(
    *, seq: int, entry: bytes, tree_size: int, proof: Sequence[bytes], checkpoint: str
) -> dict[str, Any]:
    """Assemble a bundle (the store's ``proof_bundle`` gathers the parts)."""
    checkpoint_body_of_size(checkpoint, tree_size)
    return {
        "format": BUNDLE_FORMAT,
        "seq": seq,
        "entry": entry.decode("utf-8"),
        "leaf_hash": base64.b64encode(leaf_hash(entry)).decode(),
        "tree_size": tree_size,
        "inclusion_proof": [base64.b64encode(p).decode() for p in proof],
        "checkpoint": checkpoint,
    }


def _load(bundle: Mapping[str, Any] | str | bytes) -> Mapping[str, Any]:
    return parse_bundle_json(bundle, bad=_bad, max_bytes=_MAX_BUNDLE)


def parse_bundle_json(
    bundle: Mapping[str, Any] | str | bytes,
    *,
    bad: Callable[[str], AuditError],
    max_bytes: int,
) -> Mapping[str, Any]:
    """A bundle as a JSON object, bounded in size; ``bad`` makes the kind's own error."""
    if isinstance(bundle, bytes | str):
        if len(bundle) > max_bytes:
            raise bad("it is larger than any bundle this log writes")
        try:
            loaded = json.loads(bundle)
        except (ValueError, UnicodeDecodeError):
            raise bad("it is not JSON") from None
        bundle = loaded
    if not isinstance(bundle, Mapping):
        raise bad("it is not a JSON object")
    return bundle


def _field(bundle: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = bundle.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _bad(f"field {name!r} is missing or of the wrong type")
    return value


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{name} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise _bad(f"{name} is not base64") from None


def verify_bundle(
    bundle: Mapping[str, Any] | str | bytes, key: LogKey, *, origin: str | None = None
) -> BundleSummary:
    """Check a proof bundle with the log's public key alone.

    Returns what it proves; raises ``AuditError`` (AUDIT_TAMPERED) if any part
    does not hold. ``origin``, when given, must be the checkpoint's origin.
    """
    data = _load(bundle)
    if data.get("format") != BUNDLE_FORMAT:
        raise _bad(f"format is not {BUNDLE_FORMAT!r}")
    seq = _field(data, "seq", int)
    tree_size = _field(data, "tree_size", int)
    entry_text = _field(data, "entry", str)
    note = _field(data, "checkpoint", str)
    proof_field = _field(data, "inclusion_proof", list)
    if seq < 1:
        raise _bad("seq must be positive")
    try:
        body = open_checkpoint(note, key, origin=origin)
    except AuditError as exc:
        raise _bad(exc.message) from None
    if body.size != tree_size:
        raise _bad(f"the checkpoint is for size {body.size}, the bundle says {tree_size}")
    try:
        entry = entry_text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("the entry is not valid text") from None
    leaf = leaf_hash(entry)
    if "leaf_hash" in data and _b64(data["leaf_hash"], "leaf_hash") != leaf:
        raise _bad("leaf_hash is not the hash of the entry")
    proof = [_b64(p, "an inclusion proof hash") for p in proof_field]
    try:
        verify_inclusion(leaf, seq - 1, tree_size, proof, body.root)
    except AuditError as exc:
        raise _bad(exc.message) from None
    try:
        record = AuditRecord.from_canonical(entry)
    except DecodeError as exc:
        raise _bad(f"the entry is not a canonical audit record ({exc.message})") from None
    if record.seq != seq:
        raise _bad(f"the entry says seq {record.seq}, the bundle says {seq}")
    return BundleSummary(seq, body.origin, tree_size, body.root, key.name, record)
