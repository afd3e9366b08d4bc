"""The embedded Tansu broker (DESIGN §6): starts, serves real Kafka clients, and never
outlives its parent. Real aiokafka against a real Tansu process; no mocks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from broker import _embedded
from broker._embedded import (
    EmbeddedBroker,
    free_port,
    kafka_cluster,
    running_tansu_pids,
    tansu_binary,
    wait_for_metadata,
)
from schemas import BrokerError, ReasonCode

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2 :][:1]
    return state not in ("Z", "X", "")


def _wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _our_tansu_children() -> set[int]:
    """Tansu processes whose parent is this Python process."""
    children: set[int] = set()
    for pid in running_tansu_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == os.getpid():
                children.add(pid)
    return children


def test_tansu_binary_is_shipped_and_executable() -> None:
    binary = tansu_binary()
    assert binary.name == "tansu"
    assert os.access(binary, os.X_OK)


def test_start_serves_metadata_and_stop_is_idempotent(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "tansu.log"
    broker = EmbeddedBroker(log_path=log)
    assert broker.pid is None
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    broker.start()
    try:
        pid = broker.pid
        assert pid is not None
        assert _alive(pid)
        assert pid in running_tansu_pids()
        wait_for_metadata("127.0.0.1", broker.port, timeout=2.0)
        with pytest.raises(BrokerError, match="already started"):
            broker.start()
    finally:
        broker.stop()
    assert broker.pid is None
    broker.stop()  # idempotent
    assert "listening on" in log.read_text()


def test_stop_leaves_no_process_and_no_zombie() -> None:
    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert pid is not None
    assert not Path(f"/proc/{pid}").exists(), "broker still exists (running or unreaped zombie)"
    assert pid not in running_tansu_pids()


async def test_produce_and_consume_one_record_with_a_header(
    kafka_bootstrap: str, unique_id: str
) -> None:
    topic = f"embedded-{unique_id}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, b"value-1", key=b"key-1", headers=[("safer-test", b"header-value")]
        )
    finally:
        await producer.stop()
    assert sent.offset == 0

    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        records: list[Any] = []
        deadline = time.monotonic() + 10
        while not records and time.monotonic() < deadline:
            batch = await consumer.getmany(partition, timeout_ms=500)
            records.extend(batch.get(partition, []))
        # Fetch high-watermarks are right on Tansu (ListOffsets end offsets are not).
        assert consumer.highwater(partition) == 1
    finally:
        await consumer.stop()

    assert len(records) == 1
    record = records[0]
    assert (record.key, record.value, record.offset) == (b"key-1", b"value-1", 0)
    assert list(record.headers) == [("safer-test", b"header-value")]


def test_second_broker_on_the_same_port_fails_naming_the_port() -> None:
    with EmbeddedBroker() as first:
        second = EmbeddedBroker(port=first.port)
        with pytest.raises(BrokerError) as caught:
            second.start()
        assert str(first.port) in str(caught.value)
        assert "--port" in caught.value.hint
        assert caught.value.code is ReasonCode.BROKER_UNAVAILABLE
        assert not caught.value.retriable
        assert second.pid is None
        assert first.running
        wait_for_metadata("127.0.0.1", first.port, timeout=2.0)


def test_taken_port_is_caught_even_when_the_pre_check_misses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Simulates losing the race between the free-port check and the spawn: Tansu then
    # prints "listening on", panics and exits with status 0, while the other broker
    # answers the readiness probe. start() must still fail, and leave nothing behind.
    with EmbeddedBroker() as first:
        monkeypatch.setattr(_embedded, "_port_in_use", lambda host, port: False)
        before = _our_tansu_children()
        second = EmbeddedBroker(port=first.port)
        with pytest.raises(BrokerError, match=str(first.port)) as caught:
            second.start()
        assert "--port" in caught.value.hint
        assert second.pid is None
        assert _our_tansu_children() == before
        assert first.running


def test_broker_started_from_a_short_lived_thread_outlives_that_thread() -> None:
    # PDEATHSIG follows the forking thread; start() must not tie the broker to it.
    broker = EmbeddedBroker()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            broker.start()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    try:
        assert not errors, errors
        time.sleep(0.3)  # the kernel's signal would have arrived by now
        assert broker.running
        wait_for_metadata("127.0.0.1", broker.port, timeout=2.0)
    finally:
        broker.stop()
    assert broker.pid is None


def test_kafka_cluster_with_bootstrap_servers_set_starts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example.invalid:9093")
    before = _our_tansu_children()
    with kafka_cluster(port=free_port()) as bootstrap:
        assert bootstrap == "kafka.example.invalid:9093"
        assert _our_tansu_children() == before
    assert _our_tansu_children() == before


def test_kafka_cluster_without_bootstrap_servers_runs_and_stops_a_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    before = _our_tansu_children()
    with kafka_cluster() as bootstrap:
        host, port = bootstrap.rsplit(":", 1)
        wait_for_metadata(host, int(port), timeout=2.0)
        started = _our_tansu_children() - before
        assert len(started) == 1
    assert _our_tansu_children() == before
    assert not any(_alive(pid) for pid in started)


def test_sigkill_of_the_parent_leaves_no_orphan_broker() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from broker._embedded import EmbeddedBroker
        broker = EmbeddedBroker()
        broker.start()
        print(broker.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        if not line.strip():
            parent.kill()
            _, err = parent.communicate(timeout=10)
            pytest.fail(f"helper script did not start a broker: {err}")
        tansu_pid = int(line)
        assert _alive(tansu_pid)
        assert tansu_pid in running_tansu_pids()
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only PDEATHSIG helps
        parent.wait(timeout=10)
        assert _wait_gone(tansu_pid, within=5.0), f"tansu {tansu_pid} survived its parent"
        assert tansu_pid not in running_tansu_pids()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for stream in (parent.stdout, parent.stderr):
            if stream is not None:
                stream.close()


def test_wait_for_metadata_on_a_closed_port_fails_fast() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(BrokerError, match=f"no Kafka metadata answer from 127.0.0.1:{port}"):
        wait_for_metadata("127.0.0.1", port, timeout=0.3)
    assert time.monotonic() - started < 2.0


def test_wait_for_metadata_rejects_a_silent_non_kafka_server() -> None:
    # Something that accepts connections but never speaks Kafka is not a broker.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(BrokerError, match=str(port)):
            wait_for_metadata("127.0.0.1", port, timeout=0.5)
        assert time.monotonic() - started < 3.0
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
