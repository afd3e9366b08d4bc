"""No poison record, replay detection and a quarantine you can work (issue 11).

On the session's real Apache Kafka, with the real router, audit feed and
recipients:

* a record over a hop's size limit is stopped at the first hop it cannot pass,
  and one the router cannot route is quarantined as a bounded copy, within a
  batch, while valid concerns behind it are routed;
* a record whose outputs the broker refuses for good (here: a recipient topic
  whose ``max.message.bytes`` is too small) is isolated and quarantined as
  UNPRODUCIBLE, and the rest of its batch is routed;
* an exact replay is recorded once as REPLAYED and produces nothing; a
  different body under a used ``concern_id`` is a CONCERN_ID_CONFLICT;
* a record quarantined for an unknown publisher is routed by
  `safer quarantine replay` once the directory is fixed, the replay is
  audited, and replaying it again is harmless.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from adapters import PoliceAdapter
from audit import AuditStore, verify_store
from broker import SIZE_LIMITS, Headers, OutRecord, Settings, make_producer, read_topic, send_all
from safer import Runtime
from schemas import AgencyType, ConcernModel

from .spine import REPO, concerns, make_runtime, publish

pytestmark = pytest.mark.kafka


def _events(store: AuditStore) -> Counter[tuple[str, str | None]]:
    return Counter((r.event.value, r.concern_id) for r in store.records())


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)


async def _run(runtime: Runtime, store: AuditStore) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(runtime.run_services(stop, store=store, on_ready=ready.set))
    await asyncio.wait_for(ready.wait(), 90)
    return stop, task


def _decided(store: AuditStore, concern_id: str) -> set[str]:
    return {r.event.value for r in store.records(concern_id=concern_id)}


async def test_oversize_records_never_stall_the_router(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"big{secrets.token_hex(3)}")
    await runtime.create_topics()
    inbound = runtime.settings.topics.inbound("police")
    # First hop: a 5 MB record is refused by the producer and by the broker itself.
    with pytest.raises(KafkaError):
        producer = make_producer(kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(inbound, b"\0" * 5_000_000)
        finally:
            await producer.stop()
    raw = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=8_000_000)
    await raw.start()
    try:
        with pytest.raises(KafkaError):
            await raw.send_and_wait(inbound, b"\0" * 5_000_000)
    finally:
        await raw.stop()

    # Past the first hop: a record over the router's 1 MiB limit, then valid concerns.
    items = concerns(30, seed=41)
    police = runtime.police_adapter()
    big = police.prepare(items[0].model_copy(update={"concern_id": str(uuid.uuid4())}))
    oversize = OutRecord(
        inbound,
        big.key,
        big.value + b"\0" * (SIZE_LIMITS.inbound_value_bytes + 1000 - len(big.value)),
        big.headers,
    )
    assert SIZE_LIMITS.inbound_value_bytes < len(oversize.value) < SIZE_LIMITS.message_bytes
    store = AuditStore(runtime.settings.audit_db)
    stop, services = await _run(runtime, store)
    try:
        producer = make_producer(kafka_bootstrap)
        await producer.start()
        try:
            await send_all(producer, [oversize])
        finally:
            await producer.stop()
        await publish(runtime, items)
        expected = {c.concern_id for c in items}
        await _until(
            lambda: (
                expected
                <= {r.concern_id for r in store.records(event="DISCLOSED")}
                | {r.concern_id for r in store.records(event="WITHHELD")}
            ),
            120,
            "the valid concerns behind the oversize record",
        )
        big_id = dict(big.headers)[Headers.CONCERN_ID].decode()
        await _until(lambda: "QUARANTINED" in _decided(store, big_id), 30, "the quarantine")
    finally:
        stop.set()
        await services
        store.close()
    (quarantined,) = [
        runtime.codec.decode(r.value, expect="quarantine").record
        for r in await read_topic(kafka_bootstrap, runtime.settings.topics.quarantine)
    ]
    assert quarantined["reason_code"] == "TOO_LARGE"
    assert quarantined["original_truncated"] is True and quarantined["original_value"] == b""
    assert quarantined["original_size"] == len(oversize.value)
    verify_store(runtime.settings.audit_db)


async def test_a_record_the_broker_refuses_is_isolated_and_the_rest_routed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"iso{secrets.token_hex(3)}")
    await runtime.create_topics()
    # A deliberately broken hop: every health topic refuses records over 200 bytes.
    health = [
        runtime.settings.topics.disclosures(s.lscp, AgencyType.HEALTH)
        for s in runtime.deployment.directory.recipients
        if s.agency_type is AgencyType.HEALTH
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": "200"})
                for t in health
            ]
        )
    finally:
        await admin.close()
    items = concerns(40, seed=43)
    store = AuditStore(runtime.settings.audit_db)
    stop, services = await _run(runtime, store)
    try:
        await publish(runtime, items)
        expected = {c.concern_id for c in items}
        decisions = {"DISCLOSED", "WITHHELD", "REFERRED", "QUARANTINED"}
        await _until(
            lambda: (
                expected <= {r.concern_id for r in store.records() if r.event.value in decisions}
            ),
            180,
            "every concern decided or quarantined",
        )
    finally:
        stop.set()
        await services
        store.close()
    with AuditStore(runtime.settings.audit_db) as reopened:
        unproducible = {
            r.concern_id
            for r in reopened.records(event="QUARANTINED")
            if "UNPRODUCIBLE" in r.reason_codes
        }
        disclosed = {r.concern_id for r in reopened.records(event="DISCLOSED")}
    assert unproducible, "concerns with a health disclosure must be quarantined"
    assert disclosed - unproducible, "the rest of each batch must still be routed"
    # Nothing about an isolated concern leaked onto another topic: its batch-mates only.
    for topic in runtime.settings.topics.all_recipient_topics():
        for record in await read_topic(kafka_bootstrap, topic):
            assert dict(record.headers)[Headers.DISCLOSURE_ID]
            decoded = runtime.codec.decode(record.value, expect="disclosure").record
            assert decoded["concern_id"] not in unproducible
    verify_store(runtime.settings.audit_db)


async def test_replays_are_recorded_once_and_conflicts_quarantined(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"rep{secrets.token_hex(3)}")
    await runtime.create_topics()
    items = concerns(10, seed=47)
    police = runtime.police_adapter()
    first = police.prepare(items[0])
    changed = police.prepare(items[0].model_copy(update={"narrative": "A different account."}))
    store = AuditStore(runtime.settings.audit_db)
    stop, services = await _run(runtime, store)
    try:
        await publish(runtime, items)
        cid = items[0].concern_id
        await _until(
            lambda: "DISCLOSED" in _decided(store, cid) or "WITHHELD" in _decided(store, cid),
            60,
            "routing",
        )
        outputs_before = {
            t: len(await read_topic(kafka_bootstrap, t))
            for t in runtime.settings.topics.all_recipient_topics()
        }
        producer = make_producer(kafka_bootstrap)
        await producer.start()
        try:
            await send_all(producer, [first, first])  # an exact replay, twice
            await send_all(producer, [changed])  # a different body, same concern_id
        finally:
            await producer.stop()
        await _until(lambda: "QUARANTINED" in _decided(store, cid), 60, "the conflict")
        await _until(lambda: "REPLAYED" in _decided(store, cid), 60, "the replay")
    finally:
        stop.set()
        await services
        store.close()
    with AuditStore(runtime.settings.audit_db) as reopened:
        events = _events(reopened)
        conflict = [r for r in reopened.records(event="QUARANTINED") if r.concern_id == cid]
    assert events[("REPLAYED", cid)] == 1, "two exact replays are recorded once"
    assert [r.reason_codes for r in conflict] == [("CONCERN_ID_CONFLICT",)]
    outputs_after = {
        t: len(await read_topic(kafka_bootstrap, t))
        for t in runtime.settings.topics.all_recipient_topics()
    }
    assert outputs_after == outputs_before, "a replay produced something new"


def _safer(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safer", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_quarantine_replay_after_a_directory_fix(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"qr{secrets.token_hex(3)}"
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=prefix)
    await runtime.create_topics()
    # A new force starts publishing before the partnership has added it to the directory.
    newcomer = "test-constabulary"
    runtime.keys.init_agency(newcomer)
    sample = concerns(1, seed=53)[0]
    concern = ConcernModel.model_validate(
        {**sample.model_dump(mode="json"), "source_agency": newcomer}
    )
    adapter = PoliceAdapter(
        codec=runtime.codec,
        identity=runtime.keys.signing_identity(newcomer),
        pseudonym_secret=runtime.keys.pseudonym_secret(),
        topic=runtime.settings.topics.inbound("police"),
    )
    store = AuditStore(runtime.settings.audit_db)
    stop, services = await _run(runtime, store)
    try:
        producer = make_producer(kafka_bootstrap)
        await producer.start()
        try:
            await send_all(producer, [adapter.prepare(concern)])
        finally:
            await producer.stop()
        await _until(lambda: "QUARANTINED" in _decided(store, concern.concern_id), 60, "quarantine")
    finally:
        stop.set()
        await services
        store.close()

    env = {k: v for k, v in os.environ.items()}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SAFER_TOPIC_PREFIX=prefix,
        SAFER_DATA_DIR=str(runtime.settings.data_dir),
        SAFER_DEPLOY_DIR=str(REPO / "deploy"),
    )
    listed = _safer(
        "quarantine", "list", "--code", "UNKNOWN_PUBLISHER", "--json", env=env, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    (item,) = json.loads(listed.stdout)
    assert item["concern_id"] == concern.concern_id and item["replays"] == 0
    for needle in (sample.subjects[0].family_name, sample.subjects[0].given_name):
        assert needle not in listed.stdout + listed.stderr

    # The fix: the partnership adds the new force to the directory.
    deploy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", deploy)
    with (deploy / "directory.toml").open("a") as directory:
        directory.write(
            f'\n[[publisher]]\nid = "{newcomer}"\nagency_type = "police"\n'
            'name = "Test Constabulary"\ncontact = "ppn@test.example.uk"\n'
        )
    env["SAFER_DEPLOY_DIR"] = str(deploy)
    fixed = Runtime(
        Settings(
            data_dir=runtime.settings.data_dir,
            deploy_dir=deploy,
            topic_prefix=prefix,
            bootstrap_servers=kafka_bootstrap,
        ),
        kafka_bootstrap,
    )
    store = AuditStore(runtime.settings.audit_db)
    stop, services = await _run(fixed, store)
    try:
        dry = _safer(
            "quarantine", "replay", item["quarantine_id"][:10], "--dry-run", env=env, cwd=tmp_path
        )
        assert dry.returncode == 0 and "WOULD REPLAY" in dry.stdout, dry.stderr
        replayed = _safer("quarantine", "replay", item["quarantine_id"][:10], env=env, cwd=tmp_path)
        assert replayed.returncode == 0, replayed.stderr
        await _until(
            lambda: {"DISCLOSED", "QUARANTINE_REPLAYED"} <= _decided(store, concern.concern_id),
            60,
            "the replayed concern to be routed",
        )
        again = _safer("quarantine", "replay", item["quarantine_id"][:10], env=env, cwd=tmp_path)
        assert again.returncode == 0 and "harmless" in again.stdout
        await _until(lambda: "REPLAYED" in _decided(store, concern.concern_id), 60, "the second")
    finally:
        stop.set()
        await services
        store.close()
    with AuditStore(runtime.settings.audit_db) as reopened:
        events = _events(reopened)
        disclosed = [r.disclosure_id for r in reopened.records(event="DISCLOSED")]
    assert events[("QUARANTINE_REPLAYED", concern.concern_id)] == 2
    assert events[("REPLAYED", concern.concern_id)] == 1
    assert len(disclosed) == len(set(disclosed)), "the second replay disclosed again"
    verify_store(runtime.settings.audit_db)
