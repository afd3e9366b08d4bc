"""Key events on the compacted ``hips.keys`` topic: rotation and revocation (issue 15.1).

A key event is the current state of one signing key: ``ACTIVE`` (published),
``RETIRING`` (rotated out: verifies until ``not_after``) or ``REVOKED``. The
Kafka key is the key id (16 hex digits), so compaction keeps the latest state
of every key. A revocation is sticky: once a keyring has seen one, no later
event for that key trusts it again.

The value is our own small format: canonical JSON (sorted keys, no whitespace,
UTF-8), so any partner can read it without the schema registry. It is signed
like every SAFER record (``sign_record``, schema id 0, record id = the key id)
by the **key administrator** identity ``safer-key-admin``, whose public key
every participant holds out of band; headers carry that key id and the
signature. An event not signed by the administrator is ignored and logged.

``KeyFollower`` follows the topic from the beginning (like the routed ledger)
and applies each verified event to the keyrings it was given (the router's, a
recipient's). A revocation reaches a running router on its next poll (200 ms),
well within a second.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas import SaferError

from ._crypto import Keyring, SigningIdentity, key_id, sign_record, verify_record
from ._kafka import OutRecord, follow_topic, header
from ._topics import Headers

__all__ = [
    "KEY_ADMIN_ID",
    "KEY_REVOCATION_REASONS",
    "KeyEvent",
    "KeyFollower",
    "key_event_record",
    "read_key_event",
]

_log = structlog.get_logger("safer.keys")

#: The identity that signs key events (in the key store like any other; not on the directory).
KEY_ADMIN_ID = "safer-key-admin"
#: Why a key is revoked: fixed codes (free text could carry personal data into the log).
KEY_REVOCATION_REASONS = {
    "compromised": "the private key is known or suspected to be in someone else's hands",
    "superseded": "replaced by a new key; the old one must no longer verify at all",
    "partner-left": "the agency left the exchange",
    "lost": "the private key was lost (no longer held by its owner)",
}
_KID = re.compile(r"\A[0-9a-f]{16}\Z")
_AGENCY = re.compile(r"\A[a-z0-9][a-z0-9-]{0,62}\Z")
State = Literal["ACTIVE", "RETIRING", "REVOKED"]
_STATES = ("ACTIVE", "RETIRING", "REVOKED")


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class KeyEvent:
    """The state of one signing key (see the module docstring)."""

    key_id: str
    agency_id: str
    public_key: bytes
    state: State
    at: datetime
    not_after: datetime | None = None
    reason: str | None = None
    actor: str = "operator"

    def __post_init__(self) -> None:
        if not _KID.match(self.key_id) or key_id(self.public_key) != self.key_id:
            raise ValueError("key_id must be the id of public_key")
        if not _AGENCY.match(self.agency_id) or self.state not in _STATES:
            raise ValueError("bad agency id or state")
        if self.state == "RETIRING" and self.not_after is None:
            raise ValueError("a RETIRING key needs not_after")
        if self.state == "REVOKED" and self.reason not in KEY_REVOCATION_REASONS:
            raise ValueError("a revocation needs one of the reason codes")

    def to_bytes(self) -> bytes:
        body = {
            "v": 1,
            "key_id": self.key_id,
            "agency_id": self.agency_id,
            "public_key": base64.b64encode(self.public_key).decode(),
            "state": self.state,
            "at": _time(self.at),
            "not_after": _time(self.not_after),
            "reason": self.reason,
            "actor": self.actor,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> KeyEvent:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a version 1 key event")
        not_after = data.get("not_after")
        return cls(
            key_id=str(data["key_id"]),
            agency_id=str(data["agency_id"]),
            public_key=base64.b64decode(data["public_key"], validate=True),
            state=data["state"],
            at=datetime.fromisoformat(data["at"]),
            not_after=datetime.fromisoformat(not_after) if not_after else None,
            reason=data.get("reason"),
            actor=str(data.get("actor", "operator")),
        )

    def apply_to(self, keyring: Keyring) -> None:
        """Make ``keyring`` trust (or stop trusting) this key as the event says."""
        if self.state == "REVOKED":
            keyring.revoke(self.key_id)
            return
        if keyring.is_revoked(self.key_id):
            return
        public = Ed25519PublicKey.from_public_bytes(self.public_key)
        try:
            keyring.add(self.agency_id, public)
        except SaferError:
            _log.warning("keys.event_conflict", key_id=self.key_id)
            return
        if self.state == "RETIRING" and self.not_after is not None:
            keyring.retire(self.key_id, self.not_after)


def key_event_record(topic: str, event: KeyEvent, admin: SigningIdentity) -> OutRecord:
    """The signed ``hips.keys`` record of ``event`` (key: the key id)."""
    body = event.to_bytes()
    signature = sign_record(admin, schema_id=0, record_id=event.key_id, body=body)
    headers = ((Headers.KEY_ID, admin.key_id.encode()), (Headers.SIGNATURE, signature))
    return OutRecord(topic, event.key_id.encode(), body, headers)


def read_key_event(
    admin_key: Ed25519PublicKey,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
) -> KeyEvent | None:
    """The event in one ``hips.keys`` record, if the administrator signed it; else None."""
    if key is None or value is None:
        return None
    signer = header(headers, Headers.KEY_ID)
    signature = header(headers, Headers.SIGNATURE)
    if signer is None or signature is None:
        return None
    if signer.decode("ascii", "replace") != key_id(admin_key.public_bytes_raw()):
        return None
    kid = key.decode("ascii", "replace")
    try:
        verify_record(admin_key, signature, schema_id=0, record_id=kid, body=value)
        event = KeyEvent.from_bytes(value)
    except (SaferError, ValueError, KeyError, TypeError):
        return None
    return event if event.key_id == kid else None


class KeyFollower:
    """Follows ``hips.keys`` and applies verified events to keyrings (see the docstring)."""

    def __init__(
        self,
        *,
        topic: str,
        bootstrap_servers: str,
        admin_key: Ed25519PublicKey,
        keyrings: Sequence[Keyring] = (),
        security: dict[str, Any] | None = None,
        poll_ms: int = 200,
    ) -> None:
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._admin_key = admin_key
        self._keyrings = list(keyrings)
        self._security = dict(security or {})
        self._poll_ms = poll_ms
        self.events: dict[str, KeyEvent] = {}
        self.ignored = 0

    def watch(self, keyring: Keyring) -> None:
        """Apply every event seen so far, and every later one, to ``keyring`` too."""
        self._keyrings.append(keyring)
        for event in self.events.values():
            event.apply_to(keyring)

    def apply(self, key: bytes | None, value: bytes | None, headers: Any) -> KeyEvent | None:
        event = read_key_event(self._admin_key, key, value, headers)
        if event is None:
            if value is not None:
                self.ignored += 1
                _log.warning("keys.event_ignored", topic=self.topic)
            return None
        previous = self.events.get(event.key_id)
        if previous is not None and previous.state == "REVOKED":
            event = previous  # sticky: nothing un-revokes a key
        self.events[event.key_id] = event
        for keyring in self._keyrings:
            event.apply_to(keyring)
        if event.state == "REVOKED":
            _log.info("keys.revoked", key_id=event.key_id, agency_id=event.agency_id)
        return event

    async def run(self, stop: asyncio.Event, caught_up_event: asyncio.Event) -> None:
        """Follow the topic from the beginning; set ``caught_up_event`` at its end."""
        await follow_topic(
            self._bootstrap,
            self.topic,
            stop,
            caught_up_event,
            lambda record: self.apply(record.key, record.value, record.headers),
            poll_ms=self._poll_ms,
            on_caught_up=lambda: _log.info("keys.caught_up", keys=len(self.events)),
            **self._security,
        )
