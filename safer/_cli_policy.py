"""`safer policy …` and `safer consent …`: check agreements, explain decisions, record consent.

* ``safer policy check [DIR]`` validates the data-sharing agreements and prints
  who may receive what. Needs no broker and no keys.
* ``safer policy explain CONCERN.json [--json]`` shows, for every candidate
  recipient of one concern, the decision, the lawful basis, the reasons and
  the fields that would be shared. Needs no broker and no keys.
* ``safer consent record`` publishes a signed ``ConsentRecord`` to
  ``hips.consent`` (needs a broker and the recording agency's key).

A malformed policy file gives a precise error (file, agreement, field) and
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from adapters import consents_bundle, parse_police_json
from broker import (
    ROUTER_ID,
    candidate_recipients,
    consent_out_record,
    make_producer,
    pseudonym,
    read_topic,
    resolve_partnerships,
    send_all,
    start_client,
    verify_consent_record,
)
from consent import (
    LAWFUL_BASES,
    ConsentRecord,
    Deny,
    PolicyProblems,
    PolicySet,
    current_consent,
    decide,
    minimise,
    parse_policy,
)
from schemas import (
    ConcernModel,
    ConfigError,
    ConsentState,
    NotSoughtReason,
    OverrideJustification,
    ReasonCode,
    SaferError,
    ValidationError,
    age_on,
)

from ._cli_common import FORMATTER, err, out, run_async, settings_from
from ._cli_replay import print_replay, replay_disclosure
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["canonical_identifier", "compact_fields", "explain_concern", "register"]


# -- policy check ----------------------------------------------------------------------


def _read_policy_dir(directory: Path) -> dict[str, str]:
    """``{path: text}`` of every ``*.toml`` in ``directory``; unreadable files are problems."""
    if not directory.is_dir():
        raise ConfigError(
            f"{directory} is not a directory",
            code=ReasonCode.CONFIG_INVALID,
            hint="pass the folder that holds the policy files, e.g. deploy/policy",
        )
    paths = sorted(directory.glob("*.toml"))
    if not paths:
        raise ConfigError(
            f"no *.toml policy files in {directory}",
            code=ReasonCode.CONFIG_INVALID,
            hint="pass the folder that holds the policy files, e.g. deploy/policy",
        )
    files: dict[str, str] = {}
    problems: list[str] = []
    for path in paths:
        try:
            files[str(path)] = path.read_bytes().decode("utf-8")
        except OSError as exc:
            problems.append(f"{path}: cannot read the file ({exc.strerror})")
        except UnicodeDecodeError as exc:
            problems.append(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8")
    if problems:
        raise PolicyProblems(problems)
    return files


def _print_problems(exc: PolicyProblems) -> int:
    count = len(exc.problems)
    err.print(f"[red]policy check FAILED[/]: {count} problem{'s' if count != 1 else ''}")
    for problem in exc.problems:
        err.print(f"  - {escape(problem)}")
    err.print(f"  what to do: {escape(exc.hint)}")
    return 2


def compact_fields(fields: tuple[str, ...] | list[str]) -> str:
    """Dotted paths grouped by their first part: ``subjects(role, given_name), officer(name)``."""
    groups: dict[str, list[str]] = {}
    for path in fields:
        head, _, rest = path.partition(".")
        groups.setdefault(head, [])
        if rest:
            groups[head].append(rest)
    return ", ".join(f"{h}({', '.join(r)})" if r else h for h, r in groups.items())


def _agreements_table(policy: PolicySet) -> Table:
    table = Table(title="Who may receive what (data-sharing agreements)", show_lines=True)
    longest = max(
        len(text)
        for a in policy.agreements
        for text in (a.id, f"{a.profile} ({len(policy.profile(a.profile).fields)} fields)")
    )
    table.add_column("agreement\nfrom → to\nprofile", no_wrap=True, min_width=longest)
    table.add_column("concern types", overflow="fold")
    table.add_column("min grade\nages", overflow="fold")
    table.add_column("lawful bases\n(first is cited)", overflow="fold")
    table.add_column("consent rule", no_wrap=True)
    for agreement in policy.agreements:
        profile = policy.profile(agreement.profile)
        flags = [
            label
            for flag, label in (
                ("requires_school_match", "child's own school only"),
                ("requires_home_educated", "home-educated only"),
                ("requires_care_leaver", "care leavers only"),
            )
            if getattr(agreement, flag)
        ]
        table.add_row(
            f"{agreement.id}\n{', '.join(t.value for t in agreement.source_agency_types)} → "
            f"{', '.join(t.value for t in agreement.recipient_agency_types)}\n"
            f"{profile.name} ({len(profile.fields)} fields)",
            ", ".join(str(t) for t in agreement.concern_types),
            f"{agreement.min_risk_grade.value}\n{agreement.age_text().removeprefix('a ')}"
            + "".join(f"\n{f}" for f in flags),
            "\n".join(agreement.lawful_bases),
            agreement.consent_rule,
        )
    return table


def _profiles_table(policy: PolicySet) -> Table:
    table = Table(title="Minimisation profiles: the only fields each recipient sees")
    table.add_column("profile", no_wrap=True)
    table.add_column("people")
    table.add_column("fields", overflow="fold")
    for profile in policy.profiles:
        table.add_row(
            profile.name,
            ", ".join(r.value for r in profile.subject_roles),
            compact_fields(profile.fields),
        )
    return table


def _bases_table(policy: PolicySet) -> Table:
    cited = sorted({b for a in policy.agreements for b in a.lawful_bases})
    table = Table(title="Lawful bases cited (from the catalogue)")
    table.add_column("id")
    table.add_column("kind")
    table.add_column("citation")
    for ident in cited:
        basis = LAWFUL_BASES[ident]
        table.add_row(ident, basis.kind, basis.citation)
    return table


def _thresholds_table(policy: PolicySet) -> Table:
    table = Table(title="Cumulative-concern thresholds (docs/RISK.md)")
    table.add_column("id", no_wrap=True)
    table.add_column("rule")
    table.add_column("partnerships")
    table.add_column("source", overflow="fold")
    for threshold in policy.thresholds:
        table.add_row(
            threshold.id,
            threshold.describe(),
            ", ".join(lscp.value for lscp in threshold.lscps),
            threshold.source,
        )
    return table


def cmd_policy_check(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    directory = Path(args.dir) if args.dir else settings.deploy_dir / "policy"
    try:
        policy = parse_policy(_read_policy_dir(directory))
    except PolicyProblems as exc:
        return _print_problems(exc)
    out.print(_agreements_table(policy))
    out.print(_profiles_table(policy))
    out.print(_bases_table(policy))
    if policy.thresholds:
        out.print(_thresholds_table(policy))
    out.print(
        f"[green]policy OK[/]: {len(policy.agreements)} agreements, {len(policy.profiles)} "
        f"profiles, every lawful basis in the catalogue and fit for its agreement\n"
        f"policy revision {policy.revision} (every decision and audit record carries it)"
    )
    return 0


# -- policy explain --------------------------------------------------------------------


def _load_concern(path: Path, publishers: set[str]) -> ConcernModel:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ValidationError(
            f"cannot read {path} ({exc.strerror})",
            code=ReasonCode.DECODE_ERROR,
            hint="check the path",
        ) from None
    except UnicodeDecodeError:
        raise ValidationError(
            f"{path} is not UTF-8 text", code=ReasonCode.DECODE_ERROR, hint="save it as UTF-8"
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{path} is not JSON (line {exc.lineno}, column {exc.colno})",
            code=ReasonCode.DECODE_ERROR,
            hint="explain takes one concern as a JSON object (docs/police-json-format.md)",
        ) from None
    items = raw if isinstance(raw, list) else [raw]
    if len(items) != 1 or not isinstance(items[0], dict):
        raise ValidationError(
            f"{path} holds {len(items)} records; explain takes exactly one concern",
            code=ReasonCode.SCHEMA_INVALID,
            hint="put the concern you want explained in a file of its own",
        )
    source = items[0].get("source_agency")
    if not isinstance(source, str) or source not in publishers:
        raise ValidationError(
            "the concern's source_agency is not a publisher in the directory",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint=f"use one of: {', '.join(sorted(publishers))}",
        )
    (parsed,) = parse_police_json(json.dumps(items[0]), source=str(path), publisher_id=source)
    if parsed.concern is None:
        raise ValidationError(
            f"the router would not accept this concern: {parsed.detail}",
            code=ReasonCode(parsed.status),
            hint="fix the named fields (docs/police-json-format.md) and explain it again",
        )
    return parsed.concern


def explain_concern(
    runtime: Runtime, path: Path, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JSON answer, context for the human form) for one concern file."""
    deployment = runtime.deployment
    directory = deployment.directory
    concern = _load_concern(path, {p.id for p in directory.publishers})
    publisher = directory.publisher(concern.source_agency)
    assert publisher is not None  # checked by _load_concern
    routing = resolve_partnerships(concern, deployment.postcodes)
    if not routing.lscps:
        raise ValidationError(
            "no HIPS partnership found from residence, placement or incident location; the "
            "router would quarantine this concern (ADDRESS_UNRESOLVED)",
            code=ReasonCode.ADDRESS_UNRESOLVED,
            hint="give the child's address an LA code or a HIPS postcode",
        )
    candidates = candidate_recipients(concern, routing, directory)
    consent = current_consent(concern.consent, None)
    recipients: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    for candidate in candidates:
        recipient = candidate.recipient
        decision = decide(
            concern,
            recipient,
            deployment.policy,
            consent,
            now,
            source_agency_type=publisher.agency_type,
        )
        fields: list[str] = []
        redactions: tuple[str, ...] = ()
        lawful_basis: str | None = None
        extra: dict[str, Any] = {"why_candidate": list(candidate.why), "name": recipient.name}
        if not isinstance(decision, Deny):
            payload = minimise(concern, decision.profile, decision.withheld_subject_refs)
            fields = list(payload.fields)
            redactions = payload.redaction_reasons
            lawful_basis = decision.lawful_basis
            shared = payload.data.get("subjects", [])
            kept = {s["subject_ref"] for s in shared}
            extra.update(
                purpose=decision.purpose,
                profile=decision.profile.name,
                retention=decision.retention,
                people=[
                    f"{s['subject_ref']} {s['role']}"
                    + (" (withheld: only a stub)" if "withheld" in s else "")
                    for s in shared
                ],
                left_out=[
                    f"{s.subject_ref} {s.role.value}"
                    for s in concern.subjects
                    if s.subject_ref not in kept
                ],
            )
        recipients.append(
            {
                "recipient_id": recipient.id,
                "lscp": recipient.lscp.value,
                "agency_type": recipient.agency_type.value,
                "decision": decision.kind,
                "lawful_basis": lawful_basis,
                "reason_codes": [c.value for c in decision.reason_codes],
                "reasons": [*decision.reasons, *redactions],
                "fields": fields,
            }
        )
        details.append({**extra, "front_door": recipient.is_front_door})
    answer = {"policy_revision": deployment.policy.revision, "recipients": recipients}
    children = [
        "age unknown" if c.date_of_birth is None else f"aged {age_on(c.date_of_birth, now)}"
        for c in concern.children()
    ]
    context = {
        "concern": concern,
        "consent": consent.describe(),
        "children": children,
        "partnerships": {
            **{lscp.value: why for lscp, why in routing.full.items()},
            **{
                lscp.value: [*why, "front door only"]
                for lscp, why in routing.front_door_only.items()
            },
        },
        "details": details,
        "at": now,
    }
    return answer, context


_STYLE = {"PERMIT": "green", "REFER": "yellow", "DENY": "red"}


def _print_explanation(answer: dict[str, Any], context: dict[str, Any]) -> None:
    concern: ConcernModel = context["concern"]
    out.print(
        f"[bold]Concern {concern.concern_id}[/] from {concern.source_agency} "
        f"(ref {escape(concern.source_ref)})"
    )
    out.print(
        f"  {concern.concern_type.value} · risk {concern.risk_grade.value} · "
        f"{len(context['children'])} child(ren): {', '.join(context['children'])}"
        + (" · restricted" if concern.restricted else "")
        + (
            f" · {len(concern.third_party_protection)} protected third party"
            if concern.third_party_protection
            else ""
        )
    )
    out.print(f"  {escape(context['consent'])} (from the officer's statement)")
    parts = [f"{lscp} ({', '.join(why)})" for lscp, why in context["partnerships"].items()]
    out.print(f"  partnerships: {'; '.join(parts)}")
    out.print(f"  decided as at {context['at'].isoformat(timespec='minutes')}")
    out.print(f"  policy revision {answer['policy_revision']}\n")

    table = Table(title="Decision for every candidate recipient (each one is audited)")
    table.add_column("recipient")
    table.add_column("agency")
    table.add_column("decision")
    table.add_column("lawful basis / reason code")
    table.add_column("fields", justify="right")
    for row in answer["recipients"]:
        style = _STYLE[row["decision"]]
        table.add_row(
            row["recipient_id"],
            row["agency_type"],
            f"[{style}]{row['decision']}[/]",
            row["lawful_basis"] or ", ".join(row["reason_codes"]),
            str(len(row["fields"])) if row["fields"] else "-",
        )
    out.print(table)

    for row, detail in zip(answer["recipients"], context["details"], strict=True):
        style = _STYLE[row["decision"]]
        door = ", front door" if detail["front_door"] else ""
        out.print(
            f"\n[{style}]{row['decision']}[/] [bold]{row['recipient_id']}[/] — "
            f"{escape(detail['name'])} ({row['lscp']}, {row['agency_type']}{door}; "
            f"candidate because: {', '.join(detail['why_candidate'])})"
        )
        if row["reason_codes"]:
            out.print(f"  reason code: {', '.join(row['reason_codes'])}")
        if row["lawful_basis"]:
            basis = LAWFUL_BASES[row["lawful_basis"]]
            out.print(f"  lawful basis: {basis.id} — {escape(basis.citation)}")
            out.print(f"  purpose: {escape(detail['purpose'])}")
            out.print(f"  retention: {detail['retention']} · profile {detail['profile']}")
            out.print(f"  fields shared ({len(row['fields'])}): {compact_fields(row['fields'])}")
            if detail["people"] or detail["left_out"]:
                out.print(
                    f"  people shared: {', '.join(detail['people']) or 'none'}; left out: "
                    f"{', '.join(detail['left_out']) or 'nobody'}"
                )
            if row["decision"] == "REFER":
                out.print("  goes to the front door's triage queue, not as a disclosure")
        out.print("  why:")
        for reason in row["reasons"]:
            out.print(f"    • {escape(reason)}")


def cmd_policy_explain(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap="")
    if args.replay:
        stored = None
        if args.concern:
            directory = runtime.deployment.directory
            stored = _load_concern(Path(args.concern), {p.id for p in directory.publishers})
        replay = replay_disclosure(runtime, args.replay, stored)
        if args.json:
            print(json.dumps(replay.to_json(), ensure_ascii=False, default=str))
        else:
            print_replay(replay)
        return 0 if replay.matches else 1
    if not args.concern:
        err.print(
            "[red]give a concern file to explain, or --replay DISCLOSURE_ID[/red] "
            "(see safer policy explain --help)"
        )
        return 2
    now = _parse_time(args.at, "--at") if args.at else datetime.now(UTC)
    try:
        answer, context = explain_concern(runtime, Path(args.concern), now)
    except PolicyProblems as exc:
        return _print_problems(exc)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
    else:
        _print_explanation(answer, context)
    return 0


# -- consent record --------------------------------------------------------------------


def canonical_identifier(text: str) -> str:
    """``scheme:value`` exactly as ``Subject.identifiers()`` spells it (what is pseudonymised).

    ``NHS:999 000 1234`` → ``nhs:9990001234``; ``police:hc-p-1`` → ``police:HC-P-1``.
    """
    scheme, sep, value = text.partition(":")
    scheme = scheme.strip().lower()
    hint = "use nhs:<10-digit NHS number> or police:<police person id>"
    if not sep or not value.strip():
        raise ValidationError(
            "--subject must be scheme:value", code=ReasonCode.SCHEMA_INVALID, hint=hint
        )
    if scheme == "nhs":
        digits = "".join(value.split())
        if not (digits.isdigit() and len(digits) == 10):
            raise ValidationError(
                "an NHS number is 10 digits", code=ReasonCode.SCHEMA_INVALID, hint=hint
            )
        return f"nhs:{digits}"
    if scheme == "police":
        return f"police:{value.strip().upper()}"
    raise ValidationError(
        f"unknown identifier scheme {scheme!r}", code=ReasonCode.SCHEMA_INVALID, hint=hint
    )


def _parse_time(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{option} is not an ISO 8601 date-time",
            code=ReasonCode.SCHEMA_INVALID,
            hint="e.g. 2026-11-24T09:30:00+00:00",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def cmd_consent_record(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))
    directory = runtime.deployment.directory
    agency = args.agency or next(
        (p.id for p in directory.publishers if p.agency_type.value == "police"), ""
    )
    if directory.publisher(agency) is None and directory.recipient(agency) is None:
        raise ConfigError(
            f"{agency!r} is not a publisher or recipient in the directory",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint="pass --agency with the directory id of the agency recording the consent",
        )
    identifier = canonical_identifier(args.subject)
    record = ConsentRecord.create(
        subject_pseudonym=pseudonym(runtime.keys.pseudonym_secret(), identifier),
        state=ConsentState(args.state),
        decided_by=args.by,
        agency_id=agency,
        recorded_at=_parse_time(args.at, "--at") if args.at else datetime.now(UTC),
        not_sought_reason=NotSoughtReason(args.reason) if args.reason else None,
        justification=OverrideJustification(args.justification) if args.justification else None,
        expires_at=_parse_time(args.expires, "--expires") if args.expires else None,
        source_ref=args.ref,
    )
    wire = consent_out_record(
        runtime.codec,
        runtime.keys.signing_identity(agency),
        record,
        topic=settings.topics.consent,
    )

    async def publish(stop: asyncio.Event) -> int:
        producer = make_producer(runtime.bootstrap, **runtime.security_for(agency))
        await start_client(producer, runtime.bootstrap)
        try:
            await send_all(producer, [wire])
        finally:
            await producer.stop()
        print(
            f"{record.consent_record_id} PUBLISHED consent {record.state.value} for subject "
            f"{record.subject_pseudonym} to {settings.topics.consent}",
            flush=True,
        )
        return 0

    return run_async(publish)


def cmd_consent_export(args: argparse.Namespace) -> int:
    """Every verified consent record on hips.consent (latest per person unless --all),
    as a FHIR R4 Bundle of Consent resources."""
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))

    async def export(stop: asyncio.Event) -> int:
        raw = await read_topic(
            runtime.bootstrap,
            settings.topics.consent,
            timeout=args.timeout,
            **runtime.security_for(ROUTER_ID),
        )
        latest: dict[str, ConsentRecord] = {}
        every: list[ConsentRecord] = []
        skipped = 0
        for message in raw:
            try:
                record = verify_consent_record(
                    runtime.codec,
                    runtime.keyring(),
                    runtime.deployment.directory,
                    key=message.key,
                    value=message.value,
                    headers=message.headers,
                )
            except SaferError:
                skipped += 1
                continue
            every.append(record)
            known = latest.get(record.subject_pseudonym)
            if known is None or record.recorded_at >= known.recorded_at:
                latest[record.subject_pseudonym] = record
        chosen = every if args.all else list(latest.values())
        if args.subject_pseudonym:
            chosen = [r for r in chosen if r.subject_pseudonym == args.subject_pseudonym]
        print(json.dumps(consents_bundle(chosen), indent=1))
        if skipped:
            err.print(
                f"{skipped} record(s) on {settings.topics.consent} failed verification and are "
                "not exported (the router quarantines them too)"
            )
        return 0

    return run_async(export)


# -- parser ----------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Adds the `policy` and `consent` command groups."""
    policy = sub.add_parser(
        "policy",
        help="check data-sharing agreements and explain decisions",
        formatter_class=FORMATTER,
        description="Data-sharing agreements are policy as data: deploy/policy/*.toml names, for\n"
        "each recipient type, which concerns it may receive, from what risk grade, under\n"
        "which lawful basis, with what consent rule, and which fields it may see. These\n"
        "commands check those files and show how they decide a concern. Neither needs a\n"
        "broker or any keys.\n\n"
        "example:\n  safer policy check\n"
        "  safer policy explain deploy/examples/concern-domestic-abuse.json",
    )
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = policy_sub.add_parser(
        "check",
        help="validate the agreements and print who may receive what",
        formatter_class=FORMATTER,
        description="Validate every *.toml in DIR (default: deploy/policy) the way the router\n"
        "does at start: each agreement and profile is checked field by field, every lawful\n"
        "basis must be in the catalogue and fit the agreement (who may rely on it, whom it\n"
        "reaches, whose data), and profiles may name only real concern fields. Prints a\n"
        "table of who may receive what and the policy revision every decision will carry.\n"
        "A bad file gets one line per problem naming the file, the agreement and the\n"
        "field, and exit code 2.\n\n"
        "example:\n  safer policy check\n  safer policy check /etc/safer/policy",
    )
    check.add_argument("dir", nargs="?", metavar="DIR", help="folder of policy files")
    check.set_defaults(func=cmd_policy_check)
    explain = policy_sub.add_parser(
        "explain",
        help="show the decision for every candidate recipient of one concern",
        formatter_class=FORMATTER,
        description="Route one police concern (JSON, as for `safer publish`) the way the router\n"
        "would: find its partnerships and candidate recipients, then for each one show\n"
        "the decision (PERMIT, DENY or REFER), the lawful basis, the reasons and the\n"
        "fields that would be shared. Consent comes from the concern's own statement\n"
        "(consent records on hips.consent are not consulted: no broker is needed).\n"
        '--json prints {"policy_revision", "recipients": [{"recipient_id", "lscp",\n'
        '"agency_type", "decision", "lawful_basis", "reason_codes", "reasons",\n'
        '"fields"}]}. Names and other personal data are never printed.\n\n'
        "\nReplay a logged decision: --replay DISCLOSURE_ID takes the decision's audit\n"
        "record (local audit log), the concern it was made on (the signed original on its\n"
        "inbound topic, through the running broker; or CONCERN.json, the publisher's copy)\n"
        "and the consent records the log holds, decides again as the router did at that\n"
        "time, and compares: the hash of the canonical decision input (input_sha256), the\n"
        "decision id, outcome, reasons, lawful basis, fields, payload hash and deadline.\n"
        "Exit 0 when everything matches, 1 with the reason when it does not.\n\n"
        "example:\n  safer policy explain deploy/examples/concern-domestic-abuse.json\n"
        "  safer policy explain --json --at 2026-11-23T07:00:00Z concern.json\n"
        "  safer policy explain --replay 3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d\n"
        "  safer policy explain --replay 3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d concern.json",
    )
    explain.add_argument("concern", metavar="CONCERN.json", nargs="?", help="one concern as JSON")
    explain.add_argument(
        "--replay",
        metavar="DISCLOSURE_ID",
        default=None,
        help="recompute this logged decision and show that it matches",
    )
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.add_argument(
        "--at", default=None, help="decide as at this ISO 8601 time (ages; default: now)"
    )
    explain.set_defaults(func=cmd_policy_explain)

    consent = sub.add_parser(
        "consent",
        help="record consent changes on hips.consent",
        formatter_class=FORMATTER,
        description="Consent is a state with reasons: GIVEN, REFUSED, WITHDRAWN, NOT_SOUGHT\n"
        "(with why it was not sought), OVERRIDDEN (with a justification and who decided)\n"
        "or EXPIRED. A consent record is published, signed, to the compacted hips.consent\n"
        "topic, keyed by the person's pseudonym (never an identifier). Every router keeps\n"
        "the latest record per person and uses it for new decisions when it is newer than\n"
        "the concern's own consent statement; each applied record is audited\n"
        "(CONSENT_CHANGED).\n\n"
        "example:\n  safer consent record --subject nhs:9992048719 --state WITHDRAWN \\\n"
        '      --by "MASH team manager 4471"',
    )
    consent_sub = consent.add_subparsers(dest="consent_command", metavar="ACTION", required=True)
    record = consent_sub.add_parser(
        "record",
        help="publish a consent record for one person",
        formatter_class=FORMATTER,
        description="Publish one consent record. --subject is the person's NHS number or police\n"
        "person id (nhs:NNNNNNNNNN or police:ID); it is pseudonymised with the partnership\n"
        "secret before anything leaves this machine. NOT_SOUGHT needs --reason\n"
        "(RISK_TO_CHILD, PREJUDICE_PREVENTION_DETECTION, NOT_PRACTICABLE,\n"
        "CHILD_NOT_COMPETENT); OVERRIDDEN needs --justification (SIGNIFICANT_HARM,\n"
        "PREVENT_DETECT_CRIME, RISK_TO_OTHERS, LEGAL_DUTY). --by says who decided: a role\n"
        "and staff number, never the person the record is about. Signed with the key of\n"
        "--agency (default: the police publisher). Needs a broker: a running `safer up`,\n"
        "or KAFKA_BOOTSTRAP_SERVERS.\n\n"
        "example:\n  safer consent record --subject nhs:9992048719 --state WITHDRAWN \\\n"
        '      --by "PC 21874"\n'
        "  safer consent record --subject police:HC-P-3047719 --state OVERRIDDEN \\\n"
        '      --justification SIGNIFICANT_HARM --by "MASH team manager 4471" \\\n'
        "      --agency portsmouth-csc --ref MASH/2026/1187",
    )
    record.add_argument("--subject", required=True, help="nhs:NNNNNNNNNN or police:ID")
    record.add_argument(
        "--state", required=True, choices=[s.value for s in ConsentState], help="consent state"
    )
    record.add_argument("--by", required=True, help="who decided: role and staff number")
    record.add_argument(
        "--reason", choices=[r.value for r in NotSoughtReason], help="NOT_SOUGHT only"
    )
    record.add_argument(
        "--justification",
        choices=[j.value for j in OverrideJustification],
        help="OVERRIDDEN only",
    )
    record.add_argument("--agency", default=None, help="recording agency's directory id")
    record.add_argument("--expires", default=None, help="GIVEN only: ISO 8601 expiry")
    record.add_argument("--ref", default=None, help="the agency's own case reference")
    record.add_argument("--at", default=None, help="when it was recorded (default: now)")
    record.set_defaults(func=cmd_consent_record)
    export = consent_sub.add_parser(
        "export",
        help="export consent records as FHIR R4 Consent resources",
        formatter_class=FORMATTER,
        description="Read hips.consent, verify each record's signature, and print a FHIR R4\n"
        "Bundle (type collection) of Consent resources: the latest record per person,\n"
        "or every record with --all. People are named by pseudonym only; the recording\n"
        "agency is the organization and who decided is the performer (docs/fhir.md).\n"
        "Needs a broker: a running `safer up`, or KAFKA_BOOTSTRAP_SERVERS.\n\n"
        "example:\n  safer consent export --fhir > consents.json\n"
        "  safer consent export --fhir --all --subject-pseudonym 3f0c…",
    )
    export.add_argument(
        "--fhir", action="store_true", required=True, help="FHIR R4 (the only format for now)"
    )
    export.add_argument("--all", action="store_true", help="every record, not only the latest")
    export.add_argument("--subject-pseudonym", default=None, help="one person's records only")
    export.add_argument("--timeout", type=float, default=30.0, help="seconds to read the topic")
    export.set_defaults(func=cmd_consent_export)
