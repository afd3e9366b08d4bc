"""Schema registry both ways (issue 13): our REST subset decodes live topics with
confluent-kafka's AvroDeserializer, and our Confluent client works against it."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from adapters import listen, serve_asgi
from audit import AuditStore
from broker import read_topic
from safer._registry_server import registry_app
from schemas import (
    CONCERN,
    Codec,
    ConfluentRegistry,
    EmbeddedRegistry,
    SchemaError,
    catalogue,
    confluent_subject,
    content_schema_id,
    latest,
)

from .spine import concerns, make_runtime, run_flow

AUTH = ("safer-tools", secrets.token_urlsafe(12))


class Served:
    """A uvicorn server in a background thread."""

    def __init__(self, app: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        sock = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        up = threading.Event()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete,
            args=(serve_asgi(app, self._stop, sock, ready=up.set),),
            daemon=True,
        )
        self._thread.start()
        assert up.wait(20)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, Served, EmbeddedRegistry]]:
    registry = EmbeddedRegistry(tmp_path / "registry.json")
    open_server = Served(registry_app(registry))
    guarded = Served(registry_app(registry, basic_auth=AUTH))
    try:
        yield open_server, guarded, registry
    finally:
        open_server.close()
        guarded.close()


def test_the_rest_subset_answers_as_confluent_does(
    served: tuple[Served, Served, EmbeddedRegistry],
) -> None:
    server, _, _ = served
    subjects = httpx.get(f"{server.url}/subjects").json()
    assert "uk.hips.safer.Concern" in subjects
    assert len(subjects) == len(catalogue())
    versions = httpx.get(f"{server.url}/subjects/uk.hips.safer.Concern/versions").json()
    assert versions == [v.version for v in catalogue()[CONCERN]]
    newest = httpx.get(f"{server.url}/subjects/uk.hips.safer.Concern/versions/latest").json()
    assert newest["id"] == content_schema_id(latest(CONCERN).source)
    by_id = httpx.get(f"{server.url}/schemas/ids/{newest['id']}").json()
    assert json.loads(by_id["schema"]) == latest(CONCERN).source
    missing = httpx.get(f"{server.url}/schemas/ids/7")
    assert missing.status_code == 404 and missing.json()["error_code"] == 40403
    assert httpx.get(f"{server.url}/config").json() == {"compatibilityLevel": "FULL_TRANSITIVE"}


def test_our_client_registers_looks_up_and_checks_compatibility(
    served: tuple[Served, Served, EmbeddedRegistry],
) -> None:
    server, guarded, _ = served
    client = ConfluentRegistry(guarded.url, auth=AUTH)
    try:
        source = latest(CONCERN).source
        schema_id = client.register(CONCERN, source)
        assert schema_id == content_schema_id(source)
        fresh = ConfluentRegistry(guarded.url, auth=AUTH)  # no cache: over the wire
        assert fresh.lookup(schema_id) == (CONCERN, source)
        assert confluent_subject(CONCERN) in fresh.subjects()
        assert fresh.versions("uk.hips.safer.Concern") == [v.version for v in catalogue()[CONCERN]]
        added = dict(source, fields=[*source["fields"], {"name": "x", "type": "string"}])
        assert fresh.is_compatible(CONCERN, source) is True
        assert fresh.is_compatible(CONCERN, added) is False  # a new field without a default
        fresh.close()
        # A Codec on the HTTP client writes frames the embedded codec reads, and back.
        codec = Codec(ConfluentRegistry(server.url))
        embedded = Codec(EmbeddedRegistry())
        record = embedded.decode(embedded.encode("receipt", _receipt())).record
        assert codec.decode(embedded.encode("receipt", record)).record == record
        assert embedded.decode(codec.encode("receipt", record)).record == record
    finally:
        client.close()
    with pytest.raises(SchemaError) as refused:
        ConfluentRegistry(guarded.url, auth=("safer-tools", "wrong")).lookup(1)
    assert refused.value.code.value == "NOT_AUTHORIZED"
    with pytest.raises(SchemaError) as unknown:
        ConfluentRegistry(server.url).lookup(7)
    assert unknown.value.code.value == "UNKNOWN_SCHEMA"


def _receipt() -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "receipt_id": "1" * 32,
        "disclosure_id": "2" * 32,
        "concern_id": "00000000-0000-4000-8000-000000000001",
        "recipient_id": "portsmouth-csc",
        "status": "RECEIVED",
        "at": datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
        "payload_sha256": "0" * 64,
        "actor": "portsmouth-csc",
    }


@pytest.mark.kafka
def test_confluent_avro_deserializer_decodes_our_live_topics(
    kafka_bootstrap: str, tmp_path: Path, unique_id: str
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, f"sr{unique_id}")
    items = concerns(3, seed=31)
    asyncio.run(runtime.create_topics())
    asyncio.run(run_flow(runtime, items, expected={c.concern_id for c in items}))
    topics = runtime.settings.topics
    names = [topics.inbound("police"), topics.audit, topics.receipts]
    directory = runtime.deployment.directory
    with AuditStore(runtime.settings.audit_db) as store:
        delivered = {
            (r.lscp, r.recipient)
            for r in store.records()
            if r.event.value == "DISCLOSED" and r.recipient and r.lscp
        }
    for lscp, recipient_id in sorted(delivered):
        recipient = directory.recipient(recipient_id)
        assert recipient is not None
        names.append(topics.disclosures(lscp, recipient.agency_type))
    names = sorted(set(names))
    server = Served(registry_app(EmbeddedRegistry(runtime.settings.registry_file)))
    try:
        deserializer = AvroDeserializer(SchemaRegistryClient({"url": server.url}))
        decoded = 0
        for topic in names:
            for message in asyncio.run(read_topic(kafka_bootstrap, topic, timeout=30)):
                ours = runtime.codec.decode(message.value).record
                theirs = deserializer(
                    message.value, SerializationContext(topic, MessageField.VALUE)
                )
                assert theirs == ours, topic
                decoded += 1
        assert decoded >= 3 + 3
    finally:
        server.close()
