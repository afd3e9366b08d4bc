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
from collections import Counter
from pathlib import Path

import pytest

from adapters import Inbox
from audit import AuditStore, verify_store
from broker import Headers, audit_records_in
from safer import Runtime

from .spine import REPO, account, concerns, make_runtime, publish, read_all, wait_accounted

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

    # No inbox holds a disclosure twice, and each holds exactly what was audited for it.
    audited: dict[str, set[str]] = {}
    with AuditStore(runtime.settings.audit_db) as reopened:
        for record in reopened.records():
            if record.event.value in ("DISCLOSED", "REFERRED") and record.recipient:
                audited.setdefault(record.recipient, set()).add(record.disclosure_id or "")
        entry_ids = [r.entry_id for r in reopened.records()]
    assert len(entry_ids) == len(set(entry_ids)), "duplicate audit entries"
    for recipient in runtime.deployment.directory.recipients:
        with Inbox(runtime.inbox_path(recipient.id)) as inbox:
            ids = inbox.disclosure_ids()
            assert len(ids) == len(set(ids))
            assert set(ids) == audited.get(recipient.id, set())

    # Exactly once on the topics themselves, as read_committed readers see them.
    t = runtime.settings.topics
    topics = await read_all(runtime, [t.audit, *t.all_recipient_topics()])
    audit_keys: Counter[tuple[str, str]] = Counter()
    disclosed: set[str] = set()
    for record in topics[t.audit]:
        for entry in audit_records_in(runtime.codec, record.value):
            audit_keys[(entry["event"], entry["entry_id"])] += 1
            if entry["event"] in ("DISCLOSED", "REFERRED"):
                disclosed.add(entry["disclosure_id"])
    assert audit_keys and max(audit_keys.values()) == 1, "an audit record is on hips.audit twice"
    on_topics: Counter[str] = Counter()
    for name in t.all_recipient_topics():
        for record in topics[name]:
            on_topics[dict(record.headers)[Headers.DISCLOSURE_ID].decode()] += 1
    assert on_topics and max(on_topics.values()) == 1, "a disclosure is on a recipient topic twice"
    # Audit-first: every visible disclosure has its audit record, and nothing is missing.
    assert set(on_topics) == disclosed
    assert len(on_topics) == sum(len(v) for v in audited.values())

    verify_store(runtime.settings.audit_db)
