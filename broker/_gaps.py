"""Reading partitions without skipping a record the broker has not shown yet.

Tansu (the embedded broker, memory storage) advances a partition's high
watermark before it stores the produced batch. A fetch that lands in between
can come back without a record whose offset is already handed out, and with
later ones; aiokafka accepts records that start past the requested offset
(compaction leaves such gaps on Kafka) and moves past the missing one. Seen
on this machine: about once in 20 stress runs of 60 producers on one
partition, under CPU contention, and once as a receipt missing from the audit
log. A consumer that commits its position after such a fetch loses the record
for good.

``OffsetGapGuard`` hands on a partition's records only while their offsets
follow on. At a gap it keeps the records before it, asks the caller to seek
back to the first missing offset, and lets the next fetch try again. A gap
still there after ``gap_wait`` seconds is taken as real (Apache Kafka leaves
gaps for transaction markers, compaction and retention; our producers use
none of the first two on our non-compacted topics) and logged as
``kafka.offset_gap`` with the topic, partition and offsets only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from aiokafka import TopicPartition

__all__ = ["OffsetGapGuard"]

_log = structlog.get_logger("safer.kafka")

#: Pause before a partition with a gap is fetched again (the broker stores the batch meanwhile).
_RETRY_DELAY = 0.02


class _Consumer(Protocol):
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = ..., max_records: int | None = ...
    ) -> dict[TopicPartition, list[Any]]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class OffsetGapGuard:
    """Passes on each partition's records only while their offsets follow on.

    Tell it every position the consumer is put at (``expect``) after an
    assignment or a seek; it learns the rest from the records. A partition it
    has no position for yet starts at its first record.
    """

    def __init__(
        self, *, gap_wait: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.gap_wait = gap_wait
        self._clock = clock
        self._next: dict[TopicPartition, int] = {}
        self._gaps: dict[TopicPartition, tuple[int, float]] = {}  # first missing, first seen
        self.rereads = 0
        self.accepted = 0

    def expect(self, tp: TopicPartition, offset: int) -> None:
        """The consumer will read ``tp`` from ``offset`` next (after a seek or assignment)."""
        self._next[tp] = offset

    def admit(
        self, fetched: dict[TopicPartition, list[Any]]
    ) -> tuple[dict[TopicPartition, list[Any]], dict[TopicPartition, int]]:
        """(records to use, seeks to make): each partition's records up to its first gap."""
        kept: dict[TopicPartition, list[Any]] = {}
        seeks: dict[TopicPartition, int] = {}
        for tp, records in fetched.items():
            usable = self._contiguous(tp, records)
            if len(usable) < len(records):
                seeks[tp] = self._next[tp]
            if usable:
                kept[tp] = usable
        return kept, seeks

    def _contiguous(self, tp: TopicPartition, records: list[Any]) -> list[Any]:
        expected = self._next.get(tp)
        for index, record in enumerate(records):
            offset = int(record.offset)
            if expected is not None and offset > expected:
                gap = self._gaps.get(tp)
                if gap is None or gap[0] != expected:
                    gap = self._gaps[tp] = (expected, self._clock())
                if self._clock() - gap[1] < self.gap_wait:
                    self.rereads += 1
                    self._next[tp] = expected
                    return records[:index]
                del self._gaps[tp]
                self.accepted += 1
                _log.warning(
                    "kafka.offset_gap",
                    topic=tp.topic,
                    partition=tp.partition,
                    expected=expected,
                    got=offset,
                    waited_s=self.gap_wait,
                )
            expected = offset + 1
        if expected is not None:
            self._next[tp] = expected
        return records

    async def getmany(
        self, consumer: _Consumer, *partitions: TopicPartition, **kwargs: Any
    ) -> dict[TopicPartition, list[Any]]:
        """``consumer.getmany`` with gaps held back: the consumer re-reads from each gap."""
        fetched = await consumer.getmany(*partitions, **kwargs)
        kept, seeks = self.admit(fetched)
        for tp, offset in seeks.items():
            consumer.seek(tp, offset)
        if seeks:
            await asyncio.sleep(_RETRY_DELAY)
        return kept
