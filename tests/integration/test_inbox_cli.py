"""A practitioner's round trip with the real CLI: find, read, action; receipts audited."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit import AuditStore
from broker import KeyStore, SealedPayload, Settings, open_sealed, read_topic
from schemas import Codec, CryptoError, EmbeddedRegistry

from .test_cli import REPO, _env, _safer

pytestmark = pytest.mark.kafka

EXAMPLE = REPO / "deploy" / "examples" / "concern-domestic-abuse.json"
CONCERN_ID = json.loads(EXAMPLE.read_text())["concern_id"]


def _wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)


def _statuses(db: Path, disclosure_id: str) -> list[str]:
    if not db.exists():
        return []
    with AuditStore(db) as store:
        return sorted(
            reason.removeprefix("receipt status ")
            for record in store.records(disclosure_id=disclosure_id)
            if record.event.value == "RECEIVED"
            for reason in record.reasons
            if reason.startswith("receipt status ")
        )


def test_find_read_and_action_a_disclosure(tmp_path: Path) -> None:
    env = _env(tmp_path)
    data = tmp_path / "data"
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-m", "safer", "--log-file", str(log), "up"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert up.stdout is not None
        bootstrap = up.stdout.readline().strip().split("=", 1)[1]
        _wait_for(lambda: log.exists() and "services.ready" in log.read_text())
        assert (
            _safer("publish", "--agency", "police", str(EXAMPLE), env=env, cwd=tmp_path).returncode
            == 0
        )
        inbox_db = data / "inbox" / "portsmouth-csc.db"
        _wait_for(
            lambda: (
                "RECEIVED"
                in _safer(
                    "inbox", "list", "--recipient", "portsmouth-csc", env=env, cwd=tmp_path
                ).stdout
            )
        )

        # 1. Find the inbox, then the disclosure, as a new user would.
        overview = _safer("inbox", "list", env=env, cwd=tmp_path)
        assert "portsmouth-csc" in overview.stdout and overview.returncode == 0
        listing = _safer("inbox", "list", "--recipient", "portsmouth-csc", env=env, cwd=tmp_path)
        short_id = next(
            line.split("│")[1].strip()
            for line in listing.stdout.splitlines()
            if "DOMESTIC_ABUSE" in line
        )
        assert len(short_id) == 8

        # 2. Read it: decrypted content, and marked OPENED.
        shown = _safer(
            "inbox", "show", short_id, "--recipient", "portsmouth-csc", env=env, cwd=tmp_path
        )
        assert shown.returncode == 0, shown.stderr
        assert "Poppy" in shown.stdout and "Data Protection Act 2018" in shown.stdout
        assert "receipt(s) sent" in shown.stderr

        # 2b. Ten days on, it is overdue for the MASH (nobody has actioned it).
        later = (datetime.now(UTC) + timedelta(days=10)).isoformat()

        def overdue_ids() -> list[str]:
            result = _safer("overdue", "--at", later, "--json", env=env, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            return [row["disclosure_id"] for row in json.loads(result.stdout)]

        _wait_for(lambda: any(i.startswith(short_id) for i in overdue_ids()))
        tracked = _safer("track", CONCERN_ID, "--json", env=env, cwd=tmp_path)
        rows = {r["recipient"]: r for r in json.loads(tracked.stdout)}
        assert rows["portsmouth-csc"]["deadline"] and rows["school-116330"]["deadline"]
        assert rows["portsmouth-yjs"]["outcome"] == "WITHHELD"
        by_ref = _safer("track", "--source-ref", "44260481273", "--json", env=env, cwd=tmp_path)
        assert json.loads(by_ref.stdout) == json.loads(tracked.stdout)

        # 3. Action it with a note for the police.
        note = "Strategy discussion booked for 10:00 with police and health"
        acted = _safer(
            "inbox",
            "action",
            short_id,
            "--recipient",
            "portsmouth-csc",
            "--outcome",
            "STRATEGY_DISCUSSION",
            "--note",
            note,
            env=env,
            cwd=tmp_path,
        )
        assert acted.returncode == 0, acted.stderr
        assert "ACTIONED" in acted.stdout
        again = _safer(
            "inbox",
            "action",
            short_id,
            "--recipient",
            "portsmouth-csc",
            "--outcome",
            "NFA",
            env=env,
            cwd=tmp_path,
        )
        assert "already ACTIONED" in again.stdout
        after = _safer("inbox", "list", "--recipient", "portsmouth-csc", env=env, cwd=tmp_path)
        assert short_id not in after.stdout, "an actioned disclosure leaves the to-do list"

        # 4. Every step is in the audit log, against the disclosure (two-sided audit).
        full_id = next(i for i in _ids(inbox_db) if i.startswith(short_id))
        _wait_for(
            lambda: _statuses(data / "audit.db", full_id) == ["ACTIONED", "OPENED", "RECEIVED"]
        )

        _wait_for(lambda: not any(i.startswith(short_id) for i in overdue_ids()))
        status = json.loads(_safer("track", CONCERN_ID, "--json", env=env, cwd=tmp_path).stdout)
        assert {r["recipient"]: r for r in status}["portsmouth-csc"]["time_left"] == "done"

        # 5. The note is readable by the police only.
        receipts = asyncio.run(read_topic(bootstrap, Settings().topics.receipts))
        codec = Codec(EmbeddedRegistry(None))
        actioned = [
            r
            for r in (codec.decode(m.value).record for m in receipts)
            if r["disclosure_id"] == full_id and r["status"] == "ACTIONED"
        ]
        assert actioned and actioned[0]["outcome_code"] == "STRATEGY_DISCUSSION"
        sealed = SealedPayload(**actioned[0]["note"])
        keys = KeyStore(data / "keys")
        police = "hampshire-constabulary"
        assert (
            open_sealed(
                sealed, keys.encryption_private(police), disclosure_id=full_id, recipient_id=police
            ).decode()
            == note
        )
        with pytest.raises(CryptoError):
            open_sealed(
                sealed,
                keys.encryption_private("portsmouth-csc"),
                disclosure_id=full_id,
                recipient_id=police,
            )
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    assert up.returncode == 0


def _ids(db: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT disclosure_id FROM disclosures")]


def test_inbox_help_teaches_the_workflow(tmp_path: Path) -> None:
    result = _safer("inbox", "action", "--help", env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0
    assert "STRATEGY_DISCUSSION" in result.stdout and "example" in result.stdout
    missing = _safer("inbox", "list", "--recipient", "nobody", env=_env(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2
    assert "safer inbox list" in missing.stderr
