"""A running exchange with its HTTP gateway, for the gateway tests (real Kafka, real HTTP).

The services (router, audit feed, every recipient adapter) and two gateways
(normal limits, and strict ones for the limit tests) run in a background
thread's event loop, so sync tests (and schemathesis) call them over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters import (
    Gateway,
    GatewayLimits,
    certificate_fingerprint,
    issue_client_certificate,
    listen,
    serve_gateway,
)
from broker import issue_broker_certificate, make_ca
from safer import Runtime
from safer._cli_gateway import credential_store, gateway_running

from .spine import make_runtime

PUBLISHER = "hampshire-constabulary"


@dataclass
class Harness:
    runtime: Runtime
    url: str = ""
    strict_url: str = ""
    token: str = ""
    credential_id: str = ""
    revoked_token: str = ""
    tls_url: str = ""
    certs: dict[str, tuple[str, str]] = field(default_factory=dict)
    ca_file: str = ""
    certificate_credential: str = ""
    gateway: Gateway | None = None
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _stack: contextlib.AsyncExitStack | None = None

    def start(self) -> None:
        store = credential_store(self.runtime)
        credential, self.token = store.add(PUBLISHER, label="test system")
        self.credential_id = credential.id
        revoked, self.revoked_token = store.add(PUBLISHER, label="old system")
        store.revoke(revoked.id)
        self._make_certificates()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self._start(), timeout=180)

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        runtime = self.runtime
        await runtime.create_topics()
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        self._tasks.append(
            asyncio.create_task(runtime.run_services(self._stop, on_ready=ready.set, monitor=False))
        )
        await asyncio.wait_for(ready.wait(), 120)
        self._stack = contextlib.AsyncExitStack()
        generous = GatewayLimits(rate_per_minute=60_000, burst=5_000)
        strict = GatewayLimits(
            max_body_bytes=4096,
            rate_per_minute=6,
            burst=2,
            auth_failures_per_minute=1,
            auth_failure_burst=2,
        )
        urls = []
        for limits in (generous, strict):
            gateway = await self._stack.enter_async_context(gateway_running(runtime, limits=limits))
            self.gateway = self.gateway or gateway
            sock = listen("127.0.0.1", 0)
            up = asyncio.Event()
            self._tasks.append(
                asyncio.create_task(serve_gateway(gateway, self._stop, sock, ready=up.set))
            )
            await asyncio.wait_for(up.wait(), 30)
            urls.append(f"http://127.0.0.1:{sock.getsockname()[1]}")
        self.url, self.strict_url = urls
        gateway = await self._stack.enter_async_context(gateway_running(runtime, limits=generous))
        sock = listen("127.0.0.1", 0)
        up = asyncio.Event()
        server_cert, server_key = self.certs["server"]
        self._tasks.append(
            asyncio.create_task(
                serve_gateway(
                    gateway,
                    self._stop,
                    sock,
                    ssl_certfile=server_cert,
                    ssl_keyfile=server_key,
                    client_ca=self.ca_file,
                    ready=up.set,
                )
            )
        )
        await asyncio.wait_for(up.wait(), 30)
        self.tls_url = f"https://127.0.0.1:{sock.getsockname()[1]}"

    def _make_certificates(self) -> None:
        """A project CA, the gateway's server certificate, and agency client certificates:
        registered, revoked, unregistered (same CA) and foreign (another CA)."""
        folder = self.runtime.settings.data_dir / "tls"
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        ca_key, ca_cert = make_ca(now)
        self.ca_file = _write(folder, "ca", ca_cert, None)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = issue_broker_certificate(ca_key, ca_cert, server_key, now, hosts=["127.0.0.1"])
        self.certs["server"] = (
            _write(folder, "server", server, server_key),
            str(folder / "server.key"),
        )
        store = credential_store(self.runtime)
        foreign_key, foreign_ca = make_ca(now, common_name="Somebody else's CA")
        for name, (issuer_key, issuer) in {
            "registered": (ca_key, ca_cert),
            "revoked": (ca_key, ca_cert),
            "unregistered": (ca_key, ca_cert),
            "foreign": (foreign_key, foreign_ca),
        }.items():
            key, cert = issue_client_certificate(issuer_key, issuer, PUBLISHER, now)
            self.certs[name] = (_write(folder, name, cert, key), str(folder / f"{name}.key"))
            if name in ("registered", "revoked"):
                der = cert.public_bytes(serialization.Encoding.DER)
                credential = store.add_certificate(PUBLISHER, certificate_fingerprint(der))
                if name == "revoked":
                    store.revoke(credential.id)
                else:
                    self.certificate_credential = credential.id

    async def _shutdown(self) -> None:
        assert self._stop is not None
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stack is not None:
            await self._stack.aclose()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self._shutdown(), timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)


def _write(folder: Path, name: str, cert: x509.Certificate, key: Any) -> str:
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (folder / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return str(path)


def start_harness(tmp_path: Path, bootstrap: str, prefix: str) -> Harness:
    harness = Harness(make_runtime(tmp_path, bootstrap, prefix))
    harness.start()
    return harness
