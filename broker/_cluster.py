"""What a Kafka cluster looks like right now: brokers, partition leaders and in-sync replicas.

``cluster_health`` asks the cluster (any broker answers) for its brokers and, for
the topics given, each partition's leader, replicas and in-sync replicas (ISR),
plus each topic's ``min.insync.replicas``. It backs `safer cluster status` and the
cluster tests, and answers the operator's questions after losing a broker:

* is every partition led (``OFFLINE``: no leader, nothing can be read or written)?
* can every partition take writes (``BELOW_MIN_ISR``: fewer in-sync replicas than
  ``min.insync.replicas``, so producers with ``acks=all`` are refused and wait)?
* is every copy back in sync (``UNDER_REPLICATED``: serving, with less redundancy)?

Read-only: it changes nothing. Only topic names and broker ids pass through it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from schemas import BrokerError, ReasonCode

__all__ = [
    "INTERNAL_TOPICS",
    "BrokerInfo",
    "ClusterHealth",
    "PartitionHealth",
    "PartitionState",
    "cluster_health",
    "wait_healthy",
]

_T = TypeVar("_T")
_MIN_ISR = "min.insync.replicas"
_NO_LEADER = -1
#: Kafka's own topics that exactly-once rests on: group offsets and transaction state.
INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")
#: Tries before giving up: a broker that just died is still in the metadata for a while.
_ATTEMPTS = 30


class PartitionState(IntEnum):
    """How well a partition is served, best first (the worst one is the cluster's state)."""

    OK = 0
    UNDER_REPLICATED = 1
    BELOW_MIN_ISR = 2
    OFFLINE = 3
    #: The cluster does not know the topic (not created yet, or the name is wrong).
    MISSING = 4


@dataclass(frozen=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PartitionHealth:
    topic: str
    partition: int
    #: The broker that leads the partition, or -1 when none does.
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    min_insync_replicas: int

    @property
    def state(self) -> PartitionState:
        if self.leader == _NO_LEADER:
            return PartitionState.OFFLINE
        if len(self.isr) < self.min_insync_replicas:
            return PartitionState.BELOW_MIN_ISR
        if len(self.isr) < len(self.replicas):
            return PartitionState.UNDER_REPLICATED
        return PartitionState.OK


@dataclass(frozen=True)
class ClusterHealth:
    cluster_id: str
    brokers: tuple[BrokerInfo, ...]
    partitions: tuple[PartitionHealth, ...]
    #: Topics asked about that the cluster does not have.
    missing: tuple[str, ...] = ()

    @property
    def state(self) -> PartitionState:
        if self.missing:
            return PartitionState.MISSING
        return max((p.state for p in self.partitions), default=PartitionState.OK)

    @property
    def healthy(self) -> bool:
        """Every topic exists and every partition is led with all its replicas in sync."""
        return self.state is PartitionState.OK

    def topic(self, name: str) -> list[PartitionHealth]:
        return [p for p in self.partitions if p.topic == name]

    def leader_of(self, topic: str, partition: int = 0) -> int:
        for p in self.partitions:
            if p.topic == topic and p.partition == partition:
                return p.leader
        raise KeyError(f"{topic}[{partition}]")

    def led_by(self, node_id: int) -> list[PartitionHealth]:
        return [p for p in self.partitions if p.leader == node_id]

    def not_in_sync(self, node_id: int) -> list[PartitionHealth]:
        """Partitions with a replica on ``node_id`` that is not in their ISR."""
        return [p for p in self.partitions if node_id in p.replicas and node_id not in p.isr]

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "state": self.state.name,
            "brokers": [{"id": b.node_id, "address": b.address} for b in self.brokers],
            "missing_topics": list(self.missing),
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "leader": p.leader,
                    "replicas": list(p.replicas),
                    "isr": list(p.isr),
                    "min_insync_replicas": p.min_insync_replicas,
                    "state": p.state.name,
                }
                for p in self.partitions
            ],
        }


async def cluster_health(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    optional: Sequence[str] = INTERNAL_TOPICS,
    **security: Any,
) -> ClusterHealth:
    """Brokers, and leader/replicas/ISR of every partition of ``topics``, as the cluster says.

    ``optional`` topics are included when they exist and never reported missing
    (Kafka creates its internal topics on first use).

    Raises:
        BrokerError: BROKER_UNAVAILABLE (retriable) when no broker answers.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **security
    )
    try:
        await _retrying(admin.start, bootstrap_servers)
        described = await _retrying(
            lambda: admin.describe_topics([*topics, *optional]), bootstrap_servers
        )
        cluster = await _retrying(admin.describe_cluster, bootstrap_servers)
        present = [t["topic"] for t in described if t.get("error_code", 0) == 0]
        min_isr = await _retrying(lambda: _min_isr(admin, present), bootstrap_servers)
    finally:
        await admin.close()
    partitions = [
        PartitionHealth(
            topic=t["topic"],
            partition=int(p["partition"]),
            leader=int(p["leader"]),
            replicas=tuple(sorted(int(r) for r in p["replicas"])),
            isr=tuple(sorted(int(r) for r in p["isr"])),
            min_insync_replicas=min_isr.get(t["topic"], 1),
        )
        for t in described
        if t["topic"] in present
        for p in t["partitions"]
    ]
    brokers = sorted(
        (BrokerInfo(int(b["node_id"]), str(b["host"]), int(b["port"])) for b in cluster["brokers"]),
        key=lambda b: b.node_id,
    )
    return ClusterHealth(
        cluster_id=str(cluster.get("cluster_id") or ""),
        brokers=tuple(brokers),
        partitions=tuple(sorted(partitions, key=lambda p: (p.topic, p.partition))),
        missing=tuple(sorted(set(topics) - set(present) - set(optional))),
    )


async def _retrying(call: Callable[[], Awaitable[_T]], bootstrap_servers: str) -> _T:
    """``call()``, asked again on a retriable error.

    The admin client sends each request to a broker picked at random from its last
    metadata, which lists a broker that just died until the quorum fences it
    (``broker.session.timeout.ms``): another try reaches another broker.
    """
    for attempt in itertools.count(1):
        try:
            return await call()
        except KafkaError as exc:
            if not exc.retriable or attempt >= _ATTEMPTS:
                raise BrokerError(
                    f"cannot read the cluster's state from {bootstrap_servers} "
                    f"({type(exc).__name__})",
                    code=ReasonCode.BROKER_UNAVAILABLE,
                    retriable=True,
                    hint="check that the cluster runs (one live broker is enough to answer) "
                    "and KAFKA_BOOTSTRAP_SERVERS",
                ) from None
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")  # pragma: no cover


async def _min_isr(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, int]:
    """Each topic's effective ``min.insync.replicas`` (its own, or the broker default)."""
    if not topics:
        return {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, {_MIN_ISR: ""}) for t in topics]
    )
    values: dict[str, int] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == _MIN_ISR and entry["config_value"] is not None:
                    values[resource["resource_name"]] = int(entry["config_value"])
    return values


async def wait_healthy(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    timeout: float,
    optional: Sequence[str] = INTERNAL_TOPICS,
    **security: Any,
) -> ClusterHealth:
    """Poll ``cluster_health`` until every partition is OK or ``timeout`` passes.

    Returns the last answer either way (check ``.healthy``). New topics take a moment
    to reach every broker's metadata; a returning broker, to catch up and rejoin.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        health = await cluster_health(bootstrap_servers, topics, optional=optional, **security)
        if health.healthy or loop.time() >= deadline:
            return health
        await asyncio.sleep(0.25)
