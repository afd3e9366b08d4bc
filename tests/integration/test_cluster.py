"""Issue 10, point 5 and the cluster half of point 6: a 3-broker cluster that survives.

A real 3-node Apache Kafka cluster (KRaft, on loopback, its own folder) carries the
whole flow: topics with replication factor 3 and ``min.insync.replicas=2``, the
router (transactional), the audit feed, the deadline monitor and every recipient
adapter. Concerns are published as a stream of small waves. While they flow:

1. the broker that leads ``hips.audit`` is SIGKILLed, so leadership must move
   (the audit topic, and whatever else it led);
2. the stream goes on with one broker down (two in sync are enough for acks=all);
3. the broker is started again and rejoins the in-sync replicas of every partition.

Every service rides through the leader change on its own: none fails and needs its
supervisor to restart it. Then nothing is lost (every concern disclosed, withheld,
referred or quarantined, and audited), nothing is duplicated (no disclosure twice on
a recipient topic, no audit entry twice on ``hips.audit`` as read_committed readers
see it, no inbox holding a disclosure twice), every disclosure is received, and the
audit log verifies. Finally the whole cluster is stopped and started again: every
record is still there, and the services resume from their stored positions without
loss or repeat.

Timings are printed (run with ``-s`` to see them); nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters import Inbox
from audit import AuditStore, verify_store
from broker import (
    INTERNAL_TOPICS,
    ClusterHealth,
    Headers,
    Settings,
    audit_records_in,
    cluster_health,
    cluster_settings,
    loopback_cluster,
    wait_healthy,
)
from safer import Runtime
from schemas import ConcernModel

from .spine import REPO, account, concerns, publish, read_all, wait_accounted

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WAVE = 25
#: Concerns routed before the broker is killed, and while it is down.
BEFORE_KILL = 50
WHILE_DOWN = 75


def _cluster_runtime(data_dir: Path, bootstrap: str, prefix: str) -> Runtime:
    settings = cluster_settings(
        Settings(
            data_dir=data_dir,
            deploy_dir=REPO / "deploy",
            topic_prefix=prefix,
            bootstrap_servers=bootstrap,
        )
    )
    runtime = Runtime(settings, bootstrap)
    runtime.init_keys()
    return runtime


class Stream:
    """Publishes waves of concerns until stopped, remembering every concern it published."""

    def __init__(self, runtime: Runtime, pool: list[ConcernModel]) -> None:
        self._runtime = runtime
        self._pool = pool
        self.published: list[str] = []
        self.waves = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set() and len(self.published) < len(self._pool):
            wave = self._pool[len(self.published) : len(self.published) + WAVE]
            await publish(self._runtime, wave)  # acks=all: returns once replicated
            self.published += [c.concern_id for c in wave]
            self.waves += 1
            await asyncio.sleep(0.3)

    def stop(self) -> None:
        self._stop.set()


async def _until(
    what: str, check: Callable[[], Awaitable[bool]], *, timeout: float, watch: asyncio.Task[Any]
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if watch.done():
            watch.result()
            raise AssertionError(f"services stopped while waiting until {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        await asyncio.sleep(0.25)


async def _health(runtime: Runtime) -> ClusterHealth:
    return await cluster_health(runtime.bootstrap, [s.name for s in runtime.topic_specs()])


def _no_duplicates(runtime: Runtime, topics: dict[str, list[Any]]) -> tuple[int, int]:
    """Assert exactly-once on hips.audit and the recipient topics; return their counts."""
    t = runtime.settings.topics
    audit_entries: Counter[str] = Counter()
    audited_disclosures: set[str] = set()
    for record in topics[t.audit]:
        for entry in audit_records_in(runtime.codec, record.value):
            audit_entries[entry["entry_id"]] += 1
            if entry["event"] in ("DISCLOSED", "REFERRED"):
                audited_disclosures.add(entry["disclosure_id"])
    assert audit_entries and max(audit_entries.values()) == 1, "an audit entry is there twice"
    on_topics: Counter[str] = Counter()
    for name in t.all_recipient_topics():
        for record in topics[name]:
            on_topics[dict(record.headers)[Headers.DISCLOSURE_ID].decode()] += 1
    assert on_topics and max(on_topics.values()) == 1, "a disclosure is there twice"
    # Audit-first: every visible disclosure has its audit record, and none is missing.
    assert set(on_topics) == audited_disclosures
    return sum(audit_entries.values()), sum(on_topics.values())


def _check_stores(runtime: Runtime, expected: set[str]) -> None:
    """Every concern accounted for, every disclosure received once, the log verifying."""
    audited: dict[str, set[str]] = {}
    with AuditStore(runtime.settings.audit_db) as store:
        acc = account(store)
        for record in store.records():
            if record.event.value in ("DISCLOSED", "REFERRED") and record.recipient:
                audited.setdefault(record.recipient, set()).add(record.disclosure_id or "")
        entry_ids = [r.entry_id for r in store.records()]
    assert expected <= set(acc.decided), f"{len(expected - set(acc.decided))} concerns lost"
    assert acc.delivered and acc.delivered <= acc.received, "a disclosure was not received"
    assert len(entry_ids) == len(set(entry_ids)), "duplicate entries in the audit store"
    for recipient in runtime.deployment.directory.recipients:
        with Inbox(runtime.inbox_path(recipient.id)) as inbox:
            ids = inbox.disclosure_ids()
        assert len(ids) == len(set(ids)), f"inbox {recipient.id} holds a disclosure twice"
        assert set(ids) == audited.get(recipient.id, set())
    verify_store(runtime.settings.audit_db)


async def test_cluster_survives_losing_a_broker_and_a_full_restart(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    test_started = time.monotonic()
    # The cluster exactly as `safer cluster up` runs it.
    kafka = loopback_cluster(tmp_path / "cluster", deploy_dir=REPO / "deploy")
    started = time.monotonic()
    await asyncio.to_thread(kafka.start)
    timings["cluster start (format + 3 nodes)"] = time.monotonic() - started
    try:
        prefix = f"cl{secrets.token_hex(3)}"
        runtime = _cluster_runtime(tmp_path / "data", kafka.bootstrap_servers, prefix)
        await runtime.create_topics()
        topics = runtime.settings.topics

        # Every topic as planned: 3 copies, min.insync.replicas 2, all in sync.
        health = await wait_healthy(
            runtime.bootstrap, [s.name for s in runtime.topic_specs()], timeout=60
        )
        assert [b.node_id for b in health.brokers] == [1, 2, 3]
        assert health.healthy, health.to_json()
        assert {p.replicas for p in health.partitions} == {(1, 2, 3)}
        assert {p.min_insync_replicas for p in health.partitions} == {2}
        assert len(health.topic(topics.inbound("police"))) == 12

        pool = concerns(2000, seed=31)  # more than the stream can publish meanwhile
        store = AuditStore(runtime.settings.audit_db)
        stop = asyncio.Event()
        ready = asyncio.Event()
        services = asyncio.create_task(runtime.run_services(stop, store=store, on_ready=ready.set))
        stream = Stream(runtime, pool)
        streaming: asyncio.Task[None] | None = None
        logs = capture_logs()
        events = logs.__enter__()
        try:
            t0 = time.monotonic()
            await asyncio.wait_for(ready.wait(), 120)
            timings["services ready"] = time.monotonic() - t0
            streaming = asyncio.create_task(stream.run())
            flow_started = time.monotonic()

            async def decided_at_least(n: int) -> bool:
                if streaming is not None and streaming.done():
                    streaming.result()
                return len(account(store).decided) >= n

            await _until(
                f"{BEFORE_KILL} concerns routed",
                lambda: decided_at_least(BEFORE_KILL),
                timeout=120,
                watch=services,
            )

            # 1. SIGKILL the broker that leads hips.audit, mid-stream.
            before_kill = await _health(runtime)
            # Kafka's own offsets and transaction topics exist now, replicated alike.
            assert set(INTERNAL_TOPICS) <= {p.topic for p in before_kill.partitions}
            assert before_kill.healthy, before_kill.to_json()
            assert {p.replicas for p in before_kill.partitions} == {(1, 2, 3)}
            assert {p.min_insync_replicas for p in before_kill.partitions} == {2}
            victim = before_kill.leader_of(topics.audit)
            led = len(before_kill.led_by(victim))
            decided_at_kill = len(account(store).decided)
            waves_at_kill = stream.waves
            killed = time.monotonic()
            kafka.kill_node(victim)
            assert kafka.pids()[victim] is None
            timings["kill -9 of one broker"] = time.monotonic() - killed

            # Leadership moves to the survivors; the victim drops out of every ISR.
            async def leadership_moved() -> bool:
                h = await _health(runtime)
                return all(p.leader not in (victim, -1) for p in h.partitions) and not any(
                    victim in p.isr for p in h.partitions
                )

            await _until(
                "leadership moved off the killed broker",
                leadership_moved,
                timeout=60,
                watch=services,
            )
            timings["leaders moved off the killed broker"] = time.monotonic() - killed
            down = await _health(runtime)
            assert down.leader_of(topics.audit) != victim
            # Two in sync of three: every partition still takes acks=all writes.
            assert all(len(p.isr) == 2 for p in down.partitions)

            # 2. The stream goes on, and the services keep routing, with a broker down.
            await _until(
                f"{WHILE_DOWN} more concerns routed with broker {victim} down",
                lambda: decided_at_least(decided_at_kill + WHILE_DOWN),
                timeout=180,
                watch=services,
            )
            decided_while_down = len(account(store).decided) - decided_at_kill
            waves_while_down = stream.waves - waves_at_kill

            # 3. Bring it back; it catches up and rejoins every ISR.
            restarted = time.monotonic()
            await asyncio.to_thread(kafka.start_node, victim)
            timings["restart of the killed broker"] = time.monotonic() - restarted

            async def back_in_sync() -> bool:
                h = await _health(runtime)
                return h.healthy and not h.not_in_sync(victim)

            await _until(
                "the restarted broker is back in every ISR",
                back_in_sync,
                timeout=120,
                watch=services,
            )
            timings["restarted broker back in every ISR"] = time.monotonic() - restarted
            waves_at_restart = stream.waves

            async def two_more_waves() -> bool:
                await decided_at_least(0)  # surfaces a failed stream
                return stream.waves >= waves_at_restart + 2

            await _until(
                "two more waves published after the restart",
                two_more_waves,
                timeout=120,
                watch=services,
            )
            stream.stop()
            await streaming
            expected = set(stream.published)
            await wait_accounted(store, expected, timeout=240, service=services)
            timings["streamed and accounted"] = time.monotonic() - flow_started
        finally:
            stream.stop()
            if streaming is not None and not streaming.done():
                streaming.cancel()
            stop.set()
            await services
            store.close()
            logs.__exit__(None, None, None)
        # Every service rode through the leader change on its own (the client retries on
        # the new leaders): none failed and had to be restarted by its supervisor.
        seen = Counter(str(e["event"]) for e in events)
        assert seen["service.crashed"] == 0, [e for e in events if e["event"] == "service.crashed"]
        timings["routing transactions retried"] = seen["router.transaction_retry"]

        rejoined = await _health(runtime)
        assert rejoined.healthy, rejoined.to_json()
        assert all(victim in p.isr for p in rejoined.partitions)
        assert decided_while_down >= WHILE_DOWN and waves_while_down > 0

        # Nothing lost, nothing duplicated, every disclosure received, the log verifies.
        _check_stores(runtime, expected)
        names = [topics.audit, *topics.all_recipient_topics()]
        before = _no_duplicates(runtime, await read_all(runtime, names))

        # Restart safety: stop the whole cluster and start it again; nothing is lost.
        stopped = time.monotonic()
        await asyncio.to_thread(kafka.stop)
        timings["stop of the whole cluster"] = time.monotonic() - stopped
        assert set(kafka.pids().values()) == {None}
        restarted = time.monotonic()
        await asyncio.to_thread(kafka.start)
        timings["restart of the whole cluster"] = time.monotonic() - restarted
        assert _no_duplicates(runtime, await read_all(runtime, names)) == before

        # The services resume from their stored positions: new concerns flow, old ones
        # are not routed, delivered or audited again.
        t0 = time.monotonic()
        runtime = _cluster_runtime(tmp_path / "data", kafka.bootstrap_servers, prefix)
        last = pool[len(expected) : len(expected) + WAVE]
        store = AuditStore(runtime.settings.audit_db)
        stop = asyncio.Event()
        ready = asyncio.Event()
        services = asyncio.create_task(runtime.run_services(stop, store=store, on_ready=ready.set))
        try:
            await asyncio.wait_for(ready.wait(), 120)
            await publish(runtime, last)
            expected |= {c.concern_id for c in last}
            await wait_accounted(store, expected, timeout=120, service=services)
        finally:
            stop.set()
            await services
            store.close()
        timings["second run after the full restart"] = time.monotonic() - t0
        _check_stores(runtime, expected)
        after = _no_duplicates(runtime, await read_all(runtime, names))
        assert after[0] > before[0] and after[1] >= before[1]
    finally:
        await asyncio.to_thread(kafka.stop)

    timings["whole test"] = time.monotonic() - test_started
    timings["partitions the killed broker led"] = led
    timings["concerns streamed"] = len(expected)
    timings["waves"] = stream.waves + 1
    print()
    counts = ("concerns streamed", "waves", "partitions the killed broker led")
    for what, value in timings.items():
        if what in counts or "retried" in what:
            print(f"  {what}: {value:.0f}")
        else:
            print(f"  {what}: {value:.1f} s")
