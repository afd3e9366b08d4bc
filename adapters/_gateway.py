"""The HTTP ingestion gateway: agencies without a Kafka client submit concerns over HTTPS.

Built on Starlette and served by uvicorn (``serve_gateway``). Endpoints
(docs/gateway.md; the OpenAPI document is served at ``/v1/openapi.json``):

- ``POST /v1/concerns``: one concern, as police JSON (``application/json``) or
  a FHIR R4 Bundle (``application/fhir+json``) → ``202`` with ``concern_id``
  and a status URL;
- ``GET /v1/concerns/{concern_id}``: the tracking status (as ``safer track``);
- ``POST /v1/concerns:batch``: JSON Lines (``application/x-ndjson``) or CSV
  (``text/csv``) → ``200`` with a result per record; good records go in, bad
  ones say why;
- ``GET /v1/openapi.json``.

Every request but the OpenAPI document needs ``Authorization: Bearer <token>``
(``CredentialStore``). A submission is signed with the key of the publisher
the credential acts for, and an audit record (event OTHER, reason code
``GATEWAY_SUBMITTED``) names the credential, the concern and the SHA-256 of
the body; it is written before the concern (audit first).

Idempotency: (agency, ``source_ref``) names one concern. A record without a
``concern_id`` gets the one already given to that reference, or a derived one
(``concern_id_for``); the same content again answers with the same id and
publishes nothing new that the router would not deduplicate; different
content under a used reference is refused (409, ``IDEMPOTENCY_CONFLICT``).

Limits: a body size limit (413, ``TOO_LARGE``) and a token bucket per agency
(429, ``RATE_LIMITED``, with ``Retry-After``). Errors are RFC 9457
``application/problem+json`` with a ``reason_code`` member.

The access log (structlog, ``gateway.request``) carries the method, the route
template, the status, the duration, the agency and the credential id, and
never a query string, a header value or a body: personal data stays out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import socket
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from audit import AuditRecord, entry_id_for
from broker import (
    OutRecord,
    SigningIdentity,
    Topics,
    pseudonym,
    send_all,
    signed_record,
)
from schemas import AUDIT_BATCH, AuditEvent, Codec, ConcernModel, ReasonCode, SaferError

from ._client_certs import (
    CertificateH11Protocol,
    certificate_fingerprint,
    client_certificate_der,
)
from ._credentials import Credential, CredentialStore, GatewayReason, GatewayRefusal
from ._csv import parse_police_csv
from ._fhir import FHIR_UNMAPPABLE, FhirRefusal, bundle_to_concern
from ._police import ACCEPTED, ParsedRecord, PoliceAdapter, concern_id_for, validate_record

__all__ = [
    "GATEWAY_SUBMITTED",
    "Gateway",
    "GatewayLimits",
    "IdempotencyStore",
    "Submission",
    "gateway_app",
    "listen",
    "openapi_document",
    "serve_asgi",
    "serve_gateway",
]

#: The reason code of the audit record of each accepted submission.
GATEWAY_SUBMITTED = "GATEWAY_SUBMITTED"
#: Audit records per signed AuditBatch (as the router's chunks).
AUDIT_CHUNK = 200
PROBLEM_JSON = "application/problem+json"
_log = structlog.get_logger("safer.gateway")

#: Maps a FHIR R4 Bundle (parsed JSON) to a police-JSON-shaped dict for an agency,
#: or raises ``FhirRefusal`` naming the FHIR path (default: ``bundle_to_concern``).
FhirMapper = Callable[[Any, str], dict[str, Any]]
#: The tracking rows of a concern (as ``safer track --json``), or [] if not routed yet.
StatusSource = Callable[[str], list[dict[str, Any]]]


@dataclass(frozen=True)
class GatewayLimits:
    """Body size, batch size and the per-agency rate (a token bucket)."""

    max_body_bytes: int = 1024 * 1024
    max_batch_records: int = 1000
    #: Records per minute per agency (a batch costs one per record) and the burst.
    rate_per_minute: float = 600.0
    burst: int = 100
    #: Wrong secrets for real credential ids, per client address (each costs an
    #: Argon2 verification): past these, 429 before any verification.
    auth_failures_per_minute: float = 30.0
    auth_failure_burst: int = 10


@dataclass
class _Bucket:
    tokens: float
    at: float


class _RateLimiter:
    def __init__(self, limits: GatewayLimits, clock: Callable[[], float]) -> None:
        self._limits = limits
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def exhausted(self, key: str) -> int | None:
        """Seconds until ``key`` has a token again, or None if it has one now."""
        now = self._clock()
        rate = self._limits.rate_per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        tokens = min(float(self._limits.burst), bucket.tokens + (now - bucket.at) * rate)
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) / rate)) if rate > 0 else 60

    def take(self, agency: str, cost: int) -> None:
        now = self._clock()
        rate = self._limits.rate_per_minute / 60.0
        burst = float(self._limits.burst)
        bucket = self._buckets.setdefault(agency, _Bucket(burst, now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if cost > burst:
            raise GatewayRefusal(
                429,
                GatewayReason.RATE_LIMITED,
                f"{cost} records is more than the burst of {int(burst)}; split the batch",
                retry_after=1,
            )
        if bucket.tokens < cost:
            wait = math.ceil((cost - bucket.tokens) / rate) if rate > 0 else 60
            raise GatewayRefusal(
                429,
                GatewayReason.RATE_LIMITED,
                f"rate limit of {self._limits.rate_per_minute:g} records a minute reached",
                retry_after=max(1, wait),
            )
        bucket.tokens -= cost


class IdempotencyStore:
    """(agency, source_ref) → (concern_id, content hash), in SQLite (WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS submissions (agency TEXT NOT NULL,"
            " source_ref TEXT NOT NULL, concern_id TEXT NOT NULL, content_sha256 TEXT NOT NULL,"
            " credential TEXT NOT NULL, accepted_at TEXT NOT NULL,"
            " PRIMARY KEY (agency, source_ref))"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS by_concern ON submissions (concern_id, agency)"
        )
        self._lock = threading.Lock()

    def lookup(self, agency: str, source_ref: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT concern_id, content_sha256 FROM submissions"
                " WHERE agency = ? AND source_ref = ?",
                (agency, source_ref),
            ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def owner(self, concern_id: str, agency: str) -> dict[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT source_ref, accepted_at FROM submissions"
                " WHERE concern_id = ? AND agency = ?",
                (concern_id, agency),
            ).fetchone()
        return {"source_ref": str(row[0]), "accepted_at": str(row[1])} if row else None

    def concern_taken(self, concern_id: str, agency: str, source_ref: str) -> bool:
        """Whether ``concern_id`` already names another reference's concern."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM submissions WHERE concern_id = ?"
                " AND NOT (agency = ? AND source_ref = ?)",
                (concern_id, agency, source_ref),
            ).fetchone()
        return row is not None

    def remember(
        self, agency: str, source_ref: str, concern_id: str, content: str, credential: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO submissions VALUES (?,?,?,?,?,?)",
                (
                    agency,
                    source_ref,
                    concern_id,
                    content,
                    credential,
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ),
            )

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class Submission:
    """The result for one record: ACCEPTED (new or a repeat) or a reason code."""

    record: int
    status: str
    concern_id: str | None = None
    detail: str = ""
    repeat: bool = False

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"record": self.record, "status": self.status}
        if self.concern_id:
            doc["concern_id"] = self.concern_id
            if self.status == ACCEPTED:
                doc["status_url"] = f"/v1/concerns/{self.concern_id}"
        if self.detail:
            doc["detail"] = self.detail
        if self.repeat:
            doc["repeat"] = True
        return doc


_HTTP_STATUS: dict[str, int] = {
    ReasonCode.DECODE_ERROR.value: 400,
    ReasonCode.TOO_LARGE.value: 413,
    ReasonCode.LIMIT_EXCEEDED.value: 413,
    GatewayReason.IDEMPOTENCY_CONFLICT.value: 409,
    ReasonCode.UNKNOWN_PUBLISHER.value: 403,
}


def _content_hash(concern: ConcernModel) -> str:
    """What must match for a repeat: the whole concern but its id."""
    body = concern.model_dump(mode="json", exclude={"concern_id"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class Gateway:
    """The gateway's state and its publishing; ``gateway_app`` serves it over HTTP."""

    codec: Codec
    topics: Topics
    credentials: CredentialStore
    idempotency: IdempotencyStore
    adapters: Mapping[str, PoliceAdapter]  # publisher id → its adapter (its signing key)
    audit_identity: SigningIdentity
    pseudonym_secret: bytes
    #: Who writes the audit records (the router's principal in secure mode) and, per
    #: publisher id, who writes its concerns (that publisher's principal).
    audit_producer: AIOKafkaProducer | None = None
    producers: Mapping[str, AIOKafkaProducer] = field(default_factory=dict)
    limits: GatewayLimits = field(default_factory=GatewayLimits)
    status_source: StatusSource | None = None
    fhir_mapper: FhirMapper | None = bundle_to_concern
    on_published: Callable[[list[tuple[str, str]]], None] | None = None
    clock: Callable[[], float] = time.monotonic
    _publish_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.rate = _RateLimiter(self.limits, self.clock)
        self.auth_failures = _RateLimiter(
            GatewayLimits(
                rate_per_minute=self.limits.auth_failures_per_minute,
                burst=self.limits.auth_failure_burst,
            ),
            self.clock,
        )

    def authenticate(self, request: Request) -> Credential:
        """A verified client certificate if one was presented, else the bearer token."""
        der = client_certificate_der(request.scope)
        if der is not None:
            credential = self.credentials.authenticate_certificate(certificate_fingerprint(der))
        else:
            address = request.client.host if request.client else "-"
            wait = self.auth_failures.exhausted(address)
            if wait is not None:
                raise GatewayRefusal(
                    429,
                    GatewayReason.RATE_LIMITED,
                    "too many wrong secrets from this address; wait and check the token",
                    retry_after=wait,
                )
            try:
                credential = self.credentials.authenticate(request.headers.get("authorization"))
            except GatewayRefusal as exc:
                if exc.wrong_secret:
                    with contextlib.suppress(GatewayRefusal):
                        self.auth_failures.take(address, 1)
                raise
        if credential.agency not in self.adapters:
            raise GatewayRefusal(
                403,
                GatewayReason.PUBLISHER_UNKNOWN,
                f"credential {credential.id} acts for a publisher this gateway does not "
                "know; ask your SAFER operator",
            )
        return credential

    # -- validation ----------------------------------------------------------------------

    def resolve(
        self, item: Any, *, index: int, credential: Credential, label: str
    ) -> tuple[ParsedRecord, str | None]:
        """Validate one record for ``credential``'s agency; (parsed, content hash).

        Fills in ``concern_id`` (idempotency) when the record has none, and
        refuses a conflict with what was accepted under the same reference.
        """
        agency = credential.agency
        if isinstance(item, dict) and "concern_id" not in item:
            ref = item.get("source_ref")
            if isinstance(ref, str) and ref.strip():
                known = self.idempotency.lookup(agency, ref.strip())
                item = {
                    **item,
                    "concern_id": known[0] if known else concern_id_for(agency, ref),
                }
        parsed = validate_record(item, label=label, publisher_id=agency)
        if parsed.concern is None:
            return parsed, None
        concern = parsed.concern
        content = _content_hash(concern)
        known = self.idempotency.lookup(agency, concern.source_ref)
        if known is not None and (known[0] != concern.concern_id or known[1] != content):
            what = "another concern_id" if known[0] != concern.concern_id else "other content"
            return (
                ParsedRecord(
                    label,
                    None,
                    known[0],
                    GatewayReason.IDEMPOTENCY_CONFLICT.value,
                    f"source_ref was already used for {what} (concern {known[0]}); "
                    "send a new source_ref, or the same content to retry",
                ),
                None,
            )
        if known is None and self.idempotency.concern_taken(
            concern.concern_id, agency, concern.source_ref
        ):
            return (
                ParsedRecord(
                    label,
                    None,
                    concern.concern_id,
                    ReasonCode.CONCERN_ID_CONFLICT.value,
                    "concern_id already names a concern with another source_ref",
                ),
                None,
            )
        return parsed, content

    # -- publishing ----------------------------------------------------------------------

    async def publish(
        self,
        credential: Credential,
        accepted: Sequence[tuple[ConcernModel, str]],
        *,
        input_sha256: str,
        media: str,
    ) -> None:
        """Audit, then publish, then remember: a crash between leaves a retry safe."""
        if not accepted:
            return
        producer = self.producers.get(credential.agency)
        if self.audit_producer is None or producer is None:
            raise SaferError(
                "the gateway has no Kafka producer",
                code=ReasonCode.BROKER_UNAVAILABLE,
                retriable=True,
            )
        adapter = self.adapters[credential.agency]
        now = datetime.now(UTC)
        audits = [
            AuditRecord(
                seq=None,
                entry_id=entry_id_for(
                    AuditEvent.OTHER, f"{GATEWAY_SUBMITTED}:{concern.concern_id}:{content}"
                ),
                event=AuditEvent.OTHER,
                concern_id=concern.concern_id,
                subject_pseudonyms=tuple(
                    pseudonym(self.pseudonym_secret, s.identifiers()[0]) for s in concern.children()
                ),
                source=credential.agency,
                reason_codes=(GATEWAY_SUBMITTED,),
                reasons=(f"submitted through the HTTP gateway as {media}",),
                at=now,
                actor="safer-gateway",
                credential=credential.audit_name,
                input_sha256=input_sha256,
            )
            for concern, content in accepted
        ]
        records: list[OutRecord] = [
            signed_record(
                self.codec,
                self.audit_identity,
                AUDIT_BATCH,
                {"records": [a.to_avro() for a in audits[i : i + AUDIT_CHUNK]]},
                topic=self.topics.audit,
                key=None,
                record_id="",
                id_header=None,
            )
            for i in range(0, len(audits), AUDIT_CHUNK)
        ]
        await send_all(self.audit_producer, records)  # audit first
        await send_all(producer, [adapter.prepare(c) for c, _ in accepted])
        for concern, content in accepted:
            self.idempotency.remember(
                credential.agency, concern.source_ref, concern.concern_id, content, credential.id
            )
        if self.on_published is not None:
            self.on_published([(c.concern_id, c.source_ref) for c, _ in accepted])

    async def submit(
        self,
        credential: Credential,
        items: Sequence[tuple[int, Any] | ParsedRecord],
        *,
        body: bytes,
        media: str,
    ) -> list[Submission]:
        """Validate each record, publish the good ones, and report on every one.

        One submission at a time: the idempotency check and the publication are
        atomic together, so two concurrent requests under one ``source_ref``
        cannot both pass the check with different content.
        """
        async with self._publish_lock:
            return await self._submit(credential, items, body=body, media=media)

    async def _submit(
        self,
        credential: Credential,
        items: Sequence[tuple[int, Any] | ParsedRecord],
        *,
        body: bytes,
        media: str,
    ) -> list[Submission]:
        results: list[Submission] = []
        fresh: list[tuple[ConcernModel, str]] = []
        seen: dict[str, str] = {}
        for entry in items:
            if isinstance(entry, ParsedRecord):
                last = entry.label.rsplit(" ", 1)[-1]
                number = int(last) if last.isdigit() else 0
                if entry.concern is None:
                    results.append(Submission(number, entry.status, entry.concern_id, entry.detail))
                    continue
                item: Any = entry.concern.model_dump(mode="json")
                if entry.concern.concern_id == concern_id_for(
                    credential.agency, entry.concern.source_ref
                ):
                    item.pop("concern_id")  # derived by the CSV reader: resolve it here
            else:
                number, item = entry
            parsed, content = self.resolve(
                item, index=number, credential=credential, label=f"record {number}"
            )
            concern = parsed.concern
            if concern is None or content is None:
                results.append(Submission(number, parsed.status, parsed.concern_id, parsed.detail))
                continue
            repeat = self.idempotency.lookup(credential.agency, concern.source_ref) is not None
            if concern.source_ref in seen:
                if seen[concern.source_ref] != content:
                    results.append(
                        Submission(
                            number,
                            GatewayReason.IDEMPOTENCY_CONFLICT.value,
                            concern.concern_id,
                            "source_ref appears twice in this batch with different content",
                        )
                    )
                    continue
                repeat = True
            else:
                seen[concern.source_ref] = content
                if not repeat:
                    fresh.append((concern, content))
            results.append(Submission(number, ACCEPTED, concern.concern_id, repeat=repeat))
        await self.publish(
            credential, fresh, input_sha256=hashlib.sha256(body).hexdigest(), media=media
        )
        return results


# --------------------------------------------------------------------------- HTTP


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    retry_after: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem document with our reason code."""
    doc: dict[str, Any] = {
        "type": f"urn:safer-exchange:reason:{code}",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "reason_code": code,
    }
    if extra:
        doc.update(extra)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(doc, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayRefusal(413, ReasonCode.TOO_LARGE, f"the body is over {limit} bytes; split it")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayRefusal(
                413, ReasonCode.TOO_LARGE, f"the body is over {limit} bytes; split it"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        where = (
            f" (line {exc.lineno}, column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise GatewayRefusal(
            400, ReasonCode.DECODE_ERROR, f"the body is not UTF-8 JSON{where}"
        ) from None


def gateway_app(gateway: Gateway) -> Starlette:
    """The Starlette application."""

    async def post_concern(request: Request) -> Response:
        credential = gateway.authenticate(request)
        media = _media(request)
        if media not in ("application/json", "application/fhir+json"):
            raise GatewayRefusal(
                415,
                GatewayReason.UNSUPPORTED_MEDIA_TYPE,
                "send application/json (police JSON) or application/fhir+json (a FHIR R4 "
                "Bundle); batches go to /v1/concerns:batch",
            )
        body = await _body(request, gateway.limits.max_body_bytes)
        document = _json(body)
        if media == "application/fhir+json":
            if gateway.fhir_mapper is None:
                raise GatewayRefusal(
                    415, GatewayReason.UNSUPPORTED_MEDIA_TYPE, "this gateway takes no FHIR"
                )
            try:
                document = gateway.fhir_mapper(document, credential.agency)
            except FhirRefusal as exc:
                return problem(
                    422, exc.code, f"{exc.path}: {exc.detail}", extra={"fhir_path": exc.path}
                )
            except (RecursionError, ValueError, TypeError, KeyError, AttributeError) as exc:
                # Valid R4 that the mapper still cannot read: refuse it, never a 500.
                return problem(
                    422,
                    FHIR_UNMAPPABLE,
                    f"Bundle: cannot be mapped ({type(exc).__name__})",
                    extra={"fhir_path": "Bundle"},
                )
        if not isinstance(document, dict):
            raise GatewayRefusal(422, ReasonCode.SCHEMA_INVALID, "the body must be one JSON object")
        gateway.rate.take(credential.agency, 1)
        (result,) = await gateway.submit(credential, [(1, document)], body=body, media=media)
        if result.status != ACCEPTED:
            status = _HTTP_STATUS.get(result.status, 422)
            extra = {"concern_id": result.concern_id} if result.concern_id else None
            return problem(status, result.status, result.detail, extra=extra)
        location = f"/v1/concerns/{result.concern_id}"
        return JSONResponse(
            {
                "concern_id": result.concern_id,
                "status": "ACCEPTED",
                "status_url": location,
                "repeat": result.repeat,
            },
            status_code=202,
            headers={"Location": location},
        )

    async def post_batch(request: Request) -> Response:
        credential = gateway.authenticate(request)
        media = _media(request)
        if media not in ("application/x-ndjson", "application/jsonl", "text/csv"):
            raise GatewayRefusal(
                415,
                GatewayReason.UNSUPPORTED_MEDIA_TYPE,
                "send JSON Lines (application/x-ndjson) or CSV (text/csv; docs/csv-format.md)",
            )
        body = await _body(request, gateway.limits.max_body_bytes)
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise GatewayRefusal(400, ReasonCode.DECODE_ERROR, "the body is not UTF-8") from None
        items: list[tuple[int, Any] | ParsedRecord] = []
        if media == "text/csv":
            rows = parse_police_csv(text, source="body", publisher_id=credential.agency)
            if len(rows) == 1 and rows[0].label == "body":
                raise GatewayRefusal(400, rows[0].status, rows[0].detail)
            items.extend(rows)
        else:
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    items.append((number, json.loads(line)))
                except (json.JSONDecodeError, RecursionError):
                    items.append(
                        ParsedRecord(
                            f"line {number}",
                            None,
                            None,
                            ReasonCode.DECODE_ERROR.value,
                            "not a JSON object on this line",
                        )
                    )
        if len(items) > gateway.limits.max_batch_records:
            raise GatewayRefusal(
                413,
                ReasonCode.TOO_LARGE,
                f"{len(items)} records; at most {gateway.limits.max_batch_records} a batch",
            )
        if not items:
            raise GatewayRefusal(400, ReasonCode.DECODE_ERROR, "the batch holds no record")
        gateway.rate.take(credential.agency, len(items))
        results = await gateway.submit(credential, items, body=body, media=media)
        accepted = sum(r.status == ACCEPTED for r in results)
        return JSONResponse(
            {
                "accepted": accepted,
                "refused": len(results) - accepted,
                "results": [r.to_json() for r in results],
            }
        )

    async def get_concern(request: Request) -> Response:
        credential = gateway.authenticate(request)
        raw = request.path_params["concern_id"]
        try:
            concern_id = str(uuid.UUID(raw))
        except ValueError:
            raise GatewayRefusal(
                404, GatewayReason.NOT_FOUND, "no concern of yours has that id"
            ) from None
        owned = gateway.idempotency.owner(concern_id, credential.agency)
        if owned is None:
            raise GatewayRefusal(404, GatewayReason.NOT_FOUND, "no concern of yours has that id")
        rows = (
            await asyncio.to_thread(gateway.status_source, concern_id)
            if (gateway.status_source)
            else []
        )
        return JSONResponse(
            {
                "concern_id": concern_id,
                "source_ref": owned["source_ref"],
                "accepted_at": owned["accepted_at"],
                "state": "ROUTED" if rows else "PENDING",
                "recipients": rows,
            }
        )

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayRefusal)
        return problem(exc.status, exc.code, exc.detail, retry_after=exc.retry_after)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = (
            GatewayReason.METHOD_NOT_ALLOWED if exc.status_code == 405 else GatewayReason.NOT_FOUND
        )
        return problem(exc.status_code, code.value, "see /v1/openapi.json for the endpoints")

    async def safer_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SaferError)
        status = 503 if exc.retriable else 500
        _log.error("gateway.error", reason_code=exc.code.value, error=type(exc).__name__)
        return problem(
            status,
            exc.code.value,
            "the exchange could not take the concern now; retry later"
            if exc.retriable
            else "internal error; the operator has the log",
            retry_after=5 if exc.retriable else None,
        )

    app = Starlette(
        routes=[
            Route("/v1/concerns", post_concern, methods=["POST"]),
            Route("/v1/concerns:batch", post_batch, methods=["POST"]),
            Route("/v1/concerns/{concern_id}", get_concern, methods=["GET"]),
            Route("/v1/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={
            GatewayRefusal: refused,
            HTTPException: http_error,
            SaferError: safer_error,
        },
    )
    return _AccessLog(app, gateway)  # type: ignore[return-value]


class _AccessLog:
    """ASGI middleware: one structlog line per request, free of personal data."""

    def __init__(self, app: Starlette, gateway: Gateway) -> None:
        self.app = app
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = uuid.uuid4().hex

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _log.info(
                "gateway.request",
                request_id=request_id,
                method=scope.get("method"),
                route=_route(str(scope.get("path", ""))),
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
                credential=_credential_id(scope),
            )


def _route(path: str) -> str:
    """The route template a path matched, never the path itself (it could carry anything)."""
    if path in ("/v1/concerns", "/v1/concerns:batch", "/v1/openapi.json"):
        return path
    if path.startswith("/v1/concerns/"):
        return "/v1/concerns/{concern_id}"
    return "(other)"


def _credential_id(scope: Mapping[str, Any]) -> str | None:
    """The credential id claimed in the Authorization header (its id part only)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            token = value.decode("latin-1").rpartition(" ")[2]
            parts = token.split("_")
            if len(parts) >= 3 and parts[0] == "sfx" and len(parts[1]) == 12:
                ident = parts[1]
                return ident if all(c in "0123456789abcdef" for c in ident) else None
    return None


# --------------------------------------------------------------------------- OpenAPI


def _problem_ref() -> dict[str, Any]:
    return {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the gateway (served at /v1/openapi.json)."""
    errors = {
        str(code): {"description": text, "content": _problem_ref()}
        for code, text in (
            (400, "not decodable (DECODE_ERROR)"),
            (401, "no or unknown credential (AUTH_REQUIRED, CREDENTIAL_UNKNOWN)"),
            (403, "revoked credential or wrong publisher (CREDENTIAL_REVOKED, ...)"),
            (409, "source_ref already used with other content (IDEMPOTENCY_CONFLICT)"),
            (413, "body or batch too large (TOO_LARGE)"),
            (415, "unsupported media type (UNSUPPORTED_MEDIA_TYPE)"),
            (422, "not a valid concern (SCHEMA_INVALID, MINIMUM_DATASET_MISSING, ...)"),
            (429, "rate limit (RATE_LIMITED); see Retry-After"),
            (503, "the exchange cannot take it now (BROKER_UNAVAILABLE); retry later"),
        )
    }
    any_object = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SAFER Exchange ingestion gateway",
            "version": "1",
            "description": "Submit safeguarding concerns (docs/gateway.md). Errors are RFC "
            "9457 problem+json with a reason_code.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"agency": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "reason_code"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "reason_code": {"type": "string"},
                        "concern_id": {"type": "string"},
                        "fhir_path": {"type": "string"},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "required": ["concern_id", "status", "status_url"],
                    "properties": {
                        "concern_id": {"type": "string", "format": "uuid"},
                        "status": {"const": "ACCEPTED"},
                        "status_url": {"type": "string"},
                        "repeat": {"type": "boolean"},
                    },
                },
                "BatchResult": {
                    "type": "object",
                    "required": ["accepted", "refused", "results"],
                    "properties": {
                        "accepted": {"type": "integer"},
                        "refused": {"type": "integer"},
                        "results": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["record", "status"],
                                "properties": {
                                    "record": {"type": "integer"},
                                    "status": {"type": "string"},
                                    "concern_id": {"type": "string"},
                                    "status_url": {"type": "string"},
                                    "detail": {"type": "string"},
                                    "repeat": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["concern_id", "state", "recipients"],
                    "properties": {
                        "concern_id": {"type": "string"},
                        "source_ref": {"type": "string"},
                        "accepted_at": {"type": "string"},
                        "state": {"enum": ["PENDING", "ROUTED"]},
                        "recipients": {"type": "array", "items": any_object},
                    },
                },
            },
        },
        "security": [{"agency": []}],
        "paths": {
            "/v1/concerns": {
                "post": {
                    "operationId": "submitConcern",
                    "summary": "Submit one concern (police JSON, or a FHIR R4 Bundle)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": any_object},
                            "application/fhir+json": {"schema": any_object},
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "accepted; follow status_url",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Accepted"}
                                }
                            },
                        },
                        **errors,
                    },
                }
            },
            "/v1/concerns:batch": {
                "post": {
                    "operationId": "submitBatch",
                    "summary": "Submit JSON Lines or CSV; a result per record",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "every record's result (partial acceptance)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/BatchResult"}
                                }
                            },
                        },
                        **errors,
                    },
                }
            },
            "/v1/concerns/{concern_id}": {
                "get": {
                    "operationId": "concernStatus",
                    "summary": "Where each recipient is with a concern you submitted",
                    "parameters": [
                        {
                            "name": "concern_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the tracking status (as `safer track`)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Status"}
                                }
                            },
                        },
                        "401": errors["401"],
                        "403": errors["403"],
                        "404": {
                            "description": "not yours, or no such concern",
                            "content": _problem_ref(),
                        },
                        "429": errors["429"],
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
    }


# --------------------------------------------------------------------------- serving


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the caller's ``stop`` event rules."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.up.set()


async def serve_gateway(
    gateway: Gateway,
    stop: asyncio.Event,
    sock: socket.socket,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    client_ca: str | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (uvicorn; its own access log off: ours has no PID).

    With TLS and ``client_ca`` (the project CA), clients may present a
    certificate from that CA instead of a token (verified in the handshake).
    """
    await serve_asgi(
        gateway_app(gateway),
        stop,
        sock,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        client_ca=client_ca,
        ready=ready,
    )


async def serve_asgi(
    app: Any,
    stop: asyncio.Event,
    sock: socket.socket,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    client_ca: str | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve an ASGI app with uvicorn on ``sock`` until ``stop`` is set (no access log)."""
    mutual: dict[str, Any] = {}
    if client_ca and ssl_certfile:
        mutual = {
            "ssl_ca_certs": client_ca,
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
            "http": CertificateH11Protocol,
        }
    config = uvicorn.Config(
        app,
        **mutual,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)

    async def stopper() -> None:
        await stop.wait()
        server.should_exit = True

    watch = asyncio.create_task(stopper())
    try:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        up = asyncio.create_task(server.up.wait())
        await asyncio.wait([serving, up], return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        if ready is not None and server.started:
            ready()
        await serving
    finally:
        watch.cancel()
