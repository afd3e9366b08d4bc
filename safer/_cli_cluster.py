"""`safer cluster`: a 3-broker Apache Kafka cluster on loopback, its health, its manifests.

* ``safer cluster up`` starts three KRaft nodes (data in ``<data-dir>/cluster``),
  creates every topic with replication factor 3 and ``min.insync.replicas`` 2,
  advertises itself in ``broker.json`` for the other commands, restarts a node
  that dies, and runs until Ctrl-C. ``safer up --cluster`` does the same and runs
  the services on it.
* ``safer cluster status`` shows brokers, leaders and in-sync replicas.
* ``safer cluster manifests`` writes the Strimzi ``KafkaTopic`` manifests from the
  same topic plan (``--check`` fails if the committed ones differ).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker import (
    CLUSTER_MIN_INSYNC_REPLICAS,
    CLUSTER_NODES,
    CLUSTER_REPLICATION_FACTOR,
    ClusterHealth,
    PartitionState,
    Settings,
    cluster_health,
    cluster_settings,
    loopback_cluster,
    strimzi_topics,
    wait_healthy,
)

from ._cli_common import (
    FORMATTER,
    err,
    out,
    recipients_child_metrics,
    run_async,
    settings_from,
)
from ._retention import run_retention
from ._runtime import Runtime, refuse_second_engine, resolve_bootstrap, write_broker_file

__all__ = ["KUBERNETES_TOPICS", "register", "run_cluster", "topics_manifest"]

#: Where the generated Strimzi topics live, relative to the deploy directory.
KUBERNETES_TOPICS = Path("kubernetes") / "kafka-topics.yaml"
#: The Strimzi Kafka cluster name the manifests use (deploy/kubernetes/kafka.yaml).
STRIMZI_CLUSTER = "safer"


class _Startup:
    """Shows what start-up waits for: a line per step, and a spinner with the time."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        self._task = self._progress.add_task("starting the cluster", total=None)
        self._live = False

    def __enter__(self) -> _Startup:
        self._progress.start()
        self._live = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._live = False
        self._progress.stop()

    def report(self, message: str) -> None:
        """The progress callback of LocalKafka (called from its thread too)."""
        err.print(f"[dim]kafka:[/] {message}")
        if self._live:
            self._progress.update(self._task, description=message)


async def _unreachable(health: ClusterHealth) -> set[int]:
    """Brokers the cluster still lists that do not accept a connection (just died)."""

    async def answers(host: str, port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    results = await asyncio.gather(*(answers(b.host, b.port) for b in health.brokers))
    return {b.node_id for b, ok in zip(health.brokers, results, strict=True) if not ok}


def _verdict(health: ClusterHealth, unreachable: AbstractSet[int] = frozenset()) -> str:
    up = {b.node_id for b in health.brokers} - unreachable
    known = up | unreachable | {r for p in health.partitions for r in p.replicas}
    down = sorted(known - up)
    counts: dict[PartitionState, int] = {}
    for p in health.partitions:
        counts[p.state] = counts.get(p.state, 0) + 1
    topics = len({p.topic for p in health.partitions})
    state = health.state
    if state is PartitionState.OK and unreachable:
        return (
            f"[yellow]degraded[/]: broker(s) {', '.join(map(str, sorted(unreachable)))} do not "
            "answer; the cluster moves their leaders away once it fences them "
            "(broker.session.timeout.ms, 9 s by default)"
        )
    if state is PartitionState.OK:
        return (
            f"[green]healthy[/]: {len(up)} broker(s) up; every partition of {topics} topics "
            "has all its replicas in sync"
        )
    parts = []
    if down:
        parts.append(f"broker(s) {', '.join(map(str, down))} down")
    if health.missing:
        parts.append(
            f"{len(health.missing)} topic(s) missing (first: {health.missing[0]}); "
            "run `safer topics create`"
        )
    if counts.get(PartitionState.OFFLINE):
        parts.append(
            f"{counts[PartitionState.OFFLINE]} partition(s) OFFLINE: no leader, nothing can "
            "be read or written there until a replica's broker returns"
        )
    if counts.get(PartitionState.BELOW_MIN_ISR):
        parts.append(
            f"{counts[PartitionState.BELOW_MIN_ISR]} partition(s) BELOW_MIN_ISR: writes are "
            "refused (NOT_ENOUGH_REPLICAS) and producers retry until a broker returns"
        )
    if counts.get(PartitionState.UNDER_REPLICATED):
        parts.append(
            f"{counts[PartitionState.UNDER_REPLICATED]} partition(s) UNDER_REPLICATED: still "
            "read and written (enough replicas in sync), with less redundancy"
        )
    colour = "yellow" if state is PartitionState.UNDER_REPLICATED else "red"
    return f"[{colour}]{state.name.lower()}[/]: " + "; ".join(parts)


def _brokers_table(health: ClusterHealth, unreachable: AbstractSet[int]) -> Table:
    up = {b.node_id: b for b in health.brokers}
    known = sorted(set(up) | {r for p in health.partitions for r in p.replicas})
    table = Table(title="Brokers", title_justify="left")
    for name in ("id", "address", "state", "leads", "replicas out of sync"):
        table.add_column(name, justify="right" if name in ("id", "leads") else "left")
    for node_id in known:
        broker = up.get(node_id)
        lagging = len(health.not_in_sync(node_id))
        table.add_row(
            str(node_id),
            broker.address if broker else "-",
            "[red]down[/]"
            if broker is None
            else "[yellow]not answering[/]"
            if node_id in unreachable
            else "[green]up[/]",
            str(len(health.led_by(node_id))),
            str(lagging) if lagging else "0",
        )
    return table


def _topics_table(health: ClusterHealth, *, every: bool) -> Table | None:
    """One row per topic (only those not OK, unless ``every``); None when nothing to show."""
    by_topic: dict[str, list[Any]] = {}
    for p in health.partitions:
        by_topic.setdefault(p.topic, []).append(p)
    rows = [
        (topic, parts, max(p.state for p in parts))
        for topic, parts in by_topic.items()
        if every or max(p.state for p in parts) is not PartitionState.OK
    ]
    if not rows and not health.missing:
        return None
    table = Table(title="Topics", title_justify="left")
    for name in ("topic", "partitions", "RF", "min ISR", "in sync", "state"):
        table.add_column(name, no_wrap=name == "topic")
    colours = {PartitionState.OK: "green", PartitionState.UNDER_REPLICATED: "yellow"}
    for topic, parts, state in rows:
        in_sync = sorted({len(p.isr) for p in parts})
        table.add_row(
            topic,
            str(len(parts)),
            "/".join(str(n) for n in sorted({len(p.replicas) for p in parts})),
            "/".join(str(n) for n in sorted({p.min_insync_replicas for p in parts})),
            f"{in_sync[0]}-{in_sync[-1]}" if len(in_sync) > 1 else str(in_sync[0]),
            f"[{colours.get(state, 'red')}]{state.name}[/]",
        )
    for topic in health.missing:
        table.add_row(topic, "-", "-", "-", "-", "[red]MISSING[/]")
    return table


async def _serve_cluster(
    settings: Settings,
    stop: asyncio.Event,
    *,
    services: bool,
    started: float,
    log_file: Path | None,
    routers: int = 1,
) -> int:
    with _Startup() as startup:
        startup.report(f"starting {CLUSTER_NODES} KRaft nodes, data in {settings.cluster_home}")
        kafka = loopback_cluster(
            settings.cluster_home, deploy_dir=settings.deploy_dir, progress=startup.report
        )
        await asyncio.to_thread(kafka.start)  # on failure it stops what it started
    try:
        bootstrap = kafka.bootstrap_servers
        runtime = Runtime(settings, bootstrap)
        if services:
            created = runtime.init_keys()
            if created:
                err.print(f"created {created} development keys in {settings.keys_dir}")
        changes = await runtime.create_topics()
        new_topics = [c for c in changes if c.startswith("created ")]
        if new_topics:
            err.print(f"[dim]topics:[/] created {len(new_topics)} topics")
        for change in changes:
            if not change.startswith("created "):
                err.print(f"[dim]topics:[/] {change}")
        health = await wait_healthy(bootstrap, [s.name for s in runtime.topic_specs()], timeout=30)
        write_broker_file(
            settings.data_dir,
            bootstrap,
            replication_factor=CLUSTER_REPLICATION_FACTOR,
            min_insync_replicas=CLUSTER_MIN_INSYNC_REPLICAS,
        )
        print(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}", flush=True)
        err.print(
            f"{kafka.engine}, {CLUSTER_NODES} brokers up in {time.monotonic() - started:.1f} s; "
            f"{len(runtime.topic_specs())} topics with replication factor "
            f"{CLUSTER_REPLICATION_FACTOR} and min.insync.replicas "
            f"{CLUSTER_MIN_INSYNC_REPLICAS}"
        )
        err.print(_verdict(health))
        watchdog = asyncio.create_task(kafka.watch(stop), name="kafka-watchdog")
        try:
            if services:
                recipients = runtime.deployment.directory.recipients
                await runtime.run_services(
                    stop,
                    router_process=True,  # as `safer up`: routing gets a core of its own
                    routers=routers,
                    recipients_process=True,  # as `safer up`
                    recipients_ops_port=recipients_child_metrics(),
                    log_file=log_file,
                    extra=[("retention", functools.partial(run_retention, runtime))],
                    on_ready=lambda: err.print(
                        f"[green]ready[/] on the {CLUSTER_NODES}-broker cluster: router "
                        f"(exactly-once), audit feed and {len(recipients)} recipient adapters. "
                        "Publish with `safer publish --agency police FILE`. Ctrl-C stops."
                    ),
                )
            else:
                err.print(
                    "A node that dies is restarted. Check with `safer cluster status`. "
                    "Ctrl-C stops the cluster (its data stays)."
                )
                await stop.wait()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            (settings.data_dir / "broker.json").unlink(missing_ok=True)
    finally:
        err.print("stopping the cluster (controlled shutdown of each broker)")
        await asyncio.to_thread(kafka.stop)
    err.print("cluster stopped; its data stays in " + str(settings.cluster_home))
    return 0


def run_cluster(args: argparse.Namespace, *, services: bool) -> int:
    """`safer cluster up`, and `safer up --cluster` (``services=True``)."""
    started = time.monotonic()
    settings = cluster_settings(settings_from(args))
    if settings.bootstrap_servers:
        err.print(
            f"KAFKA_BOOTSTRAP_SERVERS is set ({settings.bootstrap_servers}); no local cluster "
            "started. Create the topics there with SAFER_REPLICATION_FACTOR=3 "
            "SAFER_MIN_INSYNC_REPLICAS=2 safer topics create"
        )
        return 0
    refuse_second_engine(settings)

    async def serve(stop: asyncio.Event) -> int:
        return await _serve_cluster(
            settings,
            stop,
            services=services,
            started=started,
            log_file=args.log_file,
            routers=getattr(args, "routers", 1),  # `safer up --cluster --routers N`
        )

    return run_async(serve)


def cmd_cluster_up(args: argparse.Namespace) -> int:
    return run_cluster(args, services=False)


def cmd_cluster_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))

    async def status(stop: asyncio.Event) -> int:
        return 0 if (await _status(runtime, as_json=args.json, every=args.all)) else 1

    return run_async(status)


async def _status(runtime: Runtime, *, as_json: bool, every: bool) -> bool:
    # The client library logs every refused connection; the table says it better.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    health = await cluster_health(
        runtime.bootstrap, [s.name for s in runtime.topic_specs()], **runtime.security
    )
    unreachable = await _unreachable(health)
    if as_json:
        report = health.to_json()
        report["unreachable_brokers"] = sorted(unreachable)
        if unreachable and health.healthy:
            report["state"] = "BROKER_NOT_ANSWERING"
        print(json.dumps(report, sort_keys=True))
    else:
        out.print(_brokers_table(health, unreachable))
        topics = _topics_table(health, every=every)
        if topics is not None:
            out.print(topics)
        out.print(_verdict(health, unreachable))
    return health.healthy and not unreachable


def topics_manifest(settings: Settings) -> str:
    """deploy/kubernetes/kafka-topics.yaml as the plan says it should be (production layout)."""
    production = cluster_settings(settings)
    runtime = Runtime(production, bootstrap="")
    layout = production.topic_layout
    return strimzi_topics(
        runtime.topic_specs(),
        cluster=STRIMZI_CLUSTER,
        header=[
            "GENERATED by `safer cluster manifests` from broker/_topics.py topic_plan and",
            "deploy/directory.toml (its publishers). Do not edit: change the plan and run",
            "`safer cluster manifests` again; a test fails if this file and the plan differ.",
            "",
            f"Prefix {production.topic_prefix!r}, inbound partitions {layout.inbound_partitions},"
            f" replication factor {layout.replication_factor}, min.insync.replicas "
            f"{layout.min_insync_replicas}.",
            "Apply after deploy/kubernetes/kafka.yaml: kubectl apply -n safer -f kafka-topics.yaml",
        ],
    )


def cmd_cluster_manifests(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = Path(args.out) if args.out else settings.deploy_dir / KUBERNETES_TOPICS
    text = topics_manifest(settings)
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if args.check:
        if current == text:
            err.print(f"[green]up to date[/]: {path} matches the topic plan")
            return 0
        err.print(
            f"[red]out of date[/]: {path} does not match the topic plan; "
            "run `safer cluster manifests` and commit the result"
        )
        return 1
    if current == text:
        err.print(f"unchanged: {path}")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    err.print(f"wrote {path} ({text.count('kind: KafkaTopic')} KafkaTopic resources)")
    return 0


def register(sub: Any) -> None:
    cluster = sub.add_parser(
        "cluster",
        help="a 3-broker Apache Kafka cluster on this machine that survives losing a broker",
        formatter_class=FORMATTER,
        description="Three Apache Kafka nodes (KRaft, each broker and controller) on loopback,\n"
        "data in <data-dir>/cluster. Every topic has 3 replicas and\n"
        "min.insync.replicas=2, and producers use acks=all: a record is acknowledged\n"
        "only when two brokers hold it, and the cluster goes on serving with any one\n"
        "broker down. For drills and tests on one machine; for production see\n"
        "deploy/kafka/compose.yaml and deploy/kubernetes/ (docs/OPERATIONS.md).\n\n"
        "examples:\n"
        "  safer cluster up              # the cluster alone; other commands find it\n"
        "  safer up --cluster            # the cluster and every service on it\n"
        "  safer cluster status          # brokers, leaders, in-sync replicas",
    )
    actions = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up",
        help="start the 3 brokers, create every topic, run until Ctrl-C",
        formatter_class=FORMATTER,
        description="Start three KRaft nodes on 127.0.0.1 (ports kept in\n"
        "<data-dir>/cluster/ports.json), create every topic with replication factor 3\n"
        "and min.insync.replicas 2, write <data-dir>/broker.json so that other safer\n"
        "commands (publish, route, topics, cluster status, audit...) find the cluster,\n"
        "and print KAFKA_BOOTSTRAP_SERVERS=host:port,host:port,host:port. A node that\n"
        "dies is restarted on its ports with its data. Ctrl-C stops every node; the\n"
        "data stays, and `safer cluster up` again resumes where it stopped.\n\n"
        "To run the router, audit feed and recipients on it too, use `safer up\n"
        "--cluster` instead (one command), or run them yourself beside this one.\n\n"
        "examples:\n"
        "  safer cluster up\n"
        "  # in another terminal:\n"
        "  safer cluster status\n"
        "  safer route --instance 1",
    )
    up.set_defaults(func=cmd_cluster_up)
    status = actions.add_parser(
        "status",
        help="brokers, partition leaders and in-sync replicas of every SAFER topic",
        formatter_class=FORMATTER,
        description="Ask the cluster (a running `safer cluster up`, or KAFKA_BOOTSTRAP_SERVERS)\n"
        "for its brokers and, for every SAFER topic and Kafka's offsets and transaction\n"
        "topics, each partition's leader and in-sync replicas (ISR). States, worst last:\n"
        "  OK                every replica in sync\n"
        "  UNDER_REPLICATED  a replica is behind or its broker is down; reads and writes\n"
        "                    go on (in sync >= min.insync.replicas), with less redundancy\n"
        "  BELOW_MIN_ISR     fewer in sync than min.insync.replicas: writes are refused\n"
        "                    and producers retry until a broker returns\n"
        "  OFFLINE           no leader: the partition cannot be read or written\n"
        "  MISSING           the topic does not exist (run `safer topics create`)\n"
        "Lists the topics that are not OK (--all: every topic). Exit code 0 only when\n"
        "every partition is OK.\n\n"
        "examples:\n  safer cluster status\n  safer cluster status --json | jq .state",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    status.add_argument(
        "--all", action="store_true", help="list every topic (default: those not OK)"
    )
    status.set_defaults(func=cmd_cluster_status)
    manifests = actions.add_parser(
        "manifests",
        help="write the Strimzi KafkaTopic manifests from the topic plan",
        formatter_class=FORMATTER,
        description="Write deploy/kubernetes/kafka-topics.yaml: one Strimzi KafkaTopic per SAFER\n"
        "topic, with the partitions, replication (3), min.insync.replicas (2),\n"
        "retention and compaction of broker/_topics.py topic_plan, for the publishers\n"
        "in deploy/directory.toml. Run it after changing either; --check only compares.\n\n"
        "examples:\n  safer cluster manifests\n  safer cluster manifests --check",
    )
    manifests.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from the plan"
    )
    manifests.add_argument(
        "--out", default=None, help="write here instead of <deploy-dir>/kubernetes/..."
    )
    manifests.set_defaults(func=cmd_cluster_manifests)
