"""`safer topics`: the admin step that creates every topic on purpose (DESIGN §6)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.table import Table

from ._cli_common import FORMATTER, err, out, run_async, settings_from
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["register"]


def _plan_table(runtime: Runtime) -> Table:
    table = Table(title="SAFER Exchange topics (broker/_topics.py topic_plan)")
    for name in ("topic", "partitions", "replicas", "min ISR", "retention", "cleanup"):
        table.add_column(
            name,
            justify="right" if name in ("partitions", "replicas") else "left",
            no_wrap=name == "topic",
        )
    for spec in runtime.topic_specs():
        retention = spec.configs.get("retention.ms", "")
        if retention == "-1":
            retention = "forever"
        elif retention:
            retention = f"{int(retention) // 86_400_000} days"
        table.add_row(
            spec.name,
            str(spec.partitions),
            str(spec.replication_factor),
            spec.configs.get("min.insync.replicas", ""),
            retention,
            spec.configs.get("cleanup.policy", ""),
        )
    return table


def cmd_topics_create(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.dry_run:
        out.print(_plan_table(Runtime(settings, bootstrap="")))
        return 0
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))

    async def create(stop: asyncio.Event) -> int:
        changes = await runtime.create_topics()
        for change in changes:
            out.print(change)
        err.print(
            f"[green]topics ready[/]: {len(runtime.topic_specs())} topics as planned "
            f"({len(changes)} change(s))"
        )
        return 0

    return run_async(create)


def register(sub: Any) -> None:
    topics = sub.add_parser(
        "topics",
        help="create every topic on purpose (the admin step)",
        formatter_class=FORMATTER,
        description="Broker auto-creation is off: every topic is created by this admin step,\n"
        "with its partitions (inbound: SAFER_INBOUND_PARTITIONS, default 12),\n"
        "replication (SAFER_REPLICATION_FACTOR), min.insync.replicas\n"
        "(SAFER_MIN_INSYNC_REPLICAS), retention (hips.audit and hips.receipts: forever)\n"
        "and compaction (hips.consent). `safer up` and `safer broker` run it for you;\n"
        "run it yourself against a cluster you operate.\n\n"
        "examples:\n  safer topics create --dry-run     # show the plan, touch nothing\n"
        "  KAFKA_BOOTSTRAP_SERVERS=kafka-1:9093 SAFER_REPLICATION_FACTOR=3 \\\n"
        "    SAFER_MIN_INSYNC_REPLICAS=2 safer topics create",
    )
    actions = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create missing topics and set every topic's configuration",
        formatter_class=FORMATTER,
        description="Create missing topics; set each existing topic's configuration to the plan\n"
        "and add partitions where it has fewer (never fewer: Kafka cannot). A\n"
        "replication factor that differs is reported, not changed.\n\n"
        "example:\n  safer topics create --dry-run\n  safer topics create",
    )
    create.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    create.set_defaults(func=cmd_topics_create)
