"""Webhook delivery against a real local HTTP receiver (stdlib ``http.server``, no mocks).

The receiver runs in its own threads on 127.0.0.1, verifies every request with
``verify_webhook`` and deduplicates on ``X-Safer-Disclosure-Id`` the way a
partner is told to. A script makes it misbehave for a while (503s, a
connection reset, a response that hangs past the client's timeout after the
receiver has already accepted the disclosure, a 429). Sleeps are injected, so
backoff costs no real time; the only real wait is the client timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from adapters._webhook import (
    HEADER_DISCLOSURE_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    DeliveryOutcome,
    DeliveryReason,
    RetryPolicy,
    WebhookSender,
    sign_webhook,
    verify_webhook,
    webhook_body,
)
from schemas import ConfigError, ReasonCode, SignatureError, ValidationError

SECRET = b"test-webhook-secret-0123456789abcdef"
SYNTHETIC_NAME = "Zebedee Quartermaine"  # synthetic person: must never reach a log line


class Receiver:
    """A partner's endpoint: verify, deduplicate, and misbehave as scripted.

    ``script[n]`` says what the n-th request (0-based, in arrival order) gets:
    ``"503"``/``"500"``/... a bare status; ``"429"`` with ``Retry-After: 3``;
    ``"reset"`` a TCP reset without a response; ``"hang"`` accept the
    disclosure, then hold the response until released. Past the script, every
    request is handled normally.
    """

    def __init__(self, script: list[str], *, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.requests = 0
        self.accepted: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.bad_signatures = 0
        self.bodies: dict[str, dict[str, Any]] = {}
        self.attempt_headers: list[str] = []
        self.release = threading.Event()
        self.hung = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    n = receiver.requests
                    receiver.requests += 1
                    receiver.attempt_headers.append(self.headers.get("X-Safer-Attempt", ""))
                action = receiver.script[n] if n < len(receiver.script) else "ok"
                if action == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.rfile.close()
                    self.connection.close()
                    self.close_connection = True
                    return
                if action.isdigit():
                    self._reply(int(action), {"error": "scripted"}, retry_after=action == "429")
                    return
                try:
                    verify_webhook(SECRET, dict(self.headers.items()), body, time.time())
                except SignatureError as exc:
                    with receiver._lock:
                        receiver.bad_signatures += 1
                    self._reply(401, {"error": exc.code.value})
                    return
                disclosure_id = self.headers[HEADER_DISCLOSURE_ID]
                with receiver._lock:
                    duplicate = disclosure_id in receiver.accepted
                    if duplicate:
                        receiver.duplicates[disclosure_id] += 1
                    else:
                        receiver.accepted[disclosure_id] += 1
                        receiver.bodies[disclosure_id] = json.loads(body)
                if action == "hang":
                    receiver.hung.set()
                    receiver.release.wait(timeout=20)
                with contextlib.suppress(OSError):  # a hung client gave up long ago
                    self._reply(200, {"status": "duplicate" if duplicate else "accepted"})

            def _reply(self, status: int, doc: dict[str, str], retry_after: bool = False) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after:
                    self.send_header("Retry-After", "3")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/safer/inbound?token=PATH-TOKEN-42"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(script: list[str] | None = None, **kwargs: Any) -> Receiver:
        receiver = Receiver(script or [], **kwargs)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


class FakeTime:
    """Injected sleep and monotonic clock: sleeping advances the clock, instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)

    def clock(self) -> float:
        return self.now


def _disclosure(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    disclosure_id = hashlib.sha256(f"d{n}".encode()).hexdigest()[:32]
    metadata = {
        "disclosure_id": disclosure_id,
        "concern_id": f"00000000-0000-4000-8000-{n:012d}",
        "recipient_id": "portsmouth-school-1",
        "lscp": "portsmouth",
        "kind": "DISCLOSURE",
        "decision_id": f"{n:032x}",
        "lawful_basis": "DAA2021-S49A",
        "purpose": "Operation Encompass",
        "profile": "encompass-notification",
        "policy_revision": "sha256:abc",
        "reason_codes": [],
        "concern_type": "DOMESTIC_ABUSE",
        "risk_grade": "MEDIUM",
        "deadline": dt.datetime(2026, 3, 2, 8, 30, tzinfo=dt.UTC),
        "decided_at": dt.datetime(2026, 3, 1, 21, 4, 5, 678000, tzinfo=dt.UTC),
        "payload_sha256": "0" * 64,
        # The encrypted envelope and inbox state must not be copied into the body.
        "payload": {"ciphertext": b"\x00\x01", "nonce": b"\x02"},
        "status": "RECEIVED",
    }
    payload = {"subjects": [{"given_name": SYNTHETIC_NAME, "role": "CHILD"}], "n": n}
    return metadata, payload


def _sender(url: str, fake: FakeTime, **kwargs: Any) -> WebhookSender:
    retry = kwargs.pop(
        "retry", RetryPolicy(max_attempts=8, base_delay=1.0, max_delay=4.0, timeout=0.5)
    )
    return WebhookSender(
        url,
        SECRET,
        retry=retry,
        recipient_id="portsmouth-school-1",
        jitter=kwargs.pop("jitter", lambda: 0.5),
        sleep=fake.sleep,
        clock=fake.clock,
        **kwargs,
    )


# --------------------------------------------------------------------------- exactly once


async def test_every_disclosure_is_accepted_exactly_once_through_failures(
    receiver_factory: Any,
) -> None:
    receiver = receiver_factory(["503", "503", "503", "reset", "hang", "429", "500"])
    fake = FakeTime()
    sender = _sender(receiver.url(), fake)
    items = [_disclosure(n) for n in range(6)]

    with capture_logs() as logs:
        results = await asyncio.gather(*(sender.send(meta, payload) for meta, payload in items))
    receiver.release.set()

    ids = [meta["disclosure_id"] for meta, _ in items]
    assert [r.outcome for r in results] == [DeliveryOutcome.DELIVERED] * 6
    assert all(r.status == 200 and r.delivered_at is not None for r in results)
    # The receiver's view: every id accepted once, nothing unknown, signatures all good.
    assert receiver.accepted == Counter({i: 1 for i in ids})
    assert receiver.bad_signatures == 0
    # The hung request was accepted but its response never arrived in time, so it
    # was sent again and the receiver recognised the duplicate.
    assert receiver.hung.is_set()
    assert sum(receiver.duplicates.values()) >= 1
    hung_retry = [r for r in results if any(a.error and "timeout" in a.error for a in r.attempts)]
    assert len(hung_retry) == 1
    assert receiver.duplicates[hung_retry[0].disclosure_id] == 1
    # Every scripted failure cost one attempt, and each was followed by a backoff sleep.
    failures = sum(len(r.attempts) - 1 for r in results)
    assert failures == 7
    assert len(fake.sleeps) == 7
    assert 3.0 in fake.sleeps  # the 429's Retry-After was honoured
    assert receiver.requests == 6 + 7
    # The body carried the metadata and the decrypted payload, not the envelope.
    body = receiver.bodies[ids[0]]
    assert body["type"] == "safer.disclosure"
    assert body["payload"]["subjects"][0]["given_name"] == SYNTHETIC_NAME
    assert body["disclosure"]["deadline"] == "2026-03-02T08:30:00.000Z"
    assert body["disclosure"]["decided_at"] == "2026-03-01T21:04:05.678Z"
    assert "payload" not in body["disclosure"] and "status" not in body["disclosure"]
    # Logs name disclosures and statuses; never the person, the URL or its token.
    text = repr(logs)
    assert ids[0] in text and "webhook.retry" in text
    assert SYNTHETIC_NAME not in text
    assert "PATH-TOKEN-42" not in text and "/safer/inbound" not in text

    # A later redelivery (an adapter restarted before recording the receipt) is
    # harmless: the receiver answers 2xx and still holds exactly one copy.
    again = await sender.send(*items[2])
    assert again.delivered
    assert receiver.accepted[ids[2]] == 1
    assert receiver.duplicates[ids[2]] >= 1


async def test_attempt_numbers_travel_in_a_header(receiver_factory: Any) -> None:
    receiver = receiver_factory(["503", "503"])
    result = await _sender(receiver.url(), FakeTime()).send(*_disclosure(1))
    assert result.delivered and len(result.attempts) == 3
    assert receiver.attempt_headers == ["1", "2", "3"]


# --------------------------------------------------------------------------- retry policy


@pytest.mark.parametrize("status", ["400", "401", "403", "404", "410", "422", "301"])
async def test_permanent_statuses_stop_at_once(receiver_factory: Any, status: str) -> None:
    receiver = receiver_factory([status])
    fake = FakeTime()
    result = await _sender(receiver.url(), fake).send(*_disclosure(1))
    assert result.outcome is DeliveryOutcome.REJECTED
    assert result.reason_code is DeliveryReason.WEBHOOK_REJECTED
    assert result.status == int(status)
    assert not result.retriable
    assert len(result.attempts) == 1
    assert receiver.requests == 1
    assert fake.sleeps == []
    assert receiver.accepted == Counter()


@pytest.mark.parametrize("status", ["408", "429", "500", "502", "503", "504"])
async def test_transient_statuses_are_retried(receiver_factory: Any, status: str) -> None:
    receiver = receiver_factory([status])
    result = await _sender(receiver.url(), FakeTime()).send(*_disclosure(1))
    assert result.delivered
    assert [a.status for a in result.attempts] == [int(status), 200]
    assert receiver.requests == 2


async def test_retries_and_outcomes_are_counted_for_metrics_without_ids(
    receiver_factory: Any,
) -> None:
    """Issue 14: safer_webhook_retries_total and safer_webhook_deliveries_total."""
    from prometheus_client import generate_latest

    from adapters import ADAPTER_METRICS

    def value(name: str, **labels: str) -> float:
        return ADAPTER_METRICS.get_sample_value(name, labels) or 0.0

    recipient = {"recipient": "portsmouth-school-1"}
    retries = value("safer_webhook_retries_total", **recipient)
    delivered = value("safer_webhook_deliveries_total", **recipient, outcome="DELIVERED")
    gave_up = value("safer_webhook_deliveries_total", **recipient, outcome="GAVE_UP")
    receiver = receiver_factory(["503", "429"])
    metadata, payload = _disclosure(7)
    result = await _sender(receiver.url(), FakeTime()).send(metadata, payload)
    assert result.delivered and len(result.attempts) == 3
    assert value("safer_webhook_retries_total", **recipient) == retries + 2
    assert value("safer_webhook_deliveries_total", **recipient, outcome="DELIVERED") == (
        delivered + 1
    )
    policy = RetryPolicy(max_attempts=2, base_delay=1.0, timeout=0.5)
    failing = receiver_factory(["503"] * 5)
    await _sender(failing.url(), FakeTime(), retry=policy).send(*_disclosure(8))
    assert value("safer_webhook_retries_total", **recipient) == retries + 3  # 1 of 2 retried
    assert value("safer_webhook_deliveries_total", **recipient, outcome="GAVE_UP") == gave_up + 1
    exposition = generate_latest(ADAPTER_METRICS).decode()
    assert metadata["disclosure_id"] not in exposition and "127.0.0.1" not in exposition
    assert metadata["concern_id"] not in exposition


async def test_backoff_is_exponential_with_full_jitter_up_to_max_attempts(
    receiver_factory: Any,
) -> None:
    receiver = receiver_factory(["503"] * 10)
    fake = FakeTime()
    draws = iter([0.9, 0.1, 0.5, 0.99, 0.25])
    policy = RetryPolicy(max_attempts=5, base_delay=2.0, max_delay=10.0, timeout=0.5)
    result = await _sender(receiver.url(), fake, retry=policy, jitter=lambda: next(draws)).send(
        *_disclosure(1)
    )
    assert result.outcome is DeliveryOutcome.GAVE_UP
    assert result.reason_code is DeliveryReason.WEBHOOK_UNAVAILABLE
    assert result.retriable
    assert receiver.requests == 5
    # Caps 2, 4, 8, then 10 (max_delay); each delay is draw * cap; none after the last try.
    assert fake.sleeps == pytest.approx([0.9 * 2, 0.1 * 4, 0.5 * 8, 0.99 * 10])
    assert [a.delay for a in result.attempts] == [*fake.sleeps, None]


async def test_max_elapsed_stops_before_a_sleep_that_would_overrun(receiver_factory: Any) -> None:
    receiver = receiver_factory(["503"] * 50)
    fake = FakeTime()
    policy = RetryPolicy(
        max_attempts=50, base_delay=1.0, max_delay=8.0, max_elapsed=20.0, timeout=0.5
    )
    result = await _sender(receiver.url(), fake, retry=policy, jitter=lambda: 1.0).send(
        *_disclosure(1)
    )
    assert result.outcome is DeliveryOutcome.GAVE_UP
    assert fake.sleeps == [1.0, 2.0, 4.0, 8.0]  # 15 s slept; another 8 s would pass 20 s
    assert receiver.requests == 5
    assert "gave up after 5 attempt(s)" in result.detail


async def test_connection_refused_is_retried_then_given_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, timeout=2.0)
    sender = _sender(f"http://127.0.0.1:{port}/hook", fake, retry=policy)
    result = await sender.send(*_disclosure(1))
    assert result.outcome is DeliveryOutcome.GAVE_UP
    assert [a.error for a in result.attempts] == ["ConnectionRefusedError"] * 3
    assert len(fake.sleeps) == 2


async def test_a_forged_request_is_refused_by_the_receiver(receiver_factory: Any) -> None:
    receiver = receiver_factory()
    fake = FakeTime()
    sender = WebhookSender(
        receiver.url(),
        b"not-the-shared-secret-at-all!!",
        retry=RetryPolicy(timeout=2.0),
        sleep=fake.sleep,
        clock=fake.clock,
    )
    result = await sender.send(*_disclosure(1))
    assert result.outcome is DeliveryOutcome.REJECTED  # 401 is permanent
    assert result.status == 401
    assert receiver.bad_signatures == 1 and receiver.accepted == Counter()
    assert fake.sleeps == []


# --------------------------------------------------------------------------- TLS


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "safer-test-receiver")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_delivery_verifies_the_receiver(receiver_factory: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    receiver = receiver_factory(["503"], tls=server_tls)

    trusted = ssl.create_default_context(cafile=str(cert))
    result = await _sender(receiver.url("https"), FakeTime(), ssl_context=trusted).send(
        *_disclosure(1)
    )
    assert result.delivered and len(result.attempts) == 2
    assert receiver.accepted == Counter({_disclosure(1)[0]["disclosure_id"]: 1})

    # The system trust store does not know this certificate: permanent, not retried.
    fake = FakeTime()
    refused = await _sender(receiver.url("https"), fake).send(*_disclosure(2))
    assert refused.outcome is DeliveryOutcome.REJECTED
    assert refused.reason_code is DeliveryReason.WEBHOOK_TLS_FAILED
    assert len(refused.attempts) == 1 and fake.sleeps == []


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("http://receiver.example.org/hook", SECRET),  # plaintext off loopback
        ("https://user:pw@receiver.example.org/hook", SECRET),  # credentials in the URL
        ("ftp://receiver.example.org/hook", SECRET),
        ("https://receiver.example.org/hook", b"short"),
    ],
)
def test_unsafe_configuration_is_refused(url: str, secret: bytes) -> None:
    with pytest.raises(ConfigError):
        WebhookSender(url, secret)


def test_plain_http_needs_loopback_or_an_explicit_opt_in() -> None:
    WebhookSender("http://127.0.0.1:8080/hook", SECRET)
    WebhookSender("http://[::1]:8080/hook", SECRET)
    WebhookSender("http://receiver.internal/hook", SECRET, allow_plain_http=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay": 0.0},
        {"base_delay": 5.0, "max_delay": 1.0},
        {"timeout": 0.0},
        {"max_elapsed": -1.0},
    ],
)
def test_bad_retry_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)


async def test_a_disclosure_id_cannot_inject_headers() -> None:
    sender = WebhookSender("http://127.0.0.1:9/hook", SECRET)
    with pytest.raises(ValidationError):
        await sender.send_body("abc\r\nX-Evil: 1", b"{}")
    with pytest.raises(ValidationError):
        webhook_body({"disclosure_id": "bad id"}, {})


# --------------------------------------------------------------------------- verify_webhook


def _signed(now: int = 1_770_000_000, n: int = 1) -> tuple[dict[str, str], bytes]:
    body = webhook_body(*_disclosure(n))
    headers = {
        HEADER_DISCLOSURE_ID: _disclosure(n)[0]["disclosure_id"],
        HEADER_TIMESTAMP: str(now),
        HEADER_SIGNATURE: sign_webhook(SECRET, now, body),
    }
    return headers, body


def test_verify_accepts_a_genuine_request() -> None:
    headers, body = _signed()
    assert verify_webhook(SECRET, headers, body, 1_770_000_000) is None
    lower = {k.lower(): v for k, v in headers.items()}
    verify_webhook(SECRET, lower, body, dt.datetime.fromtimestamp(1_770_000_100, dt.UTC))
    verify_webhook(SECRET, headers, body, 1_770_000_300)  # exactly at the tolerance


def test_verify_accepts_any_of_several_signatures_for_secret_rotation() -> None:
    headers, body = _signed()
    headers[HEADER_SIGNATURE] = "v1=" + "0" * 64 + ", " + headers[HEADER_SIGNATURE]
    verify_webhook(SECRET, headers, body, 1_770_000_000)


def test_verify_rejects_a_tampered_body() -> None:
    headers, body = _signed()
    tampered = body.replace(b'"MEDIUM"', b'"LOW"')
    assert tampered != body
    with pytest.raises(SignatureError) as caught:
        verify_webhook(SECRET, headers, tampered, 1_770_000_000)
    assert caught.value.code is ReasonCode.SIGNATURE_INVALID


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_verify_rejects_a_stale_or_future_timestamp(skew: int) -> None:
    headers, body = _signed()
    with pytest.raises(SignatureError) as caught:
        verify_webhook(SECRET, headers, body, 1_770_000_000 + skew)
    assert caught.value.code is ReasonCode.REPLAY


def test_verify_rejects_a_replayed_body_with_a_fresh_timestamp() -> None:
    headers, body = _signed(now=1_770_000_000)
    headers[HEADER_TIMESTAMP] = "1770009999"  # refreshed without the secret
    with pytest.raises(SignatureError) as caught:
        verify_webhook(SECRET, headers, body, 1_770_009_999)
    assert caught.value.code is ReasonCode.SIGNATURE_INVALID


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.pop(HEADER_SIGNATURE),
        lambda h: h.pop(HEADER_TIMESTAMP),
        lambda h: h.pop(HEADER_DISCLOSURE_ID),
        lambda h: h.update({HEADER_TIMESTAMP: "12e3"}),
        lambda h: h.update({HEADER_SIGNATURE: "v0=abc"}),
        lambda h: h.update({HEADER_DISCLOSURE_ID: "f" * 32}),  # not the body's id
    ],
)
def test_verify_rejects_bad_headers(mutate: Any) -> None:
    headers, body = _signed()
    mutate(headers)
    with pytest.raises(SignatureError) as caught:
        verify_webhook(SECRET, headers, body, 1_770_000_000)
    assert caught.value.code is ReasonCode.SIGNATURE_INVALID


def test_verify_rejects_the_wrong_secret() -> None:
    headers, body = _signed()
    with pytest.raises(SignatureError):
        verify_webhook(b"another-secret-entirely-000000", headers, body, 1_770_000_000)


# --------------------------------------------------------------------------- FHIR body (issue 13)


async def test_a_fhir_recipient_gets_a_signed_r4_communication(receiver_factory: Any) -> None:
    from fhir.resources.R4B.communication import Communication

    receiver = receiver_factory(["503"])
    fake = FakeTime()
    sender = _sender(receiver.url(), fake, body_format="fhir-r4")
    metadata, payload = _disclosure(7)
    result = await sender.send(metadata, payload)
    assert result.delivered and len(result.attempts) == 2
    body = receiver.bodies[metadata["disclosure_id"]]  # verify_webhook accepted it
    communication = Communication.model_validate(body)
    assert communication.identifier[0].value == metadata["disclosure_id"]
    assert json.loads(body["payload"][0]["contentString"]) == payload
    assert receiver.accepted == Counter({metadata["disclosure_id"]: 1})


def test_the_directory_chooses_the_body_per_recipient() -> None:
    with pytest.raises(ConfigError):
        WebhookSender("http://127.0.0.1:9/hook", SECRET, body_format="hl7v2")
