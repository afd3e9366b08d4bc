"""`safer audit trail|report|sar|stats|export|shred`: the questions auditors and DPOs ask.

The logic lives in ``audit`` (pure functions over audit records, the FHIR
export and the subject vault); this module parses arguments, turns a real
identifier into pseudonyms with the partnership secret, looks up names in the
directory, and renders tables, CSV, JSON or a fileable text report.

Personal data in output: only the identifiers the requester typed are ever
printed. Everything else is agency names, lawful bases, field names, reasons
written from policy text, ids and times.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from audit import (
    SHRED_REASONS,
    AuditRecord,
    AuditStore,
    Labels,
    Period,
    SubjectVault,
    TrailQuery,
    audit_stats,
    canonical_identifier,
    derive_vault_key,
    fhir_bundle,
    s62_log,
    shred_subject,
    subject_access_report,
    trail,
    vault_path_for,
    verify_store,
)
from broker import ADMIN_PRINCIPAL, KeyStore, Settings, erase_signals, load_deployment, pseudonym
from consent import LAWFUL_BASES
from schemas import (
    AuditError,
    AuditEvent,
    BrokerError,
    LogTamperedError,
    ReasonCode,
    ValidationError,
)

from ._cli_common import FORMATTER, err, out, settings_from
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["register_reports"]

LONDON = ZoneInfo("Europe/London")
_DATE_HELP = (
    "YYYY-MM-DD (a whole day, UK time) or an ISO date-time (UK time unless it has an offset)"
)


# -- inputs -------------------------------------------------------------------


def parse_when(text: str, *, end: bool) -> datetime:
    """A --from/--to value as an aware datetime.

    A date means the UK day: ``--from`` its first instant, ``--to`` the first
    instant of the next day (so ``--to`` includes the whole day). A date-time
    without an offset is UK local time.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            if end:
                day += timedelta(days=1)
            return datetime.combine(day, time(0), tzinfo=LONDON)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{'--to' if end else '--from'} is not a date or date-time",
            fields=("to" if end else "from",),
            hint=_DATE_HELP,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=LONDON)


def _period(args: argparse.Namespace, *, required: bool = False) -> Period:
    start = getattr(args, "start", None)
    end = getattr(args, "end", None)
    if required and (start is None or end is None):
        raise ValidationError(
            "this report needs both --from and --to",
            fields=("from", "to"),
            hint="e.g. --from 2025-04-01 --to 2025-06-30",
        )
    return Period(
        start=None if start is None else parse_when(start, end=False),
        end=None if end is None else parse_when(end, end=True),
    )


def _supplied_identifiers(args: argparse.Namespace) -> list[str]:
    raw: list[str] = list(args.subject or [])
    if getattr(args, "subject_file", None):
        name = args.subject_file
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationError(
                f"cannot read --subject-file ({exc.strerror})", fields=("subject-file",)
            ) from None
        raw += [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    check = not getattr(args, "no_nhs_check", False)
    return list(dict.fromkeys(canonical_identifier(item, check_nhs=check) for item in raw))


@dataclass(frozen=True)
class SubjectQuery:
    """The person asked about: what the requester supplied, and the pseudonyms searched."""

    supplied: tuple[str, ...]
    pseudonyms: frozenset[str]
    own: frozenset[str]  # pseudonyms of the supplied identifiers only
    linked: int  # extra pseudonyms found through the subject vault
    vault_shredded: tuple[datetime, ...]  # vault entries of the supplied ids already shredded


def _secret(settings: Settings) -> bytes:
    return KeyStore(settings.keys_dir).pseudonym_secret()


def _open_vault(settings: Settings, secret: bytes) -> SubjectVault | None:
    path = vault_path_for(settings.audit_db)
    if not path.exists():
        return None
    return SubjectVault(path, vault_key=derive_vault_key(secret), create=False)


def _subject(
    args: argparse.Namespace, settings: Settings, *, required: bool = True
) -> SubjectQuery:
    supplied = _supplied_identifiers(args)
    if not supplied:
        if not required:
            return SubjectQuery((), frozenset(), frozenset(), 0, ())
        raise ValidationError(
            "say whose records to find with --subject ID",
            fields=("subject",),
            hint="nhs:NNNNNNNNNN (or 10 digits), police:PERSON-ID or "
            "name-dob:family|given|YYYY-MM-DD; repeat --subject for each identifier",
        )
    _require_store(settings)
    secret = _secret(settings)
    own = frozenset(pseudonym(secret, ident) for ident in supplied)
    found = set(own)
    shredded: list[datetime] = []
    vault = _open_vault(settings, secret)
    if vault is not None:
        with vault:
            found = vault.linked_pseudonyms(own)
            for p in own:
                ref = vault.lookup(p)
                if ref is not None and ref.shredded_at is not None:
                    shredded.append(ref.shredded_at)
    return SubjectQuery(
        supplied=tuple(supplied),
        pseudonyms=frozenset(found),
        own=own,
        linked=len(found - own),
        vault_shredded=tuple(sorted(set(shredded))),
    )


def _require_store(settings: Settings) -> None:
    path = settings.audit_db
    if not path.is_file():
        raise AuditError(
            f"no audit store at {path}",
            code=ReasonCode.CONFIG_INVALID,
            hint="pass the data directory with --data-dir (the demo uses .safer/demo)",
        )


def _store(settings: Settings) -> AuditStore:
    """The audit store, which must exist (a query never creates an empty one)."""
    _require_store(settings)
    return AuditStore(settings.audit_db)


def _labels(settings: Settings) -> Labels:
    directory = load_deployment(settings.deploy_dir).directory
    names = {p.id: p.name for p in directory.publishers}
    names.update({r.id: r.name for r in directory.recipients})
    citations = {k: v.citation for k, v in LAWFUL_BASES.items()}
    return Labels(names=names, citations=citations)


def _events(values: Sequence[str] | None) -> frozenset[AuditEvent]:
    chosen: set[AuditEvent] = set()
    for value in values or ():
        try:
            chosen.add(AuditEvent(value.strip().upper()))
        except ValueError:
            raise ValidationError(
                f"unknown event {value!r}",
                fields=("event",),
                hint=f"one of: {', '.join(e.value for e in AuditEvent)}",
            ) from None
    return frozenset(chosen)


# -- scanning with a progress bar ------------------------------------------------------


def _scan(
    store: AuditStore, *, label: str, queries: Sequence[dict[str, Any]] = ({},)
) -> Iterator[AuditRecord]:
    """Records of each query (``AuditStore.records`` filters), with a progress bar.

    The bar runs over the log's sequence numbers (records come in seq order),
    so it moves however sparse the matches are. Drawn on stderr, and only
    when stderr is a terminal.
    """
    total = max(store.count(), 1)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with progress:
        for query in queries:
            task = progress.add_task(label, total=total)
            for record in store.records(**query):
                progress.update(task, completed=record.seq or 0)
                yield record
            progress.update(task, completed=total)


def _subject_records(store: AuditStore, subject: SubjectQuery, label: str) -> list[AuditRecord]:
    queries = [{"subject": p} for p in sorted(subject.pseudonyms)]
    return list(_scan(store, label=label, queries=queries))


# -- rendering helpers ------------------------------------------------------------------


def _uk(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(LONDON).strftime("%Y-%m-%d %H:%M:%S %Z")


def _uk_two_lines(moment: datetime) -> str:
    return moment.astimezone(LONDON).strftime("%Y-%m-%d\n%H:%M:%S %Z")


def _csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "; ".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return buffer.getvalue()


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _who(labels: Labels, agency: str | None) -> str:
    if agency is None:
        return "-"
    name = labels.name(agency)
    return agency if name == agency else f"{name}\n({agency})"


def _subject_line(subject: SubjectQuery) -> str:
    text = "subject identified by: " + ", ".join(subject.supplied)
    if subject.linked:
        text += f" (+{subject.linked} linked identifier(s) from the subject vault, not shown)"
    return text


# -- trail ------------------------------------------------------------------------------


TRAIL_COLUMNS = (
    "seq",
    "at",
    "event",
    "concern_id",
    "disclosure_id",
    "source",
    "source_name",
    "actor",
    "recipient",
    "recipient_name",
    "lscp",
    "lawful_basis",
    "lawful_basis_citation",
    "purpose",
    "consent_state",
    "fields",
    "reason_codes",
    "reasons",
    "payload_sha256",
    "restricted",
)


def cmd_trail(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    subject = _subject(args, settings)
    labels = _labels(settings)
    query = TrailQuery(
        recipients=frozenset(args.recipient or ()),
        lawful_bases=frozenset(args.lawful_basis or ()),
        events=_events(args.event),
        period=_period(args),
    )
    with _store(settings) as store:
        records = _subject_records(store, subject, "scanning the audit log")
    entries = trail(records, subjects=subject.pseudonyms, query=query)
    rows = [e.to_json(labels) for e in entries]
    if args.format == "json":
        _emit_json(
            {
                "subject": {
                    "identifiers": list(subject.supplied),
                    "linked_identifiers": subject.linked,
                    "vault_key_shredded_at": [
                        t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                        for t in subject.vault_shredded
                    ],
                },
                "filters": {
                    "recipient": sorted(query.recipients),
                    "lawful_basis": sorted(query.lawful_bases),
                    "event": sorted(e.value for e in query.events),
                    **query.period.to_json(),
                },
                "count": len(rows),
                "events": rows,
            }
        )
        return 0
    if args.format == "csv":
        sys.stdout.write(_csv(rows, TRAIL_COLUMNS))
        return 0
    table = Table(
        title=f"Audit trail: {_subject_line(subject)}",
        caption=f"{len(entries)} event(s), oldest first; times are UK time. "
        "Withheld decisions name the agency that did NOT receive the data.",
        show_lines=True,
        expand=True,
    )
    table.add_column("#", no_wrap=True, justify="right")
    table.add_column("when (UK)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    for name, ratio in (
        ("recipient", 4),
        ("what (fields)", 5),
        ("why (reasons)", 9),
        ("basis", 4),
    ):
        table.add_column(name, ratio=ratio, overflow="fold")
    for e in entries:
        event = e.event + ("\n[yellow]RESTRICTED[/]" if e.restricted else "")
        why = list(e.reasons)
        if e.reason_codes:
            why.insert(0, "codes: " + ", ".join(e.reason_codes))
        table.add_row(
            str(e.seq),
            _uk_two_lines(e.at),
            event,
            _who(labels, e.recipient),
            ", ".join(e.fields) or "-",
            "\n".join(f"• {w}" for w in why) or "-",
            labels.citation(e.lawful_basis) or "-",
        )
    out.print(table)
    if subject.vault_shredded:
        out.print(
            "note: the subject vault's key for this subject was shredded on "
            + ", ".join(_uk(t) for t in subject.vault_shredded)
        )
    return 0


# -- report s62 ---------------------------------------------------------------------------


S62_COLUMNS = (
    "seq",
    "date_time",
    "event",
    "disclosed_by",
    "disclosed_by_name",
    "recorded_by",
    "recipient",
    "recipient_name",
    "lscp",
    "justification",
    "lawful_basis",
    "lawful_basis_citation",
    "purpose",
    "consent_state",
    "reason_codes",
    "policy_revision",
    "fields",
    "payload_sha256",
    "disclosure_id",
    "concern_id",
    "received_at",
)


def cmd_report(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    period = _period(args, required=True)
    labels = _labels(settings)
    with _store(settings) as store:
        entries = s62_log(_scan(store, label="reading the audit log"), period)
    rows = [e.to_json(labels) for e in entries]
    if args.format == "json":
        _emit_json(
            {
                "report": "DPA 2018 s.62 log of disclosures",
                "period": period.to_json(),
                "count": len(rows),
                "entries": rows,
            }
        )
        return 0
    if args.format == "csv":
        sys.stdout.write(_csv(rows, S62_COLUMNS))
        return 0
    table = Table(
        title="DPA 2018 s.62 log of disclosures, "
        f"{_uk(period.start)} to {_uk(period.end)} (end exclusive)",
        caption=f"{len(entries)} disclosure(s). Justification = lawful basis, purpose and the "
        "recorded reasons; full text with --format csv|json.",
        show_lines=True,
        expand=True,
    )
    table.add_column("#", no_wrap=True, justify="right")
    table.add_column("date and time (UK)", no_wrap=True)
    for name, ratio in (
        ("disclosed by", 4),
        ("recipient", 5),
        ("justification", 10),
        ("received", 3),
    ):
        table.add_column(name, ratio=ratio, overflow="fold")
    for e in entries:
        kind = " (referral)" if e.event == "REFERRED" else ""
        table.add_row(
            str(e.seq),
            _uk_two_lines(e.at),
            f"{_who(labels, e.disclosed_by)}\nvia {e.recorded_by}",
            _who(labels, e.recipient) + kind,
            f"{labels.citation(e.lawful_basis) or '-'}\n{e.purpose or ''}".strip(),
            _uk_two_lines(e.received_at) if e.received_at else "[yellow]not yet[/]",
        )
    out.print(table)
    return 0


# -- sar ----------------------------------------------------------------------------------


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _wrap(label: str, text: str, width: int = 96) -> list[str]:
    return textwrap.wrap(
        text, width=width, initial_indent=f"   {label}: ", subsequent_indent=" " * 6
    ) or [f"   {label}:"]


def _sar_text(subject: SubjectQuery, report_json: dict[str, Any], verified: str) -> str:
    lines = [
        "SUBJECT ACCESS REPORT: disclosures recorded by SAFER Exchange (HIPS partnerships)",
        "=" * 82,
        f"Generated:   {_uk(_when(report_json['generated_at']))}",
        f"Subject:     {', '.join(subject.supplied)}",
    ]
    if subject.linked:
        lines.append(
            f"             also searched: {subject.linked} other identifier(s) of the same "
            "person held in the subject vault"
        )
    lines += [
        f"Source:      {verified}",
        "",
        "This report lists every entry of the audit log that names the subject: what was",
        "shared about them, with whom, when, why and under which lawful basis; decisions",
        "not to share; and anything withheld from this report, with the reason. It holds",
        "no information about any other person.",
        "",
    ]
    disclosures = report_json["disclosures"]
    lines.append(f"1. WHAT WAS SHARED ({len(disclosures)})")
    lines.append("")
    if not disclosures:
        lines += ["   Nothing about the subject was shared.", ""]
    for n, d in enumerate(disclosures, 1):
        at = _when(d["at"])
        lines.append(
            f"1.{n} {_uk(at)}: {d['kind']} to {d['shared_with_name']} ({d['partnership']})"
        )
        lines += _wrap("shared by", str(d["shared_by_name"]))
        lines += _wrap("what", ", ".join(d["what"]) or "-")
        lines += _wrap("why", d["why"] or "-")
        lines += _wrap("lawful basis", d["lawful_basis_citation"] or "-")
        if d["consent_state"]:
            lines += _wrap("consent", d["consent_state"])
        for reason in d["reasons"]:
            lines += _wrap("reason", reason)
        received = d["received_at"]
        lines += _wrap(
            "received",
            _uk(_when(received)) if received else "no receipt recorded",
        )
        lines += _wrap("reference", f"log entry {d['seq']}, disclosure {d['disclosure_id']}")
        lines.append("")
    not_shared = report_json["decisions_not_to_share"]
    lines.append(f"2. DECISIONS NOT TO SHARE ({len(not_shared)})")
    lines.append("")
    if not not_shared:
        lines += ["   None recorded.", ""]
    for n, d in enumerate(not_shared, 1):
        at = _when(d["at"])
        lines.append(f"2.{n} {_uk(at)}: not shared with {d['not_shared_with_name']}")
        lines += _wrap("reason codes", ", ".join(d["reason_codes"]) or "-")
        for reason in d["reasons"]:
            lines += _wrap("reason", reason)
        lines += _wrap("reference", f"log entry {d['seq']}")
        lines.append("")
    restricted = report_json["withheld_restricted"]
    count = sum(r["items_withheld"] for r in restricted)
    lines.append(f"3. WITHHELD FROM THIS REPORT ({count})")
    lines.append("")
    if not restricted:
        lines += ["   Nothing was withheld.", ""]
    for n, r in enumerate(restricted, 1):
        lines.append(
            f"3.{n} {r['items_withheld']} entr{'y' if r['items_withheld'] == 1 else 'ies'} "
            f"withheld under {r['exemption']}"
        )
        lines += _wrap("reason code", ", ".join(r["reason_codes"]))
        for reason in r["recorded_reasons"]:
            lines += _wrap("recorded reason", reason)
        lines += _wrap("log entries", ", ".join(str(s) for s in r["log_entries"]))
        lines.append("")
    erasures = report_json["erasures"]
    if erasures or subject.vault_shredded:
        lines.append(f"4. ERASURE ({len(erasures)})")
        lines.append("")
        for e in erasures:
            at = _when(e["at"])
            lines.append(f"   {_uk(at)}: subject vault key destroyed by {e['actor']}")
            for reason in e["reasons"]:
                lines += _wrap("reason", reason)
            lines += _wrap("reference", f"log entry {e['seq']}")
        lines.append("")
    if report_json["other_events"]:
        other = ", ".join(f"{k}: {v}" for k, v in report_json["other_events"].items())
        lines.append(f"Other log entries naming the subject: {other}")
    lines.append("End of report.")
    return "\n".join(lines) + "\n"


def cmd_sar(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    subject = _subject(args, settings)
    labels = _labels(settings)
    try:
        summary = verify_store(settings.audit_db)
        verified = (
            f"audit log {settings.audit_db}\n"
            f"             verified end to end when this report was made: "
            f"{summary.entries} entries,\n             Merkle root {summary.root}"
        )
        ok, root = True, summary.root
    except LogTamperedError as exc:
        verified = f"audit log {settings.audit_db} FAILED verification: {exc.problems[0]}"
        ok, root = False, None
    with _store(settings) as store:
        records = _subject_records(store, subject, "searching the audit log")
    report = subject_access_report(records, subjects=subject.pseudonyms, now=datetime.now(UTC))
    body = report.to_json(labels)
    if args.format == "json":
        _emit_json(
            {
                "report": "subject access report",
                "subject": {
                    "identifiers": list(subject.supplied),
                    "linked_identifiers": subject.linked,
                },
                "log_verified": ok,
                "log_root": root,
                "log": verified,
                **body,
            }
        )
    else:
        sys.stdout.write(_sar_text(subject, body, verified))
    if not ok:
        err.print(
            "[red]the audit log failed verification: do not file this report[/]; "
            "run `safer audit verify` for details"
        )
        return 1
    return 0


# -- stats --------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 120:
        return f"{value:.1f} s"
    if abs(value) < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def cmd_stats(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    period = _period(args)
    labels = _labels(settings)
    with _store(settings) as store:
        stats = audit_stats(_scan(store, label="counting"), period)
    if args.format == "json":
        _emit_json(stats.to_json(labels))
        return 0
    events = [e.value for e in AuditEvent if e.value in stats.by_event]

    def volume_table(title: str, rows: dict[str, Any], first: str) -> Table:
        table = Table(title=title)
        table.add_column(first)
        for e in events:
            table.add_column(e.lower(), justify="right")
        table.add_column("total", justify="right")
        for key, counts in rows.items():
            table.add_row(
                key,
                *(str(counts.get(e, 0)) for e in events),
                str(sum(counts.values())),
            )
        return table

    out.print(
        f"audit log: {stats.entries} entries"
        + (f" in {_uk(period.start)} to {_uk(period.end)}" if period.start or period.end else "")
    )
    out.print(
        volume_table(
            "Volumes per partnership and outcome", dict(stats.by_partnership), "partnership"
        )
    )
    out.print(
        volume_table(
            "Volumes per recipient and outcome",
            {f"{labels.name(k)} ({k})": v for k, v in stats.by_recipient.items()},
            "recipient",
        )
    )
    out.print(
        volume_table(
            "Volumes per concern type and outcome", dict(stats.by_concern_type), "concern type"
        )
    )
    out.print(
        f"[dim]Concern type is not a field of the audit record: it is read from the recorded "
        f"decision reasons. {stats.concerns_with_type} of {stats.concerns} concern(s) have one.[/]"
    )
    table = Table(title="Time to receipt (delivery → first receipt), per partnership")
    for name in ("partnership", "delivered", "received", "pending", "median", "p90", "max"):
        table.add_column(name, justify="left" if name == "partnership" else "right")
    for key, t in [*stats.time_to_receipt.items(), ("all", stats.time_to_receipt_all)]:
        table.add_row(
            key,
            str(t.delivered),
            str(t.received),
            str(t.pending),
            _seconds(t.median_s),
            _seconds(t.p90_s),
            _seconds(t.max_s),
        )
    out.print(table)
    return 0


# -- export --------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    if not args.fhir:
        raise ValidationError(
            "choose an export format", fields=("fhir",), hint="only --fhir is available"
        )
    settings = settings_from(args)
    subject = _subject(args, settings, required=False)
    period = _period(args)
    labels = _labels(settings)
    with _store(settings) as store:
        if subject.supplied:
            records: list[AuditRecord] = _subject_records(store, subject, "exporting")
        else:
            records = list(_scan(store, label="exporting"))
    bundle = fhir_bundle(
        records,
        patients=subject.pseudonyms if subject.supplied else None,
        labels=labels,
        period=period,
        generated_at=datetime.now(UTC),
    )
    _emit_json(bundle)
    err.print(f"{len(bundle['entry'])} AuditEvent resource(s) exported")
    return 0


# -- shred ---------------------------------------------------------------------------------


def _confirm(args: argparse.Namespace) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise ValidationError(
            "shredding cannot be undone: confirm with --yes",
            fields=("yes",),
            hint="run it again with --yes once the DPO has approved the erasure",
        )
    err.print(
        "[bold]Shredding destroys the subject vault key for this person. It cannot be undone.[/]"
    )
    answer = input("Type SHRED to go ahead: ")
    if answer.strip() != "SHRED":
        raise ValidationError("not confirmed; nothing was shredded", fields=("yes",))


#: How long a shred waits for the broker to take the signal tombstones.
SIGNAL_ERASE_TIMEOUT_S = 30.0


def _erase_signals(settings: Settings, pseudonyms: Iterable[str]) -> int | None:
    """Tombstone the subject's cumulative-concern counts on ``hips.signals`` (issue 16).

    Returns how many pseudonyms' counts were erased, or None when no broker runs for
    this data directory (the vault shred still stands; running the shred again while
    the broker runs finishes the erasure).
    """
    try:
        bootstrap = resolve_bootstrap(settings)
    except BrokerError:
        return None
    runtime = Runtime(settings, bootstrap=bootstrap)
    erase = erase_signals(
        bootstrap,
        settings.topics.signals,
        pseudonyms,
        security=runtime.security_for(ADMIN_PRINCIPAL),
        timeout=SIGNAL_ERASE_TIMEOUT_S,
    )
    try:
        return asyncio.run(erase)
    except BrokerError as exc:
        raise BrokerError(
            exc.message,
            hint="the vault key is shredded; once the broker runs (`safer up`), run the same "
            "`safer audit shred` again to erase the counts",
        ) from None


def cmd_shred(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    supplied = _supplied_identifiers(args)
    if not supplied:
        raise ValidationError("say whose key to shred with --subject ID", fields=("subject",))
    secret = _secret(settings)
    own = {pseudonym(secret, ident) for ident in supplied}
    # Every pseudonym of the person the vault links to the ones supplied: the signal
    # keeps a child's counts under each of the child's identifiers.
    linked = set(own)
    vault = _open_vault(settings, secret)
    outcomes = []
    if vault is not None:
        with vault:
            for p in own:
                ref = vault.lookup(p)
                if ref is not None:
                    linked.update(ref.pseudonyms)
            held = [p for p in own if vault.lookup(p) is not None]
            if held:
                _confirm(args)
                with _store(settings) as store:
                    outcomes = shred_subject(
                        store, vault, own, reason=args.reason, actor=args.actor
                    )
    for o in outcomes:
        linked.update(o.pseudonyms)
    signals_erased = _erase_signals(settings, sorted(linked))
    try:
        summary = verify_store(settings.audit_db)
        verified: bool | None = True
        entries: int | None = summary.entries
    except LogTamperedError:
        verified, entries = False, None
    except AuditError:
        verified, entries = None, None
    if args.format == "json":
        _emit_json(
            {
                "shredded": [
                    {
                        "key_id": o.key_id,
                        "log_entry": o.seq,
                        "pseudonyms": len(o.pseudonyms),
                        "resumed": o.already_logged,
                    }
                    for o in outcomes
                ],
                "log_verified": verified,
                "entries": entries,
                # Issue 16: pseudonyms whose cumulative-concern counts were erased
                # (None: no broker runs for this data directory; run the shred again).
                "signals_erased": signals_erased,
            }
        )
    elif not outcomes:
        out.print(
            "the subject vault holds no key for this subject (never enrolled, or already "
            "shredded): nothing to shred. The audit log itself holds pseudonyms only."
        )
    else:
        for o in outcomes:
            out.print(
                f"[green]shredded[/] subject vault key {o.key_id} "
                f"({len(o.pseudonyms)} pseudonym(s)); KEY_SHREDDED recorded as log entry {o.seq}"
                + (" (finishing an interrupted shred)" if o.already_logged else "")
            )
        if verified:
            out.print(f"audit log verified end to end: {entries} entries")
    if args.format != "json":
        if signals_erased is None:
            err.print(
                "note: no broker runs for this data directory, so the subject's "
                "cumulative-concern counts (hips.signals) are not erased yet: run this "
                "shred again while `safer up` runs"
            )
        else:
            out.print(
                f"cumulative-concern counts erased for {signals_erased} pseudonym(s) "
                "(hips.signals tombstones; compaction removes them within a day)"
            )
    if verified is False:
        err.print("[red]the audit log failed verification[/]: run `safer audit verify`")
        return 1
    return 0


# -- registration --------------------------------------------------------------------------


_SUBJECT_HELP = (
    "the person's identifier: nhs:NNNNNNNNNN (or the 10 digits), police:PERSON-ID, or "
    "name-dob:family|given|YYYY-MM-DD; repeat for each identifier of the same person"
)


def _subject_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--subject",
        action="append",
        metavar="ID",
        help=_SUBJECT_HELP + ("" if required else " (optional)"),
    )
    parser.add_argument(
        "--subject-file",
        metavar="FILE",
        help="read identifiers from FILE, one per line ('-' for stdin), so they stay out "
        "of the shell history and process list",
    )
    parser.add_argument(
        "--no-nhs-check",
        action="store_true",
        help="accept an NHS number whose check digit is wrong (only if it was recorded so)",
    )


def _period_args(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument("--from", dest="start", metavar="WHEN", required=required, help=_DATE_HELP)
    parser.add_argument(
        "--to",
        dest="end",
        metavar="WHEN",
        required=required,
        help=_DATE_HELP + "; a date includes that day",
    )


def _format_arg(parser: argparse.ArgumentParser, choices: Sequence[str], default: str) -> None:
    parser.add_argument(
        "--format",
        choices=list(choices),
        default=default,
        help=f"output format (default {default})",
    )


def register_reports(audit_sub: Any) -> None:
    """Adds the reporting actions to the `audit` command group."""
    add: Callable[..., argparse.ArgumentParser] = audit_sub.add_parser

    p = add(
        "trail",
        help="every event about one person: who received what, when, why, on which basis",
        formatter_class=FORMATTER,
        description="List every audit log entry about one person, oldest first: disclosures,\n"
        "referrals, receipts, withheld decisions (who did NOT get it, and why), consent\n"
        "changes and erasures. Shows who received what (the fields), when (UK time), why\n"
        "(the recorded reasons) and under which lawful basis (the citation).\n\n"
        "The identifier is turned into a pseudonym with the partnership secret (in\n"
        "<data-dir>/keys); the log holds pseudonyms only. Other people in the same\n"
        "concern are never shown. Identifiers the subject vault links to the one given\n"
        "are searched too (their values are not shown). Concerns marked RESTRICTED are\n"
        "shown to auditors here but withheld from `safer audit sar`.\n\n"
        "Accepted identifiers:\n"
        "  nhs:9990001234 | 9990001234 | 'nhs:999 000 1234'   NHS number (check digit checked)\n"
        "  police:HC-P-1234567                                  police person id\n"
        "  'name-dob:smith|amy|2014-03-02'                      someone with neither number\n\n"
        "examples:\n"
        "  safer audit trail --subject nhs:9990001234\n"
        "  safer audit trail --subject 9990001234 --event DISCLOSED --from 2025-04-01\n"
        "  safer audit trail --subject nhs:9990001234 --format csv > trail.csv\n"
        "  safer audit trail --subject-file request-17.txt --recipient portsmouth-csc",
    )
    _subject_args(p, required=True)
    p.add_argument(
        "--recipient", action="append", metavar="ID", help="only this recipient id (repeatable)"
    )
    p.add_argument(
        "--lawful-basis",
        action="append",
        metavar="BASIS",
        help="only this lawful basis id, e.g. CA2004-S11 (repeatable)",
    )
    p.add_argument(
        "--event",
        action="append",
        metavar="EVENT",
        help="only this event, e.g. DISCLOSED, WITHHELD, RECEIVED (repeatable)",
    )
    _period_args(p)
    _format_arg(p, ("table", "csv", "json"), "table")
    p.set_defaults(func=cmd_trail)

    report = add(
        "report",
        help="statutory reports (s62: the DPA 2018 s.62 disclosure log)",
        formatter_class=FORMATTER,
        description="Statutory reports from the audit log.\n\n"
        "  s62   the Data Protection Act 2018 s.62 log of disclosures in a period: for\n"
        "        each disclosure (and referral), its justification (lawful basis,\n"
        "        purpose, recorded reasons), date and time, who disclosed it, and the\n"
        "        recipient; plus when the recipient's receipt arrived.\n\n"
        "examples:\n"
        "  safer audit report s62 --from 2025-04-01 --to 2025-06-30\n"
        "  safer audit report s62 --from 2025-04-01 --to 2025-04-30 --format csv > s62-april.csv",
    )
    report.add_argument("kind", choices=["s62"], help="which report")
    _period_args(report, required=True)
    _format_arg(report, ("table", "csv", "json"), "table")
    report.set_defaults(func=cmd_report)

    p = add(
        "sar",
        help="subject access report a DPO can file (restricted items withheld, s.45)",
        formatter_class=FORMATTER,
        description="Answer a subject access request from the audit log: what was shared about\n"
        "the person, with whom, when, why and under which lawful basis, with the time\n"
        "each recipient acknowledged receipt; decisions not to share; and erasures.\n"
        "Entries of a restricted concern are withheld under DPA 2018 s.45(4), with\n"
        "the reason recorded at the time. Nothing about any other person is included.\n"
        "The log is verified end to end first; exit code 1 if it fails.\n\n"
        "The identifier forms are those of `safer audit trail --help`.\n\n"
        "examples:\n"
        "  safer audit sar --subject nhs:9990001234 > sar-2025-017.txt\n"
        "  safer audit sar --subject 9990001234 --subject police:HC-P-1234567 --format json",
    )
    _subject_args(p, required=True)
    _format_arg(p, ("text", "json"), "text")
    p.set_defaults(func=cmd_sar)

    p = add(
        "stats",
        help="volumes per partnership, recipient, concern type and outcome; time to receipt",
        formatter_class=FORMATTER,
        description="Count audit log entries per partnership, recipient, concern type and\n"
        "outcome (the event: DISCLOSED, WITHHELD, REFERRED, QUARANTINED, RECEIVED…), and\n"
        "measure the time from each delivery (a disclosure or referral) to its first\n"
        "receipt: median, 90th percentile (nearest rank) and maximum per partnership.\n\n"
        "The audit record has no concern-type field: the type is read from the decision\n"
        'reasons the consent engine recorded ("…for concern type NEGLECT…"), and a\n'
        "concern none of whose decisions names it is counted as 'not recorded'.\n\n"
        "examples:\n  safer audit stats\n"
        "  safer audit stats --from 2025-04-01 --to 2025-06-30 --format json",
    )
    _period_args(p)
    _format_arg(p, ("table", "json"), "table")
    p.set_defaults(func=cmd_stats)

    p = add(
        "export",
        help="export disclosures as a FHIR R4 Bundle of AuditEvents (IHE BALP)",
        formatter_class=FORMATTER,
        description="Write a FHIR R4 Bundle (type collection) of AuditEvent resources to stdout,\n"
        "following IHE Basic Audit Log Patterns PrivacyDisclosure: each disclosure or\n"
        "referral as the source's record (Export), each receipt as the recipient's\n"
        "record (Import). The patient is a logical reference by pseudonym only, one\n"
        "AuditEvent per person. Restricted concerns carry the security label R: this\n"
        "export is for auditors and partner systems, not for the data subject (use\n"
        "`safer audit sar` for that). With --subject, only that person's events.\n\n"
        "examples:\n"
        "  safer audit export --fhir > bundle.json\n"
        "  safer audit export --fhir --from 2025-04-01 --to 2025-04-30 > april.json\n"
        "  safer audit export --fhir --subject nhs:9990001234 > subject.json",
    )
    p.add_argument(
        "--fhir", action="store_true", help="FHIR R4 AuditEvent Bundle (the only format)"
    )
    _subject_args(p, required=False)
    _period_args(p)
    p.set_defaults(func=cmd_export)

    p = add(
        "shred",
        help="crypto-shred a person's subject vault key (records KEY_SHREDDED)",
        formatter_class=FORMATTER,
        description="Destroy the subject vault key of the person with this identifier, so the\n"
        "identifiers the vault holds for them can never be decrypted again. First a\n"
        "KEY_SHREDDED entry is appended to the audit log (deterministic id: re-running\n"
        "after a crash finishes the job without a second entry), then the key is\n"
        "overwritten and deleted. The audit log is not changed and still verifies end to\n"
        "end; it is verified again afterwards. Cannot be undone: asks for confirmation\n"
        "unless --yes is given.\n\n"
        "Reasons (fixed wording goes into the log, never free text):\n"
        + "".join(f"  {k:<12}{v}\n" for k, v in SHRED_REASONS.items())
        + "\nexamples:\n"
        "  safer audit shred --subject nhs:9990001234 --reason erasure --actor dpo-0042\n"
        "  safer audit shred --subject-file erasure-17.txt --reason retention --yes",
    )
    _subject_args(p, required=True)
    p.add_argument(
        "--reason", required=True, choices=sorted(SHRED_REASONS), help="why the key is shredded"
    )
    p.add_argument(
        "--actor",
        default="dpo",
        help="who is shredding: a role or staff id, not a name (default: dpo)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _format_arg(p, ("text", "json"), "text")
    p.set_defaults(func=cmd_shred)
