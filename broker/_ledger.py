"""Which concerns have been routed: replay detection (issue 11; DESIGN §8 REPLAY).

A concern routed once must not be routed again. The router records each routed
concern in the compacted topic ``hips.routed`` (key: ``concern_id``; value: the
SHA-256 of the signed record it routed, 16 bytes), in the same transaction as
the batch's disclosures, so the ledger says "routed" exactly when the outputs
are visible. Every router follows the topic, so a replay is caught whichever
router or partition it lands on.

``check`` tells a new concern from an exact replay (same id, same signed bytes:
REPLAY, recorded once, nothing produced) and from a conflict (a different body
under a used ``concern_id``: quarantined as CONCERN_ID_CONFLICT). Entries a
batch adds are pending until its transaction commits, so a batch that aborts
leaves no trace and its replay routes normally.
"""

from __future__ import annotations

import asyncio
import hashlib
from enum import StrEnum
from typing import Any

import structlog

from ._kafka import OutRecord, follow_topic
from ._pending import PendingBatches

__all__ = ["RoutedLedger", "Seen", "routed_digest"]

_log = structlog.get_logger("safer.ledger")


class Seen(StrEnum):
    NEW = "NEW"
    REPLAY = "REPLAY"
    CONFLICT = "CONFLICT"


def routed_digest(value: bytes) -> bytes:
    """What identifies a concern's signed bytes in the ledger (128 bits of SHA-256)."""
    return hashlib.sha256(value).digest()[:16]


class RoutedLedger:
    def __init__(
        self,
        *,
        topic: str,
        bootstrap_servers: str,
        security: dict[str, Any] | None = None,
        poll_ms: int = 200,
    ) -> None:
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})
        self._poll_ms = poll_ms
        self._routed: dict[str, bytes] = {}
        self._pending: PendingBatches[bytes] = PendingBatches()

    def __len__(self) -> int:
        return len(self._routed)

    # -- the pure part ---------------------------------------------------------------

    def check(self, concern_id: str, digest: bytes) -> Seen:
        known = self._pending.get(concern_id) or self._routed.get(concern_id)
        if known is None:
            return Seen.NEW
        return Seen.REPLAY if known == digest else Seen.CONFLICT

    def begin(self) -> None:
        """A batch is about to be planned (its notes are kept apart from earlier batches')."""
        self._pending.begin()

    def note(self, concern_id: str, digest: bytes) -> OutRecord:
        """Record a concern as routed by the batch being planned; returns its ledger record."""
        self._pending.put(concern_id, digest)
        return OutRecord(self.topic, concern_id.encode("ascii"), digest, ())

    def committed(self) -> None:
        """The oldest pending batch's transaction committed: its entries are routed."""
        self._routed.update(self._pending.pop_oldest())

    def aborted(self) -> None:
        """A transaction aborted: forget what every pending batch noted."""
        self._pending.clear()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of ``hips.routed`` (a tombstone or malformed record is ignored)."""
        if key is None or value is None or len(value) != 16:
            return
        try:
            concern_id = key.decode("ascii")
        except UnicodeDecodeError:
            return
        self._routed[concern_id] = value

    # -- following the topic -----------------------------------------------------------

    async def run(self, stop: asyncio.Event, caught_up_event: asyncio.Event) -> None:
        """Follow ``hips.routed`` from the beginning; set ``caught_up_event`` at its end."""
        await follow_topic(
            self._bootstrap,
            self.topic,
            stop,
            caught_up_event,
            lambda record: self.apply(record.key, record.value),
            poll_ms=self._poll_ms,
            on_caught_up=lambda: _log.info("ledger.caught_up", routed=len(self._routed)),
            **self._security,
        )
