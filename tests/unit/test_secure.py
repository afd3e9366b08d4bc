"""Secure mode without a broker: the ACL plan, the certificates, SCRAM and credentials.

The ACL plan is judged with Kafka's own rules (``_allowed`` below): a DENY that
matches wins over every ALLOW; READ, WRITE, DELETE and ALTER imply DESCRIBE;
ALTER_CONFIGS implies DESCRIBE_CONFIGS; a PREFIXED pattern matches every name
that starts with it; ``User:*`` matches every principal. The integration test
(tests/integration/test_secure_kafka.py) shows the real broker agreeing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from broker import (
    ADMIN_PRINCIPAL,
    AUDIT_FEED_PRINCIPAL,
    BROKER_PRINCIPAL,
    MONITOR_PRINCIPAL,
    ROUTER_PRINCIPAL,
    AclBinding,
    AclOperation,
    AclPermission,
    AclResource,
    ClientAccess,
    PatternType,
    SecureKafka,
    SecureListeners,
    Settings,
    TopicLayout,
    Topics,
    acl_plan,
    acl_table,
    issue_broker_certificate,
    load_deployment,
    make_ca,
    principals,
    scram_format_arguments,
    topic_plan,
)
from broker._files import write_java_argfile
from consent import Directory, Recipient
from safer import Runtime
from safer._runtime import advertised_access, write_broker_file
from schemas import AgencyType, ConfigError, Lscp, ReasonCode

REPO = Path(__file__).resolve().parents[2]
TOPICS = Topics("hips")
DIRECTORY = load_deployment(REPO / "deploy").directory
PLAN = acl_plan(DIRECTORY, TOPICS)
OP = AclOperation
POLICE = "hampshire-constabulary"
_IMPLIES_DESCRIBE = {OP.READ, OP.WRITE, OP.DELETE, OP.ALTER}


def _matches(binding: AclBinding, principal: str, resource: AclResource, name: str) -> bool:
    if binding.principal not in (principal, "User:*") or binding.resource is not resource:
        return False
    if binding.pattern is PatternType.PREFIXED:
        return name.startswith(binding.name)
    return binding.name in (name, "*")


def _covers(granted: AclOperation, wanted: AclOperation) -> bool:
    return (
        granted in (wanted, OP.ALL)
        or (wanted is OP.DESCRIBE and granted in _IMPLIES_DESCRIBE)
        or (wanted is OP.DESCRIBE_CONFIGS and granted is OP.ALTER_CONFIGS)
    )


def _allowed(
    principal: str,
    operation: AclOperation,
    name: str,
    resource: AclResource = AclResource.TOPIC,
    plan: list[AclBinding] = PLAN,
) -> bool:
    """What Kafka's StandardAuthorizer decides for this plan (no super users involved)."""
    who = f"User:{principal}"
    matching = [b for b in plan if _matches(b, who, resource, name)]
    if any(
        b.permission is AclPermission.DENY and b.operation in (operation, OP.ALL) for b in matching
    ):
        return False
    return any(
        b.permission is AclPermission.ALLOW and _covers(b.operation, operation) for b in matching
    )


def _universe() -> list[str]:
    """Every topic SAFER creates, plus inbound and notice topics of every agency type."""
    names = {s.name for s in topic_plan(TOPICS, TopicLayout(), publisher_agency_types=["police"])}
    names |= {TOPICS.inbound(a.value) for a in AgencyType}
    names |= {TOPICS.notices(a) for a in AgencyType}
    return sorted(names)


def _topics_with(principal: str, operation: AclOperation) -> set[str]:
    return {t for t in _universe() if _allowed(principal, operation, t)}


# -- the ACL plan ------------------------------------------------------------------------


def test_each_publisher_writes_only_its_own_inbound_topic_and_consent() -> None:
    assert DIRECTORY.publishers
    for publisher in DIRECTORY.publishers:
        own = TOPICS.inbound(publisher.agency_type.value)
        assert _topics_with(publisher.id, OP.WRITE) == {own, TOPICS.consent}
        assert _topics_with(publisher.id, OP.READ) == {
            TOPICS.notices(publisher.agency_type),
            TOPICS.keys,  # key events: rotation and revocation (issue 15)
        }
        others = [TOPICS.inbound(a.value) for a in AgencyType if a is not publisher.agency_type]
        assert not any(_allowed(publisher.id, OP.WRITE, t) for t in others)


def test_no_recipient_can_read_another_partnerships_topic() -> None:
    for recipient in DIRECTORY.recipients:
        readable = _topics_with(recipient.id, OP.READ) - {TOPICS.keys}
        assert _allowed(recipient.id, OP.READ, TOPICS.keys)  # recipients follow key events
        expected = {TOPICS.disclosures(recipient.lscp, recipient.agency_type)}
        if recipient.front_door:
            expected.add(TOPICS.triage(recipient.lscp))
        assert readable == expected, recipient.id
        assert all(t.startswith(f"hips.{recipient.lscp.value}.") for t in readable)
        assert _topics_with(recipient.id, OP.WRITE) == {TOPICS.receipts, TOPICS.consent}
        # Not even the existence of other topics is disclosed (no DESCRIBE).
        assert _topics_with(recipient.id, OP.DESCRIBE) == readable | {
            TOPICS.receipts,
            TOPICS.consent,
            TOPICS.keys,
        }


def test_only_the_router_writes_recipient_topics_and_the_police_cannot() -> None:
    everyone = principals(DIRECTORY)
    for topic in TOPICS.all_recipient_topics():
        assert {p for p in everyone if _allowed(p, OP.WRITE, topic)} == {ROUTER_PRINCIPAL}
    for publisher in DIRECTORY.publishers:
        assert not any(_allowed(publisher.id, OP.WRITE, t) for t in TOPICS.all_recipient_topics())


def test_nobody_can_delete_or_alter_the_audit_topic() -> None:
    denied = {
        (b.operation, b.name)
        for b in PLAN
        if b.principal == "User:*" and b.permission is AclPermission.DENY
    }
    assert denied == {
        (OP.DELETE, "hips.audit"),
        (OP.ALTER, "hips.audit"),
        (OP.ALTER_CONFIGS, "hips.audit"),
    }
    for principal in [*principals(DIRECTORY), "a-partner-not-yet-known"]:
        for operation in (OP.DELETE, OP.ALTER, OP.ALTER_CONFIGS):
            assert not _allowed(principal, operation, TOPICS.audit), (principal, operation)
    # The admin may still create and configure every other topic.
    assert _allowed(ADMIN_PRINCIPAL, OP.CREATE, TOPICS.audit)
    assert _allowed(ADMIN_PRINCIPAL, OP.ALTER_CONFIGS, TOPICS.receipts)
    # Nobody may delete any topic at all.
    for principal in principals(DIRECTORY):
        assert not any(_allowed(principal, OP.DELETE, t) for t in _universe())


def test_the_services_get_only_what_they_use() -> None:
    assert _topics_with(AUDIT_FEED_PRINCIPAL, OP.READ) == {
        TOPICS.audit,
        TOPICS.receipts,
        TOPICS.keys,
    }
    assert _topics_with(AUDIT_FEED_PRINCIPAL, OP.WRITE) == set()
    assert _topics_with(MONITOR_PRINCIPAL, OP.WRITE) == {
        TOPICS.alerts,
        TOPICS.audit,
        TOPICS.notices("police"),
    }
    assert _topics_with(MONITOR_PRINCIPAL, OP.READ) == {TOPICS.keys}
    assert _topics_with(ROUTER_PRINCIPAL, OP.READ) == {
        TOPICS.inbound("police"),
        TOPICS.consent,
        TOPICS.routed,
        TOPICS.keys,
        TOPICS.signals,
    }
    assert _topics_with(ROUTER_PRINCIPAL, OP.WRITE) == {
        *TOPICS.all_recipient_topics(),
        TOPICS.quarantine,
        TOPICS.audit,
        TOPICS.routed,
        TOPICS.signals,
    }
    assert _allowed(ROUTER_PRINCIPAL, OP.READ, "safer-router", AclResource.GROUP)
    assert not _allowed(ROUTER_PRINCIPAL, OP.READ, "another-group", AclResource.GROUP)
    assert _allowed(ROUTER_PRINCIPAL, OP.WRITE, "safer-router.0", AclResource.TRANSACTIONAL_ID)
    assert not _allowed(POLICE, OP.WRITE, "safer-router.0", AclResource.TRANSACTIONAL_ID)
    # The admin touches topic metadata, key events and, to erase a child's
    # cumulative-concern counts, the tombstones a shred sends: never other data.
    assert _topics_with(ADMIN_PRINCIPAL, OP.READ) == {TOPICS.keys}
    assert _topics_with(ADMIN_PRINCIPAL, OP.WRITE) == {TOPICS.keys, TOPICS.signals}
    # Only the broker certificate is a super user; no binding names it.
    assert all(b.principal != BROKER_PRINCIPAL for b in PLAN)


def test_the_plan_is_deterministic_and_generated_from_the_directory() -> None:
    assert acl_plan(DIRECTORY, TOPICS) == PLAN
    assert len(set(PLAN)) == len(PLAN)
    assert sorted(PLAN) == PLAN
    bound = {b.principal.removeprefix("User:") for b in PLAN} - {"*"}
    assert bound == set(principals(DIRECTORY))
    # Another prefix moves every topic ACL with it.
    other = acl_plan(DIRECTORY, Topics("test"))
    assert all(b.name.startswith("test.") for b in other if b.resource is AclResource.TOPIC)


def _with_recipient(recipient_id: str) -> Directory:
    extra = Recipient(
        id=recipient_id, lscp=Lscp.HAMPSHIRE, agency_type=AgencyType.HEALTH, name="Extra"
    )
    return Directory(DIRECTORY.publishers, (*DIRECTORY.recipients, extra))


@pytest.mark.parametrize("bad_id", ["Has,Comma", "x=y", "", "-leading-dash", "safer-router"])
def test_ids_that_cannot_be_kafka_users_are_refused(bad_id: str) -> None:
    with pytest.raises(ConfigError) as refused:
        acl_plan(_with_recipient(bad_id), TOPICS)
    assert refused.value.code is ReasonCode.CONFIG_INVALID
    assert refused.value.hint


def test_the_docs_table_is_the_generated_plan() -> None:
    text = (REPO / "docs/OPERATIONS.md").read_text(encoding="utf-8")
    start, end = "<!-- acl-table:start -->\n", "<!-- acl-table:end -->"
    documented = text[text.index(start) + len(start) : text.index(end)]
    assert documented.strip() == acl_table(PLAN).strip(), (
        "regenerate the table: safer secure acls --markdown"
    )


# -- certificates ----------------------------------------------------------------------------


NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_the_broker_certificate_chains_to_the_local_ca() -> None:
    ca_key, ca = make_ca(NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue_broker_certificate(ca_key, ca, key, NOW)
    store = Store([ca])
    builder = PolicyBuilder().store(store).time(NOW + dt.timedelta(days=1))
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = builder.build_server_verifier(name).verify(leaf, [])
        assert chain[-1] == ca
    # It is also a TLS client certificate: the nodes authenticate to each other with it.
    assert builder.build_client_verifier().verify(leaf, []).chain[-1] == ca
    assert leaf.subject.rfc4514_string() == BROKER_PRINCIPAL.removeprefix("User:")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    # A certificate from any other CA does not verify.
    other_key, other_ca = make_ca(NOW, common_name="someone else")
    stranger = issue_broker_certificate(other_key, other_ca, key, NOW)
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("localhost")).verify(stranger, [])
    # Nor for a host it does not name.
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("kafka.example.org")).verify(leaf, [])


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", deploy_dir=REPO / "deploy")


def _material(tmp_path: Path) -> SecureKafka:
    return SecureKafka(
        folder=_settings(tmp_path).kafka_home / "secure", directory=DIRECTORY, topics=TOPICS
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prepare_keeps_secrets_private_under_the_data_dir(tmp_path: Path) -> None:
    material = _material(tmp_path)
    made = material.prepare(NOW)
    assert len(made) == 3  # CA, broker certificate, passwords
    assert material.folder.is_relative_to(tmp_path / "data")
    assert _mode(material.folder) == 0o700
    for secret in (material.ca_key_file, material.keystore, material.credentials_file):
        assert _mode(secret) == 0o600, secret
    users = json.loads(material.credentials_file.read_text())["users"]
    assert set(users) == set(principals(DIRECTORY))
    assert len(set(users.values())) == len(users)  # each its own random password
    assert all(len(p) >= 40 for p in users.values())
    # The keystore is what Kafka and Python's TLS both load.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(material.ca_file))
    context.load_cert_chain(certfile=str(material.keystore))
    leaf = x509.load_pem_x509_certificates(material.keystore.read_bytes())[0]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(material.ca_file.read_bytes()))
    # Again: nothing new, the same passwords.
    assert material.prepare(NOW) == []
    assert json.loads(material.credentials_file.read_text())["users"] == users


def test_prepare_renews_a_broker_certificate_about_to_expire(tmp_path: Path) -> None:
    material = _material(tmp_path)
    material.prepare(NOW)
    ca_before = material.ca_file.read_bytes()
    later = NOW + dt.timedelta(days=720)
    assert material.prepare(later) == ["a renewed broker certificate"]
    assert material.ca_file.read_bytes() == ca_before
    leaf = x509.load_pem_x509_certificates(material.keystore.read_bytes())[0]
    assert leaf.not_valid_after_utc > later + dt.timedelta(days=300)


# -- SCRAM and listeners -----------------------------------------------------------------------


def test_scram_format_arguments_are_well_formed() -> None:
    users = {"safer-router": "a" * 43, "school-116178": "B-_9" * 10}
    arguments = scram_format_arguments(users)
    assert arguments[0::2] == ["--add-scram"] * len(users)
    pattern = re.compile(r"SCRAM-SHA-512=\[name=([a-z0-9._-]+),password=([A-Za-z0-9_-]+)\]")
    parsed = dict(pattern.fullmatch(a).groups() for a in arguments[1::2])  # type: ignore[union-attr]
    assert parsed == users
    for bad in ({"x": "pass,word"}, {"x": "pass]"}, {"Bad": "ok"}, {"x": ""}):
        with pytest.raises(ValueError):
            scram_format_arguments(bad)


def test_listeners_need_tls_everywhere_and_scram_for_clients(tmp_path: Path) -> None:
    material = _material(tmp_path)
    material.prepare(NOW)
    listeners = material.listeners()
    assert isinstance(listeners, SecureListeners)
    assert dict(listeners.protocols) == {
        "CLIENT": "SASL_SSL",
        "INTERNAL": "SSL",
        "CONTROLLER": "SSL",
    }
    config = listeners.node_config(1, tmp_path)
    assert config["super.users"] == BROKER_PRINCIPAL
    assert config["allow.everyone.if.no.acl.found"] == "false"
    assert config["ssl.client.auth"] == "required"
    assert config["listener.name.client.ssl.client.auth"] == "none"
    assert config["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert config["authorizer.class.name"].endswith("StandardAuthorizer")
    assert not any("password" in k for k in config)  # no secret in server.properties
    arguments = listeners.format_arguments()
    assert len(arguments) == 2 * len(principals(DIRECTORY))
    assert listeners.formatted == set(principals(DIRECTORY))
    assert isinstance(listeners.probe_context(), ssl.SSLContext)


def test_java_argfile_is_private_and_quoted(tmp_path: Path) -> None:
    path = tmp_path / "tool.args"
    write_java_argfile(path, ["kafka.tools.StorageTool", "SCRAM-SHA-512=[name=a,password=b]"])
    assert _mode(path) == 0o600
    assert path.read_text() == '"kafka.tools.StorageTool"\n"SCRAM-SHA-512=[name=a,password=b]"\n'
    with pytest.raises(ValueError):
        write_java_argfile(path, ['with "quote"'])


# -- client credentials --------------------------------------------------------------------------


def test_each_client_authenticates_as_its_own_principal(tmp_path: Path) -> None:
    material = _material(tmp_path)
    material.prepare(NOW)
    access = material.client_access()
    users = json.loads(material.credentials_file.read_text())["users"]
    options = access.security("portsmouth-health")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "portsmouth-health"
    assert options["sasl_plain_password"] == users["portsmouth-health"]
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    with pytest.raises(ConfigError) as unknown:
        access.security("mallory")
    assert unknown.value.code is ReasonCode.NOT_AUTHORIZED

    # An external cluster: the same file through SAFER_KAFKA_CREDENTIALS.
    external = Settings(
        bootstrap_servers="kafka.example:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="shared",
        sasl_password="shared-password",
        ssl_cafile=str(material.ca_file),
        kafka_credentials=material.credentials_file,
    )
    assert external.kafka_security(ROUTER_PRINCIPAL)["sasl_plain_username"] == ROUTER_PRINCIPAL
    assert external.kafka_security(ROUTER_PRINCIPAL)["sasl_plain_password"] == users["safer-router"]
    assert external.kafka_security()["sasl_plain_username"] == "shared"


def test_runtime_gives_each_service_its_principal(tmp_path: Path) -> None:
    material = _material(tmp_path)
    material.prepare(NOW)
    settings = _settings(tmp_path)
    runtime = Runtime(settings, "127.0.0.1:9", access=material.client_access())
    assert runtime.security_for("school-116178")["sasl_plain_username"] == "school-116178"
    with pytest.raises(ConfigError):
        _ = runtime.security  # secure mode: a client must say who it is
    # Plaintext stays exactly as it was.
    assert Runtime(settings, "127.0.0.1:9").security_for(ROUTER_PRINCIPAL) == {}

    # A running `safer up --secure` advertises where the CA and credentials are
    # (paths only), and client commands on the same data dir pick them up.
    path = write_broker_file(settings.data_dir, "127.0.0.1:9", material.client_access())
    advertised = path.read_text()
    assert all(
        password not in advertised
        for password in json.loads(material.credentials_file.read_text())["users"].values()
    )
    assert advertised_access(settings, "127.0.0.1:9") == material.client_access()
    assert advertised_access(settings, "127.0.0.1:10") is None
    assert Runtime(settings, "127.0.0.1:9").access == material.client_access()


def test_client_access_round_trips_through_json(tmp_path: Path) -> None:
    access = ClientAccess(cafile=tmp_path / "ca.pem", credentials_file=tmp_path / "c.json")
    assert ClientAccess.from_json(json.loads(json.dumps(access.to_json()))) == access
