"""Settings and the deployment files the services load at start."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from consent import (
    Calendars,
    Directory,
    LocalTimeliness,
    PolicySet,
    parse_calendars,
    parse_directory,
    parse_local_timeliness,
    parse_policy,
)
from schemas import ConfigError, ReasonCode

from ._routing import PostcodeTable, parse_postcode_table
from ._topics import TopicLayout, Topics

__all__ = [
    "ROUTER_ID",
    "ClientAccess",
    "Deployment",
    "Settings",
    "default_deploy_dir",
    "load_deployment",
    "read_credentials",
]

#: Key-store identity the router signs with.
ROUTER_ID = "safer-router"


def default_deploy_dir() -> Path:
    here = Path.cwd() / "deploy"
    if (here / "directory.toml").exists():
        return here
    return Path(__file__).resolve().parents[1] / "deploy"


class Settings(BaseModel):
    """Where things are and which Kafka to use.

    Read from the environment by ``from_env``:
    ``SAFER_DATA_DIR`` (default ``./.safer``), ``SAFER_DEPLOY_DIR``,
    ``SAFER_TOPIC_PREFIX`` (default ``hips``), ``KAFKA_BOOTSTRAP_SERVERS`` (unset:
    start the embedded broker), and for a real cluster ``KAFKA_SECURITY_PROTOCOL``,
    ``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``,
    ``KAFKA_SSL_CAFILE``, and ``SAFER_KAFKA_CREDENTIALS`` (a credentials file as
    secure mode writes it: each service then connects as its own principal,
    see ``ClientAccess``); ``SAFER_DELIVERY_EXPIRY_MINUTES`` (default 240) for
    non-delivery reports; ``SAFER_INBOUND_PARTITIONS`` (default 12),
    ``SAFER_REPLICATION_FACTOR`` and ``SAFER_MIN_INSYNC_REPLICAS`` (default 1, on
    a 3-broker cluster 3 and 2) for the topics the admin step creates.
    """

    model_config = ConfigDict(frozen=True)

    data_dir: Path = Path(".safer")
    deploy_dir: Path = Path("deploy")
    topic_prefix: str = "hips"
    bootstrap_servers: str | None = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    #: Password per principal (``{"users": {name: password}}``, mode 0600): with it,
    #: every service authenticates as itself instead of as ``sasl_username``.
    kafka_credentials: Path | None = None
    #: A disclosure not received within this many minutes gets a non-delivery report.
    delivery_expiry_minutes: int = 240
    #: Partitions of each inbound topic: how many routers can share the work.
    inbound_partitions: int = 12
    #: Copies of every topic, and how many must acknowledge a write (DESIGN §6).
    replication_factor: int = 1
    min_insync_replicas: int = 1

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = os.environ
        values: dict[str, Any] = {
            "data_dir": Path(env.get("SAFER_DATA_DIR", ".safer")),
            "deploy_dir": Path(env["SAFER_DEPLOY_DIR"])
            if "SAFER_DEPLOY_DIR" in env
            else default_deploy_dir(),
            "topic_prefix": env.get("SAFER_TOPIC_PREFIX", "hips"),
            "bootstrap_servers": env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            "security_protocol": env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            "sasl_mechanism": env.get("KAFKA_SASL_MECHANISM"),
            "sasl_username": env.get("KAFKA_SASL_USERNAME"),
            "sasl_password": env.get("KAFKA_SASL_PASSWORD"),
            "ssl_cafile": env.get("KAFKA_SSL_CAFILE"),
            "kafka_credentials": Path(env["SAFER_KAFKA_CREDENTIALS"])
            if env.get("SAFER_KAFKA_CREDENTIALS")
            else None,
            "delivery_expiry_minutes": int(env.get("SAFER_DELIVERY_EXPIRY_MINUTES", "240")),
            "inbound_partitions": int(env.get("SAFER_INBOUND_PARTITIONS", "12")),
            "replication_factor": int(env.get("SAFER_REPLICATION_FACTOR", "1")),
            "min_insync_replicas": int(env.get("SAFER_MIN_INSYNC_REPLICAS", "1")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def topic_layout(self) -> TopicLayout:
        return TopicLayout(
            inbound_partitions=self.inbound_partitions,
            replication_factor=self.replication_factor,
            min_insync_replicas=self.min_insync_replicas,
        )

    @property
    def kafka_home(self) -> Path:
        """Where the local Apache Kafka keeps its data (`safer up`, `safer broker`)."""
        return self.data_dir / "kafka"

    @property
    def cluster_home(self) -> Path:
        """Where the local 3-node cluster keeps its data (`safer cluster up`)."""
        return self.data_dir / "cluster"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def audit_db(self) -> Path:
        return self.data_dir / "audit.db"

    @property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"

    @property
    def registry_file(self) -> Path:
        return self.data_dir / "registry.json"

    def kafka_security(self, principal: str | None = None) -> dict[str, Any]:
        """aiokafka keyword arguments for a secured cluster (just the protocol on plaintext).

        With ``kafka_credentials`` and a ``principal``, the client authenticates as
        that principal with its password from the file; otherwise as
        ``sasl_username``.
        """
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.sasl_mechanism:
            username, password = self.sasl_username, self.sasl_password
            if principal is not None and self.kafka_credentials is not None:
                username = principal
                password = _password(read_credentials(self.kafka_credentials), principal)
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=username,
                sasl_plain_password=password,
            )
        return options


def read_credentials(path: Path) -> dict[str, str]:
    """Principal → SCRAM password, from a credentials file (``{"users": {...}}``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        users = data["users"]
        if not isinstance(users, dict):
            raise TypeError("users is not a table")
        return {str(k): str(v) for k, v in users.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"cannot read Kafka credentials from {path} ({type(exc).__name__})",
            code=ReasonCode.CONFIG_INVALID,
            hint="start the secure broker with `safer up --secure` (it writes the file), or "
            'point SAFER_KAFKA_CREDENTIALS at a file of the form {"users": {name: password}}',
        ) from None


def _password(users: Mapping[str, str], principal: str) -> str:
    password = users.get(principal)
    if password is None:
        raise ConfigError(
            f"no Kafka credentials for principal {principal!r}",
            code=ReasonCode.NOT_AUTHORIZED,
            hint="add the agency to deploy/directory.toml and restart `safer up --secure`, "
            "which creates its Kafka user and ACLs",
        )
    return password


@dataclass(frozen=True)
class ClientAccess:
    """How clients reach a secured broker: TLS trust, SCRAM, a password per principal.

    Secure mode writes the CA and the credentials file under the data directory
    and advertises this (paths only, never a password) in ``broker.json``, so
    client commands (`safer publish`, `safer inbox ...`) connect as the right
    principal without any environment variables.
    """

    cafile: Path
    credentials_file: Path
    security_protocol: str = "SASL_SSL"
    sasl_mechanism: str = "SCRAM-SHA-512"

    def security(self, principal: str) -> dict[str, Any]:
        """aiokafka keyword arguments that authenticate as ``principal``."""
        password = _password(read_credentials(self.credentials_file), principal)
        return {
            "security_protocol": self.security_protocol,
            "ssl_context": ssl.create_default_context(cafile=str(self.cafile)),
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": principal,
            "sasl_plain_password": password,
        }

    def to_json(self) -> dict[str, str]:
        return {
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "cafile": str(self.cafile),
            "credentials_file": str(self.credentials_file),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClientAccess:
        return cls(
            cafile=Path(str(data["cafile"])),
            credentials_file=Path(str(data["credentials_file"])),
            security_protocol=str(data.get("security_protocol", "SASL_SSL")),
            sasl_mechanism=str(data.get("sasl_mechanism", "SCRAM-SHA-512")),
        )


@dataclass(frozen=True)
class Deployment:
    directory: Directory
    policy: PolicySet
    postcodes: PostcodeTable
    #: School holidays and bank holidays for deadlines; None when deploy/ has none.
    calendars: Calendars | None = None
    #: The local clocks for MEDIUM, LOW and notifications (deploy/timeliness.toml), if any.
    timeliness: LocalTimeliness | None = None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path} ({exc.strerror})",
            code=ReasonCode.CONFIG_INVALID,
            hint="run from the repository root or set SAFER_DEPLOY_DIR to the deploy/ folder",
        ) from None


def load_deployment(deploy_dir: Path) -> Deployment:
    """Load and validate the directory, the policy files and the postcode table."""
    policy_dir = deploy_dir / "policy"
    policy_files = sorted(policy_dir.glob("*.toml")) if policy_dir.is_dir() else []
    if not policy_files:
        raise ConfigError(
            f"no policy files in {policy_dir}",
            code=ReasonCode.CONFIG_INVALID,
            hint="set SAFER_DEPLOY_DIR to a deploy/ folder that has policy/*.toml",
        )
    directory_file = deploy_dir / "directory.toml"
    postcode_file = deploy_dir / "postcode_districts.toml"
    calendar_dir = deploy_dir / "calendars"
    calendar_files = sorted(calendar_dir.glob("*.toml")) if calendar_dir.is_dir() else []
    timeliness_file = deploy_dir / "timeliness.toml"
    return Deployment(
        directory=parse_directory(_read(directory_file), str(directory_file)),
        policy=parse_policy({str(p): _read(p) for p in policy_files}),
        postcodes=parse_postcode_table(_read(postcode_file), str(postcode_file)),
        calendars=parse_calendars({str(p): _read(p) for p in calendar_files})
        if calendar_files
        else None,
        timeliness=parse_local_timeliness(_read(timeliness_file), str(timeliness_file))
        if timeliness_file.is_file()
        else None,
    )
