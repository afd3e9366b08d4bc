"""The file-backed key store under ``<data-dir>/keys`` (synchronous file I/O).

Layout::

    keys/                       0700
      pseudonym.secret          0600  32 random bytes (DESIGN §4.4)
      <agency-id>/              0700
        signing.key             0600  Ed25519, PEM PKCS8, unencrypted
        signing.pub             0644  PEM SubjectPublicKeyInfo
        encryption.key          0600  X25519, PEM PKCS8, unencrypted
        encryption.pub          0644  PEM SubjectPublicKeyInfo
        previous/<key-id>.pub   0644  a rotated-out signing key (``safer keys rotate``)
        previous/<key-id>.retire      when it stops verifying (ISO 8601 UTC)
      revoked/<key-id>.json     0644  a revoked signing key: agency, reason code, time

Rotation and revocation here are this data directory's record; the signed key
events on ``hips.keys`` (``broker._trust``) carry them to every other process.

These are DEVELOPMENT keys: private keys are stored unencrypted and protected
only by file permissions. A production deployment keeps private keys in an
HSM or a secrets manager and mounts them read-only with mode 0400/0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from schemas import ConfigError, ReasonCode

from ._crypto import PSEUDONYM_SECRET_MIN_BYTES, Keyring, SigningIdentity, key_id

__all__ = [
    "AGENCY_ID_PATTERN",
    "ENCRYPTION_KEY",
    "ENCRYPTION_PUB",
    "PSEUDONYM_SECRET",
    "SIGNING_KEY",
    "SIGNING_PUB",
    "WEBHOOK_SECRET",
    "KeyInfo",
    "KeyStore",
]

#: Agency ids double as directory names, so they are restricted for path safety.
AGENCY_ID_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
_AGENCY_ID = re.compile(AGENCY_ID_PATTERN)

SIGNING_KEY = "signing.key"
SIGNING_PUB = "signing.pub"
ENCRYPTION_KEY = "encryption.key"
ENCRYPTION_PUB = "encryption.pub"
PSEUDONYM_SECRET = "pseudonym.secret"  # noqa: S105 (a file name, not a secret)
WEBHOOK_SECRET = "webhook.secret"  # noqa: S105 (a file name, not a secret)
_AGENCY_FILES = (SIGNING_KEY, SIGNING_PUB, ENCRYPTION_KEY, ENCRYPTION_PUB)

_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIR_MODE = 0o700

_INIT_HINT = "run `safer keys init` to create development keys"
_PREVIOUS = "previous"
_REVOKED = "revoked"
_KEY_ID_FORM = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class KeyInfo:
    """One signing key this data directory knows, for ``safer keys list``."""

    agency_id: str
    key_id: str
    #: ``active``, ``retiring`` (verifies until ``retire_at``), ``retired`` or ``revoked``.
    state: str
    created_at: datetime
    retire_at: datetime | None = None
    revoked_at: datetime | None = None
    reason: str | None = None


_PEM_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm)


def _check_agency_id(agency_id: str) -> str:
    if not isinstance(agency_id, str) or _AGENCY_ID.fullmatch(agency_id) is None:
        raise ConfigError(
            "agency id is not valid for the key store",
            code=ReasonCode.CONFIG_INVALID,
            hint=f"use 1-63 characters matching {AGENCY_ID_PATTERN} "
            "(lowercase letters, digits and '-', not starting with '-')",
        )
    return agency_id


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the files are synced
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` to ``path`` created with ``mode`` from the first byte.

    ``os.open(..., mode)`` means a private file is never readable by others,
    not even briefly. Without ``replace`` the file must not exist (O_EXCL);
    with it, a temporary file is written then atomically renamed over.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    target = path
    if replace:
        target = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(target, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # umask may have cleared bits of a public file
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(target, path)
    except BaseException:
        if replace:
            target.unlink(missing_ok=True)
        raise


def _private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class KeyStore:
    """Development keys for every agency plus the partnership pseudonym secret.

    Loaded keys are cached in the instance; :meth:`init_agency` with
    ``overwrite=True`` drops that agency's cached keys.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._signing: dict[str, SigningIdentity] = {}
        self._signing_public: dict[str, Ed25519PublicKey] = {}
        self._encryption_private: dict[str, X25519PrivateKey] = {}
        self._encryption_public: dict[str, X25519PublicKey] = {}
        self._secret: bytes | None = None

    def __repr__(self) -> str:
        return f"KeyStore({str(self.root)!r})"

    # ------------------------------------------------------------------ creation

    def init_agency(self, agency_id: str, *, overwrite: bool = False) -> bool:
        """Create DEVELOPMENT keys (unencrypted PEM, mode 0600) for ``agency_id``.

        Returns False, changing nothing, when the agency already has keys and
        ``overwrite`` is False. Keys are never replaced silently: a directory
        holding only some of the four files is an error unless ``overwrite``.
        """
        agency_dir = self._agency_dir(agency_id)
        present = [name for name in _AGENCY_FILES if (agency_dir / name).exists()]
        if present and not overwrite:
            if len(present) == len(_AGENCY_FILES):
                return False
            missing = [name for name in _AGENCY_FILES if name not in present]
            raise ConfigError(
                f"key directory {agency_dir} is incomplete (missing {', '.join(missing)})",
                code=ReasonCode.KEY_MISSING,
                hint="restore the missing files from backup, or run `safer keys init --force` "
                "to replace this agency's keys (partners then need its new public keys)",
            )
        signing = Ed25519PrivateKey.generate()
        encryption = X25519PrivateKey.generate()
        files = (
            (SIGNING_KEY, _private_pem(signing), _PRIVATE_MODE),
            (SIGNING_PUB, _public_pem(signing.public_key()), _PUBLIC_MODE),
            (ENCRYPTION_KEY, _private_pem(encryption), _PRIVATE_MODE),
            (ENCRYPTION_PUB, _public_pem(encryption.public_key()), _PUBLIC_MODE),
        )
        try:
            self._ensure_dir(self.root)
            self._ensure_dir(agency_dir)
            for name, data, mode in files:
                _write_file(agency_dir / name, data, mode, replace=overwrite)
            _fsync_dir(agency_dir)
        except FileExistsError:
            raise ConfigError(
                f"keys for agency {agency_id} were created by another process meanwhile",
                code=ReasonCode.CONFIG_INVALID,
                hint="run `safer keys init` once, from one process",
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot write keys under {agency_dir}: {exc.strerror}",
                code=ReasonCode.CONFIG_INVALID,
                hint="check the data directory exists and is writable by this user",
            ) from None
        for cache in (
            self._signing,
            self._signing_public,
            self._encryption_private,
            self._encryption_public,
        ):
            cache.pop(agency_id, None)
        return True

    def init_pseudonym_secret(self) -> bool:
        """Create ``pseudonym.secret`` (32 random bytes, mode 0600); False if present."""
        path = self.root / PSEUDONYM_SECRET
        if path.exists():
            return False
        try:
            self._ensure_dir(self.root)
            _write_file(
                path,
                secrets.token_bytes(PSEUDONYM_SECRET_MIN_BYTES),
                _PRIVATE_MODE,
                replace=False,
            )
            _fsync_dir(self.root)
        except FileExistsError:
            return False
        except OSError as exc:
            raise ConfigError(
                f"cannot write {path}: {exc.strerror}",
                code=ReasonCode.CONFIG_INVALID,
                hint="check the data directory exists and is writable by this user",
            ) from None
        self._secret = None
        return True

    # ------------------------------------------------------------------ queries

    def webhook_secret(self, agency_id: str) -> bytes:
        """The HMAC secret for webhooks to this recipient (32 bytes, mode 0600).

        Created on first use; share it with the receiving agency out of band so
        their endpoint can check each request (``adapters.verify_webhook``).
        """
        directory = self._agency_dir(agency_id)
        path = directory / WEBHOOK_SECRET
        if not path.exists():
            self._ensure_dir(directory)
            # If another process creates it first, read theirs.
            with contextlib.suppress(FileExistsError):
                _write_file(
                    path,
                    secrets.token_bytes(PSEUDONYM_SECRET_MIN_BYTES),
                    _PRIVATE_MODE,
                    replace=False,
                )
        return self._read(path, private=True)

    def has_agency(self, agency_id: str) -> bool:
        """True when all four key files of ``agency_id`` exist."""
        agency_dir = self._agency_dir(agency_id)
        return all((agency_dir / name).is_file() for name in _AGENCY_FILES)

    def agencies(self) -> list[str]:
        """Ids of the agencies with a complete set of keys, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir()
            and _AGENCY_ID.fullmatch(entry.name) is not None
            and self.has_agency(entry.name)
        )

    # ------------------------------------------------------------------ loading

    def pseudonym_secret(self) -> bytes:
        """The partnership pseudonym secret (DESIGN §4.4)."""
        if self._secret is None:
            path = self.root / PSEUDONYM_SECRET
            secret = self._read(path, private=True)
            if len(secret) < PSEUDONYM_SECRET_MIN_BYTES:
                raise ConfigError(
                    f"{path} holds {len(secret)} bytes; at least "
                    f"{PSEUDONYM_SECRET_MIN_BYTES} are required",
                    code=ReasonCode.CONFIG_INVALID,
                    hint="restore the secret from backup; a new secret changes every "
                    "pseudonym, so replace it only for a fresh deployment",
                )
            self._secret = secret
        return self._secret

    def signing_public(self, agency_id: str) -> Ed25519PublicKey:
        cached = self._signing_public.get(agency_id)
        if cached is None:
            path = self._agency_dir(agency_id) / SIGNING_PUB
            key = self._load_public(path)
            if not isinstance(key, Ed25519PublicKey):
                raise self._wrong_type(path, "an Ed25519 public key")
            cached = self._signing_public[agency_id] = key
        return cached

    def signing_identity(self, agency_id: str) -> SigningIdentity:
        cached = self._signing.get(agency_id)
        if cached is None:
            path = self._agency_dir(agency_id) / SIGNING_KEY
            key = self._load_private(path)
            if not isinstance(key, Ed25519PrivateKey):
                raise self._wrong_type(path, "an Ed25519 private key")
            if key.public_key() != self.signing_public(agency_id):
                raise self._mismatch(agency_id, SIGNING_KEY, SIGNING_PUB)
            cached = self._signing[agency_id] = SigningIdentity(agency_id, key)
        return cached

    def encryption_public(self, agency_id: str) -> X25519PublicKey:
        cached = self._encryption_public.get(agency_id)
        if cached is None:
            path = self._agency_dir(agency_id) / ENCRYPTION_PUB
            key = self._load_public(path)
            if not isinstance(key, X25519PublicKey):
                raise self._wrong_type(path, "an X25519 public key")
            cached = self._encryption_public[agency_id] = key
        return cached

    def encryption_private(self, agency_id: str) -> X25519PrivateKey:
        cached = self._encryption_private.get(agency_id)
        if cached is None:
            path = self._agency_dir(agency_id) / ENCRYPTION_KEY
            key = self._load_private(path)
            if not isinstance(key, X25519PrivateKey):
                raise self._wrong_type(path, "an X25519 private key")
            if key.public_key() != self.encryption_public(agency_id):
                raise self._mismatch(agency_id, ENCRYPTION_KEY, ENCRYPTION_PUB)
            cached = self._encryption_private[agency_id] = key
        return cached

    def keyring(self, agency_ids: Iterable[str]) -> Keyring:
        """A fresh Keyring trusting the stored signing public keys of ``agency_ids``.

        Rotated-out keys are trusted until their retirement time; revoked keys never.
        """
        ring = Keyring()
        for agency_id in agency_ids:
            ring.add(agency_id, self.signing_public(agency_id))
            for kid, public, retire_at in self._previous(agency_id):
                added = ring.add(agency_id, public)
                if added == kid and retire_at is not None:
                    ring.retire(kid, retire_at)
        for kid in self.revocations():
            ring.revoke(kid)
        return ring

    # ------------------------------------------------------------------ rotation

    def signing_key_id(self, agency_id: str) -> str:
        return key_id(self.signing_public(agency_id).public_bytes_raw())

    def rotate_signing(self, agency_id: str, retire_at: datetime) -> tuple[str, str]:
        """Give ``agency_id`` a new signing key; the old one verifies until ``retire_at``.

        The old public key moves to ``previous/`` with its retirement time; its
        private key is deleted (nothing may sign with it again). Returns
        (old key id, new key id).
        """
        if retire_at.utcoffset() is None:
            raise ConfigError(
                "retirement time must be timezone-aware", code=ReasonCode.CONFIG_INVALID
            )
        agency_dir = self._agency_dir(agency_id)
        old_public = self.signing_public(agency_id)
        old_kid = key_id(old_public.public_bytes_raw())
        previous = agency_dir / _PREVIOUS
        self._ensure_dir(previous)
        _write_file(
            previous / f"{old_kid}.pub", _public_pem(old_public), _PUBLIC_MODE, replace=True
        )
        _write_file(
            previous / f"{old_kid}.retire",
            retire_at.astimezone(UTC).isoformat().encode(),
            _PUBLIC_MODE,
            replace=True,
        )
        signing = Ed25519PrivateKey.generate()
        _write_file(agency_dir / SIGNING_KEY, _private_pem(signing), _PRIVATE_MODE, replace=True)
        _write_file(
            agency_dir / SIGNING_PUB, _public_pem(signing.public_key()), _PUBLIC_MODE, replace=True
        )
        _fsync_dir(agency_dir)
        self._signing.pop(agency_id, None)
        self._signing_public.pop(agency_id, None)
        return old_kid, key_id(signing.public_key().public_bytes_raw())

    def revoke(self, kid: str, *, agency_id: str, reason: str, at: datetime) -> bool:
        """Record ``kid`` as revoked; False if it already was (the first record stands)."""
        if not _KEY_ID_FORM.fullmatch(kid):
            raise ConfigError(
                "a key id is 16 hex digits",
                code=ReasonCode.CONFIG_INVALID,
                hint="copy it from `safer keys list`",
            )
        folder = self.root / _REVOKED
        self._ensure_dir(folder)
        body = json.dumps(
            {
                "agency_id": agency_id,
                "key_id": kid,
                "reason": reason,
                "at": at.astimezone(UTC).isoformat(),
            },
            sort_keys=True,
        ).encode()
        try:
            _write_file(folder / f"{kid}.json", body, _PUBLIC_MODE, replace=False)
        except FileExistsError:
            return False
        _fsync_dir(folder)
        return True

    def revocations(self) -> dict[str, dict[str, str]]:
        """Revoked key ids → their record (agency_id, reason, at)."""
        folder = self.root / _REVOKED
        if not folder.is_dir():
            return {}
        found: dict[str, dict[str, str]] = {}
        for path in sorted(folder.glob("*.json")):
            if _KEY_ID_FORM.fullmatch(path.stem):
                try:
                    found[path.stem] = json.loads(path.read_text("utf-8"))
                except (OSError, ValueError):
                    found[path.stem] = {"reason": "unreadable record", "agency_id": "", "at": ""}
        return found

    def owner_of(self, kid: str) -> str | None:
        """The agency whose current or previous signing key is ``kid``."""
        found = self.public_by_id(kid)
        return None if found is None else found[0]

    def public_by_id(self, kid: str) -> tuple[str, Ed25519PublicKey] | None:
        """(agency id, public key) of the current or previous signing key ``kid``."""
        for agency_id in self.agencies():
            if self.signing_key_id(agency_id) == kid:
                return agency_id, self.signing_public(agency_id)
            for previous_kid, public, _ in self._previous(agency_id):
                if previous_kid == kid:
                    return agency_id, public
        return None

    def key_infos(self, now: datetime) -> list[KeyInfo]:
        """Every signing key of every agency: current, rotated out, revoked."""
        revoked = self.revocations()
        infos: list[KeyInfo] = []

        def made(path: Path) -> datetime:
            return datetime.fromtimestamp(path.stat().st_mtime, UTC)

        def info(agency_id: str, kid: str, path: Path, retire_at: datetime | None) -> KeyInfo:
            record = revoked.get(kid)
            if record is not None:
                at = record.get("at") or ""
                return KeyInfo(
                    agency_id,
                    kid,
                    "revoked",
                    made(path),
                    retire_at,
                    datetime.fromisoformat(at) if at else None,
                    record.get("reason"),
                )
            if retire_at is None:
                return KeyInfo(agency_id, kid, "active", made(path))
            state = "retired" if now >= retire_at else "retiring"
            return KeyInfo(agency_id, kid, state, made(path), retire_at)

        for agency_id in self.agencies():
            folder = self._agency_dir(agency_id)
            infos.append(
                info(agency_id, self.signing_key_id(agency_id), folder / SIGNING_PUB, None)
            )
            for kid, _, retire_at in self._previous(agency_id):
                infos.append(info(agency_id, kid, folder / _PREVIOUS / f"{kid}.pub", retire_at))
        return infos

    def _previous(self, agency_id: str) -> list[tuple[str, Ed25519PublicKey, datetime | None]]:
        folder = self._agency_dir(agency_id) / _PREVIOUS
        if not folder.is_dir():
            return []
        found: list[tuple[str, Ed25519PublicKey, datetime | None]] = []
        for path in sorted(folder.glob("*.pub")):
            key = self._load_public(path)
            if not isinstance(key, Ed25519PublicKey):
                raise self._wrong_type(path, "an Ed25519 public key")
            retire_path = path.with_suffix(".retire")
            retire_at = (
                datetime.fromisoformat(retire_path.read_text("utf-8").strip())
                if retire_path.is_file()
                else None
            )
            found.append((key_id(key.public_bytes_raw()), key, retire_at))
        return found

    # ------------------------------------------------------------------ helpers

    def _agency_dir(self, agency_id: str) -> Path:
        return self.root / _check_agency_id(agency_id)

    @staticmethod
    def _ensure_dir(path: Path) -> None:
        path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(path, _DIR_MODE)

    @staticmethod
    def _read(path: Path, *, private: bool) -> bytes:
        """Read a key file; a private one must be a regular file with no group/other bits."""
        try:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                if private and not stat.S_ISREG(info.st_mode):
                    raise ConfigError(
                        f"{path} is not a regular file",
                        code=ReasonCode.CONFIG_INVALID,
                        hint=f"replace {path} with the key file itself",
                    )
                if private and stat.S_IMODE(info.st_mode) & 0o077:
                    raise ConfigError(
                        f"{path} is readable or writable by group or others "
                        f"(mode {stat.S_IMODE(info.st_mode):04o})",
                        code=ReasonCode.CONFIG_INVALID,
                        hint=f"run `chmod 600 {path}`, and consider rotating the key "
                        "if others may have read it",
                    )
                return handle.read()
        except FileNotFoundError:
            raise ConfigError(
                f"key file {path} does not exist",
                code=ReasonCode.KEY_MISSING,
                hint=f"{_INIT_HINT}, or restore {path.name} from backup",
            ) from None
        except IsADirectoryError:
            raise ConfigError(
                f"{path} is a directory, not a key file",
                code=ReasonCode.CONFIG_INVALID,
                hint=f"remove it and {_INIT_HINT}",
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path}: {exc.strerror}",
                code=ReasonCode.CONFIG_INVALID,
                hint="check the file's owner and permissions",
            ) from None

    def _load_private(self, path: Path) -> object:
        data = self._read(path, private=True)
        try:
            return serialization.load_pem_private_key(data, password=None)
        except _PEM_ERRORS:
            raise ConfigError(
                f"{path} is not an unencrypted PEM (PKCS8) private key",
                code=ReasonCode.CONFIG_INVALID,
                hint="restore it from backup, or run `safer keys init --force` "
                "to replace this agency's keys",
            ) from None

    def _load_public(self, path: Path) -> object:
        data = self._read(path, private=False)
        try:
            return serialization.load_pem_public_key(data)
        except _PEM_ERRORS:
            raise ConfigError(
                f"{path} is not a PEM (SubjectPublicKeyInfo) public key",
                code=ReasonCode.CONFIG_INVALID,
                hint="restore it from backup, or run `safer keys init --force` "
                "to replace this agency's keys",
            ) from None

    @staticmethod
    def _wrong_type(path: Path, expected: str) -> ConfigError:
        return ConfigError(
            f"{path} does not hold {expected}",
            code=ReasonCode.CONFIG_INVALID,
            hint="restore the right file from backup, or run `safer keys init --force`",
        )

    @staticmethod
    def _mismatch(agency_id: str, private_name: str, public_name: str) -> ConfigError:
        return ConfigError(
            f"{private_name} and {public_name} of agency {agency_id} are not a key pair",
            code=ReasonCode.CONFIG_INVALID,
            hint="restore both files from the same backup, or run `safer keys init --force`",
        )
