"""`safer web`: the Starlette app (server-rendered Jinja2 pages, no script from anywhere else).

Who sees what (``safer._users.Role``):
- practitioner: their own recipient's inbox only (``/inbox``), open and action;
- auditor, dpo: ``/audit`` (log status), trail search, a disclosure's audit page and
  its proof bundle, the s.62 report, the subject access report, the quarantine list;
- analyst: ``/analyst`` for their own partnership, aggregates only, suppressed.

Every view of a subject's trail or SAR appends a QUERIED entry to the audit
log: who (``web:<user>``), what (trail or SAR, the filters, the pseudonyms
searched), when. Never the identifier typed.

Sessions: Starlette's SessionMiddleware (a cookie signed with itsdangerous;
it holds the user name only, and the user is re-read on every request so a
disabled user is out at once). CSRF: asgi-csrf (signed double-submit cookie;
every POST form carries the token).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import hmac
import io
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asgi_csrf import asgi_csrf
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters import ADAPTER_METRICS
from audit import (
    AuditRecord,
    AuditStore,
    Period,
    Population,
    TrailQuery,
    entry_id_for,
    is_equality_reason,
    load_population,
    s62_log,
    subject_access_report,
    trail,
    verify_store,
)
from broker import Settings, load_deployment, tracked_from_records
from consent import LAWFUL_BASES
from schemas import AuditEvent, ConfigError, SaferError

from .._cli_audit_reports import (
    _events,
    _labels,
    _sar_text,
    _subject,
    parse_when,
)
from .._inbox_flow import (
    OUTCOME_CODES,
    action_disclosure,
    inbox_exists,
    listing,
    open_disclosure,
    open_inbox,
)
from .._runtime import Runtime
from .._users import Role, User, UserStore, users_path
from ._dashboard import build_dashboard
from ._lag import consumer_lag
from ._metrics import AuditCollector
from ._status import VerificationCache, log_fingerprint

__all__ = ["WebConfig", "create_app"]

HERE = Path(__file__).parent
QUERY_SOURCE = "safer-web"
LAG_TTL = 10.0  # seconds between consumer lag measurements, however often /metrics is scraped


@dataclass(frozen=True)
class WebConfig:
    settings: Settings
    secret: bytes  # signs the session and the CSRF cookies (from <data-dir>/web-secret)
    secure_cookies: bool = False  # True behind TLS


def web_secret(data_dir: Path) -> bytes:
    """The app's signing secret, created once (mode 0600) in the data directory."""
    path = data_dir / "web-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created private (never readable by others, even for a moment); O_EXCL: two
        # processes starting at once keep one secret.
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
    return path.read_bytes()


def _derive(secret: bytes, label: str) -> str:
    return hmac.new(secret, label.encode(), hashlib.sha256).hexdigest()


class WebError(Exception):
    """A refusal shown as a page: HTTP status, a stable reason code, what to do next."""

    def __init__(self, status: int, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint


# -- the app ----------------------------------------------------------------------------------


def create_app(config: WebConfig) -> Starlette:
    settings = config.settings
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # The disclosure page leaves out the router's equality line (docs/EQUALITY.md).
    env.globals["is_equality_reason"] = is_equality_reason
    registry = CollectorRegistry()
    requests_total = Counter(
        "safer_web_requests",
        "Web requests by route template (never a path with an id), method and status",
        ["route", "method", "status"],
        registry=registry,
    )
    signins_total = Counter(
        "safer_web_signins", "Sign-in attempts by outcome", ["outcome"], registry=registry
    )
    queries_total = Counter(
        "safer_web_subject_queries",
        "Audited views of a subject's trail or SAR",
        ["kind"],
        registry=registry,
    )
    receipts_total = Counter(
        "safer_web_receipts", "Receipts queued from the web inbox", ["status"], registry=registry
    )
    registry.register(AuditCollector(settings))
    # The adapters' own counters (webhook deliveries and retries), when they run in
    # this process (`safer up`); labels are recipient ids and outcomes only.
    registry.register(ADAPTER_METRICS)
    lag_gauge = Gauge(
        "safer_consumer_lag",
        "Records not yet read per consumer (router group, audit feed, each recipient adapter)",
        ["group"],
        registry=registry,
    )
    kafka_up = Gauge(
        "safer_kafka_reachable", "1 when the last lag measurement reached Kafka", registry=registry
    )
    users = UserStore(users_path(settings.data_dir))
    directory = load_deployment(settings.deploy_dir).directory
    recipient_names = {r.id: r.name for r in directory.recipients}
    verification = VerificationCache()
    # Equality monitoring's denominators (docs/EQUALITY.md); without the file the
    # dashboard shows counts and says there are no rates.
    population_file = settings.deploy_dir / "equality" / "population-0-17.toml"
    population: Population | None = (
        load_population(population_file) if population_file.exists() else None
    )

    def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        user: User | None = request.state.user if hasattr(request.state, "user") else None
        token = request.scope.get("csrftoken")
        body = env.get_template(template).render(
            user=user,
            csrftoken=token() if callable(token) else "",
            recipient_names=recipient_names,
            now=datetime.now(UTC),
            **context,
        )
        return HTMLResponse(body, status_code=status)

    def current(request: Request, *roles: Role) -> User:
        name = request.session.get("user")
        user = users.get(name) if isinstance(name, str) else None
        if user is None or user.disabled:
            request.session.clear()
            raise WebError(
                401, "NOT_SIGNED_IN", "please sign in", "sign in with the name you were given"
            )
        request.state.user = user
        if roles and user.role not in roles:
            raise WebError(
                403,
                "ROLE_FORBIDDEN",
                f"this page is not for the {user.role.value} role",
                "use the links at the top of the page; ask an administrator if you need access",
            )
        return user

    # -- sign-in ---------------------------------------------------------------------------

    async def home(request: Request) -> Response:
        user = current(request)
        target = {
            Role.PRACTITIONER: "/inbox",
            Role.AUDITOR: "/audit",
            Role.DPO: "/audit",
            Role.ANALYST: "/analyst",
        }[user.role]
        return RedirectResponse(target, status_code=303)

    async def login_form(request: Request) -> Response:
        return render(request, "login.html")

    async def login(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name", "")).strip().lower()
        password = str(form.get("password", ""))
        user = await run_in_threadpool(users.authenticate, name, password)
        if user is None:
            signins_total.labels("refused").inc()
            return render(
                request,
                "login.html",
                status=401,
                error="name or password not recognised, or the account is disabled",
            )
        signins_total.labels("ok").inc()
        request.session.clear()
        request.session["user"] = user.name
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # -- practitioners -----------------------------------------------------------------------

    def _own_inbox(user: User) -> str:
        recipient = user.scope or ""
        if not inbox_exists(settings, recipient):
            raise WebError(
                404,
                "NO_INBOX_YET",
                f"no inbox for {recipient} yet",
                "it appears when the first disclosure arrives (is `safer up` running?)",
            )
        return recipient

    def inbox_page(request: Request) -> Response:
        user = current(request, Role.PRACTITIONER)
        recipient = _own_inbox(user)
        show_all = request.query_params.get("all") == "1"
        with open_inbox(settings, recipient) as inbox:
            rows = listing(inbox, include_actioned=show_all)
        return render(request, "inbox.html", rows=rows, recipient=recipient, show_all=show_all)

    def _own_item(user: User, disclosure_id: str) -> str:
        recipient = _own_inbox(user)
        with open_inbox(settings, recipient) as inbox:
            item = inbox.get(disclosure_id)
        if item is None:
            # Another recipient's id looks exactly like an unknown one: nothing leaks.
            raise WebError(
                404,
                "NOT_ADDRESSEE",
                f"no disclosure with this id in the inbox of {recipient}",
                "you can only open disclosures sent to your own agency; go back to your inbox",
            )
        return recipient

    def disclosure_page(request: Request) -> Response:
        user = current(request, Role.PRACTITIONER)
        disclosure_id = request.path_params["disclosure_id"]
        recipient = _own_item(user, disclosure_id)
        result = open_disclosure(settings, recipient, disclosure_id)
        if result.marked:
            receipts_total.labels("OPENED").inc()
        with open_inbox(settings, recipient) as inbox:
            item = inbox.get(disclosure_id)
        basis = LAWFUL_BASES.get(item.lawful_basis or "") if item else None
        return render(
            request,
            "disclosure.html",
            item=item,
            basis=basis.citation if basis else (item.lawful_basis if item else None),
            send=result.send,
            outcomes=OUTCOME_CODES,
            done=request.query_params.get("done"),
        )

    async def action(request: Request) -> Response:
        user = current(request, Role.PRACTITIONER)
        disclosure_id = request.path_params["disclosure_id"]
        recipient = await run_in_threadpool(_own_item, user, disclosure_id)
        form = await request.form()
        outcome = str(form.get("outcome", ""))
        note = str(form.get("note", "")) or None
        if outcome not in OUTCOME_CODES:
            raise WebError(
                400, "UNKNOWN_OUTCOME", "choose an outcome code", "pick one from the list"
            )
        result = await run_in_threadpool(
            lambda: action_disclosure(
                settings, recipient, disclosure_id, outcome=outcome, note=note
            )
        )
        if result.marked:
            receipts_total.labels("ACTIONED").inc()
        return RedirectResponse(f"/inbox/{disclosure_id}?done=1", status_code=303)

    # -- auditors and DPOs ---------------------------------------------------------------------

    reviewers = (Role.AUDITOR, Role.DPO)

    def _store() -> AuditStore:
        if not settings.audit_db.is_file():
            raise WebError(
                503,
                "NO_AUDIT_LOG",
                f"no audit log at {settings.audit_db}",
                "start `safer up` (or `safer web --data-dir` the right folder)",
            )
        return AuditStore(settings.audit_db)

    def audit_status(request: Request) -> Response:
        current(request, *reviewers)
        key = None
        try:
            key = Runtime(settings, bootstrap="").log_key()
        except ConfigError:
            key = None
        with _store() as store:
            head = store.head()
            latest = store.latest_checkpoint(signed=True)
        size = head[0]
        now = datetime.now(UTC)
        # Verified end to end only when the log changed since the last verification
        # (or that is older than the cache's max age, or ?verify=now): _status.py.
        check = verification.status(
            log_fingerprint(settings.audit_db, head, latest),
            size,
            lambda: verify_store(settings.audit_db, key=key),
            now,
            force=request.query_params.get("verify") == "now",
        )
        age = (now - latest.at).total_seconds() if latest else None
        return render(
            request,
            "audit_status.html",
            verified=check.verified,
            problems=list(check.problems),
            size=size,
            latest=latest,
            age=age,
            checkpoints=check.checkpoints,
            key_known=key is not None,
            check=check,
            check_age=(now - check.at).total_seconds(),
        )

    def _record_query(user: User, kind: str, pseudonyms: frozenset[str], filters: str) -> int:
        record = AuditRecord(
            entry_id=entry_id_for(AuditEvent.QUERIED, uuid.uuid4().hex),
            event=AuditEvent.QUERIED,
            subject_pseudonyms=tuple(sorted(pseudonyms)),
            source=QUERY_SOURCE,
            purpose=f"{kind} viewed in safer web",
            reasons=(f"view {kind}", f"filters {filters}" if filters else "no filters"),
            at=datetime.now(UTC),
            actor=f"web:{user.name}",
        )
        with AuditStore(settings.audit_db) as store:
            result = store.append([record])
        queries_total.labels(kind).inc()
        return int(result[0].seq)

    def _subject_query(identifiers: list[str]) -> Any:
        args = argparse.Namespace(subject=identifiers, subject_file=None, no_nhs_check=False)
        return _subject(args, settings)

    def trail_page(request: Request) -> Response:
        user = current(request, *reviewers)
        q = request.query_params
        form = {
            k: q.get(k, "") for k in ("subject", "recipient", "lawful_basis", "event", "from", "to")
        }
        context: dict[str, Any] = {"form": form, "events": [e.value for e in AuditEvent]}
        if not form["subject"].strip():
            return render(request, "trail.html", **context)
        try:
            subject = _subject_query([form["subject"]])
            query = TrailQuery(
                recipients=frozenset([form["recipient"]] if form["recipient"] else []),
                lawful_bases=frozenset([form["lawful_basis"]] if form["lawful_basis"] else []),
                events=_events([form["event"]] if form["event"] else None),
                period=_period(form["from"], form["to"]),
            )
        except SaferError as exc:
            return render(request, "trail.html", status=400, error=exc, **context)
        with _store() as store:
            records = [r for p in sorted(subject.pseudonyms) for r in store.records(subject=p)]
        labels = _labels(settings)
        entries = [
            e.to_json(labels) for e in trail(records, subjects=subject.pseudonyms, query=query)
        ]
        filters = ", ".join(f"{k}={v}" for k, v in form.items() if v and k != "subject")
        seq = _record_query(user, "trail", subject.pseudonyms, filters)
        return render(
            request,
            "trail.html",
            entries=entries,
            queried_seq=seq,
            linked=subject.linked,
            **context,
        )

    def sar_page(request: Request) -> Response:
        user = current(request, *reviewers)
        identifier = request.query_params.get("subject", "").strip()
        if not identifier:
            return render(request, "sar.html", form={"subject": ""})
        try:
            subject = _subject_query([identifier])
        except SaferError as exc:
            return render(request, "sar.html", status=400, error=exc, form={"subject": identifier})
        with _store() as store:
            records = [r for p in sorted(subject.pseudonyms) for r in store.records(subject=p)]
        try:
            summary = verify_store(settings.audit_db)
            verified = (
                f"audit log verified end to end when this report was made: "
                f"{summary.entries} entries, Merkle root {summary.root}"
            )
            ok = True
        except SaferError:
            verified, ok = "the audit log FAILED verification: do not file this report", False
        report = subject_access_report(records, subjects=subject.pseudonyms, now=datetime.now(UTC))
        text = _sar_text(subject, report.to_json(_labels(settings)), verified)
        seq = _record_query(user, "subject access report", subject.pseudonyms, "")
        return render(
            request, "sar.html", form={"subject": identifier}, text=text, ok=ok, queried_seq=seq
        )

    def s62_page(request: Request) -> Response:
        current(request, *reviewers)
        q = request.query_params
        form = {"from": q.get("from", ""), "to": q.get("to", "")}
        if not (form["from"] and form["to"]):
            return render(request, "s62.html", form=form)
        try:
            period = _period(form["from"], form["to"])
        except SaferError as exc:
            return render(request, "s62.html", status=400, error=exc, form=form)
        labels = _labels(settings)
        with _store() as store:
            entries = [e.to_json(labels) for e in s62_log(store.records(), period)]
        return render(request, "s62.html", form=form, entries=entries)

    def disclosure_audit(request: Request) -> Response:
        current(request, *reviewers)
        disclosure_id = request.path_params["disclosure_id"]
        with _store() as store:
            records = list(store.records(disclosure_id=disclosure_id))
        if not records:
            raise WebError(
                404,
                "UNKNOWN_DISCLOSURE",
                "no audit entry has this disclosure id",
                "search the trail, or check the id (32 hex characters)",
            )
        decision = next(
            (r for r in records if r.event.value in ("DISCLOSED", "REFERRED", "WITHHELD")),
            records[0],
        )
        basis = LAWFUL_BASES.get(decision.lawful_basis or "")
        return render(
            request,
            "audit_disclosure.html",
            disclosure_id=disclosure_id,
            decision=decision,
            records=records,
            basis=basis.citation if basis else decision.lawful_basis,
        )

    def proof_bundle(request: Request) -> Response:
        current(request, *reviewers)
        seq = int(request.path_params["seq"])
        disclosure_id = request.path_params["disclosure_id"]
        try:
            signer = Runtime(settings, bootstrap="").log_signer()
        except ConfigError:
            signer = None
        with AuditStore(settings.audit_db, signer=signer) as store:
            record = store.get(seq)
            if record is None or record.disclosure_id != disclosure_id:
                raise WebError(
                    404,
                    "UNKNOWN_ENTRY",
                    "this log entry does not belong to this disclosure",
                    "use the download links on the disclosure's audit page",
                )
            bundle = store.proof_bundle(seq)
        return Response(
            json.dumps(bundle, indent=2, ensure_ascii=False),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="proof-{seq}.json"'},
        )

    def quarantine_page(request: Request) -> Response:
        current(request, *reviewers)
        with _store() as store:
            records = list(store.records(event=AuditEvent.QUARANTINED))
        records.reverse()
        return render(request, "quarantine.html", records=records)

    # -- analysts --------------------------------------------------------------------------------

    def _dashboard(request: Request) -> Any:
        user = current(request, Role.ANALYST)
        asked = request.query_params.get("partnership")
        if asked and asked != user.scope:
            raise WebError(
                403,
                "OTHER_PARTNERSHIP",
                f"you see the figures of {user.scope} only",
                "ask an administrator for an analyst account of that partnership",
            )
        with _store() as store:
            records = list(store.records())
        tracked = tracked_from_records(records, directory)
        return build_dashboard(
            records,
            tracked,
            partnership=user.scope or "",
            grain=request.query_params.get("grain", "month"),
            bucket=request.query_params.get("period"),
            population=population,
        )

    def analyst_page(request: Request) -> Response:
        dashboard = _dashboard(request)
        return render(request, "analyst.html", d=dashboard)

    def export(request: Request) -> Response:
        dashboard = _dashboard(request)
        chart = dashboard.chart(request.path_params["chart"])
        fmt = request.path_params["fmt"]
        if chart is None or fmt not in ("csv", "json"):
            raise WebError(404, "UNKNOWN_CHART", "no such chart or format", "use the export links")
        name = f"{dashboard.partnership}-{dashboard.bucket}-{chart.key}.{fmt}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if fmt == "json":
            body = {
                "partnership": dashboard.partnership,
                "period": dashboard.bucket,
                "grain": dashboard.grain,
                **chart.to_json(),
            }
            return JSONResponse(body, headers=headers)
        buffer = io.StringIO()
        csv.writer(buffer).writerows(chart.csv_rows())
        return Response(buffer.getvalue(), media_type="text/csv", headers=headers)

    # -- operations ------------------------------------------------------------------------------

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def readyz(request: Request) -> Response:
        problems = []
        if not settings.audit_db.is_file():
            problems.append("NO_AUDIT_LOG: start `safer up` or point --data-dir at its folder")
        try:
            users.list()
        except Exception as exc:  # any failure means not ready; say which kind
            problems.append(f"USERS_UNREADABLE: {type(exc).__name__}")
        status = 200 if not problems else 503
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=status)

    lag_cache: dict[str, Any] = {"at": 0.0}

    async def metrics(request: Request) -> Response:
        if time.monotonic() - lag_cache["at"] > LAG_TTL:
            lag_cache["at"] = time.monotonic()
            lags = await consumer_lag(settings)
            kafka_up.set(0 if lags is None else 1)
            lag_gauge.clear()
            for group, value in sorted((lags or {}).items()):
                lag_gauge.labels(group).set(value)
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/inbox", inbox_page),
        Route("/inbox/{disclosure_id:str}", disclosure_page),
        Route("/inbox/{disclosure_id:str}/action", action, methods=["POST"]),
        Route("/audit", audit_status),
        Route("/audit/trail", trail_page),
        Route("/audit/sar", sar_page),
        Route("/audit/s62", s62_page),
        Route("/audit/quarantine", quarantine_page),
        Route("/audit/disclosures/{disclosure_id:str}", disclosure_audit),
        Route("/audit/disclosures/{disclosure_id:str}/proof/{seq:int}.json", proof_bundle),
        Route("/analyst", analyst_page),
        Route("/analyst/export/{chart:str}.{fmt:str}", export),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, WebError)
        if exc.status == 401:
            return RedirectResponse("/login", status_code=303)
        return render(request, "error.html", status=exc.status, error=exc)

    app = Starlette(
        routes=routes,
        exception_handlers={WebError: on_error},
        middleware=[
            Middleware(_Counting, counter=requests_total),
            Middleware(
                SessionMiddleware,
                secret_key=_derive(config.secret, "session"),
                session_cookie="safer_session",
                max_age=8 * 3600,
                same_site="strict",
                https_only=config.secure_cookies,
            ),
        ],
    )
    app.state.users = users
    return app


def protect(app: ASGIApp, config: WebConfig) -> ASGIApp:
    """The app behind asgi-csrf: every POST must carry the signed token (sign-in included)."""
    wrapped: ASGIApp = asgi_csrf(
        app,
        signing_secret=_derive(config.secret, "csrf"),
        cookie_secure=config.secure_cookies,
        always_protect={"/login"},
    )
    return wrapped


def _period(start: str, end: str) -> Period:
    return Period(
        start=parse_when(start, end=False) if start else None,
        end=parse_when(end, end=True) if end else None,
    )


class _Counting:
    """Counts requests by route *template* (``/inbox/{disclosure_id}``), never the raw path."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)  # type: ignore[arg-type]
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            if template.startswith("/static"):
                template = "/static"
            self.counter.labels(template, scope.get("method", ""), str(status[0])).inc()
