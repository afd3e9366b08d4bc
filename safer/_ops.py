"""Operations endpoints for a service without the web app (issue 14, point 4).

``safer route --ops-port N`` (and so the router child of ``safer up
--router-ops-port N``) serves:

- ``/healthz``: 200 while the process answers;
- ``/readyz``: 200 once the service is ready (the router: its transactional
  producer initialised, which fences a predecessor, and subscribed to the
  inbound topics) and not stopping, else 503;
- ``/metrics``: Prometheus text of the service's own counters.

Labels are closed sets only (audit event names and ``inbound``): never an id,
a pseudonym or anything from a record. No sign-in: bind to loopback (the
default) or a network only Prometheus reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemas import ConfigError, ReasonCode

__all__ = ["CountsCollector", "ops_app", "serve_ops"]


class CountsCollector(Collector):
    """A service's running totals (e.g. ``Router.totals``) as one labelled counter."""

    def __init__(
        self, name: str, documentation: str, label: str, counts: Callable[[], Mapping[str, int]]
    ) -> None:
        self._name, self._doc, self._label, self._counts = name, documentation, label, counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for key, value in sorted(Counter(self._counts()).items()):
            family.add_metric([key], value)
        yield family


def ops_app(service: str, ready: Callable[[], bool], registry: CollectorRegistry) -> Starlette:
    """``/healthz``, ``/readyz`` and ``/metrics`` for one service."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": service})

    async def readyz(request: Request) -> Response:
        if ready():
            return JSONResponse({"status": "ready", "service": service})
        return JSONResponse(
            {
                "status": "starting",
                "service": service,
                "waiting_for": "partitions and a first poll",
            },
            status_code=503,
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service's ``stop`` event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_ops(app: Starlette, stop: asyncio.Event, *, host: str, port: int) -> None:
    """Serve ``app`` until ``stop`` is set; a port that cannot be bound is a ConfigError."""
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve(), name="safer-ops")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        server.should_exit = True
    try:
        await task
    except SystemExit:
        raise ConfigError(
            f"the ops endpoints cannot listen on {host}:{port}",
            code=ReasonCode.CONFIG_INVALID,
            hint="the port is probably in use: choose another with --ops-port",
        ) from None
