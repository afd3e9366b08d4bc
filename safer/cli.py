"""The `safer` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker import (
    KAFKA_VERSION,
    Engine,
    Settings,
    install_kafka,
    kafka_engine,
    load_deployment,
    make_producer,
    secure_kafka_engine,
    start_client,
)
from schemas import SaferError

from ._cli_audit import register as register_audit
from ._cli_cluster import register as register_cluster
from ._cli_cluster import run_cluster
from ._cli_common import (
    FORMATTER,
    err,
    out,
    recipients_child_metrics,
    run_async,
    settings_from,
)
from ._cli_gateway import add_gateway_options, run_gateway
from ._cli_gateway import register as register_gateway
from ._cli_inbox import register as register_inbox
from ._cli_keys import register_key_actions
from ._cli_onboard import register as register_onboard
from ._cli_policy import register as register_policy
from ._cli_quarantine import register as register_quarantine
from ._cli_registry import register as register_registry
from ._cli_secure import register as register_secure
from ._cli_topics import register as register_topics
from ._cli_track import record_published
from ._cli_track import register as register_track
from ._cli_users import register as register_users
from ._demo import run_demo
from ._logging import configure_logging
from ._retention import run_retention
from ._runtime import (
    RECIPIENTS_READY_LINE,
    ROUTER_READY_LINE,
    Runtime,
    refuse_second_engine,
    resolve_bootstrap,
    write_broker_file,
)

__all__ = ["main"]

MAIN_HELP = """\
SAFER Exchange shares safeguarding concerns about children between police,
children's social care, health, schools and youth justice across the four HIPS
partnerships (Hampshire, Isle of Wight, Portsmouth, Southampton): signed,
decided per recipient, minimised, encrypted, and recorded in an audit log.

Start here:
  safer demo                         run everything on synthetic data and summarise
  safer up                           run broker, router, recipients and audit feed
  safer up --cluster                 the same on 3 brokers that survive losing one
  safer publish --agency police deploy/examples/concern-domestic-abuse.json
  safer audit verify                 check the audit log has not been tampered with

With no KAFKA_BOOTSTRAP_SERVERS set, `safer up`, `safer broker` and `safer demo`
run Apache Kafka (KRaft, one node) from the pinned jars that `make kafka` (or
`safer kafka install`) fetches; its data lives under <data-dir>/kafka, so a
restart keeps every topic. Routing is exactly-once: one Kafka transaction per
batch, and every reader sees only committed records.
"""


_SECURE_HELP = (
    "run Kafka with TLS and SASL/SCRAM-SHA-512, a local CA, one Kafka user per "
    "principal and ACLs from deploy/directory.toml (docs/OPERATIONS.md, 'Secure mode')"
)


def _kafka_progress(message: str) -> None:
    err.print(f"[dim]kafka:[/] {message}")


# -- keys ---------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap="")
    created = runtime.init_keys(overwrite=args.force)
    total = len(runtime.key_identities())
    err.print(
        f"[green]keys ready[/] for {total} identities in {settings.keys_dir} "
        f"({created} created; private keys are mode 0600)"
    )
    if created == 0:
        err.print("existing keys were kept; use --force to replace them")
    return 0


# -- broker -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _engine(settings: Settings, args: argparse.Namespace) -> AsyncIterator[Engine]:
    """The Kafka a command runs on: local secure (``--secure``), local plaintext, or
    ``KAFKA_BOOTSTRAP_SERVERS``."""
    if args.secure:
        async with secure_kafka_engine(
            settings, port=args.port, progress=_kafka_progress
        ) as engine:
            yield engine
    else:
        with kafka_engine(settings, port=args.port, progress=_kafka_progress) as engine:
            yield engine


def _print_client_settings(engine: Engine) -> None:
    """What a client needs, as shell assignments (secure mode adds TLS and SCRAM)."""
    print(f"KAFKA_BOOTSTRAP_SERVERS={engine.bootstrap_servers}", flush=True)
    if engine.access is not None:
        print(f"KAFKA_SECURITY_PROTOCOL={engine.access.security_protocol}")
        print(f"KAFKA_SASL_MECHANISM={engine.access.sasl_mechanism}")
        print(f"KAFKA_SSL_CAFILE={engine.access.cafile}")
        print(f"SAFER_KAFKA_CREDENTIALS={engine.access.credentials_file}", flush=True)


def cmd_kafka_install(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    dist = install_kafka(
        settings.deploy_dir, progress=_kafka_progress, update_checksums=args.update_checksums
    )
    err.print(f"[green]ready[/]: Apache Kafka {dist.version} in {dist.libs} (Java {dist.java})")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.bootstrap_servers and not args.secure:
        err.print(
            f"KAFKA_BOOTSTRAP_SERVERS is set ({settings.bootstrap_servers}); nothing started."
        )
        return 0
    refuse_second_engine(settings)

    async def serve(stop: asyncio.Event) -> int:
        async with _engine(settings, args) as engine:
            try:
                write_broker_file(settings.data_dir, engine.bootstrap_servers, engine.access)
                runtime = Runtime(settings, engine.bootstrap_servers, access=engine.access)
                for change in await runtime.create_topics():
                    err.print(f"[dim]topics:[/] {change}")
                _print_client_settings(engine)
                mode = "secure (TLS, SASL/SCRAM-SHA-512, ACLs)" if engine.access else "plaintext"
                err.print(
                    f"{engine.name} running, {mode}, data in {settings.kafka_home}. Ctrl-C to stop."
                )
                await stop.wait()
            finally:
                (settings.data_dir / "broker.json").unlink(missing_ok=True)
        return 0

    return run_async(serve)


# -- publish ------------------------------------------------------------------


def cmd_publish(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))
    police = runtime.police_adapter(args.agency)
    publisher = runtime.publisher(args.agency).id  # its Kafka principal in secure mode
    parsed = police.parse_files([Path(p) for p in args.files])

    async def publish(stop: asyncio.Event) -> int:
        producer = make_producer(runtime.bootstrap, **runtime.security_for(publisher))
        await start_client(producer, runtime.bootstrap)
        try:
            outcomes = await police.publish(producer, parsed)
        finally:
            await producer.stop()
        record_published(
            settings.data_dir,
            [(r.concern.concern_id, r.concern.source_ref) for r in parsed if r.concern],
        )
        rejected = 0
        for outcome in outcomes:
            line = f"{outcome.concern_id or '-'} {outcome.status}"
            if outcome.status != "ACCEPTED":
                rejected += 1
                line += f" {outcome.label}: {outcome.detail}"
            print(line, flush=True)
        return 1 if rejected else 0

    return run_async(publish)


# -- route / up ---------------------------------------------------------------


def cmd_route(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))

    async def route(stop: asyncio.Event) -> int:
        await runtime.create_topics()
        router = runtime.router(group_id=args.group_id, instance=args.instance)
        err.print(f"router consuming {settings.topics.inbound('police')} as {args.group_id}")
        ready = asyncio.Event()

        async def announce() -> None:
            await ready.wait()
            # `safer up` runs the router as a child process and waits for this line.
            print(ROUTER_READY_LINE, flush=True)

        announcer = asyncio.create_task(announce())
        ops = _router_ops(args, router, ready, stop)
        try:
            await router.run(stop, ready)
        finally:
            announcer.cancel()
            if ops is not None:
                stop.set()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await ops
        err.print(f"router stopped: {dict(router.totals)}")
        return 0

    return run_async(route)


def cmd_recipients(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    directory = load_deployment(settings.deploy_dir).directory
    known = {r.id: r for r in directory.recipients}
    unknown = sorted(set(args.recipient) - set(known))
    if unknown:
        err.print(
            f"unknown recipient(s): {', '.join(unknown)}; use the id of a recipient in "
            f"{settings.deploy_dir / 'directory.toml'}"
        )
        return 2
    chosen = [known[i] for i in args.recipient] if args.recipient else list(directory.recipients)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))

    async def serve(stop: asyncio.Event) -> int:
        await runtime.create_topics()
        err.print(f"{len(chosen)} recipient adapter(s) reading their disclosure topics")
        ready = asyncio.Event()

        def announce() -> None:
            ready.set()
            # `safer up` runs the adapters as a child process and waits for this line.
            print(RECIPIENTS_READY_LINE, flush=True)

        ops = None
        if args.ops_port is not None:
            from adapters import ADAPTER_METRICS

            ops = _serve_ops_task(args, "recipients", ADAPTER_METRICS, ready, stop)
        try:
            await runtime.run_services(
                stop, router=False, feed=False, monitor=False, recipients=chosen, on_ready=announce
            )
        finally:
            if ops is not None:
                stop.set()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await ops
        err.print("recipient adapters stopped")
        return 0

    return run_async(serve)


def _router_ops(
    args: argparse.Namespace, router: Any, ready: asyncio.Event, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """`safer route --ops-port N`: /healthz, /readyz and /metrics of this router."""
    if args.ops_port is None:
        return None
    from prometheus_client import CollectorRegistry

    from ._ops import CountsCollector

    registry = CollectorRegistry()
    registry.register(
        CountsCollector(
            "safer_router_records",
            "Records this router process handled since it started: inbound, and each audit "
            "event it wrote (DISCLOSED, WITHHELD, REFERRED, QUARANTINED, ...)",
            "outcome",
            lambda: router.totals,
        )
    )
    return _serve_ops_task(args, "router", registry, ready, stop)


def _serve_ops_task(
    args: argparse.Namespace,
    service: str,
    registry: Any,
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """Serve a child service's ops endpoints on --ops-host:--ops-port until ``stop``."""
    from ._ops import ops_app, serve_ops

    app = ops_app(service, lambda: ready.is_set() and not stop.is_set(), registry)

    async def run() -> None:
        try:
            await serve_ops(app, stop, host=args.ops_host, port=args.ops_port)
        except SaferError as exc:  # the service goes on without its ops endpoints
            err.print(f"[yellow]ops endpoints not started[/]: {exc.message}; {exc.hint}")

    return asyncio.create_task(run(), name=f"safer-{service}-ops")


def _up_ops(
    args: argparse.Namespace, settings: Settings, ready: asyncio.Event, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """`safer up --ops-port N`: /healthz, /readyz and /metrics of the services it runs,
    without the web app (the audit log's figures and the adapters' webhook counters)."""
    if args.ops_port is None:
        return None
    from prometheus_client import CollectorRegistry

    from adapters import ADAPTER_METRICS

    from ._ops import ops_app, serve_ops
    from .web._metrics import AuditCollector

    registry = CollectorRegistry()
    registry.register(AuditCollector(settings))
    registry.register(ADAPTER_METRICS)
    app = ops_app("safer-up", lambda: ready.is_set() and not stop.is_set(), registry)

    async def run() -> None:
        try:
            await serve_ops(app, stop, host="127.0.0.1", port=args.ops_port)
        except SaferError as exc:  # the exchange runs on without its ops endpoints
            err.print(f"[yellow]ops endpoints not started[/]: {exc.message}; {exc.hint}")

    return asyncio.create_task(run(), name="safer-up-ops")


async def _gateway_in_up(runtime: Runtime, stop: asyncio.Event, args: argparse.Namespace) -> None:
    """The gateway beside the other services: its failure to start is reported, not fatal."""
    try:
        await run_gateway(runtime, stop, args)
    except SaferError as exc:
        err.print(f"[red]gateway not started[/] [{exc.code}] {exc.message}")
        if exc.hint:
            err.print(f"  what to do: {exc.hint}")


def cmd_web(args: argparse.Namespace) -> int:
    from .web import serve

    settings = settings_from(args)

    async def web(stop: asyncio.Event) -> int:
        await serve(
            settings,
            stop,
            host=args.host,
            port=args.port,
            on_ready=lambda url: err.print(f"[green]safer web[/] on {url} (Ctrl-C stops)"),
        )
        return 0

    return run_async(web)


def _web_task(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """`safer up` also serves the web app (unless --no-web)."""
    if args.no_web:
        return None
    from .web import serve

    async def web() -> None:
        try:
            await serve(
                settings,
                stop,
                host=args.web_host,
                port=args.web_port,
                on_ready=lambda url: err.print(f"[green]safer web[/] on {url}"),
            )
        except SaferError as exc:  # the exchange runs on without its web app
            err.print(f"[yellow]safer web not started[/]: {exc.message}; {exc.hint}")

    return asyncio.create_task(web(), name="safer-web")


def cmd_up(args: argparse.Namespace) -> int:
    partitions = settings_from(args).inbound_partitions
    if not 1 <= args.routers <= partitions:
        err.print(
            f"--routers must be between 1 and {partitions} (the inbound partitions; a "
            "router beyond that would get none and idle). On N free cores, try N."
        )
        return 2
    if args.cluster:
        if args.port is not None:
            err.print("--port is for the single broker; the cluster keeps its ports")
            return 2
        if args.secure:
            err.print(
                "--secure runs on one broker for now: TLS, SCRAM and ACLs for the loopback "
                "cluster are not wired in (docs/OPERATIONS.md, 'Secure mode'). Use one of them."
            )
            return 2
        return run_cluster(args, services=True)
    settings = settings_from(args)
    refuse_second_engine(settings)

    async def up(stop: asyncio.Event) -> int:
        async with _engine(settings, args) as engine:
            bootstrap = engine.bootstrap_servers
            if engine.local is not None:
                write_broker_file(settings.data_dir, bootstrap, engine.access)
            # Secure mode: each service connects as its own principal (Runtime.security_for).
            runtime = Runtime(settings, bootstrap, access=engine.access)
            created = runtime.init_keys()
            if created:
                err.print(f"created {created} development keys in {settings.keys_dir}")
            for change in await runtime.create_topics():
                err.print(f"[dim]topics:[/] {change}")
            _print_client_settings(engine)
            recipients = runtime.deployment.directory.recipients
            watchdog = (
                asyncio.create_task(engine.local.watch(stop), name="kafka-watchdog")
                if engine.local is not None
                else None
            )
            secure = " in secure mode (each service its own principal)" if engine.access else ""
            gateway = (
                None
                if args.no_gateway
                else asyncio.create_task(_gateway_in_up(runtime, stop, args), name="gateway")
            )
            web = _web_task(settings, args, stop)
            services_ready = asyncio.Event()
            ops = _up_ops(args, settings, services_ready, stop)

            def ready() -> None:
                services_ready.set()
                err.print(
                    f"[green]ready[/] on {engine.name}{secure}: router (exactly-once), "
                    f"audit feed, retention and {len(recipients)} recipient adapters. "
                    "Publish with `safer publish --agency police FILE`. Ctrl-C stops."
                )

            try:
                await runtime.run_services(
                    stop,
                    # Its own process: routing gets a core of its own instead of sharing
                    # an event loop with the feed, the monitor and every recipient.
                    router_process=True,
                    routers=args.routers,
                    # The recipient adapters too: an inbox copy waits neither for the
                    # audit feed's appends nor its checkpoints (issue 12).
                    recipients_process=True,
                    # Its webhook counters reach this process's /metrics from there.
                    recipients_ops_port=recipients_child_metrics(),
                    router_ops_port=args.router_ops_port,
                    log_file=args.log_file,
                    # Inbox copies past their agreement's retention: at start, then hourly.
                    extra=[("retention", functools.partial(run_retention, runtime))],
                    on_ready=ready,
                )
            finally:
                if gateway is not None:
                    stop.set()
                    await gateway
                for task in (web, ops):
                    if task is not None:
                        stop.set()
                        with contextlib.suppress(Exception, asyncio.CancelledError):
                            await task
                if watchdog is not None:
                    watchdog.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watchdog
                (settings.data_dir / "broker.json").unlink(missing_ok=True)
        err.print("all services stopped cleanly")
        return 0

    return run_async(up)


# -- demo ---------------------------------------------------------------------


def _summary_table(result: Any) -> Table:
    table = Table(title="Decisions per partnership (every one audited)")
    table.add_column("partnership")
    for name in ("disclosed", "withheld", "referred", "received"):
        table.add_column(name, justify="right")
    for lscp, counts in result.by_lscp.items():
        table.add_row(
            lscp, *(str(counts[k]) for k in ("disclosed", "withheld", "referred", "received"))
        )
    table.add_section()
    table.add_row(
        "all",
        str(result.disclosed),
        str(result.withheld),
        str(result.referred),
        str(result.received),
    )
    return table


def _codes_table(title: str, codes: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("reason code")
    table.add_column("count", justify="right")
    for code, count in codes.items():
        table.add_row(code, str(count))
    return table


def _print_demo_summary(result: Any, data_dir: Path) -> None:
    out.print(_summary_table(result))
    out.print(
        "[dim]disclosed: minimised, encrypted copy delivered · withheld: a recorded decision "
        "not to share · referred: sent to the front door for a professional to judge · "
        "received: the recipient decrypted it and sent a signed receipt[/]"
    )
    out.print(_codes_table("Why records were withheld", result.withheld_codes))
    out.print(
        "[dim]every candidate recipient gets a recorded decision; most withholds are "
        "agencies with no data-sharing agreement for that kind of concern[/]"
    )
    out.print(_codes_table("Quarantined (the deliberately bad records)", result.quarantine_codes))
    out.print("[dim]kept with their original bytes on hips.quarantine, replayable after a fix[/]")
    out.print(
        f"deadlines: {result.deadlines_total} disclosures carry a statutory clock; "
        f"{result.deadlines_met} met (notifications received in time), "
        f"{result.deadlines_open} still open (nobody has had time to act in a demo), "
        f"{result.deadlines_missed} missed. Watch them with: safer overdue"
    )
    verdict = "[green]verified[/]" if result.audit_verified else "[red]FAILED[/]"
    out.print(
        f"published {result.published} · audit records {result.audit_records} · "
        f"audit log {verdict} · {result.seconds:.1f} s"
    )
    out.print(
        f"next: safer --data-dir {data_dir} audit verify    "
        f"(inboxes: {data_dir}/inbox/, audit log: {data_dir}/audit.db)"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    settings = settings_from(args).model_copy(
        update={"data_dir": Path(args.data_dir or ".safer/demo")}
    )
    configure_logging(log_file=settings.data_dir.parent / "demo.log")
    show_progress = not args.json and err.is_terminal

    if settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)  # demo data only: its Kafka starts fresh too

    async def demo(stop: asyncio.Event) -> int:
        progress_out = _kafka_progress if not args.json else (lambda _: None)
        with kafka_engine(settings, progress=progress_out) as engine:
            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=err,
                disable=not show_progress,
            )
            tasks: dict[str, TaskID] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            with progress:
                result = await run_demo(
                    settings,
                    bootstrap=engine.bootstrap_servers,
                    engine=engine.name,
                    concerns=args.concerns,
                    seed=args.seed,
                    timeout=args.timeout,
                    progress=report,
                )
        if args.json:
            print(json.dumps(result.to_json(), sort_keys=True))
        else:
            _print_demo_summary(result, settings.data_dir)
        for problem in result.problems:
            err.print(f"[red]problem:[/] {problem}")
        return 0 if result.ok else 1

    return run_async(demo)


# -- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safer", description=MAIN_HELP, formatter_class=FORMATTER)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where keys, the audit log and inboxes live (default ./.safer, env SAFER_DATA_DIR)",
    )
    parser.add_argument(
        "--deploy-dir",
        type=Path,
        default=None,
        help="directory, policy and postcode files (default ./deploy, env SAFER_DEPLOY_DIR)",
    )
    parser.add_argument(
        "--log-file", type=Path, default=None, help="write JSON logs here instead of stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    keys = sub.add_parser(
        "keys",
        help="manage development keys",
        formatter_class=FORMATTER,
        description="Manage signing (Ed25519) and encryption (X25519) keys.\n\n"
        "Every publisher signs what it sends; the router verifies it and signs what\n"
        "it emits; each recipient has its own encryption key, so only the addressee\n"
        "can read a disclosure. Keys live under <data-dir>/keys/<agency-id>/.\n"
        "Rotation and revocation are audited and published on hips.keys, which the\n"
        "router and recipients follow (docs/OPERATIONS.md: a key is compromised).\n\n"
        "examples:\n  safer keys init\n  safer keys list\n"
        "  safer keys rotate hampshire-constabulary --overlap 24\n"
        "  safer keys revoke 3f2a9c0d1e2f3a4b --reason compromised",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    init = keys_sub.add_parser(
        "init",
        help="create development keys for every agency in the directory",
        formatter_class=FORMATTER,
        description="Create an Ed25519 signing key and an X25519 encryption key for the router\n"
        "and every publisher and recipient in deploy/directory.toml, plus the\n"
        "partnership pseudonymisation secret. Private key files get mode 0600.\n"
        "Existing keys are kept unless --force is given.\n\n"
        "These are DEVELOPMENT keys, unencrypted on disk. Production keys belong in\n"
        "each agency's HSM or key vault.\n\n"
        "example:\n  safer keys init\n  safer --data-dir /srv/safer keys init",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace existing keys (old disclosures become unreadable)",
    )
    init.set_defaults(func=cmd_keys_init)
    register_key_actions(keys_sub)

    kafka = sub.add_parser(
        "kafka",
        help="install the pinned Apache Kafka (Maven)",
        formatter_class=FORMATTER,
        description=f"SAFER Exchange runs Apache Kafka {KAFKA_VERSION} (KRaft) from Kafka's own\n"
        "jars, fetched from Maven Central with `mvn` as deploy/kafka/pom.xml says and\n"
        "checked against deploy/kafka/kafka-<version>.sha256. Needs Java 17+ and Maven.\n"
        "`make demo` and `make test` run this for you.\n\n"
        "example:\n  safer kafka install",
    )
    kafka_sub = kafka.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)
    kafka_install = kafka_sub.add_parser(
        "install",
        help="fetch and check the Kafka jars (once; cached in ~/.cache/safer-exchange)",
        formatter_class=FORMATTER,
        description="Fetch the pinned Kafka jars with Maven into the cache ($SAFER_KAFKA_HOME,\n"
        "default ~/.cache/safer-exchange) and check every jar's SHA-256. Does nothing\n"
        "if a checked copy is already there.\n\n"
        "example:\n  safer kafka install",
    )
    kafka_install.add_argument(
        "--update-checksums",
        action="store_true",
        help="maintainers moving to a new Kafka version: rewrite the checksum list from what "
        "Maven fetched (review it before committing)",
    )
    kafka_install.set_defaults(func=cmd_kafka_install)

    broker = sub.add_parser(
        "broker",
        help="run the local Apache Kafka broker in the foreground",
        formatter_class=FORMATTER,
        description="Run Apache Kafka (KRaft, one node, data in <data-dir>/kafka), create every\n"
        "topic, and print KAFKA_BOOTSTRAP_SERVERS=host:port. Stopping and starting it\n"
        "again keeps every topic. If KAFKA_BOOTSTRAP_SERVERS is already set, nothing\n"
        "is started. With --secure it also prints the TLS and SCRAM settings (the CA\n"
        "and the credentials file under <data-dir>/kafka/secure).\n\n"
        "example:\n  safer broker --port 9092\n  export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092\n"
        "  safer broker --secure",
    )
    broker.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port (default: the one this data directory used before, else a free one)",
    )
    broker.add_argument("--secure", action="store_true", help=_SECURE_HELP)
    broker.set_defaults(func=cmd_broker)

    publish = sub.add_parser(
        "publish",
        help="validate, sign and publish concerns from JSON or CSV files",
        formatter_class=FORMATTER,
        description="Read police concerns (JSON object, array or JSON Lines; field names as\n"
        "in docs/police-json-format.md; or, for a file named *.csv, one concern per\n"
        "row as in docs/csv-format.md), validate each, sign it with the agency's\n"
        "key and publish it to hips.inbound.<agency>. Prints one line per record:\n"
        "the concern_id and ACCEPTED, or a reason code, the record (FILE#N, or\n"
        "FILE row N for CSV, counting the header as row 1) and which fields are\n"
        "wrong, never their values. Good records are published even when others\n"
        "are refused; exit code 1 if any record was rejected.\n\n"
        "Needs a broker: a running `safer up`, or KAFKA_BOOTSTRAP_SERVERS.\n\n"
        "example:\n  safer publish --agency police deploy/examples/concern-domestic-abuse.json\n"
        "  safer publish --agency police deploy/examples/*.json\n"
        "  safer publish --agency police deploy/examples/concerns-template.csv",
    )
    publish.add_argument(
        "--agency", default="police", choices=["police"], help="publishing agency type"
    )
    publish.add_argument("files", nargs="+", metavar="FILE", help="JSON or CSV file(s) of concerns")
    publish.set_defaults(func=cmd_publish)

    route = sub.add_parser(
        "route",
        help="run the router alone (consumer group on the inbound topics)",
        formatter_class=FORMATTER,
        description="Run only the router: verify, check, decide, minimise, encrypt, and\n"
        "commit each batch's audit records, disclosures and input offsets in one\n"
        "Kafka transaction. Run several with the same --group-id and different\n"
        "--instance to share the load (one per inbound partition at most).\n\n"
        "example:\n  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 safer route --instance 2",
    )
    route.add_argument("--group-id", default="safer-router", help="consumer group id")
    route.add_argument(
        "--instance",
        default="0",
        help="this router's name in the group; its transactional id is GROUP.INSTANCE "
        "(keep it across restarts, never share it between running routers)",
    )
    route.add_argument(
        "--ops-port",
        type=int,
        default=None,
        help="serve /healthz, /readyz and /metrics (this router's counts by outcome) on "
        "this port; none by default",
    )
    route.add_argument(
        "--ops-host", default="127.0.0.1", help="address for --ops-port (default loopback)"
    )
    route.set_defaults(func=cmd_route)

    recipients = sub.add_parser(
        "recipients",
        help="run the recipient adapters alone (decrypt, verify, store, receipt)",
        formatter_class=FORMATTER,
        description="Run only the recipient adapters: each reads its agency's disclosure\n"
        "(or triage) topics, checks the router's signature, decrypts with the agency's\n"
        "key, keeps the disclosure in the agency's inbox (or posts it to its webhook)\n"
        "and sends a signed receipt to hips.receipts. `safer up` runs this as a\n"
        "process of its own, away from the audit feed. Each adapter resumes where it\n"
        "stopped and ignores a disclosure it already holds.\n\n"
        "example:\n  safer recipients\n"
        "  safer recipients --recipient portsmouth-csc --recipient hampshire-csc",
    )
    recipients.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="ID",
        help="run only this recipient's adapter (repeatable; default: every recipient in "
        "the directory)",
    )
    recipients.add_argument(
        "--ops-port",
        type=int,
        default=None,
        help="serve /healthz, /readyz and /metrics (the webhook counters) on this port; "
        "none by default (`safer up` gives its child one on loopback and carries its "
        "counters in its own /metrics)",
    )
    recipients.add_argument(
        "--ops-host", default="127.0.0.1", help="address for --ops-port (default loopback)"
    )
    recipients.set_defaults(func=cmd_recipients)

    up = sub.add_parser(
        "up",
        help="run broker, router, recipient adapters, audit feed and HTTP gateway together",
        formatter_class=FORMATTER,
        description="Start Apache Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set; data in\n"
        "<data-dir>/kafka, kept across restarts), create every topic and development\n"
        "keys if missing, then run the router (exactly-once), the audit feed, the\n"
        "deadline monitor, one adapter per recipient, the web app (`safer web`\n"
        "on --web-port, default 8080; /metrics, /healthz, /readyz) and the HTTP ingestion\n"
        "gateway (127.0.0.1:8480 unless --no-gateway; `safer gateway --help`) until Ctrl-C.\n\n"
        "With --secure, Kafka listens with TLS and SASL/SCRAM-SHA-512 only; every\n"
        "service and agency connects as its own Kafka user, and ACLs generated from\n"
        "deploy/directory.toml let each touch only its own topics. Client commands on\n"
        "the same data directory (publish, inbox, consent) find their credentials.\n\n"
        "With --cluster, Kafka is three brokers on loopback that survive losing one\n"
        "(replication factor 3, min.insync.replicas 2, data in <data-dir>/cluster);\n"
        "`safer cluster status` shows their state.\n\n"
        "example:\n  safer up\n  safer up --secure\n  safer up --cluster\n"
        "  safer up --routers 2    # two router processes share the inbound partitions\n"
        "  # in another terminal:\n"
        "  safer publish --agency police deploy/examples/concern-domestic-abuse.json",
    )
    up.add_argument("--no-web", action="store_true", help="do not serve the web app")
    up.add_argument("--web-host", default="127.0.0.1", help="web app address (default loopback)")
    up.add_argument("--web-port", type=int, default=8080, help="web app port (default 8080)")
    up.add_argument(
        "--ops-port",
        type=int,
        default=None,
        help="/healthz, /readyz and /metrics of the services on this loopback port, "
        "for --no-web (the web app serves them otherwise)",
    )
    up.add_argument(
        "--routers",
        type=int,
        default=1,
        metavar="N",
        help="run N router processes in one consumer group; they share the inbound "
        "partitions (12), so routing uses N cores (default 1; measured in "
        "bench/bench_scale_out.py; each needs its own core beside the broker's)",
    )
    up.add_argument(
        "--router-ops-port",
        type=int,
        default=None,
        help="the router process's /healthz, /readyz and /metrics on this loopback port "
        "(with --routers N: this port and the N-1 after it, one per router; "
        "default: none; the web app's /metrics covers the rest)",
    )
    up.add_argument(
        "--port",
        type=int,
        default=None,
        help="Kafka client port (default: the one this data directory used before)",
    )
    up.add_argument("--secure", action="store_true", help=_SECURE_HELP)
    up.add_argument(
        "--cluster",
        action="store_true",
        help="run a 3-broker cluster (replication 3, min.insync.replicas 2, data in "
        "<data-dir>/cluster) instead of one broker; see `safer cluster --help`",
    )
    up.add_argument(
        "--no-gateway",
        action="store_true",
        help="do not start the HTTP ingestion gateway (see `safer gateway --help`)",
    )
    add_gateway_options(up)
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser(
        "demo",
        help="run the whole flow on synthetic data and summarise",
        formatter_class=FORMATTER,
        description="Start everything on a fresh Apache Kafka, publish N synthetic concerns\n"
        "(synthetic people only; the same seed gives the same data) and 5 deliberately\n"
        "bad records, wait until every record is disclosed, withheld, referred or\n"
        "quarantined and every disclosure is received, then verify the audit log.\n"
        "Exit code 0 only if all of that holds. Data goes to .safer/demo (wiped first).\n\n"
        "example:\n  safer demo\n  safer demo --concerns 500 --seed 7 --json",
    )
    demo.add_argument(
        "--concerns", type=int, default=50, help="synthetic concerns to publish (default 50)"
    )
    demo.add_argument("--seed", type=int, default=2024, help="random seed for the synthetic data")
    demo.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for accounting")
    demo.set_defaults(func=cmd_demo)

    web = sub.add_parser(
        "web",
        help="serve the web app (practitioners, auditors, DPOs, analysts)",
        formatter_class=FORMATTER,
        description="A read-only web app on the data directory: practitioners' inboxes,\n"
        "the auditors' and DPOs' log status, trails, s.62 and subject access reports,\n"
        "the quarantine list, and each partnership's performance dashboard.\n"
        "Sign-in accounts come from `safer users add`. /metrics, /healthz and /readyz\n"
        "need no sign-in. `safer up` serves it too (on --web-port, default 8080).\n\n"
        "example:\n  safer users add sam --role practitioner --recipient portsmouth-csc\n"
        "  safer web --port 8080   # then open http://127.0.0.1:8080",
    )
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    web.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    web.set_defaults(func=cmd_web)

    for register in (
        register_topics,
        register_quarantine,
        register_cluster,
        register_audit,
        register_policy,
        register_inbox,
        register_track,
        register_secure,
        register_gateway,
        register_registry,
        register_onboard,
        register_users,
    ):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "demo":
        configure_logging(log_file=args.log_file)
    try:
        code: int = args.func(args)
        return code
    except SaferError as exc:
        err.print(f"[red]error[/] [{exc.code}] {exc.message}")
        if exc.hint:
            err.print(f"  what to do: {exc.hint}")
        return 75 if exc.retriable else 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
