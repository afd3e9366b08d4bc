"""Schemas: wire format, registry ids, compatibility."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from schemas import (
    CONCERN,
    Codec,
    DecodeError,
    EmbeddedRegistry,
    SchemaError,
    catalogue,
    check_full_transitive,
    content_schema_id,
    latest,
    reader_can_read,
    split_wire,
)


def _receipt() -> dict[str, object]:
    from datetime import UTC, datetime

    return {
        "receipt_id": "r1",
        "disclosure_id": "d1",
        "concern_id": "c1",
        "recipient_id": "portsmouth-csc",
        "status": "RECEIVED",
        "payload_sha256": "00" * 32,
        "at": datetime(2026, 11, 24, 9, 30, tzinfo=UTC),
        "actor": "portsmouth-csc",
    }


def test_wire_format_has_magic_and_big_endian_schema_id() -> None:
    codec = Codec(EmbeddedRegistry(None))
    value = codec.encode("receipt", _receipt())
    assert value[0] == 0
    assert int.from_bytes(value[1:5], "big") == codec.schema_id("receipt")
    decoded = codec.decode(value)
    assert decoded.subject == "receipt"
    assert decoded.record["recipient_id"] == "portsmouth-csc"


def test_decode_rejects_bad_magic_short_and_trailing_bytes() -> None:
    codec = Codec(EmbeddedRegistry(None))
    value = codec.encode("receipt", _receipt())
    with pytest.raises(DecodeError) as bad_magic:
        codec.decode(b"\x01" + value[1:])
    assert bad_magic.value.code == "DECODE_ERROR"
    with pytest.raises(DecodeError):
        codec.decode(b"\x00\x00")
    with pytest.raises(DecodeError):
        codec.decode(value + b"extra")
    with pytest.raises(DecodeError):
        codec.decode(value[:-3])


def test_unknown_schema_id_is_reported_as_unknown_schema() -> None:
    codec = Codec(EmbeddedRegistry(None))
    value = codec.encode("receipt", _receipt())
    with pytest.raises(SchemaError) as info:
        codec.decode(b"\x00\x7f\xff\xff\xfe" + value[5:])
    assert info.value.code == "UNKNOWN_SCHEMA"


def test_wrong_subject_is_refused() -> None:
    codec = Codec(EmbeddedRegistry(None))
    value = codec.encode("receipt", _receipt())
    with pytest.raises(SchemaError):
        codec.decode(value, expect=CONCERN)


def test_registry_ids_are_stable_across_restarts_and_directories(tmp_path: Path) -> None:
    first = EmbeddedRegistry(tmp_path / "a" / "registry.json")
    ids = {s: first.register(s, latest(s).source) for s in catalogue()}
    again = EmbeddedRegistry(tmp_path / "a" / "registry.json")
    other = EmbeddedRegistry(tmp_path / "b" / "registry.json")
    for subject, schema_id in ids.items():
        assert again.register(subject, latest(subject).source) == schema_id
        assert other.register(subject, latest(subject).source) == schema_id
    stored = json.loads((tmp_path / "a" / "registry.json").read_text())
    assert {int(k) for k in stored["schemas"]} >= set(ids.values())


def test_registry_remembers_a_schema_registered_at_runtime(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    schema = {"type": "record", "name": "Extra", "fields": [{"name": "a", "type": "int"}]}
    schema_id = EmbeddedRegistry(path).register("extra", schema)
    assert EmbeddedRegistry(path).lookup(schema_id) == ("extra", schema)
    assert schema_id == content_schema_id(schema)


@pytest.mark.parametrize("subject", sorted(catalogue()))
def test_every_subject_is_full_transitive(subject: str) -> None:
    check_full_transitive(subject, [v.source for v in catalogue()[subject]])


def test_compatibility_checker_catches_breaking_changes() -> None:
    base = copy.deepcopy(latest("receipt").source)
    added_required = copy.deepcopy(base)
    added_required["fields"].append({"name": "new_field", "type": "string"})
    assert reader_can_read(added_required, base)  # new reader cannot fill new_field
    with pytest.raises(SchemaError):
        check_full_transitive("receipt", [base, added_required])

    added_optional = copy.deepcopy(base)
    added_optional["fields"].append(
        {"name": "new_field", "type": ["null", "string"], "default": None}
    )
    check_full_transitive("receipt", [base, added_optional])

    enum_grown = copy.deepcopy(base)
    status = next(f for f in enum_grown["fields"] if f["name"] == "status")
    status["type"] = dict(status["type"], symbols=[*status["type"]["symbols"], "ARCHIVED"])
    check_full_transitive("receipt", [base, enum_grown])  # old reader falls back to the default
    del status["type"]["default"]
    no_default = copy.deepcopy(base)
    nd_status = next(f for f in no_default["fields"] if f["name"] == "status")
    del nd_status["type"]["default"]
    assert reader_can_read(no_default, enum_grown)

    type_changed = copy.deepcopy(base)
    next(f for f in type_changed["fields"] if f["name"] == "actor")["type"] = "long"
    with pytest.raises(SchemaError):
        check_full_transitive("receipt", [base, type_changed])


def test_split_wire_rejects_non_wire_bytes() -> None:
    with pytest.raises(DecodeError):
        split_wire(b"{}")


def test_every_reason_code_is_explained_in_the_docs() -> None:
    """docs/REASON_CODES.md says what each code means and what to do about it."""
    from pathlib import Path

    from schemas import ReasonCode

    text = (Path(__file__).resolve().parents[2] / "docs" / "REASON_CODES.md").read_text()
    missing = [code.value for code in ReasonCode if f"| `{code.value}` |" not in text]
    assert missing == []
