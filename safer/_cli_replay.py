"""`safer policy explain --replay DISCLOSURE_ID`: recompute a logged decision (issue 15.4).

The decision's audit record comes from the local audit log, the CONSENT_CHANGED
entries about its subject too; the concern is the signed original on its
inbound topic (read through the running broker, signature checked) or, with
``--concern FILE``, a copy the publisher kept. ``broker.replay_decision`` does
the recomputation; this module fetches and prints.
"""

from __future__ import annotations

import asyncio

from rich.markup import escape

from audit import AuditRecord, AuditStore
from broker import (
    ROUTER_ID,
    Headers,
    Replay,
    read_topic,
    replay_decision,
    verify_origin,
)
from schemas import (
    CONCERN,
    AuditEvent,
    BrokerError,
    ConcernModel,
    ConfigError,
    ReasonCode,
    ValidationError,
)

from ._cli_common import out
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["print_replay", "replay_disclosure"]

_DECISIONS = (AuditEvent.DISCLOSED, AuditEvent.REFERRED, AuditEvent.WITHHELD)


def _logged(runtime: Runtime, disclosure_id: str) -> tuple[AuditRecord, list[AuditRecord]]:
    db = runtime.settings.audit_db
    if not db.exists():
        raise ConfigError(
            f"no audit log at {db}",
            code=ReasonCode.CONFIG_INVALID,
            hint="run from the data directory the router wrote (--data-dir)",
        )
    with AuditStore(db) as store:
        decisions = [
            r for r in store.records(disclosure_id=disclosure_id.lower()) if r.event in _DECISIONS
        ]
        if not decisions:
            raise ValidationError(
                f"no decision with disclosure id {disclosure_id[:40]!r} in the audit log",
                code=ReasonCode.CONFIG_INVALID,
                fields=("disclosure_id",),
                hint="find disclosure ids with `safer audit trail` or `safer track`",
            )
        record = decisions[-1]
        consent = [
            entry
            for pseudonym in record.subject_pseudonyms
            for entry in store.records(event=AuditEvent.CONSENT_CHANGED, subject=pseudonym)
        ]
    return record, consent


async def _stored_concern(runtime: Runtime, record: AuditRecord) -> ConcernModel:
    """The signed original of the decided concern, from its inbound topic."""
    bootstrap = resolve_bootstrap(runtime.settings)
    publisher = runtime.deployment.directory.publisher(record.source)
    if publisher is None:
        raise ConfigError(
            f"the decision's publisher {record.source!r} is not in the directory",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint="give the publisher's copy of the concern as CONCERN.json",
        )
    topic = runtime.settings.topics.inbound(publisher.agency_type.value)
    wanted = (record.concern_id or "").encode()
    found = [
        m
        for m in await read_topic(bootstrap, topic, **runtime.security_for(ROUTER_ID))
        if (dict(m.headers or ()).get(Headers.CONCERN_ID) == wanted)
    ]
    if not found:
        raise BrokerError(
            f"concern {record.concern_id} is no longer on {topic} (past the topic's retention)",
            code=ReasonCode.POSITION_LOST,
            retriable=False,
            hint="give the publisher's copy with --concern FILE",
        )
    keyring = runtime.keyring()
    codec = runtime.codec
    value = found[-1].value or b""
    verify_origin(keyring, value, found[-1].headers, id_header=Headers.CONCERN_ID)
    return ConcernModel.from_avro(codec.decode(value, expect=CONCERN).record)


def replay_disclosure(runtime: Runtime, disclosure_id: str, concern: ConcernModel | None) -> Replay:
    """Replay ``disclosure_id``'s decision; ``concern`` None: read it from Kafka."""
    record, consent = _logged(runtime, disclosure_id)
    if concern is None:
        concern = asyncio.run(_stored_concern(runtime, record))
    return replay_decision(runtime.deployment, record, concern, consent)


def print_replay(replay: Replay) -> None:
    verdict = "[green]matches[/green]" if replay.matches else "[red]does not match[/red]"
    out.print(f"[bold]Replay of disclosure {replay.disclosure_id}[/bold]: {verdict}")
    out.print(f"  input_sha256 logged     {replay.logged_input_sha256}")
    out.print(f"  input_sha256 recomputed {replay.input_sha256}")
    out.print(f"  consent from: {escape(replay.consent_from)}")
    for check in replay.checks:
        mark = "[green]✓[/green]" if check.ok else "[red]✗[/red]"
        shown = check.logged if check.ok else f"logged {check.logged!r}, now {check.recomputed!r}"
        out.print(f"  {mark} {check.name}: {escape(str(shown))}")
    for reason in replay.why_not:
        out.print(f"  [yellow]why not:[/yellow] {escape(reason)}")
