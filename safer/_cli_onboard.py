"""`safer onboard check AGENCY`: is a partner ready to go live? (issue 15.2)

Each check has a name, a verdict and, when it fails, the reason and what to do:

1. ``directory``: the agency is a publisher or recipient in deploy/directory.toml,
   and a webhook recipient has a webhook URL;
2. ``keys``: its signing and encryption keys are in the key store, each private key
   matches its public key, and its signing key is not revoked;
3. ``agreement``: a data-sharing agreement covers its agency type (as source for a
   publisher, as recipient for a recipient);
4. ``acls``: the secure-mode ACL plan grants it its topics (a publisher writes its
   inbound topic; a recipient reads its disclosure topic, and triage if front door);
5. ``topics``: those topics exist on the broker and the agency's principal can see
   them (skipped with ``--offline``);
6. ``delivery``: a webhook answers (any HTTP status), or the inbox database opens;
7. ``round-trip``: a synthetic concern marked as a test goes the whole way in this
   process, never through Kafka (so it reaches no real recipient): signed by the
   publisher (the agency itself if it publishes), verified, decided, minimised,
   encrypted to the agency if it receives, then decrypted and checked with its own
   private key. Its audit records are appended to the audit log with ``test`` set.

Exit 0 when every check passes, 1 otherwise; ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from adapters import Inbox, PoliceAdapter, synthetic_concerns
from broker import (
    AclOperation,
    AclPermission,
    KeyStore,
    acl_plan,
    make_consumer,
    start_client,
)
from consent import Publisher, Recipient
from schemas import ConcernModel, Lscp, SaferError

from ._cli_common import FORMATTER, err, out, settings_from
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["Check", "onboard_check", "register"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str

    def to_json(self) -> dict[str, Any]:
        state = "skipped" if self.ok is None else ("ok" if self.ok else "failed")
        return {"name": self.name, "state": state, "detail": self.detail}


def _topics_for(runtime: Runtime, agency: Publisher | Recipient) -> list[str]:
    topics = runtime.settings.topics
    if isinstance(agency, Publisher):
        return [topics.inbound(agency.agency_type.value)]
    return runtime.recipient_topics(agency)


def _check_keys(runtime: Runtime, agency_id: str) -> Check:
    keys = KeyStore(runtime.settings.keys_dir)  # fresh: no cached key hides a changed file
    if not keys.has_agency(agency_id):
        return Check("keys", False, "no keys in the key store: run `safer keys init`")
    try:
        keys.signing_identity(agency_id)
        keys.encryption_private(agency_id)
    except SaferError as exc:
        return Check("keys", False, f"{exc.message} ({exc.hint})")
    kid = keys.signing_key_id(agency_id)
    if kid in keys.revocations():
        return Check(
            "keys",
            False,
            f"its signing key {kid} is revoked: `safer keys rotate {agency_id} --overlap 0`",
        )
    return Check("keys", True, f"signing key {kid} present, matching and not revoked")


def _check_agreement(runtime: Runtime, agency: Publisher | Recipient) -> Check:
    policy = runtime.deployment.policy
    if isinstance(agency, Publisher):
        found = [a.id for a in policy.agreements if agency.agency_type in a.source_agency_types]
        role = "source"
    else:
        found = [a.id for a in policy.agreements if agency.agency_type in a.recipient_agency_types]
        role = "recipient"
    if not found:
        return Check(
            "agreement",
            False,
            f"no data-sharing agreement names {agency.agency_type.value} as a {role}: "
            "add one to deploy/policy and have the DPOs sign it off",
        )
    return Check("agreement", True, f"covered as {role} by {', '.join(found)}")


def _check_acls(runtime: Runtime, agency: Publisher | Recipient) -> Check:
    plan = acl_plan(runtime.deployment.directory, runtime.settings.topics)
    operation = AclOperation.WRITE if isinstance(agency, Publisher) else AclOperation.READ
    granted = {
        b.name
        for b in plan
        if b.principal == f"User:{agency.id}"
        and b.operation is operation
        and b.permission is AclPermission.ALLOW
    }
    missing = [t for t in _topics_for(runtime, agency) if t not in granted]
    if missing:
        return Check("acls", False, f"the ACL plan does not grant {operation.name} on {missing}")
    return Check(
        "acls", True, f"{operation.name} granted on {', '.join(_topics_for(runtime, agency))}"
    )


async def _check_topics(runtime: Runtime, agency: Publisher | Recipient) -> Check:
    try:
        bootstrap = resolve_bootstrap(runtime.settings)
    except SaferError as exc:
        return Check("topics", False, f"{exc.message}: {exc.hint}")
    live = Runtime(runtime.settings, bootstrap)
    consumer = make_consumer(bootstrap, **live.security_for(agency.id))
    try:
        await start_client(consumer, bootstrap)
    except SaferError as exc:
        return Check("topics", False, f"cannot connect as {agency.id}: {exc.message}")
    try:
        visible = await consumer.topics()
    finally:
        await consumer.stop()
    wanted = [*_topics_for(runtime, agency), runtime.settings.topics.keys]
    missing = [t for t in wanted if t not in visible]
    if missing:
        return Check(
            "topics",
            False,
            f"{', '.join(missing)} missing or not visible to {agency.id}: run "
            "`safer topics create` (and `safer secure` in secure mode)",
        )
    return Check("topics", True, f"{', '.join(wanted)} exist and {agency.id} can see them")


async def _webhook_answers(url: str, timeout: float = 5.0) -> str:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    context = ssl.create_default_context() if secure else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context), timeout
    )
    try:
        path = parts.path or "/"
        writer.write(f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    status = line.decode("latin-1").split()
    if len(status) < 2 or not status[0].startswith("HTTP/"):
        raise ValueError("not an HTTP answer")
    return status[1]


async def _check_delivery(runtime: Runtime, agency: Publisher | Recipient) -> Check:
    if isinstance(agency, Publisher):
        return Check("delivery", None, "a publisher receives no disclosures")
    if agency.delivery == "webhook":
        if not agency.webhook_url:
            return Check("delivery", False, "delivery is webhook but webhook_url is not set")
        try:
            status = await _webhook_answers(agency.webhook_url)
        except (OSError, TimeoutError, ValueError) as exc:
            return Check(
                "delivery",
                False,
                f"the webhook does not answer ({type(exc).__name__}): ask the agency to "
                "check their endpoint and firewall",
            )
        return Check("delivery", True, f"the webhook answers (HTTP {status})")
    try:
        with Inbox(runtime.inbox_path(agency.id)) as inbox:
            count = inbox.count()
    except Exception as exc:  # any failure to open it is the finding
        return Check("delivery", False, f"the inbox cannot be opened ({type(exc).__name__})")
    return Check("delivery", True, f"the inbox opens ({count} disclosures held)")


def _round_trip(runtime: Runtime, agency: Publisher | Recipient, now: datetime) -> Check:
    """A test concern through sign → route → seal → open, in this process only."""
    directory = runtime.deployment.directory
    publisher = agency if isinstance(agency, Publisher) else directory.publishers[0]
    schools = {
        lscp.value: [r.school_urn for r in directory.recipients if r.lscp == lscp and r.school_urn]
        for lscp in Lscp
    }
    if isinstance(agency, Recipient) and agency.school_urn:
        # Every synthetic child attends this school, so a notification can reach it.
        schools = {lscp.value: [agency.school_urn] for lscp in Lscp}
    try:
        signer = PoliceAdapter(
            codec=runtime.codec,
            identity=runtime.keys.signing_identity(publisher.id),
            pseudonym_secret=runtime.keys.pseudonym_secret(),
            topic=runtime.settings.topics.inbound(publisher.agency_type.value),
        )
        core = runtime.router_core()
    except SaferError as exc:
        return Check("round-trip", False, f"{exc.message} ({exc.hint})")
    candidates = synthetic_concerns(60, seed=15, now=now, directory_schools=schools)
    for index, data in enumerate(candidates):
        data = {**data, "concern_id": str(uuid.uuid4()), "source_agency": publisher.id}
        concern = ConcernModel.model_validate(data)
        record = signer.prepare(concern)
        plan = core.plan(
            topic=runtime.settings.topics.inbound(publisher.agency_type.value),
            partition=0,
            offset=index,
            key=record.key,
            value=record.value,
            headers=record.headers,
            now=now,
        )
        if plan.quarantine_code is not None:
            return Check(
                "round-trip",
                False,
                f"the test concern was quarantined as {plan.quarantine_code.value}",
            )
        if isinstance(agency, Recipient):
            mine = [o for o in plan.outputs if o.topic in runtime.recipient_topics(agency)]
            opened = None
            adapter = runtime.recipient_adapter(agency)
            try:
                for output in mine:
                    opened = adapter._open(output.value, output.headers)
                    if opened is not None:
                        break
            except SaferError as exc:
                return Check("round-trip", False, f"{agency.id} cannot open it: {exc.message}")
            finally:
                adapter.inbox.close()
            if opened is None:
                continue  # this concern is not for the agency; try the next
        tests = [dataclasses.replace(a, test=True, actor="safer-onboard") for a in plan.audits]
        with runtime.audit_store() as store:
            results = store.append(tests)
        seqs = [r.seq for r in results]
        return Check(
            "round-trip",
            True,
            f"test concern {concern.concern_id} routed, sealed and opened in process (never "
            f"on Kafka); {len(tests)} audit entries marked test (seq {min(seqs)}-{max(seqs)})",
        )
    return Check(
        "round-trip",
        False,
        f"none of 60 synthetic concerns reaches {agency.id}: check an agreement covers it "
        "and the directory routes to it (`safer policy check`)",
    )


def onboard_check(
    runtime: Runtime, agency_id: str, *, offline: bool = False, now: datetime | None = None
) -> list[Check]:
    """Every readiness check for ``agency_id`` (see the module docstring)."""
    moment = now or datetime.now(UTC)
    directory = runtime.deployment.directory
    agency: Publisher | Recipient | None = directory.publisher(agency_id) or directory.recipient(
        agency_id
    )
    if agency is None:
        return [
            Check(
                "directory",
                False,
                f"{agency_id!r} is not in deploy/directory.toml: add it as a [[publisher]] or "
                "[[recipient]] (docs/OPERATIONS.md, a partner joins)",
            )
        ]
    kind = "publisher" if isinstance(agency, Publisher) else "recipient"
    checks = [Check("directory", True, f"{kind} {agency.agency_type.value} ({agency.name})")]
    if isinstance(agency, Recipient) and agency.delivery == "webhook" and not agency.webhook_url:
        checks[0] = Check("directory", False, "delivery is webhook but webhook_url is not set")
    checks.append(_check_keys(runtime, agency_id))
    checks.append(_check_agreement(runtime, agency))
    checks.append(_check_acls(runtime, agency))

    async def live() -> list[Check]:
        topics = (
            Check("topics", None, "skipped (--offline)")
            if offline
            else await _check_topics(runtime, agency)
        )
        return [topics, await _check_delivery(runtime, agency)]

    checks += asyncio.run(live())
    if all(c.ok is not False for c in checks):
        checks.append(_round_trip(runtime, agency, moment))
    else:
        checks.append(Check("round-trip", None, "skipped: fix the failed checks first"))
    return checks


def cmd_onboard_check(args: argparse.Namespace) -> int:
    runtime = Runtime(settings_from(args), bootstrap="")
    checks = onboard_check(runtime, args.agency, offline=args.offline)
    ready = all(c.ok is not False for c in checks) and checks[-1].ok is True
    if args.json:
        print(
            json.dumps(
                {"agency": args.agency, "ready": ready, "checks": [c.to_json() for c in checks]}
            )
        )
    else:
        marks = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]-[/]"}
        for check in checks:
            out.print(f"{marks[check.ok]} {check.name}: {check.detail}", soft_wrap=True)
        if ready:
            out.print(f"[green]{args.agency} is ready to go live[/]")
        else:
            err.print(f"[red]{args.agency} is not ready[/]: fix each ✗ above and run it again")
    return 0 if ready else 1


def register(sub: Any) -> None:
    onboard = sub.add_parser(
        "onboard",
        help="check a partner agency is ready to go live",
        formatter_class=FORMATTER,
        description="Before a new partner goes live: `safer onboard check AGENCY` validates its\n"
        "directory entry, its keys, an agreement covering its agency type, its topics\n"
        "and ACLs, and its delivery path, then sends a concern marked as a test the\n"
        "whole way through (in this process, never on Kafka, so it reaches no real\n"
        "recipient), audited as a test. docs/OPERATIONS.md: a partner joins.\n\n"
        "example:\n  safer onboard check portsmouth-csc\n"
        "  safer onboard check hampshire-constabulary --json",
    )
    actions = onboard.add_subparsers(dest="onboard_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="run every readiness check for one agency",
        formatter_class=FORMATTER,
        description="Run the readiness checks for AGENCY (a publisher or recipient id from\n"
        "deploy/directory.toml): directory, keys (present, matching, not revoked),\n"
        "agreement, ACLs, topics (needs the broker; --offline skips it), delivery\n"
        "(a webhook answers, or the inbox opens) and a test round trip whose audit\n"
        "entries are marked test. Exit 0 when ready, 1 with a reason per failed\n"
        "check.\n\n"
        "example:\n  safer onboard check portsmouth-csc\n"
        "  safer onboard check school-116330 --offline --json",
    )
    check.add_argument("agency", metavar="AGENCY", help="the agency id to check")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--offline", action="store_true", help="skip the broker check")
    check.set_defaults(func=cmd_onboard_check)
