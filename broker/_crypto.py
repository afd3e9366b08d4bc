"""Envelope crypto: record signatures, per-recipient encryption, pseudonyms.

Pure and synchronous (DESIGN §2): no file I/O, no Kafka. Every primitive comes
from ``cryptography``; nothing here is hand-rolled.

- Signatures (DESIGN §4.5): Ed25519 over a domain-separated, length-prefixed
  encoding of (schema id, record id, Avro body). Publishers sign with the
  ``concern_id`` as record id; the router signs disclosures with the
  ``disclosure_id`` (or the id of whatever record it emits).
- Encryption: a fresh AES-256-GCM data key per payload, wrapped for the
  recipient with ephemeral-static X25519 + HKDF-SHA256 + AES-256-GCM. Both
  layers bind the ``disclosure_id`` and ``recipient_id`` as associated data, so
  a payload cannot be replayed under another disclosure or recipient.
- Pseudonyms (DESIGN §4.4): HMAC-SHA256 under a partnership secret, truncated
  to 128 bits.

Errors never carry key material, plaintext or personal data.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas import ConfigError, CryptoError, ReasonCode, SignatureError, ValidationError

__all__ = [
    "ENVELOPE_ALGORITHM",
    "PSEUDONYM_SECRET_MIN_BYTES",
    "Keyring",
    "SealedPayload",
    "SigningIdentity",
    "key_id",
    "open_sealed",
    "pseudonym",
    "record_signing_input",
    "seal",
    "sign_record",
    "verify_record",
]

#: The only envelope algorithm this version writes and reads.
ENVELOPE_ALGORITHM = "X25519-HKDF-SHA256+A256GCM"
#: Shortest pseudonym secret accepted (256 bits).
PSEUDONYM_SECRET_MIN_BYTES = 32

_SIG_DOMAIN = b"SAFER-SIG-v1\x00"
_ENV_DOMAIN = b"SAFER-ENV-v1\x00"
_KEK_INFO = b"SAFER-KEK-v1"
_SIGNATURE_BYTES = 64
_X25519_BYTES = 32
_NONCE_BYTES = 12
_DATA_KEY_BYTES = 32
_TAG_BYTES = 16
_MAX_ID_BYTES = 0xFFFF
_MAX_SCHEMA_ID = 0xFFFFFFFF

_SIGNATURE_HINT = (
    "the record was altered or signed with a different key; quarantine it and "
    "ask the publisher to re-send through a SAFER adapter"
)
_DECRYPT_HINT = (
    "the payload was altered, or is addressed to another recipient or disclosure; "
    "keep the record and report it to the router operator"
)


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def key_id(public_raw: bytes) -> str:
    """Short, stable id of a public key: first 16 hex chars of SHA-256 of its raw bytes."""
    return _sha256(public_raw).hex()[:16]


def _length_prefixed(value: str, what: str) -> bytes:
    """``len (2 bytes, big-endian) ‖ utf-8 bytes``; raises CryptoError(TOO_LARGE)."""
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise CryptoError(
            f"{what} is not valid unicode text",
            code=ReasonCode.SCHEMA_INVALID,
            hint=f"use a {what} made of valid unicode characters",
        ) from None
    if len(raw) > _MAX_ID_BYTES:
        raise CryptoError(
            f"{what} is {len(raw)} bytes, longer than the {_MAX_ID_BYTES}-byte limit",
            code=ReasonCode.TOO_LARGE,
            hint=f"use a shorter {what} (ids are normally a few dozen bytes)",
        )
    return struct.pack(">H", len(raw)) + raw


# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class SigningIdentity:
    """An agency's (or the router's) Ed25519 signing key.

    The private key is left out of ``repr`` so it never reaches a log line.
    """

    agency_id: str
    private_key: Ed25519PrivateKey = field(repr=False)

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @cached_property
    def key_id(self) -> str:
        return key_id(self.public_key.public_bytes_raw())

    def sign(self, message: bytes) -> bytes:
        """Sign raw bytes; prefer :func:`sign_record`, which adds domain separation."""
        return self.private_key.sign(message)


def record_signing_input(*, schema_id: int, record_id: str, body: bytes) -> bytes:
    """The exact bytes a record signature covers.

    ``b"SAFER-SIG-v1\\x00" ‖ schema_id (u32 BE) ‖ len(record_id) (u16 BE) ‖
    record_id (utf-8) ‖ body``. The body comes last and is the only
    variable-length field without a prefix, so the encoding is unambiguous.
    """
    if isinstance(schema_id, bool) or not 0 <= schema_id <= _MAX_SCHEMA_ID:
        raise SignatureError(
            "schema id is outside the unsigned 32-bit range",
            code=ReasonCode.SIGNATURE_INVALID,
            hint="sign the schema id from the record's wire-format header",
        )
    try:
        rid = _length_prefixed(record_id, "record id")
    except CryptoError as exc:
        raise SignatureError(exc.message, code=exc.code, hint=exc.hint) from None
    return _SIG_DOMAIN + struct.pack(">I", schema_id) + rid + body


def sign_record(identity: SigningIdentity, *, schema_id: int, record_id: str, body: bytes) -> bytes:
    """Ed25519 signature (64 bytes) over :func:`record_signing_input`."""
    return identity.sign(record_signing_input(schema_id=schema_id, record_id=record_id, body=body))


def verify_record(
    public_key: Ed25519PublicKey,
    signature: bytes,
    *,
    schema_id: int,
    record_id: str,
    body: bytes,
) -> None:
    """Return None if ``signature`` is valid, else raise SignatureError(SIGNATURE_INVALID)."""
    try:
        message = record_signing_input(schema_id=schema_id, record_id=record_id, body=body)
    except SignatureError:
        message = None
    if message is None or len(signature) != _SIGNATURE_BYTES:
        raise SignatureError(
            "record signature does not verify",
            code=ReasonCode.SIGNATURE_INVALID,
            hint=_SIGNATURE_HINT,
        )
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        raise SignatureError(
            "record signature does not verify",
            code=ReasonCode.SIGNATURE_INVALID,
            hint=_SIGNATURE_HINT,
        ) from None


_KEY_ID_FORM = re.compile(r"\A[0-9a-f]{16}\Z")


def _short(value: str) -> str:
    """A key id for messages. It comes from a header anyone can set, and messages reach
    the audit log: echo it only if it has a key id's form (16 hex digits), never other
    text (a name or an NHS number put there would be written to the log for good)."""
    return repr(value) if _KEY_ID_FORM.match(value) else "with a malformed id"


@dataclass
class Keyring:
    """Trusted signing keys: key id → (agency id, Ed25519 public key).

    An agency may hold several keys (rotation). Revocation is sticky: a revoked
    key id stays revoked even if its key is added again. A retired key (the old
    key of a rotation) verifies until its retirement time, when the caller
    passes the time it checks at (``now``), and is refused as KEY_REVOKED after.
    """

    _entries: dict[str, tuple[str, Ed25519PublicKey]] = field(
        default_factory=dict, init=False, repr=False
    )
    _revoked: set[str] = field(default_factory=set, init=False, repr=False)
    _retire_at: dict[str, datetime] = field(default_factory=dict, init=False, repr=False)

    def add(self, agency_id: str, public_key: Ed25519PublicKey) -> str:
        """Trust ``public_key`` as ``agency_id``'s; return its key id."""
        kid = key_id(public_key.public_bytes_raw())
        existing = self._entries.get(kid)
        if existing is not None and existing[0] != agency_id:
            raise ConfigError(
                f"key {kid} is already registered to another agency",
                code=ReasonCode.CONFIG_INVALID,
                hint="every agency needs its own signing key; run `safer keys init` for it",
            )
        self._entries[kid] = (agency_id, public_key)
        return kid

    def revoke(self, key_id: str) -> None:
        """Stop trusting ``key_id``; records signed with it then fail with KEY_REVOKED."""
        self._revoked.add(key_id)

    def retire(self, key_id: str, at: datetime) -> None:
        """``key_id`` verifies until ``at`` (aware), and is refused from then on."""
        if at.utcoffset() is None:
            raise ValidationError("retirement time must be timezone-aware", fields=("at",))
        self._retire_at[key_id] = at

    def is_revoked(self, key_id: str) -> bool:
        return key_id in self._revoked

    def retires_at(self, key_id: str) -> datetime | None:
        return self._retire_at.get(key_id)

    def key_ids(self) -> list[str]:
        """The trusted (not revoked) key ids, sorted."""
        return sorted(k for k in self._entries if k not in self._revoked)

    def lookup(self, key_id: str, now: datetime | None = None) -> tuple[str, Ed25519PublicKey]:
        """Return (agency id, public key) or raise UNKNOWN_PUBLISHER / KEY_REVOKED.

        With ``now``, a retired key (see ``retire``) is refused from its retirement time.
        """
        if key_id in self._revoked:
            raise SignatureError(
                f"signing key {_short(key_id)} has been revoked",
                code=ReasonCode.KEY_REVOKED,
                hint="the publisher must sign with its current key; quarantine and re-send",
            )
        retire_at = self._retire_at.get(key_id)
        if now is not None and retire_at is not None and now >= retire_at:
            raise SignatureError(
                f"signing key {_short(key_id)} was retired at {retire_at.isoformat()} "
                "(rotated out)",
                code=ReasonCode.KEY_REVOKED,
                hint="the publisher must sign with its current key (`safer keys list`); "
                "quarantine and re-send",
            )
        entry = self._entries.get(key_id)
        if entry is None:
            raise SignatureError(
                f"signing key {_short(key_id)} is not in the keyring",
                code=ReasonCode.UNKNOWN_PUBLISHER,
                hint="add the publisher to the directory and run `safer keys init`, "
                "or check the record came from a known agency",
            )
        return entry

    def verify(
        self,
        key_id: str,
        signature: bytes,
        *,
        schema_id: int,
        record_id: str,
        body: bytes,
        now: datetime | None = None,
    ) -> str:
        """Verify a record signature and return the signing agency's id, or raise."""
        agency_id, public_key = self.lookup(key_id, now)
        verify_record(public_key, signature, schema_id=schema_id, record_id=record_id, body=body)
        return agency_id


# --------------------------------------------------------------------------- envelopes


@dataclass(frozen=True)
class SealedPayload:
    """A payload encrypted to one recipient (fields map 1:1 to the Avro record)."""

    ciphertext: bytes
    nonce: bytes
    wrapped_key: bytes
    wrap_nonce: bytes
    ephemeral_public_key: bytes
    recipient_key_id: str
    algorithm: str = ENVELOPE_ALGORITHM


def _envelope_aad(disclosure_id: str, recipient_id: str) -> bytes:
    return (
        _ENV_DOMAIN
        + _length_prefixed(disclosure_id, "disclosure id")
        + _length_prefixed(recipient_id, "recipient id")
    )


def _kek(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes, aad: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=_DATA_KEY_BYTES,
        salt=ephemeral_raw + recipient_raw,
        info=_KEK_INFO + aad,
    ).derive(shared)


def seal(
    plaintext: bytes,
    recipient_public: X25519PublicKey,
    *,
    disclosure_id: str,
    recipient_id: str,
) -> SealedPayload:
    """Encrypt ``plaintext`` so only the holder of the recipient's X25519 key can read it."""
    aad = _envelope_aad(disclosure_id, recipient_id)
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)

    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes_raw()
    recipient_raw = recipient_public.public_bytes_raw()
    try:
        shared = ephemeral.exchange(recipient_public)
    except ValueError:  # a low-order point: never a real key
        raise CryptoError(
            "recipient encryption key is not usable",
            code=ReasonCode.CONFIG_INVALID,
            hint="regenerate the recipient's keys with `safer keys init --force`",
        ) from None
    wrap_nonce = os.urandom(_NONCE_BYTES)
    kek = _kek(shared, ephemeral_raw, recipient_raw, aad)
    wrapped_key = AESGCM(kek).encrypt(wrap_nonce, data_key, aad)
    return SealedPayload(
        ciphertext=ciphertext,
        nonce=nonce,
        wrapped_key=wrapped_key,
        wrap_nonce=wrap_nonce,
        ephemeral_public_key=ephemeral_raw,
        recipient_key_id=key_id(recipient_raw),
    )


def _decrypt_failed(detail: str) -> CryptoError:
    return CryptoError(
        f"sealed payload cannot be opened: {detail}",
        code=ReasonCode.DECRYPT_FAILED,
        hint=_DECRYPT_HINT,
    )


def open_sealed(
    sealed: SealedPayload,
    recipient_private: X25519PrivateKey,
    *,
    disclosure_id: str,
    recipient_id: str,
) -> bytes:
    """Decrypt a payload sealed to ``recipient_private``; raise CryptoError on any failure.

    NOT_ADDRESSEE when the payload names another key; DECRYPT_FAILED on a wrong
    key, tampering, or a disclosure/recipient id other than the one sealed.
    """
    if sealed.algorithm != ENVELOPE_ALGORITHM:
        raise _decrypt_failed("unsupported algorithm")
    recipient_raw = recipient_private.public_key().public_bytes_raw()
    if sealed.recipient_key_id != key_id(recipient_raw):
        raise CryptoError(
            "sealed payload is addressed to a different key",
            code=ReasonCode.NOT_ADDRESSEE,
            hint="only the addressee can open it; check the recipient id and key store",
        )
    shapes = (
        (sealed.nonce, _NONCE_BYTES),
        (sealed.wrap_nonce, _NONCE_BYTES),
        (sealed.ephemeral_public_key, _X25519_BYTES),
        (sealed.wrapped_key, _DATA_KEY_BYTES + _TAG_BYTES),
    )
    if any(not isinstance(value, bytes) or len(value) != size for value, size in shapes):
        raise _decrypt_failed("malformed envelope")
    if not isinstance(sealed.ciphertext, bytes) or len(sealed.ciphertext) < _TAG_BYTES:
        raise _decrypt_failed("malformed envelope")
    try:
        aad = _envelope_aad(disclosure_id, recipient_id)
    except CryptoError:
        raise _decrypt_failed("bad disclosure or recipient id") from None
    try:
        ephemeral = X25519PublicKey.from_public_bytes(sealed.ephemeral_public_key)
        shared = recipient_private.exchange(ephemeral)
    except ValueError:
        raise _decrypt_failed("bad ephemeral key") from None
    kek = _kek(shared, sealed.ephemeral_public_key, recipient_raw, aad)
    try:
        data_key = AESGCM(kek).decrypt(sealed.wrap_nonce, sealed.wrapped_key, aad)
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag:
        raise _decrypt_failed("authentication failed") from None


# --------------------------------------------------------------------------- pseudonyms


def pseudonym(secret: bytes, identifier: str) -> str:
    """HMAC-SHA256(secret, identifier) truncated to 128 bits, as 32 lowercase hex chars.

    ``identifier`` must already be in its canonical form (for instance
    ``Subject.identifiers()``'s ``scheme:value``); no normalisation is done here.
    """
    if len(secret) < PSEUDONYM_SECRET_MIN_BYTES:
        raise ConfigError(
            f"pseudonym secret is {len(secret)} bytes; at least "
            f"{PSEUDONYM_SECRET_MIN_BYTES} are required",
            code=ReasonCode.CONFIG_INVALID,
            hint="create a proper secret with `safer keys init`",
        )
    if not identifier:
        raise ValidationError(
            "cannot pseudonymise an empty identifier",
            code=ReasonCode.SCHEMA_INVALID,
            hint="pass the subject's canonical identifier (scheme:value)",
            fields=("identifier",),
        )
    try:
        raw = identifier.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "identifier is not valid unicode text",
            code=ReasonCode.SCHEMA_INVALID,
            hint="pass the subject's canonical identifier (scheme:value)",
            fields=("identifier",),
        ) from None
    mac = hmac.HMAC(secret, hashes.SHA256())
    mac.update(raw)
    return mac.finalize()[:16].hex()
