"""The HTTP ingestion gateway (issue 13) on real Kafka and a real uvicorn server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fhir.resources.R4B.communication import Communication
from hypothesis import HealthCheck, settings
from structlog.testing import capture_logs

from adapters import GATEWAY_SUBMITTED, openapi_document
from adapters._credentials import GatewayRefusal
from adapters._gateway import GatewayLimits, _RateLimiter
from audit import AuditRecord, AuditStore
from broker import read_topic
from schemas import AUDIT_BATCH

from .gateway_harness import PUBLISHER, Harness, start_harness
from .spine import REPO

pytestmark = pytest.mark.kafka

EXAMPLE = json.loads((REPO / "deploy/examples/concern-domestic-abuse.json").read_text())
PERSONAL = ("Poppy", "Walker", "Darren", "Fletcher", "9992048719", "PO2 8RL", "2017-04-12")


@pytest.fixture(scope="module")
def harness(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    started = start_harness(
        tmp_path_factory.mktemp("gateway"), kafka_bootstrap, f"gw{secrets.token_hex(4)}"
    )
    try:
        yield started
    finally:
        started.close()


def _concern(source_ref: str | None = None, **changes: Any) -> dict[str, Any]:
    doc = {k: v for k, v in EXAMPLE.items() if k != "concern_id"}
    doc["source_ref"] = source_ref or f"GW{secrets.token_hex(5)}"
    doc.update(changes)
    return doc


def _client(harness: Harness, token: str | None = None, strict: bool = False) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or harness.token}"}
    return httpx.Client(
        base_url=harness.strict_url if strict else harness.url, headers=headers, timeout=30
    )


def _audit_records(harness: Harness) -> list[AuditRecord]:
    runtime = harness.runtime
    raw = asyncio.run(read_topic(runtime.bootstrap, runtime.settings.topics.audit, timeout=30))
    records: list[AuditRecord] = []
    for message in raw:
        decoded = runtime.codec.decode(message.value)
        if decoded.subject == AUDIT_BATCH:
            records += [AuditRecord.from_avro(r) for r in decoded.record["records"]]
    return records


# --------------------------------------------------------------------------- one concern


def test_post_gives_202_status_url_and_a_signed_audited_concern(harness: Harness) -> None:
    with _client(harness) as client:
        response = client.post("/v1/concerns", json=_concern())
        assert response.status_code == 202, response.text
        body = response.json()
        concern_id = body["concern_id"]
        assert body["status_url"] == f"/v1/concerns/{concern_id}"
        assert response.headers["location"] == body["status_url"]
        # The status endpoint answers at once (PENDING), then as `safer track` does.
        deadline = time.monotonic() + 90
        while True:
            status = client.get(body["status_url"])
            assert status.status_code == 200
            if status.json()["state"] == "ROUTED" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        doc = status.json()
        assert doc["state"] == "ROUTED", doc
        recipients = {row["recipient"] for row in doc["recipients"]}
        assert "portsmouth-csc" in recipients
        assert all(row["concern_id"] == concern_id for row in doc["recipients"])
    # The audit record names the credential (never its secret) and the body's hash.
    submitted = [
        r
        for r in _audit_records(harness)
        if r.concern_id == concern_id and GATEWAY_SUBMITTED in r.reason_codes
    ]
    assert len(submitted) == 1
    assert submitted[0].credential == f"api:{harness.credential_id}"
    assert submitted[0].source == PUBLISHER
    assert submitted[0].input_sha256 and len(submitted[0].input_sha256) == 64
    assert harness.token.rsplit("_", 1)[-1] not in json.dumps(submitted[0].to_avro(), default=str)
    # The audit feed took it into the log (signed by the router family, not quarantined).
    # hips.audit has several partitions: the gateway's record may be logged after the
    # router's, so wait for it.
    deadline = time.monotonic() + 60
    while True:
        with AuditStore(harness.runtime.settings.audit_db) as store:
            logged = list(store.records(concern_id=concern_id))
        named = [r.credential for r in logged if GATEWAY_SUBMITTED in r.reason_codes]
        if named or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert named == [f"api:{harness.credential_id}"]
    assert not [r for r in logged if r.event.value == "QUARANTINED"]


def test_a_retry_is_the_same_concern_and_a_conflict_is_refused(harness: Harness) -> None:
    ref = f"GW{secrets.token_hex(5)}"
    with _client(harness) as client:
        first = client.post("/v1/concerns", json=_concern(ref))
        again = client.post("/v1/concerns", json=_concern(ref))
        assert first.status_code == again.status_code == 202
        assert first.json()["concern_id"] == again.json()["concern_id"]
        assert again.json()["repeat"] is True
        changed = client.post("/v1/concerns", json=_concern(ref, risk_grade="LOW"))
        assert changed.status_code == 409
        assert changed.headers["content-type"].startswith("application/problem+json")
        problem = changed.json()
        assert problem["reason_code"] == "IDEMPOTENCY_CONFLICT"
        assert problem["concern_id"] == first.json()["concern_id"]
        other_id = client.post(
            "/v1/concerns",
            json=_concern(ref, concern_id="0b7d5e93-4a1c-4f26-9e8b-d2c6a5f1e380"),
        )
        assert other_id.status_code == 409
    submitted = [
        r
        for r in _audit_records(harness)
        if r.concern_id == first.json()["concern_id"] and GATEWAY_SUBMITTED in r.reason_codes
    ]
    assert len(submitted) == 1  # the retry published nothing new


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        (None, 401, "AUTH_REQUIRED"),
        ("sfx_000000000000_" + "A" * 43, 401, "CREDENTIAL_UNKNOWN"),
        ("revoked", 403, "CREDENTIAL_REVOKED"),
    ],
)
def test_unknown_and_revoked_callers_are_refused_with_a_code(
    harness: Harness, token: str | None, status: int, code: str
) -> None:
    headers = {}
    if token == "revoked":
        headers["Authorization"] = f"Bearer {harness.revoked_token}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    response = httpx.post(f"{harness.url}/v1/concerns", json=_concern(), headers=headers)
    assert response.status_code == status
    assert response.json()["reason_code"] == code
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_wrong_secret_for_a_real_credential_is_refused(harness: Harness) -> None:
    forged = harness.token[: -len("A")] + ("B" if not harness.token.endswith("B") else "C")
    response = httpx.post(
        f"{harness.url}/v1/concerns",
        json=_concern(),
        headers={"Authorization": f"Bearer {forged}"},
    )
    assert response.status_code == 401
    assert response.json()["reason_code"] == "CREDENTIAL_UNKNOWN"


def test_invalid_concerns_get_422_naming_fields_never_values(harness: Harness) -> None:
    bad = _concern()
    bad["subjects"] = [dict(bad["subjects"][0], date_of_birth=None, nhs_number=None)]
    with _client(harness) as client:
        response = client.post("/v1/concerns", json=bad)
        assert response.status_code == 422
        assert response.json()["reason_code"] == "MINIMUM_DATASET_MISSING"
        assert "Poppy" not in response.text
        garbled = client.post(
            "/v1/concerns", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert garbled.status_code == 400 and garbled.json()["reason_code"] == "DECODE_ERROR"
        wrong = client.post("/v1/concerns", content=b"x", headers={"Content-Type": "text/plain"})
        assert wrong.status_code == 415
        assert wrong.json()["reason_code"] == "UNSUPPORTED_MEDIA_TYPE"
        other = client.get("/v1/concerns/00000000-0000-4000-8000-000000000000")
        assert other.status_code == 404 and other.json()["reason_code"] == "NOT_FOUND"


# --------------------------------------------------------------------------- batches


def test_a_jsonl_batch_is_partly_accepted_with_a_code_per_record(harness: Harness) -> None:
    good = _concern()
    bad = _concern(risk_grade="PURPLE")
    lines = [json.dumps(good), "{broken", json.dumps(bad), json.dumps(good)]
    with _client(harness) as client:
        response = client.post(
            "/v1/concerns:batch",
            content="\n".join(lines).encode(),
            headers={"Content-Type": "application/x-ndjson"},
        )
    assert response.status_code == 200, response.text
    doc = response.json()
    statuses = [(r["record"], r["status"]) for r in doc["results"]]
    assert statuses == [
        (1, "ACCEPTED"),
        (2, "DECODE_ERROR"),
        (3, "SCHEMA_INVALID"),
        (4, "ACCEPTED"),
    ]
    assert doc["results"][3]["repeat"] is True
    assert doc["results"][0]["concern_id"] == doc["results"][3]["concern_id"]
    assert (doc["accepted"], doc["refused"]) == (2, 2)
    assert "PURPLE" not in response.text


def test_a_csv_batch_reports_spreadsheet_rows(harness: Harness) -> None:
    text = (REPO / "deploy/examples/concerns-mixed.csv").read_text("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        row["source_ref"] = f"GWCSV{secrets.token_hex(4)}"
        row["concern_id"] = ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with _client(harness) as client:
        response = client.post(
            "/v1/concerns:batch",
            content=out.getvalue().encode(),
            headers={"Content-Type": "text/csv"},
        )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["record"], r["status"]) for r in results] == [
        (2, "SCHEMA_INVALID"),
        (3, "MINIMUM_DATASET_MISSING"),
        (4, "ACCEPTED"),
    ]
    assert "subject1.date_of_birth" in results[0]["detail"]


# --------------------------------------------------------------------------- limits


def test_body_size_and_rate_limits_are_per_agency_problems(harness: Harness) -> None:
    with _client(harness, strict=True) as client:
        big = client.post("/v1/concerns", json=_concern(narrative="x" * 5000))
        assert big.status_code == 413 and big.json()["reason_code"] == "TOO_LARGE"
        codes = [client.post("/v1/concerns", json=_concern()).status_code for _ in range(4)]
        assert codes[:2] == [202, 202]
        limited = client.post("/v1/concerns", json=_concern())
        assert limited.status_code == 429
        assert limited.json()["reason_code"] == "RATE_LIMITED"
        assert int(limited.headers["retry-after"]) >= 1


def test_wrong_secrets_are_throttled_per_address_before_any_argon2(harness: Harness) -> None:
    forged = harness.token[:-1] + ("B" if not harness.token.endswith("B") else "C")
    codes = [
        httpx.post(
            f"{harness.strict_url}/v1/concerns",
            json=_concern(),
            headers={"Authorization": f"Bearer {forged}"},
        ).json()["reason_code"]
        for _ in range(3)
    ]
    assert codes == ["CREDENTIAL_UNKNOWN", "CREDENTIAL_UNKNOWN", "RATE_LIMITED"]


def test_the_token_bucket_refills() -> None:
    now = [0.0]
    limiter = _RateLimiter(GatewayLimits(rate_per_minute=60, burst=2), lambda: now[0])
    limiter.take("a", 1)
    limiter.take("a", 1)
    with pytest.raises(GatewayRefusal):
        limiter.take("a", 1)
    limiter.take("b", 2)  # another agency has its own bucket
    now[0] += 1.0
    limiter.take("a", 1)
    with pytest.raises(GatewayRefusal):
        limiter.take("a", 3)  # more than the burst can ever be


# --------------------------------------------------------------------------- logs, OpenAPI


def test_access_log_names_route_status_and_credential_and_no_personal_data(
    harness: Harness,
) -> None:
    with capture_logs() as logs, _client(harness) as client:
        accepted = client.post("/v1/concerns", json=_concern())
        client.get(f"/v1/concerns/{accepted.json()['concern_id']}?name=Poppy+Walker")
        client.post("/v1/concerns:batch?nhs=9992048719", content=b"{}")
        # A line is written when its response has been sent: the client may be faster.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            e.get("status") == 415 for e in logs if e.get("event") == "gateway.request"
        ):
            time.sleep(0.05)
    lines = [entry for entry in logs if entry.get("event") == "gateway.request"]
    assert {(e["route"], e["status"]) for e in lines} >= {
        ("/v1/concerns", 202),
        ("/v1/concerns/{concern_id}", 200),
        ("/v1/concerns:batch", 415),
    }
    assert all(e["credential"] == harness.credential_id for e in lines)
    text = json.dumps(logs, default=str)
    for value in (*PERSONAL, harness.token):
        assert value not in text


def test_openapi_is_served(harness: Harness) -> None:
    response = httpx.get(f"{harness.url}/v1/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(openapi_document()))


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """JSON Lines bodies for schemathesis: any generated value, as text."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


SCHEMA = schemathesis.openapi.from_dict(openapi_document())


@SCHEMA.parametrize()
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_schemathesis_finds_no_server_error(case: Any, harness: Harness) -> None:
    response = case.call(base_url=harness.url, headers={"Authorization": f"Bearer {harness.token}"})
    assert response.status_code < 500, (case.method, case.path, response.text[:300])


# --------------------------------------------------------------------------- FHIR end to end


def test_a_fhir_bundle_reaches_the_partnerships_health_and_social_care_inboxes(
    harness: Harness,
) -> None:
    """Browser-free end to end: POST a FHIR R4 Bundle; Southampton's health team and
    front door receive it in their inboxes, and the audit log shows each step."""
    bundle = json.loads((REPO / "deploy/examples/fhir-bundle-flag.json").read_text())
    bundle["identifier"]["value"] = f"UHS-ED-{secrets.token_hex(4)}"
    bundle.pop("id")  # let the gateway derive the concern id from (agency, source_ref)
    with _client(harness) as client:
        response = client.post(
            "/v1/concerns",
            content=json.dumps(bundle).encode(),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert response.status_code == 202, response.text
        concern_id = response.json()["concern_id"]
        wanted = {"southampton-health", "southampton-csc"}
        deadline = time.monotonic() + 120
        received: set[str] = set()
        while time.monotonic() < deadline:
            rows = client.get(f"/v1/concerns/{concern_id}").json()["recipients"]
            received = {r["recipient"] for r in rows if r["received"]}
            if wanted <= received:
                break
            time.sleep(0.5)
        assert wanted <= received, rows
    from adapters import Inbox

    for recipient in wanted:
        with Inbox(harness.runtime.inbox_path(recipient)) as inbox:
            items = [i for i in inbox.items() if i.concern_id == concern_id]
        assert len(items) == 1
        assert items[0].concern_type == "PHYSICAL_ABUSE" and items[0].lscp == "southampton"
    deadline = time.monotonic() + 60
    while True:  # hips.audit has several partitions: the gateway's record may come last
        with AuditStore(harness.runtime.settings.audit_db) as store:
            logged = list(store.records(concern_id=concern_id))
        events = {(r.event.value, r.recipient) for r in logged}
        credentials = {r.credential for r in logged}
        if f"api:{harness.credential_id}" in credentials or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for recipient in wanted:
        assert ("DISCLOSED", recipient) in events
        assert ("RECEIVED", recipient) in events
    assert f"api:{harness.credential_id}" in credentials
    # The health team can read it as FHIR R4 (a Communication), from its inbox.
    runtime = harness.runtime
    env = dict(os.environ)
    env.update(
        SAFER_DATA_DIR=str(runtime.settings.data_dir),
        SAFER_DEPLOY_DIR=str(runtime.settings.deploy_dir),
        SAFER_TOPIC_PREFIX=runtime.settings.topic_prefix,
        KAFKA_BOOTSTRAP_SERVERS=runtime.bootstrap,
    )
    with Inbox(runtime.inbox_path("southampton-health")) as inbox:
        (item,) = [i for i in inbox.items() if i.concern_id == concern_id]
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "safer",
            "inbox",
            "show",
            item.disclosure_id[:12],
            "--recipient",
            "southampton-health",
            "--fhir",
            "--no-mark",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    communication = Communication.model_validate(json.loads(shown.stdout))
    assert communication.identifier[0].value == item.disclosure_id


def test_unmappable_fhir_is_refused_with_the_fhir_path(harness: Harness) -> None:
    bundle = json.loads((REPO / "deploy/examples/fhir-bundle-flag.json").read_text())
    bundle["entry"].append({"resource": {"resourceType": "Medication", "id": "m1"}})
    with _client(harness) as client:
        response = client.post(
            "/v1/concerns",
            content=json.dumps(bundle).encode(),
            headers={"Content-Type": "application/fhir+json"},
        )
    assert response.status_code == 422
    problem = response.json()
    assert problem["reason_code"] == "FHIR_UNMAPPABLE"
    assert problem["fhir_path"] == "Bundle.entry[4].resource"
    assert "Alfie" not in response.text


# --------------------------------------------------------------------------- client certificates


def _cert_client(harness: Harness, name: str) -> httpx.Client:
    context = ssl.create_default_context(cafile=harness.ca_file)
    context.load_cert_chain(*harness.certs[name])
    return httpx.Client(base_url=harness.tls_url, verify=context, timeout=30)


def test_a_client_certificate_from_the_project_ca_authenticates_an_agency(
    harness: Harness,
) -> None:
    with _cert_client(harness, "registered") as client:
        response = client.post("/v1/concerns", json=_concern())
    assert response.status_code == 202, response.text
    concern_id = response.json()["concern_id"]
    submitted = [
        r
        for r in _audit_records(harness)
        if r.concern_id == concern_id and GATEWAY_SUBMITTED in r.reason_codes
    ]
    assert [r.credential for r in submitted] == [f"cert:{harness.certificate_credential}"]


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [("revoked", 403, "CREDENTIAL_REVOKED"), ("unregistered", 401, "CREDENTIAL_UNKNOWN")],
)
def test_revoked_and_unregistered_certificates_are_refused(
    harness: Harness, name: str, status: int, code: str
) -> None:
    with _cert_client(harness, name) as client:
        response = client.post("/v1/concerns", json=_concern())
    assert response.status_code == status
    assert response.json()["reason_code"] == code


def test_a_certificate_from_another_ca_fails_the_handshake(harness: Harness) -> None:
    with pytest.raises(httpx.TransportError), _cert_client(harness, "foreign") as client:
        client.post("/v1/concerns", json=_concern())
    # Without a certificate, the TLS gateway still takes tokens.
    with httpx.Client(
        base_url=harness.tls_url,
        verify=ssl.create_default_context(cafile=harness.ca_file),
        headers={"Authorization": f"Bearer {harness.token}"},
    ) as client:
        assert client.post("/v1/concerns", json=_concern()).status_code == 202
