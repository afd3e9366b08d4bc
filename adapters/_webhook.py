"""Webhook delivery: POST each decrypted disclosure to the recipient agency's HTTPS endpoint.

An alternative to an agency reading Kafka itself: the recipient adapter, having
verified and decrypted a disclosure, hands it to a ``WebhookSender``, which
POSTs it and reports a ``DeliveryResult``. Only the endpoint's 2xx counts as
delivered; that is what becomes the RECEIVED receipt.

Signing (in the style of Stripe and Slack webhooks). Every request carries::

    X-Safer-Disclosure-Id: <disclosure_id>
    X-Safer-Timestamp:     <unix seconds>
    X-Safer-Signature:     v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

The receiver checks them with ``verify_webhook`` (this module has no
dependency a partner would not have: copy the function if you like). The
timestamp bounds replay; the body names the disclosure id again, and
``verify_webhook`` insists the header agrees, so the dedup key is signed too.

Retries. Connection failures, timeouts, 408, 429 and 5xx are retried with
exponential backoff and full jitter (delay = U(0, min(cap, base * 2**n))),
honouring a ``Retry-After`` in seconds, until ``max_attempts`` or
``max_elapsed``. Any other status (a 3xx: we never follow redirects; a 4xx) is
permanent: the result says REJECTED with a reason code and nothing is retried.
A disclosure may therefore arrive more than once (a response lost to a
timeout); the receiver must deduplicate on ``X-Safer-Disclosure-Id`` and
answer 2xx to a duplicate.

The HTTP client is httpx (a maintained client; it replaced a hand-written
HTTP/1.1 client): one short-lived ``AsyncClient`` per attempt, so each attempt
is one connection (``Connection: close``) with no pooled state to go stale
between retries; redirects are never followed; proxies and certificates from
the environment are ignored (``trust_env=False``: the endpoint and its trust
are configuration, not ambient state); TLS through the given ``ssl`` context.
Every attempt is bounded by one overall ``asyncio.timeout`` besides httpx's
own per-phase timeouts, and only the response's status line and headers are
read (the body is streamed and dropped unread).

Nothing personal is logged: log lines carry the disclosure id, attempt number,
HTTP status and exception *type*, never the URL, body, or response.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from schemas import ConfigError, ReasonCode, SignatureError, ValidationError

from ._fhir import DISCLOSURE_ID_SYSTEM, disclosure_to_communication
from ._metrics import WEBHOOK_DELIVERIES, WEBHOOK_RETRIES

__all__ = [
    "HEADER_DISCLOSURE_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "WEBHOOK_METADATA_FIELDS",
    "Attempt",
    "DeliveryOutcome",
    "DeliveryReason",
    "DeliveryResult",
    "RetryPolicy",
    "WebhookSender",
    "fhir_webhook_body",
    "sign_webhook",
    "verify_webhook",
    "webhook_body",
]

HEADER_DISCLOSURE_ID = "X-Safer-Disclosure-Id"
HEADER_TIMESTAMP = "X-Safer-Timestamp"
HEADER_SIGNATURE = "X-Safer-Signature"
HEADER_ATTEMPT = "X-Safer-Attempt"

#: Disclosure metadata copied into the body (all of it free of personal data);
#: the encrypted envelope and inbox bookkeeping are left out.
WEBHOOK_METADATA_FIELDS = (
    "disclosure_id",
    "concern_id",
    "recipient_id",
    "source_agency",
    "lscp",
    "kind",
    "decision_id",
    "lawful_basis",
    "purpose",
    "profile",
    "policy_revision",
    "reason_codes",
    "concern_type",
    "risk_grade",
    "deadline",
    "decided_at",
    "payload_sha256",
)

_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_MIN_SECRET = 16
_MAX_HEADERS = 100
_RETRIABLE_STATUS = frozenset({408, 429})
_USER_AGENT = "safer-exchange-webhook/1"

_log = structlog.get_logger("safer.webhook")


class DeliveryOutcome(StrEnum):
    DELIVERED = "DELIVERED"  # the endpoint answered 2xx
    REJECTED = "REJECTED"  # permanent: retrying cannot help, a person must act
    GAVE_UP = "GAVE_UP"  # retriable failures outlasted max_attempts or max_elapsed


class DeliveryReason(StrEnum):
    """Why a webhook delivery did not succeed. Stable strings; never rename one."""

    WEBHOOK_REJECTED = "WEBHOOK_REJECTED"  # a 3xx or a 4xx other than 408/429
    WEBHOOK_TLS_FAILED = "WEBHOOK_TLS_FAILED"  # the endpoint's certificate did not verify
    WEBHOOK_UNAVAILABLE = "WEBHOOK_UNAVAILABLE"  # refused, reset, timed out, 408/429/5xx


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Delays are in seconds.

    ``timeout`` bounds one attempt (connect, TLS, send, and the response
    headers); ``max_elapsed`` bounds the whole delivery: no sleep starts that
    would end after it.
    """

    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_elapsed: float = 600.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("webhook max_attempts must be at least 1")
        if not 0 < self.base_delay <= self.max_delay:
            raise ConfigError("webhook delays need 0 < base_delay <= max_delay")
        if self.max_elapsed < 0 or self.timeout <= 0:
            raise ConfigError("webhook max_elapsed must be >= 0 and timeout > 0")

    def backoff_cap(self, failures: int) -> float:
        """The upper bound of the delay after the ``failures``-th failure (1-based)."""
        return min(self.max_delay, self.base_delay * float(2 ** (failures - 1)))


@dataclass(frozen=True)
class Attempt:
    """One POST: its HTTP status or the exception type, and the sleep that followed."""

    number: int
    status: int | None
    error: str | None
    delay: float | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one disclosure's webhook delivery.

    DELIVERED: ``delivered_at`` is when the 2xx arrived; send the RECEIVED
    receipt with it. REJECTED: permanent, ``reason_code`` says why; record it
    and tell a person. GAVE_UP: ``retriable`` (try again later; the receiver
    deduplicates). ``detail`` is safe to log and show.
    """

    disclosure_id: str
    outcome: DeliveryOutcome
    attempts: tuple[Attempt, ...]
    reason_code: DeliveryReason | None = None
    status: int | None = None
    detail: str = ""
    delivered_at: datetime | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome is DeliveryOutcome.DELIVERED

    @property
    def retriable(self) -> bool:
        return self.outcome is DeliveryOutcome.GAVE_UP


# --------------------------------------------------------------------------- signing


def sign_webhook(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Safer-Signature`` value: ``v1=`` + hex HMAC-SHA256 over ``f"{timestamp}.{body}"``."""
    mac = hmac.new(secret, f"{int(timestamp)}.".encode("ascii") + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify_webhook(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | float,
    tolerance: int = 300,
) -> None:
    """Check a received webhook; return None if it is genuine, else raise ``SignatureError``.

    Args:
        secret: the shared secret for this endpoint.
        headers: the request headers (any case).
        body: the raw request body, exactly as received (before any JSON parsing).
        now: the receiver's current time (aware datetime, or unix seconds).
        tolerance: how far, in seconds, the timestamp may be from ``now`` either way.

    Raises ``SignatureError`` with code ``SIGNATURE_INVALID`` (missing or
    malformed headers, wrong signature, header id not the body's id) or
    ``REPLAY`` (timestamp outside the tolerance). Deduplicate on
    ``X-Safer-Disclosure-Id`` only after this returns.
    """
    if not secret:
        raise SignatureError("no webhook secret configured")
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    disclosure_id = lower.get(HEADER_DISCLOSURE_ID.lower(), "").strip()
    stamp = lower.get(HEADER_TIMESTAMP.lower(), "").strip()
    signature = lower.get(HEADER_SIGNATURE.lower(), "").strip()
    missing = [
        name
        for name, value in (
            (HEADER_DISCLOSURE_ID, disclosure_id),
            (HEADER_TIMESTAMP, stamp),
            (HEADER_SIGNATURE, signature),
        )
        if not value
    ]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise SignatureError(f"{HEADER_TIMESTAMP} is not unix seconds")
    offered = [
        value.strip()
        for scheme, _, value in (part.strip().partition("=") for part in signature.split(","))
        if scheme == "v1"
    ]
    if not offered:
        raise SignatureError(f"{HEADER_SIGNATURE} has no v1 signature")
    expected = sign_webhook(secret, int(stamp), body).removeprefix("v1=")
    if not any(hmac.compare_digest(expected.encode(), v.lower().encode()) for v in offered):
        raise SignatureError("webhook signature does not match the body")
    current = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(current - int(stamp)) > tolerance:
        raise SignatureError(
            f"webhook timestamp is more than {tolerance} s from now",
            code=ReasonCode.REPLAY,
            hint="check both clocks; a replayed request is refused",
        )
    try:
        document = json.loads(body)
        if document.get("resourceType") == "Communication":  # a FHIR R4 body
            signed_id = next(
                i["value"]
                for i in document["identifier"]
                if i.get("system") == DISCLOSURE_ID_SYSTEM
            )
        else:
            signed_id = document["disclosure"]["disclosure_id"]
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
        raise SignatureError("signed body does not name its disclosure_id") from None
    if signed_id != disclosure_id:
        raise SignatureError(f"{HEADER_DISCLOSURE_ID} does not match the signed body")


# --------------------------------------------------------------------------- body


def webhook_body(disclosure: Mapping[str, Any], payload: Mapping[str, Any]) -> bytes:
    """The request body: the disclosure's clear metadata and its decrypted payload, as JSON.

    ``{"type": "safer.disclosure", "version": 1, "disclosure": {...}, "payload": {...}}``
    with keys sorted, no insignificant whitespace, UTF-8; datetimes as UTC
    ISO 8601 with milliseconds (``2026-03-02T08:30:00.000Z``). Only the fields
    in ``WEBHOOK_METADATA_FIELDS`` are copied from ``disclosure``.
    """
    disclosure_id = disclosure.get("disclosure_id")
    if not isinstance(disclosure_id, str) or not _ID.match(disclosure_id):
        raise ValidationError(
            "disclosure_id is missing or not a valid id", fields=("disclosure_id",)
        )
    document = {
        "type": "safer.disclosure",
        "version": 1,
        "disclosure": {k: disclosure[k] for k in WEBHOOK_METADATA_FIELDS if k in disclosure},
        "payload": dict(payload),
    }
    try:
        text = json.dumps(
            document,
            default=_json_value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"the disclosure holds a value JSON cannot carry ({type(exc).__name__})"
        ) from None
    return text.encode("utf-8")


def fhir_webhook_body(disclosure: Mapping[str, Any], payload: Mapping[str, Any]) -> bytes:
    """The request body for a recipient that takes FHIR: a FHIR R4 ``Communication``
    (``disclosure_to_communication``), keys sorted, compact, UTF-8."""
    disclosure_id = disclosure.get("disclosure_id")
    if not isinstance(disclosure_id, str) or not _ID.match(disclosure_id):
        raise ValidationError(
            "disclosure_id is missing or not a valid id", fields=("disclosure_id",)
        )
    metadata = {k: disclosure[k] for k in WEBHOOK_METADATA_FIELDS if k in disclosure}
    communication = disclosure_to_communication(metadata, payload)
    text = json.dumps(
        communication,
        default=_json_value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return text.encode("utf-8")


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise TypeError("naive datetime")
        utc = value.astimezone(UTC)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    raise TypeError(type(value).__name__)


# --------------------------------------------------------------------------- sender


@dataclass(frozen=True)
class _Endpoint:
    tls: bool
    host: str
    port: int
    target: str
    host_header: str


def _endpoint(url: str, *, allow_plain_http: bool) -> _Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("webhook URL must be https://host[:port]/path")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("webhook URL must not carry credentials; the HMAC secret authenticates")
    host = parts.hostname
    tls = parts.scheme == "https"
    if not tls and not (allow_plain_http or _is_loopback(host)):
        raise ConfigError(
            "webhook URL must use https (plain http is allowed only to a loopback address)",
            hint="use https://, or pass allow_plain_http=True for a private test network",
        )
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise ConfigError("webhook URL has an invalid port") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    default = 443 if tls else 80
    return _Endpoint(tls, host, port, target, shown if port == default else f"{shown}:{port}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookSender:
    """POSTs disclosures to one endpoint, signed, with retries. Safe to use concurrently.

    Args:
        url: the agency's endpoint (``https://``; ``http://`` only to loopback
            unless ``allow_plain_http``).
        secret: the HMAC key shared with the agency (at least 16 bytes).
        retry: attempts, backoff and timeouts.
        ssl_context: for https; default ``ssl.create_default_context()`` (system
            CAs, hostname checked, TLS 1.2 or later).
        recipient_id: named in log lines.
        body_format: ``safer-json`` (``webhook_body``) or ``fhir-r4`` (a FHIR R4
            Communication, ``fhir_webhook_body``), as the directory entry says.
        jitter, sleep, clock, now: injectable for tests: a uniform [0, 1)
            source, an async sleep, a monotonic clock in seconds, and the wall
            clock (for ``X-Safer-Timestamp`` and ``delivered_at``).
    """

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        retry: RetryPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        recipient_id: str = "",
        allow_plain_http: bool = False,
        body_format: str = "safer-json",
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if len(secret) < _MIN_SECRET:
            raise ConfigError(f"webhook secret must be at least {_MIN_SECRET} bytes")
        if body_format not in ("safer-json", "fhir-r4"):
            raise ConfigError("webhook body_format must be safer-json or fhir-r4")
        self._fhir = body_format == "fhir-r4"
        self._endpoint = _endpoint(url, allow_plain_http=allow_plain_http)
        self._url = url
        self._secret = bytes(secret)
        self.retry = retry or RetryPolicy()
        self._ssl: ssl.SSLContext | None = None
        if self._endpoint.tls:
            self._ssl = ssl_context or ssl.create_default_context()
        self._recipient = recipient_id
        self._jitter = jitter
        self._sleep = sleep
        self._clock = clock
        self._now = now

    async def send(
        self, disclosure: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> DeliveryResult:
        """Deliver one decrypted disclosure (its metadata and payload; see ``webhook_body``,
        or ``fhir_webhook_body`` for a recipient whose directory entry says fhir-r4)."""
        body = (fhir_webhook_body if self._fhir else webhook_body)(disclosure, payload)
        return await self.send_body(str(disclosure["disclosure_id"]), body)

    async def send_body(self, disclosure_id: str, body: bytes) -> DeliveryResult:
        """Deliver a prepared body; retries until 2xx, a permanent failure, or the limits."""
        if not _ID.match(disclosure_id):
            raise ValidationError("disclosure_id is not a valid id", fields=("disclosure_id",))
        policy = self.retry
        started = self._clock()
        attempts: list[Attempt] = []
        status: int | None = None
        detail = ""
        for number in range(1, policy.max_attempts + 1):
            retry_after: float | None = None
            error: str | None = None
            try:
                status, headers = await self._post(disclosure_id, body, number)
            except TimeoutError:
                status, error = None, f"timeout after {policy.timeout:g} s"
            except (OSError, httpx.TransportError) as exc:
                untrusted, name = _failure(exc)
                if untrusted:
                    attempts.append(Attempt(number, None, name))
                    return self._finish(
                        disclosure_id,
                        DeliveryOutcome.REJECTED,
                        attempts,
                        DeliveryReason.WEBHOOK_TLS_FAILED,
                        None,
                        "the endpoint's TLS certificate did not verify",
                    )
                if isinstance(exc, httpx.TimeoutException):
                    name = f"timeout after {policy.timeout:g} s"
                status, error = None, name
            else:
                if 200 <= status < 300:
                    attempts.append(Attempt(number, status, None))
                    return self._finish(
                        disclosure_id,
                        DeliveryOutcome.DELIVERED,
                        attempts,
                        None,
                        status,
                        f"HTTP {status}",
                        delivered_at=self._now(),
                    )
                if not (status >= 500 or status in _RETRIABLE_STATUS):
                    attempts.append(Attempt(number, status, None))
                    return self._finish(
                        disclosure_id,
                        DeliveryOutcome.REJECTED,
                        attempts,
                        DeliveryReason.WEBHOOK_REJECTED,
                        status,
                        f"HTTP {status}: permanent, not retried",
                    )
                retry_after = _retry_after(headers)
            detail = error or f"HTTP {status}"
            if number == policy.max_attempts:
                attempts.append(Attempt(number, status, error))
                break
            delay = self._jitter() * policy.backoff_cap(number)
            if retry_after is not None:
                delay = max(delay, min(retry_after, policy.max_delay))
            if self._clock() - started + delay > policy.max_elapsed:
                attempts.append(Attempt(number, status, error))
                break
            attempts.append(Attempt(number, status, error, delay))
            WEBHOOK_RETRIES.labels(self._recipient or "unnamed").inc()
            _log.info(
                "webhook.retry",
                disclosure_id=disclosure_id,
                recipient=self._recipient,
                attempt=number,
                status=status,
                error=error,
                delay=round(delay, 3),
            )
            await self._sleep(delay)
        return self._finish(
            disclosure_id,
            DeliveryOutcome.GAVE_UP,
            attempts,
            DeliveryReason.WEBHOOK_UNAVAILABLE,
            status,
            f"gave up after {len(attempts)} attempt(s); last: {detail}",
        )

    def _finish(
        self,
        disclosure_id: str,
        outcome: DeliveryOutcome,
        attempts: list[Attempt],
        reason: DeliveryReason | None,
        status: int | None,
        detail: str,
        *,
        delivered_at: datetime | None = None,
    ) -> DeliveryResult:
        WEBHOOK_DELIVERIES.labels(self._recipient or "unnamed", outcome.value).inc()
        log = _log.info if outcome is DeliveryOutcome.DELIVERED else _log.warning
        log(
            f"webhook.{outcome.value.lower()}",
            disclosure_id=disclosure_id,
            recipient=self._recipient,
            attempts=len(attempts),
            status=status,
            reason_code=reason.value if reason else None,
        )
        return DeliveryResult(
            disclosure_id=disclosure_id,
            outcome=outcome,
            attempts=tuple(attempts),
            reason_code=reason,
            status=status,
            detail=detail,
            delivered_at=delivered_at,
        )

    def _headers(self, disclosure_id: str, body: bytes, attempt: int) -> dict[str, str]:
        stamp = int(self._now().timestamp())
        return {
            "Host": self._endpoint.host_header,
            "User-Agent": _USER_AGENT,
            "Content-Type": (
                "application/fhir+json; fhirVersion=4.0" if self._fhir else "application/json"
            )
            + "; charset=utf-8",
            "Connection": "close",
            HEADER_DISCLOSURE_ID: disclosure_id,
            HEADER_TIMESTAMP: str(stamp),
            HEADER_SIGNATURE: sign_webhook(self._secret, stamp, body),
            HEADER_ATTEMPT: str(attempt),
        }

    async def _post(
        self, disclosure_id: str, body: bytes, attempt: int
    ) -> tuple[int, dict[str, str]]:
        """One attempt: the final status and headers, or an exception (see ``_failure``)."""
        headers = self._headers(disclosure_id, body, attempt)
        timeout = self.retry.timeout
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(
                verify=self._ssl if self._ssl is not None else False,
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream("POST", self._url, content=body, headers=headers) as response,
        ):
            return response.status_code, {k.lower(): v for k, v in response.headers.items()}


def _failure(exc: BaseException) -> tuple[bool, str]:
    """(is the endpoint's certificate untrusted, a loggable name) for a failed attempt.

    httpx wraps socket errors (``ConnectError`` over ``ConnectionRefusedError``);
    the innermost OS error names what happened best, and a certificate that did
    not verify is permanent wherever in the chain it sits.
    """
    name = type(exc).__name__
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True, "SSLCertVerificationError"
        if isinstance(current, OSError) and type(current) is not OSError:
            name = type(current).__name__
        current = current.__cause__ or current.__context__
    return False, name


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None
