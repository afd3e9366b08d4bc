"""The subject vault: the only personal data the audit side keeps, and how it is shredded.

The audit log holds pseudonyms only, and it can never change. What it cannot
hold is *who* a pseudonym is, or that a person's NHS number and police person
id belong together: that is personal data, and it must be erasable. The
subject vault keeps exactly that, in its own SQLite file next to the audit
store (``subject-vault.db``), under a key per person:

``vault_keys(key_id, wrapped_key, created_at)``
    one random 256-bit AES-GCM key per person, itself wrapped (AES-GCM) under
    the vault key, which is derived from the partnership pseudonym secret
    (``derive_vault_key``), so a copy of the vault file alone opens nothing.
``vault_refs(key_id, nonce, ciphertext, created_at, updated_at, shredded_at)``
    the person's *subject reference*, encrypted under their key: every
    identifier known for them in canonical ``scheme:value`` form (``nhs:…``,
    ``police:…``, ``name-dob:…``) and the pseudonyms those give.
``vault_index(pseudonym, key_id)``
    which entry a pseudonym belongs to. Pseudonyms are already in the log, so
    the index adds no new personal data.

What the reference is for: ``safer audit trail`` and ``sar`` find a person's
records under *every* identifier the vault links to the one the requester
gave (someone logged once by NHS number and once by police id is one person).

Shredding (``shred_subject``) first appends a ``KEY_SHREDDED`` entry to the
audit log (audit first: a crash before the key is gone leaves a record and a
key, and re-running finishes the job with the same deterministic entry id),
then overwrites and deletes the person's key in one transaction with SQLite
``secure_delete`` on, and checkpoints the WAL so the key's bytes are not left
in it. The ciphertext stays as a tombstone: nothing can open it. The audit log
is untouched, so it still verifies end to end; its pseudonyms can still be
matched by someone who holds *both* the person's identifier and the
partnership secret, but no longer by the audit side on its own.

Copies of the vault file taken before a shred still hold the wrapped key:
keep vault backups on a short retention (see docs/DPO_GUIDE.md).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas import (
    AuditError,
    AuditEvent,
    CryptoError,
    ReasonCode,
    Subject,
    ValidationError,
)

from ._record import AuditRecord, entry_id_for
from ._reports import format_time, parse_time, utc_millis

__all__ = [
    "SHRED_REASONS",
    "VAULT_FILE",
    "ShredOutcome",
    "SubjectReference",
    "SubjectVault",
    "canonical_identifier",
    "derive_vault_key",
    "enrol_subjects",
    "shred_subject",
    "vault_path_for",
]

#: File name of the vault, next to the audit store.
VAULT_FILE = "subject-vault.db"
#: ``PRAGMA application_id`` of a subject vault ("SAFV").
VAULT_APPLICATION_ID = 0x53414656
VAULT_FORMAT_VERSION = 1

#: Why a key may be shredded: fixed wording, so no free text reaches the log.
SHRED_REASONS = {
    "erasure": "erasure requested by or for the data subject and approved by the DPO",
    "retention": "the retention period for the subject's data has ended",
    "restriction": "processing restricted by the DPO pending a dispute or complaint",
}

_KEY_BYTES = 32
_NONCE_BYTES = 12
_AAD_REF = b"safer-subject-ref-v1\x00"
_AAD_WRAP = b"safer-subject-key-v1\x00"
_HEX32 = re.compile(r"[0-9a-f]{32}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vault_keys (
    key_id      TEXT PRIMARY KEY,
    wrapped_key BLOB NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS vault_refs (
    key_id      TEXT PRIMARY KEY,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    shredded_at TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS vault_index (
    pseudonym   TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS vault_index_key ON vault_index(key_id);
"""

_ID_HINT = (
    "use nhs:NNNNNNNNNN (or the 10 digits alone), police:PERSON-ID, or "
    "name-dob:family|given|YYYY-MM-DD"
)


def vault_path_for(audit_db: Path) -> Path:
    """Where the subject vault of the audit store at ``audit_db`` lives."""
    return Path(audit_db).with_name(VAULT_FILE)


def derive_vault_key(pseudonym_secret: bytes) -> bytes:
    """The key that wraps every per-subject key: HKDF-SHA256 of the partnership secret."""
    if len(pseudonym_secret) < 16:
        raise CryptoError(
            "pseudonym secret is too short to derive the vault key",
            code=ReasonCode.KEY_MISSING,
            hint="create a proper secret with `safer keys init`",
        )
    return HKDF(
        algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=b"safer-subject-vault-v1"
    ).derive(pseudonym_secret)


def _nhs_check_ok(digits: str) -> bool:
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def canonical_identifier(text: str, *, check_nhs: bool = True) -> str:
    """A person identifier in the canonical form the router pseudonymises.

    Accepted (the same forms as ``schemas.Subject.identifiers()``):

    - ``nhs:9990001234``, ``nhs:999 000 1234`` or the ten digits alone
      (the modulus-11 check digit must be right: a typo must not find someone else);
    - ``police:HC-P-1234567`` (case and surrounding spaces do not matter);
    - ``name-dob:family|given|YYYY-MM-DD`` (``unknown`` for no date of birth),
      used only for people the police recorded with neither number.

    ``check_nhs=False`` skips the check digit, for a number that was recorded
    wrongly at source and is in the log as recorded. Raises
    ``ValidationError`` without echoing the value (it is personal data).
    """
    value = text.strip()
    bare = value.replace(" ", "")
    if bare.isdigit() and len(bare) == 10:
        value = f"nhs:{bare}"
    scheme, sep, rest = value.partition(":")
    scheme = scheme.strip().lower()
    if not sep or not rest.strip():
        raise ValidationError(
            "subject identifier is not in a recognised form", fields=("subject",), hint=_ID_HINT
        )
    if scheme == "nhs":
        digits = rest.replace(" ", "").strip()
        if not (digits.isdigit() and len(digits) == 10):
            raise ValidationError(
                "an NHS number must be 10 digits", fields=("subject",), hint=_ID_HINT
            )
        if check_nhs and not _nhs_check_ok(digits):
            raise ValidationError(
                "the NHS number's check digit is wrong (mistyped?)",
                fields=("subject",),
                hint="check the number against the request; nothing was searched "
                "(if the source recorded it with a wrong check digit, use --no-nhs-check)",
            )
        return f"nhs:{digits}"
    if scheme == "police":
        return f"police:{rest.strip().upper()}"
    if scheme == "name-dob":
        parts = rest.split("|")
        if len(parts) != 3 or not parts[0].strip() or not parts[1].strip():
            raise ValidationError(
                "name-dob needs family|given|YYYY-MM-DD", fields=("subject",), hint=_ID_HINT
            )
        family, given, dob = (p.strip() for p in parts)
        if dob.lower() != "unknown":
            try:
                dob = date.fromisoformat(dob).isoformat()
            except ValueError:
                raise ValidationError(
                    "the date of birth must be YYYY-MM-DD or unknown",
                    fields=("subject",),
                    hint=_ID_HINT,
                ) from None
        else:
            dob = "unknown"
        return f"name-dob:{family.lower()}|{given.lower()}|{dob}"
    raise ValidationError(
        "unknown identifier scheme (expected nhs, police or name-dob)",
        fields=("subject",),
        hint=_ID_HINT,
    )


@dataclass(frozen=True)
class SubjectReference:
    """A vault entry: the person's identifiers (if not shredded) and pseudonyms."""

    key_id: str
    pseudonyms: tuple[str, ...]
    identifiers: tuple[str, ...]  # empty once shredded
    created_at: datetime
    shredded_at: datetime | None

    @property
    def shredded(self) -> bool:
        return self.shredded_at is not None


@dataclass(frozen=True)
class ShredOutcome:
    """What ``shred_subject`` did for one vault entry."""

    key_id: str
    seq: int  # the KEY_SHREDDED entry in the audit log
    pseudonyms: tuple[str, ...]
    already_logged: bool  # the entry existed (a re-run finishing an interrupted shred)


def _vault_error(action: str, exc: sqlite3.Error) -> AuditError:
    busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
    return AuditError(
        f"subject vault could not {action}: {exc}",
        code=ReasonCode.PROCESSING_ERROR,
        retriable=busy,
        hint="another process holds the subject vault; retry"
        if busy
        else "check the disk and permissions of the data directory",
    )


class SubjectVault:
    """Per-subject encrypted references in one SQLite (WAL) file. Thread-safe.

    ``vault_key`` wraps every per-subject key (``derive_vault_key``). With
    ``create=False`` a missing file raises ``AuditError`` instead of being made.
    """

    def __init__(self, path: Path, *, vault_key: bytes, create: bool = True) -> None:
        if len(vault_key) != _KEY_BYTES:
            raise CryptoError("the vault key must be 32 bytes", code=ReasonCode.KEY_MISSING)
        self._path = Path(path)
        self._wrap = AESGCM(vault_key)
        self._lock = threading.RLock()
        if not create and not self._path.exists():
            raise AuditError(
                f"no subject vault at {self._path}",
                code=ReasonCode.CONFIG_INVALID,
                hint="nothing has been enrolled in this data directory's subject vault",
            )
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            if not self._path.exists():
                # Created private from the first byte, before SQLite opens it.
                os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise AuditError(
                f"cannot open the subject vault {self._path}: {exc}",
                code=ReasonCode.CONFIG_INVALID,
                hint="check --data-dir and its permissions",
            ) from None
        try:
            self._initialise(self._conn)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _initialise(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError:
            raise AuditError(
                f"{self._path} is not a SAFER subject vault (not an SQLite database)",
                code=ReasonCode.CONFIG_INVALID,
            ) from None
        if not (app == 0 and tables == 0) and app != VAULT_APPLICATION_ID:
            raise AuditError(
                f"{self._path} is not a SAFER subject vault", code=ReasonCode.CONFIG_INVALID
            )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            # Deleted rows (shredded keys) are overwritten with zeros in the file.
            conn.execute("PRAGMA secure_delete = ON")
            if app == 0:
                conn.execute(f"PRAGMA application_id = {VAULT_APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {VAULT_FORMAT_VERSION}")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise _vault_error("initialise", exc) from None

    # -- plumbing -----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AuditError("subject vault is closed", code=ReasonCode.PROCESSING_ERROR)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- crypto -------------------------------------------------------------------

    def _unwrap(self, key_id: str, wrapped: bytes) -> AESGCM:
        try:
            raw = self._wrap.decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _AAD_WRAP + key_id.encode()
            )
        except InvalidTag:
            raise CryptoError(
                "a subject key does not open with this vault key",
                code=ReasonCode.DECRYPT_FAILED,
                hint="the partnership pseudonym secret changed, or the vault was altered",
            ) from None
        return AESGCM(raw)

    @staticmethod
    def _seal(
        key: AESGCM, key_id: str, identifiers: Iterable[str], pseudonyms: Iterable[str]
    ) -> tuple[bytes, bytes]:
        plain = json.dumps(
            {
                "v": 1,
                "identifiers": sorted(set(identifiers)),
                "pseudonyms": sorted(set(pseudonyms)),
            },
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        return nonce, key.encrypt(nonce, plain, _AAD_REF + key_id.encode())

    @staticmethod
    def _open(
        key: AESGCM, key_id: str, nonce: bytes, ciphertext: bytes
    ) -> tuple[list[str], list[str]]:
        try:
            plain = key.decrypt(nonce, ciphertext, _AAD_REF + key_id.encode())
        except InvalidTag:
            raise CryptoError(
                "a subject reference does not decrypt under its key",
                code=ReasonCode.DECRYPT_FAILED,
                hint="the subject vault was altered; restore it from a verified copy",
            ) from None
        data = json.loads(plain)
        return list(data["identifiers"]), list(data["pseudonyms"])

    # -- writing ------------------------------------------------------------------

    def enrol_many(
        self,
        people: Sequence[Sequence[str]],
        pseudonymise: Callable[[str], str],
        *,
        at: datetime | None = None,
    ) -> list[str]:
        """``enrol`` for several people in ONE transaction (one fsync per batch).

        The router enrols a whole delivered batch at once; a transaction per
        person made enrolment cost more than routing itself.
        """
        prepared: list[tuple[list[str], list[str]]] = []
        for identifiers in people:
            idents = [i for i in dict.fromkeys(identifiers) if i]
            if not idents:
                raise ValidationError("nothing to enrol: no identifiers", fields=("identifiers",))
            pseudonyms = [pseudonymise(i) for i in idents]
            if not all(_HEX32.fullmatch(p) for p in pseudonyms):
                raise ValidationError(
                    "pseudonyms must be 32 lowercase hex", fields=("pseudonymise",)
                )
            prepared.append((idents, list(dict.fromkeys(pseudonyms))))
        stamp = format_time(utc_millis("at", at or datetime.now(UTC)))
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    key_ids = [self._enrol(conn, i, p, stamp) for i, p in prepared]
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _vault_error("enrol subjects", exc) from None
        return key_ids

    def enrol(
        self,
        identifiers: Sequence[str],
        pseudonymise: Callable[[str], str],
        *,
        at: datetime | None = None,
    ) -> str:
        """Record that these identifiers belong to one person; returns the entry's key id.

        ``identifiers`` must be canonical (``canonical_identifier`` or
        ``Subject.identifiers()``); ``pseudonymise`` is the router's pseudonym
        function with the partnership secret bound. Idempotent. If any of the
        pseudonyms already belongs to a live entry, the identifiers are merged
        into it (entries that turn out to be the same person are merged into
        the oldest one). A pseudonym of a shredded entry starts a new entry:
        new data after an erasure is new processing.
        """
        return self.enrol_many([identifiers], pseudonymise, at=at)[0]

    def _live_entries(self, conn: sqlite3.Connection, pseudonyms: Iterable[str]) -> list[str]:
        found: dict[str, str] = {}
        for p in pseudonyms:
            row = conn.execute(
                "SELECT i.key_id, r.created_at FROM vault_index i "
                "JOIN vault_refs r ON r.key_id = i.key_id "
                "WHERE i.pseudonym = ? AND r.shredded_at IS NULL",
                (p,),
            ).fetchone()
            if row is not None:
                found[str(row[0])] = str(row[1])
        return sorted(found, key=lambda k: (found[k], k))

    def _read(self, conn: sqlite3.Connection, key_id: str) -> tuple[AESGCM, list[str], list[str]]:
        key_row = conn.execute(
            "SELECT wrapped_key FROM vault_keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        ref_row = conn.execute(
            "SELECT nonce, ciphertext FROM vault_refs WHERE key_id = ?", (key_id,)
        ).fetchone()
        if key_row is None or ref_row is None:
            raise AuditError(
                "subject vault entry is incomplete",
                code=ReasonCode.AUDIT_TAMPERED,
                hint="the subject vault was altered; restore it from a verified copy",
            )
        key = self._unwrap(key_id, bytes(key_row[0]))
        idents, pseudos = self._open(key, key_id, bytes(ref_row[0]), bytes(ref_row[1]))
        return key, idents, pseudos

    def _enrol(
        self, conn: sqlite3.Connection, idents: list[str], pseudonyms: list[str], stamp: str
    ) -> str:
        live = self._live_entries(conn, pseudonyms)
        if not live:
            key_id = os.urandom(16).hex()
            raw = AESGCM.generate_key(bit_length=256)
            nonce = os.urandom(_NONCE_BYTES)
            wrapped = nonce + self._wrap.encrypt(nonce, raw, _AAD_WRAP + key_id.encode())
            conn.execute(
                "INSERT INTO vault_keys(key_id, wrapped_key, created_at) VALUES (?, ?, ?)",
                (key_id, wrapped, stamp),
            )
            ref_nonce, ciphertext = self._seal(AESGCM(raw), key_id, idents, pseudonyms)
            conn.execute(
                "INSERT INTO vault_refs(key_id, nonce, ciphertext, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key_id, ref_nonce, ciphertext, stamp, stamp),
            )
        else:
            key_id = live[0]
            key, all_idents, all_pseudos = self._read(conn, key_id)
            merged_from = live[1:]
            for other in merged_from:
                _, more_idents, more_pseudos = self._read(conn, other)
                all_idents += more_idents
                all_pseudos += more_pseudos
            before = (set(all_idents), set(all_pseudos))
            all_idents += idents
            all_pseudos += pseudonyms
            if merged_from or (set(all_idents), set(all_pseudos)) != before:
                ref_nonce, ciphertext = self._seal(key, key_id, all_idents, all_pseudos)
                conn.execute(
                    "UPDATE vault_refs SET nonce = ?, ciphertext = ?, updated_at = ? "
                    "WHERE key_id = ?",
                    (ref_nonce, ciphertext, stamp, key_id),
                )
            for other in merged_from:  # a merged entry's key and reference go entirely
                conn.execute("DELETE FROM vault_keys WHERE key_id = ?", (other,))
                conn.execute("DELETE FROM vault_refs WHERE key_id = ?", (other,))
                conn.execute("UPDATE vault_index SET key_id = ? WHERE key_id = ?", (key_id, other))
            pseudonyms = sorted(set(all_pseudos))
        conn.executemany(
            "INSERT INTO vault_index(pseudonym, key_id) VALUES (?, ?) "
            "ON CONFLICT(pseudonym) DO UPDATE SET key_id = excluded.key_id",
            [(p, key_id) for p in pseudonyms],
        )
        return key_id

    def destroy_key(self, key_id: str, *, at: datetime | None = None) -> bool:
        """Overwrite and delete the entry's key; True if a key was destroyed.

        The reference's ciphertext stays (unreadable) with ``shredded_at`` set.
        The WAL is checkpointed and truncated afterwards so the key's bytes do
        not linger there either.
        """
        stamp = format_time(utc_millis("at", at or datetime.now(UTC)))
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute(
                        "SELECT length(wrapped_key) FROM vault_keys WHERE key_id = ?", (key_id,)
                    ).fetchone()
                    if row is not None:
                        conn.execute(
                            "UPDATE vault_keys SET wrapped_key = zeroblob(?) WHERE key_id = ?",
                            (int(row[0]), key_id),
                        )
                        conn.execute("DELETE FROM vault_keys WHERE key_id = ?", (key_id,))
                    conn.execute(
                        "UPDATE vault_refs SET shredded_at = coalesce(shredded_at, ?) "
                        "WHERE key_id = ?",
                        (stamp, key_id),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise _vault_error("destroy a subject key", exc) from None
        return row is not None

    # -- reading ------------------------------------------------------------------

    def lookup(self, pseudonym: str) -> SubjectReference | None:
        """The entry a pseudonym belongs to (decrypted unless shredded), or None."""
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute(
                    "SELECT r.key_id, r.created_at, r.shredded_at FROM vault_index i "
                    "JOIN vault_refs r ON r.key_id = i.key_id WHERE i.pseudonym = ?",
                    (pseudonym,),
                ).fetchone()
                if row is None:
                    return None
                key_id, created, shredded = str(row[0]), str(row[1]), row[2]
                pseudos = [
                    str(p)
                    for (p,) in conn.execute(
                        "SELECT pseudonym FROM vault_index WHERE key_id = ? ORDER BY pseudonym",
                        (key_id,),
                    )
                ]
                idents: list[str] = []
                if shredded is None:
                    _, idents, _ = self._read(conn, key_id)
            except sqlite3.Error as exc:
                raise _vault_error("read", exc) from None
        return SubjectReference(
            key_id=key_id,
            pseudonyms=tuple(pseudos),
            identifiers=tuple(sorted(idents)),
            created_at=parse_time(created),
            shredded_at=None if shredded is None else parse_time(str(shredded)),
        )

    def linked_pseudonyms(self, pseudonyms: Collection[str]) -> set[str]:
        """Every pseudonym a live entry links to any of these (including them)."""
        out = set(pseudonyms)
        for p in pseudonyms:
            ref = self.lookup(p)
            if ref is not None and not ref.shredded:
                out |= set(ref.pseudonyms)
        return out

    def counts(self) -> dict[str, int]:
        """Entries held, live and shredded (no personal data)."""
        rows = dict.fromkeys(("live", "shredded"), 0)
        with self._lock:
            try:
                for shredded, n in self._connection().execute(
                    "SELECT shredded_at IS NOT NULL, count(*) FROM vault_refs GROUP BY 1"
                ):
                    rows["shredded" if shredded else "live"] = int(n)
            except sqlite3.Error as exc:
                raise _vault_error("read", exc) from None
        return rows


def enrol_subjects(
    vault: SubjectVault,
    subjects: Iterable[Subject],
    pseudonymise: Callable[[str], str],
    *,
    at: datetime | None = None,
) -> list[str]:
    """Enrol every subject of a concern (one vault entry per person); returns key ids.

    This is the hook for whoever sees the concern in clear (the router, or an
    audit-side consumer of the inbound topics): call it with the concern's
    subjects and the partnership pseudonym function, before or after the
    decision records are produced. Idempotent.
    """
    return vault.enrol_many([s.identifiers() for s in subjects], pseudonymise, at=at)


class _Log(Protocol):
    """What ``shred_subject`` needs of the audit store (``AuditStore`` has it)."""

    def append(self, records: Sequence[AuditRecord]) -> Sequence[Any]: ...

    def has_entry(self, entry_id: str) -> bool: ...


def shred_subject(
    store: _Log,
    vault: SubjectVault,
    pseudonyms: Collection[str],
    *,
    reason: str,
    actor: str,
    at: datetime | None = None,
) -> list[ShredOutcome]:
    """Destroy the vault key of every entry these pseudonyms belong to, audit first.

    For each entry (live, or already shredded in the vault but missing from
    the log): append a ``KEY_SHREDDED`` record naming the entry's pseudonyms
    (entry id ``entry_id_for(KEY_SHREDDED, key_id)``, so a re-run is a
    duplicate, not a second entry), then destroy the key. ``store`` is an
    ``AuditStore`` (anything with its ``append`` and ``has_entry``).
    ``reason`` is a key of ``SHRED_REASONS``. Returns one outcome per entry;
    empty when the vault holds nothing for these pseudonyms.
    """
    if reason not in SHRED_REASONS:
        raise ValidationError(
            "unknown shred reason",
            fields=("reason",),
            hint=f"one of: {', '.join(sorted(SHRED_REASONS))}",
        )
    if not actor or not actor.strip():
        raise ValidationError("actor must name who shreds (a role or staff id)", fields=("actor",))
    moment = utc_millis("at", at or datetime.now(UTC))
    entries: dict[str, SubjectReference] = {}
    for p in pseudonyms:
        ref = vault.lookup(p)
        if ref is not None:
            entries.setdefault(ref.key_id, ref)
    outcomes: list[ShredOutcome] = []
    for key_id, ref in sorted(entries.items()):
        entry_id = entry_id_for(AuditEvent.KEY_SHREDDED, key_id)
        logged = store.has_entry(entry_id)
        if ref.shredded and logged:
            continue  # done before
        record = AuditRecord(
            entry_id=entry_id,
            event=AuditEvent.KEY_SHREDDED,
            subject_pseudonyms=ref.pseudonyms,
            source="subject-vault",
            reason_codes=(),
            reasons=(
                f"subject vault key {key_id} destroyed: {SHRED_REASONS[reason]}",
                "the audit log is unchanged; the subject's identifiers held in the vault "
                "can no longer be decrypted",
            ),
            at=moment,
            actor=actor.strip(),
        )
        results = store.append([record])
        seq = int(results[0].seq)
        vault.destroy_key(key_id, at=moment)
        outcomes.append(
            ShredOutcome(key_id=key_id, seq=seq, pseudonyms=ref.pseudonyms, already_logged=logged)
        )
    return outcomes
