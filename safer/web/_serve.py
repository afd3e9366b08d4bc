"""Run the web app with uvicorn inside an existing event loop (`safer web`, `safer up`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator

import uvicorn

from broker import Settings
from schemas import ConfigError, ReasonCode

from ._app import WebConfig, create_app, protect, web_secret

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller's ``stop`` event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``stop`` is set. ``on_ready`` gets the base URL once listening."""
    config = WebConfig(settings=settings, secret=web_secret(settings.data_dir))
    app = protect(create_app(config), config)
    server = _Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot listen: say why, stop only the web app
            raise ConfigError(
                f"the web app cannot listen on {host}:{port}",
                code=ReasonCode.CONFIG_INVALID,
                hint="the port is probably in use: choose another with --port (--web-port "
                "for `safer up`)",
            ) from None

    task = asyncio.create_task(run(), name="safer-web")
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no ready event
        await asyncio.sleep(0.05)
    if task.done():
        task.result()  # raises why it could not start (e.g. the port is taken)
        return
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await task
