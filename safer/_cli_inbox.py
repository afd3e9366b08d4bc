"""`safer inbox …`: a practitioner reads, acknowledges and actions disclosures.

Each recipient's inbox is its own SQLite file. Showing a disclosure marks it
OPENED; `action` marks it ACTIONED with an outcome code and an optional note
that is encrypted to the publishing agency. Each step queues a signed receipt,
sent at once when a broker is reachable and otherwise by the running adapter.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from rich.panel import Panel
from rich.table import Table

from adapters import Inbox, InboxItem, disclosure_to_communication
from broker import load_deployment
from consent import LAWFUL_BASES

from ._cli_common import FORMATTER, err, out, settings_from
from ._inbox_flow import (
    OUTCOME_CODES,
    SendOutcome,
    action_disclosure,
    inboxes,
    listing,
    open_disclosure,
    open_inbox,
    time_left,
)
from ._retention import purge_inboxes
from ._runtime import Runtime

__all__ = ["OUTCOME_CODES", "register"]


def _report(send: SendOutcome | None) -> None:
    if send is not None:
        colour = "green" if send.queued_reason is None else "yellow"
        err.print(f"[{colour}]{send.message}[/]")


# -- commands -----------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not args.recipient:
        table = Table(title=f"Inboxes in {settings.inbox_dir}")
        for column in ("recipient", "to action", "total"):
            table.add_column(column, justify="left" if column == "recipient" else "right")
        for recipient in inboxes(settings):
            with Inbox(settings.inbox_dir / f"{recipient}.db") as inbox:
                items = list(inbox.items())
            waiting = sum(1 for i in items if i.status != "ACTIONED")
            table.add_row(recipient, str(waiting), str(len(items)))
        out.print(table)
        out.print("open one with: safer inbox list --recipient RECIPIENT_ID")
        return 0
    with open_inbox(settings, args.recipient) as inbox:
        rows = listing(inbox, include_actioned=args.all)
    table = Table(title=f"Inbox of {args.recipient}" + ("" if args.all else " (not yet actioned)"))
    for column in ("id", "received", "kind", "concern", "grade", "status", "deadline"):
        table.add_column(column)
    for row in rows:
        item = row.item
        table.add_row(
            item.disclosure_id[:8],
            item.received_at[:16].replace("T", " "),
            item.kind,
            item.concern_type,
            item.risk_grade,
            item.status,
            row.time_left,
        )
    out.print(table)
    out.print(f"read one with: safer inbox show ID --recipient {args.recipient}")
    return 0


_SUBJECT_ORDER = ("CHILD", "SIBLING", "PARENT_CARER", "ALLEGED_PERPETRATOR", "OTHER_ADULT")
_SHOWN = {
    "subjects",
    "narrative",
    "voice_of_child",
    "immediate_actions",
    "incident_location",
    "occurred_at",
    "reported_at",
    "child_present",
    "consent",
    "officer",
    "concern_type",
    "risk_grade",
    "concern_id",
}


def _age(dob: str | None) -> str:
    if not dob:
        return ""
    born = datetime.fromisoformat(dob).date()
    today = datetime.now(UTC).date()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return f"{dob} (age {years})"


def _yes_no(value: object) -> str | None:
    return None if value is None else ("yes" if value else "no")


def _people(subjects: list[dict[str, Any]]) -> Table:
    table = Table(title="People", title_justify="left", expand=False)
    for column in ("role", "name", "date of birth", "identifiers", "address", "notes"):
        table.add_column(column)
    ordered = sorted(
        subjects,
        key=lambda s: _SUBJECT_ORDER.index(s["role"]) if s.get("role") in _SUBJECT_ORDER else 9,
    )
    for person in ordered:
        if person.get("withheld"):
            table.add_row(
                person.get("role", ""), f"[i]withheld: {person['withheld']}[/]", "", "", "", ""
            )
            continue
        name = " ".join(p for p in (person.get("given_name"), person.get("family_name")) if p)
        ids = ", ".join(
            f"{label} {person[key]}"
            for key, label in (("nhs_number", "NHS"), ("police_person_id", "police"))
            if person.get(key)
        )
        address = person.get("address") or {}
        where = ", ".join(str(address[k]) for k in ("line1", "town", "postcode") if address.get(k))
        notes = []
        if person.get("school_urn"):
            notes.append(f"school URN {person['school_urn']}")
        if person.get("looked_after"):
            notes.append(f"looked after (LA {person.get('responsible_la') or '?'})")
        if person.get("home_educated"):
            notes.append("home educated")
        if person.get("care_leaver"):
            notes.append("care leaver")
        table.add_row(
            str(person.get("role", "")),
            name,
            _age(person.get("date_of_birth")),
            ids,
            where,
            "; ".join(notes),
        )
    return table


def _render_disclosure(item: InboxItem) -> None:
    data = item.payload
    basis = LAWFUL_BASES.get(item.lawful_basis or "")
    header = (
        f"[b]{item.kind}[/] · {item.concern_type} · risk {item.risk_grade} · status {item.status}\n"
        f"lawful basis: {basis.citation if basis else (item.lawful_basis or '-')}\n"
        f"purpose: {item.purpose}\n"
        f"from: {item.source_agency or '-'} · "
        f"received {item.received_at[:16].replace('T', ' ')} UTC"
        f" · deadline: {item.deadline or 'none set'} ({time_left(item.deadline)})\n"
        f"disclosure {item.disclosure_id} · concern {item.concern_id}"
    )
    out.print(Panel(header, title="SAFER disclosure", expand=False))
    if data.get("subjects"):
        out.print(_people(data["subjects"]))
    happened = Table(show_header=False, box=None, title="What happened", title_justify="left")
    happened.add_column("field", style="bold")
    happened.add_column("value", overflow="fold")
    location = data.get("incident_location") or {}
    voice = data.get("voice_of_child") or {}
    rows = [
        ("occurred", data.get("occurred_at")),
        ("reported", data.get("reported_at")),
        ("where", ", ".join(str(v) for k, v in location.items() if v and k != "la_code")),
        ("child present", _yes_no(data.get("child_present"))),
        ("what happened", data.get("narrative")),
        ("the child said", voice.get("said")),
        ("observed", voice.get("observed")),
        ("actions taken", data.get("immediate_actions")),
    ]
    for label, value in rows:
        if value:
            happened.add_row(label, str(value))
    out.print(happened)
    consent = data.get("consent") or {}
    officer = data.get("officer") or {}
    if consent:
        out.print(
            f"[b]consent[/]: {consent.get('state')} — "
            f"{consent.get('reason') or 'no reason recorded'}"
        )
    if officer:
        contact = ", ".join(
            str(officer[k])
            for k in ("name", "collar_number", "unit", "phone", "email")
            if officer.get(k)
        )
        out.print(f"[b]contact[/]: {contact}")
    extra = {k: v for k, v in data.items() if k not in _SHOWN and v not in (None, "", [], False)}
    for key, value in sorted(extra.items()):
        out.print(f"[b]{key}[/]: {value}")


def _as_fhir(item: InboxItem, recipient_id: str) -> str:
    """A disclosure as the FHIR R4 Communication a FHIR-speaking recipient takes."""
    metadata = {
        "disclosure_id": item.disclosure_id,
        "concern_id": item.concern_id,
        "recipient_id": recipient_id,
        "concern_type": item.concern_type,
        "risk_grade": item.risk_grade,
        "lawful_basis": item.lawful_basis,
        "purpose": item.purpose,
        "profile": item.profile,
        "decided_at": item.decided_at,
    }
    return json.dumps(disclosure_to_communication(metadata, item.payload), indent=1)


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    recipient = load_deployment(settings.deploy_dir).directory.recipient(args.recipient)
    fhir = args.fhir or (recipient is not None and recipient.disclosure_format == "fhir-r4")
    result = open_disclosure(settings, args.recipient, args.id, mark=not args.no_mark)
    if fhir:
        print(_as_fhir(result.item, args.recipient), flush=True)
        _report(result.send)
        return 0
    _render_disclosure(result.item)
    out.print("[dim]shared only with you, for the purpose above; do not forward[/]")
    _report(result.send)
    out.print(
        f"when done: safer inbox action {result.item.disclosure_id[:8]} "
        f"--recipient {args.recipient} --outcome CODE"
    )
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    result = open_disclosure(settings, args.recipient, args.id)
    short = result.item.disclosure_id[:8]
    if result.marked:
        out.print(f"{short} marked OPENED")
        _report(result.send)
    else:
        out.print(f"{short} was already {result.item.status}")
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    result = action_disclosure(
        settings, args.recipient, args.id, outcome=args.outcome, note=args.note
    )
    short = result.item.disclosure_id[:8]
    if result.marked:
        out.print(
            f"{short} marked ACTIONED ({args.outcome}: {OUTCOME_CODES[args.outcome]})"
            + ("; note encrypted to the sender" if result.note_sealed else "")
        )
        _report(result.send)
    else:
        out.print(f"{short} was already ACTIONED; nothing changed")
    return 0


# -- parser -------------------------------------------------------------------


def cmd_purge(args: argparse.Namespace) -> int:
    runtime = Runtime(settings_from(args), bootstrap="")
    now = datetime.now(UTC)
    if args.as_of:
        value = datetime.fromisoformat(args.as_of)
        now = value if value.tzinfo else value.replace(tzinfo=UTC)
    purged = purge_inboxes(runtime, now, dry_run=args.dry_run)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "recipient_id": p.recipient_id,
                        "disclosure_id": p.disclosure_id,
                        "agreement_id": p.agreement_id,
                        "retention": p.retention,
                        "received_at": p.received_at.isoformat(),
                        "due": p.due.isoformat(),
                        "audit_seq": p.seq,
                    }
                    for p in purged
                ]
            )
        )
        return 0
    verb = "would purge" if args.dry_run else "purged"
    for p in purged:
        seq = f" (PURGED, audit seq {p.seq})" if p.seq else ""
        out.print(
            f"{verb} {p.disclosure_id} from {p.recipient_id}: {p.agreement_id} keeps "
            f"{p.retention}, ended {p.due.date()}{seq}"
        )
    out.print(f"{len(purged)} inbox copies {verb}; the audit log is kept forever")
    return 0


def register(sub: Any) -> None:
    inbox = sub.add_parser(
        "inbox",
        help="read and action the disclosures sent to your agency",
        formatter_class=FORMATTER,
        description="A practitioner's inbox. Each recipient (a MASH, a health safeguarding\n"
        "team, a school's Designated Safeguarding Lead...) has its own inbox of\n"
        "decrypted disclosures. Reading one tells the sender it was OPENED;\n"
        "actioning it records what you did (ACTIONED), which stops the clock.\n\n"
        "example:\n  safer inbox list                                  # which inboxes exist\n"
        "  safer inbox list --recipient portsmouth-csc       # what is waiting\n"
        "  safer inbox show 3f6c2a8e --recipient portsmouth-csc\n"
        "  safer inbox action 3f6c2a8e --recipient portsmouth-csc --outcome S47_ENQUIRY",
    )
    actions = inbox.add_subparsers(dest="inbox_command", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list",
        help="list inboxes, or the disclosures waiting in one",
        formatter_class=FORMATTER,
        description="Without --recipient: every inbox with how many disclosures wait for\n"
        "action. With --recipient: that inbox's disclosures not yet actioned\n"
        "(--all for every one), overdue first, then by the time left to the deadline.\n\n"
        "example:\n  safer inbox list\n  safer inbox list --recipient school-116330 --all",
    )
    listing.add_argument("--recipient", help="your recipient id (see `safer inbox list`)")
    listing.add_argument("--all", action="store_true", help="include actioned disclosures")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser(
        "show",
        help="read one disclosure (marks it OPENED)",
        formatter_class=FORMATTER,
        description="Show the decrypted disclosure: why it was shared, on which lawful\n"
        "basis, the deadline, and the fields your agency may see. Reading it marks\n"
        "it OPENED and sends a receipt to the sender (queued if no broker runs).\n"
        "ID may be the first 8 characters of the disclosure id. With --fhir, or for a\n"
        'recipient whose directory entry says disclosure_format = "fhir-r4", it prints\n'
        "a FHIR R4 Communication (JSON) instead (docs/fhir.md).\n\n"
        "example:\n  safer inbox show 3f6c2a8e --recipient portsmouth-csc\n"
        "  safer inbox show 3f6c2a8e --recipient portsmouth-health --fhir",
    )
    show.add_argument("id", metavar="ID", help="disclosure id (or its first characters)")
    show.add_argument("--recipient", required=True, help="your recipient id")
    show.add_argument("--no-mark", action="store_true", help="do not mark it OPENED")
    show.add_argument(
        "--fhir", action="store_true", help="print it as a FHIR R4 Communication (JSON)"
    )
    show.set_defaults(func=cmd_show)

    ack = actions.add_parser(
        "ack",
        help="mark a disclosure OPENED without showing it",
        formatter_class=FORMATTER,
        description="Acknowledge a disclosure (OPENED) without printing it, e.g. from a\n"
        "case-management workflow that displays it elsewhere.\n\n"
        "example:\n  safer inbox ack 3f6c2a8e --recipient portsmouth-csc",
    )
    ack.add_argument("id", metavar="ID", help="disclosure id (or its first characters)")
    ack.add_argument("--recipient", required=True, help="your recipient id")
    ack.set_defaults(func=cmd_ack)

    codes = "\n".join(f"  {code:<20} {text}" for code, text in OUTCOME_CODES.items())
    action = actions.add_parser(
        "action",
        help="record what you did (ACTIONED); stops the deadline clock",
        formatter_class=FORMATTER,
        description="Mark a disclosure ACTIONED with an outcome code. An optional --note is\n"
        "encrypted to the sending agency: only they can read it. The receipt goes\n"
        "into the audit log, and the disclosure leaves `safer overdue`.\n\n"
        f"outcome codes:\n{codes}\n\n"
        "example:\n  safer inbox action 3f6c2a8e --recipient portsmouth-csc --outcome "
        'STRATEGY_DISCUSSION --note "Strategy meeting 10:00 with police and health"',
    )
    action.add_argument("id", metavar="ID", help="disclosure id (or its first characters)")
    action.add_argument("--recipient", required=True, help="your recipient id")
    action.add_argument(
        "--outcome",
        required=True,
        choices=sorted(OUTCOME_CODES),
        metavar="CODE",
        help="what you did (see the list above)",
    )
    action.add_argument("--note", help="free text for the sender, encrypted to them")
    action.set_defaults(func=cmd_action)

    purge = actions.add_parser(
        "purge",
        help="delete inbox copies whose agreement's retention has ended (audited)",
        formatter_class=FORMATTER,
        description="Each data-sharing agreement names a retention (deploy/policy, e.g. P6Y).\n"
        "For every disclosure in every inbox, the governing agreement (the recipient's\n"
        "agency type and the disclosure's purpose) gives the time it may be kept from\n"
        "receipt. Past it, a PURGED entry goes into the audit log first, then the copy\n"
        "(payload, wire bytes, queued receipts) is deleted and never stored again. The\n"
        "audit log itself is never purged. `safer up` runs this at start and hourly.\n\n"
        "example:\n  safer inbox purge --dry-run\n  safer inbox purge\n"
        "  safer inbox purge --as-of 2032-01-01 --dry-run --json   # what will go when",
    )
    purge.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    purge.add_argument("--as-of", default=None, help="judge as at this ISO 8601 time")
    purge.add_argument("--json", action="store_true", help="print JSON")
    purge.set_defaults(func=cmd_purge)
