"""The same spine on a Confluent Kafka image, through testcontainers: an extra.

Runs only where a Docker engine answers; elsewhere it is skipped with the
reason. It is never the only proof of a guarantee: every property checked here
is proven on the local Apache Kafka (KRaft, the pinned jars) that the whole
suite runs on, by test_spine_e2e.py and test_crash.py.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit import verify_store
from safer._demo import bad_records

from .spine import concerns, make_runtime, run_flow

pytestmark = [pytest.mark.real_kafka, pytest.mark.kafka]


def _docker_reason() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on this machine"
    probe = subprocess.run(
        ["docker", "info"], capture_output=True, text=True, timeout=20, check=False
    )
    if probe.returncode != 0:
        return (
            "no Docker engine answers (`docker info` failed); Apache Kafka runs only in Docker here"
        )
    return None


@pytest.fixture(scope="module")
def real_kafka() -> Iterator[str]:
    reason = _docker_reason()
    if reason:
        pytest.skip(
            f"real Apache Kafka test skipped: {reason}. Proven on the local Apache Kafka instead."
        )
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


async def test_spine_on_apache_kafka(real_kafka: str, tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, real_kafka, prefix=f"real{secrets.token_hex(3)}")
    await runtime.create_topics()
    items = concerns(50, seed=21)
    bad = bad_records(runtime, items[0])
    expected = {c.concern_id for c in items}
    acc = await run_flow(runtime, items, [r for _, r in bad], expected=expected, ready_timeout=120)
    assert acc.delivered <= acc.received
    verify_store(runtime.settings.audit_db)
