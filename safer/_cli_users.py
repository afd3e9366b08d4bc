"""`safer users add|list|disable`: who may sign in to `safer web`, in which role."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from rich.table import Table

from broker import load_deployment
from schemas import Lscp, ValidationError

from ._cli_common import FORMATTER, out, settings_from
from ._users import Role, UserStore, users_path

__all__ = ["register"]


def _store(args: argparse.Namespace) -> UserStore:
    return UserStore(users_path(settings_from(args).data_dir))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValidationError("the two passwords differ", fields=("password",), hint="try again")
    return first


def cmd_add(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    role = Role(args.role)
    scope = args.partnership if role is Role.ANALYST else args.recipient
    scope = scope or args.recipient or args.partnership
    recipients = frozenset(r.id for r in load_deployment(settings.deploy_dir).directory.recipients)
    password = _password(args)
    with _store(args) as store:
        user = store.add(args.name, role, password, scope=scope, recipients=recipients)
    out.print(
        f"added {user.name} ({user.role.value}{f' of {user.scope}' if user.scope else ''}); "
        "they sign in at `safer web`"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        users = store.list()
    table = Table(title="safer web users")
    for column in ("name", "role", "scope", "state", "created (UTC)"):
        table.add_column(column)
    for user in users:
        table.add_row(
            user.name,
            user.role.value,
            user.scope or "all partnerships",
            "disabled" if user.disabled else "active",
            user.created_at,
        )
    out.print(table)
    if not users:
        out.print("no users yet: safer users add NAME --role ROLE")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    with _store(args) as store:
        changed = store.disable(args.name)
    out.print(f"{args.name} {'disabled' if changed else 'was already disabled'}")
    return 0


def register(sub: Any) -> None:
    users = sub.add_parser(
        "users",
        help="manage who may sign in to `safer web`",
        formatter_class=FORMATTER,
        description="Users of the web app, in <data-dir>/web-users.db (argon2id password\n"
        "hashes). Roles: practitioner of one recipient (its inbox only), auditor,\n"
        "dpo (log, trails, reports, quarantine), analyst of one partnership\n"
        "(aggregates only).\n\n"
        "example:\n"
        "  safer users add sam --role practitioner --recipient portsmouth-csc\n"
        "  safer users add ana --role analyst --partnership portsmouth\n"
        "  echo 'a long passphrase' | safer users add dee --role dpo --password-stdin\n"
        "  safer users list\n"
        "  safer users disable sam",
    )
    actions = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="add a user (asks for the password)",
        formatter_class=FORMATTER,
        description="Add a web app user. The password (12+ characters) is asked twice,\n"
        "or read from one line of standard input with --password-stdin.\n\n"
        "example:\n  safer users add sam --role practitioner --recipient portsmouth-csc",
    )
    add.add_argument("name", help="sign-in name: lower-case letters, digits, . _ -")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--recipient", help="practitioner: the recipient id whose inbox they see")
    add.add_argument(
        "--partnership",
        choices=[p.value for p in Lscp],
        help="analyst: the partnership whose aggregates they see",
    )
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=cmd_add)
    listing = actions.add_parser("list", help="list users (never their passwords)")
    listing.set_defaults(func=cmd_list)
    disable = actions.add_parser("disable", help="stop a user signing in")
    disable.add_argument("name")
    disable.set_defaults(func=cmd_disable)
