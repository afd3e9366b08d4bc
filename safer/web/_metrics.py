"""Prometheus metrics read from the audit log (what the exchange did, not who it was about).

Labels are closed sets only: audit event names, reason codes, partnership
names and alert levels. Never an id, a pseudonym, a name or a free text.
The log is read at most every ``ttl`` seconds, however often it is scraped.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from audit import AuditStore
from broker import Settings, load_deployment, tracked_from_records
from consent import completed_at
from schemas import AuditEvent

__all__ = ["AT_RISK_WINDOW", "AuditCollector"]

#: A disclosure not done with less than this left is "at risk".
AT_RISK_WINDOW = timedelta(hours=2)


class AuditCollector(Collector):
    def __init__(self, settings: Settings, *, ttl: float = 10.0) -> None:
        self._settings = settings
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self._ttl:
                self._cached = (time.monotonic(), self._read())
            families = self._cached[1]
        yield from families

    def _read(self) -> list[GaugeMetricFamily]:
        path = self._settings.audit_db
        if not path.is_file():
            return []
        with AuditStore(path) as store:
            size = store.count()
            latest = store.latest_checkpoint(signed=True)
            records = list(store.records())
        now = datetime.now(UTC)
        entries = GaugeMetricFamily("safer_audit_log_entries", "Entries in the audit log")
        entries.add_metric([], size)
        age = GaugeMetricFamily(
            "safer_audit_checkpoint_age_seconds",
            "Age of the newest signed checkpoint (absent when there is none)",
        )
        if latest is not None:
            age.add_metric([], (now - latest.at).total_seconds())
        events = Counter(r.event.value for r in records)
        routed = GaugeMetricFamily(
            "safer_routed_decisions",
            "Routing decisions in the audit log by outcome (DISCLOSED, WITHHELD, REFERRED, "
            "QUARANTINED)",
            labels=["outcome"],
        )
        for outcome in ("DISCLOSED", "WITHHELD", "REFERRED", "QUARANTINED"):
            routed.add_metric([outcome], events.get(outcome, 0))
        reasons = Counter(
            code
            for r in records
            if r.event is AuditEvent.QUARANTINED
            for code in (r.reason_codes or ("UNSPECIFIED",))
        )
        quarantine = GaugeMetricFamily(
            "safer_quarantined_records", "Quarantined records by reason code", labels=["reason"]
        )
        for code, count in sorted(reasons.items()):
            quarantine.add_metric([code], count)
        directory = load_deployment(self._settings.deploy_dir).directory
        at_risk: Counter[tuple[str, str]] = Counter()
        for item in tracked_from_records(records, directory):
            if item.due is None or completed_at(item) is not None:
                continue
            if item.due <= now:
                at_risk[(item.lscp, "breached")] += 1
            elif item.due - now <= AT_RISK_WINDOW:
                at_risk[(item.lscp, "due_within_2h")] += 1
        deadlines = GaugeMetricFamily(
            "safer_deadlines_at_risk",
            "Disclosures not yet done: past their deadline, or due within 2 hours",
            labels=["partnership", "level"],
        )
        for (lscp, level), count in sorted(at_risk.items()):
            deadlines.add_metric([lscp or "(none)", level], count)
        return [entries, age, routed, quarantine, deadlines]
