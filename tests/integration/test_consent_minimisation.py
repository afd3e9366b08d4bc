"""Minimisation, proven on a real run: each recipient's decrypted payload holds only its
profile's fields (issue 3 §5).

Synthetic concerns go through the whole pipeline on the embedded broker: police
adapter → router (decide, minimise, encrypt, audit first) → every recipient
adapter (verify, decrypt, store). Each inbox item's decrypted payload is then
compared with the profile of the decision that produced it and with the audit
record's ``fields_disclosed``.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from adapters import Inbox
from audit import AuditStore
from consent import WITHHELD_REASON, PolicySet

from .spine import concerns, make_runtime, run_flow

pytestmark = pytest.mark.kafka


def leaf_paths(value: Any, prefix: str = "") -> set[str]:
    """Every dotted path to a value in a JSON tree (lists are transparent)."""
    if isinstance(value, dict):
        found: set[str] = set()
        for key, inner in value.items():
            found |= leaf_paths(inner, f"{prefix}.{key}" if prefix else key)
        return found
    if isinstance(value, list):
        found = set()
        for item in value:
            found |= leaf_paths(item, prefix)
        return found or {prefix}
    return {prefix}


def covered(path: str, fields: tuple[str, ...] | list[str]) -> bool:
    return any(path == f or path.startswith(f"{f}.") for f in fields)


def test_each_recipient_sees_only_its_profile(kafka_bootstrap: str, tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"mn{secrets.token_hex(3)}")
    items = concerns(80, seed=29)

    async def flow() -> None:
        await runtime.create_topics()
        await run_flow(runtime, items, expected={c.concern_id for c in items})

    asyncio.run(flow())
    policy: PolicySet = runtime.deployment.policy
    with AuditStore(runtime.settings.audit_db) as store:
        audits = {
            a.disclosure_id: a
            for a in store.records()
            if a.event.value in ("DISCLOSED", "REFERRED") and a.disclosure_id
        }
    by_concern = {c.concern_id: c for c in items}
    checked = 0
    profiles_seen: set[str] = set()
    for recipient in runtime.deployment.directory.recipients:
        path = runtime.inbox_path(recipient.id)
        if not path.exists():
            continue
        with Inbox(path) as inbox:
            for item in inbox.items():
                profile = policy.profile(item.profile)
                audit = audits[item.disclosure_id]
                payload = item.payload
                allowed = ("concern_id", *profile.fields)
                stubs = [s for s in payload.get("subjects", []) if "withheld" in s]
                real = [s for s in payload.get("subjects", []) if "withheld" not in s]
                shown = leaf_paths({k: v for k, v in payload.items() if k != "subjects"})
                if real:
                    shown |= leaf_paths({"subjects": real})
                outside = sorted(p for p in shown if not covered(p, allowed))
                assert not outside, f"{recipient.id} got {outside} outside {profile.name}"
                for stub in stubs:
                    assert stub == {
                        "subject_ref": stub["subject_ref"],
                        "role": stub["role"],
                        "withheld": WITHHELD_REASON,
                    }
                roles = {r.value for r in profile.subject_roles}
                assert {s["role"] for s in payload.get("subjects", [])} <= roles, recipient.id
                # What the audit log says was disclosed is exactly what arrived.
                assert set(audit.fields_disclosed) <= set(allowed)
                assert all(covered(p, audit.fields_disclosed) for p in shown - {"concern_id"})
                stub_paths = {"subjects.subject_ref", "subjects.role"} if stubs else set()
                unsent = [
                    f
                    for f in audit.fields_disclosed
                    if not any(covered(p, (f,)) for p in shown | stub_paths)
                    and not (f == "subjects" and (real or stubs))
                ]
                assert not unsent, f"audit lists {unsent} but {recipient.id} did not get them"
                assert audit.payload_sha256 == item.payload_sha256
                assert audit.recipient == recipient.id
                # Nothing about a person the profile leaves out reaches the recipient.
                concern = by_concern[item.concern_id]
                blob = str(payload)
                for subject in concern.subjects:
                    if subject.role.value not in roles or subject.subject_ref in (
                        s["subject_ref"] for s in stubs
                    ):
                        if subject.nhs_number:
                            assert subject.nhs_number not in blob
                        if subject.police_person_id:
                            assert subject.police_person_id not in blob
                profiles_seen.add(profile.name)
                checked += 1
    assert checked >= 80, f"only {checked} disclosures were checked"
    # The run exercised the profiles with the most to hide.
    assert {"safeguarding-full", "health-safeguarding", "encompass-notification"} <= profiles_seen
