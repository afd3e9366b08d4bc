"""Issue 5 §6 end to end: a recipient on webhook delivery, through the whole spine.

The Portsmouth MASH is switched to ``delivery = "webhook"`` in a copy of the
directory. A real local HTTP receiver checks every request's signature, fails
the first two with 503, then accepts. The disclosure must arrive exactly once
from the receiver's point of view, and only the receiver's 2xx makes it
RECEIVED in the audit log.
"""

from __future__ import annotations

import json
import secrets
import shutil
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from adapters import verify_webhook
from audit import AuditStore
from broker import Settings, disclosure_id_for
from safer import Runtime
from schemas import ConcernModel, SignatureError

from .spine import REPO, run_flow

pytestmark = pytest.mark.kafka

EXAMPLE = json.loads((REPO / "deploy/examples/concern-domestic-abuse.json").read_text())


class Receiver:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.requests = 0
        self.accepted: dict[str, datetime] = {}
        self.duplicates = 0
        self.bad_signatures = 0
        self.bodies: dict[str, dict[str, Any]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                try:
                    verify_webhook(receiver.secret, dict(self.headers), body, datetime.now(UTC))
                except SignatureError:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.requests <= 2:
                    self.send_response(503)  # the agency's system is having a bad minute
                    self.end_headers()
                    return
                disclosure_id = self.headers["X-Safer-Disclosure-Id"]
                if disclosure_id in receiver.accepted:
                    receiver.duplicates += 1
                else:
                    receiver.accepted[disclosure_id] = datetime.now(UTC)
                    receiver.bodies[disclosure_id] = json.loads(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/safer/disclosures"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _webhook_deploy(tmp_path: Path, url: str) -> Path:
    deploy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", deploy)
    directory = deploy / "directory.toml"
    text = directory.read_text()
    marker = 'id = "portsmouth-csc"\n'
    entry = text.index(marker)
    end = text.index('delivery = "kafka"\n', entry)
    text = (
        text[:end]
        + f'delivery = "webhook"\nwebhook_url = "{url}"\n'
        + text[end + len('delivery = "kafka"\n') :]
    )
    directory.write_text(text)
    return deploy


async def test_webhook_recipient_receives_exactly_once_and_2xx_means_received(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        deploy_dir=tmp_path / "deploy",
        topic_prefix=f"hook{secrets.token_hex(3)}",
        bootstrap_servers=kafka_bootstrap,
    )
    runtime = Runtime(settings, kafka_bootstrap)
    # The key store makes the webhook secret; the receiving agency gets a copy.
    secret = runtime.keys.webhook_secret("portsmouth-csc")
    receiver = Receiver(secret)
    try:
        _webhook_deploy(tmp_path, receiver.url)
        assert runtime.deployment.directory.recipient("portsmouth-csc").delivery == "webhook"  # type: ignore[union-attr]
        runtime.init_keys()
        await runtime.create_topics()
        concern = ConcernModel.model_validate(EXAMPLE)
        await run_flow(runtime, [concern], expected={concern.concern_id}, timeout=120)
    finally:
        receiver.server.shutdown()

    mash = disclosure_id_for(concern.concern_id, "portsmouth-csc")
    assert list(receiver.accepted) == [mash], "exactly one disclosure, accepted once"
    assert receiver.requests >= 3 and receiver.bad_signatures == 0
    body = receiver.bodies[mash]
    assert body["disclosure"]["recipient_id"] == "portsmouth-csc"
    assert body["payload"]["concern_id"] == concern.concern_id
    with AuditStore(settings.audit_db) as store:
        received = [r for r in store.records(disclosure_id=mash) if r.event.value == "RECEIVED"]
    assert received, "the 2xx must become a RECEIVED receipt in the audit log"
    # RECEIVED is stamped with the moment of the 2xx, never before it.
    assert received[0].at >= receiver.accepted[mash].replace(microsecond=0)
