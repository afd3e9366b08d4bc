"""Issue 16 on the real broker: the cumulative-concern signal.

Three LOW concerns about the same child, from two police forces, over simulated
weeks (weeks 0, 5 and 7 before now; the thresholds are the shipped ones: a
third concern in 12 months, or two agencies within 30 days). The flag, the
front door's referral and the RISK_FLAGGED audit record appear exactly with the
third concern, not before. After a restart (a new router that rebuilds its
state from ``hips.signals``) a fourth concern is flagged with all three earlier
ids, and nothing is flagged twice. A second child's counts, erased by
`safer audit shred`, no longer count.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters import Inbox, PoliceAdapter
from audit import AuditRecord, AuditStore
from broker import Settings, disclosure_id_for, make_producer, send_all
from safer import Runtime
from schemas import AuditEvent, ConcernModel

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
FORCE_A = "hampshire-constabulary"
FORCE_B = "british-transport-police"
DOOR = "portsmouth-csc"
NOW = datetime.now(UTC).replace(microsecond=0)
#: The front door's decision on a concern (its receipt, RECEIVED, may be logged too).
DECISIONS = frozenset({AuditEvent.DISCLOSED, AuditEvent.WITHHELD, AuditEvent.REFERRED})
CHILD_A = ("Ellie", "Marchbank", "9434765870")
CHILD_B = ("Reece", "Tolworth", "9434765919")


def _deploy_with_a_second_force(tmp_path: Path) -> Path:
    deploy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", deploy)
    with (deploy / "directory.toml").open("a", encoding="utf-8") as f:
        f.write(
            "\n[[publisher]]\n"
            f'id = "{FORCE_B}"\n'
            'agency_type = "police"\n'
            'name = "British Transport Police"\n'
            'contact = "safeguarding@btp.example.uk"\n'
        )
    return deploy


def _runtime(tmp_path: Path, bootstrap: str, prefix: str) -> Runtime:
    settings = Settings(
        data_dir=tmp_path / "data",
        deploy_dir=tmp_path / "deploy",
        topic_prefix=prefix,
        bootstrap_servers=bootstrap,
    )
    return Runtime(settings, bootstrap)


def concern(n: int, child: tuple[str, str, str], week: int, force: str) -> ConcernModel:
    """A LOW neglect concern about ``child`` in Portsmouth, reported ``week`` weeks in."""
    reported = NOW - timedelta(weeks=8 - week)
    given, family, nhs = child
    return ConcernModel.model_validate(
        {
            "concern_id": f"c0ffee00-0000-4000-8000-{n:012d}",
            "source_agency": force,
            "source_ref": f"44{n:09d}",
            "reported_at": reported.isoformat(),
            "occurred_at": (reported - timedelta(hours=2)).isoformat(),
            "concern_type": "NEGLECT",
            "risk_grade": "LOW",
            "subjects": [
                {
                    "subject_ref": "S1",
                    "role": "CHILD",
                    "given_name": given,
                    "family_name": family,
                    "date_of_birth": "2016-02-11",
                    "nhs_number": nhs,
                    "address": {
                        "line1": "9 Stamshaw Road",
                        "town": "Portsmouth",
                        "postcode": "PO2 8LR",
                        "la_code": "E06000044",
                    },
                }
            ],
            "narrative": f"{given} was found unsupervised late in the evening.",
            "consent": {
                "state": "GIVEN",
                "reason": "parent agreed",
                "recorded_by": "PC 1234",
                "recorded_at": (reported - timedelta(minutes=30)).isoformat(),
            },
            "officer": {"name": "PC Sam Hale", "email": "s.hale@police.example.uk"},
            "risk_assessments": [
                {
                    "subject_ref": "S1",
                    "grade": "LOW",
                    "rationale": "no current indicators of serious harm",
                    "factors": ["NEGLECT"],
                    "assessed_by": "PC 1234",
                    "assessed_at": reported.isoformat(),
                }
            ],
        }
    )


class Services:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = AuditStore(runtime.settings.audit_db)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Services:
        door = self.runtime.deployment.directory.recipient(DOOR)
        assert door is not None
        ready = asyncio.Event()
        self.task = asyncio.create_task(
            self.runtime.run_services(
                self.stop, store=self.store, recipients=[door], on_ready=ready.set, monitor=False
            )
        )
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([waiter, self.task], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()
        assert ready.is_set(), "services did not become ready"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
        self.store.close()

    async def publish(self, item: ConcernModel) -> list[AuditRecord]:
        """Publish ``item`` as its own force and wait for the front door's decision on it;
        returns every audit record about it."""
        adapter = self.runtime.police_adapter()
        if item.source_agency == FORCE_B:
            adapter = PoliceAdapter(
                codec=self.runtime.codec,
                identity=self.runtime.keys.signing_identity(FORCE_B),
                pseudonym_secret=self.runtime.keys.pseudonym_secret(),
                topic=self.runtime.settings.topics.inbound("police"),
            )
        producer = make_producer(self.runtime.bootstrap)
        await producer.start()
        try:
            await send_all(producer, [adapter.prepare(item)])
        finally:
            await producer.stop()
        deadline = time.monotonic() + 60
        while True:
            found = [r for r in self.store.records() if r.concern_id == item.concern_id]
            if any(r.recipient == DOOR and r.event in DECISIONS for r in found):
                return found
            assert self.task is not None
            if self.task.done():
                self.task.result()
            assert time.monotonic() < deadline, f"concern {item.concern_id} was never decided"
            await asyncio.sleep(0.1)

    async def door_copy(self, concern_id: str) -> dict[str, Any]:
        """The front door's decrypted copy of ``concern_id``, once its inbox has it."""
        inbox = Inbox(self.runtime.inbox_path(DOOR))
        try:
            deadline = time.monotonic() + 30
            while (item := inbox.get(disclosure_id_for(concern_id, DOOR))) is None:
                assert time.monotonic() < deadline, "the front door never received it"
                await asyncio.sleep(0.1)
            return {"kind": item.kind, "payload": item.payload}
        finally:
            inbox.close()


def _door(records: list[AuditRecord]) -> AuditRecord:
    (decision,) = [r for r in records if r.recipient == DOOR and r.event in DECISIONS]
    return decision


def _flags(records: list[AuditRecord]) -> list[AuditRecord]:
    return [r for r in records if r.event is AuditEvent.RISK_FLAGGED]


def _shred(runtime: Runtime, nhs: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": runtime.bootstrap,
        "SAFER_TOPIC_PREFIX": runtime.settings.topic_prefix,
        "SAFER_DEPLOY_DIR": str(runtime.settings.deploy_dir),
    }
    result = subprocess.run(
        [
            sys.executable, "-m", "safer", "--data-dir", str(runtime.settings.data_dir),
            "audit", "shred", "--subject", f"nhs:{nhs}", "--reason", "erasure", "--yes",
            "--format", "json",
        ],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return body


async def test_the_third_concern_raises_the_flag_and_it_survives_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    _deploy_with_a_second_force(tmp_path)
    prefix = f"cc{secrets.token_hex(3)}"
    runtime = _runtime(tmp_path, kafka_bootstrap, prefix)
    runtime.init_keys()
    await runtime.create_topics()
    a = [
        concern(1, CHILD_A, 0, FORCE_A),
        concern(2, CHILD_A, 5, FORCE_B),  # 35 days later: two agencies, but not within 30
        concern(3, CHILD_A, 7, FORCE_A),  # the third in 12 months; two agencies in 14 days
        concern(4, CHILD_A, 8, FORCE_B),  # after the restart
    ]
    b = [concern(11, CHILD_B, 0, FORCE_A), concern(12, CHILD_B, 5, FORCE_A)]
    b_third = concern(13, CHILD_B, 7, FORCE_B)

    async with Services(runtime) as services:
        for item in a[:2]:
            records = await services.publish(item)
            assert _flags(records) == [], "flagged before the threshold"
            assert _door(records).event is AuditEvent.DISCLOSED
        first = await services.door_copy(a[0].concern_id)
        assert first["kind"] == "DISCLOSURE" and "cumulative_concern" not in first["payload"]
        assert first["payload"]["risk_assessments"][0]["factors"] == ["NEGLECT"]

        records = await services.publish(a[2])
        (flag,) = _flags(records)
        door = _door(records)
        assert door.event is AuditEvent.REFERRED and "CUMULATIVE_CONCERN" in door.reason_codes
        assert flag.disclosure_id == door.disclosure_id and flag.lscp == "portsmouth"
        assert flag.reason_codes == ("CUMULATIVE_CONCERN",)
        reasons = " ".join(flag.reasons)
        assert "third-concern-12-months" in reasons and "two-agencies-30-days" in reasons
        assert CHILD_A[1] not in reasons and CHILD_A[2] not in reasons
        # Every other recipient decided as it would have: only the front door is escalated.
        assert all(
            "CUMULATIVE_CONCERN" not in r.reason_codes
            for r in records
            if r.recipient != DOOR and r.event in DECISIONS
        )
        copy = await services.door_copy(a[2].concern_id)
        assert copy["kind"] == "REFERRAL"
        (carried,) = copy["payload"]["cumulative_concern"]
        assert carried["earlier_concern_ids"] == [a[0].concern_id, a[1].concern_id]
        counts = {t["id"]: (t["concerns"], t["agencies"]) for t in carried["thresholds"]}
        assert counts == {"third-concern-12-months": (3, 2), "two-agencies-30-days": (2, 2)}

        for item in b:
            assert _flags(await services.publish(item)) == []

    # The second child's counts are erased by a shred (the broker still runs).
    shredded = _shred(runtime, CHILD_B[2])
    assert shredded["signals_erased"] == 1 and len(shredded["shredded"]) == 1

    # A restart: a new runtime and router rebuild the signal from hips.signals.
    restarted = _runtime(tmp_path, kafka_bootstrap, prefix)
    async with Services(restarted) as services:
        records = await services.publish(a[3])
        (flag,) = _flags(records)
        assert _door(records).event is AuditEvent.REFERRED
        copy = await services.door_copy(a[3].concern_id)
        (carried,) = copy["payload"]["cumulative_concern"]
        assert carried["earlier_concern_ids"] == [c.concern_id for c in a[:3]]
        # Child B would be at its third concern, but its counts were erased.
        records = await services.publish(b_third)
        assert _flags(records) == [] and _door(records).event is AuditEvent.DISCLOSED
        all_flags = [r for r in services.store.records() if r.event is AuditEvent.RISK_FLAGGED]
    assert sorted(r.concern_id or "" for r in all_flags) == [a[2].concern_id, a[3].concern_id]
