"""Retention enforced (issue 15.5).

* The governing agreement of an inbox copy is found from the recipient's agency type and
  the disclosure's purpose; its retention is added in calendar terms.
* `purge_inboxes` deletes exactly the copies past their agreement's retention (a social
  care copy after P6Y; a health copy, P25Y, stays), writes one PURGED audit entry for each
  first, never stores a purged disclosure again, is idempotent, and leaves the audit log
  whole (it still verifies; nothing in it is deleted).
* Topic retention follows an agreement where it is shorter than the delivery retention;
  hips.audit stays infinite whatever the agreements say.
* `safer inbox purge --dry-run --json` lists what would go and deletes nothing.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from adapters import Inbox
from audit import AuditStore
from broker import TopicLayout, Topics, topic_plan
from consent import add_retention, governing_agreement, retention_days
from safer import Runtime
from safer._retention import purge_inboxes
from safer.cli import main
from schemas import AuditEvent, ConcernModel

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def test_retention_arithmetic_and_the_governing_agreement(runtime: Runtime) -> None:
    leap = datetime(2024, 2, 29, 12, 0, tzinfo=UTC)
    assert add_retention(leap, "P1Y") == datetime(2025, 2, 28, 12, 0, tzinfo=UTC)
    assert add_retention(leap, "P1M2D") == datetime(2024, 3, 31, 12, 0, tzinfo=UTC)
    assert add_retention(leap, "P6Y") == datetime(2030, 2, 28, 12, 0, tzinfo=UTC)
    assert retention_days("P6Y") == 6 * 365 and retention_days("P2W") == 14
    policy = runtime.deployment.policy
    health = next(a for a in policy.agreements if a.id == "police-health-safeguarding")
    found = governing_agreement(policy, "health", health.purpose)
    assert found is not None and found.retention == "P25Y"
    assert governing_agreement(policy, "health", "some other purpose") is None
    assert governing_agreement(policy, "education", health.purpose) is None


def _fill_inboxes(
    runtime: Runtime, example: dict[str, Any], concern_id: str | None = None
) -> dict[str, list[str]]:
    """Route the example concern and store each disclosure in its recipient's inbox."""
    data = copy.deepcopy(example)
    data["concern_id"] = concern_id or str(uuid.uuid4())
    record = runtime.police_adapter().prepare(ConcernModel.model_validate(data))
    plan = runtime.router_core().plan(
        topic="hips.inbound.police",
        partition=0,
        offset=1,
        key=record.key,
        value=record.value,
        headers=record.headers,
        now=NOW,
    )
    stored: dict[str, list[str]] = {}
    for recipient in runtime.deployment.directory.recipients:
        topics = set(runtime.recipient_topics(recipient))
        mine = [o for o in plan.outputs if o.topic in topics]
        if not mine:
            continue
        adapter = runtime.recipient_adapter(recipient)
        batch = {
            TopicPartition(o.topic, 0): [
                SimpleNamespace(
                    topic=o.topic, partition=0, offset=i, value=o.value, headers=list(o.headers)
                )
            ]
            for i, o in enumerate(mine)
        }
        if adapter.ingest(batch):
            stored[recipient.id] = adapter.inbox.disclosure_ids()
        adapter.inbox.close()
    return stored


def test_purge_deletes_what_its_agreement_no_longer_allows_and_audits_it_first(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    stored = _fill_inboxes(runtime, example_concern)
    assert {"portsmouth-csc", "portsmouth-health"} <= set(stored)
    soon = datetime.now(UTC) + timedelta(days=365)
    assert purge_inboxes(runtime, soon) == []  # nothing is due within a year

    later = datetime.now(UTC) + timedelta(days=6 * 366 + 2)  # past P6Y, before P25Y
    planned = purge_inboxes(runtime, later, dry_run=True)
    assert {p.recipient_id for p in planned} >= {"portsmouth-csc"}
    assert "portsmouth-health" not in {p.recipient_id for p in planned}
    with Inbox(runtime.inbox_path("portsmouth-csc")) as inbox:
        assert inbox.count() == len(stored["portsmouth-csc"])  # a dry run deletes nothing

    purged = purge_inboxes(runtime, later)
    assert [(p.disclosure_id, p.retention) for p in purged] == [
        (p.disclosure_id, p.retention) for p in planned
    ]
    assert all(p.seq is not None and p.retention == "P6Y" for p in purged)
    with Inbox(runtime.inbox_path("portsmouth-csc")) as inbox:
        assert inbox.count() == 0 and set(inbox.purged()) == set(stored["portsmouth-csc"])
    with Inbox(runtime.inbox_path("portsmouth-health")) as inbox:
        assert inbox.count() == len(stored["portsmouth-health"])
    with AuditStore(runtime.settings.audit_db) as store:
        entries = list(store.records(event=AuditEvent.PURGED))
        assert {e.disclosure_id for e in entries} == {p.disclosure_id for p in purged}
        assert all("P6Y" in e.reasons[0] and e.actor == "safer-retention" for e in entries)
        assert store.verify().entries == len(entries)
    assert purge_inboxes(runtime, later) == []  # idempotent
    # A purged disclosure read again from its topic is never stored again...
    concern_id = entries[0].concern_id
    assert concern_id is not None
    again = _fill_inboxes(runtime, example_concern, concern_id)
    assert "portsmouth-csc" not in again and "portsmouth-health" not in again
    with Inbox(runtime.inbox_path("portsmouth-csc")) as inbox:
        assert inbox.count() == 0
    # ...while a new concern's disclosures are.
    assert "portsmouth-csc" in _fill_inboxes(runtime, example_concern)


def test_topic_retention_follows_a_shorter_agreement_and_the_audit_topic_is_forever(
    runtime: Runtime,
) -> None:
    layout = TopicLayout()
    plan = {
        s.name: s.configs
        for s in topic_plan(
            Topics(),
            layout,
            publisher_agency_types=["police"],
            agreement_retention_days={"health": 7, "social-care": 3, "education": 9000},
        )
    }
    day = 24 * 3600 * 1000
    assert plan["hips.portsmouth.health.disclosures"]["retention.ms"] == str(7 * day)
    assert plan["hips.portsmouth.triage"]["retention.ms"] == str(3 * day)
    assert plan["hips.portsmouth.education.disclosures"]["retention.ms"] == str(30 * day)
    assert plan["hips.audit"]["retention.ms"] == "-1"
    assert plan["hips.audit"]["retention.bytes"] == "-1"
    shipped = {s.name: s.configs for s in runtime.topic_specs()}
    assert shipped["hips.audit"]["retention.ms"] == "-1"
    assert runtime.agreement_retention_days()["health"] == 25 * 365


@pytest.mark.usefixtures("keep_logging")
def test_the_cli_lists_what_would_go_without_deleting(
    runtime: Runtime, example_concern: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    stored = _fill_inboxes(runtime, example_concern)
    settings = runtime.settings
    base = ["--data-dir", str(settings.data_dir), "--deploy-dir", str(settings.deploy_dir)]
    as_of = (datetime.now(UTC) + timedelta(days=26 * 366)).isoformat()
    assert main([*base, "inbox", "purge", "--as-of", as_of, "--dry-run", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["disclosure_id"] for r in rows} == {d for ids in stored.values() for d in ids}
    assert all(r["audit_seq"] is None for r in rows)
    with Inbox(runtime.inbox_path("portsmouth-health")) as inbox:
        assert inbox.count() == len(stored["portsmouth-health"])
