"""The timeliness monitor: deadline alerts on ``hips.alerts``, non-delivery reports.

Every ``interval`` it rebuilds each disclosure's progress from the audit log
(decisions with their deadlines, receipts with their statuses), asks the pure
core (``consent.alerts_due``) which alerts should exist by now, and sends the
new ones. Alert ids are deterministic; the monitor records each one in its
own SQLite file *before* sending and marks it sent after the broker's ack, so a
restart resends what was not acknowledged and never repeats what was.

A disclosure not received within ``expiry`` also gets a non-delivery report to
the publisher (``hips.notices.<agency type>``) and a NOT_DELIVERED audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from audit import AuditRecord, AuditStore, entry_id_for
from consent import AlertLevel, Directory, DueAlert, Tracked, alerts_due
from schemas import AUDIT_RECORD, AgencyType, AuditEvent, Codec, ReasonCode

from ._crypto import SigningIdentity
from ._kafka import OutRecord, make_producer, send_all, signed_record, stop_clients
from ._topics import Headers, Topics

__all__ = ["RECEIPT_PREFIX", "TimelinessMonitor", "tracked_from_records"]

_log = structlog.get_logger("safer.monitor")

#: How the audit feed records a receipt's status in an entry's reasons.
RECEIPT_PREFIX = "receipt status "
_NOTIFICATION_TYPES = {AgencyType.EDUCATION, AgencyType.LA_EDUCATION}


def tracked_from_records(records: Iterable[AuditRecord], directory: Directory) -> list[Tracked]:
    """Each delivered disclosure's progress, from the audit log alone."""
    delivered: dict[str, AuditRecord] = {}
    receipts: dict[str, dict[str, datetime]] = {}
    for record in records:
        event = record.event.value
        if (
            event in (AuditEvent.DISCLOSED.value, AuditEvent.REFERRED.value)
            and record.disclosure_id
        ):
            delivered.setdefault(record.disclosure_id, record)
        elif event == AuditEvent.RECEIVED.value and record.disclosure_id:
            for reason in record.reasons:
                if reason.startswith(RECEIPT_PREFIX):
                    status = reason.removeprefix(RECEIPT_PREFIX).strip()
                    seen = receipts.setdefault(record.disclosure_id, {})
                    seen.setdefault(status, record.at)
    tracked: list[Tracked] = []
    for disclosure_id, record in delivered.items():
        recipient = directory.recipient(record.recipient or "")
        seen = receipts.get(disclosure_id, {})
        tracked.append(
            Tracked(
                disclosure_id=disclosure_id,
                concern_id=record.concern_id or "",
                recipient_id=record.recipient or "",
                lscp=record.lscp or "",
                source=record.source,
                decided_at=record.at,
                due=record.deadline,
                notification_only=recipient is not None
                and recipient.agency_type in _NOTIFICATION_TYPES,
                received_at=seen.get("RECEIVED"),
                opened_at=seen.get("OPENED"),
                actioned_at=seen.get("ACTIONED"),
            )
        )
    return tracked


_STATE = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    level TEXT NOT NULL,
    disclosure_id TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
"""


class TimelinessMonitor:
    def __init__(
        self,
        *,
        store: AuditStore,
        state_path: Path,
        directory: Directory,
        codec: Codec,
        identity: SigningIdentity,
        topics: Topics,
        bootstrap_servers: str,
        expiry: timedelta = timedelta(hours=4),
        interval: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        security: dict[str, Any] | None = None,
    ) -> None:
        self._store = store
        state_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(state_path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_STATE)
        self._directory = directory
        self._codec = codec
        self._identity = identity
        self._topics = topics
        self._bootstrap = bootstrap_servers
        self._expiry = expiry
        self._interval = interval
        self._clock = clock
        self._security = security or {}
        self.sent = 0

    def close(self) -> None:
        self._db.close()

    def due(self, now: datetime) -> list[DueAlert]:
        """New alerts by ``now`` (not yet recorded as raised)."""
        tracked = tracked_from_records(self._store.records(), self._directory)
        known = {row[0] for row in self._db.execute("SELECT alert_id FROM alerts")}
        return [a for a in alerts_due(tracked, now, expiry=self._expiry) if a.alert_id not in known]

    def raise_alerts(self, alerts: Iterable[DueAlert], now: datetime) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO alerts (alert_id, level, disclosure_id, raised_at)"
                " VALUES (?,?,?,?)",
                [(a.alert_id, a.level.value, a.disclosure_id, now.isoformat()) for a in alerts],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def records_for(self, alert: DueAlert, now: datetime) -> list[OutRecord]:
        """The alert, and for a non-delivery also the report and its audit record."""
        out = [
            signed_record(
                self._codec,
                self._identity,
                "deadline_alert",
                {
                    "alert_id": alert.alert_id,
                    "level": alert.level.value,
                    "disclosure_id": alert.disclosure_id,
                    "concern_id": alert.concern_id,
                    "recipient_id": alert.recipient_id,
                    "lscp": alert.lscp,
                    "source_agency": alert.source,
                    "status": alert.status,
                    "due": alert.due,
                    "fire_at": alert.fire_at,
                    "raised_at": now,
                },
                topic=self._topics.alerts,
                key=alert.concern_id.encode(),
                record_id=alert.disclosure_id,
                id_header=Headers.DISCLOSURE_ID,
            )
        ]
        if alert.level is AlertLevel.NOT_DELIVERED:
            publisher = self._directory.publisher(alert.source)
            agency = publisher.agency_type.value if publisher else "police"
            detail = (
                f"not received by {alert.recipient_id} within {self._expiry} of the decision; "
                "check the recipient's adapter or contact them by phone"
            )
            out.append(
                signed_record(
                    self._codec,
                    self._identity,
                    "delivery_report",
                    {
                        "report_id": alert.alert_id,
                        "disclosure_id": alert.disclosure_id,
                        "concern_id": alert.concern_id,
                        "recipient_id": alert.recipient_id,
                        "lscp": alert.lscp,
                        "source_agency": alert.source,
                        "reason_code": AlertLevel.NOT_DELIVERED.value,
                        "detail": detail,
                        "decided_at": alert.fire_at - self._expiry,
                        "expired_at": alert.fire_at,
                    },
                    topic=f"{self._topics.prefix}.notices.{agency}",
                    key=alert.concern_id.encode(),
                    record_id=alert.disclosure_id,
                    id_header=Headers.DISCLOSURE_ID,
                )
            )
            audit = AuditRecord(
                seq=None,
                entry_id=entry_id_for(AuditEvent.NOT_DELIVERED, alert.disclosure_id),
                event=AuditEvent.NOT_DELIVERED,
                disclosure_id=alert.disclosure_id,
                concern_id=alert.concern_id,
                source=alert.source,
                recipient=alert.recipient_id,
                lscp=alert.lscp,
                reason_codes=(ReasonCode.NOT_DELIVERED.value,),
                reasons=(detail,),
                at=now,
                actor="safer-monitor",
            )
            out.insert(
                0,
                signed_record(
                    self._codec,
                    self._identity,
                    AUDIT_RECORD,
                    audit.to_avro(),
                    topic=self._topics.audit,
                    key=alert.disclosure_id.encode(),
                    record_id=alert.disclosure_id,
                    id_header=Headers.DISCLOSURE_ID,
                ),
            )
        return out

    def mark_sent(self, alerts: Iterable[DueAlert]) -> None:
        self._db.executemany(
            "UPDATE alerts SET sent = 1 WHERE alert_id = ?", [(a.alert_id,) for a in alerts]
        )

    def _pending_from_state(self, now: datetime) -> list[DueAlert]:
        """Alerts recorded as raised but not acknowledged (a crash between the two)."""
        unsent = {r[0] for r in self._db.execute("SELECT alert_id FROM alerts WHERE sent = 0")}
        if not unsent:
            return []
        tracked = tracked_from_records(self._store.records(), self._directory)
        return [a for a in alerts_due(tracked, now, expiry=self._expiry) if a.alert_id in unsent]

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        producer = make_producer(self._bootstrap, **self._security)
        await producer.start()
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                now = self._clock()
                new = self.due(now)
                if new:
                    self.raise_alerts(new, now)
                pending = self._pending_from_state(now)
                if pending:
                    # Audit first, as for every other record the router family emits.
                    records = [r for a in pending for r in self.records_for(a, now)]
                    audits = [r for r in records if r.topic == self._topics.audit]
                    await send_all(producer, audits)
                    await send_all(producer, [r for r in records if r.topic != self._topics.audit])
                    self.mark_sent(pending)
                    self.sent += len(pending)
                    _log.info(
                        "monitor.alerts",
                        sent=len(pending),
                        levels=sorted({a.level.value for a in pending}),
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval)
        finally:
            await stop_clients(producer)
