"""Issue 16 reporting: the risk lines in decision reasons, `risk_report`'s aggregates with
small-number suppression, and `safer audit risk` on a real store (in-process)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from audit import (
    RISK_CSV_HEADER,
    AuditRecord,
    entry_id_for,
    parse_risk_reason,
    risk_assessment_reasons,
    risk_report,
    suppress,
    suppress_parts,
)
from audit._reports import Period
from safer import Runtime
from safer import _logging as safer_logging
from safer.cli import main
from schemas import AuditEvent, RiskAssessment, RiskFactor, RiskGrade

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def assessment(ref: str = "S1", **change: Any) -> RiskAssessment:
    values: dict[str, Any] = {
        "subject_ref": ref,
        "grade": "MEDIUM",
        "rationale": "Kessler again",
        "method": "DASH",
        "dash_score": 12,
        "factors": ["DOMESTIC_ABUSE", "MISSING_EPISODES"],
        "missing_episodes": 2,
        "assessed_by": "PC 1",
        "assessed_at": T0,
    }
    values.update(change)
    return RiskAssessment.model_validate(values)


@pytest.mark.parametrize(
    "item",
    [
        assessment(),
        assessment("S2", grade="HIGH", method="PROFESSIONAL_JUDGEMENT", dash_score=None),
        assessment(factors=[], missing_episodes=None),
        assessment(method="OTHER_TOOL", tool_name="Brook", factors=list(RiskFactor)),
    ],
)
def test_a_risk_line_reads_back_as_written_and_holds_no_free_text(item: RiskAssessment) -> None:
    (line,) = risk_assessment_reasons([item])
    parsed = parse_risk_reason(line)
    assert parsed is not None
    assert (parsed.subject_ref, parsed.grade, parsed.factors) == (
        item.subject_ref,
        item.grade,
        item.factors,
    )
    assert "Kessler" not in line and "Brook" not in line and "PC 1" not in line


def test_other_reasons_are_not_risk_lines() -> None:
    assert parse_risk_reason("risk grade LOW meets the minimum LOW") is None
    assert parse_risk_reason("risk assessment of child S1: grade PURPLE by X; factors: a") is None


@pytest.mark.parametrize(("count", "shown"), [(0, 0), (1, "<5"), (4, "<5"), (5, 5), (40, 40)])
def test_counts_from_one_to_four_are_suppressed(count: int, shown: int | str) -> None:
    assert suppress(count) == shown


@pytest.mark.parametrize(
    ("counts", "shown"),
    [
        ([0, 6, 1], [0, "x", "<5"]),  # the total would give the 1 away: hide the 6 too
        ([2, 9, 7], ["<5", 9, "x"]),  # the smallest other non-zero is hidden
        ([2, 3, 9], ["<5", "<5", 9]),  # two suppressed: the total cannot tell them apart
        ([0, 0, 3], [0, 0, "<5"]),  # nothing else to hide
        ([5, 6, 0], [5, 6, 0]),
    ],
)
def test_parts_of_a_total_get_secondary_suppression(
    counts: list[int], shown: list[int | str]
) -> None:
    assert suppress_parts(counts) == shown


def _decision(
    n: int,
    concern: str,
    lscp: str,
    at: datetime,
    items: list[RiskAssessment],
    event: AuditEvent = AuditEvent.DISCLOSED,
) -> AuditRecord:
    return AuditRecord(
        seq=None,
        entry_id=entry_id_for(event, f"d{n}"),
        event=event,
        disclosure_id=f"{n:032x}",
        concern_id=concern,
        subject_pseudonyms=("a" * 32,),
        source="hampshire-constabulary",
        recipient=f"r{n}",
        lscp=lscp,
        reasons=("agreement covers it", *risk_assessment_reasons(items)),
        at=at,
        actor="safer-router",
    )


def _flag(n: int, concern: str, lscp: str, at: datetime) -> AuditRecord:
    return AuditRecord(
        seq=None,
        entry_id=entry_id_for(AuditEvent.RISK_FLAGGED, f"f{n}"),
        event=AuditEvent.RISK_FLAGGED,
        concern_id=concern,
        subject_pseudonyms=("b" * 32,),
        source="hampshire-constabulary",
        recipient="portsmouth-csc",
        lscp=lscp,
        reason_codes=("CUMULATIVE_CONCERN",),
        reasons=(
            "child S1: cumulative-concern threshold 'third-concern-12-months' (third) met: …",
            "front-door decision: REFER",
        ),
        at=at,
        actor="safer-router",
    )


def records() -> list[AuditRecord]:
    """Six concerns in Portsmouth in March (two children each for the first), one in April,
    and one in Hampshire; several decisions per concern; two flags."""
    out: list[AuditRecord] = []
    n = 0
    for c in range(6):
        items = [assessment()] + (
            [assessment("S2", grade="LOW", factors=["NEGLECT"])] if c == 0 else []
        )
        for _ in range(3):  # three recipients decided on each concern: counted once
            n += 1
            out.append(_decision(n, f"c{c}", "portsmouth", T0 + timedelta(days=c), items))
    n += 1
    out.append(_decision(n, "c9", "portsmouth", datetime(2026, 4, 2, tzinfo=UTC), [assessment()]))
    n += 1
    out.append(_decision(n, "c0", "hampshire", T0, [assessment()], AuditEvent.WITHHELD))
    out += [_flag(1, "c4", "portsmouth", T0), _flag(2, "c5", "portsmouth", T0)]
    out.append(out[-1])  # a duplicate entry counts once
    return out


def test_the_report_counts_children_once_per_partnership_and_month() -> None:
    rows = {(r.lscp, r.month): r for r in risk_report(records())}
    assert set(rows) == {
        ("hampshire", "2026-03"),
        ("portsmouth", "2026-03"),
        ("portsmouth", "2026-04"),
    }
    march = rows[("portsmouth", "2026-03")]
    assert march.children_assessed == 7
    assert march.grades == {"MEDIUM": 6, "LOW": 1}
    assert march.factors == {"DOMESTIC_ABUSE": 6, "MISSING_EPISODES": 6, "NEGLECT": 1}
    assert march.flags == 2
    shown = march.to_json()
    assert shown["children_assessed"] == 7
    assert shown["grades"] == {"HIGH": 0, "MEDIUM": "x", "LOW": "<5"}
    assert shown["factors"]["NEGLECT"] == "<5" and shown["factors"]["DOMESTIC_ABUSE"] == 6
    assert shown["cumulative_flags"] == "<5"
    assert rows[("hampshire", "2026-03")].children_assessed == 1  # a withheld decision counts


def test_the_report_filters_by_partnership_and_period() -> None:
    only = risk_report(records(), Period(start=datetime(2026, 4, 1, tzinfo=UTC)), lscp="portsmouth")
    assert [(r.lscp, r.month, r.children_assessed) for r in only] == [("portsmouth", "2026-04", 1)]


# ---------------------------------------------------------------- the CLI


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(safer_logging, "_handle", None)
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def _safer(runtime: Runtime, *args: str) -> int:
    return main(
        ["--data-dir", str(runtime.settings.data_dir), "--deploy-dir", str(REPO / "deploy"), *args]
    )


def test_safer_audit_risk_prints_suppressed_csv_and_json(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    with runtime.audit_store() as store:
        store.append(records())
    assert _safer(runtime, "audit", "risk", "--format", "csv") == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert tuple(rows[0]) == RISK_CSV_HEADER
    march = next(r for r in rows[1:] if r[:2] == ["portsmouth", "2026-03"])
    row = dict(zip(rows[0], march, strict=True))
    assert row["children_assessed"] == "7" and row["factor_NEGLECT"] == "<5"
    assert row["cumulative_flags"] == "<5" and row[f"grade_{RiskGrade.MEDIUM}"] == "x"
    assert row[f"grade_{RiskGrade.HIGH}"] == "0"
    assert _safer(runtime, "audit", "risk", "--format", "json", "--partnership", "hampshire") == 0
    body = json.loads(capsys.readouterr().out)
    assert body["suppression"]["counts_1_to_4_shown_as"] == "<5"
    assert [(r["partnership"], r["children_assessed"]) for r in body["rows"]] == [
        ("hampshire", "<5")
    ]
    assert _safer(runtime, "audit", "risk") == 0
    assert "Risk assessments" in capsys.readouterr().out


def test_policy_check_lists_the_cumulative_thresholds(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _safer(runtime, "policy", "check") == 0
    text = capsys.readouterr().out
    assert "Cumulative-concern thresholds" in text
    assert "third-conc" in text and "365 days" in text  # the console may wrap long cells


def test_the_analysts_dashboard_charts_risk_factors_and_flags() -> None:
    from safer.web._dashboard import build_dashboard

    board = build_dashboard(
        records(), [], partnership="portsmouth", grain="month", bucket="2026-03"
    )
    factors = board.chart("risk-factors")
    flags = board.chart("cumulative-flags")
    assert factors is not None and flags is not None
    rows = {row[0]: row[1:] for row in factors.csv_rows()[1:]}
    assert factors.csv_rows()[0] == ["risk factor", "HIGH", "MEDIUM", "LOW", "total"]
    assert rows["DOMESTIC_ABUSE"] == ["0", "6", "0", "6"]
    assert rows["NEGLECT"] == ["0", "0", "<5", "<5"]
    assert flags.csv_rows()[1:] == [["third-concern-12-months", "<5", "<5"]]
    april = build_dashboard(
        records(), [], partnership="portsmouth", grain="month", bucket="2026-04"
    )
    april_factors = april.chart("risk-factors")
    assert april_factors is not None
    assert {row[0] for row in april_factors.csv_rows()[1:]} == {
        "DOMESTIC_ABUSE",
        "MISSING_EPISODES",
    }
