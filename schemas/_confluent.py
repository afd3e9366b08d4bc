"""Confluent Schema Registry: a client, and the subject naming both ways share.

Subject naming follows Confluent's **RecordNameStrategy**: a schema's subject
is the fully-qualified name of its Avro record (``uk.hips.safer.Concern``),
whatever topic carries it. Our topics carry one record type each, except that
``hips.audit`` carries AuditRecord and AuditBatch, which TopicNameStrategy
(``<topic>-value``, one schema line per topic) could not describe.

Wire format: ours is Confluent's (magic ``0x00``, a 4-byte big-endian schema
id, the Avro binary body). The one difference is where ids come from: the
embedded registry derives an id from the schema's content (31 bits of
SHA-256), a Confluent registry counts up. Both are positive 32-bit integers,
so either decodes the other's frames as long as the id it names is registered
there (docs/schema-registry.md).

``ConfluentRegistry`` implements ``Registry`` over the REST API
(``/subjects``, ``/subjects/{s}/versions``, ``/schemas/ids/{id}``,
``/compatibility/...``), with basic or bearer authentication, so a deployment
can use a Confluent-compatible registry instead of the embedded one
(``SAFER_SCHEMA_REGISTRY_URL``). The app shell serves that same REST subset
from the embedded registry (``safer registry``, ``safer/_registry_server.py``),
so third-party tools (confluent-kafka's ``AvroDeserializer``, kcat, Kafka UI)
decode our topics.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from ._codec import catalogue, latest
from ._errors import ReasonCode, SchemaError
from ._registry import content_schema_id

__all__ = [
    "COMPATIBILITY",
    "ConfluentRegistry",
    "confluent_subject",
    "our_subject",
]

#: The compatibility level our schemas keep (DESIGN §7), as Confluent names it.
COMPATIBILITY = "FULL_TRANSITIVE"
_SCHEMA_JSON = "application/vnd.schemaregistry.v1+json"


def confluent_subject(subject: str) -> str:
    """RecordNameStrategy: our subject (``concern``) → ``uk.hips.safer.Concern``."""
    source = latest(subject).source
    namespace = source.get("namespace")
    name = str(source["name"])
    return f"{namespace}.{name}" if namespace and "." not in name else name


def our_subject(name: str) -> str:
    """The inverse of ``confluent_subject``; SchemaError(UNKNOWN_SCHEMA) if none."""
    for subject in catalogue():
        if confluent_subject(subject) == name:
            return subject
    raise SchemaError(
        f"no SAFER schema has the record name {name!r}",
        code=ReasonCode.UNKNOWN_SCHEMA,
        hint="subjects follow RecordNameStrategy (docs/schema-registry.md)",
    )


class ConfluentRegistry:
    """A ``Registry`` backed by a Confluent-compatible Schema Registry over HTTP(S).

    Args:
        url: the registry's base URL.
        auth: ``("user", "password")`` for basic auth, or a bearer token string.
        verify: TLS verification (a CA bundle path, or True for the system store).
        timeout: seconds per request.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | str | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": _SCHEMA_JSON, "Content-Type": _SCHEMA_JSON}
        basic: httpx.BasicAuth | None = None
        if isinstance(auth, str):
            headers["Authorization"] = f"Bearer {auth}"
        elif auth is not None:
            basic = httpx.BasicAuth(*auth)
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            auth=basic,
            verify=verify,
            timeout=timeout,
            trust_env=False,
            transport=transport,
        )
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, tuple[str, dict[str, Any]]] = {}

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._client.request(
                method, path, content=None if body is None else json.dumps(body)
            )
        except httpx.HTTPError as exc:
            raise SchemaError(
                f"schema registry unreachable ({type(exc).__name__})",
                code=ReasonCode.BROKER_UNAVAILABLE,
                retriable=True,
                hint="check SAFER_SCHEMA_REGISTRY_URL and that the registry is up",
            ) from None
        if response.status_code in (401, 403):
            raise SchemaError(
                f"schema registry refused our credentials (HTTP {response.status_code})",
                code=ReasonCode.NOT_AUTHORIZED,
                hint="check SAFER_SCHEMA_REGISTRY_AUTH (user:password) or _TOKEN",
            )
        if response.status_code == 404:
            raise SchemaError(
                f"not in the schema registry: {path}",
                code=ReasonCode.UNKNOWN_SCHEMA,
                hint="register the schema first (publishers register on first use)",
            )
        if response.status_code >= 300:
            raise SchemaError(
                f"schema registry answered HTTP {response.status_code} to {method} {path}",
                code=ReasonCode.UNKNOWN_SCHEMA,
                retriable=response.status_code >= 500,
            )
        try:
            return response.json()
        except ValueError:
            raise SchemaError(
                "schema registry answered with something that is not JSON",
                code=ReasonCode.DECODE_ERROR,
            ) from None

    # -- the Registry protocol ------------------------------------------------------------

    def register(self, subject: str, source: dict[str, Any]) -> int:
        key = f"{subject}\x00{content_schema_id(source)}"
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        name = confluent_subject(subject)
        answer = self._call("POST", f"/subjects/{name}/versions", {"schema": json.dumps(source)})
        schema_id = int(answer["id"])
        with self._lock:
            self._ids[key] = schema_id
            self._by_id[schema_id] = (subject, source)
        return schema_id

    def lookup(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        with self._lock:
            cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        answer = self._call("GET", f"/schemas/ids/{int(schema_id)}")
        if answer.get("schemaType", "AVRO") != "AVRO":
            raise SchemaError(f"schema id {schema_id} is not Avro", code=ReasonCode.UNKNOWN_SCHEMA)
        source = json.loads(answer["schema"])
        namespace = source.get("namespace")
        name = f"{namespace}.{source['name']}" if namespace else str(source["name"])
        found = (our_subject(name), source)
        with self._lock:
            self._by_id[schema_id] = found
        return found

    # -- the rest of the REST subset ------------------------------------------------------

    def subjects(self) -> list[str]:
        return [str(s) for s in self._call("GET", "/subjects")]

    def versions(self, name: str) -> list[int]:
        return [int(v) for v in self._call("GET", f"/subjects/{name}/versions")]

    def is_compatible(self, subject: str, source: dict[str, Any]) -> bool:
        answer = self._call(
            "POST",
            f"/compatibility/subjects/{confluent_subject(subject)}/versions/latest",
            {"schema": json.dumps(source)},
        )
        return bool(answer.get("is_compatible"))
