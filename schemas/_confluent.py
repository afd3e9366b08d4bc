"""Confluent Schema Registry, both ways: a client, and the REST subset served from ours.

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
(``SAFER_SCHEMA_REGISTRY_URL``). ``registry_app`` serves that same REST subset
from the embedded registry (``safer registry``), so third-party tools
(confluent-kafka's ``AvroDeserializer``, kcat, Kafka UI) decode our topics.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._codec import catalogue, latest
from ._compat import reader_can_read
from ._errors import ReasonCode, SchemaError
from ._registry import EmbeddedRegistry, content_schema_id

__all__ = [
    "COMPATIBILITY",
    "ConfluentRegistry",
    "confluent_subject",
    "our_subject",
    "registry_app",
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


# --------------------------------------------------------------------------- the server


def registry_app(
    registry: EmbeddedRegistry, *, basic_auth: tuple[str, str] | None = None
) -> Starlette:
    """The Confluent REST subset, read from the embedded registry (read-mostly).

    Registration accepts only schemas this build already has (the schemas are
    in the repository, not made up by clients); compatibility checks run our
    FULL_TRANSITIVE check against every version of the subject. With
    ``basic_auth``, every request must carry those credentials (401 otherwise).
    """

    def versions_of(name: str) -> list[tuple[int, int, dict[str, Any]]]:
        subject = our_subject(name)
        return [(v.version, content_schema_id(v.source), v.source) for v in catalogue()[subject]]

    def error(status: int, code: int, message: str) -> JSONResponse:
        return JSONResponse(
            {"error_code": code, "message": message}, status_code=status, media_type=_SCHEMA_JSON
        )

    def ok(body: Any) -> JSONResponse:
        return JSONResponse(body, media_type=_SCHEMA_JSON)

    async def subjects(request: Request) -> Response:
        return ok(sorted(confluent_subject(s) for s in catalogue()))

    async def versions(request: Request) -> Response:
        try:
            return ok([v for v, _, _ in versions_of(request.path_params["subject"])])
        except SchemaError:
            return error(404, 40401, "Subject not found")

    async def version(request: Request) -> Response:
        name = request.path_params["subject"]
        try:
            found = versions_of(name)
        except SchemaError:
            return error(404, 40401, "Subject not found")
        wanted = request.path_params["version"]
        if wanted == "latest":
            chosen = found[-1]
        else:
            match = [v for v in found if str(v[0]) == wanted]
            if not match:
                return error(404, 40402, "Version not found")
            chosen = match[0]
        number, schema_id, source = chosen
        return ok(
            {
                "subject": name,
                "version": number,
                "id": schema_id,
                "schemaType": "AVRO",
                "schema": json.dumps(source),
            }
        )

    async def by_id(request: Request) -> Response:
        try:
            schema_id = int(request.path_params["schema_id"])
            subject, source = registry.lookup(schema_id)
        except (ValueError, SchemaError):
            return error(404, 40403, "Schema not found")
        return ok(
            {
                "schema": json.dumps(source),
                "schemaType": "AVRO",
                "subject": confluent_subject(subject),
            }
        )

    async def id_versions(request: Request) -> Response:
        try:
            subject, source = registry.lookup(int(request.path_params["schema_id"]))
        except (ValueError, SchemaError):
            return error(404, 40403, "Schema not found")
        number = next((v.version for v in catalogue()[subject] if v.source == source), None)
        return ok([{"subject": confluent_subject(subject), "version": number}])

    async def posted_schema(request: Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.body())
            source = json.loads(body["schema"])
        except (ValueError, KeyError, TypeError):
            return None
        return source if isinstance(source, dict) else None

    async def register(request: Request) -> Response:
        name = request.path_params["subject"]
        source = await posted_schema(request)
        if source is None:
            return error(422, 42201, "Invalid schema")
        try:
            found = versions_of(name)
        except SchemaError:
            return error(404, 40401, "Subject not found")
        for _, schema_id, known in found:
            if content_schema_id(known) == content_schema_id(source):
                return ok({"id": schema_id})
        return error(
            409,
            409,
            "This registry serves the schemas in the SAFER repository; add a version there",
        )

    async def compatibility(request: Request) -> Response:
        name = request.path_params["subject"]
        source = await posted_schema(request)
        if source is None:
            return error(422, 42201, "Invalid schema")
        try:
            subject = our_subject(name)
        except SchemaError:
            return error(404, 40401, "Subject not found")
        problems: list[str] = []
        for known in catalogue()[subject]:  # FULL_TRANSITIVE: both ways, every version
            problems += reader_can_read(source, known.source)
            problems += reader_can_read(known.source, source)
        return ok({"is_compatible": not problems, **({"messages": problems} if problems else {})})

    async def config(request: Request) -> Response:
        return ok({"compatibilityLevel": COMPATIBILITY})

    app = Starlette(
        routes=[
            Route("/subjects", subjects, methods=["GET"]),
            Route("/subjects/{subject}/versions", versions, methods=["GET"]),
            Route("/subjects/{subject}/versions", register, methods=["POST"]),
            Route("/subjects/{subject}/versions/{version}", version, methods=["GET"]),
            Route("/schemas/ids/{schema_id}", by_id, methods=["GET"]),
            Route("/schemas/ids/{schema_id}/versions", id_versions, methods=["GET"]),
            Route(
                "/compatibility/subjects/{subject}/versions/{version}",
                compatibility,
                methods=["POST"],
            ),
            Route("/config", config, methods=["GET"]),
            Route("/config/{subject}", config, methods=["GET"]),
        ]
    )
    if basic_auth is None:
        return app
    expected = "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                await error(401, 40101, "Unauthorized")(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded  # type: ignore[return-value]
