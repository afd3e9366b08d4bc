"""Per-agency API credentials for the HTTP gateway.

A credential is an id, the publisher it acts for (an id in deploy/directory.toml)
and an Argon2id hash of its secret (argon2-cffi, RFC 9106 low-memory profile);
the secret itself is shown once, when made, and never stored. Agencies send
``Authorization: Bearer <token>`` with the token ``sfx_<id>_<secret>``.

The store is a JSON file (``<data-dir>/gateway/credentials.json``, mode 0600)
written atomically. A running gateway re-reads it when it changes, so
``safer gateway credential revoke`` takes effect at once.

Verified tokens are remembered in memory by their SHA-256 (never the token
itself), so a busy agency costs one Argon2 verification, not one per request;
revocation is checked on every request all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY

from schemas import ConfigError, ReasonCode

__all__ = ["Credential", "CredentialStore", "GatewayReason", "GatewayRefusal"]

_TOKEN = re.compile(r"\Asfx_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
_HASHER = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)


class GatewayReason(StrEnum):
    """Reason codes of the HTTP gateway (beyond ``schemas.ReasonCode``). Stable strings."""

    AUTH_REQUIRED = "AUTH_REQUIRED"  # 401: no credential, or not a well-formed one
    CREDENTIAL_UNKNOWN = "CREDENTIAL_UNKNOWN"  # 401: no such credential, or wrong secret
    CREDENTIAL_REVOKED = "CREDENTIAL_REVOKED"  # 403: revoked; ask the operator for a new one
    PUBLISHER_UNKNOWN = "PUBLISHER_UNKNOWN"  # 403: its agency is no longer in the directory
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"  # 409: source_ref used with another body
    RATE_LIMITED = "RATE_LIMITED"  # 429: retry after Retry-After seconds
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"  # 415
    NOT_FOUND = "NOT_FOUND"  # 404: no such route, or no concern of yours with that id
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # 405


class GatewayRefusal(Exception):
    """A request the gateway refuses: HTTP status, a reason code and a detail free of PID."""

    def __init__(
        self,
        status: int,
        code: GatewayReason | ReasonCode | str,
        detail: str,
        *,
        retry_after: int | None = None,
        wrong_secret: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = str(code)
        self.detail = detail
        self.retry_after = retry_after
        #: A real credential id with a wrong secret: the costly (Argon2) failure the
        #: gateway throttles per client address.
        self.wrong_secret = wrong_secret


@dataclass(frozen=True)
class Credential:
    """One agency credential. ``id`` is what logs and audit records name."""

    id: str
    agency: str
    hash: str
    created_at: str
    label: str = ""
    revoked_at: str | None = None
    #: "token" (``hash`` is an Argon2id hash) or "certificate" (``hash`` is the
    #: certificate's ``sha256:`` fingerprint: public, nothing to hide).
    kind: str = "token"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def audit_name(self) -> str:
        """How the audit record names it (never the secret)."""
        return f"{'cert' if self.kind == 'certificate' else 'api'}:{self.id}"


class CredentialStore:
    """The credentials file. Thread-safe; re-read whenever it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._credentials: dict[str, Credential] = {}
        self._verified: dict[bytes, str] = {}

    # -- administration (the CLI) ---------------------------------------------------------

    def add(self, agency: str, *, label: str = "") -> tuple[Credential, str]:
        """A new credential for publisher ``agency``: (credential, token). Show the token once."""
        with self._lock:
            self._load()
            cid = secrets.token_hex(6)
            while cid in self._credentials:
                cid = secrets.token_hex(6)
            secret = secrets.token_urlsafe(32)
            credential = Credential(
                id=cid,
                agency=agency,
                hash=_HASHER.hash(secret),
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                label=label,
            )
            self._credentials[cid] = credential
            self._save()
        return credential, f"sfx_{cid}_{secret}"

    def add_certificate(self, agency: str, fingerprint: str, *, label: str = "") -> Credential:
        """Register a client certificate (by its ``sha256:`` fingerprint) for ``agency``."""
        with self._lock:
            self._load()
            cid = secrets.token_hex(6)
            while cid in self._credentials:
                cid = secrets.token_hex(6)
            credential = Credential(
                id=cid,
                agency=agency,
                hash=fingerprint,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                label=label,
                kind="certificate",
            )
            self._credentials[cid] = credential
            self._save()
        return credential

    def authenticate_certificate(self, fingerprint: str) -> Credential:
        """The credential of a client certificate the TLS handshake verified."""
        with self._lock:
            self._load()
            found = next(
                (
                    c
                    for c in self._credentials.values()
                    if c.kind == "certificate" and hmac.compare_digest(c.hash, fingerprint)
                ),
                None,
            )
        if found is None:
            raise GatewayRefusal(
                401,
                GatewayReason.CREDENTIAL_UNKNOWN,
                "this client certificate is not registered; ask your SAFER operator "
                "(`safer gateway certificate issue`)",
            )
        if found.revoked:
            raise GatewayRefusal(
                403,
                GatewayReason.CREDENTIAL_REVOKED,
                f"certificate credential {found.id} was revoked; ask for a new certificate",
            )
        return found

    def revoke(self, credential_id: str) -> Credential:
        with self._lock:
            self._load()
            found = self._credentials.get(credential_id)
            if found is None:
                raise ConfigError(
                    f"no gateway credential {credential_id!r}",
                    code=ReasonCode.CONFIG_INVALID,
                    hint="`safer gateway credential list` shows them",
                )
            if not found.revoked:
                found = replace(found, revoked_at=datetime.now(UTC).isoformat(timespec="seconds"))
                self._credentials[credential_id] = found
                self._save()
            return found

    def list(self) -> list[Credential]:
        with self._lock:
            self._load()
            return sorted(self._credentials.values(), key=lambda c: c.created_at)

    # -- authentication (the gateway) -----------------------------------------------------

    def authenticate(self, authorization: str | None) -> Credential:
        """The credential an ``Authorization`` header proves, or a ``GatewayRefusal``."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        match = _TOKEN.match(token.strip()) if scheme.lower() == "bearer" else None
        if match is None:
            raise GatewayRefusal(
                401,
                GatewayReason.AUTH_REQUIRED,
                "send `Authorization: Bearer sfx_…`, the token your operator issued "
                "with `safer gateway credential add`",
            )
        cid, secret = match.groups()
        digest = hashlib.sha256(token.strip().encode()).digest()
        with self._lock:
            self._load()
            credential = self._credentials.get(cid)
            if credential is not None and credential.kind != "token":
                credential = None
            known = credential is not None and self._verified.get(digest) == cid
        if credential is None:
            raise GatewayRefusal(401, GatewayReason.CREDENTIAL_UNKNOWN, "unknown credential")
        if not known:
            try:
                _HASHER.verify(credential.hash, secret)
            except (VerificationError, InvalidHashError):
                raise GatewayRefusal(
                    401, GatewayReason.CREDENTIAL_UNKNOWN, "unknown credential", wrong_secret=True
                ) from None
            with self._lock:
                self._verified[digest] = cid
        if credential.revoked:
            raise GatewayRefusal(
                403,
                GatewayReason.CREDENTIAL_REVOKED,
                f"credential {cid} was revoked; ask your SAFER operator for a new one",
            )
        return credential

    # -- the file -------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._credentials, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            credentials = {c["id"]: Credential(**c) for c in data["credentials"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"cannot read gateway credentials {self.path} ({type(exc).__name__})",
                code=ReasonCode.CONFIG_INVALID,
                hint="restore the file from backup, or move it aside and issue new credentials",
            ) from None
        self._credentials, self._stamp = credentials, stamp
        self._verified = {d: c for d, c in self._verified.items() if c in credentials}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"version": 1, "credentials": [asdict(c) for c in self._credentials.values()]}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._stamp = None
