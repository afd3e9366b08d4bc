"""Which timeliness alerts are due (issue 5, DESIGN §11). Pure: ``now`` comes in.

The monitor shell feeds this with what the audit log knows about each
disclosure (its deadline and the receipts so far) and the current time; it
returns every alert that should exist by then. Alert ids are deterministic
(disclosure id + level), so the shell can remember which it has sent and a
restarted monitor neither loses nor repeats one.

When is a disclosure *done*?
* a notification that needs no action (Operation Encompass to a school or the
  LA, or any recipient marked ``notification_only``): when it is RECEIVED;
* anything else: when it is ACTIONED.

Which alerts?
* ``HALF_TIME`` and ``NINETY_PERCENT``: the disclosure is still not done when
  50% / 90% of the time allowed has passed. A warning that is already stale
  (the disclosure is done by ``now``) is not raised: it would only be noise.
* ``BREACH``: not done by the deadline. Raised even if it was done late, so
  the breach is on record.
* ``NOT_DELIVERED``: not RECEIVED within the expiry after the decision; the
  publisher gets a non-delivery report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ._deadlines import alert_points

__all__ = ["AlertLevel", "DueAlert", "Tracked", "alerts_due", "completed_at", "is_overdue"]


class AlertLevel(StrEnum):
    HALF_TIME = "HALF_TIME"
    NINETY_PERCENT = "NINETY_PERCENT"
    BREACH = "BREACH"
    NOT_DELIVERED = "NOT_DELIVERED"


@dataclass(frozen=True)
class Tracked:
    """What is known about one disclosure's progress."""

    disclosure_id: str
    concern_id: str
    recipient_id: str
    lscp: str
    source: str
    decided_at: datetime
    due: datetime | None
    notification_only: bool = False
    received_at: datetime | None = None
    opened_at: datetime | None = None
    actioned_at: datetime | None = None

    @property
    def status(self) -> str:
        if self.actioned_at:
            return "ACTIONED"
        if self.opened_at:
            return "OPENED"
        if self.received_at:
            return "RECEIVED"
        return "SENT"


@dataclass(frozen=True)
class DueAlert:
    alert_id: str
    level: AlertLevel
    disclosure_id: str
    concern_id: str
    recipient_id: str
    lscp: str
    source: str
    due: datetime | None
    fire_at: datetime
    status: str


def completed_at(item: Tracked) -> datetime | None:
    """When the disclosure stopped needing attention, if it has."""
    if item.notification_only:
        received = [t for t in (item.received_at, item.opened_at, item.actioned_at) if t]
        return min(received) if received else None
    return item.actioned_at


def is_overdue(item: Tracked, now: datetime) -> bool:
    done = completed_at(item)
    return item.due is not None and done is None and item.due <= now


def alert_id_for(disclosure_id: str, level: AlertLevel) -> str:
    digest = hashlib.sha256(f"safer-alert-v1\x00{disclosure_id}\x00{level}".encode())
    return digest.hexdigest()[:32]


def _alert(item: Tracked, level: AlertLevel, fire_at: datetime) -> DueAlert:
    return DueAlert(
        alert_id=alert_id_for(item.disclosure_id, level),
        level=level,
        disclosure_id=item.disclosure_id,
        concern_id=item.concern_id,
        recipient_id=item.recipient_id,
        lscp=item.lscp,
        source=item.source,
        due=item.due,
        fire_at=fire_at,
        status=item.status,
    )


def alerts_due(
    tracked: Iterable[Tracked], now: datetime, *, expiry: timedelta | None = None
) -> list[DueAlert]:
    """Every alert that should have fired by ``now``, in the order they fall due."""
    alerts: list[DueAlert] = []
    for item in tracked:
        done = completed_at(item)
        if item.due is not None:
            points = alert_points(item.decided_at, item.due)
            for level, at in (
                (AlertLevel.HALF_TIME, points.at_50),
                (AlertLevel.NINETY_PERCENT, points.at_90),
            ):
                if at <= now and done is None:
                    alerts.append(_alert(item, level, at))
            if item.due <= now and (done is None or done > item.due):
                alerts.append(_alert(item, AlertLevel.BREACH, item.due))
        if expiry is not None:
            expires = item.decided_at + expiry
            if expires <= now and (item.received_at is None or item.received_at > expires):
                alerts.append(_alert(item, AlertLevel.NOT_DELIVERED, expires))
    alerts.sort(key=lambda a: (a.fire_at, a.disclosure_id, a.level))
    return alerts
