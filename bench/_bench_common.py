"""What the benchmarks share: the result table, and waiting for the router to finish.

Each benchmark prints a rich table on stderr and its result as one JSON line
on stdout (the last line), so scripts and closing notes can take the numbers.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from broker import make_consumer
from safer import Runtime

console = Console(stderr=True)


def show_result(title: str, result: dict[str, Any]) -> None:
    """The result as a two-column table on stderr."""
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    console.print(table)


async def last_routed_at(runtime: Runtime, expected: int, timeout: float) -> float:
    """Follow hips.routed until ``expected`` concerns are routed; the last one's time (s).

    The router writes each concern's ledger entry in the transaction of its batch,
    so the entry's timestamp is when the concern was routed.
    """
    consumer = make_consumer(runtime.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    seen: dict[bytes, int] = {}
    deadline = time.monotonic() + timeout
    try:
        consumer.subscribe([runtime.settings.topics.routed])
        while len(seen) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(seen)} of {expected} routed in {timeout} s")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if record.key is not None:
                        seen.setdefault(record.key, record.timestamp)
    finally:
        await consumer.stop()
    return max(seen.values()) / 1000
