"""Apache Kafka on this machine, in KRaft mode: one node, or a cluster on loopback.

With no ``KAFKA_BOOTSTRAP_SERVERS`` set, ``safer`` runs the pinned Apache Kafka
(``broker/_kafka_dist.py``) as child processes. Each node is a combined KRaft
broker and controller with its data under the data directory, so stopping or
killing it and starting it again keeps every topic, offset and transaction.

Each node has three listeners on loopback:

* ``CLIENT``: what SAFER's services and tools connect to;
* ``INTERNAL``: replication between brokers (and the readiness probe);
* ``CONTROLLER``: the KRaft quorum.

Ports are chosen once and kept in ``<home>/ports.json``, so a restarted node
comes back where its clients expect it. The security of the listeners comes
from a ``ListenerSecurity`` (plaintext by default; TLS, SASL/SCRAM and ACLs in
secure mode, ``broker/_secure.py``).

A node is a child of this process and never outlives it (``broker/_process.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import itertools
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from types import TracebackType
from typing import IO, Protocol

import structlog

from schemas import BrokerError, ReasonCode

from ._config import ClientAccess, Settings
from ._files import write_java_argfile
from ._kafka_dist import KafkaDistribution, kafka_distribution
from ._limits import SIZE_LIMITS
from ._process import free_port, port_in_use, processes_with_argument, spawn, terminate

__all__ = [
    "ENGINE_NAME",
    "KAFKA_MAIN_CLASS",
    "Engine",
    "ListenerSecurity",
    "LocalKafka",
    "NodePorts",
    "Plaintext",
    "kafka_engine",
    "probe_brokers",
    "running_kafka_pids",
]

_log = structlog.get_logger("safer.kafka")

#: The main class every local node runs (used to find stray nodes).
KAFKA_MAIN_CLASS = "kafka.Kafka"
#: How the engine names itself in `safer demo --json`.
ENGINE_NAME = "apache-kafka"

_LISTENERS = ("CLIENT", "INTERNAL", "CONTROLLER")
_METADATA_API_KEY = 3
_METADATA_VERSION = 4  # Kafka 4 removed v0-v3 (KIP-896); v4 is the oldest left
_correlation_ids = itertools.count(1)


@dataclass(frozen=True)
class NodePorts:
    client: int
    internal: int
    controller: int


class ListenerSecurity(Protocol):
    """How a local node's listeners are secured (plaintext, or TLS + SASL/SCRAM)."""

    #: ``security.protocol`` of each listener name (CLIENT, INTERNAL, CONTROLLER).
    protocols: Mapping[str, str]

    def node_config(self, node_id: int, home: Path) -> dict[str, str]:
        """Extra ``server.properties`` lines for one node (keystores, SASL, ACLs)."""
        ...

    def format_arguments(self) -> list[str]:
        """Extra ``kafka-storage format`` arguments (e.g. ``--add-scram`` users)."""
        ...

    def probe_context(self) -> ssl.SSLContext | None:
        """A TLS context that can reach the INTERNAL listener, or None for plaintext."""
        ...


class Plaintext:
    """No TLS, no SASL: loopback only. The default for `safer up` and the tests."""

    protocols: Mapping[str, str] = {name: "PLAINTEXT" for name in _LISTENERS}

    def node_config(self, node_id: int, home: Path) -> dict[str, str]:
        return {}

    def format_arguments(self) -> list[str]:
        return []

    def probe_context(self) -> ssl.SSLContext | None:
        return None


# --- readiness: a raw Metadata v4 request ------------------------------------------------


def _metadata_request(correlation_id: int) -> bytes:
    # Request header v1: api_key INT16, api_version INT16, correlation_id INT32,
    # client_id NULLABLE_STRING. Metadata v4 body: topics ARRAY(STRING) (empty: none,
    # so only brokers come back), allow_auto_topic_creation BOOLEAN.
    client_id = b"safer-probe"
    payload = (
        struct.pack(">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id))
        + client_id
        + struct.pack(">ib", 0, 0)
    )
    return struct.pack(">i", len(payload)) + payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def probe_brokers(host: str, port: int, timeout: float, context: ssl.SSLContext | None) -> int:
    """How many brokers a Metadata request to ``host:port`` lists (raises OSError, ValueError)."""
    correlation_id = next(_correlation_ids) & 0x7FFFFFFF
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = context.wrap_socket(raw, server_hostname=host) if context is not None else raw
        with sock:
            sock.settimeout(timeout)
            sock.sendall(_metadata_request(correlation_id))
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            if size < 12 or size > 16 * 1024 * 1024:
                raise ValueError(f"implausible response size {size}")
            body = _recv_exactly(sock, size)
    # Response header v0: correlation_id INT32. Metadata v4: throttle_time_ms INT32,
    # then brokers ARRAY(...).
    answered, _throttle, brokers = struct.unpack(">iii", body[:12])
    if answered != correlation_id:
        raise ValueError(f"correlation id {answered} != {correlation_id}")
    return int(brokers)


# --- one node ------------------------------------------------------------------------------


_LOG4J = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


@dataclass
class _Node:
    node_id: int
    home: Path
    ports: NodePorts
    process: Popen[bytes] | None = None
    output: IO[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def formatted(self) -> bool:
        return (self.data / "meta.properties").exists()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (as Kafka makes them).

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with "-": the storage
    tool would read it as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


class LocalKafka:
    """Apache Kafka nodes run as children of this process, data under ``home``.

    ``nodes=1`` is the single broker of `safer up`, `safer demo` and the tests;
    ``nodes=3`` is the loopback cluster of `safer cluster up` (replication 3,
    ``min.insync.replicas`` 2). Start with ``start()`` or as a context manager.
    """

    def __init__(
        self,
        home: Path,
        *,
        deploy_dir: Path,
        nodes: int = 1,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        security: ListenerSecurity | None = None,
        progress: Callable[[str], None] | None = None,
        heap_mb: int = 512,
        startup_timeout: float = 120.0,
        config_overrides: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = (),
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        # Absolute: each node runs with its own folder as working directory, so a
        # relative data dir (the default `.safer`) would point nowhere from there.
        self.home = home.absolute()
        self._deploy_dir = deploy_dir.absolute()
        self._host = host
        self._count = nodes
        self._security: ListenerSecurity = security or Plaintext()
        self._progress = progress or (lambda _: None)
        self._heap_mb = heap_mb
        #: Extra JVM flags for the nodes and the storage formatter (e.g. JIT settings).
        self._jvm_options = list(jvm_options)
        self._startup_timeout = startup_timeout
        self._overrides = dict(config_overrides or {})
        self._lock = threading.RLock()
        self._distribution: KafkaDistribution | None = None
        self._nodes = self._plan_nodes(client_port)

    # -- layout ----------------------------------------------------------------------------

    def _plan_nodes(self, client_port: int | None) -> list[_Node]:
        """Each node's folder and ports, kept in ports.json so restarts reuse them."""
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "ports.json"
        stored: dict[str, dict[str, int]] = {}
        if path.exists():
            with contextlib.suppress(ValueError, OSError):
                stored = json.loads(path.read_text(encoding="utf-8"))
        nodes = []
        taken: set[int] = set()
        for node_id in range(1, self._count + 1):
            known = stored.get(str(node_id))
            if known is not None:
                ports = NodePorts(known["client"], known["internal"], known["controller"])
            else:
                ports = NodePorts(*(self._fresh_port(taken) for _ in range(3)))
            if node_id == 1 and client_port is not None:
                ports = NodePorts(client_port, ports.internal, ports.controller)
            taken.update((ports.client, ports.internal, ports.controller))
            nodes.append(_Node(node_id, self.home / f"node-{node_id}", ports))
        path.write_text(
            json.dumps(
                {
                    str(n.node_id): {
                        "client": n.ports.client,
                        "internal": n.ports.internal,
                        "controller": n.ports.controller,
                    }
                    for n in nodes
                },
                indent=1,
            ),
            encoding="utf-8",
        )
        return nodes

    def _fresh_port(self, taken: set[int]) -> int:
        while True:
            port = free_port(self._host)
            if port not in taken:
                taken.add(port)
                return port

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of every node's CLIENT listener, comma-separated."""
        return ",".join(f"{self._host}:{n.ports.client}" for n in self._nodes)

    @property
    def internal_bootstrap_servers(self) -> str:
        """``host:port`` of every node's INTERNAL listener (replication; in secure mode
        only holders of the broker certificate, the super user, connect here)."""
        return ",".join(f"{self._host}:{n.ports.internal}" for n in self._nodes)

    @property
    def security(self) -> ListenerSecurity:
        return self._security

    @property
    def distribution(self) -> KafkaDistribution:
        """The checked jars and Java these nodes run (for Kafka's own tools)."""
        return self._dist()

    @property
    def cluster_id(self) -> str:
        """The KRaft cluster id (made once, kept in ``<home>/cluster.id``)."""
        return self._cluster_id()

    @property
    def node_count(self) -> int:
        return self._count

    @property
    def version(self) -> str:
        return self._dist().version

    @property
    def engine(self) -> str:
        """``apache-kafka <version>``, as `safer demo --json` reports it."""
        return f"{ENGINE_NAME} {self.version}"

    def pids(self) -> dict[int, int | None]:
        """Node id → process id (None when that node is not running)."""
        return {
            n.node_id: n.process.pid if n.process is not None and n.process.poll() is None else None
            for n in self._nodes
        }

    def _dist(self) -> KafkaDistribution:
        if self._distribution is None:
            self._distribution = kafka_distribution(self._deploy_dir)
        return self._distribution

    # -- configuration -------------------------------------------------------------------

    def _server_properties(self, node: _Node) -> dict[str, str]:
        n = self._count
        host = self._host
        voters = ",".join(f"{o.node_id}@{host}:{o.ports.controller}" for o in self._nodes)
        protocols = self._security.protocols
        config = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": (
                f"CLIENT://{host}:{node.ports.client},INTERNAL://{host}:{node.ports.internal},"
                f"CONTROLLER://{host}:{node.ports.controller}"
            ),
            "advertised.listeners": (
                f"CLIENT://{host}:{node.ports.client},INTERNAL://{host}:{node.ports.internal}"
            ),
            "listener.security.protocol.map": ",".join(
                f"{name}:{protocols[name]}" for name in _LISTENERS
            ),
            "inter.broker.listener.name": "INTERNAL",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(node.data),
            # Topics are created on purpose, with their settings (broker/_topics.py).
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": str(min(3, n)),
            "min.insync.replicas": str(min(2, n)),
            "unclean.leader.election.enable": "false",
            "message.max.bytes": str(SIZE_LIMITS.message_bytes),
            "offsets.topic.replication.factor": str(min(3, n)),
            "transaction.state.log.replication.factor": str(min(3, n)),
            "transaction.state.log.min.isr": str(min(2, n)),
            "share.coordinator.state.topic.replication.factor": str(min(3, n)),
            "share.coordinator.state.topic.min.isr": str(min(2, n)),
            # A consumer group forms at once (tests and `safer up` start it at will).
            "group.initial.rebalance.delay.ms": "0",
        }
        config.update(self._security.node_config(node.node_id, self.home))
        config.update(self._overrides)
        return config

    def _write_config(self, node: _Node) -> None:
        node.logs.mkdir(parents=True, exist_ok=True)
        lines = [f"{k}={v}" for k, v in sorted(self._server_properties(node).items())]
        node.config_file.write_text(
            "# Written by SAFER Exchange at every start (broker/_local_kafka.py); edits are lost.\n"
            + "\n".join(lines)
            + "\n",
            encoding="utf-8",
        )
        (node.home / "log4j2.properties").write_text(
            _LOG4J.format(logs=node.logs), encoding="utf-8"
        )

    def _cluster_id(self) -> str:
        path = self.home / "cluster.id"
        if path.exists():
            return path.read_text(encoding="ascii").strip()
        cluster_id = _cluster_id()
        path.write_text(cluster_id + "\n", encoding="ascii")
        return cluster_id

    def _format(self, node: _Node, cluster_id: str) -> None:
        dist = self._dist()
        tool = [
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "--config",
            str(node.config_file),
            *self._security.format_arguments(),
        ]
        # The main class and its arguments go in a Java argument file (mode 0600,
        # deleted at once): secure mode's --add-scram passwords must not appear in
        # the process list, which every local user can read.
        argfile = node.home / "format.args"
        write_java_argfile(argfile, tool)
        argv = [
            str(dist.java),
            "-Xmx256m",
            *self._jvm_options,
            f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
            "-cp",
            dist.classpath,
            f"@{argfile}",
        ]
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv
                argv, capture_output=True, text=True, timeout=120, check=False
            )
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BrokerError(
                f"formatting KRaft storage for node {node.node_id} failed: {detail[0]}",
                retriable=False,
                hint=f"check {node.home}; to start afresh, stop safer and delete that folder",
            )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Format new nodes, start every node, and return once all serve clients.

        Raises:
            BrokerError: Java or the Kafka jars are missing, a port is taken, a node
                exited during start-up, or the cluster did not form in time.
        """
        with self._lock:
            dist = self._dist()
            cluster_id = self._cluster_id()
            for node in self._nodes:
                self._write_config(node)
            unformatted = [n for n in self._nodes if not n.formatted]
            if unformatted:
                self._progress(
                    f"formatting KRaft storage for {len(unformatted)} node(s) in {self.home}"
                )
                with ThreadPoolExecutor(max_workers=len(unformatted)) as pool:
                    list(pool.map(lambda n: self._format(n, cluster_id), unformatted))
            atexit.register(self.stop)
            try:
                for node in self._nodes:
                    self._spawn(node, dist)
                self._wait_ready(self._nodes)
            except BaseException:
                self.stop()
                raise

    def _spawn(self, node: _Node, dist: KafkaDistribution) -> None:
        if node.process is not None and node.process.poll() is None:
            return
        for port in (node.ports.client, node.ports.internal, node.ports.controller):
            if port_in_use(self._host, port):
                raise BrokerError(
                    f"cannot start Kafka node {node.node_id}: port {port} on {self._host} is "
                    "already in use",
                    retriable=False,
                    hint="another `safer up` may be running on this data directory; stop it, or "
                    f"delete {self.home / 'ports.json'} to choose new ports",
                )
        self._write_config(node)
        argv = [
            str(dist.java),
            f"-Xms{min(self._heap_mb, 256)}m",
            f"-Xmx{self._heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            *self._jvm_options,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.logs}",
            "-cp",
            dist.classpath,
            KAFKA_MAIN_CLASS,
            str(node.config_file),
        ]
        self._progress(
            f"starting Apache Kafka {dist.version} node {node.node_id} "
            f"on {self._host}:{node.ports.client} (Java {dist.java})"
        )
        node.output = (node.logs / "stdout.log").open("ab")
        try:
            node.process = spawn(argv, env=dict(os.environ), output=node.output, cwd=node.home)
        except OSError as exc:
            raise BrokerError(
                f"could not run {dist.java}: {exc}",
                code=ReasonCode.ENGINE_NOT_INSTALLED,
                retriable=False,
                hint="check the Java installation (JAVA_HOME)",
            ) from exc

    def _wait_ready(self, nodes: list[_Node]) -> None:
        """Until every given node answers Metadata and lists the whole cluster."""
        deadline = time.monotonic() + self._startup_timeout
        context = self._security.probe_context()
        waiting = list(nodes)
        last = "no answer yet"
        announced = 0.0
        while waiting:
            for node in list(waiting):
                process = node.process
                if process is not None and process.poll() is not None:
                    raise BrokerError(
                        f"Kafka node {node.node_id} exited with status {process.returncode} "
                        "while starting",
                        retriable=False,
                        hint=f"read {node.logs / 'server.log'} and {node.logs / 'stdout.log'}",
                    )
                try:
                    brokers = probe_brokers(self._host, node.ports.internal, 2.0, context)
                except (OSError, ValueError, struct.error) as exc:
                    last = f"node {node.node_id}: {type(exc).__name__}"
                    continue
                if brokers >= self._count:
                    waiting.remove(node)
                else:
                    last = f"node {node.node_id} sees {brokers} of {self._count} brokers"
            if not waiting:
                break
            now = time.monotonic()
            if now > deadline:
                raise BrokerError(
                    f"Apache Kafka did not become ready within {self._startup_timeout:g} s "
                    f"({last})",
                    hint=f"read the node logs under {self.home}; the machine may be overloaded",
                )
            if now - announced > 5:
                self._progress(f"waiting for Kafka to serve clients ({last})")
                announced = now
            time.sleep(0.2)
        self._progress(f"Apache Kafka ready at {self.bootstrap_servers}")

    def stop(self, grace: float = 30.0) -> None:
        """Stop every node (controlled shutdown, then SIGKILL after ``grace``). Idempotent."""
        with self._lock:
            atexit.unregister(self.stop)
            running = [n for n in self._nodes if n.process is not None]
            if running:
                with ThreadPoolExecutor(max_workers=len(running)) as pool:
                    list(pool.map(lambda n: self._stop_node(n, grace), running))

    def _stop_node(self, node: _Node, grace: float) -> None:
        process, node.process = node.process, None
        try:
            if process is not None:
                terminate(process, grace)
        finally:
            if node.output is not None:
                with contextlib.suppress(OSError):
                    node.output.close()
                node.output = None

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would (for tests and drills)."""
        node = self._nodes[node_id - 1]
        if node.process is not None:
            node.process.kill()
            node.process.wait()
        self._stop_node(node, 0)

    def stop_node(self, node_id: int, grace: float = 30.0) -> None:
        self._stop_node(self._nodes[node_id - 1], grace)

    def start_node(self, node_id: int) -> None:
        """Start one stopped node again and wait until the cluster lists it."""
        with self._lock:
            node = self._nodes[node_id - 1]
            self._spawn(node, self._dist())
            self._wait_ready([node])

    async def watch(self, stop: asyncio.Event, *, interval: float = 1.0) -> None:
        """Restart any node that dies until ``stop``: `safer up` needs no manual step.

        A node killed (OOM, SIGKILL, a crash) comes back on the same ports with the
        same data; clients reconnect on their own, transactions left open by the
        crash are aborted, and nothing acknowledged is lost.
        """
        restarts = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            for node_id, pid in self.pids().items():
                node = self._nodes[node_id - 1]
                if pid is not None or node.process is None:
                    continue
                code = node.process.returncode
                restarts += 1
                _log.error("kafka.node_died", node=node_id, exit_code=code, restarts=restarts)
                self._progress(f"node {node_id} exited with status {code}; restarting it")
                self._stop_node(node, 0)
                try:
                    await asyncio.to_thread(self.start_node, node_id)
                except BrokerError as exc:
                    _log.error("kafka.node_restart_failed", node=node_id, error=exc.code.value)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafka({self.bootstrap_servers}, nodes={self._count}, home={self.home})"


def running_kafka_pids() -> list[int]:
    """Process ids of every local Kafka node on this machine (any parent)."""
    return processes_with_argument(KAFKA_MAIN_CLASS.encode())


@dataclass(frozen=True)
class Engine:
    """The Kafka a command talks to, and what it is."""

    bootstrap_servers: str
    #: ``apache-kafka 4.4.0`` for the local engine; ``external`` for KAFKA_BOOTSTRAP_SERVERS.
    name: str
    #: The local nodes, when this process runs them (None for an external cluster).
    local: LocalKafka | None = None
    #: How clients authenticate, when the local broker runs in secure mode.
    access: ClientAccess | None = None


@contextmanager
def kafka_engine(
    settings: Settings,
    *,
    port: int | None = None,
    progress: Callable[[str], None] | None = None,
    security: ListenerSecurity | None = None,
) -> Iterator[Engine]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set (nothing started), else a local Apache Kafka.

    The local one keeps its data in ``settings.kafka_home`` (``<data-dir>/kafka``),
    so every topic survives a restart; it stops when the block ends.
    """
    if settings.bootstrap_servers:
        yield Engine(settings.bootstrap_servers, "external")
        return
    kafka = LocalKafka(
        settings.kafka_home,
        deploy_dir=settings.deploy_dir,
        client_port=port,
        progress=progress,
        security=security,
    )
    with kafka:
        yield Engine(kafka.bootstrap_servers, kafka.engine, kafka)
