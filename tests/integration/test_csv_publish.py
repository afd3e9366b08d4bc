"""CSV batches (issue 13): the template parses, `safer publish FILE.csv` publishes the
good rows to real Kafka and reports every row by number, without personal data."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters._csv import csv_columns, parse_police_csv
from adapters._police import concern_id_for
from broker import read_topic
from schemas import ConcernModel

from .spine import REPO, make_runtime

PUBLISHER = "hampshire-constabulary"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
TEMPLATE = REPO / "deploy" / "examples" / "concerns-template.csv"
MIXED = REPO / "deploy" / "examples" / "concerns-mixed.csv"


def _personal_values(path: Path) -> set[str]:
    """Every cell of a person or an address: none may appear in any output."""
    rows = list(csv.DictReader(io.StringIO(path.read_text("utf-8-sig"))))
    personal = ("given_name", "family_name", "date_of_birth", "nhs_number", "line1", "postcode")
    return {
        v
        for row in rows
        for k, v in row.items()
        if v and len(v) > 3 and any(k.endswith(p) for p in personal)
    }


def test_the_template_is_all_accepted_and_matches_the_json_examples() -> None:
    parsed = parse_police_csv(
        TEMPLATE.read_text("utf-8-sig"), source="t.csv", publisher_id=PUBLISHER, now=NOW
    )
    assert [p.status for p in parsed] == ["ACCEPTED"] * 3
    assert [p.label for p in parsed] == ["t.csv row 2", "t.csv row 3", "t.csv row 4"]
    first = parsed[0].concern
    assert isinstance(first, ConcernModel)
    import json

    example = ConcernModel.model_validate(
        json.loads((REPO / "deploy/examples/concern-domestic-abuse.json").read_text())
    )
    # A CSV row carries exactly what the JSON record does, plus the child's structured
    # risk assessment (concern v3), which the JSON example does not have.
    assert first.model_copy(update={"risk_assessments": ()}) == example
    (assessment,) = first.risk_assessments
    assert (assessment.subject_ref, assessment.grade.value, assessment.dash_score) == (
        "S1",
        "HIGH",
        16,
    )
    assert [f.value for f in assessment.factors] == ["DOMESTIC_ABUSE", "PARENTAL_MENTAL_HEALTH"]
    # Row 3 has no concern_id: it is derived from (agency, source_ref), stably.
    second = parsed[1].concern
    assert second is not None
    assert second.concern_id == concern_id_for(PUBLISHER, second.source_ref)


def test_bad_rows_name_row_and_column_never_the_value() -> None:
    parsed = parse_police_csv(
        MIXED.read_text("utf-8-sig"), source="m.csv", publisher_id=PUBLISHER, now=NOW
    )
    assert [(p.label, p.status) for p in parsed] == [
        ("m.csv row 2", "SCHEMA_INVALID"),
        ("m.csv row 3", "MINIMUM_DATASET_MISSING"),
        ("m.csv row 4", "ACCEPTED"),
    ]
    assert "subject1.date_of_birth" in parsed[0].detail
    assert "subject1.date_of_birth_or_identifier" in parsed[1].detail
    shown = " ".join(p.detail for p in parsed)
    for value in _personal_values(MIXED) | {"12/04/2017"}:
        assert value not in shown


@pytest.mark.parametrize(
    ("text", "code", "needle"),
    [
        ("", "DECODE_ERROR", "no header row"),
        ("concern_id,Poppy Walker\n", "DECODE_ERROR", "column 2 (a header cell"),
        ("source_ref,source_ref\n", "DECODE_ERROR", "named twice"),
        ('source_ref,narrative\n1,"unclosed\n', "DECODE_ERROR", "row 2"),
        ("source_ref,narrative\n1,2,3\n", "SCHEMA_INVALID", "3 cells"),
    ],
)
def test_malformed_files_are_refused_with_a_reason(text: str, code: str, needle: str) -> None:
    parsed = parse_police_csv(text, source="x.csv", publisher_id=PUBLISHER, now=NOW)
    assert parsed and parsed[0].status == code
    assert needle in f"{parsed[0].label} {parsed[0].detail}"
    assert "Poppy" not in parsed[0].detail


def test_a_high_risk_without_rationale_names_the_column() -> None:
    text = TEMPLATE.read_text("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    rows[0]["risk1.rationale"] = ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[:1])
    (parsed,) = parse_police_csv(out.getvalue(), source="r.csv", publisher_id=PUBLISHER, now=NOW)
    assert parsed.status == "RISK_RATIONALE_MISSING"
    assert "risk1.rationale" in parsed.detail


def test_template_header_is_the_documented_column_list() -> None:
    header = next(csv.reader(io.StringIO(TEMPLATE.read_text("utf-8-sig"))))
    assert header == csv_columns(3)
    doc = (REPO / "docs" / "csv-format.md").read_text()
    for column in csv_columns(1, 1):
        shown = column.replace("subject1.", "subjectN.").replace("risk1.", "riskN.")
        assert f"`{shown}`" in doc, column


@pytest.mark.kafka
def test_safer_publish_a_csv_file_reports_each_row(
    kafka_bootstrap: str, tmp_path: Path, unique_id: str
) -> None:
    prefix = f"csv{unique_id}"
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix)
    asyncio.run(runtime.create_topics())
    env = {k: v for k, v in os.environ.items()}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SAFER_TOPIC_PREFIX=prefix,
        SAFER_DATA_DIR=str(tmp_path / "data"),
        SAFER_DEPLOY_DIR=str(REPO / "deploy"),
        COLUMNS="200",
    )
    result = subprocess.run(
        [sys.executable, "-m", "safer", "publish", "--agency", "police", str(MIXED)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    assert " SCHEMA_INVALID " in lines[0] and f"{MIXED} row 2:" in lines[0]
    assert " MINIMUM_DATASET_MISSING " in lines[1] and f"{MIXED} row 3:" in lines[1]
    assert lines[2].endswith(" ACCEPTED")
    for value in _personal_values(MIXED):
        assert value not in result.stdout + result.stderr
    # The accepted row, and only it, is on the inbound topic.
    records = asyncio.run(
        read_topic(kafka_bootstrap, runtime.settings.topics.inbound("police"), timeout=20)
    )
    assert len(records) == 1
