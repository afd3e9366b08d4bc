"""`safer quarantine list|show|replay`: work the quarantine after a fix (issue 11)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from audit import AuditStore
from broker import (
    ROUTER_ID,
    QuarantineItem,
    fetch_original,
    make_producer,
    read_quarantine,
    replay_record,
    send_all,
)
from schemas import AuditEvent, ConfigError, ReasonCode

from ._cli_common import FORMATTER, err, out, run_async, settings_from
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["register"]

_REPLAY_REASON = "marked as a replay of quarantine record "


def _time(text: str, flag: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} is not an ISO 8601 date or time",
            code=ReasonCode.CONFIG_INVALID,
            hint=f"for example {flag} 2026-11-24 or {flag} 2026-11-24T09:00Z",
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _replays(runtime: Runtime) -> dict[str, int]:
    """How often each quarantine record was replayed, from the audit log (if here)."""
    db = runtime.settings.audit_db
    if not db.exists():
        return {}
    counts: dict[str, int] = {}
    with AuditStore(db) as store:
        for record in store.records(event=AuditEvent.QUARANTINE_REPLAYED):
            for reason in record.reasons:
                if reason.startswith(_REPLAY_REASON):
                    qid = reason[len(_REPLAY_REASON) :].split()[0]
                    counts[qid] = counts.get(qid, 0) + 1
    return counts


def _chosen(items: list[QuarantineItem], args: argparse.Namespace) -> list[QuarantineItem]:
    since = _time(args.since, "--since") if getattr(args, "since", None) else None
    until = _time(args.until, "--until") if getattr(args, "until", None) else None
    codes = {c.upper() for c in getattr(args, "code", None) or ()}
    ids = [i.lower() for i in getattr(args, "ids", None) or ()]
    chosen = []
    for item in items:
        if codes and item.reason_code not in codes:
            continue
        if since and item.at < since:
            continue
        if until and item.at >= until:
            continue
        if ids and not any(item.quarantine_id.startswith(i) for i in ids):
            continue
        chosen.append(item)
    if ids:
        for prefix in ids:
            matches = [i for i in chosen if i.quarantine_id.startswith(prefix)]
            if len({i.quarantine_id for i in matches}) != 1:
                raise ConfigError(
                    f"{len(matches)} quarantine records start with {prefix!r}",
                    code=ReasonCode.CONFIG_INVALID,
                    hint="give more characters of the id (`safer quarantine list` shows them)",
                )
    return chosen


async def _load(runtime: Runtime) -> list[QuarantineItem]:
    return await read_quarantine(
        runtime.bootstrap,
        codec=runtime.codec,
        keyring=runtime.keyring(),
        topic=runtime.settings.topics.quarantine,
        router_id=ROUTER_ID,
        security=runtime.security,
    )


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))

    async def run(stop: asyncio.Event) -> int:
        items = _chosen(await _load(runtime), args)
        replays = _replays(runtime)
        if args.json:
            print(
                json.dumps(
                    [{**i.summary(), "replays": replays.get(i.quarantine_id, 0)} for i in items],
                    indent=1,
                )
            )
            return 0
        table = Table(title=f"quarantine ({len(items)} record(s))")
        for column in ("id", "quarantined at", "code", "concern", "source", "bytes", "replays"):
            table.add_column(column, no_wrap=column in ("id", "code"))
        for item in items:
            table.add_row(
                item.quarantine_id[:12],
                item.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                item.reason_code,
                (item.concern_id or "-")[:8],
                item.source,
                f"{item.original_size}" + ("" if not item.original_truncated else " (ref)"),
                str(replays.get(item.quarantine_id, 0)),
            )
        out.print(table)
        if items:
            err.print(
                "next: `safer quarantine show ID` for the detail; after a fix, "
                "`safer quarantine replay ID` (docs/REASON_CODES.md says what each code needs)"
            )
        return 0

    return run_async(run)


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))

    async def run(stop: asyncio.Event) -> int:
        (item,) = _chosen(await _load(runtime), argparse.Namespace(ids=[args.id]))
        summary = {**item.summary(), "replays": _replays(runtime).get(item.quarantine_id, 0)}
        if args.json:
            print(json.dumps(summary, indent=1))
        else:
            for key, value in summary.items():
                out.print(f"{key:>16}: {value}")
        if args.save_original:
            original = await fetch_original(runtime.bootstrap, item, security=runtime.security)
            args.save_original.write_bytes(original)
            args.save_original.chmod(0o600)
            err.print(
                f"wrote the original {len(original)} bytes to {args.save_original} (mode 0600): "
                "they are a signed concern and hold personal data; delete the file when done"
            )
        return 0

    return run_async(run)


def cmd_replay(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))
    if not (args.ids or args.code):
        raise ConfigError(
            "say which records to replay",
            code=ReasonCode.CONFIG_INVALID,
            hint="give quarantine ids, or --code CODE (with --since/--until) to replay a group",
        )

    async def run(stop: asyncio.Event) -> int:
        items = _chosen(await _load(runtime), args)
        replays = _replays(runtime)
        records = []
        for item in items:
            if item.reason_code == ReasonCode.TOO_LARGE.value:
                err.print(
                    f"{item.quarantine_id[:12]} SKIPPED TOO_LARGE: the same bytes would be "
                    "refused again; the publisher must send a smaller concern"
                )
                continue
            original = await fetch_original(runtime.bootstrap, item, security=runtime.security)
            records.append(replay_record(item, original))
            again = replays.get(item.quarantine_id, 0)
            note = f" (replayed {again} time(s) before: harmless)" if again else ""
            print(
                f"{item.quarantine_id} {'WOULD REPLAY' if args.dry_run else 'REPLAYED'} "
                f"{item.reason_code} to {item.source_topic}{note}",
                flush=True,
            )
        if args.dry_run or not records:
            return 0
        producer = make_producer(runtime.bootstrap, **runtime.security)
        await producer.start()
        try:
            await send_all(producer, records)
        finally:
            await producer.stop()
        err.print(
            f"[green]{len(records)} record(s) re-submitted[/]; the router audits each replay and "
            "its outcome (`safer quarantine list` shows the replays, `safer audit trail` the rest)"
        )
        return 0

    return run_async(run)


def _filters(parser: Any) -> None:
    parser.add_argument("--code", action="append", help="only this reason code (repeatable)")
    parser.add_argument("--since", help="quarantined at or after (ISO 8601, UTC if no zone)")
    parser.add_argument("--until", help="quarantined before (ISO 8601)")


def register(sub: Any) -> None:
    quarantine = sub.add_parser(
        "quarantine",
        help="list, inspect and replay quarantined records",
        formatter_class=FORMATTER,
        description="Every record the router could not route is quarantined with a reason code\n"
        "(docs/REASON_CODES.md), audited, and kept on hips.quarantine: the original\n"
        "signed bytes inline, or, for large ones, their SHA-256 and the source position\n"
        "that still holds them. After a fix (a new key, a corrected directory entry, a\n"
        "bug fixed) replay them: the router judges them again and audits the replay.\n\n"
        "examples:\n  safer quarantine list --code UNKNOWN_PUBLISHER --since 2026-11-24\n"
        "  safer quarantine show 3f2a9c\n"
        "  safer quarantine replay --code UNKNOWN_PUBLISHER --dry-run\n"
        "  safer quarantine replay 3f2a9c",
    )
    actions = quarantine.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="quarantined records, oldest first (ids, codes, positions; no content)",
        formatter_class=FORMATTER,
        description="List quarantine records with their reason code, source position, size\n"
        "and how often each was replayed. Never shows the content.\n\n"
        "example:\n  safer quarantine list --code SIGNATURE_INVALID --json",
    )
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)
    show = actions.add_parser(
        "show",
        help="one record's detail",
        formatter_class=FORMATTER,
        description="Show one quarantine record (give enough of its id to be unique).\n"
        "--save-original writes the original signed bytes to a file (mode 0600).\n\n"
        "example:\n  safer quarantine show 3f2a9c --save-original /tmp/q.bin",
    )
    show.add_argument("id", help="quarantine id or a unique prefix")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--save-original", type=Path, help="write the original bytes here")
    show.set_defaults(func=cmd_show)
    replay = actions.add_parser(
        "replay",
        help="re-submit records after a fix (audited; harmless to repeat)",
        formatter_class=FORMATTER,
        description="Re-submit the original signed bytes, unchanged, to the topic they came\n"
        "from, marked as a replay. The router judges them again and audits the replay\n"
        "and its outcome. A record routed by an earlier replay is recorded as REPLAY\n"
        "and sent nowhere; one still broken is quarantined again. TOO_LARGE records\n"
        "are skipped: the same bytes would be refused again.\n\n"
        "examples:\n  safer quarantine replay 3f2a9c 81bd04\n"
        "  safer quarantine replay --code UNKNOWN_PUBLISHER --since 2026-11-24 --dry-run",
    )
    replay.add_argument("ids", nargs="*", metavar="ID", help="quarantine ids or unique prefixes")
    _filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    replay.set_defaults(func=cmd_replay)
