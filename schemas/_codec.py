"""Schema catalogue and the Confluent wire format.

Wire format: magic byte ``0x00``, a 4-byte big-endian schema id, then the Avro
binary body. The catalogue holds every ``.avsc`` version kept in the repo.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.types import Schema as _FastavroSchema

from ._errors import DecodeError, ReasonCode, SchemaError

__all__ = [
    "MAGIC_BYTE",
    "SchemaVersion",
    "canonical_form",
    "catalogue",
    "decode_body",
    "encode_body",
    "latest",
    "split_wire",
    "wire_frame",
]

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
_AVRO_DIR = Path(__file__).parent / "avro"


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one schema as kept in ``schemas/avro/<subject>/v<N>.avsc``."""

    subject: str
    version: int
    source: dict[str, Any]
    parsed: _FastavroSchema

    @property
    def canonical(self) -> str:
        return canonical_form(self.source)


def canonical_form(schema: dict[str, Any]) -> str:
    """Avro Parsing Canonical Form, as fastavro computes it (ids hash this)."""
    return str(fastavro.schema.to_parsing_canonical_form(schema))


@cache
def catalogue() -> dict[str, tuple[SchemaVersion, ...]]:
    """Every subject and its versions, oldest first."""
    subjects: dict[str, tuple[SchemaVersion, ...]] = {}
    for folder in sorted(p for p in _AVRO_DIR.iterdir() if p.is_dir()):
        versions = []
        for path in folder.glob("v*.avsc"):
            number = int(path.stem[1:])
            source = json.loads(path.read_text(encoding="utf-8"))
            parsed = fastavro.parse_schema(source)
            versions.append(SchemaVersion(folder.name, number, source, parsed))
        subjects[folder.name] = tuple(sorted(versions, key=lambda v: v.version))
    return subjects


def latest(subject: str) -> SchemaVersion:
    try:
        return catalogue()[subject][-1]
    except KeyError:
        raise SchemaError(
            f"no schema subject named {subject!r}",
            code=ReasonCode.UNKNOWN_SCHEMA,
            hint=f"known subjects: {', '.join(sorted(catalogue()))}",
        ) from None


def encode_body(schema: _FastavroSchema, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    try:
        fastavro.schemaless_writer(buffer, schema, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # fastavro's message names the field but may quote the value; keep only the type.
        raise SchemaError(
            f"record does not fit its schema ({type(exc).__name__})",
            code=ReasonCode.SCHEMA_INVALID,
            hint="check the record against the .avsc in schemas/avro",
        ) from None
    return buffer.getvalue()


def decode_body(
    body: bytes, writer: _FastavroSchema, reader: _FastavroSchema | None = None
) -> dict[str, Any]:
    buffer = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buffer, writer, reader, return_record_name=False)
    except Exception as exc:  # fastavro raises many types on corrupt input
        raise DecodeError(
            f"Avro body could not be decoded ({type(exc).__name__})",
            code=ReasonCode.DECODE_ERROR,
        ) from None
    if buffer.tell() != len(body):
        raise DecodeError("trailing bytes after the Avro body", code=ReasonCode.DECODE_ERROR)
    if not isinstance(record, dict):
        raise DecodeError("Avro body is not a record", code=ReasonCode.DECODE_ERROR)
    return record


def wire_frame(schema_id: int, body: bytes) -> bytes:
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def split_wire(data: bytes) -> tuple[int, bytes]:
    """Return (schema id, Avro body) of a wire-format value, or raise DecodeError."""
    if len(data) < _HEADER.size:
        raise DecodeError(
            f"value is {len(data)} bytes, too short for the wire-format header",
            code=ReasonCode.DECODE_ERROR,
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise DecodeError(
            f"wire-format magic byte is {magic:#04x}, expected 0x00",
            code=ReasonCode.DECODE_ERROR,
            hint="the producer is not using the Confluent wire format",
        )
    return schema_id, data[_HEADER.size :]
