"""Settings and the deployment files the services load at start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from consent import Calendars, Directory, PolicySet, parse_calendars, parse_directory, parse_policy
from schemas import ConfigError, ReasonCode

from ._routing import PostcodeTable, parse_postcode_table
from ._topics import TopicLayout, Topics

__all__ = ["ROUTER_ID", "Deployment", "Settings", "default_deploy_dir", "load_deployment"]

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
    ``KAFKA_SSL_CAFILE``; ``SAFER_DELIVERY_EXPIRY_MINUTES`` (default 240) for
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

    def kafka_security(self) -> dict[str, Any]:
        """aiokafka keyword arguments for a secured cluster (empty on plaintext)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            options["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.sasl_mechanism:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options


@dataclass(frozen=True)
class Deployment:
    directory: Directory
    policy: PolicySet
    postcodes: PostcodeTable
    #: School holidays and bank holidays for deadlines; None when deploy/ has none.
    calendars: Calendars | None = None


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
    return Deployment(
        directory=parse_directory(_read(directory_file), str(directory_file)),
        policy=parse_policy({str(p): _read(p) for p in policy_files}),
        postcodes=parse_postcode_table(_read(postcode_file), str(postcode_file)),
        calendars=parse_calendars({str(p): _read(p) for p in calendar_files})
        if calendar_files
        else None,
    )
