"""Secure mode on a real Apache Kafka: TLS, SASL/SCRAM-SHA-512 and ACLs from the directory.

One secure node (module-scoped, its own data directory) serves every test. Each
proof uses real aiokafka clients, each authenticated as the principal it acts
for, and checks what the broker itself answers:

* the happy path: police publishes, the router (``safer-router``, transactional)
  routes, the audit feed records and every recipient reads its own topic;
* a recipient of one partnership asking for another partnership's disclosure
  topic gets TopicAuthorizationFailed from the broker, with no byte delivered,
  so nothing exists to decrypt;
* an unknown user, a wrong password, a plaintext client, and a TLS client
  without the broker certificate on the internal listener are all refused;
* the police principal cannot write a recipient topic;
* the admin principal (and every other) cannot delete, alter or shorten the
  retention of ``hips.audit``;
* a partner added to the directory later gets its Kafka user and ACLs on the
  running broker, a changed password replaces the old one, and leaving the
  directory removes user, password and ACLs;
* `safer publish` and `safer notices` find their credentials through the
  ``broker.json`` a running `safer up --secure` writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from aiokafka.protocol.fetch import FetchRequest

from audit import AuditStore
from broker import (
    ADMIN_PRINCIPAL,
    AUDIT_FEED_PRINCIPAL,
    MONITOR_PRINCIPAL,
    ROUTER_PRINCIPAL,
    ClientAccess,
    LocalKafka,
    SecureKafka,
    Settings,
    assign_stored,
    make_consumer,
    make_producer,
    read_topic,
)
from consent import Directory, Recipient
from safer import Runtime
from safer._runtime import write_broker_file
from schemas import AgencyType, BrokerError, ConfigError, Lscp, ReasonCode

from .spine import REPO, concerns, run_flow

pytestmark = pytest.mark.kafka

POLICE = "hampshire-constabulary"
PORTSMOUTH_HEALTH = "portsmouth-health"


@dataclass
class Secure:
    kafka: LocalKafka
    material: SecureKafka
    access: ClientAccess
    runtime: Runtime

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    def as_(self, principal: str) -> dict[str, Any]:
        return self.access.security(principal)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    """A secure single node with every user, ACL and topic, as `safer up --secure` makes it."""
    home = tmp_path_factory.mktemp("secure")
    settings = Settings(data_dir=home / "data", deploy_dir=REPO / "deploy")
    material = SecureKafka(
        folder=settings.kafka_home / "secure",
        directory=Runtime(settings, "").deployment.directory,
        topics=settings.topics,
    )
    material.prepare()
    with LocalKafka(
        settings.kafka_home, deploy_dir=settings.deploy_dir, security=material.listeners()
    ) as kafka:
        asyncio.run(material.provision(kafka))
        access = material.client_access()
        runtime = Runtime(settings, kafka.bootstrap_servers, access=access)
        runtime.init_keys()
        asyncio.run(runtime.create_topics())
        yield Secure(kafka, material, access, runtime)


# -- the happy path -----------------------------------------------------------------------


async def test_police_publishes_router_routes_recipients_read_their_own(secure: Secure) -> None:
    items = concerns(4, seed=41)
    accounting = await run_flow(
        secure.runtime, items, expected={c.concern_id for c in items}, timeout=120
    )
    assert accounting.delivered, "the synthetic concerns must produce disclosures"
    assert accounting.delivered <= accounting.received
    store = AuditStore(secure.runtime.settings.audit_db)
    try:
        store.verify()
    finally:
        store.close()
    # Each recipient principal can read its own topic (the adapters just did).
    for recipient in secure.runtime.deployment.directory.recipients[:3]:
        for topic in secure.runtime.recipient_topics(recipient):
            await read_topic(secure.bootstrap, topic, timeout=30, **secure.as_(recipient.id))


def test_client_commands_find_their_credentials_through_broker_json(secure: Secure) -> None:
    """As with a running `safer up --secure`: `safer publish` and `safer notices` connect
    as the police principal with nothing but the data directory to go on."""
    settings = secure.runtime.settings
    write_broker_file(settings.data_dir, secure.bootstrap, secure.access)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SAFER_KAFKA"))}
    env |= {"SAFER_DATA_DIR": str(settings.data_dir), "SAFER_DEPLOY_DIR": str(REPO / "deploy")}
    try:
        published = _safer(env, "publish", "--agency", "police", str(EXAMPLE))
        assert published.stdout.split()[1:] == ["ACCEPTED"], published.stderr[-2000:]
        notices = _safer(env, "notices", "--agency", "police")
        assert "hips.notices.police" in notices.stdout, notices.stderr[-2000:]
    finally:
        (settings.data_dir / "broker.json").unlink(missing_ok=True)


EXAMPLE = REPO / "deploy/examples/concern-domestic-abuse.json"


def _safer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "safer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


# -- broker-enforced refusals -------------------------------------------------------------


async def _raw_fetch(secure: Secure, principal: str, topic: str) -> tuple[int, int]:
    """A Fetch request for partition 0 of ``topic`` from offset 0, sent straight to the
    broker as ``principal``: (error code, bytes of records returned)."""
    client = AIOKafkaClient(bootstrap_servers=secure.bootstrap, **secure.as_(principal))
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        request = FetchRequest(
            max_wait_time=100,
            min_bytes=1,
            max_bytes=1 << 20,
            isolation_level=1,
            topics=[(topic, [(0, 0, 1 << 20)])],
        )
        response = await client.send(node, request)
    finally:
        await client.close()
    (name, partitions), *_ = response.topics
    assert name == topic
    partition = partitions[0]
    error_code, records = partition[1], partition[-1]
    return error_code, len(records or b"")


async def test_recipient_is_refused_another_partnerships_topic(secure: Secure) -> None:
    other = "hips.southampton.health.disclosures"
    own = "hips.portsmouth.health.disclosures"
    # Southampton's topic holds a record: there is something to refuse.
    await _send_as(secure, ROUTER_PRINCIPAL, other, b"ciphertext for southampton-health")
    assert (await _raw_fetch(secure, "southampton-health", other))[0] == 0

    # Portsmouth's health team asks the broker for it: TOPIC_AUTHORIZATION_FAILED (29)
    # and not one byte of record data, so there is nothing to decrypt.
    error_code, returned = await _raw_fetch(secure, PORTSMOUTH_HEALTH, other)
    assert (error_code, returned) == (29, 0)
    assert (await _raw_fetch(secure, PORTSMOUTH_HEALTH, own))[0] == 0  # its own: fine

    # SAFER's own consumer path says so at once, with the reason code.
    consumer = make_consumer(
        secure.bootstrap, auto_offset_reset="earliest", **secure.as_(PORTSMOUTH_HEALTH)
    )
    await consumer.start()
    try:
        with pytest.raises(BrokerError) as refused:
            await assign_stored(consumer, [other], {}, wait=10)
        assert refused.value.code is ReasonCode.NOT_AUTHORIZED
    finally:
        await consumer.stop()

    # Nor can it join a consumer group to get the topic another way.
    grouped = make_consumer(
        secure.bootstrap,
        group_id="sneaky",
        auto_offset_reset="earliest",
        **secure.as_(PORTSMOUTH_HEALTH),
    )
    await grouped.start()
    try:
        grouped.subscribe([other])
        with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
            await grouped.getmany(timeout_ms=5000)
    finally:
        await grouped.stop()

    # Every recipient topic of other partnerships is refused the same way.
    for topic in secure.runtime.settings.topics.all_recipient_topics():
        if not topic.startswith("hips.portsmouth."):
            assert (await _raw_fetch(secure, PORTSMOUTH_HEALTH, topic)) == (29, 0), topic


async def _send_as(secure: Secure, principal: str, topic: str, value: bytes) -> None:
    producer = make_producer(secure.bootstrap, **secure.as_(principal))
    await producer.start()
    try:
        await (await producer.send(topic, value))
    finally:
        await producer.stop()


async def _connect(**options: Any) -> list[str]:
    admin = AIOKafkaAdminClient(request_timeout_ms=5000, **options)
    try:
        await admin.start()
        topics: list[str] = await admin.list_topics()
        return topics
    finally:
        await admin.close()


async def test_unknown_client_or_wrong_password_cannot_connect(secure: Secure) -> None:
    known = secure.as_(PORTSMOUTH_HEALTH)
    assert await _connect(bootstrap_servers=secure.bootstrap, **known)  # control
    unknown = {**known, "sasl_plain_username": "mallory"}
    wrong = {**known, "sasl_plain_password": secrets.token_urlsafe(32)}
    for options in (unknown, wrong):
        with pytest.raises(KafkaConnectionError):
            await _connect(bootstrap_servers=secure.bootstrap, **options)
    # No TLS and no SASL: the client listener only speaks SASL_SSL.
    with pytest.raises(KafkaConnectionError):
        await _connect(bootstrap_servers=secure.bootstrap)
    # The internal listener wants the broker's own certificate (mutual TLS).
    tls_only = ssl.create_default_context(cafile=str(secure.access.cafile))
    with pytest.raises(KafkaConnectionError):
        await _connect(
            bootstrap_servers=secure.kafka.internal_bootstrap_servers,
            security_protocol="SSL",
            ssl_context=tls_only,
        )


async def test_police_cannot_write_a_recipient_topic(secure: Secure) -> None:
    await _send_as(secure, POLICE, "hips.inbound.police", b"control: its own topic")
    for topic in [
        "hips.hampshire.social-care.disclosures",
        "hips.portsmouth.triage",
        "hips.audit",
        "hips.receipts",
    ]:
        with pytest.raises(TopicAuthorizationFailedError):
            await _send_as(secure, POLICE, topic, b"forged")


async def _audit_retention(admin: AIOKafkaAdminClient) -> str:
    (response,) = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, "hips.audit", {"retention.ms": None})]
    )
    ((_code, _msg, _type, _name, entries),) = response.resources
    return str(entries[0][1])


async def test_no_principal_can_delete_or_alter_the_audit_topic(secure: Secure) -> None:
    audit = TopicPartition("hips.audit", 0)
    every = [ADMIN_PRINCIPAL, ROUTER_PRINCIPAL, MONITOR_PRINCIPAL, AUDIT_FEED_PRINCIPAL, POLICE]
    for principal in every:
        admin = AIOKafkaAdminClient(bootstrap_servers=secure.bootstrap, **secure.as_(principal))
        await admin.start()
        try:
            deleted = await admin.delete_topics(["hips.audit"])
            assert [code for _topic, code in deleted.topic_error_codes] == [29], principal
            (altered,) = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, "hips.audit", {"retention.ms": "1000"})]
            )
            assert [r[0] for r in altered.resources] == [29], principal
            with pytest.raises(TopicAuthorizationFailedError):
                await admin.create_partitions({"hips.audit": NewPartitions(2)})
            if "hips.audit" in await admin.list_topics():
                with pytest.raises(TopicAuthorizationFailedError):
                    await admin.delete_records({audit: RecordsToDelete(-1)})
            else:  # the police principal is not even told the topic exists
                assert principal == POLICE
        finally:
            await admin.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=secure.bootstrap, **secure.as_(ADMIN_PRINCIPAL))
    await admin.start()
    try:
        assert await _audit_retention(admin) == "-1"  # kept forever, as created
    finally:
        await admin.close()
    # Every record the happy path audited is still there, from offset 0.
    consumer = make_consumer(secure.bootstrap, **secure.as_(AUDIT_FEED_PRINCIPAL))
    await consumer.start()
    try:
        assert (await consumer.beginning_offsets([audit]))[audit] == 0
        assert (await consumer.end_offsets([audit]))[audit] > 0
    finally:
        await consumer.stop()
    # The admin step itself still runs clean: nothing to alter, nothing refused.
    assert await secure.runtime.create_topics() == []


async def test_a_partner_who_joins_gets_a_user_and_acls_and_loses_them_on_leaving(
    secure: Secure,
) -> None:
    joined = Recipient(
        id="portsmouth-new-partner",
        lscp=Lscp.PORTSMOUTH,
        agency_type=AgencyType.HEALTH,
        name="A partner who joins later",
    )
    original = secure.material.directory
    wider = Directory(original.publishers, (*original.recipients, joined))
    with_partner = dataclasses.replace(secure.material, directory=wider)
    with_partner.prepare()
    changes = await with_partner.provision(secure.kafka)
    assert changes[0] == "created Kafka user portsmouth-new-partner"
    own, other = "hips.portsmouth.health.disclosures", "hips.southampton.health.disclosures"
    assert (await _raw_fetch(secure, joined.id, own))[0] == 0
    assert (await _raw_fetch(secure, joined.id, other))[0] == 29

    # A new password (its entry removed from the credentials file) reaches the broker.
    old = secure.as_(joined.id)
    credentials = json.loads(with_partner.credentials_file.read_text())
    del credentials["users"][joined.id]
    with_partner.credentials_file.write_text(json.dumps(credentials))
    with_partner.prepare()
    changes = await with_partner.provision(secure.kafka)
    assert changes == ["updated password of Kafka user portsmouth-new-partner"]
    assert await _connect(bootstrap_servers=secure.bootstrap, **secure.as_(joined.id))
    with pytest.raises(KafkaConnectionError):
        await _connect(bootstrap_servers=secure.bootstrap, **old)

    # It leaves the directory: user, password and ACLs go.
    latest = secure.as_(joined.id)
    back = dataclasses.replace(secure.material, directory=original)
    changes = await back.provision(secure.kafka)
    assert changes[0] == "deleted Kafka user portsmouth-new-partner"
    # READ on its topic, WRITE receipts and consent, READ hips.keys (issue 15).
    assert changes[1].startswith("ACLs: 0 created, 4 deleted")
    with pytest.raises(ConfigError):  # its password is gone from the credentials file
        back.client_access().security(joined.id)
    with pytest.raises(KafkaConnectionError):  # and the broker no longer knows the user
        await _connect(bootstrap_servers=secure.bootstrap, **latest)
