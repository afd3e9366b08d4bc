"""The production manifests in deploy/ say what the loopback cluster and the topic plan say.

Neither Docker nor Kubernetes runs here, so these files are checked for their
settings: the Strimzi topics are exactly what `safer cluster manifests` generates
from ``topic_plan`` (and encode every spec), and the compose file and the Strimzi
cluster carry replication 3, ``min.insync.replicas`` 2, no auto-creation, no unclean
leader election, the pinned Kafka version, and no secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from broker import (
    CLUSTER_MIN_INSYNC_REPLICAS,
    CLUSTER_REPLICATION_FACTOR,
    KAFKA_VERSION,
    STRIMZI_API_VERSION,
    Settings,
    TopicSpec,
    strimzi_topics,
)
from safer import Runtime
from safer._cli_cluster import KUBERNETES_TOPICS, topics_manifest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def _settings() -> Settings:
    return Settings(data_dir=Path("unused"), deploy_dir=DEPLOY)


def _plan() -> list[TopicSpec]:
    production = _settings().model_copy(
        update={
            "replication_factor": CLUSTER_REPLICATION_FACTOR,
            "min_insync_replicas": CLUSTER_MIN_INSYNC_REPLICAS,
        }
    )
    return Runtime(production, bootstrap="").topic_specs()


def _documents(text: str) -> list[dict[str, Any]]:
    """Read the generated YAML (block mappings, JSON-quoted or plain scalars)."""
    documents: list[dict[str, Any]] = []
    for chunk in re.split(r"^---$", text, flags=re.M)[1:]:
        root: dict[str, Any] = {}
        stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
        for line in chunk.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            indent = len(line) - len(line.lstrip())
            key, _, value = line.strip().partition(":")
            while stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1]
            if value.strip():
                raw = value.strip()
                parent[key] = json.loads(raw) if raw[0] in '"0123456789-' else raw
            else:
                parent[key] = {}
                stack.append((indent, parent[key]))
        documents.append(root)
    return documents


def test_committed_strimzi_topics_are_what_the_plan_generates() -> None:
    committed = (DEPLOY / KUBERNETES_TOPICS).read_text(encoding="utf-8")
    assert committed == topics_manifest(_settings()), (
        "deploy/kubernetes/kafka-topics.yaml differs from the topic plan: run "
        "`safer cluster manifests` and commit the result"
    )


def test_strimzi_topics_encode_every_spec_of_the_plan() -> None:
    plan = _plan()
    documents = _documents((DEPLOY / KUBERNETES_TOPICS).read_text(encoding="utf-8"))
    assert len(documents) == len(plan)
    by_name = {d["spec"]["topicName"]: d for d in documents}
    assert set(by_name) == {s.name for s in plan}
    for spec in plan:
        doc = by_name[spec.name]
        assert doc["apiVersion"] == STRIMZI_API_VERSION
        assert doc["kind"] == "KafkaTopic"
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "safer"
        assert doc["spec"]["partitions"] == spec.partitions
        assert doc["spec"]["replicas"] == spec.replication_factor == 3
        assert doc["spec"]["config"] == dict(spec.configs)
        assert doc["spec"]["config"]["min.insync.replicas"] == "2"
    assert by_name["hips.audit"]["spec"]["config"]["retention.ms"] == "-1"
    assert by_name["hips.consent"]["spec"]["config"]["cleanup.policy"] == "compact"
    assert by_name["hips.inbound.police"]["spec"]["partitions"] >= 12


def test_a_topic_name_kubernetes_refuses_gets_a_safe_resource_name() -> None:
    text = strimzi_topics([TopicSpec("Odd_Name.x", 1, 3, {})], cluster="safer")
    (doc,) = _documents(text)
    assert doc["spec"]["topicName"] == "Odd_Name.x"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"])


def test_compose_runs_three_kraft_nodes_with_the_cluster_settings() -> None:
    text = (DEPLOY / "kafka" / "compose.yaml").read_text(encoding="utf-8")
    assert f"image: apache/kafka:{KAFKA_VERSION}\n" in text
    for node in (1, 2, 3):
        assert f'KAFKA_NODE_ID: "{node}"' in text
        assert f"{node}@kafka-{node}:9093" in text
    for setting in (
        'KAFKA_DEFAULT_REPLICATION_FACTOR: "3"',
        'KAFKA_MIN_INSYNC_REPLICAS: "2"',
        'KAFKA_AUTO_CREATE_TOPICS_ENABLE: "false"',
        'KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE: "false"',
        'KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: "2"',
        "KAFKA_PROCESS_ROLES: broker,controller",
    ):
        assert setting in text, setting
    # Host ports only on loopback; the cluster id comes from the (ignored) env file.
    assert re.findall(r'ports: \["([^"]+)"\]', text) == [
        "127.0.0.1:29092:29092",
        "127.0.0.1:29093:29093",
        "127.0.0.1:29094:29094",
    ]
    assert "${KAFKA_CLUSTER_ID:?" in text
    ignored = (DEPLOY / "kafka" / ".gitignore").read_text(encoding="utf-8").split()
    assert "compose.env" in ignored and "secrets/" in ignored


def test_strimzi_cluster_has_the_cluster_settings() -> None:
    text = (DEPLOY / "kubernetes" / "kafka.yaml").read_text(encoding="utf-8")
    assert text.count(f"apiVersion: {STRIMZI_API_VERSION}\n") == 3
    assert f"    version: {KAFKA_VERSION}\n" in text
    assert text.count("  replicas: 3\n") == 2  # three controllers, three brokers
    for setting in (
        "default.replication.factor: 3",
        "min.insync.replicas: 2",
        "unclean.leader.election.enable: false",
        "auto.create.topics.enable: false",
        "transaction.state.log.min.isr: 2",
        "type: scram-sha-512",
        "tls: true",
        "type: simple",
    ):
        assert f"      {setting}\n" in text or f"{setting}\n" in text, setting


@pytest.mark.parametrize(
    "path",
    [
        DEPLOY / "kafka" / "compose.yaml",
        DEPLOY / "kafka" / "compose.env.example",
        DEPLOY / "kubernetes" / "kafka.yaml",
        DEPLOY / KUBERNETES_TOPICS,
    ],
    ids=lambda p: p.name,
)
def test_no_secret_is_committed(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        assert not re.search(r"(?i)(password|secret|passphrase)\s*[:=]\s*\S", line), line
    assert "BEGIN" not in text  # no PEM block
    assert re.search(r"^KAFKA_CLUSTER_ID=\s*$", text, re.M) or "compose.env" not in path.name
