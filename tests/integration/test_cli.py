"""End-to-end tests of the `safer` CLI as a user runs it (real processes)."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from audit import AuditStore
from broker import running_kafka_pids
from safer.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = [
    [],
    ["web"],
    ["users"],
    ["users", "add"],
    ["keys"],
    ["keys", "init"],
    ["keys", "rotate"],
    ["keys", "revoke"],
    ["keys", "list"],
    ["keys", "publish"],
    ["kafka"],
    ["kafka", "install"],
    ["broker"],
    ["topics"],
    ["topics", "create"],
    ["publish"],
    ["route"],
    ["recipients"],
    ["up"],
    ["demo"],
    ["audit"],
    ["audit", "verify"],
    ["audit", "trail"],
    ["audit", "report"],
    ["audit", "sar"],
    ["audit", "stats"],
    ["audit", "export"],
    ["audit", "shred"],
    ["policy"],
    ["policy", "check"],
    ["policy", "explain"],
    ["consent"],
    ["consent", "record"],
    ["audit", "checkpoint"],
    ["audit", "witness"],
    ["audit", "witness", "init"],
    ["audit", "witness", "cosign"],
    ["audit", "witness", "status"],
    ["inbox"],
    ["inbox", "list"],
    ["inbox", "show"],
    ["inbox", "ack"],
    ["inbox", "action"],
    ["inbox", "purge"],
    ["track"],
    ["overdue"],
    ["notices"],
    ["quarantine"],
    ["quarantine", "list"],
    ["quarantine", "show"],
    ["quarantine", "replay"],
    ["gateway"],
    ["gateway", "certificate"],
    ["gateway", "certificate", "issue"],
    ["registry"],
    ["consent", "export"],
    ["gateway", "credential"],
    ["gateway", "credential", "add"],
    ["gateway", "credential", "list"],
    ["gateway", "credential", "revoke"],
    ["secure"],
    ["secure", "acls"],
    ["cluster"],
    ["cluster", "up"],
    ["cluster", "status"],
    ["cluster", "manifests"],
    ["onboard"],
    ["onboard", "check"],
]


def _leftover_brokers(env: dict[str, str]) -> list[int]:
    """Kafka nodes started under this test's environment that are still alive.

    Other test runs on a shared machine start brokers too; only ours carry this
    test's SAFER_TEST_MARK (brokers inherit their parent's environment).
    """
    mark = f"SAFER_TEST_MARK={env['SAFER_TEST_MARK']}".encode()
    mine = []
    for pid in running_kafka_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ:
            mine.append(pid)
    return mine


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["SAFER_TEST_MARK"] = secrets.token_hex(8)
    env["SAFER_DEPLOY_DIR"] = str(REPO / "deploy")
    env["SAFER_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "120"
    return env


def _safer(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safer", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_teaches(help_text: str) -> None:
    text = help_text.lower()
    assert "usage: safer" in text
    assert "example" in text or "start here" in text
    assert len(text) > 300, "help should teach, not just list flags"


def test_help_runs_as_a_program(tmp_path: Path) -> None:
    result = _safer("--help", env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_teaches(result.stdout)


# In this process, through the parser `python -m safer` builds (the test above runs
# the program): a process per command cost about 1.5 s each, 88 s in all.
@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "safer")
def test_every_command_has_help_with_an_example(
    words: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*words, "--help"])
    assert exited.value.code == 0
    _assert_teaches(capsys.readouterr().out)


@pytest.mark.kafka
def test_demo_json_is_one_object_and_leaves_no_broker(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = _env(tmp_path)
    result = _safer(
        "--data-dir",
        str(data),
        "demo",
        "--concerns",
        "25",
        "--seed",
        "3",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # exactly one JSON object, nothing else
    assert set(summary) == {
        "published",
        "disclosed",
        "withheld",
        "referred",
        "quarantined",
        "received",
        "audit_records",
        "audit_verified",
        "by_lscp",
        "seconds",
        "deadlines_met",
        "deadlines_total",
        "engine",
        "exactly_once",
    }
    assert summary["engine"].startswith("apache-kafka 4.")
    assert summary["exactly_once"] is True
    assert 0 < summary["deadlines_met"] <= summary["deadlines_total"]
    # Every disclosure and referral has a clock (issue 15.6: local policy for the rest).
    assert summary["deadlines_total"] == summary["disclosed"] + summary["referred"]
    assert summary["published"] == 30
    assert summary["quarantined"] == 5
    assert summary["audit_verified"] is True
    assert summary["received"] == summary["disclosed"] + summary["referred"]
    assert set(summary["by_lscp"]) == {"hampshire", "isle-of-wight", "portsmouth", "southampton"}
    assert summary["audit_records"] == (
        summary["disclosed"]
        + summary["withheld"]
        + summary["referred"]
        + summary["quarantined"]
        + summary["received"]
    )
    time.sleep(0.5)
    assert not _leftover_brokers(env), "the demo left a broker running"

    verify = _safer(
        "--data-dir", str(data), "audit", "verify", "--json", env=_env(tmp_path), cwd=tmp_path
    )
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["problems"] == []


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on loopback, below the kernel's
    ephemeral range: the services' own outbound connections and port-0 binds cannot
    take one between this check and `safer up` binding it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(10_000, low - count)
        probes = [socket.socket() for _ in range(count)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", first + offset))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return first
    raise AssertionError(f"no {count} consecutive free ports on loopback below {low}")


def _metric(text: str, name: str) -> float:
    """A Prometheus sample's value (0 if the counter has not been touched)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _router_instances(log: Path) -> set[str]:
    """The transactional ids of the routers that started (from the log file)."""
    return {
        json.loads(line)["transactional_id"]
        for line in log.read_text().splitlines()
        if '"router.started"' in line
    }


@pytest.mark.kafka
def test_up_publish_and_clean_shutdown(tmp_path: Path) -> None:
    env = _env(tmp_path)
    issued = _safer(
        "gateway",
        "credential",
        "add",
        "--agency",
        "hampshire-constabulary",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert issued.returncode == 0, issued.stderr
    token = json.loads(issued.stdout)["token"]
    ops_port = _free_ports(3)  # safer up's, then one per router
    router_port = ops_port + 1
    ops = f"http://127.0.0.1:{ops_port}"
    # Two router processes in one group (`--routers 2`), each with its ops port.
    router_ops = [f"http://127.0.0.1:{router_port + i}" for i in range(2)]
    command = [sys.executable, "-m", "safer", "--log-file", str(tmp_path / "up.log"), "up"]
    command += ["--no-web", "--ops-port", str(ops_port), "--routers", "2"]
    command += ["--router-ops-port", str(router_port), "--gateway-port", "0"]
    up = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        line = up.stdout.readline()
        assert line.startswith("KAFKA_BOOTSTRAP_SERVERS="), line
        deadline = time.monotonic() + 60
        while (
            "services.ready" not in (tmp_path / "up.log").read_text()
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        examples = REPO / "deploy" / "examples"
        published = _safer(
            "publish",
            "--agency",
            "police",
            str(examples / "concern-domestic-abuse.json"),
            str(examples / "concern-invalid.json"),
            env=env,
            cwd=tmp_path,
        )
        lines = published.stdout.strip().splitlines()
        assert published.returncode == 1, "a rejected record must give exit code 1"
        assert lines[0].endswith("ACCEPTED")
        assert "MINIMUM_DATASET_MISSING" in lines[1]
        concern_id = lines[0].split()[0]

        db = tmp_path / "data" / "audit.db"
        events: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "RECEIVED" not in events:
            if db.exists():
                with AuditStore(db) as store:
                    events = {r.event.value for r in store.records(concern_id=concern_id)}
            time.sleep(0.3)
        assert {"DISCLOSED", "RECEIVED"} <= events, events

        # Without the web app: the services' and the router process's ops endpoints.
        assert httpx.get(f"{ops}/healthz").json() == {"status": "ok", "service": "safer-up"}
        assert httpx.get(f"{ops}/readyz").status_code == 200
        assert "safer_audit_log_entries" in httpx.get(f"{ops}/metrics").text
        routed = []
        for url in router_ops:
            assert httpx.get(f"{url}/readyz").status_code == 200
            routed.append(httpx.get(f"{url}/metrics").text)
            assert concern_id not in routed[-1]
        # The concern was routed once, by whichever router owns its partition.
        inbound = [_metric(t, 'safer_router_records_total{outcome="inbound"}') for t in routed]
        assert sorted(inbound) == [0.0, 1.0], inbound
        assert 'safer_router_records_total{outcome="DISCLOSED"}' in routed[inbound.index(1.0)]
        assert len(_router_instances(tmp_path / "up.log")) == 2
        # `safer up` runs the HTTP gateway too (issue 13); port 0 → its port is logged.
        listening = [
            json.loads(line)
            for line in (tmp_path / "up.log").read_text().splitlines()
            if "gateway.listening" in line
        ]
        assert listening, "safer up did not start the gateway"
        concern = json.loads((examples / "concern-domestic-abuse.json").read_text())
        concern.pop("concern_id")
        concern["source_ref"] = "GW-UP-1"
        posted = httpx.post(
            f"http://127.0.0.1:{listening[0]['port']}/v1/concerns",
            json=concern,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert posted.status_code == 202, posted.text
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert up.returncode == 0, up.stderr.read() if up.stderr else ""
    time.sleep(0.5)
    assert not _leftover_brokers(env), "`safer up` left a broker running"


def test_publish_without_a_broker_says_what_to_do(tmp_path: Path) -> None:
    result = _safer(
        "publish",
        "--agency",
        "police",
        str(REPO / "deploy/examples/concern-domestic-abuse.json"),
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 75
    assert "safer up" in result.stderr


def test_keys_init_creates_private_keys_readable_only_by_the_owner(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = _safer("keys", "init", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    keys = tmp_path / "data" / "keys"
    private = sorted(keys.glob("*/*.key"))
    identities = [p for p in keys.iterdir() if p.is_dir()]
    assert len(identities) >= 30  # router, audit log, 1 publisher, 28 recipients
    assert len(private) == 2 * len(identities)  # a signing and an encryption key each
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in private)
    assert ((keys / "pseudonym.secret").stat().st_mode & 0o777) == 0o600
    before = {p: p.read_bytes() for p in private}
    again = _safer("keys", "init", env=env, cwd=tmp_path)
    assert again.returncode == 0
    assert "kept" in again.stderr
    assert all(p.read_bytes() == before[p] for p in private), "existing keys must never be replaced"


@pytest.mark.kafka
def test_broker_command_prints_bootstrap_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safer", "broker", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    time.sleep(0.3)
    assert not _leftover_brokers(env)


def _wait_for_event(db: Path, concern_id: str, event: str, timeout: float) -> set[str]:
    events: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and event not in events:
        if db.exists():
            with AuditStore(db) as store:
                events = {r.event.value for r in store.records(concern_id=concern_id)}
        time.sleep(0.3)
    return events


def _start_up(env: dict[str, str], tmp_path: Path, log: str) -> subprocess.Popen[str]:
    up = subprocess.Popen(
        [sys.executable, "-m", "safer", "--log-file", str(tmp_path / log), "up"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert up.stdout is not None
    assert up.stdout.readline().startswith("KAFKA_BOOTSTRAP_SERVERS=")
    deadline = time.monotonic() + 90
    while "services.ready" not in (tmp_path / log).read_text():
        assert time.monotonic() < deadline, "safer up did not get ready"
        assert up.poll() is None, up.stderr.read() if up.stderr else ""
        time.sleep(0.2)
    return up


def _stop(up: subprocess.Popen[str]) -> None:
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        up.kill()
        raise


def _publish_example(env: dict[str, str], tmp_path: Path, source_ref: str) -> str:
    """Publish the shipped example as a new concern (new id and reference); return its id."""
    example = json.loads((REPO / "deploy/examples/concern-domestic-abuse.json").read_text())
    example["concern_id"] = str(uuid.uuid4())
    example["source_ref"] = source_ref
    path = tmp_path / f"{source_ref}.json"
    path.write_text(json.dumps(example))
    deadline = time.monotonic() + 60
    while True:  # the broker may still be coming back
        result = _safer("publish", "--agency", "police", str(path), env=env, cwd=tmp_path)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    return str(example["concern_id"])


@pytest.mark.kafka
def test_up_survives_a_killed_broker_and_a_restart_losing_nothing(tmp_path: Path) -> None:
    """Issue 10, point 6: kill the broker under `safer up`, then restart `safer up`."""
    env = _env(tmp_path)
    db = tmp_path / "data" / "audit.db"
    up = _start_up(env, tmp_path, "up-1.log")
    try:
        first = _publish_example(env, tmp_path, "44260000001")
        assert "RECEIVED" in _wait_for_event(db, first, "RECEIVED", 60)
        (java,) = _leftover_brokers(env)
        os.kill(java, signal.SIGKILL)  # the broker dies; `safer up` keeps running
        second = _publish_example(env, tmp_path, "44260000002")
        assert "RECEIVED" in _wait_for_event(db, second, "RECEIVED", 120)
        assert up.poll() is None, "safer up must ride through a broker crash"
        restarted = [p for p in _leftover_brokers(env) if p != java]
        assert restarted, "the watchdog did not restart the broker"
        assert "kafka.node_died" in (tmp_path / "up-1.log").read_text()
    finally:
        _stop(up)
    assert up.returncode == 0
    assert not _leftover_brokers(env)

    # A second `safer up` on the same data directory: the topics are all still there.
    up = _start_up(env, tmp_path, "up-2.log")
    try:
        third = _publish_example(env, tmp_path, "44260000003")
        assert "RECEIVED" in _wait_for_event(db, third, "RECEIVED", 60)
    finally:
        _stop(up)
    with AuditStore(db) as store:
        decided = {
            r.concern_id
            for r in store.records()
            if r.event.value in ("DISCLOSED", "WITHHELD", "REFERRED")
        }
        entry_ids = [r.entry_id for r in store.records()]
    assert {first, second, third} <= decided
    assert len(entry_ids) == len(set(entry_ids))
    assert "topics: created" not in (up.stderr.read() if up.stderr else "")
