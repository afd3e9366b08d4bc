"""Shared pieces of the `safer` command line: consoles, settings, async runner.

Each command group lives in its own module (``_cli_audit``, ``_cli_policy``…)
with a ``register(subparsers)`` function that ``cli.build_parser`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from rich.console import Console

from broker import Settings

from ._runtime import adopt_running_engine

__all__ = ["FORMATTER", "err", "out", "recipients_child_metrics", "run_async", "settings_from"]

err = Console(stderr=True)
out = Console()

#: Keeps the line breaks of descriptions and examples in --help.
FORMATTER = argparse.RawDescriptionHelpFormatter


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment and the global options; with no
    KAFKA_BOOTSTRAP_SERVERS, the topic layout of a local engine running on the
    data directory (so commands run beside `safer cluster up` keep replication 3)."""
    return adopt_running_engine(
        Settings.from_env(data_dir=args.data_dir, deploy_dir=args.deploy_dir)
    )


def run_async(coro_factory: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run an async command; Ctrl-C or SIGTERM sets ``stop`` for a clean shutdown."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await coro_factory(stop)

    return asyncio.run(main())


def recipients_child_metrics() -> int:
    """A loopback port for `safer up`'s `safer recipients` child's ops endpoints, whose
    counters this process's /metrics then carries (``safer._ops``)."""
    from ._ops import recipients_child_metrics as wire  # late: loads the web stack

    return wire()
