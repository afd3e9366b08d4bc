"""Operations endpoints for a service without the web app (issue 14, point 4).

``safer route --ops-port N`` (and so the router child of ``safer up
--router-ops-port N``) and ``safer recipients --ops-port N`` serve:

- ``/healthz``: 200 while the process answers;
- ``/readyz``: 200 once the service is ready (the router: its transactional
  producer initialised, which fences a predecessor, and subscribed to the
  inbound topics) and not stopping, else 503;
- ``/metrics``: Prometheus text of the service's own counters.

Labels are closed sets only (audit event names and ``inbound``): never an id,
a pseudonym or anything from a record. No sign-in: bind to loopback (the
default) or a network only Prometheus reaches.

``ChildMetrics`` lets a parent's ``/metrics`` carry a child process's own
counters (the recipient adapters' webhook counters under ``safer up``), so one
scrape still covers every service ``safer up`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping

import httpx
import structlog
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters import counted_elsewhere
from schemas import ConfigError, ReasonCode

__all__ = [
    "ChildMetrics",
    "CountsCollector",
    "free_loopback_port",
    "ops_app",
    "recipients_child_metrics",
    "serve_ops",
]

_log = structlog.get_logger("safer.ops")


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


class ChildMetrics(Collector):
    """The metrics a child process serves on loopback, collected again here.

    A child that does not answer within ``timeout`` (starting, restarting) adds
    nothing to this scrape rather than failing or stalling it; its counters come
    back with it (from zero, as a restarted process's counters do).
    """

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        self._url, self._timeout = url, timeout

    def describe(self) -> list[Metric]:
        # Names unknown until the child answers; a registry must not call it to ask.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            response = httpx.get(self._url, timeout=self._timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            _log.debug("ops.child_metrics_unavailable", error=type(exc).__name__)
            return
        yield from text_string_to_metric_families(response.text)


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
        # Off the event loop: a collector may wait on a child process (ChildMetrics),
        # and under `safer up` this loop also runs the audit feed.
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type="text/plain; version=0.0.4")

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


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 now (for a child's ops endpoints)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def recipients_child_metrics() -> int:
    """A loopback port for the ops endpoints of `safer up`'s `safer recipients` child,
    whose counters this process's ``ADAPTER_METRICS`` (so its /metrics) then carries."""
    port = free_loopback_port()
    counted_elsewhere(ChildMetrics(f"http://127.0.0.1:{port}/metrics"))
    return port
