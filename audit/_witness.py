"""Witnessed log (issue 15.3): consistency bundles, C2SP cosignatures, and the witness's rule.

**Consistency bundle.** ``safer audit prove --consistency FROM_SIZE`` writes::

    {
      "format": "safer-exchange/audit-consistency/v1",
      "old_size": 100,
      "old_root": "<base64 root of the first 100 entries>",
      "old_checkpoint": "<the signed note of size 100, if the log kept one, else null>",
      "new_size": 245,
      "consistency_proof": ["<base64 hash>", ...],
      "checkpoint": "<signed note of size 245>"
    }

``verify_consistency_bundle`` needs only the bundle and the log's public key:
it checks both checkpoints' signatures and RFC 9162 §2.1.4.2 consistency.

**Cosignatures.** A witness cosigns a checkpoint in C2SP tlog-cosignature/v1
form: a signed-note line ``— <witness name> base64(key id ‖ u64 timestamp ‖
Ed25519 signature)``, where the key id is ``SHA-256(name ‖ "\\n" ‖ 0x04 ‖ public
key)[:4]`` and the signed message is ``cosignature/v1\\ntime <timestamp>\\n`` +
the checkpoint body. A checkpoint is *witnessed* when at least k of the n
witnesses an auditor trusts have cosigned it (``count_cosignatures``).

**The witness's rule** (``witness_step``). The witness keeps the last checkpoint
it cosigned. It cosigns a new one only if the log's signature holds and a
consistency proof shows the new tree extends the kept one. It refuses, loudly:

* ``ROLLBACK``: the new checkpoint is smaller than the kept one;
* ``FORK``: the same size with a different root (two views of the log);
* ``TRUNCATED``: the log's tree at the kept size is not the kept one: the log
  was cut back and rewritten (or forked earlier);
* ``INCONSISTENT``: the proof does not show the new tree extends the old one;
* ``STALE`` (not tampering): the bundle starts from another size than the kept
  one; ask the operator for a bundle from the kept size.

Pure: keys and state come in as arguments; the shell keeps the state file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas import AuditError, ReasonCode

from ._bundle import parse_bundle_json
from ._merkle import verify_consistency
from ._note import (
    CheckpointBody,
    LogKey,
    checkpoint_body_of_size,
    open_checkpoint,
    parse_note,
)

__all__ = [
    "CONSISTENCY_FORMAT",
    "ConsistencySummary",
    "Cosigner",
    "CosignerKey",
    "WitnessRefusal",
    "WitnessState",
    "add_cosignatures",
    "count_cosignatures",
    "make_consistency_bundle",
    "verify_consistency_bundle",
    "witness_step",
]

CONSISTENCY_FORMAT = "safer-exchange/audit-consistency/v1"
_COSIGNATURE_V1 = 0x04
_DASH = "\u2014 "
_MAX_BUNDLE = 1024 * 1024


def _bad(message: str) -> AuditError:
    return AuditError(
        f"consistency bundle does not verify: {message}",
        code=ReasonCode.AUDIT_TAMPERED,
        retriable=False,
        hint="the log was rewritten, the bundle altered, or the key is not the log's; "
        "keep the bundle and the previous checkpoint as evidence",
    )


# --------------------------------------------------------------------------- bundles


def make_consistency_bundle(
    *,
    old_size: int,
    old_root: bytes,
    old_checkpoint: str | None,
    new_size: int,
    proof: Sequence[bytes],
    checkpoint: str,
) -> dict[str, Any]:
    checkpoint_body_of_size(checkpoint, new_size)
    return {
        "format": CONSISTENCY_FORMAT,
        "old_size": old_size,
        "old_root": base64.b64encode(old_root).decode(),
        "old_checkpoint": old_checkpoint,
        "new_size": new_size,
        "consistency_proof": [base64.b64encode(p).decode() for p in proof],
        "checkpoint": checkpoint,
    }


@dataclass(frozen=True)
class ConsistencySummary:
    """What a verified consistency bundle proves: ``new`` extends ``(old_size, old_root)``."""

    origin: str
    old_size: int
    old_root: bytes
    new: CheckpointBody
    checkpoint: str
    old_signed: bool


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{name} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise _bad(f"{name} is not base64") from None


def load_bundle(data: Mapping[str, Any] | str | bytes) -> Mapping[str, Any]:
    return parse_bundle_json(data, bad=_bad, max_bytes=_MAX_BUNDLE)


def verify_consistency_bundle(
    bundle: Mapping[str, Any] | str | bytes, key: LogKey
) -> ConsistencySummary:
    """Check a consistency bundle with the log's public key alone (raises AUDIT_TAMPERED)."""
    data = load_bundle(bundle)
    if data.get("format") != CONSISTENCY_FORMAT:
        raise _bad(f"format is not {CONSISTENCY_FORMAT!r}")
    old_size, new_size = data.get("old_size"), data.get("new_size")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (old_size, new_size)):
        raise _bad("old_size and new_size must be integers")
    assert isinstance(old_size, int) and isinstance(new_size, int)
    note = data.get("checkpoint")
    proof_field = data.get("consistency_proof")
    if not isinstance(note, str) or not isinstance(proof_field, list):
        raise _bad("checkpoint or consistency_proof is missing")
    try:
        new = open_checkpoint(note, key)
    except AuditError as exc:
        raise _bad(exc.message) from None
    if new.size != new_size:
        raise _bad(f"the checkpoint is for size {new.size}, the bundle says {new_size}")
    old_root = _b64(data.get("old_root"), "old_root")
    old_note = data.get("old_checkpoint")
    if old_note is not None:
        if not isinstance(old_note, str):
            raise _bad("old_checkpoint is not a signed note")
        try:
            old = open_checkpoint(old_note, key, origin=new.origin)
        except AuditError as exc:
            raise _bad(f"old checkpoint: {exc.message}") from None
        if (old.size, old.root) != (old_size, old_root):
            raise _bad("old_checkpoint is not the tree the bundle proves from")
    proof = [_b64(p, "a consistency proof hash") for p in proof_field]
    try:
        verify_consistency(old_size, new_size, old_root, new.root, proof)
    except AuditError as exc:
        raise _bad(exc.message) from None
    return ConsistencySummary(new.origin, old_size, old_root, new, note, old_note is not None)


# --------------------------------------------------------------------------- cosignatures


def _cosigner_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes_raw()
    return hashlib.sha256(name.encode() + b"\n" + bytes([_COSIGNATURE_V1]) + raw).digest()[:4]


def _cosigned_message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


@dataclass(frozen=True)
class CosignerKey:
    """A witness's public key under its name (vkey type 0x04)."""

    name: str
    public_key: Ed25519PublicKey = field(repr=False, compare=False)

    @property
    def key_id(self) -> bytes:
        return _cosigner_key_id(self.name, self.public_key)

    def vkey(self) -> str:
        raw = bytes([_COSIGNATURE_V1]) + self.public_key.public_bytes_raw()
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(raw).decode()}"

    @classmethod
    def from_vkey(cls, text: str) -> CosignerKey:
        parts = text.strip().split("+", 2)
        problem = AuditError(
            "not a witness verifier key (want name+keyid+base64(0x04 ‖ key))",
            code=ReasonCode.CONFIG_INVALID,
            hint="use the line `safer audit witness init` printed for that witness",
        )
        if len(parts) != 3:
            raise problem
        try:
            raw = base64.b64decode(parts[2], validate=True)
            expected = bytes.fromhex(parts[1])
        except (binascii.Error, ValueError):
            raise problem from None
        if len(raw) != 33 or raw[0] != _COSIGNATURE_V1:
            raise problem
        key = cls(parts[0], Ed25519PublicKey.from_public_bytes(raw[1:]))
        if key.key_id != expected:
            raise problem
        return key

    def verify(self, note: str) -> int | None:
        """The timestamp of this witness's valid cosignature on ``note``, or None."""
        parsed = parse_note(note)
        for sig in parsed.signatures:
            if sig.name != self.name or sig.key_hash != self.key_id or len(sig.signature) != 72:
                continue
            (timestamp,) = struct.unpack(">Q", sig.signature[:8])
            try:
                self.public_key.verify(sig.signature[8:], _cosigned_message(parsed.text, timestamp))
            except InvalidSignature:
                continue
            return int(timestamp)
        return None


@dataclass(frozen=True)
class Cosigner:
    """A witness's private key under its name. Never printed."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)

    @property
    def key(self) -> CosignerKey:
        return CosignerKey(self.name, self.private_key.public_key())

    def cosign(self, note: str, timestamp: int) -> str:
        """``note`` with this witness's cosignature line appended."""
        parsed = parse_note(note)
        signature = self.private_key.sign(_cosigned_message(parsed.text, timestamp))
        blob = self.key.key_id + struct.pack(">Q", timestamp) + signature
        line = f"{_DASH}{self.name} {base64.b64encode(blob).decode()}\n"
        return note + line


def add_cosignatures(note: str, *cosigned: str) -> str:
    """``note`` with the signature lines of ``cosigned`` copies of the same checkpoint."""
    body = parse_note(note).text
    lines = [ln for ln in note[len(body) + 1 :].splitlines(keepends=True)]
    for other in cosigned:
        if parse_note(other).text != body:
            raise AuditError(
                "a cosigned note is for another checkpoint",
                code=ReasonCode.CONFIG_INVALID,
                hint="give only cosignatures of the bundle's own checkpoint",
            )
        for line in other[len(body) + 1 :].splitlines(keepends=True):
            if line not in lines:
                lines.append(line)
    return body + "\n" + "".join(lines)


def count_cosignatures(note: str, witnesses: Sequence[CosignerKey]) -> list[str]:
    """Names of the ``witnesses`` with a valid cosignature on ``note``."""
    return [w.name for w in witnesses if w.verify(note) is not None]


# --------------------------------------------------------------------------- the witness


@dataclass(frozen=True)
class WitnessState:
    """The last checkpoint a witness cosigned."""

    origin: str
    size: int
    root: bytes
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WitnessState:
        return cls(
            str(data["origin"]),
            int(data["size"]),
            base64.b64decode(str(data["root"])),
            str(data["note"]),
        )


class WitnessRefusal(AuditError):
    """The witness will not cosign: ``kind`` is ROLLBACK, FORK, TRUNCATED, INCONSISTENT
    or STALE (see the module docstring)."""

    def __init__(self, kind: str, message: str, hint: str) -> None:
        tampered = kind != "STALE"
        super().__init__(
            f"{kind}: {message}",
            code=ReasonCode.AUDIT_TAMPERED if tampered else ReasonCode.CONFIG_INVALID,
            retriable=not tampered,
            hint=hint,
        )
        self.kind = kind


_EVIDENCE = (
    "do not cosign again until the operator explains: keep the bundle and the witness "
    "state as evidence and follow docs/OPERATIONS.md (the witness refuses)"
)


def witness_step(
    state: WitnessState | None,
    bundle: Mapping[str, Any] | str | bytes,
    log_key: LogKey,
    cosigner: Cosigner,
    timestamp: int,
) -> tuple[WitnessState, str]:
    """Check ``bundle`` against the kept ``state``; return the new state and cosigned note.

    Raises ``WitnessRefusal`` (see the module docstring) or ``AuditError`` for a
    bundle whose signature or proof does not hold.
    """
    data = load_bundle(bundle)
    note = data.get("checkpoint")
    if not isinstance(note, str):
        raise _bad("checkpoint is missing")
    try:
        new = open_checkpoint(note, log_key)
    except AuditError as exc:
        raise _bad(exc.message) from None
    if state is not None:
        if new.origin != state.origin:
            raise _bad(f"the checkpoint is for log {new.origin!r}, not {state.origin!r}")
        if new.size < state.size:
            raise WitnessRefusal(
                "ROLLBACK",
                f"the log now says it has {new.size} entries; this witness already cosigned "
                f"{state.size}",
                _EVIDENCE,
            )
        if new.size == state.size and new.root != state.root:
            raise WitnessRefusal(
                "FORK",
                f"two different roots for size {new.size}: the log shows another history "
                "than the one this witness cosigned",
                _EVIDENCE,
            )
        old_size = data.get("old_size")
        if old_size != state.size:
            raise WitnessRefusal(
                "STALE",
                f"the bundle proves consistency from size {old_size}; this witness kept "
                f"size {state.size}",
                f"ask the operator for `safer audit prove --consistency {state.size}`",
            )
        if _b64(data.get("old_root"), "old_root") != state.root:
            raise WitnessRefusal(
                "TRUNCATED",
                f"the log's tree of its first {state.size} entries is not the one this "
                "witness cosigned: it was cut back and rewritten (or forked)",
                _EVIDENCE,
            )
    try:
        summary = verify_consistency_bundle(data, log_key)
    except AuditError as exc:
        if state is None:
            raise
        raise WitnessRefusal(
            "INCONSISTENT",
            f"the new checkpoint of size {new.size} is not shown to extend size "
            f"{state.size} ({exc.message})",
            _EVIDENCE,
        ) from None
    cosigned = cosigner.cosign(summary.checkpoint, timestamp)
    return WitnessState(new.origin, new.size, new.root, summary.checkpoint), cosigned
