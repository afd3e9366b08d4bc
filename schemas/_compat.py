"""Avro schema compatibility (the resolution rules of the Avro specification).

``reader_can_read(reader, writer)`` lists why data written with ``writer``
cannot be read with ``reader`` (empty when it can). FULL_TRANSITIVE holds when
every pair of versions is compatible both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._errors import ReasonCode, SchemaError

__all__ = ["check_full_transitive", "reader_can_read"]

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _index(schema: Any, named: dict[str, Any], namespace: str = "") -> None:
    """Collect named types so that references by name can be resolved."""
    if isinstance(schema, list):
        for branch in schema:
            _index(branch, named, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            name = schema["name"]
            full = name if "." in name else (f"{ns}.{name}" if ns else name)
            named[full] = schema
            named[name] = schema
            for field in schema.get("fields", []):
                _index(field["type"], named, ns)
        elif kind == "array":
            _index(schema["items"], named, namespace)
        elif kind == "map":
            _index(schema["values"], named, namespace)
        elif isinstance(kind, dict | list):
            _index(kind, named, namespace)


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        return named.get(schema, schema)
    if isinstance(schema, dict) and isinstance(schema.get("type"), str):
        if schema["type"] in _PRIMITIVES:
            return schema["type"]
        if schema["type"] not in ("record", "enum", "fixed", "array", "map"):
            return named.get(schema["type"], schema["type"])
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    return str(schema["type"])


def _check(
    reader: Any,
    writer: Any,
    rn: dict[str, Any],
    wn: dict[str, Any],
    path: str,
    seen: set[tuple[int, int]],
) -> list[str]:
    reader, writer = _resolve(reader, rn), _resolve(writer, wn)
    key = (id(reader), id(writer))
    if key in seen:
        return []
    seen = seen | {key}
    rk, wk = _kind(reader), _kind(writer)
    if wk == "union":
        problems: list[str] = []
        for branch in writer:
            problems += _check(reader, branch, rn, wn, path, seen)
        return problems
    if rk == "union":
        for branch in reader:
            if not _check(branch, writer, rn, wn, path, seen):
                return []
        return [f"{path}: writer type {wk} matches no branch of the reader's union"]
    if rk != wk:
        if wk in _PROMOTIONS and rk in _PROMOTIONS[wk]:
            return []
        return [f"{path}: writer type {wk} cannot be read as {rk}"]
    if rk == "array":
        return _check(reader["items"], writer["items"], rn, wn, f"{path}[]", seen)
    if rk == "map":
        return _check(reader["values"], writer["values"], rn, wn, f"{path}{{}}", seen)
    if rk == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{path}: reader enum lacks symbols {sorted(missing)} and has no default"]
        return []
    if rk == "fixed":
        if reader.get("size") != writer.get("size"):
            return [f"{path}: fixed sizes differ"]
        return []
    if rk == "record":
        problems = []
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            source = writer_fields.get(name)
            if source is None:
                for alias in field.get("aliases", []):
                    source = writer_fields.get(alias)
                    if source is not None:
                        break
            if source is None:
                if "default" not in field:
                    problems.append(f"{path}.{name}: new field without a default")
                continue
            problems += _check(field["type"], source["type"], rn, wn, f"{path}.{name}", seen)
        return problems
    return []


def reader_can_read(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Reasons data written with ``writer`` cannot be read by ``reader``."""
    rn: dict[str, Any] = {}
    wn: dict[str, Any] = {}
    _index(reader, rn)
    _index(writer, wn)
    return _check(reader, writer, rn, wn, str(reader.get("name", "")), set())


def check_full_transitive(subject: str, versions: Sequence[dict[str, Any]]) -> None:
    """Raise SchemaError unless every version reads every other (FULL_TRANSITIVE)."""
    problems: list[str] = []
    for i, older in enumerate(versions):
        for j, newer in enumerate(versions):
            if i >= j:
                continue
            problems += [f"v{j + 1} reading v{i + 1}: {p}" for p in reader_can_read(newer, older)]
            problems += [f"v{i + 1} reading v{j + 1}: {p}" for p in reader_can_read(older, newer)]
    if problems:
        raise SchemaError(
            f"{subject}: versions are not FULL_TRANSITIVE compatible: " + "; ".join(problems),
            code=ReasonCode.SCHEMA_INVALID,
            hint="add new fields with defaults and give enums a default symbol",
        )
