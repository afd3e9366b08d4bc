"""Schema registries and the codec that uses them.

The embedded registry is a JSON file. Its ids are derived from the schema's
content (the first 31 bits of SHA-256 over its normalised JSON), so the same
schema gets the same id across restarts *and* across separate data
directories: a publisher and a router need not share a file to agree.
A Confluent-compatible HTTP registry can stand in behind the same protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.types import Schema as _FastavroSchema

from ._codec import catalogue, decode_body, encode_body, latest, split_wire, wire_frame
from ._errors import ReasonCode, SchemaError

__all__ = ["Codec", "Decoded", "EmbeddedRegistry", "Registry", "content_schema_id"]


def _normalised(source: dict[str, Any]) -> str:
    return json.dumps(source, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_schema_id(source: dict[str, Any]) -> int:
    """Stable, positive 31-bit id of a schema's content."""
    digest = hashlib.sha256(_normalised(source).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1


class Registry(Protocol):
    """What the codec needs from a schema registry."""

    def register(self, subject: str, source: dict[str, Any]) -> int: ...

    def lookup(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        """Return (subject, schema source) or raise SchemaError(UNKNOWN_SCHEMA)."""
        ...


class EmbeddedRegistry:
    """File-backed registry. Every schema kept in the repo is registered on open."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._by_id: dict[int, tuple[str, dict[str, Any]]] = {}
        if path is not None and path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                for key, entry in stored.get("schemas", {}).items():
                    self._by_id[int(key)] = (entry["subject"], entry["schema"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SchemaError(
                    f"registry file {path} is unreadable ({type(exc).__name__})",
                    code=ReasonCode.CONFIG_INVALID,
                    hint="move it aside; it is rebuilt from schemas/avro on the next start",
                ) from None
        dirty = False
        for subject, versions in catalogue().items():
            for version in versions:
                dirty |= self._add(subject, version.source)
        if dirty:
            self._save()

    def _add(self, subject: str, source: dict[str, Any]) -> bool:
        schema_id = content_schema_id(source)
        existing = self._by_id.get(schema_id)
        if existing is not None:
            if _normalised(existing[1]) != _normalised(source):
                raise SchemaError(
                    f"schema id {schema_id} collides for subject {subject!r}",
                    code=ReasonCode.SCHEMA_INVALID,
                    hint="change the schema's doc string to move it to another id",
                )
            return False
        self._by_id[schema_id] = (subject, source)
        return True

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "schemas": {
                str(k): {"subject": s, "schema": src} for k, (s, src) in sorted(self._by_id.items())
            }
        }
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".registry-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
        os.replace(tmp, self._path)

    def register(self, subject: str, source: dict[str, Any]) -> int:
        if self._add(subject, source):
            self._save()
        return content_schema_id(source)

    def lookup(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise SchemaError(
                f"schema id {schema_id} is not registered",
                code=ReasonCode.UNKNOWN_SCHEMA,
                hint="the producer uses a schema this registry has never seen; register it first",
            ) from None


@dataclass(frozen=True)
class Decoded:
    subject: str
    schema_id: int
    record: dict[str, Any]


class Codec:
    """Encode and decode SAFER records in the Confluent wire format.

    Records are written with the newest schema of their subject and read into
    the newest schema this build knows (Avro schema resolution), so old and new
    producers interoperate.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._writer: dict[str, tuple[int, _FastavroSchema]] = {}
        self._readers: dict[int, tuple[str, _FastavroSchema, _FastavroSchema | None]] = {}

    def schema_id(self, subject: str) -> int:
        return self._writer_for(subject)[0]

    def _writer_for(self, subject: str) -> tuple[int, _FastavroSchema]:
        cached = self._writer.get(subject)
        if cached is None:
            version = latest(subject)
            schema_id = self._registry.register(subject, version.source)
            cached = (schema_id, version.parsed)
            self._writer[subject] = cached
        return cached

    def encode(self, subject: str, record: dict[str, Any]) -> bytes:
        schema_id, parsed = self._writer_for(subject)
        return wire_frame(schema_id, encode_body(parsed, record))

    def decode(self, data: bytes, *, expect: str | None = None) -> Decoded:
        schema_id, body = split_wire(data)
        cached = self._readers.get(schema_id)
        if cached is None:
            subject, source = self._registry.lookup(schema_id)
            newest = latest(subject)
            writer = fastavro.parse_schema(source)
            # Same version on both sides: skip schema resolution, it costs ~4x.
            reader = (
                None
                if content_schema_id(source) == content_schema_id(newest.source)
                else newest.parsed
            )
            cached = (subject, writer, reader)
            self._readers[schema_id] = cached
        subject, writer, reader = cached
        if expect is not None and subject != expect:
            raise SchemaError(
                f"expected a {expect} record, got {subject} (schema id {schema_id})",
                code=ReasonCode.UNKNOWN_SCHEMA,
                hint="the record was published to the wrong topic",
            )
        return Decoded(subject, schema_id, decode_body(body, writer, reader))
