"""The loopback cluster: three Apache Kafka nodes on this machine (`safer cluster up`).

Three combined KRaft broker+controller nodes (``LocalKafka(nodes=3)``) with their
data under ``<data-dir>/cluster``. Every SAFER topic gets replication factor 3 and
``min.insync.replicas`` 2; producers use ``acks=all``. So a record is acknowledged
only once two brokers hold it, and the cluster keeps serving reads and writes with
any one broker down (the KRaft quorum needs two of three controllers as well).

It is the same Apache Kafka, configured as in production (deploy/kafka/compose.yaml,
deploy/kubernetes/), with two differences that only make a loopback cluster start
faster on a small machine: fewer partitions for Kafka's internal topics and a JVM
that does not spend CPU on its optimising compiler. Neither changes what is
guaranteed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._config import Settings
from ._local_kafka import ListenerSecurity, LocalKafka

__all__ = [
    "CLUSTER_MIN_INSYNC_REPLICAS",
    "CLUSTER_NODES",
    "CLUSTER_REPLICATION_FACTOR",
    "cluster_settings",
    "loopback_cluster",
]

CLUSTER_NODES = 3
CLUSTER_REPLICATION_FACTOR = 3
CLUSTER_MIN_INSYNC_REPLICAS = 2

#: ``server.properties`` beyond LocalKafka's defaults (which already give replication 3
#: and min.insync.replicas 2 to Kafka's internal topics on three nodes). Kafka sizes
#: ``__consumer_offsets`` and ``__transaction_state`` at 50 partitions each for many
#: groups and producers; one exchange needs few, and 300 fewer replicas to load,
#: recover and re-sync make start-up and a broker's return quicker.
LOOPBACK_CLUSTER_CONFIG = {
    "offsets.topic.num.partitions": "6",
    "transaction.state.log.num.partitions": "6",
}
#: Interpreter plus the quick JIT only: three JVMs start in about half the time on two
#: cores (measured 23-26 s against 10-14 s for a fresh cluster, 15-17 s against 8 s for
#: a restart). Production brokers run the default JVM.
LOOPBACK_JVM_OPTIONS = ("-XX:TieredStopAtLevel=1",)


def cluster_settings(settings: Settings) -> Settings:
    """``settings`` with the cluster's topic layout: replication 3, min.insync.replicas 2."""
    return settings.model_copy(
        update={
            "replication_factor": CLUSTER_REPLICATION_FACTOR,
            "min_insync_replicas": CLUSTER_MIN_INSYNC_REPLICAS,
        }
    )


def loopback_cluster(
    home: Path,
    *,
    deploy_dir: Path,
    progress: Callable[[str], None] | None = None,
    security: ListenerSecurity | None = None,
) -> LocalKafka:
    """The three nodes `safer cluster up` runs, with their data in ``home`` (not started)."""
    return LocalKafka(
        home,
        deploy_dir=deploy_dir,
        nodes=CLUSTER_NODES,
        progress=progress,
        security=security,
        config_overrides=LOOPBACK_CLUSTER_CONFIG,
        jvm_options=LOOPBACK_JVM_OPTIONS,
    )
