"""Prometheus metrics of the adapters (issue 14): webhook deliveries and retries.

One registry, ``ADAPTER_METRICS``, that a process serving ``/metrics`` (the web
app under ``safer up``) adds to its own. Labels are closed sets only: recipient
ids from the directory and delivery outcomes. Never a disclosure id, a
pseudonym, a URL or anything from a payload.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.registry import Collector

__all__ = ["ADAPTER_METRICS", "WEBHOOK_DELIVERIES", "WEBHOOK_RETRIES", "counted_elsewhere"]

ADAPTER_METRICS = CollectorRegistry(auto_describe=True)

#: Where the counters come from when the adapters run in another process.
_ELSEWHERE: list[Collector] = []

#: Each failed attempt that is followed by another one (after its backoff).
WEBHOOK_RETRIES = Counter(
    "safer_webhook_retries",
    "Webhook attempts that failed and were retried after a backoff, by recipient id",
    ["recipient"],
    registry=ADAPTER_METRICS,
)
#: Each finished delivery: DELIVERED, REJECTED (permanent) or GAVE_UP (limits reached).
WEBHOOK_DELIVERIES = Counter(
    "safer_webhook_deliveries",
    "Finished webhook deliveries by recipient id and outcome (DELIVERED, REJECTED, GAVE_UP)",
    ["recipient", "outcome"],
    registry=ADAPTER_METRICS,
)


def counted_elsewhere(source: Collector) -> None:
    """The adapters run in another process (``safer up``'s ``safer recipients`` child):
    ``ADAPTER_METRICS`` gives that process's counters, collected by ``source``,
    instead of this process's, which would be the same names, empty."""
    for stale in (*_ELSEWHERE, WEBHOOK_RETRIES, WEBHOOK_DELIVERIES):
        with contextlib.suppress(KeyError):  # already handed over (a second `safer up`)
            ADAPTER_METRICS.unregister(stale)
    _ELSEWHERE[:] = [source]
    ADAPTER_METRICS.register(source)
