"""The cumulative-concern signal's state store, rebuilt from Kafka (issue 16).

Per child pseudonym, the concerns the router routed about that child
(``consent.SignalEvent``: concern id, report time, source agency, grade, the
partnerships reached). No personal data: the key is the pseudonym (HMAC of an
identifier, DESIGN §4.4) and the value holds ids, agency ids, a grade and
partnership names.

The router writes a pseudonym's whole state to the compacted topic
``hips.signals`` (key: the pseudonym; value: JSON ``{"v": 1, "events": [...]}``)
in the same transaction as the batch's disclosures, so the store says
"counted" exactly when the outputs are visible. Every router follows the topic
from the beginning, so the state survives a restart and is shared by every
router. Entries a batch adds are pending until its transaction commits, as in
``RoutedLedger``. A tombstone (``erase``: what `safer audit shred` sends)
removes a subject's counts.

Events older than the longest configured window are pruned when a
pseudonym's state is written, so the topic holds only what can still count.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from consent import SignalEvent, prune_events
from schemas import BrokerError, ReasonCode, RiskGrade

from ._kafka import OutRecord, follow_topic, make_producer, stop_clients
from ._pending import PendingBatches

__all__ = ["SignalStore", "decode_signal_state", "encode_signal_state", "erase_signals"]

_log = structlog.get_logger("safer.signals")
_PSEUDONYM = re.compile(r"\A[0-9a-f]{32}\Z")
#: Largest state kept per pseudonym (a child with more concerns in a window keeps the newest).
MAX_EVENTS = 200


def encode_signal_state(events: Sequence[SignalEvent]) -> bytes:
    return json.dumps(
        {"v": 1, "events": [e.to_json() for e in events]},
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")


def decode_signal_state(value: bytes) -> tuple[SignalEvent, ...] | None:
    """The events of one ``hips.signals`` value, or None if it is not one."""
    try:
        raw = json.loads(value)
        if not isinstance(raw, dict) or raw.get("v") != 1:
            return None
        return tuple(
            SignalEvent(
                concern_id=str(e["c"]),
                reported_at=datetime.fromtimestamp(int(e["t"]) / 1000, UTC),
                source_agency=str(e["a"]),
                grade=RiskGrade(e["g"]),
                lscps=tuple(str(x) for x in e["l"]),
            )
            for e in raw["events"]
        )
    except (ValueError, KeyError, TypeError):
        return None


class SignalStore:
    def __init__(
        self,
        *,
        topic: str,
        bootstrap_servers: str,
        keep_days: int,
        security: dict[str, Any] | None = None,
        poll_ms: int = 200,
    ) -> None:
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})
        self._poll_ms = poll_ms
        self._keep_days = keep_days
        self._state: dict[str, tuple[SignalEvent, ...]] = {}
        self._pending: PendingBatches[tuple[SignalEvent, ...]] = PendingBatches()

    def __len__(self) -> int:
        return len(self._state)

    # -- the pure part ---------------------------------------------------------------

    def events(self, pseudonym: str) -> tuple[SignalEvent, ...]:
        found = self._pending.get(pseudonym)
        return found if found is not None else self._state.get(pseudonym, ())

    def history(self, pseudonyms: Iterable[str]) -> list[SignalEvent]:
        """Every concern counted under any of a child's pseudonyms (once each)."""
        seen: dict[str, SignalEvent] = {}
        for pseudonym in pseudonyms:
            for event in self.events(pseudonym):
                seen.setdefault(event.concern_id, event)
        return list(seen.values())

    def note(self, pseudonyms: Iterable[str], event: SignalEvent) -> list[OutRecord]:
        """Count ``event`` for a child under each of its pseudonyms, in the batch being
        planned; returns the ``hips.signals`` records that carry the new state."""
        out = []
        for pseudonym in dict.fromkeys(pseudonyms):
            current = self.events(pseudonym)
            newest = max([event.reported_at, *(e.reported_at for e in current)])
            kept = prune_events([*current, event], newest, self._keep_days)[-MAX_EVENTS:]
            self._pending.put(pseudonym, kept)
            out.append(
                OutRecord(self.topic, pseudonym.encode("ascii"), encode_signal_state(kept), ())
            )
        return out

    def begin(self) -> None:
        """A batch is about to be planned (its counts are kept apart from earlier batches')."""
        self._pending.begin()

    def committed(self) -> None:
        """The oldest pending batch's transaction committed: its counts are the state."""
        self._state.update(self._pending.pop_oldest())

    def aborted(self) -> None:
        """A transaction aborted: forget what every pending batch counted."""
        self._pending.clear()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of ``hips.signals``: a state, or a tombstone (malformed: ignored).

        A state is merged into what is known (by concern id), never put in its place:
        the router's own commit updates the store at once, and the follower reading
        the topic behind it must not take the newest count away again by applying an
        older record of the same child. A tombstone removes the child's counts.
        """
        if key is None:
            return
        try:
            pseudonym = key.decode("ascii")
        except UnicodeDecodeError:
            return
        if not _PSEUDONYM.match(pseudonym):
            return
        if value is None:
            self._state.pop(pseudonym, None)
            return
        events = decode_signal_state(value)
        if events is not None:
            known = {e.concern_id: e for e in self._state.get(pseudonym, ())}
            known.update((e.concern_id, e) for e in events)
            self._state[pseudonym] = tuple(
                sorted(known.values(), key=lambda e: (e.reported_at, e.concern_id))
            )

    # -- following the topic -----------------------------------------------------------

    async def run(self, stop: asyncio.Event, caught_up_event: asyncio.Event) -> None:
        """Follow ``hips.signals`` from the beginning; set ``caught_up_event`` at its end."""
        await follow_topic(
            self._bootstrap,
            self.topic,
            stop,
            caught_up_event,
            lambda record: self.apply(record.key, record.value),
            poll_ms=self._poll_ms,
            on_caught_up=lambda: _log.info("signals.caught_up", children=len(self._state)),
            **self._security,
        )


async def erase_signals(
    bootstrap_servers: str,
    topic: str,
    pseudonyms: Iterable[str],
    security: dict[str, Any] | None = None,
    *,
    timeout: float = 30.0,
) -> int:
    """Tombstone each pseudonym's state on ``hips.signals`` (compaction then deletes it;
    every router drops it as it reads the tombstone). Returns how many were sent.

    Raises:
        BrokerError: the broker did not take them within ``timeout`` seconds (retriable).
    """
    keys = [p for p in dict.fromkeys(pseudonyms) if _PSEUDONYM.match(p)]
    if not keys:
        return 0
    producer = make_producer(bootstrap_servers, **(security or {}))

    async def send() -> None:
        await producer.start()
        futures = [await producer.send(topic, None, key=k.encode("ascii")) for k in keys]
        await asyncio.gather(*futures)

    try:
        await asyncio.wait_for(send(), timeout)
    except (TimeoutError, KafkaError) as exc:
        raise BrokerError(
            f"the cumulative-concern counts could not be erased ({type(exc).__name__})",
            code=ReasonCode.BROKER_UNAVAILABLE,
            retriable=True,
            hint=f"check the broker and that this client may write {topic}, then try again",
        ) from None
    finally:
        await stop_clients(producer)
    _log.info("signals.erased", subjects=len(keys))
    return len(keys)
