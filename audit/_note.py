"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed-note form.

A checkpoint commits the log to its size and RFC 9162 root::

    safer-exchange.hips/audit/v1
    1234
    <base64 root hash>

    — safer-exchange.hips/audit/v1 <base64(4-byte key hash ‖ Ed25519 signature)>

The body (origin, decimal size, base64 root, each line ending in a newline)
is what is signed. The key hash is the first 4 bytes of
``SHA-256(key name ‖ "\\n" ‖ 0x01 ‖ 32-byte Ed25519 public key)``. A verifier
key is written ``<name>+<8 hex digits of key hash>+<base64(0x01 ‖ public key)>``
(the signed-note "vkey" form), so an auditor can hold the log's key as one line.

Pure: keys come in as arguments; nothing here reads a file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas import AuditError, ReasonCode

from ._merkle import HASH_SIZE

__all__ = [
    "DEFAULT_ORIGIN",
    "CheckpointBody",
    "LogKey",
    "LogSigner",
    "NoteSignature",
    "SignedNote",
    "checkpoint_body_of_size",
    "format_body",
    "key_hash",
    "open_checkpoint",
    "parse_body",
    "parse_note",
]

#: The origin line of SAFER Exchange audit-log checkpoints (and the key name).
DEFAULT_ORIGIN = "safer-exchange.hips/audit/v1"

_ED25519 = 0x01  # signed-note signature type for Ed25519
_DASH = "\u2014 "  # "— ": em dash and space start every signature line
_MAX_NOTE = 64 * 1024
_MAX_SIGNATURES = 16
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_NAME_RE = re.compile(r"[^\s+]+")
_KEY_HINT = (
    "pass the log's public key: the PEM file <data-dir>/keys/safer-audit-log/signing.pub, "
    "or the one-line verifier key that `safer audit checkpoint` prints"
)


def _bad(message: str, hint: str = "") -> AuditError:
    return AuditError(
        message,
        code=ReasonCode.AUDIT_TAMPERED,
        retriable=False,
        hint=hint or "the checkpoint was altered or was not written by this log",
    )


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise AuditError(
            "a key name must be non-empty, without spaces or '+'",
            code=ReasonCode.CONFIG_INVALID,
        )
    return name


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """First 4 bytes of ``SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key)`` (C2SP signed-note)."""
    raw = public_key.public_bytes_raw()
    return hashlib.sha256(name.encode() + b"\n" + bytes([_ED25519]) + raw).digest()[:4]


@dataclass(frozen=True)
class LogKey:
    """The log's public key, under its signed-note key name."""

    name: str
    public_key: Ed25519PublicKey = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.public_key)

    @property
    def raw(self) -> bytes:
        return self.public_key.public_bytes_raw()

    def vkey(self) -> str:
        """``name+hash+base64(0x01 ‖ key)``: the key as one line of text."""
        encoded = base64.b64encode(bytes([_ED25519]) + self.raw).decode()
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, text: str) -> LogKey:
        parts = text.strip().split("+", 2)  # base64 may contain "+"; name and hash may not
        if len(parts) != 3:
            raise AuditError(
                "not a verifier key (want name+keyhash+base64key)",
                code=ReasonCode.CONFIG_INVALID,
                hint=_KEY_HINT,
            )
        name, hash_hex, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
            expected = bytes.fromhex(hash_hex)
        except (binascii.Error, ValueError):
            raise AuditError(
                "verifier key is not valid hex and base64",
                code=ReasonCode.CONFIG_INVALID,
                hint=_KEY_HINT,
            ) from None
        if len(raw) != 33 or raw[0] != _ED25519:
            raise AuditError(
                "verifier key is not an Ed25519 key",
                code=ReasonCode.CONFIG_INVALID,
                hint=_KEY_HINT,
            )
        key = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if key.key_hash != expected:
            raise AuditError(
                "verifier key's hash does not match its name and key (mistyped?)",
                code=ReasonCode.CONFIG_INVALID,
                hint=_KEY_HINT,
            )
        return key

    @classmethod
    def from_pem(cls, data: bytes, name: str = DEFAULT_ORIGIN) -> LogKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise AuditError(
                "not a PEM public key", code=ReasonCode.CONFIG_INVALID, hint=_KEY_HINT
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise AuditError(
                "the PEM key is not an Ed25519 public key",
                code=ReasonCode.CONFIG_INVALID,
                hint=_KEY_HINT,
            )
        return cls(name, key)

    @classmethod
    def parse(cls, text: str, name: str = DEFAULT_ORIGIN) -> LogKey:
        """A verifier key line, or the text of a PEM public key."""
        if "-----BEGIN" in text:
            return cls.from_pem(text.encode(), name)
        return cls.from_vkey(text)


@dataclass(frozen=True)
class LogSigner:
    """The log's Ed25519 private key, under its key name. Never printed."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def key(self) -> LogKey:
        return LogKey(self.name, self.private_key.public_key())

    def signature_line(self, body: str) -> str:
        """``— <name> base64(key hash ‖ signature)`` over ``body``."""
        signature = self.private_key.sign(body.encode("utf-8"))
        blob = base64.b64encode(self.key.key_hash + signature).decode()
        return f"{_DASH}{self.name} {blob}\n"

    def sign(self, body: str) -> str:
        """The signed note: ``body``, a blank line, and this key's signature line."""
        _check_body(body)
        return f"{body}\n{self.signature_line(body)}"


@dataclass(frozen=True)
class CheckpointBody:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_hash: bytes
    signature: bytes


@dataclass(frozen=True)
class SignedNote:
    text: str  # the signed body, ending in a newline
    signatures: tuple[NoteSignature, ...]


def format_body(origin: str, size: int, root: bytes) -> str:
    """The C2SP tlog-checkpoint body: origin, size and base64 root, one per line."""
    if not origin or "\n" in origin:
        raise AuditError("origin must be one non-empty line", code=ReasonCode.CONFIG_INVALID)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise AuditError("size must be a non-negative integer", code=ReasonCode.CONFIG_INVALID)
    if len(root) != HASH_SIZE:
        raise AuditError("root must be a 32-byte hash", code=ReasonCode.CONFIG_INVALID)
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def _check_body(body: str) -> None:
    if not body.endswith("\n") or "\n\n" in body or "\r" in body:
        raise AuditError(
            "a note body is non-empty lines each ending in a newline",
            code=ReasonCode.CONFIG_INVALID,
        )


def checkpoint_body_of_size(checkpoint: str, size: int) -> CheckpointBody:
    """The body of a signed checkpoint that must be for a tree of ``size`` entries
    (a proof and its checkpoint travel together in a bundle)."""
    body = parse_body(parse_note(checkpoint).text)
    if body.size != size:
        raise AuditError(
            f"checkpoint is for size {body.size}, the proof for size {size}",
            code=ReasonCode.PROCESSING_ERROR,
        )
    return body


def parse_body(text: str) -> CheckpointBody:
    """Parse a checkpoint body; raises ``AuditError`` if it is not one."""
    if not text.endswith("\n"):
        raise _bad("checkpoint body does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise _bad("checkpoint body needs an origin, a size and a root hash")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise _bad("checkpoint origin line is empty")
    if _SIZE_RE.fullmatch(size_text) is None:
        raise _bad("checkpoint size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise _bad("checkpoint root is not base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_text:
        raise _bad("checkpoint root is not a base64 SHA-256 hash")
    if any(not line for line in extensions):
        raise _bad("checkpoint has an empty extension line")
    return CheckpointBody(origin, int(size_text), root, tuple(extensions))


def parse_note(note: str) -> SignedNote:
    """Split a signed note into its body and signature lines (no signature checked)."""
    if not isinstance(note, str) or len(note) > _MAX_NOTE:
        raise _bad("not a signed note (too long, or not text)")
    if "\r" in note:
        raise _bad("signed note contains a carriage return")
    split = note.rfind("\n\n")
    if split < 0:
        raise _bad("signed note has no blank line between the body and the signatures")
    text, rest = note[: split + 1], note[split + 2 :]
    if "\n\n" in text or not text.strip():
        raise _bad("signed note body is empty or has blank lines")
    signatures: list[NoteSignature] = []
    if rest and not rest.endswith("\n"):
        raise _bad("signed note does not end with a newline")
    for line in rest[:-1].split("\n") if rest else ():
        if not line.startswith(_DASH):
            raise _bad("a signature line does not start with an em dash and a space")
        name, _, encoded = line[len(_DASH) :].rpartition(" ")
        if _NAME_RE.fullmatch(name) is None:
            raise _bad("a signature line has no valid key name")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise _bad("a signature is not base64") from None
        if len(blob) < 5:
            raise _bad("a signature is too short")
        signatures.append(NoteSignature(name, blob[:4], blob[4:]))
    if len(signatures) > _MAX_SIGNATURES:
        raise _bad("signed note has too many signatures")
    return SignedNote(text, tuple(signatures))


def open_checkpoint(note: str, key: LogKey, *, origin: str | None = None) -> CheckpointBody:
    """Verify ``note``'s signature by ``key`` and return its checkpoint body.

    Other signatures (a witness's cosignature, say) are allowed and ignored.
    Raises ``AuditError`` (AUDIT_TAMPERED) when there is no valid signature by
    ``key``, when the body is not a checkpoint, or when ``origin`` is given and
    differs.
    """
    parsed = parse_note(note)
    mine = [s for s in parsed.signatures if s.name == key.name and s.key_hash == key.key_hash]
    if not mine:
        names = ", ".join(sorted({s.name for s in parsed.signatures})) or "none"
        raise _bad(
            f"checkpoint is not signed by the log key {key.name} (signed by: {names})",
            hint="check you have the right log key; otherwise the checkpoint is forged",
        )
    data = parsed.text.encode("utf-8")
    for signature in mine:
        try:
            key.public_key.verify(signature.signature, data)
            break
        except InvalidSignature:
            continue
    else:
        raise _bad(
            f"checkpoint signature by {key.name} does not verify (forged or altered)",
        )
    body = parse_body(parsed.text)
    if origin is not None and body.origin != origin:
        raise _bad(f"checkpoint is for log {body.origin!r}, not {origin!r}")
    return body
