"""CSV batches: one concern per row, for agencies whose system exports a spreadsheet.

The column format is in docs/csv-format.md; a template with worked rows is
deploy/examples/concerns-template.csv. A column name is the path of a police
JSON field (docs/police-json-format.md): ``source_ref``, ``consent.state``,
``officer.email``; people are numbered from 1: ``subject1.given_name``,
``subject2.address.postcode``. An empty cell is an absent field.
``third_party_protection`` lists subject refs separated by ``;``; a child's
structured risk assessment (concern v3) is ``riskN.<field>``, its factors
separated by ``;``. An empty
``concern_id`` is derived from ``source_agency`` and ``source_ref``
(``concern_id_for``), so publishing a row again names the same concern.

Every row is then checked exactly as a JSON record is (``validate_record``).
Rows are labelled ``FILE row N`` with N the spreadsheet row (the header is
row 1). Results name columns and fields, never a cell's value: a cell may be
personal data.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from schemas import ReasonCode

from ._police import ParsedRecord, concern_id_for, validate_record

__all__ = ["CSV_COLUMNS", "MAX_SUBJECTS", "csv_columns", "parse_police_csv"]

#: How many people a row can describe (subject1 … subject12).
MAX_SUBJECTS = 12
#: The longest cell accepted (larger than any field's own limit, which is checked later).
_MAX_CELL = 64 * 1024

_TOP = (
    "concern_id",
    "source_agency",
    "source_ref",
    "reported_at",
    "occurred_at",
    "concern_type",
    "risk_grade",
    "child_present",
    "narrative",
    "immediate_actions",
    "third_party_protection",
    "restricted",
)
_NESTED = {
    "incident_location": ("description", "postcode", "la_code"),
    "voice_of_child": ("said", "observed"),
    "consent": ("state", "reason", "recorded_by", "recorded_at"),
    "officer": ("name", "collar_number", "unit", "email", "phone"),
}
_SUBJECT = (
    "subject_ref",
    "role",
    "given_name",
    "family_name",
    "date_of_birth",
    "nhs_number",
    "police_person_id",
    "phone",
    "school_urn",
    "looked_after",
    "responsible_la",
    "home_educated",
    "care_leaver",
)
_ADDRESS = ("line1", "line2", "town", "postcode", "la_code")
#: A child's structured risk assessment (concern v3; docs/RISK.md): riskN.<field>.
_RISK = (
    "subject_ref",
    "grade",
    "rationale",
    "method",
    "dash_score",
    "tool_name",
    "factors",
    "missing_episodes",
    "assessed_by",
    "assessed_at",
)
_SUBJECT_COLUMN = re.compile(r"\Asubject([1-9][0-9]?)\.(.+)\Z")
_RISK_COLUMN = re.compile(r"\Arisk([1-9][0-9]?)\.(.+)\Z")
_SAFE_NAME = re.compile(r"\A[a-z0-9_.]{1,64}\Z")


def csv_columns(subjects: int = 3, risks: int = 1) -> list[str]:
    """The template's columns, with ``subjects`` people and ``risks`` risk assessments."""
    columns = list(_TOP)
    for group, fields in _NESTED.items():
        columns += [f"{group}.{f}" for f in fields]
    for n in range(1, subjects + 1):
        columns += [f"subject{n}.{f}" for f in _SUBJECT]
        columns += [f"subject{n}.address.{f}" for f in _ADDRESS]
    for n in range(1, risks + 1):
        columns += [f"risk{n}.{f}" for f in _RISK]
    return columns


#: Every column a file may have.
CSV_COLUMNS = frozenset(csv_columns(MAX_SUBJECTS, MAX_SUBJECTS))


def _file_error(source: str, detail: str) -> list[ParsedRecord]:
    return [ParsedRecord(source, None, None, ReasonCode.DECODE_ERROR.value, detail)]


def _shown(name: str) -> str:
    """A column name as safe to print: itself if it looks like one, else nothing."""
    return repr(name) if _SAFE_NAME.match(name) else "(a header cell that is not a column name)"


def _record(row: dict[str, str]) -> dict[str, Any]:
    """The police JSON object a row stands for (cells stay strings; pydantic coerces)."""
    item: dict[str, Any] = {}
    subjects: dict[int, dict[str, Any]] = {}
    risks: dict[int, dict[str, Any]] = {}
    for column, cell in row.items():
        value = cell.strip()
        if not value:
            continue
        risk = _RISK_COLUMN.match(column)
        if risk:
            field = risk.group(2)
            risks.setdefault(int(risk.group(1)), {})[field] = (
                [f.strip() for f in value.split(";") if f.strip()] if field == "factors" else value
            )
            continue
        match = _SUBJECT_COLUMN.match(column)
        if match:
            person = subjects.setdefault(int(match.group(1)), {})
            field = match.group(2)
            if field.startswith("address."):
                person.setdefault("address", {})[field.removeprefix("address.")] = value
            else:
                person[field] = value
        elif "." in column:
            group, field = column.split(".", 1)
            item.setdefault(group, {})[field] = value
        elif column == "third_party_protection":
            item[column] = [ref.strip() for ref in value.split(";") if ref.strip()]
        else:
            item[column] = value
    if subjects:
        item["subjects"] = [subjects[n] for n in sorted(subjects)]
    if risks:
        item["risk_assessments"] = [risks[n] for n in sorted(risks)]
    if "concern_id" not in item and isinstance(item.get("source_agency"), str):
        ref = item.get("source_ref")
        if isinstance(ref, str):
            item["concern_id"] = concern_id_for(item["source_agency"], ref)
    return item


def parse_police_csv(
    text: str, *, source: str, publisher_id: str, now: datetime | None = None
) -> list[ParsedRecord]:
    """Validate every row of one CSV file (``now``: for date plausibility)."""
    text = text.removeprefix("\ufeff")  # a spreadsheet's byte order mark
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error:
        return _file_error(source, "row 1 (the header) is not valid CSV: fix the file")
    if not header or not any(h.strip() for h in header):
        return _file_error(source, "no header row: the first row must name the columns")
    columns = [h.strip() for h in header]
    unknown = [(i, c) for i, c in enumerate(columns, start=1) if c not in CSV_COLUMNS]
    if unknown:
        shown = ", ".join(f"column {i} {_shown(c)}" for i, c in unknown[:5])
        return _file_error(
            source,
            f"unknown column(s) in row 1: {shown}; see docs/csv-format.md for the names",
        )
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        return _file_error(source, f"column(s) named twice in row 1: {', '.join(twice)}")
    parsed: list[ParsedRecord] = []
    row_number = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error:
            parsed.append(
                ParsedRecord(
                    f"{source} row {row_number + 1}",
                    None,
                    None,
                    ReasonCode.DECODE_ERROR.value,
                    "not valid CSV from this row on (an unclosed quote?): fix the file",
                )
            )
            break
        row_number += 1
        label = f"{source} row {row_number}"
        if not any(c.strip() for c in cells):
            continue  # blank rows are ignored, as blank lines are in JSON Lines
        if len(cells) != len(columns):
            parsed.append(
                ParsedRecord(
                    label,
                    None,
                    None,
                    ReasonCode.SCHEMA_INVALID.value,
                    f"{len(cells)} cells, but the header names {len(columns)} columns",
                )
            )
            continue
        if any(len(c) > _MAX_CELL for c in cells):
            parsed.append(
                ParsedRecord(
                    label,
                    None,
                    None,
                    ReasonCode.TOO_LARGE.value,
                    f"a cell is longer than {_MAX_CELL} characters",
                )
            )
            continue
        item = _record(dict(zip(columns, cells, strict=True)))
        record = validate_record(item, label=label, publisher_id=publisher_id, now=now)
        if record.detail:
            record = replace(record, detail=_column_names(record.detail))
        parsed.append(record)
    return parsed


def _column_names(detail: str) -> str:
    """Field paths in a result (``subjects.0.role``, ``subjects[0]``,
    ``risk_assessments[0]``) as column names."""
    detail = _LOC.sub(lambda m: f"subject{int(m.group(1)) + 1}.", detail)
    detail = _RISK_LOC.sub(lambda m: f"risk{int(m.group(1)) + 1}.", detail)
    detail = _RISK_INDEX.sub(lambda m: f"risk{int(m.group(1)) + 1}", detail)
    return _INDEX.sub(lambda m: f"subject{int(m.group(1)) + 1}", detail)


_LOC = re.compile(r"subjects\.([0-9]+)\.")
_INDEX = re.compile(r"subjects\[([0-9]+)\]")
_RISK_LOC = re.compile(r"risk_assessments\.([0-9]+)\.")
_RISK_INDEX = re.compile(r"risk_assessments\[([0-9]+)\]")
