"""The Confluent Schema Registry REST subset, served from the embedded registry.

`safer registry` runs it so that third-party tools (confluent-kafka's
``AvroDeserializer``, kcat, Kafka UI) decode our topics. It lives in the app
shell, not in ``schemas``: serving HTTP is I/O at the edge (DESIGN §3); the
subject naming it shares with the client is ``schemas._confluent``'s.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from schemas import (
    COMPATIBILITY,
    EmbeddedRegistry,
    SchemaError,
    catalogue,
    confluent_subject,
    content_schema_id,
    our_subject,
    reader_can_read,
)

__all__ = ["registry_app"]

_SCHEMA_JSON = "application/vnd.schemaregistry.v1+json"


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
