"""Secure mode: TLS, SASL/SCRAM-SHA-512 and per-principal ACLs for the local Apache Kafka.

`safer up --secure` (and `safer broker --secure`) run the local Kafka with:

* ``CLIENT`` = SASL_SSL, SCRAM-SHA-512. Every SAFER service and every partner
  connects here as its own principal: each publisher and recipient by its
  directory id, and ``safer-router``, ``safer-audit-feed``, ``safer-monitor``
  and ``safer-admin`` (the topic admin step).
* ``INTERNAL`` and ``CONTROLLER`` = SSL with client certificates required.
  Only the holder of the broker certificate connects there; its principal,
  ``User:CN=safer-kafka-broker``, is the one super user (KRaft controllers
  cannot authenticate with SCRAM). Nothing else is a super user: super users
  bypass every ACL, including the DENY that protects ``hips.audit``.

The authorizer is Kafka's ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false``: what the ACL plan does not allow is
refused by the broker itself, before any client sees a byte, so before any
decryption.

Everything lives under ``<data-dir>/kafka/secure/`` (folder 0700, secrets 0600),
never in ``deploy/`` or the repository:

* ``ca.key`` / ``ca.pem``: the local CA (an EC P-256 key and a self-signed cert);
* ``broker.pem``: the broker key, its certificate (SAN 127.0.0.1 and localhost)
  and the CA, used by every node for all three listeners;
* ``credentials.json``: a random SCRAM password per principal;
* ``registered.json``: which users the broker already has, with a fingerprint of
  each password (so a changed password is pushed to the broker).

``acl_plan`` is pure: directory and topic names in, ACL bindings out. Applying
it (``apply_acls``) reconciles the broker's ACLs with the plan in one request
each way, over the INTERNAL listener as the super user. SCRAM users are created
at storage format time (``--add-scram``); a partner added to the directory
later gets its user at the next start, or at once with ``safer secure sync``
(Kafka's own ``ConfigCommand``, ``add_scram_user``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import re
import secrets
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
)
from aiokafka.protocol.api import Request
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consent import Directory
from schemas import BrokerError, ConfigError, ReasonCode

from ._config import ROUTER_ID, ClientAccess, Settings, load_deployment, read_credentials
from ._files import private_dir, write_java_argfile, write_private
from ._kafka_dist import KafkaDistribution
from ._local_kafka import Engine, LocalKafka, kafka_engine
from ._topics import Topics

__all__ = [
    "ADMIN_PRINCIPAL",
    "AUDIT_FEED_PRINCIPAL",
    "BROKER_PRINCIPAL",
    "MONITOR_PRINCIPAL",
    "ROUTER_PRINCIPAL",
    "SCRAM_MECHANISM",
    "AclBinding",
    "AclChanges",
    "AclOperation",
    "AclPermission",
    "AclResource",
    "PatternType",
    "SecureKafka",
    "SecureListeners",
    "acl_plan",
    "acl_table",
    "add_scram_user",
    "apply_acls",
    "issue_broker_certificate",
    "make_ca",
    "principals",
    "scram_format_arguments",
    "secure_kafka",
    "secure_kafka_engine",
]

_log = structlog.get_logger("safer.secure")

SCRAM_MECHANISM = "SCRAM-SHA-512"
#: The broker certificate's subject CN; its principal is the only super user.
BROKER_COMMON_NAME = "safer-kafka-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_COMMON_NAME}"
ROUTER_PRINCIPAL = ROUTER_ID
AUDIT_FEED_PRINCIPAL = "safer-audit-feed"
MONITOR_PRINCIPAL = "safer-monitor"
#: Runs the admin step (creates topics, sets their configs). Not a super user.
ADMIN_PRINCIPAL = "safer-admin"
_SERVICE_PRINCIPALS = (ROUTER_PRINCIPAL, AUDIT_FEED_PRINCIPAL, MONITOR_PRINCIPAL, ADMIN_PRINCIPAL)
# SCRAM user names travel inside SASL messages where ',' and '=' need escaping;
# directory ids never need it, and this keeps it so.
_PRINCIPAL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")

_CA_DAYS = 3650
_BROKER_DAYS = 730
_RENEW_BEFORE = dt.timedelta(days=30)
_DEFAULT_HOSTS = ("127.0.0.1", "localhost")


# --- the ACL plan (pure) ------------------------------------------------------------------


#: A binding as the ACL requests carry it: resource type, name, pattern type,
#: principal, host, operation, permission.
_Wire = tuple[int, str, int, str, str, int, int]


class AclResource(IntEnum):
    """Kafka's resource type codes (as on the wire)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class AclOperation(IntEnum):
    """Kafka's operation codes. READ, WRITE, DELETE and ALTER imply DESCRIBE."""

    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11


class AclPermission(IntEnum):
    DENY = 2
    ALLOW = 3


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ACL: ``permission`` ``principal`` to ``operation`` on a resource."""

    principal: str
    resource: AclResource
    name: str
    pattern: PatternType
    operation: AclOperation
    permission: AclPermission = AclPermission.ALLOW
    host: str = "*"

    def wire(self) -> _Wire:
        """The binding as CreateAcls v1 carries it (and as it is compared)."""
        return (
            int(self.resource),
            self.name,
            int(self.pattern),
            self.principal,
            self.host,
            int(self.operation),
            int(self.permission),
        )


def _user(name: str) -> str:
    return f"User:{name}"


def principals(directory: Directory) -> list[str]:
    """Every SCRAM user secure mode creates: the services, then each directory id.

    Raises:
        ConfigError: an id cannot be a Kafka user name, or two entries share one.
    """
    names = [
        *_SERVICE_PRINCIPALS,
        *(p.id for p in directory.publishers),
        *(r.id for r in directory.recipients),
    ]
    seen: set[str] = set()
    for name in names:
        if _PRINCIPAL_NAME.fullmatch(name) is None:
            raise ConfigError(
                f"directory id {name!r} cannot be a Kafka user name",
                code=ReasonCode.CONFIG_INVALID,
                hint="use lowercase letters, digits, '.', '_' and '-' in deploy/directory.toml ids",
            )
        if name in seen:
            raise ConfigError(
                f"{name!r} appears twice among the Kafka principals",
                code=ReasonCode.CONFIG_INVALID,
                hint="directory ids must be unique and must not be one of "
                + ", ".join(_SERVICE_PRINCIPALS),
            )
        seen.add(name)
    return names


def acl_plan(
    directory: Directory, topics: Topics, *, router_group: str = ROUTER_ID
) -> list[AclBinding]:
    """Every ACL binding of secure mode, least privilege, from the directory.

    * a publisher writes only its agency type's inbound topic and ``hips.consent``,
      and reads only its agency type's non-delivery notices;
    * a recipient reads only its own disclosure topic (and its partnership's
      triage topic if it is the front door), and writes receipts and consent
      records (`safer consent record` accepts any directory agency);
    * the router reads inbound, consent, its ledger (``hips.routed``) and the
      cumulative-concern signals (``hips.signals``), writes recipient topics,
      quarantine, audit, the ledger and the signals, in transactions whose
      ids start with ``router_group``, and
      commits offsets for that consumer group;
    * the audit feed reads audit and receipts; the monitor writes alerts,
      notices and audit;
    * the admin creates and configures ``<prefix>.*`` topics, writes key events
      (``hips.keys``, which every principal may read), and writes only the
      tombstones of ``hips.signals`` that a shred sends;
    * everyone (``User:*``) is DENIED delete, alter and alter-configs on the
      audit topic: a DENY beats any ALLOW, so no principal can shorten its
      retention, delete its records or delete it.

    Raises:
        ConfigError: from ``principals`` (an id that cannot be a user name).
    """
    principals(directory)  # validates every name
    allow, prefixed, literal = AclPermission.ALLOW, PatternType.PREFIXED, PatternType.LITERAL
    topic, op = AclResource.TOPIC, AclOperation
    plan: set[AclBinding] = set()

    def grant(who: str, operation: AclOperation, name: str, resource: AclResource = topic) -> None:
        pattern = prefixed if resource is AclResource.TRANSACTIONAL_ID else literal
        plan.add(AclBinding(_user(who), resource, name, pattern, operation, allow))

    agency_types = sorted({p.agency_type.value for p in directory.publishers})
    for publisher in directory.publishers:
        grant(publisher.id, op.WRITE, topics.inbound(publisher.agency_type.value))
        grant(publisher.id, op.WRITE, topics.consent)
        grant(publisher.id, op.READ, topics.notices(publisher.agency_type))
    for recipient in directory.recipients:
        grant(recipient.id, op.READ, topics.disclosures(recipient.lscp, recipient.agency_type))
        if recipient.front_door:
            grant(recipient.id, op.READ, topics.triage(recipient.lscp))
        grant(recipient.id, op.WRITE, topics.receipts)
        grant(recipient.id, op.WRITE, topics.consent)

    router = ROUTER_PRINCIPAL
    for agency_type in agency_types:
        grant(router, op.READ, topics.inbound(agency_type))
    grant(router, op.READ, topics.consent)
    # Its ledger of routed concerns (replay detection): written in each batch's
    # transaction, read back by every router at start.
    grant(router, op.READ, topics.routed)
    # Its cumulative-concern state per child pseudonym (issue 16): the same pattern.
    grant(router, op.READ, topics.signals)
    for name in [
        *topics.all_recipient_topics(),
        topics.quarantine,
        topics.audit,
        topics.routed,
        topics.signals,
    ]:
        grant(router, op.WRITE, name)
    grant(router, op.READ, router_group, AclResource.GROUP)
    grant(router, op.WRITE, router_group, AclResource.TRANSACTIONAL_ID)

    grant(AUDIT_FEED_PRINCIPAL, op.READ, topics.audit)
    grant(AUDIT_FEED_PRINCIPAL, op.READ, topics.receipts)

    for name in [topics.alerts, topics.audit, *(topics.notices(a) for a in agency_types)]:
        grant(MONITOR_PRINCIPAL, op.WRITE, name)

    # Key events (rotation, revocation): the admin writes them, everyone follows them.
    grant(ADMIN_PRINCIPAL, op.WRITE, topics.keys)
    readers = [
        ROUTER_PRINCIPAL,
        AUDIT_FEED_PRINCIPAL,
        MONITOR_PRINCIPAL,
        ADMIN_PRINCIPAL,
        *(p.id for p in directory.publishers),
        *(r.id for r in directory.recipients),
    ]
    for who in readers:
        grant(who, op.READ, topics.keys)

    # `safer audit shred` erases a subject's cumulative-concern counts (tombstones).
    grant(ADMIN_PRINCIPAL, op.WRITE, topics.signals)
    for operation in (op.CREATE, op.DESCRIBE, op.ALTER, op.DESCRIBE_CONFIGS, op.ALTER_CONFIGS):
        plan.add(
            AclBinding(_user(ADMIN_PRINCIPAL), topic, f"{topics.prefix}.", prefixed, operation)
        )

    for operation in (op.DELETE, op.ALTER, op.ALTER_CONFIGS):
        plan.add(AclBinding("User:*", topic, topics.audit, literal, operation, AclPermission.DENY))
    return sorted(plan)


def acl_table(plan: Iterable[AclBinding]) -> str:
    """The plan as a Markdown table, one row per principal and permission."""
    rows: dict[tuple[str, str], list[str]] = {}
    for binding in plan:
        resource = binding.resource.name.lower().replace("_", " ")
        name = binding.name + ("*" if binding.pattern is PatternType.PREFIXED else "")
        what = f"{binding.operation.name} {resource} `{name}`"
        rows.setdefault((binding.principal, binding.permission.name), []).append(what)
    lines = ["| principal | permission | operations and resources |", "|---|---|---|"]
    for (principal, permission), items in sorted(rows.items()):
        lines.append(f"| `{principal}` | {permission} | {'<br>'.join(sorted(items))} |")
    return "\n".join(lines) + "\n"


def scram_format_arguments(users: Mapping[str, str]) -> list[str]:
    """``kafka-storage format`` arguments that create each SCRAM-SHA-512 user."""
    arguments: list[str] = []
    for name, password in sorted(users.items()):
        if _PRINCIPAL_NAME.fullmatch(name) is None or not re.fullmatch(r"[A-Za-z0-9_-]+", password):
            raise ValueError("SCRAM user names and passwords must be plain tokens")
        arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    return arguments


# --- certificates (pure, apart from key generation) ------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(
    now: dt.datetime, *, common_name: str = "SAFER Exchange local CA"
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new CA key and its self-signed certificate (may sign end-entity certs only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_broker_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    *,
    hosts: Sequence[str] = _DEFAULT_HOSTS,
) -> x509.Certificate:
    """The broker's certificate: server and client auth (mutual TLS between nodes)."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name(BROKER_COMMON_NAME))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=_BROKER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _fingerprint(password: str) -> str:
    """Tells whether the broker holds the current password, without storing it (the
    passwords are 256-bit random tokens, so an unsalted hash reveals nothing)."""
    return hashlib.sha256(password.encode()).hexdigest()[:32]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8, protected by mode 0600: Kafka 4.4 reads only PKCS#8 PEM
    # keys and cannot decrypt the PBES2 encryption `cryptography` produces.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _hosts_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


# --- listeners ---------------------------------------------------------------------------------


class SecureListeners:
    """``ListenerSecurity`` of secure mode (broker/_local_kafka.py calls it)."""

    protocols: Mapping[str, str] = {
        "CLIENT": "SASL_SSL",
        "INTERNAL": "SSL",
        "CONTROLLER": "SSL",
    }

    def __init__(self, *, keystore: Path, truststore: Path, users: Mapping[str, str]) -> None:
        self._keystore = keystore
        self._truststore = truststore
        self._users = dict(users)
        self._lock = threading.Lock()
        #: Users handed to ``kafka-storage format`` by this object (so the broker has them).
        self.formatted: set[str] = set()

    def node_config(self, node_id: int, home: Path) -> dict[str, str]:
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self._keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self._truststore),
            # Mutual TLS on INTERNAL and CONTROLLER; clients authenticate with SCRAM.
            "ssl.client.auth": "required",
            "listener.name.client.ssl.client.auth": "none",
            "ssl.enabled.protocols": "TLSv1.3",
            "ssl.protocol": "TLSv1.3",
            "ssl.endpoint.identification.algorithm": "https",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.client.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.client.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": BROKER_PRINCIPAL,
        }

    def format_arguments(self) -> list[str]:
        with self._lock:
            self.formatted.update(self._users)
        return scram_format_arguments(self._users)

    def probe_context(self) -> ssl.SSLContext | None:
        return _broker_context(self._truststore, self._keystore)


def _broker_context(truststore: Path, keystore: Path) -> ssl.SSLContext:
    """TLS as the broker principal (the super user): INTERNAL listener only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=str(truststore))
    context.load_cert_chain(certfile=str(keystore))
    return context


# --- applying ACLs and users -----------------------------------------------------------------


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """CreateAcls v1 carrying every binding at once (aiokafka's builds one per request)."""

    API_KEY = 30

    def __init__(self, creations: list[_Wire]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(self._creations)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 31

    def __init__(self, filters: list[_Wire]) -> None:
        self._filters = filters

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(self._filters)


class _DescribeAllAcls(Request[DescribeAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 29

    def build(self, request_struct_class: type[Any]) -> Any:
        # resource type ANY, name null, pattern ANY, principal null, host null, operation
        # ANY, permission ANY: every binding the broker holds.
        return request_struct_class(1, None, 1, None, None, 1, 1)


@dataclass(frozen=True)
class AclChanges:
    created: int
    deleted: int
    total: int


async def _describe_acls(admin: AIOKafkaAdminClient) -> set[_Wire]:
    response = await admin._send_request(_DescribeAllAcls())
    if response.error_code:
        raise _acl_error("DescribeAcls", response.error_code, response.error_message)
    return {
        (rtype, rname, pattern, principal, host, operation, permission)
        for rtype, rname, pattern, acls in response.resources
        for principal, host, operation, permission in acls
    }


def _acl_error(request: str, code: int, message: str | None) -> BrokerError:
    authz = code in (29, 30, 31)  # topic, group, cluster authorization failed
    return BrokerError(
        f"{request} failed with Kafka error {code} ({message or 'no message'})",
        code=ReasonCode.NOT_AUTHORIZED if authz else ReasonCode.BROKER_UNAVAILABLE,
        retriable=not authz,
        hint="ACLs are applied as the broker principal over the INTERNAL listener; check "
        "super.users and the broker certificate under <data-dir>/kafka/secure",
    )


async def apply_acls(
    bootstrap_servers: str,
    ssl_context: ssl.SSLContext,
    plan: Sequence[AclBinding],
    *,
    timeout: float = 30.0,
) -> AclChanges:
    """Make the broker's ACLs exactly ``plan``: create what is missing, delete the rest.

    Connects as the super user (mutual TLS on INTERNAL). One CreateAcls and one
    DeleteAcls request carry every change; then waits until the broker's own
    authorizer lists exactly the plan, so a client started next is judged by it.
    The directory is the only source: ACLs added by hand are removed.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        security_protocol="SSL",
        ssl_context=ssl_context,
        client_id="safer-secure",
    )
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerError(
            f"cannot reach the INTERNAL listener at {bootstrap_servers} ({type(exc).__name__})",
            hint="the broker may still be starting; try again",
        ) from None
    wanted = {b.wire() for b in plan}
    try:
        existing = await _describe_acls(admin)
        missing = sorted(wanted - existing)
        extra = sorted(existing - wanted)
        if missing:
            response = await admin._send_request(_CreateAcls(missing))
            for code, message in response.creation_responses:
                if code:
                    raise _acl_error("CreateAcls", code, message)
        if extra:
            response = await admin._send_request(_DeleteAcls(extra))
            for code, message, _matching in response.filter_responses:
                if code:
                    raise _acl_error("DeleteAcls", code, message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (current := await _describe_acls(admin)) != wanted:
            if loop.time() > deadline:
                raise BrokerError(
                    f"the broker lists {len(current)} ACLs, not the {len(wanted)} planned, "
                    f"after {timeout:g} s",
                    hint="the broker may be overloaded; start it again",
                )
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    _log.info("secure.acls_applied", created=len(missing), deleted=len(extra), total=len(wanted))
    return AclChanges(created=len(missing), deleted=len(extra), total=len(wanted))


def add_scram_user(
    dist: KafkaDistribution,
    *,
    bootstrap_servers: str,
    command_config: Path,
    name: str,
    password: str | None,
    workdir: Path,
) -> None:
    """Create (or, with ``password=None``, delete) one SCRAM-SHA-512 user on a running broker.

    Runs Kafka's own ``ConfigCommand`` as the super user over INTERNAL; the
    password goes through a private Java argument file, never the process list.
    """
    tool = [
        "org.apache.kafka.tools.ConfigCommand",
        "--bootstrap-server",
        bootstrap_servers,
        "--command-config",
        str(command_config),
        "--alter",
        "--entity-type",
        "users",
        "--entity-name",
        name,
    ]
    if password is None:
        tool += ["--delete-config", SCRAM_MECHANISM]
    else:
        scram_format_arguments({name: password})  # validates both
        tool += ["--add-config", f"{SCRAM_MECHANISM}=[password={password}]"]
    argfile = workdir / f".config-command.{secrets.token_hex(4)}.args"
    write_java_argfile(argfile, tool)
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv
            [
                str(dist.java),
                "-Xmx128m",
                "-XX:TieredStopAtLevel=1",  # a short-lived tool: start fast
                "-XX:+UseSerialGC",
                "-cp",
                dist.classpath,
                f"@{argfile}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        argfile.unlink(missing_ok=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BrokerError(
            f"ConfigCommand could not {'delete' if password is None else 'create'} Kafka "
            f"user {name!r}: {tail[0][:200]}",
            retriable=True,
            hint="check that the secure broker is running (`safer up --secure`), then try again",
        )


# --- the material of one data directory --------------------------------------------------------


@dataclass
class SecureKafka:
    """Secure mode's CA, broker certificate, SCRAM users and ACLs for one data directory.

    ``prepare()`` creates what is missing (and renews a broker certificate that
    is about to expire); ``listeners()`` configures the nodes; after they start,
    ``provision()`` creates users added since the storage was formatted and
    reconciles the ACLs with the directory.
    """

    folder: Path
    directory: Directory
    topics: Topics
    hosts: Sequence[str] = _DEFAULT_HOSTS
    router_group: str = ROUTER_ID
    progress: Callable[[str], None] = field(default=lambda _: None)
    _listeners: SecureListeners | None = field(default=None, init=False, repr=False)

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        return self.folder / "ca.key"

    @property
    def keystore(self) -> Path:
        """Broker key + certificate + CA, one PEM (what Kafka's PEM keystore reads)."""
        return self.folder / "broker.pem"

    @property
    def credentials_file(self) -> Path:
        return self.folder / "credentials.json"

    @property
    def registered_file(self) -> Path:
        return self.folder / "registered.json"

    @property
    def command_config(self) -> Path:
        """Java client properties for Kafka's tools, as the super user over INTERNAL."""
        return self.folder / "broker-client.properties"

    def principals(self) -> list[str]:
        return principals(self.directory)

    def plan(self) -> list[AclBinding]:
        return acl_plan(self.directory, self.topics, router_group=self.router_group)

    # -- files --

    def prepare(self, now: dt.datetime | None = None) -> list[str]:
        """Create the CA, the broker certificate and passwords that are missing.

        Returns what was made. Existing material is kept, except a broker
        certificate that expires within 30 days, names other hosts, or was not
        issued by this CA: that one is re-issued.
        """
        now = now or dt.datetime.now(dt.UTC)
        private_dir(self.folder)
        made: list[str] = []
        ca_key, ca_cert = self._ca(now, made)
        self._broker(ca_key, ca_cert, now, made)
        users = self._users()
        new = [p for p in self.principals() if p not in users]
        if new:
            users.update({name: secrets.token_urlsafe(32) for name in new})
            self._save_users(users)
            made.append(f"SCRAM passwords for {len(new)} principal(s)")
        write_private(
            self.command_config,
            (
                "security.protocol=SSL\n"
                "ssl.keystore.type=PEM\n"
                f"ssl.keystore.location={self.keystore}\n"
                "ssl.truststore.type=PEM\n"
                f"ssl.truststore.location={self.ca_file}\n"
            ).encode(),
        )
        for item in made:
            self.progress(f"secure: created {item} in {self.folder}")
        return made

    def _ca(
        self, now: dt.datetime, made: list[str]
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self.ca_key_file.exists() and self.ca_file.exists():
            key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), None)
            cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ConfigError(
                    f"{self.ca_key_file} is not an EC key",
                    hint=f"delete {self.folder} to make a new CA (clients must trust the new one)",
                )
            if cert.not_valid_after_utc - _RENEW_BEFORE > now:
                return key, cert
            made.append("a new CA (the old one expires within 30 days)")
        else:
            made.append("a local CA")
        key, cert = make_ca(now)
        write_private(self.ca_key_file, _key_pem(key))
        write_private(self.ca_file, _pem(cert), mode=0o644)
        self.keystore.unlink(missing_ok=True)  # issued by the old CA, if any
        return key, cert

    def _broker(
        self,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        now: dt.datetime,
        made: list[str],
    ) -> None:
        if self.keystore.exists():
            certs = x509.load_pem_x509_certificates(self.keystore.read_bytes())
            leaf = certs[0]
            try:
                leaf.verify_directly_issued_by(ca_cert)
                current = leaf.not_valid_after_utc - _RENEW_BEFORE > now and _hosts_of(leaf) == set(
                    self.hosts
                )
            except (ValueError, TypeError, InvalidSignature):
                current = False
            if current:
                return
            made.append("a renewed broker certificate")
        else:
            made.append("a broker certificate")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue_broker_certificate(ca_key, ca_cert, key, now, hosts=self.hosts)
        write_private(self.keystore, _key_pem(key) + _pem(cert) + _pem(ca_cert))

    def _users(self) -> dict[str, str]:
        if not self.credentials_file.exists():
            return {}
        return read_credentials(self.credentials_file)

    def _save_users(self, users: Mapping[str, str]) -> None:
        document = {"mechanism": SCRAM_MECHANISM, "users": dict(sorted(users.items()))}
        write_private(self.credentials_file, (json.dumps(document, indent=1) + "\n").encode())

    # -- what the nodes and clients need --

    def listeners(self) -> SecureListeners:
        """The nodes' listener security (call ``prepare()`` first)."""
        if self._listeners is None:
            self._listeners = SecureListeners(
                keystore=self.keystore, truststore=self.ca_file, users=self._users()
            )
        return self._listeners

    def client_access(self) -> ClientAccess:
        return ClientAccess(
            cafile=self.ca_file,
            credentials_file=self.credentials_file,
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
        )

    def broker_context(self) -> ssl.SSLContext:
        return _broker_context(self.ca_file, self.keystore)

    # -- on a running broker --

    def _registered(self, cluster_id: str) -> dict[str, str]:
        """User → fingerprint of the password the broker holds for it."""
        try:
            data = json.loads(self.registered_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if data.get("cluster_id") != cluster_id or not isinstance(data.get("users"), dict):
            return {}  # another cluster (the storage was formatted again)
        return {str(k): str(v) for k, v in data["users"].items()}

    def _save_registered(self, cluster_id: str, users: Mapping[str, str]) -> None:
        document = {"cluster_id": cluster_id, "users": dict(sorted(users.items()))}
        write_private(self.registered_file, (json.dumps(document, indent=1) + "\n").encode())

    async def provision(self, kafka: LocalKafka) -> list[str]:
        """On the running ``kafka``: create missing SCRAM users, update changed passwords,
        delete departed users, and make the ACLs exactly the plan. Returns what changed.

        Users go first: waiting for the broker to list the new ACLs then also
        covers the user records, which the metadata log applies in order.
        """
        users = self._users()
        wanted = set(self.principals())
        if wanted - set(users):
            raise ConfigError(
                f"no SCRAM password yet for {len(wanted - set(users))} principal(s)",
                code=ReasonCode.CONFIG_INVALID,
                hint="call SecureKafka.prepare() before provision() (safer up --secure does)",
            )
        cluster_id = kafka.cluster_id
        registered = self._registered(cluster_id)
        if self._listeners is not None:
            registered.update({u: _fingerprint(users[u]) for u in self._listeners.formatted})
        changes: list[str] = []
        for name in sorted(wanted):
            if registered.get(name) == _fingerprint(users[name]):
                continue
            known = name in registered
            what = f"{'the new password of' if known else 'new'} Kafka user {name}"
            self.progress(f"secure: sending {what} to the broker (ConfigCommand)")
            await asyncio.to_thread(self._config_command, kafka, name, users[name])
            registered[name] = _fingerprint(users[name])
            self._save_registered(cluster_id, registered)
            changes.append(f"{'updated password of' if known else 'created'} Kafka user {name}")
        for name in sorted(set(registered) - wanted):
            self.progress(f"secure: deleting Kafka user {name}, no longer in the directory")
            await asyncio.to_thread(self._config_command, kafka, name, None)
            del registered[name]
            self._save_registered(cluster_id, registered)
            changes.append(f"deleted Kafka user {name}")
        self._save_registered(cluster_id, registered)
        if set(users) - wanted:
            self._save_users({k: v for k, v in users.items() if k in wanted})
        acls = await apply_acls(
            kafka.internal_bootstrap_servers, self.broker_context(), self.plan()
        )
        if acls.created or acls.deleted:
            changes.append(
                f"ACLs: {acls.created} created, {acls.deleted} deleted, {acls.total} in force"
            )
        self.progress(
            f"secure: {len(wanted)} principals, {acls.total} ACLs in force "
            f"(DENY delete/alter on {self.topics.audit} for everyone)"
        )
        return changes

    def _config_command(self, kafka: LocalKafka, name: str, password: str | None) -> None:
        add_scram_user(
            kafka.distribution,
            bootstrap_servers=kafka.internal_bootstrap_servers,
            command_config=self.command_config,
            name=name,
            password=password,
            workdir=self.folder,
        )


def secure_kafka(settings: Settings, progress: Callable[[str], None] | None = None) -> SecureKafka:
    """The secure-mode material of ``settings``' data directory (``<data-dir>/kafka/secure``)."""
    return SecureKafka(
        folder=settings.kafka_home / "secure",
        directory=load_deployment(settings.deploy_dir).directory,
        topics=settings.topics,
        progress=progress or (lambda _: None),
    )


@asynccontextmanager
async def secure_kafka_engine(
    settings: Settings,
    *,
    port: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> AsyncIterator[Engine]:
    """The local Apache Kafka in secure mode, users and ACLs in place; stops at the end.

    The ``Engine`` it yields carries ``access``: the CA and credentials file that
    clients use (each as its own principal).

    Raises:
        ConfigError: ``KAFKA_BOOTSTRAP_SERVERS`` is set (secure an external cluster
            with its own tooling, then set ``KAFKA_SECURITY_PROTOCOL`` and friends).
    """
    if settings.bootstrap_servers:
        raise ConfigError(
            "--secure starts a local secured Kafka, but KAFKA_BOOTSTRAP_SERVERS is set",
            code=ReasonCode.CONFIG_INVALID,
            hint="unset KAFKA_BOOTSTRAP_SERVERS, or secure that cluster and set "
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL, KAFKA_SASL_MECHANISM=SCRAM-SHA-512, "
            "KAFKA_SSL_CAFILE and SAFER_KAFKA_CREDENTIALS instead",
        )
    secure = secure_kafka(settings, progress)
    secure.prepare()
    with kafka_engine(
        settings, port=port, progress=progress, security=secure.listeners()
    ) as engine:
        if engine.local is None:  # pragma: no cover - kafka_engine starts one when unset
            raise BrokerError("no local Kafka was started", retriable=False)
        await secure.provision(engine.local)
        yield Engine(engine.bootstrap_servers, engine.name, engine.local, secure.client_access())
