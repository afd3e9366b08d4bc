"""Key rotation and revocation on the real broker (issue 15.1).

One router (with the audit feed) runs on a local Apache Kafka while keys change under it:

* Rotation: the running router was built knowing only the police's old key. After
  `rotate_key` and its events on hips.keys, a concern signed with the new key is routed
  (the router learned it from the topic) and one signed with the old key still is (the
  overlap).
* Revocation within a second: after the old key's revocation is published, probes signed
  with it go out every 100 ms; every probe sent 1 s or more after the revocation is
  quarantined as KEY_REVOKED, and the first quarantine's own decision time is within 1 s of
  the publication.
* Decision replay: `policy explain --replay` reads the signed concern back from its inbound
  topic and reproduces the logged input hash.
* Recipients: after the router's key is revoked, the front doors (following hips.keys in
  `run_services`) refuse what it still signs (KEY_REVOKED), storing nothing.
* Onboarding: `onboard_check` passes every check, the broker's included, for a recipient.
* Restarts: a router started afresh (new process state) quarantines the revoked key and
  routes the new one. KEY_ROTATED and KEY_REVOKED are in the audit log.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters import Inbox, PoliceAdapter, synthetic_concerns
from audit import AuditStore
from broker import make_producer, send_all
from safer import Runtime
from safer._cli_keys import publish_key_events, revoke_key, rotate_key
from safer._cli_onboard import onboard_check
from safer._cli_replay import replay_disclosure
from schemas import AuditEvent, ConcernModel

from .spine import make_runtime

pytestmark = pytest.mark.kafka


def _concerns(n: int) -> list[ConcernModel]:
    now = datetime.now(UTC)
    items = [ConcernModel.model_validate(d) for d in synthetic_concerns(n, seed=41, now=now)]
    return [c.model_copy(update={"concern_id": str(uuid.uuid4())}) for c in items]


async def _start(runtime: Runtime) -> tuple[AuditStore, asyncio.Event, asyncio.Task[None]]:
    store = AuditStore(runtime.settings.audit_db)
    stop, ready = asyncio.Event(), asyncio.Event()
    services = asyncio.create_task(
        runtime.run_services(stop, store=store, recipients=[], monitor=False, on_ready=ready.set)
    )
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([waiter, services], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if services.done():
        services.result()
    assert ready.is_set(), "services did not become ready"
    return store, stop, services


async def _stop(store: AuditStore, stop: asyncio.Event, services: asyncio.Task[None]) -> None:
    stop.set()
    await services
    store.close()


async def _outcomes(store: AuditStore, ids: set[str], timeout: float = 30) -> dict[str, Any]:
    """concern id -> (set of events, quarantine codes, first decision time)."""
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[str, Any] = {}
        for record in store.records():
            if record.concern_id in ids and record.event in (
                AuditEvent.DISCLOSED,
                AuditEvent.WITHHELD,
                AuditEvent.REFERRED,
                AuditEvent.QUARANTINED,
            ):
                events, codes, at = seen.get(record.concern_id, (set(), set(), record.at))
                events.add(record.event.value)
                codes.update(record.reason_codes)
                seen[record.concern_id] = (events, codes, min(at, record.at))
        if set(seen) >= ids or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def _send(runtime: Runtime, adapter: PoliceAdapter, items: list[ConcernModel]) -> None:
    producer = make_producer(runtime.bootstrap)
    await producer.start()
    try:
        await send_all(producer, [adapter.prepare(c) for c in items])
    finally:
        await producer.stop()


def _routed(outcome: Any) -> bool:
    return "QUARANTINED" not in outcome[0]


def _revoked(outcome: Any) -> bool:
    return outcome[0] == {"QUARANTINED"} and "KEY_REVOKED" in outcome[1]


async def test_rotation_overlap_revocation_within_a_second_and_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"kt{secrets.token_hex(3)}")
    await runtime.create_topics()
    # Onboarding on the real broker: the topics check sees the agency's topics (15.2).
    checks = await asyncio.to_thread(onboard_check, runtime, "portsmouth-csc")
    assert [c.name for c in checks if c.ok is not True] == [], checks
    old_police = runtime.police_adapter()  # signs with the key that will be rotated out
    store, stop, services = await _start(runtime)
    try:
        now = datetime.now(UTC)
        old, new, _, events = rotate_key(
            runtime, "hampshire-constabulary", overlap=timedelta(hours=1), actor="ops", now=now
        )
        await publish_key_events(runtime, events)
        new_police = Runtime(runtime.settings, runtime.bootstrap).police_adapter()
        by_new, by_old = _concerns(2)
        await asyncio.sleep(0.5)  # one poll of hips.keys
        await _send(runtime, new_police, [by_new])
        await _send(runtime, old_police, [by_old])
        seen = await _outcomes(store, {by_new.concern_id, by_old.concern_id})
        assert _routed(seen[by_new.concern_id]), "the running router did not learn the new key"
        assert _routed(seen[by_old.concern_id]), "the old key stopped before its retirement"
        # Decision replay (15.4) from the stored concern: the signed original on its topic.
        decided = next(
            r
            for r in store.records(concern_id=by_new.concern_id)
            if r.event in (AuditEvent.DISCLOSED, AuditEvent.REFERRED, AuditEvent.WITHHELD)
        )
        assert decided.disclosure_id is not None
        replay = await asyncio.to_thread(replay_disclosure, runtime, decided.disclosure_id, None)
        assert replay.matches, replay.to_json()

        _, revocation = revoke_key(
            runtime, old, reason="compromised", actor="ops", now=datetime.now(UTC)
        )
        await publish_key_events(runtime, [revocation])
        published = time.time()
        probes: list[tuple[float, ConcernModel]] = []
        for item in _concerns(15):
            probes.append((time.time(), item))
            await _send(runtime, old_police, [item])
            await asyncio.sleep(0.1)
        seen = await _outcomes(store, {c.concern_id for _, c in probes})
        late = [c for sent, c in probes if sent - published >= 1.0]
        assert late, "the probes did not run long enough"
        assert all(_revoked(seen[c.concern_id]) for c in late), "revocation took over 1 s"
        first = min(seen[c.concern_id][2] for _, c in probes if _revoked(seen[c.concern_id]))
        assert first.timestamp() - published < 1.0
    finally:
        await _stop(store, stop, services)

    restarted = Runtime(runtime.settings, runtime.bootstrap)
    store, stop, services = await _start(restarted)
    try:
        by_old, by_new = _concerns(2)
        await _send(restarted, old_police, [by_old])
        await _send(restarted, restarted.police_adapter(), [by_new])
        seen = await _outcomes(store, {by_old.concern_id, by_new.concern_id})
        assert _revoked(seen[by_old.concern_id])
        assert _routed(seen[by_new.concern_id])
        rotated = list(store.records(event=AuditEvent.KEY_ROTATED))
        revoked = list(store.records(event=AuditEvent.KEY_REVOKED))
        assert [r.credential for r in rotated] == [new]
        assert [r.credential for r in revoked] == [old]
    finally:
        await _stop(store, stop, services)


async def test_recipients_refuse_disclosures_signed_with_a_revoked_router_key(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The recipients in `safer up` follow hips.keys: once the router's key is revoked,
    what it still signs with it is refused (KEY_REVOKED in the inbox's rejections)."""
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"kr{secrets.token_hex(3)}")
    await runtime.create_topics()
    doors = [r for r in runtime.deployment.directory.recipients if r.front_door]
    store = AuditStore(runtime.settings.audit_db)
    stop, ready = asyncio.Event(), asyncio.Event()
    services = asyncio.create_task(
        runtime.run_services(stop, store=store, recipients=doors, monitor=False, on_ready=ready.set)
    )
    police = runtime.police_adapter()

    def inboxes() -> tuple[int, list[str]]:
        held, codes = 0, []
        for door in doors:
            path = runtime.inbox_path(door.id)
            if path.exists():
                with Inbox(path) as inbox:
                    held += inbox.count()
                    codes += [r.reason_code for r in inbox.rejections()]
        return held, codes

    async def until(check: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if check() or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.2)

    try:
        await asyncio.wait_for(ready.wait(), 60)
        await _send(runtime, police, _concerns(3))
        await until(lambda: inboxes()[0] > 0)
        held, codes = inboxes()
        assert held > 0 and codes == []
        router_kid = runtime.keys.signing_key_id("safer-router")
        _, event = revoke_key(
            runtime, router_kid, reason="compromised", actor="ops", now=datetime.now(UTC)
        )
        await publish_key_events(runtime, [event])
        await asyncio.sleep(1.0)
        await _send(runtime, police, _concerns(3))
        await until(lambda: "KEY_REVOKED" in inboxes()[1])
        after, codes = inboxes()
        assert "KEY_REVOKED" in codes, "a recipient accepted a revoked router key"
        assert after == held, "a disclosure signed with the revoked key was stored"
    finally:
        stop.set()
        await services
        store.close()
