# ruff: noqa: E501  (the case tables read best one case per line)
"""Plausibility and bounds of a concern (issue 11, point 2): pure, table-driven.

Each case is one of the hostile records an outside check sent and the exchange
accepted without complaint; each must now be refused with a stable code that
names the field, and never quote the value.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas import (
    LIMITS,
    ConcernModel,
    ReasonCode,
    limit_problems,
    plausibility_problems,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (ROOT / "deploy/examples/concern-domestic-abuse.json").read_text()
    )
    return data


def _with(example: dict[str, Any], change: Any) -> dict[str, Any]:
    data = copy.deepcopy(example)
    change(data)
    return data


def _child(data: dict[str, Any]) -> dict[str, Any]:
    child: dict[str, Any] = next(s for s in data["subjects"] if s["role"] == "CHILD")
    return child


def _adult(data: dict[str, Any], role: str) -> dict[str, Any]:
    adult: dict[str, Any] = next(s for s in data["subjects"] if s["role"] == role)
    return adult


def test_the_shipped_example_is_plausible(example: dict[str, Any]) -> None:
    assert limit_problems(example) == []
    assert plausibility_problems(ConcernModel.model_validate(example), NOW) == []


# (case, change, code, field) for checks on the validated concern.
SEMANTIC = [
    ("dob 1800", lambda d: _child(d).update(date_of_birth="1800-01-01"), "IMPLAUSIBLE_DATE", "date_of_birth"),
    ("dob 2100", lambda d: _child(d).update(date_of_birth="2100-01-01"), "IMPLAUSIBLE_DATE", "date_of_birth"),
    ("dob 9999", lambda d: _child(d).update(date_of_birth="9999-12-31"), "IMPLAUSIBLE_DATE", "date_of_birth"),
    ("reported 1800", lambda d: d.update(reported_at="1800-06-01T10:00:00Z"), "IMPLAUSIBLE_DATE", "reported_at"),
    ("reported 3000", lambda d: d.update(reported_at="3000-06-01T10:00:00Z"), "IMPLAUSIBLE_DATE", "reported_at"),
    # reported_at + 15 minutes overflowed: an OverflowError, quarantined as PROCESSING_ERROR.
    ("reported at the end of 9999", lambda d: d.update(reported_at="9999-12-31T23:59:00Z"), "IMPLAUSIBLE_DATE", "reported_at"),
    ("incident after report", lambda d: d.update(occurred_at="2026-11-23T09:00:00Z"), "IMPLAUSIBLE_DATE", "occurred_at"),
    ("incident 1900", lambda d: d.update(occurred_at="1900-01-01T00:00:00Z"), "IMPLAUSIBLE_DATE", "occurred_at"),
    ("child aged 40", lambda d: _child(d).update(date_of_birth="1986-01-01"), "AGE_ROLE_MISMATCH", "date_of_birth"),
    ("parent aged 6", lambda d: _adult(d, "PARENT_CARER").update(date_of_birth="2020-01-01"), "AGE_ROLE_MISMATCH", "date_of_birth"),
    ("person aged 130", lambda d: _adult(d, "PARENT_CARER").update(date_of_birth="1901-01-01"), "IMPLAUSIBLE_DATE", "date_of_birth"),
    ("unknown third party", lambda d: d.update(third_party_protection=["S99"]), "SCHEMA_INVALID", "third_party_protection"),
    ("repeated subject_ref", lambda d: d["subjects"][1].update(subject_ref=d["subjects"][0]["subject_ref"]), "SCHEMA_INVALID", "subjects"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "change", "code", "field"), SEMANTIC, ids=[c[0] for c in SEMANTIC]
)
def test_implausible_content_is_refused_with_its_code(
    example: dict[str, Any], case: str, change: Any, code: str, field: str
) -> None:
    data = _with(example, change)
    concern = ConcernModel.model_validate(data)
    problems = plausibility_problems(concern, NOW)
    assert problems, case
    assert problems[0].code is ReasonCode(code)
    assert field in problems[0].field
    # The reason names the field and the rule, never the value.
    text = " ".join(p.describe() for p in problems)
    for value in ("1800", "2100", "9999", "3000", "1986", "2020", "1901", "S99"):
        assert value not in text


@pytest.mark.parametrize("field", ["family_name", "given_name", "nhs_number"])
def test_a_subject_ref_that_spells_someone_s_identity_is_refused(
    example: dict[str, Any], field: str
) -> None:
    """subject_ref reaches audit reasons: it may not carry a name or an identifier."""
    data = copy.deepcopy(example)
    adult = _adult(data, "PARENT_CARER")
    ref = f"{adult[field]}-1".replace(" ", "")
    _child(data)["subject_ref"] = ref
    data["third_party_protection"] = []
    problems = plausibility_problems(ConcernModel.model_validate(data), NOW)
    assert [(p.code, p.field) for p in problems] == [
        (
            ReasonCode.PID_IN_METADATA,
            f"subjects[{data['subjects'].index(_child(data))}].subject_ref",
        )
    ]
    assert adult[field] not in " ".join(p.describe() for p in problems)


def _many_subjects(data: dict[str, Any], n: int) -> None:
    template = data["subjects"][0]
    data["subjects"] = [dict(template, subject_ref=f"S{i}") for i in range(n)]


# (case, change, code, field) for checks on the raw record, before any model is built.
BOUNDS = [
    ("5,000 subjects", lambda d: _many_subjects(d, 5000), "LIMIT_EXCEEDED", "subjects"),
    ("900 KB narrative", lambda d: d.update(narrative="x" * 900_000), "LIMIT_EXCEEDED", "narrative"),
    ("300,000 third parties", lambda d: d.update(third_party_protection=["S1"] * 300_000), "LIMIT_EXCEEDED", "third_party_protection"),
    ("agency trailing space", lambda d: d.update(source_agency="hampshire-constabulary "), "ID_NOT_CANONICAL", "source_agency"),
    ("agency upper case", lambda d: d.update(source_agency="Hampshire-Constabulary"), "ID_NOT_CANONICAL", "source_agency"),
    ("agency unicode look-alike", lambda d: d.update(source_agency="hampshire\u2010constabulary"), "ID_NOT_CANONICAL", "source_agency"),
    ("subject_ref with spaces", lambda d: d["subjects"][0].update(subject_ref="S 1"), "ID_NOT_CANONICAL", "subject_ref"),
    # `$` matched before a final newline, and the model strips whitespace: "id\n" passed as "id".
    ("agency trailing newline", lambda d: d.update(source_agency="hampshire-constabulary\n"), "ID_NOT_CANONICAL", "source_agency"),
    ("subject_ref trailing newline", lambda d: d["subjects"][0].update(subject_ref="S1\n"), "ID_NOT_CANONICAL", "subject_ref"),
    ("long voice of the child", lambda d: d.update(voice_of_child={"said": "y" * 20_000}), "LIMIT_EXCEEDED", "voice_of_child.said"),
    ("long given name", lambda d: d["subjects"][0].update(given_name="z" * 5_000), "LIMIT_EXCEEDED", "given_name"),
    ("long NHS number field", lambda d: d["subjects"][0].update(nhs_number="9" * 500), "LIMIT_EXCEEDED", "nhs_number"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "code", "field"), BOUNDS, ids=[c[0] for c in BOUNDS])
def test_oversized_or_tricky_records_are_refused_before_parsing(
    example: dict[str, Any], case: str, change: Any, code: str, field: str
) -> None:
    problems = limit_problems(_with(example, change))
    assert problems, case
    assert problems[0].code is ReasonCode(code)
    assert field in problems[0].field


def test_limits_fit_a_real_household_with_room_to_spare() -> None:
    # A PPN names a household: even a large one (10 children, 6 adults) fits.
    assert LIMITS.subjects >= 16 * 2
    assert LIMITS.narrative_chars >= 20_000
