"""Web app users: who may sign in to `safer web`, and what each may see.

One SQLite file, ``<data-dir>/web-users.db``. Passwords are hashed with
argon2id (argon2-cffi's ``PasswordHasher`` defaults, RFC 9106 low-memory
profile); the hash is re-computed on sign-in when those parameters change.
Nothing here stores or logs a password.

Roles (``Role``):
- ``practitioner`` of one recipient (its inbox only);
- ``auditor`` and ``dpo`` (log status, trails, reports, quarantine);
- ``analyst`` of one partnership (aggregates of that partnership only).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from schemas import ConfigError, Lscp, ReasonCode, ValidationError

__all__ = ["Role", "User", "UserStore", "users_path"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
MIN_PASSWORD = 12


class Role(StrEnum):
    PRACTITIONER = "practitioner"
    AUDITOR = "auditor"
    DPO = "dpo"
    ANALYST = "analyst"


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    scope: str | None  # recipient id (practitioner), partnership (analyst), else None
    disabled: bool
    created_at: str

    @property
    def reviews_log(self) -> bool:
        return self.role in (Role.AUDITOR, Role.DPO)


def users_path(data_dir: Path) -> Path:
    return data_dir / "web-users.db"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    scope TEXT,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
"""

# Verifying against this keeps a sign-in for an unknown name as slow as for a known one.
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a real password, only for timing")


class UserStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the web app calls from worker threads

    def close(self) -> None:
        self._db.close()

    def _sql(
        self, sql: str, params: tuple[object, ...] = ()
    ) -> tuple[list[tuple[object, ...]], int]:
        """Rows and row count of one statement, one thread at a time."""
        with self._lock:
            cursor = self._db.execute(sql, params)
            return cursor.fetchall(), cursor.rowcount

    def __enter__(self) -> UserStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(
        self,
        name: str,
        role: Role,
        password: str,
        *,
        scope: str | None = None,
        recipients: frozenset[str] = frozenset(),
    ) -> User:
        """Add a user. ``recipients`` are the directory's recipient ids (to check a scope)."""
        if not _NAME.match(name):
            raise ValidationError(
                f"user name {name!r} is not allowed",
                fields=("name",),
                hint="2-63 characters: lower-case letters, digits, '.', '_' or '-'",
            )
        if len(password) < MIN_PASSWORD:
            raise ValidationError(
                "the password is too short",
                fields=("password",),
                hint=f"use at least {MIN_PASSWORD} characters (a passphrase is best)",
            )
        scope = _check_scope(role, scope, recipients)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            self._sql(
                "INSERT INTO users (name, role, scope, password_hash, created_at)"
                " VALUES (?,?,?,?,?)",
                (name, role.value, scope, _hasher.hash(password), now),
            )
        except sqlite3.IntegrityError:
            raise ValidationError(
                f"user {name!r} already exists",
                fields=("name",),
                hint="choose another name, or `safer users disable` the old one",
            ) from None
        return User(name, role, scope, False, now)

    def get(self, name: str) -> User | None:
        rows, _ = self._sql(
            "SELECT name, role, scope, disabled, created_at FROM users WHERE name = ?", (name,)
        )
        return _user(rows[0]) if rows else None

    def list(self) -> list[User]:
        rows, _ = self._sql(
            "SELECT name, role, scope, disabled, created_at FROM users ORDER BY name"
        )
        return [_user(r) for r in rows]

    def disable(self, name: str) -> bool:
        """Disable a user (they can no longer sign in; open sessions end on the next request)."""
        if self.get(name) is None:
            raise ConfigError(
                f"no user {name!r}",
                code=ReasonCode.CONFIG_INVALID,
                hint="run `safer users list` to see the users",
            )
        _, changed = self._sql(
            "UPDATE users SET disabled = 1 WHERE name = ? AND disabled = 0", (name,)
        )
        return bool(changed)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user, if the name and password match and the user is enabled; else None."""
        rows, _ = self._sql("SELECT password_hash FROM users WHERE name = ?", (name,))
        row = rows[0] if rows else None
        stored = str(row[0]) if row else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if _hasher.check_needs_rehash(stored):
            self._sql(
                "UPDATE users SET password_hash = ? WHERE name = ?",
                (_hasher.hash(password), name),
            )
        user = self.get(name)
        return user if user is not None and not user.disabled else None


def _user(row: tuple[object, ...]) -> User:
    name, role, scope, disabled, created = row
    return User(
        str(name),
        Role(str(role)),
        None if scope is None else str(scope),
        bool(disabled),
        str(created),
    )


def _check_scope(role: Role, scope: str | None, recipients: frozenset[str]) -> str | None:
    if role is Role.PRACTITIONER:
        if not scope or scope not in recipients:
            raise ValidationError(
                "a practitioner needs --recipient, a recipient id from deploy/directory.toml",
                fields=("recipient",),
                hint="e.g. --recipient portsmouth-csc (see `safer inbox list`)",
            )
        return scope
    if role is Role.ANALYST:
        partnerships = [p.value for p in Lscp]
        if scope not in partnerships:
            raise ValidationError(
                "an analyst needs --partnership",
                fields=("partnership",),
                hint=f"one of: {', '.join(partnerships)}",
            )
        return scope
    if scope:
        raise ValidationError(
            f"a {role.value} sees every partnership: leave out --recipient/--partnership",
            fields=("scope",),
        )
    return None
