"""The router keeps exactly-once when a second router joins mid-stream.

``Router(pipelined=True)`` (issue 12) plans batch N+1 while batch N's
transaction is in flight; the default router plans one batch at a time. With
small batches, a second router joins the group mid-stream, so partitions are
revoked while batches are planned or committing: a batch fetched before the
revoke must be dropped, not committed with offsets its router no longer owns,
and a batch dropped with it but fetched after the new assignment must be read
again (this failed, one batch lost, before the router told the two apart).
Afterwards every concern is decided, nothing is on any topic or in any inbox
twice, and the audit log verifies.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

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

N_CONCERNS = 600


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "one-batch-at-a-time"])
async def test_the_router_stays_exactly_once_when_a_second_joins_mid_stream(
    kafka_bootstrap: str, tmp_path: Path, pipelined: bool
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"pl{secrets.token_hex(3)}")
    await runtime.create_topics()
    items = concerns(N_CONCERNS, seed=21)
    group = f"pl-{secrets.token_hex(3)}"
    routers = [
        runtime.router(group_id=group, instance=str(i), batch_size=25, pipelined=pipelined)
        for i in range(2)
    ]

    store = AuditStore(runtime.settings.audit_db)
    stop = asyncio.Event()
    ready = asyncio.Event()
    services = asyncio.create_task(
        runtime.run_services(stop, router=False, store=store, on_ready=ready.set)
    )
    first_ready = asyncio.Event()
    tasks = [asyncio.create_task(routers[0].run(stop, first_ready))]
    try:
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.wait_for(first_ready.wait(), 60)
        await publish(runtime, items)
        # The second joins while the first is mid-stream: a rebalance under load.
        deadline = asyncio.get_running_loop().time() + 120
        while routers[0].totals["inbound"] < N_CONCERNS // 4:
            assert asyncio.get_running_loop().time() < deadline, "the first router is stuck"
            assert not tasks[0].done(), "the first router stopped"
            await asyncio.sleep(0.05)
        assert routers[0].totals["inbound"] < N_CONCERNS, "no work was left to share"
        tasks.append(asyncio.create_task(routers[1].run(stop)))
        acc = await wait_accounted(
            store, {c.concern_id for c in items}, timeout=240, service=services
        )
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await services
        store.close()

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert len(acc.decided) == N_CONCERNS
    assert routers[1].totals["inbound"] > 0, "the second router did no work"
    assert_delivered_exactly_once(runtime)
    await assert_topics_exactly_once(runtime)
    verify_store(runtime.settings.audit_db)
