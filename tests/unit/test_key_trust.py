"""Key rotation and revocation (issue 15.1), without Kafka: the key store, the keyring, the
signed key events, the router's verdicts and the recipient's, and the CLI.

* Rotation overlap: a concern signed with the old key is routed until the stated
  retirement time and quarantined as KEY_REVOKED after it; the new key routes at once.
* Revocation: a key event signed by the key administrator makes the router quarantine
  anything signed with the key as KEY_REVOKED; a recipient refuses a disclosure signed
  with a revoked router key; nothing un-revokes a key; events not signed by the
  administrator (or altered) are ignored.
* Restarts: a keyring built afresh from the key store keeps every rotation and revocation.
* The CLI: rotate/revoke are audited (KEY_ROTATED, KEY_REVOKED with the key id as the
  credential), list shows state, age and use, and a missing broker is explained.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit import AuditStore
from broker import (
    KEY_ADMIN_ID,
    KeyEvent,
    KeyFollower,
    KeyStore,
    OutRecord,
    key_event_record,
    read_key_event,
)
from safer import Runtime
from safer._cli_keys import key_events, revoke_key, rotate_key
from safer.cli import main
from schemas import AuditEvent, ConcernModel, ReasonCode, SaferError

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
POLICE = "hampshire-constabulary"


def _concern(example: dict[str, Any]) -> ConcernModel:
    data = copy.deepcopy(example)
    data["concern_id"] = str(uuid.uuid4())
    return ConcernModel.model_validate(data)


def _plan(runtime: Runtime, record: OutRecord, now: datetime, core: Any = None) -> Any:
    core = core or runtime.router_core()
    return core.plan(
        topic="hips.inbound.police",
        partition=0,
        offset=1,
        key=record.key,
        value=record.value,
        headers=record.headers,
        now=now,
    )


def _follower(runtime: Runtime) -> KeyFollower:
    follower = runtime.key_follower("safer-admin")
    assert follower is not None
    return follower


def _apply(follower: KeyFollower, runtime: Runtime, events: list[KeyEvent]) -> None:
    admin = runtime.keys.signing_identity(KEY_ADMIN_ID)
    for event in events:
        record = key_event_record("hips.keys", event, admin)
        assert follower.apply(record.key, record.value, record.headers) is not None


def test_a_rotated_key_verifies_until_its_retirement_and_not_after(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    old_signer = runtime.police_adapter()  # holds the old key
    signed_old = old_signer.prepare(_concern(example_concern))
    old, new, retire_at, events = rotate_key(
        runtime, POLICE, overlap=timedelta(hours=1), actor="ops", now=NOW
    )
    assert old != new and retire_at == NOW + timedelta(hours=1)
    fresh = Runtime(runtime.settings, runtime.bootstrap)  # a restarted router
    assert _plan(fresh, signed_old, NOW + timedelta(minutes=59)).quarantine_code is None
    late = _plan(fresh, signed_old, NOW + timedelta(hours=1))
    assert late.quarantine_code is ReasonCode.KEY_REVOKED
    assert "retired" in late.audits[0].reasons[0]
    signed_new = fresh.police_adapter().prepare(_concern(example_concern))
    assert _plan(fresh, signed_new, NOW).quarantine_code is None
    assert [e.state for e in events] == ["ACTIVE", "RETIRING"]


def test_a_running_router_learns_a_rotation_and_a_revocation_from_key_events(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    core = runtime.router_core()  # built before the rotation: knows only the old key
    follower = core.key_follower
    assert follower is not None
    old_signed = runtime.police_adapter().prepare(_concern(example_concern))
    _, new, _, events = rotate_key(
        runtime, POLICE, overlap=timedelta(hours=1), actor="ops", now=NOW
    )
    new_signed = (
        Runtime(runtime.settings, runtime.bootstrap)
        .police_adapter()
        .prepare(_concern(example_concern))
    )
    assert _plan(runtime, new_signed, NOW, core).quarantine_code is ReasonCode.UNKNOWN_PUBLISHER
    _apply(follower, runtime, events)
    assert _plan(runtime, new_signed, NOW, core).quarantine_code is None
    assert _plan(runtime, old_signed, NOW, core).quarantine_code is None  # overlap
    _, revoked = revoke_key(runtime, new, reason="compromised", actor="ops", now=NOW)
    _apply(follower, runtime, [revoked])
    plan = _plan(runtime, new_signed, NOW, core)
    assert plan.quarantine_code is ReasonCode.KEY_REVOKED
    # Sticky: an ACTIVE event for the key afterwards does not trust it again.
    _apply(follower, runtime, [events[0]])
    assert _plan(runtime, new_signed, NOW, core).quarantine_code is ReasonCode.KEY_REVOKED


def test_events_not_signed_by_the_key_administrator_are_ignored(runtime: Runtime) -> None:
    admin_key = runtime.keys.signing_public(KEY_ADMIN_ID)
    kid = runtime.keys.signing_key_id(POLICE)
    raw = runtime.keys.signing_public(POLICE).public_bytes_raw()
    event = KeyEvent(kid, POLICE, raw, "REVOKED", NOW, reason="compromised")
    router = runtime.keys.signing_identity("safer-router")  # not the administrator
    forged = key_event_record("hips.keys", event, router)
    assert read_key_event(admin_key, forged.key, forged.value, forged.headers) is None
    good = key_event_record("hips.keys", event, runtime.keys.signing_identity(KEY_ADMIN_ID))
    assert read_key_event(admin_key, good.key, good.value, good.headers) == event
    altered = good.value.replace(b"compromised", b"superseded_")
    assert read_key_event(admin_key, good.key, altered, good.headers) is None
    other_key = b"0" * 16  # the event moved under another key id
    assert read_key_event(admin_key, other_key, good.value, good.headers) is None
    follower = _follower(runtime)
    assert follower.apply(forged.key, forged.value, forged.headers) is None
    assert follower.ignored == 1


def test_a_recipient_refuses_a_disclosure_signed_with_a_revoked_router_key(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    plan = _plan(runtime, runtime.police_adapter().prepare(_concern(example_concern)), NOW)
    disclosure = next(o for o in plan.outputs if o.topic.endswith(".social-care.disclosures"))
    recipient = runtime.deployment.directory.recipient("portsmouth-csc")
    assert recipient is not None
    ring = runtime.keyring()
    adapter = runtime.recipient_adapter(recipient, keyring=ring)
    assert adapter._open(disclosure.value, disclosure.headers) is not None
    follower = _follower(runtime)
    follower.watch(ring)
    router_kid = runtime.keys.signing_key_id("safer-router")
    _, event = revoke_key(runtime, router_kid, reason="compromised", actor="ops", now=NOW)
    _apply(follower, runtime, [event])
    with pytest.raises(SaferError) as refused:
        adapter._open(disclosure.value, disclosure.headers)
    assert refused.value.code is ReasonCode.KEY_REVOKED


def test_a_restart_keeps_revocations_and_the_events_republish_them(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    signed = runtime.police_adapter().prepare(_concern(example_concern))
    kid = runtime.keys.signing_key_id(POLICE)
    revoke_key(runtime, kid, reason="lost", actor="ops", now=NOW)
    restarted = Runtime(runtime.settings, runtime.bootstrap)
    assert _plan(restarted, signed, NOW).quarantine_code is ReasonCode.KEY_REVOKED
    states = {e.key_id: e for e in key_events(restarted, NOW)}
    assert states[kid].state == "REVOKED" and states[kid].reason == "lost"
    with pytest.raises(SaferError):
        revoke_key(runtime, "0123456789abcdef", reason="lost", actor="ops", now=NOW)


@pytest.mark.usefixtures("keep_logging")
def test_the_cli_rotates_revokes_lists_and_audits_each_key_event(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    base = [
        "--data-dir",
        str(runtime.settings.data_dir),
        "--deploy-dir",
        str(runtime.settings.deploy_dir),
    ]
    old = runtime.keys.signing_key_id(POLICE)
    # No broker: the change is stored and audited, and the command says how to publish it.
    assert main([*base, "keys", "rotate", POLICE, "--overlap", "2", "--actor", "ops-1"]) == 1
    text = capsys.readouterr()
    assert "rotated" in text.out and "safer keys publish" in text.err
    assert main([*base, "keys", "revoke", old, "--reason", "compromised"]) == 1
    capsys.readouterr()
    assert main([*base, "keys", "list", "--json"]) == 0
    rows = {r["key_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[old]["state"] == "revoked" and rows[old]["reason"] == "compromised"
    new = KeyStore(runtime.settings.keys_dir).signing_key_id(POLICE)  # not the cached one
    assert new != old
    assert rows[new]["state"] == "active" and rows[new]["use"].startswith("signs concerns")
    assert rows[new]["age_days"] == 0
    with AuditStore(runtime.settings.audit_db) as store:
        rotated = list(store.records(event=AuditEvent.KEY_ROTATED))
        revoked = list(store.records(event=AuditEvent.KEY_REVOKED))
        assert store.verify().entries == 2
    assert [r.credential for r in rotated] == [new]
    assert [r.credential for r in revoked] == [old]
    assert revoked[0].actor == "operator" and rotated[0].actor == "ops-1"
    assert revoked[0].reason_codes == ("KEY_REVOKED",)
    assert main([*base, "keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
