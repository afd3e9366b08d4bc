"""`safer track` and `safer overdue`: where is each disclosure, and what is late.

Both read the audit log (decisions, deadlines, receipts), so they work for
the sender (police) and for each partnership's front door alike, and need no
broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.table import Table

from audit import AuditStore
from broker import Settings, load_deployment, read_topic, tracked_from_records
from consent import Directory, Tracked, alert_points, completed_at
from schemas import ConfigError, ReasonCode

from ._cli_common import FORMATTER, out, run_async, settings_from
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["PUBLISHED_DB", "record_published", "register", "track_rows"]

_UK = ZoneInfo("Europe/London")

#: The publisher's own list of what it sent: concern id ↔ its own reference.
PUBLISHED_DB = "published.db"


def record_published(data_dir: Path, rows: list[tuple[str, str]]) -> None:
    """Remember (concern_id, source_ref) pairs so `track --source-ref` can find them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(data_dir / PUBLISHED_DB) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS published (concern_id TEXT PRIMARY KEY,"
            " source_ref TEXT NOT NULL, published_at TEXT NOT NULL)"
        )
        now = datetime.now(UTC).isoformat(timespec="seconds")
        db.executemany(
            "INSERT OR IGNORE INTO published VALUES (?,?,?)", [(c, r, now) for c, r in rows]
        )


def _concern_for_ref(data_dir: Path, source_ref: str) -> list[str]:
    path = data_dir / PUBLISHED_DB
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT concern_id FROM published WHERE source_ref = ?", (source_ref,))
        return [r[0] for r in rows]


def _store(settings: Settings) -> AuditStore:
    if not settings.audit_db.exists():
        raise ConfigError(
            f"no audit log at {settings.audit_db}",
            code=ReasonCode.CONFIG_INVALID,
            hint="run `safer up` (or `safer demo`) first, or pass --data-dir",
        )
    return AuditStore(settings.audit_db)


def _left(due: datetime | None, now: datetime) -> str:
    if due is None:
        return "-"
    seconds = (due - now).total_seconds()
    hours, rest = divmod(abs(int(seconds)), 3600)
    span = f"{hours}h{rest // 60:02d}m"
    return f"overdue {span}" if seconds < 0 else f"{span} left"


def _state(item: Tracked, now: datetime) -> str:
    done = completed_at(item)
    if item.due is not None and ((done is None and item.due <= now) or (done and done > item.due)):
        return f"{item.status} · OVERDUE" if done is None else f"{item.status} (late)"
    return item.status


def track_rows(
    store: AuditStore, directory: Directory, concern_id: str, now: datetime
) -> list[dict[str, Any]]:
    """Where each recipient is with one concern ([] if the audit log has nothing yet).

    What `safer track --json` prints, and the gateway's GET /v1/concerns/{id} answers.
    """
    records = list(store.records(concern_id=concern_id))
    rows: list[dict[str, Any]] = []
    tracked = {t.disclosure_id: t for t in tracked_from_records(records, directory)}
    for record in records:
        event = record.event.value
        if event in ("DISCLOSED", "REFERRED") and record.disclosure_id in tracked:
            item = tracked[record.disclosure_id]
            rows.append(
                {
                    "concern_id": concern_id,
                    "recipient": item.recipient_id,
                    "outcome": event,
                    "decided": item.decided_at.isoformat(timespec="seconds"),
                    "received": item.received_at.isoformat(timespec="seconds")
                    if item.received_at
                    else None,
                    "opened": item.opened_at.isoformat(timespec="seconds")
                    if item.opened_at
                    else None,
                    "actioned": item.actioned_at.isoformat(timespec="seconds")
                    if item.actioned_at
                    else None,
                    "deadline": item.due.isoformat(timespec="seconds") if item.due else None,
                    "status": _state(item, now),
                    "time_left": _left(item.due, now) if completed_at(item) is None else "done",
                }
            )
        elif event in ("WITHHELD", "QUARANTINED"):
            rows.append(
                {
                    "concern_id": concern_id,
                    "recipient": record.recipient or "-",
                    "outcome": event,
                    "decided": record.at.isoformat(timespec="seconds"),
                    "received": None,
                    "opened": None,
                    "actioned": None,
                    "deadline": None,
                    "status": ", ".join(record.reason_codes) or event,
                    "time_left": "-",
                }
            )
    return rows


def cmd_track(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    concern_ids = [args.concern_id] if args.concern_id else []
    if args.source_ref:
        concern_ids = _concern_for_ref(settings.data_dir, args.source_ref)
        if not concern_ids:
            raise ConfigError(
                f"no concern published from here with reference {args.source_ref!r}",
                code=ReasonCode.NO_RECIPIENT,
                hint="`safer publish` records each reference; or track by concern id",
            )
    now = datetime.now(UTC)
    deployment = load_deployment(settings.deploy_dir)
    with _store(settings) as store:
        rows: list[dict[str, Any]] = []
        for concern_id in concern_ids:
            found = track_rows(store, deployment.directory, concern_id, now)
            if not found:
                raise ConfigError(
                    f"nothing in the audit log for concern {concern_id}",
                    code=ReasonCode.NO_RECIPIENT,
                    hint="it may not have been routed yet: is `safer up` running?",
                )
            rows += found
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title="Where each recipient is with this concern (UK time)")
    for column in (
        "recipient",
        "outcome",
        "decided",
        "received",
        "opened",
        "actioned",
        "deadline",
        "status",
        "time left",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["recipient"],
            row["outcome"],
            *(
                (row[k] or "-")[:16].replace("T", " ")
                for k in ("decided", "received", "opened", "actioned", "deadline")
            ),
            row["status"],
            row["time_left"],
        )
    out.print(table)
    return 0


def _as_at(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--at {text!r} is not an ISO 8601 time",
            code=ReasonCode.CONFIG_INVALID,
            hint="for example --at 2026-11-25T08:30 (UK time) or 2026-11-25T08:30Z",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=_UK)


def _uk(moment: datetime | None) -> str:
    return moment.astimezone(_UK).strftime("%Y-%m-%d %H:%M") if moment else "-"


def cmd_overdue(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    now = _as_at(args.at)
    deployment = load_deployment(settings.deploy_dir)
    with _store(settings) as store:
        tracked = tracked_from_records(store.records(), deployment.directory)
    late: list[tuple[str, Tracked, str]] = []
    for item in tracked:
        if item.due is None or completed_at(item) is not None:
            continue
        points = alert_points(item.decided_at, item.due)
        if item.due <= now:
            late.append(("OVERDUE", item, _left(item.due, now)))
        elif points.at_90 <= now:
            late.append(("AT RISK (90%)", item, _left(item.due, now)))
        elif points.at_50 <= now and args.all:
            late.append(("half time", item, _left(item.due, now)))
    if args.lscp:
        late = [x for x in late if x[1].lscp == args.lscp]
    late.sort(key=lambda x: (x[1].lscp, x[1].due or now))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "lscp": i.lscp,
                        "state": s,
                        "disclosure_id": i.disclosure_id,
                        "recipient": i.recipient_id,
                        "status": i.status,
                        "deadline": i.due.isoformat() if i.due else None,
                        "time_left": t,
                    }
                    for s, i, t in late
                ],
                indent=1,
            )
        )
        return 0
    if not late:
        out.print("[green]nothing overdue or at risk[/]")
        return 0
    table = Table(title="Overdue and at-risk disclosures, per partnership")
    for column in ("partnership", "state", "disclosure", "recipient", "status", "deadline", "time"):
        table.add_column(column)
    for state, item, left in late:
        table.add_row(
            item.lscp,
            state,
            item.disclosure_id[:8],
            item.recipient_id,
            item.status,
            item.due.isoformat(timespec="minutes")[:16].replace("T", " ") if item.due else "-",
            left,
        )
    out.print(table)
    out.print("act on one: safer inbox show ID --recipient RECIPIENT")
    return 0


def cmd_notices(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, resolve_bootstrap(settings))
    topic = f"{settings.topic_prefix}.notices.{args.agency}"

    async def read(stop: asyncio.Event) -> int:
        records = await read_topic(
            runtime.bootstrap, topic, **runtime.security_for(runtime.publisher(args.agency).id)
        )
        reports: dict[str, dict[str, Any]] = {}
        for record in records:
            report = runtime.codec.decode(record.value, expect="delivery_report").record
            reports.setdefault(report["report_id"], report)  # resends are deduplicated
        rows = sorted(reports.values(), key=lambda r: r["expired_at"])
        if args.json:
            print(json.dumps(rows, default=str, indent=1))
            return 0
        if not rows:
            out.print(f"[green]no non-delivery reports[/] on {topic}")
            return 0
        table = Table(title=f"Non-delivery reports for {args.agency} (UK time)")
        for column in ("concern", "recipient", "decided", "expired", "what to do"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(
                row["concern_id"],
                row["recipient_id"],
                _uk(row["decided_at"]),
                _uk(row["expired_at"]),
                row["detail"],
            )
        out.print(table)
        return 0

    return run_async(read)


def register(sub: Any) -> None:
    notices = sub.add_parser(
        "notices",
        help="non-delivery reports for your agency (MESH style)",
        formatter_class=FORMATTER,
        description="Read the non-delivery reports sent to your agency: disclosures that\n"
        "a recipient had not received within the expiry (default 4 hours, env\n"
        "SAFER_DELIVERY_EXPIRY_MINUTES). Each says what to do next. Needs a\n"
        "broker (`safer up` running, or KAFKA_BOOTSTRAP_SERVERS).\n\n"
        "example:\n  safer notices\n  safer notices --agency police --json",
    )
    notices.add_argument("--agency", default="police", help="your agency type (default police)")
    notices.add_argument("--json", action="store_true", help="print JSON")
    notices.set_defaults(func=cmd_notices)

    track = sub.add_parser(
        "track",
        help="where each recipient is with a concern you sent",
        formatter_class=FORMATTER,
        description="For a concern you published: every recipient's decision and progress,\n"
        "with timestamps (decided, received, opened, actioned), the deadline and\n"
        "the time left, or OVERDUE. Withheld decisions show their reason code.\n"
        "Reads the audit log; no broker needed.\n\n"
        "example:\n  safer track 3f6c2a8e-5b1d-4c7e-9a42-8d0e6f1b2c35\n"
        "  safer track --source-ref 44260481273 --json",
    )
    track.add_argument("concern_id", nargs="?", metavar="CONCERN_ID", help="the concern's id")
    track.add_argument("--source-ref", help="your own reference (e.g. occurrence number) instead")
    track.add_argument("--json", action="store_true", help="print JSON rows")
    track.set_defaults(func=_require_one(cmd_track))

    overdue = sub.add_parser(
        "overdue",
        help="what is late or at risk, per partnership",
        formatter_class=FORMATTER,
        description="Disclosures past their deadline (OVERDUE) or past 90% of the time\n"
        "allowed (AT RISK) and not yet done, grouped by partnership. A disclosure\n"
        "is done when ACTIONED (or, for an Operation Encompass notification,\n"
        "when RECEIVED); it then leaves this list.\n\n"
        "Times are UK local time.\n\n"
        "example:\n  safer overdue\n  safer overdue --lscp portsmouth --all\n"
        "  safer overdue --at 2026-11-25T08:30      # what was late at 08:30?",
    )
    overdue.add_argument("--lscp", help="one partnership only (hampshire, isle-of-wight, ...)")
    overdue.add_argument("--all", action="store_true", help="also list those past half time")
    overdue.add_argument("--json", action="store_true", help="print JSON rows")
    overdue.add_argument(
        "--at", metavar="TIME", help="as at this time instead of now (ISO 8601; UK time if no zone)"
    )
    overdue.set_defaults(func=cmd_overdue)


def _require_one(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        if bool(args.concern_id) == bool(args.source_ref):
            raise ConfigError(
                "give a CONCERN_ID or --source-ref, not both and not neither",
                code=ReasonCode.CONFIG_INVALID,
                hint="see `safer track --help`",
            )
        result: int = func(args)
        return result

    return wrapped
