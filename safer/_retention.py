"""Retention enforced (issue 15.5): inbox copies are purged when their agreement says.

``purge_inboxes`` looks at every recipient inbox of the data directory. For each
disclosure it finds the governing agreement (``consent.governing_agreement``:
the recipient's agency type and the disclosure's purpose), adds the agreement's
retention to the time the inbox received it, and once that has passed it:

1. appends a PURGED entry to the audit log (audit first: the log says what was
   deleted and why before it is gone; re-running after a crash finds the entry
   and finishes the deletion), then
2. deletes the inbox copy (payload, wire bytes, queued receipts) and remembers
   the id so it is never stored again.

The audit log itself is never purged. `safer inbox purge` runs it by hand and
`safer up` runs it at start and every hour.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from adapters import Inbox
from audit import AuditRecord, entry_id_for
from consent import add_retention, governing_agreement
from schemas import AuditEvent

from ._runtime import Runtime

__all__ = ["Purged", "purge_inboxes", "run_retention"]

_log = structlog.get_logger("safer.retention")
ACTOR = "safer-retention"


@dataclass(frozen=True)
class Purged:
    recipient_id: str
    disclosure_id: str
    agreement_id: str | None
    retention: str
    received_at: datetime
    due: datetime
    seq: int | None


def _at(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def purge_inboxes(runtime: Runtime, now: datetime, *, dry_run: bool = False) -> list[Purged]:
    """Purge every inbox copy past its agreement's retention; audited (PURGED) first."""
    deployment = runtime.deployment
    done: list[Purged] = []
    for recipient in deployment.directory.recipients:
        path = runtime.inbox_path(recipient.id)
        if not path.exists():
            continue
        with Inbox(path) as inbox:
            due: list[tuple[AuditRecord, Purged]] = []
            for item in inbox.items():
                agreement = governing_agreement(
                    deployment.policy, recipient.agency_type, item.purpose
                )
                if agreement is None:
                    continue  # no agreement names it: kept, and `inbox purge` says so
                received = _at(item.received_at)
                until = add_retention(received, agreement.retention)
                if until > now:
                    continue
                record = AuditRecord(
                    seq=None,
                    entry_id=entry_id_for(AuditEvent.PURGED, item.disclosure_id),
                    event=AuditEvent.PURGED,
                    disclosure_id=item.disclosure_id,
                    concern_id=item.concern_id,
                    source=recipient.id,
                    recipient=recipient.id,
                    lscp=recipient.lscp.value,
                    reasons=(
                        f"inbox copy deleted: agreement {agreement.id} keeps it "
                        f"{agreement.retention} from receipt ({received.isoformat()}), "
                        f"which ended {until.isoformat()}; the audit log keeps this record",
                    ),
                    at=now,
                    actor=ACTOR,
                )
                due.append(
                    (
                        record,
                        Purged(
                            recipient.id,
                            item.disclosure_id,
                            agreement.id,
                            agreement.retention,
                            received,
                            until,
                            None,
                        ),
                    )
                )
            if not due or dry_run:
                done += [p for _, p in due]
                continue
            with runtime.audit_store() as store:
                results = store.append([r for r, _ in due])
            for (_, purged), result in zip(due, results, strict=True):
                inbox.purge([purged.disclosure_id], at=now, retention=purged.retention)
                done.append(
                    Purged(
                        purged.recipient_id,
                        purged.disclosure_id,
                        purged.agreement_id,
                        purged.retention,
                        purged.received_at,
                        purged.due,
                        result.seq,
                    )
                )
            _log.info("retention.purged", recipient=recipient.id, disclosures=len(due))
    return done


async def run_retention(
    runtime: Runtime, stop: asyncio.Event, ready: asyncio.Event, *, interval: float = 3600.0
) -> None:
    """`safer up`'s retention service: purge at start, then every ``interval`` seconds."""
    ready.set()
    while not stop.is_set():
        await asyncio.to_thread(purge_inboxes, runtime, datetime.now(UTC))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
