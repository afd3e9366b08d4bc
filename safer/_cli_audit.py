"""`safer audit …`: check and query the audit log."""

from __future__ import annotations

import argparse
import json
from typing import Any

from audit import AuditStore, verify_store
from schemas import LogTamperedError

from ._cli_audit_reports import register_reports
from ._cli_common import FORMATTER, err, out, settings_from

__all__ = ["register"]


# -- audit --------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = settings.audit_db
    try:
        summary = verify_store(path)
    except LogTamperedError as exc:
        if args.json:
            print(
                json.dumps(
                    {
                        "entries": None,
                        "root": None,
                        "checkpoint_verified": False,
                        "consistent": False,
                        "problems": exc.problems,
                    }
                )
            )
        else:
            err.print(f"[red]audit log FAILED verification[/] ({path}):")
            for problem in exc.problems:
                err.print(f"  - {problem}")
            err.print(exc.hint)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "entries": summary.entries,
                    "root": summary.head,
                    "checkpoint_verified": summary.checkpoints_verified > 0,
                    "consistent": True,
                    "problems": [],
                }
            )
        )
    else:
        out.print(
            f"[green]audit log verified[/]: {summary.entries} entries, chain head {summary.head}"
        )
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    with AuditStore(settings.audit_db) as store:
        checkpoint = store.checkpoint()
    out.print(f"checkpoint written: {checkpoint}")
    return 0


def register(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="check and query the audit log",
        formatter_class=FORMATTER,
        description="Audit log commands. The log (<data-dir>/audit.db) is append-only and\n"
        "hash-chained: every disclosure, withheld decision, referral, quarantine\n"
        "and receipt is an entry, and no entry can change without detection.\n\n"
        "example:\n  safer audit verify\n  safer audit checkpoint",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="recompute the hash chain and report tampering",
        formatter_class=FORMATTER,
        description="Recompute every entry's hash and the chain from the store file, read-only,\n"
        "and report modified, deleted, reordered or truncated entries and forged\n"
        "checkpoints, naming the first bad sequence number. Exit code 1 on problems.\n\n"
        "example:\n  safer audit verify\n  safer --data-dir .safer/demo audit verify --json",
    )
    verify.add_argument(
        "--json",
        action="store_true",
        help='print {"entries","root","checkpoint_verified","consistent","problems"}',
    )
    verify.set_defaults(func=cmd_audit_verify)
    checkpoint = audit_sub.add_parser(
        "checkpoint",
        help="record the current size and chain head as a checkpoint",
        formatter_class=FORMATTER,
        description="Append a checkpoint (the log's size and chain head at this moment) to the\n"
        "store. A later `safer audit verify` checks the log still matches every\n"
        "checkpoint, so deleting entries from the end (truncation) is detected. Copy\n"
        "the printed line somewhere the operator cannot edit (a ticket, an email to\n"
        "the DPO) to make it an external anchor.\n\n"
        "example:\n  safer audit checkpoint",
    )
    checkpoint.set_defaults(func=cmd_audit_checkpoint)
    register_reports(audit_sub)
