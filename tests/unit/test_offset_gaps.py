"""OffsetGapGuard: a fetch that skips an offset is read again, never passed over (pure)."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition
from structlog.testing import capture_logs

from broker import OffsetGapGuard

TP = TopicPartition("hips.receipts", 0)
OTHER = TopicPartition("hips.audit", 0)


def _records(*offsets: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=o) for o in offsets]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _offsets(kept: dict[TopicPartition, list[SimpleNamespace]], tp: TopicPartition) -> list[int]:
    return [r.offset for r in kept.get(tp, [])]


def test_records_that_follow_on_pass_and_a_gap_sends_the_consumer_back() -> None:
    guard = OffsetGapGuard()
    guard.expect(TP, 10)
    kept, seeks = guard.admit({TP: _records(10, 11, 12), OTHER: _records(0, 1)})
    assert _offsets(kept, TP) == [10, 11, 12] and _offsets(kept, OTHER) == [0, 1] and not seeks
    kept, seeks = guard.admit({TP: _records(13, 15, 16), OTHER: _records(2)})
    assert _offsets(kept, TP) == [13] and seeks == {TP: 14}  # 14 was left out: read it again
    assert _offsets(kept, OTHER) == [2]
    kept, seeks = guard.admit({TP: _records(14, 15, 16)})  # the broker has stored it now
    assert _offsets(kept, TP) == [14, 15, 16] and not seeks
    assert guard.rereads == 1 and guard.accepted == 0


def test_a_gap_at_the_first_record_after_a_seek_is_caught() -> None:
    guard = OffsetGapGuard()
    guard.expect(TP, 5)
    kept, seeks = guard.admit({TP: _records(6, 7)})
    assert kept == {} and seeks == {TP: 5}


def test_a_gap_that_stays_is_accepted_after_the_wait_and_logged_without_data() -> None:
    clock = _Clock()
    guard = OffsetGapGuard(gap_wait=5.0, clock=clock)
    guard.expect(TP, 0)
    for _ in range(3):
        kept, seeks = guard.admit({TP: _records(0, 2, 3)})
        assert _offsets(kept, TP) == [0] and seeks == {TP: 1}
        kept, seeks = guard.admit({TP: _records(2, 3)})
        assert kept == {} and seeks == {TP: 1}
        clock.now += 1.0
    clock.now += 5.0
    with capture_logs() as logs:
        kept, seeks = guard.admit({TP: _records(2, 3)})
    assert _offsets(kept, TP) == [2, 3] and not seeks
    assert guard.accepted == 1
    assert logs == [
        {
            "event": "kafka.offset_gap",
            "log_level": "warning",
            "topic": "hips.receipts",
            "partition": 0,
            "expected": 1,
            "got": 2,
            "waited_s": 5.0,
        }
    ]


def test_going_back_is_not_a_gap() -> None:
    """After a rebalance or a rewind the consumer may re-read: that loses nothing."""
    guard = OffsetGapGuard()
    guard.expect(TP, 50)
    kept, seeks = guard.admit({TP: _records(40, 41)})
    assert _offsets(kept, TP) == [40, 41] and not seeks
    kept, seeks = guard.admit({TP: _records(43)})
    assert kept == {} and seeks == {TP: 42}


def test_a_partition_without_a_known_position_starts_at_its_first_record() -> None:
    guard = OffsetGapGuard()
    kept, seeks = guard.admit({TP: _records(7, 8)})
    assert _offsets(kept, TP) == [7, 8] and not seeks
