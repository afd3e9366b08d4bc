"""`safer onboard check AGENCY` (issue 15.2), offline (the broker check has its own test).

* A recipient and a publisher from the shipped directory pass every check, and the test
  round trip's audit entries are marked test (and nothing was produced to Kafka: there is
  no broker here at all).
* Each failure names its check and what to do, and exits 1: an agency not in the
  directory, a revoked signing key, a missing key, an agency type no agreement covers, a
  webhook that does not answer.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit import AuditStore
from broker import Settings
from safer import Runtime
from safer._cli_keys import revoke_key
from safer._cli_onboard import onboard_check
from safer.cli import main

REPO = Path(__file__).resolve().parents[2]


def _states(checks: list) -> dict[str, bool | None]:  # type: ignore[type-arg]
    return {c.name: c.ok for c in checks}


@pytest.mark.parametrize("agency", ["portsmouth-csc", "school-116330", "hampshire-constabulary"])
def test_a_ready_agency_passes_and_its_round_trip_is_audited_as_a_test(
    runtime: Runtime, agency: str
) -> None:
    checks = onboard_check(runtime, agency, offline=True)
    states = _states(checks)
    assert states["topics"] is None  # skipped offline
    failed = [c for c in checks if c.ok is False]
    assert failed == [], failed
    assert states["round-trip"] is True
    with AuditStore(runtime.settings.audit_db) as store:
        records = list(store.records())
    assert records and all(r.test and r.actor == "safer-onboard" for r in records)
    if agency != "hampshire-constabulary":
        assert any(r.recipient == agency for r in records)


def test_each_failure_names_its_check_and_what_to_do(runtime: Runtime) -> None:
    (unknown,) = onboard_check(runtime, "not-a-partner", offline=True)
    assert unknown.name == "directory" and unknown.ok is False
    assert "directory.toml" in unknown.detail

    kid = runtime.keys.signing_key_id("portsmouth-csc")
    revoke_key(runtime, kid, reason="compromised", actor="ops", now=datetime.now(UTC))
    checks = onboard_check(runtime, "portsmouth-csc", offline=True)
    states = _states(checks)
    assert states["keys"] is False and states["round-trip"] is None
    keys = next(c for c in checks if c.name == "keys")
    assert "revoked" in keys.detail and "safer keys rotate" in keys.detail

    (runtime.settings.keys_dir / "portsmouth-health" / "encryption.key").unlink()
    states = _states(onboard_check(runtime, "portsmouth-health", offline=True))
    assert states["keys"] is False


def test_an_agency_type_no_agreement_covers_fails(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", deploy)
    (deploy / "policy" / "police-to-youth-justice.toml").unlink()
    settings = Settings(data_dir=tmp_path / "data", deploy_dir=deploy)
    runtime = Runtime(settings, bootstrap="127.0.0.1:1")
    runtime.init_keys()
    youth = next(
        r.id for r in runtime.deployment.directory.recipients if r.agency_type == "youth-justice"
    )
    checks = onboard_check(runtime, youth, offline=True)
    agreement = next(c for c in checks if c.name == "agreement")
    assert agreement.ok is False and "youth-justice" in agreement.detail


def test_a_webhook_that_does_not_answer_fails(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", deploy)
    directory = deploy / "directory.toml"
    text = directory.read_text()
    marker = 'id = "portsmouth-health"'
    assert marker in text
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    start = text.index(marker)
    at = text.index('delivery = "kafka"', start)
    webhook = 'delivery = "webhook"\nwebhook_url = "http://127.0.0.1:9/hook"'
    directory.write_text(text[:at] + webhook + text[at + len('delivery = "kafka"') :])
    runtime = Runtime(Settings(data_dir=tmp_path / "data", deploy_dir=deploy), "127.0.0.1:1")
    runtime.init_keys()
    checks = onboard_check(runtime, "portsmouth-health", offline=True)
    delivery = next(c for c in checks if c.name == "delivery")
    assert delivery.ok is False and "webhook does not answer" in delivery.detail


@pytest.mark.usefixtures("keep_logging")
def test_the_cli_exits_non_zero_with_a_reason_per_failed_check(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings = runtime.settings
    base = ["--data-dir", str(settings.data_dir), "--deploy-dir", str(settings.deploy_dir)]
    assert main([*base, "onboard", "check", "portsmouth-csc", "--offline", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["ready"] is True
    # Without --offline and with no broker running, the topics check fails with a reason.
    assert main([*base, "onboard", "check", "portsmouth-csc", "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    topics = next(c for c in answer["checks"] if c["name"] == "topics")
    assert topics["state"] == "failed" and "safer up" in topics["detail"]
