"""The notes of batches planned but not yet committed (issue 12's pipelined router).

The router plans batch N+1 while batch N's transaction is open: a commit makes
only the oldest batch's notes durable, and an abort forgets every batch's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from broker import RoutedLedger, Seen, SignalStore
from broker._pending import PendingBatches
from consent import SignalEvent
from schemas import RiskGrade


def test_a_commit_makes_only_the_oldest_batch_durable() -> None:
    pending: PendingBatches[str] = PendingBatches()
    pending.begin()
    pending.put("a", "batch 1")
    pending.begin()
    pending.put("a", "batch 2")
    pending.put("b", "batch 2")
    assert pending.get("a") == "batch 2"  # the newest note wins
    assert pending.pop_oldest() == {"a": "batch 1"}
    assert pending.get("a") == "batch 2" and pending.get("b") == "batch 2"
    assert pending.pop_oldest() == {"a": "batch 2", "b": "batch 2"}
    assert pending.pop_oldest() == {} and pending.get("a") is None


def test_a_batch_that_noted_nothing_still_has_its_own_layer() -> None:
    pending: PendingBatches[str] = PendingBatches()
    pending.begin()  # batch 1: every record quarantined, nothing noted
    pending.begin()
    pending.put("a", "batch 2")
    assert pending.pop_oldest() == {}  # batch 1's commit must not make batch 2 durable
    assert pending.get("a") == "batch 2"


def test_without_begin_notes_form_one_batch() -> None:
    pending: PendingBatches[str] = PendingBatches()
    pending.put("a", "x")
    pending.put("b", "y")
    assert pending.pop_oldest() == {"a": "x", "b": "y"}


def test_the_ledger_keeps_a_later_batch_pending_past_an_earlier_commit() -> None:
    ledger = RoutedLedger(topic="hips.routed", bootstrap_servers="unused:9092")
    ledger.begin()
    ledger.note("c1", b"1" * 16)
    ledger.begin()
    ledger.note("c2", b"2" * 16)
    ledger.committed()  # batch 1 only
    assert len(ledger) == 1
    assert ledger.check("c2", b"2" * 16) is Seen.REPLAY  # still pending, still seen
    ledger.aborted()  # batch 2's transaction aborted: it will be planned again
    assert ledger.check("c2", b"2" * 16) is Seen.NEW
    assert ledger.check("c1", b"1" * 16) is Seen.REPLAY


def test_the_signal_store_forgets_every_pending_batch_on_abort() -> None:
    store = SignalStore(topic="hips.signals", bootstrap_servers="unused:9092", keep_days=365)
    at = datetime(2026, 12, 1, tzinfo=UTC)

    def event(concern_id: str) -> SignalEvent:
        return SignalEvent(
            concern_id=concern_id,
            reported_at=at,
            source_agency="hampshire-constabulary",
            grade=RiskGrade.LOW,
            lscps=("portsmouth",),
        )

    child = "a" * 32
    store.begin()
    store.note([child], event("c1"))
    store.committed()
    store.begin()
    store.note([child], event("c2"))
    store.begin()
    store.note([child], event("c3"))
    assert [e.concern_id for e in store.events(child)] == ["c1", "c2", "c3"]
    store.aborted()
    assert [e.concern_id for e in store.events(child)] == ["c1"]
