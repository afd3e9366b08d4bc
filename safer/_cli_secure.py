"""`safer secure …`: what secure mode enforces, shown from the directory."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from broker import acl_plan, acl_table, load_deployment, principals

from ._cli_common import FORMATTER, out, settings_from

__all__ = ["register"]


def cmd_acls(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    directory = load_deployment(settings.deploy_dir).directory
    plan = acl_plan(directory, settings.topics)
    if args.markdown:
        print(acl_table(plan), end="")
        return 0
    table = Table(title=f"Kafka ACLs of secure mode ({len(plan)} bindings)")
    for column in ("principal", "permission", "operation", "resource", "name"):
        table.add_column(column)
    for binding in plan:
        name = binding.name + ("*" if binding.pattern.name == "PREFIXED" else "")
        table.add_row(
            binding.principal,
            binding.permission.name,
            binding.operation.name,
            binding.resource.name.lower(),
            name,
        )
    out.print(table)
    out.print(
        f"{len(principals(directory))} Kafka users (SCRAM-SHA-512); the broker principal "
        "User:CN=safer-kafka-broker is the only super user. Anything not listed is refused."
    )
    return 0


def register(sub: Any) -> None:
    """Adds the `secure` command group."""
    secure = sub.add_parser(
        "secure",
        help="show what secure mode enforces (ACLs from the directory)",
        formatter_class=FORMATTER,
        description="Secure mode (`safer up --secure`) runs Kafka with TLS and\n"
        "SASL/SCRAM-SHA-512, one Kafka user per principal and ACLs generated from\n"
        "deploy/directory.toml.\n"
        "See docs/OPERATIONS.md, 'Secure mode'.\n\n"
        "example:\n  safer secure acls\n  safer secure acls --markdown",
    )
    secure_sub = secure.add_subparsers(dest="secure_command", metavar="ACTION", required=True)
    acls = secure_sub.add_parser(
        "acls",
        help="print the ACL plan generated from the directory (no broker needed)",
        formatter_class=FORMATTER,
        description="Print every ACL binding secure mode applies: who may read or write which\n"
        "topic, group and transactional id. The broker refuses everything else, before any\n"
        "client sees a byte. `safer up --secure` makes the broker's ACLs exactly this list\n"
        "at every start.\n\n"
        "example:\n  safer secure acls\n  safer secure acls --markdown > acls.md",
    )
    acls.add_argument("--markdown", action="store_true", help="a Markdown table, one row per user")
    acls.set_defaults(func=cmd_acls)
