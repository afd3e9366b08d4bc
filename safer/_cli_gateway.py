"""`safer gateway`: the HTTP ingestion gateway, and its per-agency credentials."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization

from adapters import (
    CredentialStore,
    Gateway,
    GatewayLimits,
    IdempotencyStore,
    certificate_fingerprint,
    issue_client_certificate,
    listen,
    load_ca,
    serve_gateway,
)
from audit import AuditStore
from broker import ROUTER_ID, make_producer, start_client, stop_clients
from schemas import ConfigError, ReasonCode

from ._cli_common import FORMATTER, err, out, run_async, settings_from
from ._cli_track import record_published, track_rows
from ._runtime import Runtime, resolve_bootstrap

__all__ = ["credential_store", "gateway_running", "register"]

_log = structlog.get_logger("safer.gateway")

DEFAULT_PORT = 8480


def credential_store(runtime: Runtime) -> CredentialStore:
    return CredentialStore(runtime.settings.data_dir / "gateway" / "credentials.json")


@contextlib.asynccontextmanager
async def gateway_running(
    runtime: Runtime,
    *,
    limits: GatewayLimits | None = None,
) -> AsyncIterator[Gateway]:
    """A Gateway with its Kafka producers started (and stopped on exit)."""
    directory = runtime.deployment.directory
    publishers = [p for p in directory.publishers]
    if not publishers:
        raise ConfigError(
            "the directory lists no publisher for the gateway to act for",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint="add a [[publisher]] to deploy/directory.toml",
        )
    settings = runtime.settings
    audit_producer = make_producer(runtime.bootstrap, **runtime.security_for(ROUTER_ID))
    producers = {
        p.id: make_producer(runtime.bootstrap, **runtime.security_for(p.id)) for p in publishers
    }
    started: list[Any] = []
    idempotency = IdempotencyStore(settings.data_dir / "gateway" / "submissions.db")
    try:
        for client in (audit_producer, *producers.values()):
            await start_client(client, runtime.bootstrap)
            started.append(client)
        yield Gateway(
            codec=runtime.codec,
            topics=settings.topics,
            credentials=credential_store(runtime),
            idempotency=idempotency,
            adapters={p.id: runtime.police_adapter(p.agency_type.value) for p in publishers},
            audit_identity=runtime.keys.signing_identity(ROUTER_ID),
            pseudonym_secret=runtime.keys.pseudonym_secret(),
            audit_producer=audit_producer,
            producers=producers,
            limits=limits or GatewayLimits(),
            status_source=_status_source(runtime),
            on_published=lambda rows: record_published(settings.data_dir, rows),
        )
    finally:
        await stop_clients(*started)
        idempotency.close()


def _status_source(runtime: Runtime) -> Callable[[str], list[dict[str, Any]]]:
    def status(concern_id: str) -> list[dict[str, Any]]:
        path = runtime.settings.audit_db
        if not path.exists():
            return []
        with AuditStore(path) as store:
            return track_rows(store, runtime.deployment.directory, concern_id, datetime.now(UTC))

    return status


def _check_bind(host: str, tls: bool, allow_plain_http: bool) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not (tls or loopback or allow_plain_http):
        raise ConfigError(
            f"refusing to serve plain HTTP on {host}: credentials would travel in clear",
            code=ReasonCode.CONFIG_INVALID,
            hint="pass --tls-cert and --tls-key, or bind to 127.0.0.1 behind a TLS proxy "
            "(or --allow-plain-http on a private test network)",
        )


async def run_gateway(
    runtime: Runtime, stop: asyncio.Event, args: argparse.Namespace, *, announce: bool = True
) -> None:
    tls = bool(args.tls_cert and args.tls_key)
    _check_bind(args.gateway_host, tls, args.allow_plain_http)
    try:
        sock = listen(args.gateway_host, args.gateway_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.gateway_host}:{args.gateway_port} ({exc.strerror})",
            code=ReasonCode.CONFIG_INVALID,
            hint="pick another --gateway-port (0 takes a free one), or stop what holds it",
        ) from None
    port = sock.getsockname()[1]
    scheme = "https" if tls else "http"
    client_ca = args.client_ca
    project_ca = _ca_dir(runtime, None) / "ca.pem"
    if tls and client_ca is None and project_ca.exists():
        client_ca = str(project_ca)

    def ready() -> None:
        # The port goes to the log too, so a supervisor (or a test) finds a port-0 gateway.
        _log.info("gateway.listening", port=port, tls=tls, client_ca=bool(client_ca))
        if announce:
            certs = f"; client certificates from {client_ca}" if tls and client_ca else ""
            err.print(
                f"[green]gateway[/] listening on {scheme}://{args.gateway_host}:{port} "
                f"(OpenAPI: /v1/openapi.json{certs})"
            )

    async with gateway_running(runtime) as gateway:
        await serve_gateway(
            gateway,
            stop,
            sock,
            ssl_certfile=args.tls_cert,
            ssl_keyfile=args.tls_key,
            client_ca=client_ca if tls else None,
            ready=ready,
        )


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap=resolve_bootstrap(settings))

    async def serve(stop: asyncio.Event) -> int:
        await run_gateway(runtime, stop, args)
        return 0

    return run_async(serve)


def cmd_credential_add(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap="")
    publisher = args.agency
    known = {p.id for p in runtime.deployment.directory.publishers}
    if publisher not in known:
        raise ConfigError(
            f"no publisher {publisher!r} in the directory",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint=f"use one of: {', '.join(sorted(known))} (deploy/directory.toml)",
        )
    credential, token = credential_store(runtime).add(publisher, label=args.label or "")
    if args.json:
        print(json.dumps({"credential_id": credential.id, "agency": publisher, "token": token}))
    else:
        out.print(f"credential [bold]{credential.id}[/] for {publisher}")
        out.print("token (shown once; give it to the agency over a secure channel):")
        print(token, flush=True)
    return 0


def _ca_dir(runtime: Runtime, given: str | None) -> Path:
    return Path(given) if given else runtime.settings.kafka_home / "secure"


def cmd_certificate_issue(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = Runtime(settings, bootstrap="")
    known = {p.id for p in runtime.deployment.directory.publishers}
    if args.agency not in known:
        raise ConfigError(
            f"no publisher {args.agency!r} in the directory",
            code=ReasonCode.UNKNOWN_PUBLISHER,
            hint=f"use one of: {', '.join(sorted(known))} (deploy/directory.toml)",
        )
    folder = _ca_dir(runtime, args.ca_dir)
    ca_key, ca_cert = load_ca(str(folder / "ca.pem"), str(folder / "ca.key"))
    key, cert = issue_client_certificate(ca_key, ca_cert, args.agency)
    der = cert.public_bytes(serialization.Encoding.DER)
    credential = credential_store(runtime).add_certificate(
        args.agency, certificate_fingerprint(der), label=args.label or ""
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = out_dir / "client.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    out.print(
        f"certificate credential [bold]{credential.id}[/] for {args.agency}: "
        f"{out_dir / 'client.pem'} and {key_path} (give both to the agency; "
        f"revoke with `safer gateway credential revoke {credential.id}`)"
    )
    return 0


def cmd_credential_list(args: argparse.Namespace) -> int:
    runtime = Runtime(settings_from(args), bootstrap="")
    rows = [
        {
            "credential_id": c.id,
            "kind": c.kind,
            "agency": c.agency,
            "label": c.label,
            "created_at": c.created_at,
            "revoked_at": c.revoked_at,
        }
        for c in credential_store(runtime).list()
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        out.print(f"{row['credential_id']}  {row['agency']}  {state}  {row['label']}".rstrip())
    return 0


def cmd_credential_revoke(args: argparse.Namespace) -> int:
    runtime = Runtime(settings_from(args), bootstrap="")
    credential = credential_store(runtime).revoke(args.credential_id)
    out.print(
        f"credential {credential.id} revoked at {credential.revoked_at}; the gateway "
        "refuses it from now on (403 CREDENTIAL_REVOKED)"
    )
    return 0


def add_gateway_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `safer gateway` and `safer up`."""
    parser.add_argument(
        "--gateway-host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--gateway-port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument("--tls-cert", help="the gateway's PEM certificate chain: serve it on HTTPS")
    parser.add_argument("--tls-key", help="the private key (PEM) of --tls-cert")
    parser.add_argument(
        "--client-ca",
        help="PEM CA whose client certificates authenticate agencies (default with TLS: the "
        "project CA in <data-dir>/kafka/secure, if it exists)",
    )
    parser.add_argument(
        "--allow-plain-http",
        action="store_true",
        help="serve plain HTTP on a non-loopback address (a private test network only)",
    )


def register(sub: Any) -> None:
    gateway = sub.add_parser(
        "gateway",
        help="HTTP ingestion gateway: agencies POST concerns (JSON, FHIR R4, CSV)",
        formatter_class=FORMATTER,
        description="Serve the HTTP ingestion gateway (docs/gateway.md) until Ctrl-C; `safer up`\n"
        "runs it too. Agencies authenticate with a per-agency token (see `safer gateway\n"
        "credential add`) and POST police JSON or a FHIR R4 Bundle to /v1/concerns, or\n"
        "JSON Lines or CSV to /v1/concerns:batch; GET /v1/concerns/ID answers as\n"
        "`safer track`. The OpenAPI document is at /v1/openapi.json.\n\n"
        "Needs a broker: a running `safer up`, or KAFKA_BOOTSTRAP_SERVERS.\n\n"
        "example:\n"
        "  safer gateway credential add --agency hampshire-constabulary\n"
        "  safer gateway --gateway-port 8480\n"
        "  curl -H 'Authorization: Bearer sfx_…' -H 'Content-Type: application/json' \\\n"
        "       --data @deploy/examples/concern-domestic-abuse.json "
        "http://127.0.0.1:8480/v1/concerns",
    )
    add_gateway_options(gateway)
    gateway.set_defaults(func=cmd_gateway)
    gsub = gateway.add_subparsers(dest="gateway_command", metavar="COMMAND")
    credential = gsub.add_parser(
        "credential",
        help="issue, list and revoke agency credentials",
        formatter_class=FORMATTER,
        description="Per-agency gateway credentials. The secret is hashed with Argon2id\n"
        "and shown only once; a revoked credential is refused at once (403).\n\n"
        "example:\n"
        "  safer gateway credential add --agency hampshire-constabulary --label 'PPN system'\n"
        "  safer gateway credential list\n"
        "  safer gateway credential revoke 3f9a1c0b7d2e",
    )
    csub = credential.add_subparsers(dest="credential_command", metavar="COMMAND", required=True)
    add = csub.add_parser(
        "add",
        help="issue a credential (prints the token once)",
        formatter_class=FORMATTER,
        description="Issue a token for a publisher in deploy/directory.toml. It is printed\n"
        "once; only its Argon2id hash is kept.\n\n"
        "example:\n  safer gateway credential add --agency hampshire-constabulary",
    )
    add.add_argument("--agency", required=True, help="publisher id (deploy/directory.toml)")
    add.add_argument("--label", help="what it is for (shown by list)")
    add.add_argument("--json", action="store_true", help="print one JSON object")
    add.set_defaults(func=cmd_credential_add)
    listing = csub.add_parser(
        "list",
        help="list credentials (never a secret)",
        formatter_class=FORMATTER,
        description="List every gateway credential, active or revoked: its id (what the\n"
        "access log and audit records name), the publisher it acts for, its label and\n"
        "when it was issued or revoked. Secrets are never stored, so never shown.\n\n"
        "example:\n  safer gateway credential list --json",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_credential_list)
    revoke = csub.add_parser(
        "revoke",
        help="revoke a credential (takes effect at once)",
        formatter_class=FORMATTER,
        description="Revoke a credential; a running gateway refuses it from its next request.\n\n"
        "example:\n  safer gateway credential revoke 3f9a1c0b7d2e",
    )
    revoke.add_argument("credential_id", help="the id `list` shows")
    revoke.set_defaults(func=cmd_credential_revoke)
    certificate = gsub.add_parser(
        "certificate",
        help="issue agency client certificates from the project CA",
        formatter_class=FORMATTER,
        description="Client certificates are the other way an agency authenticates: a\n"
        "certificate from the project CA (secure mode's, in <data-dir>/kafka/secure),\n"
        "presented in the TLS handshake to a gateway served with --tls-cert/--tls-key.\n"
        "Each is registered by fingerprint as a credential, listed and revoked like a\n"
        "token (`safer gateway credential list|revoke`).\n\n"
        "example:\n"
        "  safer gateway certificate issue --agency hampshire-constabulary --out ./hc-cert\n"
        "  curl --cert hc-cert/client.pem --key hc-cert/client.key --cacert CA.pem ...",
    )
    cert_sub = certificate.add_subparsers(
        dest="certificate_command", metavar="COMMAND", required=True
    )
    issue = cert_sub.add_parser(
        "issue",
        help="issue a client certificate for a publisher",
        formatter_class=FORMATTER,
        description="Issue a clientAuth certificate CN=gateway:<agency> from the project CA,\n"
        "write client.pem and client.key (0600) to --out, and register its SHA-256\n"
        "fingerprint as a gateway credential. The CA is created by `safer up --secure`\n"
        "(or pass --ca-dir holding ca.pem and ca.key).\n\n"
        "example:\n"
        "  safer gateway certificate issue --agency hampshire-constabulary --out ./hc-cert",
    )
    issue.add_argument("--agency", required=True, help="publisher id (deploy/directory.toml)")
    issue.add_argument("--out", required=True, help="folder for client.pem and client.key")
    issue.add_argument("--ca-dir", help="folder with ca.pem and ca.key (default: secure mode's)")
    issue.add_argument("--label", help="what it is for (shown by `credential list`)")
    issue.set_defaults(func=cmd_certificate_issue)
