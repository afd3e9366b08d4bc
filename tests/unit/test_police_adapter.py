"""Police JSON adapter: parsing, validation errors without values, signing."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from adapters import parse_police_json
from broker import HEADER_NAMES
from safer import Runtime
from schemas import ConcernModel

REPO = Path(__file__).resolve().parents[2]
PUBLISHER = "hampshire-constabulary"


def _parse(data: Any) -> list[Any]:
    text = data if isinstance(data, str) else json.dumps(data)
    return parse_police_json(text, source="f.json", publisher_id=PUBLISHER)


def test_object_array_and_json_lines_are_all_read(example_concern: dict[str, Any]) -> None:
    second = copy.deepcopy(example_concern)
    second["concern_id"] = "0b7f1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
    assert [r.status for r in _parse(example_concern)] == ["ACCEPTED"]
    assert [r.status for r in _parse([example_concern, second])] == ["ACCEPTED"] * 2
    lines = json.dumps(example_concern) + "\n" + json.dumps(second) + "\n"
    parsed = _parse(lines)
    assert [r.status for r in parsed] == ["ACCEPTED"] * 2
    assert [r.label for r in parsed] == ["f.json#1", "f.json#2"]


def test_not_json_is_a_decode_error_with_position() -> None:
    (record,) = _parse("{ not json")
    assert record.status == "DECODE_ERROR"
    assert "line 1" in record.detail


def test_validation_errors_name_fields_never_values(example_concern: dict[str, Any]) -> None:
    example_concern["subjects"][0]["nhs_number"] = "12345 Poppy"
    example_concern["risk_grade"] = "PURPLE"
    (record,) = _parse(example_concern)
    assert record.status == "SCHEMA_INVALID"
    assert "subjects.0.nhs_number" in record.detail
    assert "risk_grade" in record.detail
    assert "Poppy" not in record.detail and "12345" not in record.detail
    assert "PURPLE" not in record.detail


def test_another_agencys_concern_is_refused(example_concern: dict[str, Any]) -> None:
    example_concern["source_agency"] = "dorset-police"
    (record,) = _parse(example_concern)
    assert record.status == "UNKNOWN_PUBLISHER"


def test_minimum_dataset_is_checked_before_publishing(example_concern: dict[str, Any]) -> None:
    example_concern["officer"]["email"] = None
    example_concern["officer"]["phone"] = None
    (record,) = _parse(example_concern)
    assert record.status == "MINIMUM_DATASET_MISSING"
    assert "officer" in record.detail


def test_the_shipped_examples_parse_as_documented() -> None:
    examples = REPO / "deploy" / "examples"

    def statuses(name: str) -> list[str]:
        text = (examples / name).read_text()
        return [r.status for r in parse_police_json(text, source=name, publisher_id=PUBLISHER)]

    assert statuses("concern-domestic-abuse.json") == ["ACCEPTED"]
    assert statuses("concerns-batch.json") == ["ACCEPTED"] * 5
    assert statuses("concern-invalid.json") == ["MINIMUM_DATASET_MISSING"]


def test_prepared_record_carries_only_a_pseudonym_and_allowed_headers(
    runtime: Runtime, example_concern: dict[str, Any]
) -> None:
    concern = ConcernModel.model_validate(example_concern)
    record = runtime.police_adapter().prepare(concern)
    assert record.topic == "hips.inbound.police"
    assert record.key is not None and re.fullmatch(rb"[0-9a-f]{32}", record.key)
    assert {name for name, _ in record.headers} <= HEADER_NAMES
    metadata = record.key + b"".join(v for _, v in record.headers)
    for secret in (b"Poppy", b"Walker", b"9992048719", b"PO2 8RL", b"2017-04-12"):
        assert secret not in metadata
    # Same child, same key: the partition keeps one child's concerns in order.
    again = runtime.police_adapter().prepare(concern)
    assert again.key == record.key
