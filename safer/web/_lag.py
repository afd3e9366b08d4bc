"""Consumer lag per group, for `/metrics`: how far each reader is behind its topics' end.

Positions come from where each reader keeps them: the router's consumer group
(committed offsets in Kafka), the audit feed's positions in the audit store,
and each recipient adapter's positions in its inbox. Ends are the topics'
last stable offsets (``read_committed``). Labels are group names only: the
router's group, ``safer-audit-feed`` and recipient ids from the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adapters import Inbox
from audit import AuditStore
from broker import Settings, make_consumer

from .._runtime import Runtime, resolve_bootstrap

__all__ = ["ROUTER_GROUP", "consumer_lag"]

ROUTER_GROUP = "safer-router"
FEED_GROUP = "safer-audit-feed"


def _stored_positions(settings: Settings) -> dict[str, dict[tuple[str, int], int]]:
    groups: dict[str, dict[tuple[str, int], int]] = {}
    if settings.audit_db.is_file():
        with AuditStore(settings.audit_db) as store:
            groups[FEED_GROUP] = store.feed_offsets()
    folder = settings.inbox_dir
    if folder.is_dir():
        for path in sorted(folder.glob("*.db")):
            with Inbox(path) as inbox:
                groups[path.stem] = inbox.offsets()
    return groups


async def consumer_lag(settings: Settings, *, timeout: float = 5.0) -> dict[str, int] | None:
    """Records not yet read, per group; None when no broker is reachable."""
    try:
        bootstrap = resolve_bootstrap(settings)
    except Exception:  # no broker advertised: nothing to measure
        return None
    security: dict[str, Any] = Runtime(settings, bootstrap).security_for(ROUTER_GROUP)
    groups = await asyncio.to_thread(_stored_positions, settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)
    consumer = make_consumer(bootstrap, **security)

    async def measure() -> dict[str, int]:
        await admin.start()
        await consumer.start()
        committed = await admin.list_consumer_group_offsets(ROUTER_GROUP)
        groups[ROUTER_GROUP] = {
            (tp.topic, tp.partition): meta.offset
            for tp, meta in committed.items()
            if meta.offset >= 0
        }
        tps = sorted(
            {TopicPartition(t, p) for positions in groups.values() for t, p in positions},
            key=lambda tp: (tp.topic, tp.partition),
        )
        ends = await consumer.end_offsets(tps) if tps else {}
        return {
            group: sum(
                max(ends.get(TopicPartition(t, p), offset) - offset, 0)
                for (t, p), offset in positions.items()
            )
            for group, positions in groups.items()
        }

    try:
        return await asyncio.wait_for(measure(), timeout)
    except Exception:  # unreachable or refused: the metric is absent, not wrong
        return None
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await admin.close()
