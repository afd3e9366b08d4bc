"""Two routers share the work of one consumer group, and nothing is lost or duplicated.

Issue 12: routing scales out by running more `safer route` processes in one
group (each with its own instance, hence its own transactional id) over the
12 inbound partitions. Two real router processes run at once; afterwards each
has routed a share, every concern is decided, no inbox, recipient topic or
hips.audit holds anything twice, and the audit log verifies. Throughput of 1
against 2 routers is measured in bench/bench_scale_out.py, not here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from audit import AuditStore, verify_store

from .spine import (
    assert_delivered_exactly_once,
    assert_topics_exactly_once,
    concerns,
    make_runtime,
    publish,
    wait_accounted,
)

pytestmark = pytest.mark.kafka

N_CONCERNS = 400


def _log_events(path: Path, event: str) -> list[dict[str, Any]]:
    """The router's own JSON log lines for ``event`` (the Kafka client's plain lines skipped)."""
    lines = path.read_text().splitlines() if path.exists() else []
    found = (json.loads(line) for line in lines if line.startswith("{"))
    return [e for e in found if e.get("event") == event]


async def test_two_routers_in_one_group_share_the_work_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"so{secrets.token_hex(3)}")
    await runtime.create_topics()
    assert runtime.settings.inbound_partitions >= 12
    items = concerns(N_CONCERNS, seed=12)
    logs = [tmp_path / f"router-{i}.log" for i in range(2)]

    store = AuditStore(runtime.settings.audit_db)
    stop = asyncio.Event()
    ready = asyncio.Event()
    services = asyncio.create_task(
        runtime.run_services(stop, router=False, store=store, on_ready=ready.set)
    )
    routers_ready = [asyncio.Event() for _ in logs]
    routers = [
        asyncio.create_task(
            runtime.run_router_process(stop, routers_ready[i], instance=str(i), log_file=log)
        )
        for i, log in enumerate(logs)
    ]
    try:
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in routers_ready)), 60)
        # Both have joined and split the partitions before the work arrives.
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            shares = [_log_events(log, "router.assigned") for log in logs]
            latest = [set(s[-1]["partitions"]) if s else set() for s in shares]
            if all(latest) and not latest[0] & latest[1] and len(latest[0] | latest[1]) == 12:
                break
            assert asyncio.get_running_loop().time() < deadline, f"partitions not split: {latest}"
            await asyncio.sleep(0.2)
        await publish(runtime, items)
        acc = await wait_accounted(
            store, {c.concern_id for c in items}, timeout=240, service=services
        )
    finally:
        stop.set()
        await asyncio.gather(*routers, return_exceptions=True)
        await services
        store.close()

    assert len(acc.decided) == N_CONCERNS
    routed = [sum(int(e["inbound"]) for e in _log_events(log, "router.stopped")) for log in logs]
    assert all(n > 0 for n in routed), f"a router did no work: {routed}"
    assert sum(routed) == N_CONCERNS, f"routed {routed} for {N_CONCERNS} concerns"
    assert_delivered_exactly_once(runtime)
    await assert_topics_exactly_once(runtime)
    verify_store(runtime.settings.audit_db)
