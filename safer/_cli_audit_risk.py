"""`safer audit risk`: risk-factor prevalence and cumulative-concern flags (issue 16).

Aggregates per partnership and month, as a table, CSV or JSON, with every
count below 5 shown as "<5" (audit/_risk.py does the counting; this module
only reads the store and prints).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.table import Table

from audit import HIDDEN, RISK_CSV_HEADER, SUPPRESSED, risk_report
from schemas import Lscp, RiskFactor, RiskGrade

from ._cli_audit_reports import _format_arg, _period, _period_args, _scan, _store
from ._cli_common import FORMATTER, out, settings_from

__all__ = ["register_risk"]

_NOTE = (
    'counts from 1 to 4 are shown as "<5" (0 stays 0); an "x" hides a second grade so the '
    "children total cannot reveal a suppressed one; a child's assessment counts once per "
    "partnership that decided on the concern, in the month of the decision"
)


def cmd_risk(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    period = _period(args)
    with _store(settings) as store:
        rows = risk_report(_scan(store, label="counting"), period, lscp=args.partnership)
    if args.format == "json":
        body = {
            "period": period.to_json(),
            "suppression": {
                "counts_1_to_4_shown_as": SUPPRESSED,
                "zero_shown_as": 0,
                "secondary": f'"{HIDDEN}" hides a second grade so the children total cannot '
                "reveal a suppressed one",
            },
            "note": _NOTE,
            "rows": [row.to_json() for row in rows],
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return 0
    if args.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(RISK_CSV_HEADER)
        for row in rows:
            writer.writerow(row.csv_row())
        sys.stdout.write(buffer.getvalue())
        return 0
    table = Table(title="Risk assessments and cumulative-concern flags")
    for name in ("partnership", "month", "children", *(g.value.lower() for g in RiskGrade)):
        table.add_column(name, justify="left" if name in ("partnership", "month") else "right")
    factors = [f for f in RiskFactor if f is not RiskFactor.OTHER]
    for factor in factors:
        table.add_column(factor.value.lower().replace("_", " "), justify="right")
    table.add_column("flags", justify="right")
    for row in rows:
        data: dict[str, Any] = row.to_json()
        table.add_row(
            row.lscp,
            row.month,
            str(data["children_assessed"]),
            *(str(data["grades"][g.value]) for g in RiskGrade),
            *(str(data["factors"][f.value]) for f in factors),
            str(data["cumulative_flags"]),
        )
    out.print(table)
    out.print(_NOTE)
    return 0


def register_risk(audit_sub: Any) -> None:
    """Adds `safer audit risk` to the `audit` command group."""
    add: Callable[..., argparse.ArgumentParser] = audit_sub.add_parser
    p = add(
        "risk",
        help="risk-factor prevalence and cumulative-concern flags per partnership and month",
        formatter_class=FORMATTER,
        description="Aggregate the structured risk assessments recorded with each decision\n"
        "(children assessed, grades, each coded risk factor) and the cumulative-concern\n"
        "flags raised (RISK_FLAGGED), per partnership and calendar month (Europe/London).\n"
        'Small-number suppression: a count from 1 to 4 is shown as "<5" (0 stays 0), and\n'
        '"x" hides a second grade so the total cannot reveal a suppressed one.\n'
        "docs/RISK.md explains the fields and the thresholds.\n\n"
        "examples:\n  safer audit risk\n"
        "  safer audit risk --format csv --from 2026-04-01 --to 2027-03-31 > risk.csv\n"
        "  safer audit risk --partnership portsmouth --format json",
    )
    _period_args(p)
    p.add_argument(
        "--partnership",
        choices=[lscp.value for lscp in Lscp],
        help="only this partnership (default: all four)",
    )
    _format_arg(p, ("table", "csv", "json"), "table")
    p.set_defaults(func=cmd_risk)
