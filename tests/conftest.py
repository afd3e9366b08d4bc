"""Shared fixtures, and the proof that no Kafka node outlives the test suite.

With ``KAFKA_BOOTSTRAP_SERVERS`` set, tests use that cluster and start nothing.
Otherwise one local Apache Kafka node (KRaft, the pinned jars that `make kafka`
installs) serves the whole session, and at the end any Kafka process this
session started that is still alive fails the run.

Processes "started by this session" are told apart from other users' brokers
(another test run on the same machine, a demo) in two ways: Kafka processes
alive when the session began are excluded, and the rest must carry this
session's marker in their environment (children inherit it from here).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_MARKER_VAR = "SAFER_TEST_SESSION"
_baseline_key = pytest.StashKey[set[int]]()
_marker_key = pytest.StashKey[str]()


def _external_cluster() -> str | None:
    value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    return value or None


def _kafka_pids() -> list[int]:
    # Imported late so that unit tests still collect while the broker package is
    # being edited; the kafka fixtures fail loudly on their own if it is broken.
    from broker import running_kafka_pids

    return running_kafka_pids()


def _carries_marker(pid: int, marker: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False  # not ours to read, so not started by this session
    return f"{_MARKER_VAR}={marker}".encode() in environ.split(b"\0")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _external_cluster() is not None:
        return
    marker = secrets.token_hex(8)
    os.environ[_MARKER_VAR] = marker
    session.config.stash[_marker_key] = marker
    try:
        session.config.stash[_baseline_key] = set(_kafka_pids())
    except ImportError as exc:
        sys.stderr.write(f"\nconftest: broker orphan check disabled, cannot import: {exc}\n")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a Kafka node this session started is still alive."""
    if _external_cluster() is not None:
        return
    baseline = session.config.stash.get(_baseline_key, None)
    marker = session.config.stash.get(_marker_key, None)
    if baseline is None or marker is None:
        return

    def leaked() -> list[int]:
        return [
            pid
            for pid in _kafka_pids()
            if pid not in baseline and pid != os.getpid() and _carries_marker(pid, marker)
        ]

    # Brokers whose parent was SIGKILLed get SIGTERM from the kernel; allow them a
    # moment to exit. A broker that is stopped properly is already reaped.
    deadline = time.monotonic() + 3.0
    orphans = leaked()
    while orphans and time.monotonic() < deadline:
        time.sleep(0.1)
        orphans = leaked()
    if orphans:
        pids = " ".join(map(str, orphans))
        banner = "!" * 78
        sys.stderr.write(
            f"\n{banner}\nORPHAN BROKER: Kafka process(es) {orphans} started by this test "
            f"session are still running after the session ended.\nSomething started a "
            f"local Kafka node and did not stop it. Kill them with: kill {pids}"
            f"\n{banner}\n"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers for the session: KAFKA_BOOTSTRAP_SERVERS, or one local Kafka node."""
    external = _external_cluster()
    if external is not None:
        yield external
        return
    from broker import LocalKafka

    home = tmp_path_factory.mktemp("kafka")
    with LocalKafka(home, deploy_dir=ROOT / "deploy") as kafka:
        yield kafka.bootstrap_servers


@pytest.fixture
def unique_id() -> str:
    """A short random hex string, for distinct topic and group names per test."""
    return secrets.token_hex(4)
