"""SIGKILL the router mid-stream; nothing is lost or duplicated, on any topic.

The router runs as a real `safer route` process. It is killed with SIGKILL at a
random point while routing 2,000 concerns, then restarted with the same
consumer group and instance (so the same transactional id: the new producer
aborts whatever the killed one left open). Afterwards every concern is
accounted for, and, read as every SAFER reader reads them (read_committed), no
recipient topic holds a disclosure twice, hips.audit holds no audit record
twice, no inbox holds a disclosure twice, and the audit log verifies.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from audit import AuditStore, verify_store
from safer import Runtime

from .spine import (
    REPO,
    account,
    assert_delivered_exactly_once,
    assert_topics_exactly_once,
    concerns,
    make_runtime,
    publish,
    wait_accounted,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N_CONCERNS = 2000


def _start_router(runtime: Runtime, group_id: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=runtime.bootstrap,
        SAFER_TOPIC_PREFIX=runtime.settings.topic_prefix,
        SAFER_DATA_DIR=str(runtime.settings.data_dir),
        SAFER_DEPLOY_DIR=str(REPO / "deploy"),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safer",
            "--log-file",
            str(log),
            "route",
            "--group-id",
            group_id,
            "--instance",
            "0",  # the restart keeps it: same transactional id, predecessor fenced
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_router_killed_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"crash{secrets.token_hex(3)}")
    await runtime.create_topics()
    items = concerns(N_CONCERNS, seed=5)
    expected = {c.concern_id for c in items}
    group_id = f"router-{secrets.token_hex(3)}"
    kill_after = random.Random().randint(N_CONCERNS // 10, N_CONCERNS // 2)

    store = AuditStore(runtime.settings.audit_db)
    stop = asyncio.Event()
    ready = asyncio.Event()
    services = asyncio.create_task(
        runtime.run_services(stop, router=False, store=store, on_ready=ready.set)
    )
    routers: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.wait_for(ready.wait(), 60)
        routers.append(_start_router(runtime, group_id, tmp_path / "router-1.log"))
        await publish(runtime, items)

        while len(account(store).decided) < kill_after:
            assert routers[0].poll() is None, "router exited on its own"
            await asyncio.sleep(0.02)
        routers[0].send_signal(signal.SIGKILL)
        routers[0].wait()
        decided_at_kill = len(account(store).decided)
        assert decided_at_kill < N_CONCERNS, "the kill came too late to test anything"

        routers.append(_start_router(runtime, group_id, tmp_path / "router-2.log"))
        acc = await wait_accounted(store, expected, timeout=300, service=services)
    finally:
        for proc in routers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        stop.set()
        await services
        store.close()

    assert routers[1].returncode == 0, "restarted router did not shut down cleanly"
    assert expected <= set(acc.decided)

    assert_delivered_exactly_once(runtime)
    await assert_topics_exactly_once(runtime)
    verify_store(runtime.settings.audit_db)
