"""The pinned Kafka jars are checked before they run (issue 10, point 1).

Real files in a temporary cache (``SAFER_KAFKA_HOME``); no JVM is started.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from broker import KAFKA_VERSION, kafka_distribution
from schemas import BrokerError, ReasonCode

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def _pinned() -> dict[str, str]:
    lines = (DEPLOY / "kafka" / f"kafka-{KAFKA_VERSION}.sha256").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line)}


def test_the_checksum_list_pins_the_broker_and_its_tools() -> None:
    pinned = _pinned()
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in pinned
    assert f"kafka-tools-{KAFKA_VERSION}.jar" in pinned
    assert f"kafka-clients-{KAFKA_VERSION}.jar" in pinned
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in pinned.values())
    pom = (DEPLOY / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom


def test_missing_jars_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFER_KAFKA_HOME", str(tmp_path))
    with pytest.raises(BrokerError) as raised:
        kafka_distribution(DEPLOY)
    assert raised.value.code is ReasonCode.ENGINE_NOT_INSTALLED
    assert "make kafka" in raised.value.hint


def test_a_changed_jar_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = kafka_distribution(DEPLOY).libs  # the real cache `make kafka` filled
    copy = tmp_path / f"kafka-{KAFKA_VERSION}" / "libs"
    shutil.copytree(installed, copy)
    victim = copy / f"kafka-clients-{KAFKA_VERSION}.jar"
    victim.write_bytes(victim.read_bytes() + b"\0")
    monkeypatch.setenv("SAFER_KAFKA_HOME", str(tmp_path))
    with pytest.raises(BrokerError) as raised:
        kafka_distribution(DEPLOY)
    assert raised.value.code is ReasonCode.CHECKSUM_MISMATCH
    assert f"kafka-clients-{KAFKA_VERSION}.jar" in raised.value.message
    # An extra jar is refused too (nothing unlisted runs in the broker).
    victim.write_bytes(installed.joinpath(victim.name).read_bytes())
    (copy / "extra.jar").write_bytes(b"PK")
    with pytest.raises(BrokerError, match="not in the checksum list"):
        kafka_distribution(DEPLOY)
