"""`safer up --cluster`, `safer cluster up` and `safer cluster status` as an operator runs them.

Real processes on a real 3-node Apache Kafka cluster: one command starts the cluster
and the services; other commands find it through broker.json and keep its
replication; `safer cluster status` reports a killed broker and, once the
watchdog has brought it back, a healthy cluster again; Ctrl-C stops every node;
`safer cluster up` on the same data directory finds every topic still there.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from audit import AuditStore
from broker import Headers, read_topic, running_kafka_pids

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["SAFER_TEST_MARK"] = secrets.token_hex(8)
    env["SAFER_DEPLOY_DIR"] = str(REPO / "deploy")
    env["SAFER_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "120"
    return env


def _our_nodes(env: dict[str, str]) -> dict[int, int]:
    """Node id -> pid of the Kafka nodes started under this test's environment."""
    mark = f"SAFER_TEST_MARK={env['SAFER_TEST_MARK']}".encode()
    nodes: dict[int, int] = {}
    for pid in running_kafka_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark not in environ:
            continue
        for arg in argv:
            if arg.endswith(b"server.properties"):
                nodes[int(Path(arg.decode()).parent.name.removeprefix("node-"))] = pid
    return nodes


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


def _status(env: dict[str, str], cwd: Path) -> tuple[int, dict[str, Any]]:
    result = _safer("cluster", "status", "--json", env=env, cwd=cwd)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _start(
    env: dict[str, str], tmp_path: Path, name: str, *args: str
) -> tuple[subprocess.Popen[str], str]:
    """Start a long-running safer command; return it and the bootstrap it prints."""
    with (tmp_path / f"{name}.stderr").open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "safer", "--log-file", str(tmp_path / f"{name}.log"), *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("KAFKA_BOOTSTRAP_SERVERS="), (tmp_path / f"{name}.stderr").read_text()
    bootstrap = line.split("=", 1)[1]
    assert len(bootstrap.split(",")) == 3
    return proc, bootstrap


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _publish(env: dict[str, str], tmp_path: Path, source_ref: str) -> str:
    example = json.loads((REPO / "deploy/examples/concern-domestic-abuse.json").read_text())
    example["concern_id"] = str(uuid.uuid4())
    example["source_ref"] = source_ref
    path = tmp_path / f"{source_ref}.json"
    path.write_text(json.dumps(example))
    result = _safer("publish", "--agency", "police", str(path), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return str(example["concern_id"])


def _received(db: Path, concern_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            with AuditStore(db) as store:
                if any(r.event.value == "RECEIVED" for r in store.records(concern_id=concern_id)):
                    return True
        time.sleep(0.3)
    return False


@pytest.mark.parametrize(
    "words",
    [["cluster"], ["cluster", "up"], ["cluster", "status"], ["cluster", "manifests"]],
    ids=" ".join,
)
def test_cluster_commands_have_help_with_examples(words: list[str], tmp_path: Path) -> None:
    result = _safer(*words, "--help", env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "example" in result.stdout.lower()
    assert "min.insync.replicas" in result.stdout or "in-sync" in result.stdout


def test_up_cluster_survives_a_killed_node_and_cluster_up_finds_everything_again(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    data = tmp_path / "data"
    db = data / "audit.db"

    # One command: three brokers, every topic (RF 3, min ISR 2), and the services.
    up, bootstrap = _start(env, tmp_path, "up", "up", "--cluster")
    try:
        info = json.loads((data / "broker.json").read_text())
        assert (info["replication_factor"], info["min_insync_replicas"]) == (3, 2)
        nodes = _our_nodes(env)
        assert sorted(nodes) == [1, 2, 3]
        code, status = _status(env, tmp_path)
        assert code == 0 and status["state"] == "OK", status
        assert {len(p["replicas"]) for p in status["partitions"]} == {3}
        assert {p["min_insync_replicas"] for p in status["partitions"]} == {2}

        # Client commands find the cluster, and the admin step keeps its replication.
        assert _safer("topics", "create", env=env, cwd=tmp_path).returncode == 0
        first = _publish(env, tmp_path, "44270000001")
        assert _received(db, first, 90), "the first concern was not received"

        # SIGKILL a broker: status says so at once (exit 1); the services carry on.
        os.kill(nodes[2], signal.SIGKILL)
        code, status = _status(env, tmp_path)
        assert code == 1 and (status["unreachable_brokers"] == [2] or status["state"] != "OK")
        second = _publish(env, tmp_path, "44270000002")
        assert _received(db, second, 120), "a concern published with a broker down was lost"

        # The watchdog brings the broker back; it rejoins every ISR.
        deadline = time.monotonic() + 120
        while (code := _status(env, tmp_path)[0]) != 0 and time.monotonic() < deadline:
            time.sleep(1)
        assert code == 0, "the killed broker did not come back in sync"
        assert _our_nodes(env)[2] != nodes[2]
        assert "kafka.node_died" in (tmp_path / "up.log").read_text()
        code, status = _status(env, tmp_path)
        assert {p["min_insync_replicas"] for p in status["partitions"]} == {2}
    finally:
        _stop(up)
    assert up.returncode == 0
    assert not (data / "broker.json").exists()
    assert not _our_nodes(env), "Ctrl-C left a broker running"

    # `safer cluster up` on the same data directory: every topic and record is there.
    cluster, again = _start(env, tmp_path, "cluster", "cluster", "up")
    try:
        assert again == bootstrap  # the same ports: clients find it where it was
        code, status = _status(env, tmp_path)
        assert code == 0, status
        inbound = asyncio.run(read_topic(again, "hips.inbound.police"))
        published = {dict(r.headers)[Headers.CONCERN_ID].decode() for r in inbound}
        assert {first, second} <= published
    finally:
        _stop(cluster)
    assert cluster.returncode == 0
    assert "topics: created" not in (tmp_path / "cluster.stderr").read_text()
    assert not _our_nodes(env)
    with AuditStore(db) as store:
        decided = {r.concern_id for r in store.records() if r.event.value == "DISCLOSED"}
        entry_ids = [r.entry_id for r in store.records()]
    assert {first, second} <= decided
    assert len(entry_ids) == len(set(entry_ids))
