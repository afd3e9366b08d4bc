"""`safer keys rotate|revoke|list|publish`: operate signing keys for years (issue 15.1).

The key store under ``<data-dir>/keys`` is this data directory's record of
every signing key (current, rotated out, revoked). Each change is appended to
the audit log (KEY_ROTATED, KEY_REVOKED) and published as a signed key event
on the compacted ``hips.keys`` topic, which the router and the recipients
follow: a revocation takes effect on their next poll (within a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.table import Table

from audit import AuditRecord, entry_id_for
from broker import (
    ADMIN_PRINCIPAL,
    KEY_ADMIN_ID,
    KEY_REVOCATION_REASONS,
    KeyEvent,
    KeyInfo,
    key_event_record,
    make_producer,
    send_all,
    start_client,
)
from schemas import AuditEvent, BrokerError, ConfigError, ReasonCode

from ._cli_common import FORMATTER, err, out, settings_from
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["key_events", "publish_key_events", "register_key_actions", "revoke_key", "rotate_key"]

#: What each identity's signing key is used for (``safer keys list``).
_USE = {
    "safer-router": "signs disclosures, referrals, quarantine and audit batches",
    "safer-audit-log": "signs audit checkpoints (C2SP signed notes)",
    KEY_ADMIN_ID: "signs key events on hips.keys",
}


def _use(runtime: Runtime, agency_id: str) -> str:
    if agency_id in _USE:
        return _USE[agency_id]
    directory = runtime.deployment.directory
    if directory.publisher(agency_id) is not None:
        return "signs concerns and consent records"
    if directory.recipient(agency_id) is not None:
        return "signs receipts and consent records"
    return "not in the directory (a partner that left?)"


def key_events(runtime: Runtime, now: datetime) -> list[KeyEvent]:
    """The current state of every signing key in the store, as key events."""
    events: list[KeyEvent] = []
    for info in runtime.keys.key_infos(now):
        raw = _public_raw(runtime, info.key_id)
        if info.state == "revoked":
            reason = info.reason if info.reason in KEY_REVOCATION_REASONS else "compromised"
            at = info.revoked_at or now
            events.append(KeyEvent(info.key_id, info.agency_id, raw, "REVOKED", at, reason=reason))
        elif info.retire_at is not None:
            events.append(
                KeyEvent(info.key_id, info.agency_id, raw, "RETIRING", now, info.retire_at)
            )
        else:
            events.append(KeyEvent(info.key_id, info.agency_id, raw, "ACTIVE", info.created_at))
    return events


def _public_raw(runtime: Runtime, kid: str) -> bytes:
    found = runtime.keys.public_by_id(kid)
    if found is None:
        raise ConfigError(f"key {kid} is not in the key store", code=ReasonCode.KEY_MISSING)
    return found[1].public_bytes_raw()


async def publish_key_events(runtime: Runtime, events: Sequence[KeyEvent]) -> int:
    """Publish ``events`` on hips.keys, signed by the key administrator."""
    runtime.keys.init_agency(KEY_ADMIN_ID)  # an older data directory may lack it
    admin = runtime.keys.signing_identity(KEY_ADMIN_ID)
    topic = runtime.settings.topics.keys
    records = [key_event_record(topic, e, admin) for e in events]
    producer = make_producer(runtime.bootstrap, **runtime.security_for(ADMIN_PRINCIPAL))
    await start_client(producer, runtime.bootstrap)
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()
    return len(records)


def _audit(runtime: Runtime, record: AuditRecord) -> int | None:
    """Append a key event to the local audit log; its seq (None if already there)."""
    runtime.settings.data_dir.mkdir(parents=True, exist_ok=True)
    with runtime.audit_store() as store:
        (result,) = store.append([record])
    return None if result.duplicate else result.seq


def rotate_key(
    runtime: Runtime, agency_id: str, *, overlap: timedelta, actor: str, now: datetime
) -> tuple[str, str, datetime, list[KeyEvent]]:
    """New signing key for ``agency_id``; the old one verifies until ``now + overlap``."""
    keys = runtime.keys
    if agency_id not in runtime.key_identities():
        raise ConfigError(
            f"{agency_id!r} is not an identity of this deployment",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint="`safer keys list` shows every identity with keys",
        )
    if not keys.has_agency(agency_id):
        raise ConfigError(
            f"{agency_id} has no keys yet",
            code=ReasonCode.KEY_MISSING,
            hint="run `safer keys init`",
        )
    retire_at = now + overlap
    old, new = keys.rotate_signing(agency_id, retire_at)
    _audit(
        runtime,
        AuditRecord(
            seq=None,
            entry_id=entry_id_for(AuditEvent.KEY_ROTATED, f"{old}:{new}"),
            event=AuditEvent.KEY_ROTATED,
            source=agency_id,
            reasons=(
                f"signing key {old} of {agency_id} rotated to {new}; {old} verifies until "
                f"{retire_at.astimezone(UTC).isoformat(timespec='seconds')} "
                f"(overlap {overlap})",
            ),
            credential=new,
            at=now,
            actor=actor,
        ),
    )
    events = [
        KeyEvent(new, agency_id, _public_raw(runtime, new), "ACTIVE", now),
        KeyEvent(old, agency_id, _public_raw(runtime, old), "RETIRING", now, retire_at),
    ]
    return old, new, retire_at, events


def revoke_key(
    runtime: Runtime, kid: str, *, reason: str, actor: str, now: datetime
) -> tuple[str, KeyEvent]:
    """Revoke signing key ``kid``: stored, audited, and its signed event (to publish)."""
    keys = runtime.keys
    kid = kid.strip().lower()
    agency_id = keys.owner_of(kid)
    if agency_id is None:
        raise ConfigError(
            f"no signing key {kid[:16]!r} in this key store",
            code=ReasonCode.KEY_MISSING,
            hint="copy the key id from `safer keys list`",
        )
    if reason not in KEY_REVOCATION_REASONS:
        raise ConfigError(
            f"unknown reason {reason[:30]!r}",
            code=ReasonCode.CONFIG_INVALID,
            hint=f"use one of: {', '.join(KEY_REVOCATION_REASONS)}",
        )
    if keys.signing_key_id(agency_id) == kid and agency_id != KEY_ADMIN_ID:
        # Revoking the key an agency signs with now: it must rotate, or it stops working.
        err.print(
            f"[yellow]{kid} is {agency_id}'s current key[/]: everything it signs is refused "
            f"from now on; give it a new key with `safer keys rotate {agency_id} --overlap 0`"
        )
    keys.revoke(kid, agency_id=agency_id, reason=reason, at=now)
    _audit(
        runtime,
        AuditRecord(
            seq=None,
            entry_id=entry_id_for(AuditEvent.KEY_REVOKED, kid),
            event=AuditEvent.KEY_REVOKED,
            source=agency_id,
            reason_codes=(ReasonCode.KEY_REVOKED.value,),
            reasons=(
                f"signing key {kid} of {agency_id} revoked ({reason}: "
                f"{KEY_REVOCATION_REASONS[reason]}); anything signed with it is quarantined "
                "as KEY_REVOKED from now on",
            ),
            credential=kid,
            at=now,
            actor=actor,
        ),
    )
    raw = _public_raw(runtime, kid)
    return agency_id, KeyEvent(kid, agency_id, raw, "REVOKED", now, reason=reason, actor=actor)


def _publish_or_explain(runtime: Runtime, events: Sequence[KeyEvent]) -> int:
    try:
        bootstrap = resolve_bootstrap(runtime.settings)
    except BrokerError as exc:
        err.print(
            f"[yellow]not published[/]: {exc.message}. The key store and the audit log have "
            "the change; run `safer keys publish` once the broker is up, so the router and "
            "the recipients learn it"
        )
        return 1
    live = Runtime(runtime.settings, bootstrap)
    count = asyncio.run(publish_key_events(live, events))
    out.print(f"published {count} key event(s) on {runtime.settings.topics.keys}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    runtime = Runtime(settings_from(args), bootstrap="")
    now = datetime.now(UTC)
    old, new, retire_at, events = rotate_key(
        runtime,
        args.agency,
        overlap=timedelta(hours=args.overlap),
        actor=args.actor,
        now=now,
    )
    if args.agency == "safer-audit-log":
        err.print(
            "[yellow]the audit log's key changed[/]: checkpoints from now on are signed with "
            "it; give auditors and witnesses the new verifier key (`safer audit checkpoint` "
            "prints it) and keep the old one for older checkpoints"
        )
    if args.agency == KEY_ADMIN_ID:
        err.print(
            "[yellow]the key administrator's key changed[/]: running services still trust "
            "the old one for key events; give partners the new public key "
            f"(<data-dir>/keys/{KEY_ADMIN_ID}/signing.pub) and restart `safer up`"
        )
    out.print(
        f"[green]rotated[/] {args.agency}: new signing key {new}; old key {old} verifies "
        f"until {retire_at.isoformat(timespec='seconds')} (KEY_ROTATED in the audit log)"
    )
    return _publish_or_explain(runtime, events)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    runtime = Runtime(settings_from(args), bootstrap="")
    agency_id, event = revoke_key(
        runtime, args.key_id, reason=args.reason, actor=args.actor, now=datetime.now(UTC)
    )
    out.print(
        f"[red]revoked[/] signing key {event.key_id} of {agency_id} ({args.reason}; "
        "KEY_REVOKED in the audit log)"
    )
    return _publish_or_explain(runtime, [event])


def cmd_keys_publish(args: argparse.Namespace) -> int:
    runtime = Runtime(settings_from(args), bootstrap="")
    return _publish_or_explain(runtime, key_events(runtime, datetime.now(UTC)))


def _age(info: KeyInfo, now: datetime) -> str:
    days = (now - info.created_at).days
    return f"{days} d" if days else "today"


def cmd_keys_list(args: argparse.Namespace) -> int:
    runtime = Runtime(settings_from(args), bootstrap="")
    now = datetime.now(UTC)
    infos = runtime.keys.key_infos(now)
    if not infos:
        err.print("no keys yet: run `safer keys init`")
        return 1
    rows: list[dict[str, Any]] = [
        {
            "agency_id": i.agency_id,
            "key_id": i.key_id,
            "state": i.state,
            "created_at": i.created_at.isoformat(timespec="seconds"),
            "age_days": (now - i.created_at).days,
            "retire_at": i.retire_at.isoformat(timespec="seconds") if i.retire_at else None,
            "revoked_at": i.revoked_at.isoformat(timespec="seconds") if i.revoked_at else None,
            "reason": i.reason,
            "use": _use(runtime, i.agency_id),
        }
        for i in infos
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    table = Table(title=f"signing keys in {runtime.settings.keys_dir}")
    for column in ("identity", "key id", "state", "age", "until / why", "use"):
        table.add_column(column)
    style = {"active": "green", "retiring": "yellow", "retired": "dim", "revoked": "red"}
    for info, row in zip(infos, rows, strict=True):
        note = row["retire_at"] or ""
        if info.state == "revoked":
            note = f"{row['revoked_at']} {info.reason}"
        table.add_row(
            info.agency_id,
            info.key_id,
            f"[{style[info.state]}]{info.state}[/]",
            _age(info, now),
            note,
            row["use"],
        )
    out.print(table)
    return 0


def register_key_actions(keys_sub: Any) -> None:
    """Adds `keys rotate|revoke|list|publish` to the `keys` group."""
    rotate = keys_sub.add_parser(
        "rotate",
        help="give an agency a new signing key; the old one verifies for an overlap",
        formatter_class=FORMATTER,
        description="Create a new Ed25519 signing key for AGENCY (a publisher, a recipient,\n"
        "safer-router, safer-audit-log or safer-key-admin). The old public key is kept\n"
        "and still verifies until now + --overlap hours, so records the agency signed\n"
        "before the switch are still routed; from then on they are quarantined as\n"
        "KEY_REVOKED (retired). The old private key is deleted. The rotation is\n"
        "recorded as KEY_ROTATED in the audit log and published on hips.keys (signed by\n"
        "safer-key-admin), which the router and recipients follow. A running service\n"
        "that signs with the rotated key picks up the new one when restarted.\n\n"
        "examples:\n  safer keys rotate hampshire-constabulary\n"
        "  safer keys rotate safer-router --overlap 0 --actor ops-0042",
    )
    rotate.add_argument("agency", metavar="AGENCY", help="the identity whose key to rotate")
    rotate.add_argument(
        "--overlap",
        type=float,
        default=24.0,
        help="hours the old key still verifies (default 24; 0 after a compromise)",
    )
    rotate.add_argument("--actor", default="operator", help="who rotates: a role or staff id")
    rotate.set_defaults(func=cmd_keys_rotate)

    revoke = keys_sub.add_parser(
        "revoke",
        help="revoke a signing key: anything signed with it is quarantined",
        formatter_class=FORMATTER,
        description="Revoke the signing key KEY_ID (16 hex digits, from `safer keys list`).\n"
        "The revocation is stored in the key store, recorded as KEY_REVOKED in the\n"
        "audit log, and published as a signed event on hips.keys. The router then\n"
        "quarantines every record signed with that key as KEY_REVOKED (within a second),\n"
        "and recipients refuse disclosures signed with a revoked router key. Cannot be\n"
        "undone. Revoking an agency's current key stops it: rotate it first\n"
        "(`safer keys rotate AGENCY --overlap 0`), then revoke the old key id.\n\n"
        "Reasons (fixed codes; no free text goes into the log):\n"
        + "".join(f"  {k:<14}{v}\n" for k, v in KEY_REVOCATION_REASONS.items())
        + "\nexamples:\n  safer keys revoke 3f2a9c0d1e2f3a4b --reason compromised\n"
        "  safer keys revoke 3f2a9c0d1e2f3a4b --reason partner-left --actor dpo-0007",
    )
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key id (16 hex digits)")
    revoke.add_argument(
        "--reason", required=True, choices=sorted(KEY_REVOCATION_REASONS), help="why"
    )
    revoke.add_argument("--actor", default="operator", help="who revokes: a role or staff id")
    revoke.set_defaults(func=cmd_keys_revoke)

    listing = keys_sub.add_parser(
        "list",
        help="every signing key: state, age and use",
        formatter_class=FORMATTER,
        description="List every signing key in the key store: the identity, the key id, its\n"
        "state (active; retiring, i.e. rotated out and still verifying until a time;\n"
        "retired; revoked, with when and why), its age and what it signs. Read-only;\n"
        "needs no broker. --json prints a list of objects.\n\n"
        "examples:\n  safer keys list\n  safer keys list --json",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_keys_list)

    publish = keys_sub.add_parser(
        "publish",
        help="(re)publish every key's state on hips.keys",
        formatter_class=FORMATTER,
        description="Publish the current state of every signing key in the key store as\n"
        "signed events on hips.keys. Idempotent (the topic is compacted by key id).\n"
        "Run it after a rotate or revoke made while the broker was down, and when a\n"
        "partner joins (so every service trusts its key).\n\n"
        "example:\n  safer keys publish",
    )
    publish.set_defaults(func=cmd_keys_publish)
