"""The local Kafka's generated configuration (pure: no JVM, no files)."""

from __future__ import annotations

import base64

from broker import SIZE_LIMITS, SizeLimits
from broker._local_kafka import _cluster_id


def test_cluster_ids_are_kafka_uuids_the_storage_tool_accepts() -> None:
    for _ in range(5000):
        cid = _cluster_id()
        assert not cid.startswith("-"), "the storage tool would read it as an option"
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_size_limits_fit_together() -> None:
    limits = SIZE_LIMITS
    # The router refuses what the broker would let in, with room for a quarantine record;
    # every consumer can fetch the largest record any topic admits.
    assert limits.quarantine_inline_bytes < limits.inbound_value_bytes < limits.message_bytes
    assert limits.fetch_bytes >= limits.message_bytes
    try:
        SizeLimits(inbound_value_bytes=4 * 1024 * 1024)
    except ValueError:
        pass
    else:
        raise AssertionError("inconsistent limits must be refused")


async def test_every_hop_uses_the_one_set_of_limits() -> None:
    from broker import TopicLayout, Topics, make_consumer, make_producer, topic_plan

    for spec in topic_plan(Topics(), TopicLayout(), publisher_agency_types=["police"]):
        assert spec.configs["max.message.bytes"] == str(SIZE_LIMITS.message_bytes), spec.name
    producer = make_producer("127.0.0.1:1")  # not started: no connection is made
    assert producer._max_request_size == SIZE_LIMITS.message_bytes
    consumer = make_consumer("127.0.0.1:1")
    try:
        assert consumer._max_partition_fetch_bytes == SIZE_LIMITS.fetch_bytes
    finally:
        await consumer.stop()
        await producer.stop()
