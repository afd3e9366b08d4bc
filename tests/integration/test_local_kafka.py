"""The local Apache Kafka engine (issue 10, points 1, 2 and 6): real JVMs, real data.

Each test runs its own node in its own folder (the session's shared node is not
restarted or killed): a restart keeps every topic and record on the same port,
a killed node is brought back by the watchdog, a node never outlives the process
that started it, broker auto-creation is off, and a stored position that no
longer exists is a loud POSITION_LOST, never a silent jump.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from broker import (
    LocalKafka,
    assign_stored,
    fetch,
    make_consumer,
    make_producer,
    read_topic,
)
from schemas import BrokerError, ReasonCode

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


async def _create(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


def test_a_restart_keeps_every_topic_and_record_on_the_same_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relative home, as the default data dir `.safer` is: each node runs in its
    # own folder, so the paths it is given must not depend on the caller's cwd.
    monkeypatch.chdir(tmp_path)
    kafka = LocalKafka(Path("kafka"), deploy_dir=REPO / "deploy")
    with kafka:
        first = kafka.bootstrap_servers
        asyncio.run(_create(first, "kept", partitions=3))
        asyncio.run(_produce(first, "kept", [b"one", b"two", b"three"]))
    assert kafka.pids() == {1: None}
    with LocalKafka(Path("kafka"), deploy_dir=REPO / "deploy") as again:
        assert again.bootstrap_servers == first  # clients find it where they left it
        values = sorted(r.value for r in asyncio.run(read_topic(first, "kept")))
    assert values == [b"one", b"three", b"two"]


async def test_a_killed_node_is_restarted_by_the_watchdog_with_its_data(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "kafka", deploy_dir=REPO / "deploy")
    await asyncio.to_thread(kafka.start)
    stop = asyncio.Event()
    watchdog = asyncio.create_task(kafka.watch(stop, interval=0.2))
    try:
        await _create(kafka.bootstrap_servers, "survives")
        await _produce(kafka.bootstrap_servers, "survives", [b"before"])
        pid = kafka.pids()[1]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while True:  # until the restarted node serves clients again
            assert time.monotonic() < deadline, "the watchdog did not restart the node"
            if kafka.pids()[1] not in (None, pid):
                try:
                    await _produce(kafka.bootstrap_servers, "survives", [b"after"])
                    break
                except KafkaError:
                    pass
            await asyncio.sleep(0.5)
        values = [r.value for r in await read_topic(kafka.bootstrap_servers, "survives")]
        assert values == [b"before", b"after"]
    finally:
        stop.set()
        await watchdog
        await asyncio.to_thread(kafka.stop)


def test_a_node_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from broker import LocalKafka\n"
        f"home, deploy = Path({str(tmp_path / 'kafka')!r}), Path({str(REPO / 'deploy')!r})\n"
        "k = LocalKafka(home, deploy_dir=deploy)\n"
        "k.start()\n"
        "print(k.pids()[1], flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert parent.stdout is not None
        java = int(parent.stdout.readline())
        assert Path(f"/proc/{java}").exists()
        parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the kernel's signal
        parent.wait()
        deadline = time.monotonic() + 60
        while Path(f"/proc/{java}").exists() and _state(java) != "Z":
            assert time.monotonic() < deadline, "the Kafka node outlived its parent"
            time.sleep(0.2)
    finally:
        if parent.poll() is None:
            parent.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "gone"


async def test_broker_auto_creation_is_off(kafka_bootstrap: str) -> None:
    # A short request timeout bounds the wait for metadata of a topic that never appears.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=5000)
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(producer.send_and_wait("hips.never-created", b"x"), 30)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert "hips.never-created" not in await admin.list_topics()
    finally:
        await admin.close()


async def test_a_stored_position_that_no_longer_exists_is_a_loud_error(
    kafka_bootstrap: str, unique_id: str
) -> None:
    topic = f"lost-{unique_id}"
    await _create(kafka_bootstrap, topic)
    await _produce(kafka_bootstrap, topic, [b"a", b"b", b"c"])
    consumer = make_consumer(kafka_bootstrap)
    await consumer.start()
    try:
        # As if the topic had been recreated empty after this service stored offset 50.
        tps = await assign_stored(consumer, [topic], {(topic, 0): 50})
        with pytest.raises(BrokerError) as raised:
            for _ in range(50):
                await fetch(consumer, *tps, timeout_ms=200, max_records=10)
        assert raised.value.code is ReasonCode.POSITION_LOST
        assert not raised.value.retriable
        assert f"{topic}[0]@50" in raised.value.message
    finally:
        await consumer.stop()
