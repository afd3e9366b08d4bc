"""`safer registry`: serve the embedded schema registry as Confluent's REST subset."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from adapters import listen, serve_asgi
from schemas import ConfigError, EmbeddedRegistry, ReasonCode

from ._cli_common import FORMATTER, err, run_async, settings_from
from ._registry_server import registry_app

__all__ = ["register"]

DEFAULT_PORT = 8481


def cmd_registry(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    registry = EmbeddedRegistry(settings.registry_file)
    user_info = os.environ.get("SAFER_REGISTRY_SERVE_AUTH", "")
    basic: tuple[str, str] | None = None
    if user_info:
        user, sep, password = user_info.partition(":")
        if not sep:
            raise ConfigError(
                "SAFER_REGISTRY_SERVE_AUTH must be user:password", code=ReasonCode.CONFIG_INVALID
            )
        basic = (user, password)
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror})",
            code=ReasonCode.CONFIG_INVALID,
            hint="pick another --port (0 takes a free one)",
        ) from None
    port = sock.getsockname()[1]

    async def serve(stop: asyncio.Event) -> int:
        await serve_asgi(
            registry_app(registry, basic_auth=basic),
            stop,
            sock,
            ready=lambda: err.print(
                f"[green]schema registry[/] (Confluent REST subset) on "
                f"http://{args.host}:{port}{' with basic auth' if basic else ''}"
            ),
        )
        return 0

    return run_async(serve)


def register(sub: Any) -> None:
    registry = sub.add_parser(
        "registry",
        help="serve our schemas as a Confluent-compatible schema registry (REST)",
        formatter_class=FORMATTER,
        description="Serve the embedded schema registry (<data-dir>/registry.json and every\n"
        "schema in schemas/avro) over Confluent's REST API: GET /subjects,\n"
        "/subjects/S/versions[/V|latest], /schemas/ids/ID, /config; POST\n"
        "/compatibility/subjects/S/versions/latest and /subjects/S/versions (only schemas\n"
        "this build already has). Subjects follow RecordNameStrategy\n"
        "(uk.hips.safer.Concern). Point Kafka tools at it to decode our topics\n"
        "(docs/schema-registry.md). SAFER_REGISTRY_SERVE_AUTH=user:password requires\n"
        "basic auth.\n\n"
        "example:\n  safer registry --port 8481\n"
        "  curl http://127.0.0.1:8481/subjects\n"
        "  # confluent-kafka: SchemaRegistryClient({'url': 'http://127.0.0.1:8481'})",
    )
    registry.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    registry.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    registry.set_defaults(func=cmd_registry)
