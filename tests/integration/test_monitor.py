"""The timeliness monitor on a real broker: alerts once, across restarts and crashes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit import AuditRecord, AuditStore, entry_id_for
from broker import RECEIPT_PREFIX, TimelinessMonitor, read_topic
from safer import Runtime
from schemas import AuditEvent

from .spine import make_runtime

pytestmark = pytest.mark.kafka

DECIDED = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def _decision(disclosure_id: str, recipient: str, due: datetime) -> AuditRecord:
    return AuditRecord(
        seq=None,
        entry_id=entry_id_for(AuditEvent.DISCLOSED, disclosure_id),
        event=AuditEvent.DISCLOSED,
        disclosure_id=disclosure_id,
        concern_id="c-" + disclosure_id,
        source="hampshire-constabulary",
        recipient=recipient,
        lscp="portsmouth",
        deadline=due,
        at=DECIDED,
        actor="safer-router",
    )


def _receipt(disclosure_id: str, status: str, at: datetime) -> AuditRecord:
    return AuditRecord(
        seq=None,
        entry_id=entry_id_for(AuditEvent.RECEIVED, f"{disclosure_id}:{status}"),
        event=AuditEvent.RECEIVED,
        disclosure_id=disclosure_id,
        concern_id="c-" + disclosure_id,
        source="hampshire-constabulary",
        recipient="portsmouth-csc",
        reasons=(f"{RECEIPT_PREFIX}{status}",),
        at=at,
        actor="portsmouth-csc",
    )


def _monitor(runtime: Runtime, store: AuditStore, now: list[datetime]) -> TimelinessMonitor:
    return TimelinessMonitor(
        store=store,
        state_path=runtime.settings.data_dir / "monitor.db",
        directory=runtime.deployment.directory,
        codec=runtime.codec,
        identity=runtime.keys.signing_identity("safer-router"),
        topics=runtime.settings.topics,
        bootstrap_servers=runtime.bootstrap,
        expiry=timedelta(hours=4),
        interval=0.05,
        clock=lambda: now[0],
    )


async def _run_once(monitor: TimelinessMonitor) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await task


async def _alerts(runtime: Runtime) -> list[tuple[str, str]]:
    records = await read_topic(runtime.bootstrap, runtime.settings.topics.alerts)
    decoded = [runtime.codec.decode(r.value).record for r in records]
    return sorted((d["disclosure_id"], d["level"]) for d in decoded)


async def test_alerts_fire_once_and_survive_restarts(kafka_bootstrap: str, tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"mon{secrets.token_hex(3)}")
    await runtime.create_topics()
    due = DECIDED + timedelta(hours=24)
    store = AuditStore(runtime.settings.audit_db)
    store.append(
        [
            _decision("late", "portsmouth-csc", due),  # never actioned
            _decision("ontime", "portsmouth-csc", due),  # actioned at 10%
            _decision("undelivered", "portsmouth-yjs", due),  # never even received
            _receipt("late", "RECEIVED", DECIDED + timedelta(seconds=5)),
            _receipt("ontime", "RECEIVED", DECIDED + timedelta(seconds=5)),
            _receipt("ontime", "ACTIONED", DECIDED + timedelta(hours=2)),
        ]
    )
    now = [DECIDED + timedelta(hours=13)]  # past 50%, before 90%
    first = _monitor(runtime, store, now)
    await _run_once(first)
    first.close()
    assert await _alerts(runtime) == [
        ("late", "HALF_TIME"),
        ("undelivered", "HALF_TIME"),
        ("undelivered", "NOT_DELIVERED"),
    ]

    # A restart at the same time repeats nothing.
    again = _monitor(runtime, store, now)
    await _run_once(again)
    again.close()
    assert len(await _alerts(runtime)) == 3

    # A crash after recording the breach but before sending it: the restart sends it.
    now[0] = due + timedelta(minutes=1)
    crashed = _monitor(runtime, store, now)
    crashed.raise_alerts(crashed.due(now[0]), now[0])
    crashed.close()
    recovered = _monitor(runtime, store, now)
    await _run_once(recovered)
    recovered.close()
    alerts = await _alerts(runtime)
    assert ("late", "BREACH") in alerts and ("late", "NINETY_PERCENT") in alerts
    assert not [a for a in alerts if a[0] == "ontime"], "in-time work must never alert"
    assert len(alerts) == len(set(alerts)), "no alert is sent twice"

    # The non-delivery report reached the publisher's notices topic, and was audited.
    notices = await read_topic(runtime.bootstrap, f"{runtime.settings.topic_prefix}.notices.police")
    reports = [runtime.codec.decode(r.value).record for r in notices]
    assert [(r["disclosure_id"], r["reason_code"]) for r in reports] == [
        ("undelivered", "NOT_DELIVERED")
    ]
    # ... and the police read it with `safer notices`.
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": runtime.bootstrap,
        "SAFER_TOPIC_PREFIX": runtime.settings.topic_prefix,
        "SAFER_DATA_DIR": str(runtime.settings.data_dir),
        "SAFER_DEPLOY_DIR": str(runtime.settings.deploy_dir),
    }
    shown = subprocess.run(  # noqa: ASYNC221 (a one-off CLI call in a test)
        [sys.executable, "-m", "safer", "notices", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert [r["disclosure_id"] for r in json.loads(shown.stdout)] == ["undelivered"]
    audits = await read_topic(runtime.bootstrap, runtime.settings.topics.audit)
    events = [runtime.codec.decode(r.value).record["event"] for r in audits]
    assert events == ["NOT_DELIVERED"]
    store.close()
