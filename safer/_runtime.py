"""Wiring: builds the router, audit feed and adapters from settings.

The only place that knows every package; each service is built from the same
settings, deployment files and key store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import structlog

from adapters import Inbox, PoliceAdapter, RecipientAdapter, RetryPolicy, WebhookSender
from audit import (
    DEFAULT_ORIGIN,
    AuditStore,
    LogKey,
    LogSigner,
    SubjectVault,
    derive_vault_key,
    enrol_subjects,
    vault_path_for,
)
from broker import (
    ADMIN_PRINCIPAL,
    AUDIT_FEED_PRINCIPAL,
    KEY_ADMIN_ID,
    MONITOR_PRINCIPAL,
    ROUTER_ID,
    ROUTER_PRINCIPAL,
    AuditFeed,
    ClientAccess,
    ConsentView,
    Deployment,
    KeyFollower,
    Keyring,
    KeyStore,
    Plan,
    RoutedLedger,
    Router,
    RouterCore,
    Settings,
    SignalStore,
    TimelinessMonitor,
    TopicSpec,
    child_preexec,
    create_topics,
    load_deployment,
    pseudonym,
    topic_plan,
)
from consent import Publisher, Recipient, retention_days
from schemas import (
    AgencyType,
    BrokerError,
    Codec,
    ConfigError,
    ConfluentRegistry,
    EmbeddedRegistry,
    ReasonCode,
    Registry,
)

__all__ = [
    "AUDIT_LOG_ID",
    "BROKER_FILE",
    "RECIPIENTS_READY_LINE",
    "ROUTER_READY_LINE",
    "Runtime",
    "adopt_running_engine",
    "advertised_access",
    "refuse_second_engine",
    "resolve_bootstrap",
    "running_engine",
    "write_broker_file",
]

_log = structlog.get_logger("safer")

#: What `safer route` prints on stdout once it routes (`safer up` waits for it).
ROUTER_READY_LINE = "ROUTER READY"
#: What `safer recipients` prints once every recipient adapter reads its topics.
RECIPIENTS_READY_LINE = "RECIPIENTS READY"

#: Where a running `safer up` / `safer broker` advertises its embedded broker.
BROKER_FILE = "broker.json"

#: Key-store identity whose Ed25519 key signs audit-log checkpoints. It is not in
#: the keyring: nothing on Kafka is signed with it.
AUDIT_LOG_ID = "safer-audit-log"


def write_broker_file(
    data_dir: Path,
    bootstrap: str,
    access: ClientAccess | None = None,
    *,
    replication_factor: int = 1,
    min_insync_replicas: int = 1,
) -> Path:
    """Advertise the local engine this process runs to client commands on this data dir:
    where it listens, how its topics are replicated, and in secure mode the CA and the
    credentials file (paths only, never a password), so `safer publish` or `safer inbox`
    connect as their own principal."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / BROKER_FILE
    info: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "pid": os.getpid(),
        "replication_factor": replication_factor,
        "min_insync_replicas": min_insync_replicas,
    }
    if access is not None:
        info["access"] = access.to_json()
    path.write_text(json.dumps(info))
    return path


def advertised_access(settings: Settings, bootstrap: str) -> ClientAccess | None:
    """How to reach the local broker at ``bootstrap``, as its `safer up --secure` advertises
    it in ``broker.json``; None for a plaintext one (or none running)."""
    path = settings.data_dir / BROKER_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("bootstrap_servers") != bootstrap:
        return None
    try:
        return ClientAccess.from_json(info["access"])
    except (KeyError, TypeError):
        return None  # plaintext: the file names no CA or credentials


def running_engine(settings: Settings) -> dict[str, Any] | None:
    """What a live `safer up` / `safer broker` / `safer cluster up` on this data dir advertises."""
    path = settings.data_dir / BROKER_FILE
    if not path.exists():
        return None
    try:
        info: dict[str, Any] = json.loads(path.read_text())
        pid = int(info.get("pid", 0))
    except (OSError, ValueError, TypeError):
        return None
    if pid and Path(f"/proc/{pid}").exists():
        return info
    return None


def adopt_running_engine(settings: Settings) -> Settings:
    """Settings with the topic layout of the local engine that runs on this data dir.

    With no KAFKA_BOOTSTRAP_SERVERS, client commands talk to the engine that
    ``broker.json`` advertises; topics they create or reconcile (``safer topics
    create``, ``safer route``) must keep that engine's replication, so a command
    run beside `safer cluster up` never resets ``min.insync.replicas`` to 1.
    """
    if settings.bootstrap_servers:
        return settings
    info = running_engine(settings)
    if info is None or "replication_factor" not in info:
        return settings
    return settings.model_copy(
        update={
            "replication_factor": int(info["replication_factor"]),
            "min_insync_replicas": int(info["min_insync_replicas"]),
        }
    )


def registry_from_env(path: Path) -> Registry:
    """The embedded registry at ``path``, or a Confluent-compatible one by configuration.

    ``SAFER_SCHEMA_REGISTRY_URL`` selects a Confluent-compatible registry, with
    ``SAFER_SCHEMA_REGISTRY_AUTH`` (``user:password``, basic auth) or
    ``SAFER_SCHEMA_REGISTRY_TOKEN`` (bearer) and ``SAFER_SCHEMA_REGISTRY_CAFILE``
    (docs/schema-registry.md). Every publisher and router of a deployment must
    use the same one: ids are the registry's.
    """
    url = os.environ.get("SAFER_SCHEMA_REGISTRY_URL", "").strip()
    if not url:
        return EmbeddedRegistry(path)
    user_info = os.environ.get("SAFER_SCHEMA_REGISTRY_AUTH", "")
    token = os.environ.get("SAFER_SCHEMA_REGISTRY_TOKEN", "")
    auth: tuple[str, str] | str | None = None
    if user_info:
        user, sep, password = user_info.partition(":")
        if not sep:
            raise ConfigError(
                "SAFER_SCHEMA_REGISTRY_AUTH must be user:password",
                code=ReasonCode.CONFIG_INVALID,
            )
        auth = (user, password)
    elif token:
        auth = token
    cafile = os.environ.get("SAFER_SCHEMA_REGISTRY_CAFILE", "")
    return ConfluentRegistry(url, auth=auth, verify=cafile or True)


def refuse_second_engine(settings: Settings) -> None:
    """Raise if another process already runs a local engine on this data directory.

    Two engines on one data dir would mean two audit feeds writing one audit log.
    """
    if settings.bootstrap_servers:
        return
    info = running_engine(settings)
    if info is not None and int(info.get("pid", 0)) != os.getpid():
        raise BrokerError(
            f"another safer process (pid {info.get('pid')}) already runs Kafka for "
            f"{settings.data_dir} at {info.get('bootstrap_servers')}",
            code=ReasonCode.CONFIG_INVALID,
            retriable=False,
            hint="stop it first (Ctrl-C in its terminal), or use another --data-dir; "
            "other safer commands talk to the running one as they are",
        )


def resolve_bootstrap(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the local engine a running `safer up` advertises."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    info = running_engine(settings)
    if info is not None:
        return str(info["bootstrap_servers"])
    raise BrokerError(
        "no Kafka broker to talk to",
        code=ReasonCode.BROKER_UNAVAILABLE,
        retriable=True,
        hint="start one with `safer up` (or `safer broker`, `safer cluster up`) in another "
        "terminal, or set KAFKA_BOOTSTRAP_SERVERS",
    )


@dataclass
class Runtime:
    """Every service, built from one set of settings.

    ``access`` says how clients authenticate to a secured broker; each service
    then connects as its own principal (``security_for``). When it is not
    given, a local broker advertised in ``broker.json`` supplies it; on
    plaintext it stays None.
    """

    settings: Settings
    bootstrap: str
    access: ClientAccess | None = None

    def __post_init__(self) -> None:
        if self.access is None and self.bootstrap and not self.settings.bootstrap_servers:
            self.access = advertised_access(self.settings, self.bootstrap)

    @cached_property
    def deployment(self) -> Deployment:
        return load_deployment(self.settings.deploy_dir)

    @cached_property
    def keys(self) -> KeyStore:
        return KeyStore(self.settings.keys_dir)

    @cached_property
    def codec(self) -> Codec:
        return Codec(registry_from_env(self.settings.registry_file))

    def security_for(self, principal: str) -> dict[str, Any]:
        """aiokafka keyword arguments for a client acting as ``principal``.

        Secure mode: SASL_SSL as that SCRAM user. An external cluster: as its
        ``KAFKA_*`` settings say (per principal with ``SAFER_KAFKA_CREDENTIALS``).
        A local plaintext broker: nothing.
        """
        if self.access is not None:
            return self.access.security(principal)
        if self.settings.bootstrap_servers:
            return self.settings.kafka_security(principal)
        return {}

    @property
    def security(self) -> dict[str, Any]:
        """Client settings that name no principal: plaintext or one shared external user.

        Raises:
            ConfigError: in secure mode, where every client must say who it is
                (use ``security_for``).
        """
        if self.access is not None:
            raise ConfigError(
                "a client on the secure broker must connect as a named principal",
                code=ReasonCode.NOT_AUTHORIZED,
                hint="build it with Runtime.security_for(principal)",
            )
        return self.settings.kafka_security() if self.settings.bootstrap_servers else {}

    def publisher(self, agency: str = "police") -> Publisher:
        """The directory's publisher of agency type ``agency`` (the first one listed)."""
        publishers = [
            p for p in self.deployment.directory.publishers if p.agency_type.value == agency
        ]
        if not publishers:
            raise ConfigError(
                f"no publisher of agency type {agency!r} in the directory",
                code=ReasonCode.UNKNOWN_PUBLISHER,
                hint="add a [[publisher]] to deploy/directory.toml",
            )
        return publishers[0]

    def identities(self) -> list[str]:
        directory = self.deployment.directory
        return [
            ROUTER_ID,
            *(p.id for p in directory.publishers),
            *(r.id for r in directory.recipients),
        ]

    def key_identities(self) -> list[str]:
        """Every identity with keys: those on Kafka, the audit log's checkpoint signer and
        the key administrator (signs key events on hips.keys)."""
        return [*self.identities(), AUDIT_LOG_ID, KEY_ADMIN_ID]

    def key_follower(self, principal: str, keyrings: Sequence[Keyring] = ()) -> KeyFollower | None:
        """A follower of ``hips.keys`` for ``keyrings``, or None before `safer keys init`
        has made the key administrator (older data directories)."""
        if not self.keys.has_agency(KEY_ADMIN_ID):
            return None
        return KeyFollower(
            topic=self.settings.topics.keys,
            bootstrap_servers=self.bootstrap,
            admin_key=self.keys.signing_public(KEY_ADMIN_ID),
            keyrings=keyrings,
            security=self.security_for(principal),
        )

    def init_keys(self, *, overwrite: bool = False) -> int:
        """Create development keys for every identity; returns how many were new."""
        created = int(self.keys.init_pseudonym_secret())
        for identity in self.key_identities():
            created += int(self.keys.init_agency(identity, overwrite=overwrite))
        return created

    def log_signer(self) -> LogSigner:
        """The audit log's checkpoint signer (C2SP signed notes)."""
        return LogSigner(DEFAULT_ORIGIN, self.keys.signing_identity(AUDIT_LOG_ID).private_key)

    def log_key(self) -> LogKey:
        """The audit log's public key, as auditors verify checkpoints with it."""
        return LogKey(DEFAULT_ORIGIN, self.keys.signing_public(AUDIT_LOG_ID))

    def audit_store(self) -> AuditStore:
        """The audit store of this data directory, signing checkpoints with the log key."""
        return AuditStore(self.settings.audit_db, signer=self.log_signer())

    def keyring(self) -> Keyring:
        missing = [i for i in self.identities() if not self.keys.has_agency(i)]
        if missing:
            raise ConfigError(
                f"no keys for {len(missing)} identities (first: {missing[0]})",
                code=ReasonCode.KEY_MISSING,
                hint="run `safer keys init` to create development keys",
            )
        return self.keys.keyring(self.identities())

    def topic_specs(self) -> list[TopicSpec]:
        """Every topic, with its partitions, replication and retention (broker/_topics.py)."""
        return topic_plan(
            self.settings.topics,
            self.settings.topic_layout,
            publisher_agency_types=[
                p.agency_type.value for p in self.deployment.directory.publishers
            ],
            agreement_retention_days=self.agreement_retention_days(),
        )

    def agreement_retention_days(self) -> dict[str, int]:
        """Recipient agency type -> the shortest retention any agreement gives it (days)."""
        days: dict[str, int] = {}
        for agreement in self.deployment.policy.agreements:
            for agency in agreement.recipient_agency_types:
                value = retention_days(agreement.retention)
                days[agency.value] = min(days.get(agency.value, value), value)
        return days

    async def create_topics(self) -> list[str]:
        """The admin step: create or reconcile every topic; returns what changed."""
        return await create_topics(
            self.bootstrap, self.topic_specs(), **self.security_for(ADMIN_PRINCIPAL)
        )

    def consent_view(self) -> ConsentView:
        """A fresh, empty view of hips.consent (the router fills it as it starts)."""
        return ConsentView(
            topic=self.settings.topics.consent,
            bootstrap_servers=self.bootstrap,
            security=self.security_for(ROUTER_PRINCIPAL),
        )

    def router_core(self) -> RouterCore:
        return RouterCore(
            codec=self.codec,
            deployment=self.deployment,
            keyring=self.keyring(),
            identity=self.keys.signing_identity(ROUTER_ID),
            recipient_key=self.keys.encryption_public,
            pseudonym_secret=self.keys.pseudonym_secret(),
            topics=self.settings.topics,
            consent_view=self.consent_view(),
            ledger=RoutedLedger(
                topic=self.settings.topics.routed,
                bootstrap_servers=self.bootstrap,
                security=self.security_for(ROUTER_PRINCIPAL),
            ),
            key_follower=self.key_follower(ROUTER_PRINCIPAL),
            signals=self.signal_store(),
        )

    def signal_store(self) -> SignalStore:
        """A fresh, empty cumulative-concern store (the router fills it from hips.signals).

        It keeps what the longest configured window can still count (a year at least)."""
        windows = [t.window_days for t in self.deployment.policy.thresholds]
        return SignalStore(
            topic=self.settings.topics.signals,
            bootstrap_servers=self.bootstrap,
            keep_days=max([365, *windows]),
            security=self.security_for(ROUTER_PRINCIPAL),
        )

    def router(
        self,
        *,
        group_id: str = "safer-router",
        instance: str = "0",
        batch_size: int = 500,
        pipelined: bool = False,
    ) -> Router:
        return Router(
            self.router_core(),
            bootstrap_servers=self.bootstrap,
            inbound_topics=[self.settings.topics.inbound(AgencyType.POLICE.value)],
            group_id=group_id,
            instance=instance,
            batch_size=batch_size,
            security=self.security_for(ROUTER_PRINCIPAL),
            on_delivered=self.enrol_routed_subjects,
            pipelined=pipelined,
        )

    @cached_property
    def _subject_vault(self) -> SubjectVault:
        """One vault connection for this process (the vault is thread-safe)."""
        secret = self.keys.pseudonym_secret()
        return SubjectVault(
            vault_path_for(self.settings.audit_db), vault_key=derive_vault_key(secret)
        )

    async def enrol_routed_subjects(self, plans: Sequence[Plan]) -> None:
        """Keep each routed person's identifiers, encrypted per person, in the subject
        vault next to the audit log (for `audit sar` and `audit shred`). In a worker
        thread: SQLite must not block the router's event loop."""
        subjects = [s for plan in plans for s in plan.subjects]
        if not subjects:
            return
        pseudonymise = functools.partial(pseudonym, self.keys.pseudonym_secret())
        await asyncio.to_thread(enrol_subjects, self._subject_vault, subjects, pseudonymise)

    def audit_feed(
        self,
        store: AuditStore,
        *,
        checkpoint_interval: float = 60.0,
        batch_size: int = 2000,
        keyring: Keyring | None = None,
    ) -> AuditFeed:
        return AuditFeed(
            store=store,
            codec=self.codec,
            keyring=keyring if keyring is not None else self.keyring(),
            topics=self.settings.topics,
            bootstrap_servers=self.bootstrap,
            router_id=ROUTER_ID,
            security=self.security_for(AUDIT_FEED_PRINCIPAL),
            checkpoint_signer=self.log_signer(),
            checkpoint_interval=checkpoint_interval,
            batch_size=batch_size,
        )

    def monitor(self, store: AuditStore) -> TimelinessMonitor:
        return TimelinessMonitor(
            store=store,
            state_path=self.settings.data_dir / "monitor.db",
            directory=self.deployment.directory,
            codec=self.codec,
            identity=self.keys.signing_identity(ROUTER_ID),
            topics=self.settings.topics,
            bootstrap_servers=self.bootstrap,
            expiry=timedelta(minutes=self.settings.delivery_expiry_minutes),
            security=self.security_for(MONITOR_PRINCIPAL),
        )

    def recipient_topics(self, recipient: Recipient) -> list[str]:
        topics = self.settings.topics
        names = [topics.disclosures(recipient.lscp, recipient.agency_type)]
        if recipient.front_door:
            names.append(topics.triage(recipient.lscp))
        return names

    def inbox_path(self, recipient_id: str) -> Path:
        return self.settings.inbox_dir / f"{recipient_id}.db"

    def recipient_adapter(
        self, recipient: Recipient, *, keyring: Keyring | None = None
    ) -> RecipientAdapter:
        return RecipientAdapter(
            recipient=recipient,
            inbox=Inbox(self.inbox_path(recipient.id)),
            codec=self.codec,
            keyring=keyring if keyring is not None else self.keyring(),
            identity=self.keys.signing_identity(recipient.id),
            private_key=self.keys.encryption_private(recipient.id),
            topics=self.recipient_topics(recipient),
            receipts_topic=self.settings.topics.receipts,
            bootstrap_servers=self.bootstrap,
            router_id=ROUTER_ID,
            security=self.security_for(recipient.id),
            webhook=self._webhook_for(recipient),
        )

    def _webhook_for(self, recipient: Recipient) -> WebhookSender | None:
        if recipient.delivery != "webhook" or not recipient.webhook_url:
            return None
        return WebhookSender(
            recipient.webhook_url,
            self.keys.webhook_secret(recipient.id),
            recipient_id=recipient.id,
            body_format=recipient.disclosure_format,
            # Short rounds: the adapter retries on its next loop instead of blocking.
            retry=RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=5.0, max_elapsed=20.0),
        )

    def police_adapter(self, agency: str = "police") -> PoliceAdapter:
        return PoliceAdapter(
            codec=self.codec,
            identity=self.keys.signing_identity(self.publisher(agency).id),
            pseudonym_secret=self.keys.pseudonym_secret(),
            topic=self.settings.topics.inbound(agency),
        )

    async def run_services(
        self,
        stop: asyncio.Event,
        *,
        router: bool = True,
        feed: bool = True,
        recipients: Iterable[Recipient] | None = None,
        on_ready: Callable[[], None] | None = None,
        store: AuditStore | None = None,
        max_backoff: float = 30.0,
        monitor: bool = True,
        router_process: bool = False,
        routers: int = 1,
        recipients_process: bool = False,
        recipients_ops_port: int | None = None,
        router_ops_port: int | None = None,
        log_file: Path | None = None,
        extra: Sequence[tuple[str, Callable[[asyncio.Event, asyncio.Event], Any]]] = (),
    ) -> None:
        """Run the chosen services until ``stop`` is set.

        Each service is supervised: if it fails, the failure is logged (type
        only, never a message that might carry data) and the service restarts
        after an increasing delay. Every service resumes from its stored
        position, so a restart neither loses nor repeats work. ``extra`` adds
        services of the shell (``safer up`` adds retention).

        ``router_process``: run the router as ``routers`` child processes in one
        consumer group (instances 0..N-1), which share the inbound partitions
        between them; their ops ports are ``router_ops_port`` + instance.
        ``recipients_process``: run the recipient adapters in one child process
        (`safer recipients`, its ops endpoints on ``recipients_ops_port``) instead
        of on this event loop, beside the audit feed.
        """
        if routers < 1:
            raise ValueError(f"routers must be at least 1, not {routers}")
        own_store = store is None and feed
        audit_store = store or (self.audit_store() if feed else None)
        chosen = list(self.deployment.directory.recipients if recipients is None else recipients)
        runners: list[tuple[str, Callable[[asyncio.Event, asyncio.Event], Any]]] = []
        # One keyring for the feed and the recipients, kept current by one follower of
        # hips.keys: a rotated key is trusted, a revoked router key refused (issue 15).
        shared = self.keyring() if (feed or chosen) else None
        if feed and audit_store is not None:
            runners.append(("audit-feed", self.audit_feed(audit_store, keyring=shared).run))
            if monitor:
                runners.append(("monitor", self.monitor(audit_store).run))
        if recipients_process and chosen:
            ids = [r.id for r in chosen]
            runners.append(
                (
                    "recipients",
                    functools.partial(
                        self.run_recipients_process,
                        ids,
                        log_file=log_file,
                        ops_port=recipients_ops_port,
                    ),
                )
            )
            chosen = []
        runners += [
            (f"recipient:{r.id}", self.recipient_adapter(r, keyring=shared).run) for r in chosen
        ]
        follower = self.key_follower(ADMIN_PRINCIPAL, [shared]) if shared is not None else None
        if follower is not None:
            runners.append(("key-events", follower.run))
        runners += list(extra)
        if router and router_process:
            runners += [
                (
                    "router" if routers == 1 else f"router:{instance}",
                    functools.partial(
                        self.run_router_process,
                        instance=str(instance),
                        log_file=log_file,
                        ops_port=None if router_ops_port is None else router_ops_port + instance,
                    ),
                )
                for instance in range(routers)
            ]
        elif router:
            runners.append(("router", self.router().run))
        readies = [asyncio.Event() for _ in runners]
        tasks = [
            asyncio.create_task(_supervise(name, run, stop, ready, max_backoff), name=name)
            for (name, run), ready in zip(runners, readies, strict=True)
        ]

        async def _all_ready() -> None:
            await asyncio.gather(*(r.wait() for r in readies))
            _log.info("services.ready", services=len(tasks))
            if on_ready is not None:
                on_ready()

        ready_task = asyncio.create_task(_all_ready())
        try:
            await stop.wait()
        finally:
            stop.set()
            ready_task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if own_store and audit_store is not None:
                audit_store.close()

    def child_env(self) -> dict[str, str]:
        """The environment a `safer` child process needs to act as this runtime."""
        env = dict(os.environ)
        settings = self.settings
        if settings.bootstrap_servers:
            env["KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
        # Otherwise the child finds the local broker, and in secure mode its own
        # credentials, through the data directory's broker.json, as any client does.
        env.update(
            SAFER_DATA_DIR=str(settings.data_dir),
            SAFER_DEPLOY_DIR=str(settings.deploy_dir),
            SAFER_TOPIC_PREFIX=settings.topic_prefix,
            SAFER_INBOUND_PARTITIONS=str(settings.inbound_partitions),
            SAFER_REPLICATION_FACTOR=str(settings.replication_factor),
            SAFER_MIN_INSYNC_REPLICAS=str(settings.min_insync_replicas),
        )
        return env

    async def run_router_process(
        self,
        stop: asyncio.Event,
        ready: asyncio.Event,
        *,
        instance: str = "0",
        group_id: str = "safer-router",
        log_file: Path | None = None,
        ops_port: int | None = None,
    ) -> None:
        """Run `safer route` as a child process until ``stop``; raise if it dies.

        Its own process gives routing a core of its own.
        """
        argv = ["route", "--group-id", group_id, "--instance", instance]
        if ops_port is not None:
            argv += ["--ops-port", str(ops_port)]
        await self._run_child(stop, ready, argv, ROUTER_READY_LINE, "router", log_file)

    async def run_recipients_process(
        self,
        recipient_ids: Sequence[str],
        stop: asyncio.Event,
        ready: asyncio.Event,
        *,
        log_file: Path | None = None,
        ops_port: int | None = None,
    ) -> None:
        """Run `safer recipients` (these recipients' adapters) as a child process.

        Off the audit feed's event loop (issue 12): a recipient's inbox copy and
        receipt wait neither for the feed's log appends nor for its checkpoints.
        """
        argv = ["recipients"]
        for recipient_id in recipient_ids:
            argv += ["--recipient", recipient_id]
        if ops_port is not None:
            argv += ["--ops-port", str(ops_port)]
        await self._run_child(
            stop, ready, argv, RECIPIENTS_READY_LINE, "recipient adapters", log_file
        )

    async def _run_child(
        self,
        stop: asyncio.Event,
        ready: asyncio.Event,
        command: Sequence[str],
        ready_line: str,
        what: str,
        log_file: Path | None,
    ) -> None:
        """Run a `safer` service command as a child process until ``stop``; raise if
        it dies. The child prints ``ready_line`` once it works; it dies with us
        (PDEATHSIG) and is stopped with SIGTERM, which it handles cleanly; a child
        that exits on its own is reported to the supervisor, which restarts it.
        """
        argv = [sys.executable, "-m", "safer"]
        if log_file is not None:
            argv += ["--log-file", str(log_file)]
        argv += list(command)
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=self.child_env(),
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=child_preexec(),
        )
        assert process.stdout is not None
        try:
            line = await process.stdout.readline()
            if line.decode(errors="replace").strip() != ready_line:
                raise BrokerError(
                    f"the {what} process exited before it started (status {await process.wait()})",
                    hint=f"read the log lines of `safer {command[0]}` for the reason",
                )
            ready.set()
            exited = asyncio.create_task(process.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not exited.done():
                process.send_signal(signal.SIGTERM)
                await exited
            elif not stop.is_set():
                raise BrokerError(
                    f"the {what} process exited with status {process.returncode}",
                    hint="it is restarted; read its log lines for the reason",
                )
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _supervise(
    name: str,
    run: Callable[[asyncio.Event, asyncio.Event], Any],
    stop: asyncio.Event,
    ready: asyncio.Event,
    max_backoff: float,
) -> None:
    delay = 0.5
    while not stop.is_set():
        try:
            await run(stop, ready)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.error(
                "service.crashed",
                service=name,
                error=type(exc).__name__,
                retriable=getattr(exc, "retriable", None),
                restart_in_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, max_backoff)
