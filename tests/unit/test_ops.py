"""/healthz, /readyz and /metrics of a service without the web app (issue 14, point 4)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from starlette.applications import Starlette

from adapters import ADAPTER_METRICS, counted_elsewhere
from adapters._metrics import WEBHOOK_DELIVERIES, WEBHOOK_RETRIES
from safer._ops import ChildMetrics, CountsCollector, free_loopback_port, ops_app, serve_ops
from safer.cli import build_parser, cmd_recipients, cmd_up


def _app(totals: Counter[str], ready: list[bool]) -> Starlette:
    registry = CollectorRegistry()
    registry.register(
        CountsCollector("safer_router_records", "Records handled", "outcome", lambda: totals)
    )
    return ops_app("router", lambda: ready[0], registry)


def test_health_readiness_and_counts_by_outcome_only() -> None:
    totals: Counter[str] = Counter()
    ready = [False]
    transport = httpx.ASGITransport(app=_app(totals, ready))

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            return await client.get(path)

    assert asyncio.run(get("/healthz")).json() == {"status": "ok", "service": "router"}
    assert asyncio.run(get("/readyz")).status_code == 503
    ready[0] = True
    assert asyncio.run(get("/readyz")).status_code == 200
    totals.update({"inbound": 3, "DISCLOSED": 5, "WITHHELD": 2})
    body = asyncio.run(get("/metrics")).text
    assert 'safer_router_records_total{outcome="DISCLOSED"} 5.0' in body
    assert 'safer_router_records_total{outcome="inbound"} 3.0' in body
    labels = {line.split("{", 1)[1].split("}")[0] for line in body.splitlines() if "{" in line}
    assert labels == {'outcome="DISCLOSED"', 'outcome="WITHHELD"', 'outcome="inbound"'}


def test_serve_ops_answers_until_stopped() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        app = _app(Counter(), [True])
        task = asyncio.create_task(serve_ops(app, stop, host="127.0.0.1", port=port))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                try:
                    status = (await client.get("/readyz")).status_code
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(task, 10)
            try:
                await client.get("/healthz")
                after = 200
            except httpx.ConnectError:
                after = 0
        return status, after

    assert asyncio.run(scenario()) == (200, 0)


def test_route_and_up_take_the_ops_ports() -> None:
    parser = build_parser()
    args = parser.parse_args(["route", "--ops-port", "9101"])
    assert args.ops_port == 9101 and args.ops_host == "127.0.0.1"
    assert parser.parse_args(["up", "--router-ops-port", "9102"]).router_ops_port == 9102


def test_up_runs_one_router_unless_told_and_refuses_a_count_that_would_idle(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAFER_INBOUND_PARTITIONS", raising=False)
    parser = build_parser()
    assert parser.parse_args(["up"]).routers == 1
    for count in ("0", "13"):  # 12 inbound partitions: a 13th router would get none
        args = parser.parse_args(["up", "--routers", count])
        assert cmd_up(args) == 2
        assert "--routers must be between 1 and 12" in capsys.readouterr().err


def test_recipients_names_an_unknown_recipient_and_where_the_ids_are(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["recipients", "--recipient", "no-such-agency"])
    assert cmd_recipients(args) == 2
    said = capsys.readouterr().err
    assert "unknown recipient(s): no-such-agency" in said
    assert "directory.toml" in said


@pytest.fixture
def adapter_metrics_restored() -> Iterator[None]:
    """``counted_elsewhere`` changes the process-wide registry: put it back after."""
    yield
    from adapters import _metrics

    for source in _metrics._ELSEWHERE:
        ADAPTER_METRICS.unregister(source)
    _metrics._ELSEWHERE.clear()
    for local in (WEBHOOK_RETRIES, WEBHOOK_DELIVERIES):
        with contextlib.suppress(ValueError):  # still registered
            ADAPTER_METRICS.register(local)


def test_a_parents_metrics_carry_its_childs_counters_once(
    adapter_metrics_restored: None,
) -> None:
    """`safer up`'s /metrics carries the webhook counters of its `safer recipients`
    child (a real HTTP server here), with no second, empty copy of those names; a
    child that does not answer adds nothing and fails nothing."""
    port = free_loopback_port()
    child = CollectorRegistry()
    delivered = PromCounter(
        "safer_webhook_deliveries", "child's", ["recipient", "outcome"], registry=child
    )
    delivered.labels(recipient="portsmouth-csc", outcome="DELIVERED").inc(3)
    counted_elsewhere(ChildMetrics(f"http://127.0.0.1:{port}/metrics"))

    async def scenario() -> tuple[str, str]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve_ops(ops_app("recipients", lambda: True, child), stop, host="127.0.0.1", port=port)
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                try:
                    await client.get("/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
        # generate_latest blocks on the child's answer: off this event loop, which serves it.
        up = (await asyncio.to_thread(generate_latest, ADAPTER_METRICS)).decode()
        stop.set()
        await asyncio.wait_for(task, 10)
        down = (await asyncio.to_thread(generate_latest, ADAPTER_METRICS)).decode()
        return up, down

    up, down = asyncio.run(scenario())
    sample = 'safer_webhook_deliveries_total{outcome="DELIVERED",recipient="portsmouth-csc"} 3.0'
    assert sample in up
    assert up.count("# TYPE safer_webhook_deliveries_total counter") == 1
    assert "safer_webhook_retries" not in up  # this process's empty copy is gone
    assert "safer_webhook_deliveries" not in down
