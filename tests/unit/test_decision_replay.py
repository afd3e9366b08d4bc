"""Decision inputs (issue 15.4): every decision's audit record carries the hash of its
canonical input, and `safer policy explain --replay` recomputes it from the log and the
stored concern.

* Every decision the router plans (PERMIT, REFER and DENY) carries input_sha256, and a
  replay from the same concern reproduces it, with the decision id, outcome, reasons,
  fields, payload hash and deadline.
* A concern that differs in one field (a corrected copy) does not match, and says why.
* A policy change since the decision is named as the reason.
* The CLI prints the match and exits 0; on a mismatch it exits 1; the hash input holds no
  personal data in clear.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from audit import AuditRecord, AuditStore
from broker import replay_decision
from safer import Runtime
from safer.cli import main
from schemas import AuditEvent, ConcernModel

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DECISIONS = {AuditEvent.DISCLOSED, AuditEvent.REFERRED, AuditEvent.WITHHELD}


def _decided(runtime: Runtime, data: dict[str, Any]) -> list[AuditRecord]:
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
    assert plan.quarantine_code is None
    # Through the wire, as the audit feed sees them.
    return [
        AuditRecord.from_avro(r)
        for out in runtime.router_core().audit_out(plan.audits)
        for r in runtime.codec.decode(out.value, expect="audit_batch").record["records"]
        if r["event"] in {e.value for e in DECISIONS}
    ]


def _mixed(example: dict[str, Any]) -> dict[str, Any]:
    """The example made LOW with consent refused: some recipients are denied."""
    data = copy.deepcopy(example)
    data["risk_grade"] = "LOW"
    data["consent"] = {**data["consent"], "state": "REFUSED", "reason": "parent refused"}
    return data


def test_every_decision_carries_an_input_hash_that_a_replay_reproduces(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    events: set[AuditEvent] = set()
    for data in (example_concern, _mixed(example_concern)):
        concern = ConcernModel.model_validate(data)
        for audit in _decided(runtime, data):
            events.add(audit.event)
            assert audit.input_sha256 is not None and len(audit.input_sha256) == 64
            replay = replay_decision(runtime.deployment, audit, concern)
            assert replay.matches, replay.to_json()
            assert replay.why_not == []
            assert {c.name for c in replay.checks} >= {"decision_id", "payload_sha256", "deadline"}
    assert events == DECISIONS  # disclosures, referrals and refusals were all replayed


def test_inputs_differ_per_recipient_and_per_time(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    audits = _decided(runtime, example_concern)
    assert len({a.input_sha256 for a in audits}) == len(audits)
    concern = ConcernModel.model_validate(example_concern)
    later = dataclasses.replace(audits[0], at=datetime(2026, 11, 24, 11, 0, tzinfo=UTC))
    assert not replay_decision(runtime.deployment, later, concern).matches


def test_a_corrected_copy_of_the_concern_does_not_match_and_says_why(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    audit = _decided(runtime, example_concern)[0]
    changed = copy.deepcopy(example_concern)
    changed["narrative"] += " Added later."
    replay = replay_decision(runtime.deployment, audit, ConcernModel.model_validate(changed))
    assert not replay.matches
    assert replay.input_sha256 != audit.input_sha256
    assert any("not the one decided" in w for w in replay.why_not)
    # the outcome itself still matches: only the input hash tells the copies apart
    assert next(c for c in replay.checks if c.name == "decision").ok


def test_a_policy_change_is_named(runtime: Runtime, example_concern: dict[str, Any]) -> None:
    audit = _decided(runtime, example_concern)[0]
    old = dataclasses.replace(audit, policy_revision="sha256:" + "0" * 64)
    replay = replay_decision(runtime.deployment, old, ConcernModel.model_validate(example_concern))
    assert not replay.matches
    assert any("policy changed since" in w for w in replay.why_not)


def test_the_canonical_input_holds_no_personal_data(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    audit = _decided(runtime, example_concern)[0]
    replay = replay_decision(
        runtime.deployment, audit, ConcernModel.model_validate(example_concern)
    )
    text = json.dumps(replay.input)
    for pid in ("Poppy", "Walker", "9992048719", "Albert Road", "2016-"):
        assert pid not in text
    assert set(replay.input) == {
        "v",
        "concern_id",
        "concern_sha256",
        "considered",
        "recipient",
        "consent",
        "policy_revision",
        "agreement_ids",
        "decided_at",
    }
    assert replay.input["v"] == "safer-decision-input-v1"


@pytest.mark.usefixtures("keep_logging")
def test_the_cli_replays_a_logged_decision(
    runtime: Runtime,
    example_concern: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    audits = _decided(runtime, example_concern)
    with AuditStore(runtime.settings.audit_db) as store:
        store.append(audits)
    concern_file = tmp_path / "concern.json"
    concern_file.write_text(json.dumps(example_concern))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    base = [
        "--data-dir",
        str(runtime.settings.data_dir),
        "--deploy-dir",
        str(runtime.settings.deploy_dir),
    ]
    target = audits[0].disclosure_id
    assert target is not None
    code = main([*base, "policy", "explain", "--replay", target, str(concern_file), "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 0, answer
    assert answer["matches"] is True
    assert answer["input_sha256"]["logged"] == audits[0].input_sha256

    changed = copy.deepcopy(example_concern)
    changed["risk_grade"] = "LOW"
    concern_file.write_text(json.dumps(changed))
    code = main([*base, "policy", "explain", "--replay", target, str(concern_file)])
    text = capsys.readouterr().out
    assert code == 1
    assert "does not match" in text and "why not" in text
    for pid in ("Poppy", "Walker", "9992048719"):
        assert pid not in text
