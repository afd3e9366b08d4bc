"""`safer web` in a real browser (Playwright driving Debian's chromium) and over plain HTTP.

One seeded run for the module: `safer demo` (synthetic data, 40 concerns and
the five bad records) fills a data directory, then `safer up` serves the
exchange and the web app on it, on a real Apache Kafka. Every figure checked
is recomputed here from the audit log or the inboxes, not from the app.
Screenshots of the main pages are taken on every run; they replace the ones in
docs/screenshots/ only when SAFER_SCREENSHOTS=1 is set (so a test run leaves the
checkout as it was).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit import AuditStore
from safer._users import Role, UserStore, users_path
from schemas import AuditEvent

from .test_cli import REPO, _env, _safer

pytestmark = pytest.mark.kafka

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "docs" / "screenshots"
PASSWORD = "a long synthetic passphrase"
PRACTITIONER_RECIPIENT = "portsmouth-csc"
PARTNERSHIP = "portsmouth"
FRONT_DOOR = "hampshire-csc"  # seed 11 refers at least one concern to its triage queue
DEMO_BAD_CODES = {
    "DECODE_ERROR",
    "MINIMUM_DATASET_MISSING",
    "SIGNATURE_INVALID",
    "UNKNOWN_PUBLISHER",
    "UNKNOWN_SCHEMA",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate: Any, timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@dataclass(frozen=True)
class Site:
    url: str
    data: Path
    env: dict[str, str]
    cwd: Path

    def records(self) -> list[Any]:
        with AuditStore(self.data / "audit.db") as store:
            return list(store.records())


def _inbox_payloads(data: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for db in sorted((data / "inbox").glob("*.db")):
        with sqlite3.connect(db) as conn:
            found[db.stem] = [
                (d, json.loads(p))
                for d, p in conn.execute("SELECT disclosure_id, payload_json FROM disclosures")
            ]
    return found


def _personal_values(data: Path) -> set[str]:
    """Every name, identifier, date of birth and postcode in any recipient's decrypted copy."""
    values: set[str] = set()
    for items in _inbox_payloads(data).values():
        for _, payload in items:
            for person in payload.get("subjects", []):
                for key in ("given_name", "family_name", "nhs_number", "police_person_id"):
                    if person.get(key):
                        values.add(str(person[key]))
                if person.get("date_of_birth"):
                    values.add(str(person["date_of_birth"]))
                if (person.get("address") or {}).get("postcode"):
                    values.add(str(person["address"]["postcode"]))
    return {v for v in values if len(v) >= 4}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run `make browser` (make test does)")
    tmp = tmp_path_factory.mktemp("web")
    env = _env(tmp)
    data = tmp / "data"
    demo = _safer(
        "--data-dir",
        str(data),
        "demo",
        "--concerns",
        "40",
        "--seed",
        "11",
        "--json",
        env=env,
        cwd=tmp,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    directory_recipients = {p.stem for p in (data / "inbox").glob("*.db")} | {
        PRACTITIONER_RECIPIENT,
        "southampton-csc",
    }
    with UserStore(users_path(data)) as users:
        users.add(
            "pat",
            Role.PRACTITIONER,
            PASSWORD,
            scope=PRACTITIONER_RECIPIENT,
            recipients=frozenset(directory_recipients),
        )
        users.add(
            "fd",
            Role.PRACTITIONER,
            PASSWORD,
            scope=FRONT_DOOR,
            recipients=frozenset(directory_recipients),
        )
        users.add("aud", Role.AUDITOR, PASSWORD)
        users.add("dee", Role.DPO, PASSWORD)
        users.add("ana", Role.ANALYST, PASSWORD, scope=PARTNERSHIP)
    port = _free_port()
    log = tmp / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-m", "safer", "--log-file", str(log), "up", "--web-port", str(port)],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_for(lambda: log.exists() and "services.ready" in log.read_text(), what="safer up")
        _wait_for(ready, what="safer web")
        yield Site(url, data, env, tmp)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield chromium
        chromium.close()


def _sign_in(browser: Any, site: Site, name: str) -> Any:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert name in page.locator("[data-testid=who]").inner_text()
    return page


def _shot(page: Any, name: str) -> None:
    shots = SHOTS if os.environ.get("SAFER_SCREENSHOTS") == "1" else Path(tempfile.gettempdir())
    shots.mkdir(parents=True, exist_ok=True)
    assert page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def _table(page: Any, testid: str) -> list[list[str]]:
    rows = page.locator(f"[data-testid={testid}] tbody tr")
    return [
        [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
        for i in range(rows.count())
    ]


# -- practitioners ------------------------------------------------------------------------------


def test_practitioner_sees_only_their_inbox_opens_and_actions(browser: Any, site: Site) -> None:
    inboxes = _inbox_payloads(site.data)
    own = {d for d, _ in inboxes[PRACTITIONER_RECIPIENT]}
    page = _sign_in(browser, site, "pat")
    page.goto("/login")
    _shot(page, "login")
    page.goto("/inbox")
    shown = page.locator("[data-testid=inbox] tbody tr[data-disclosure]")
    ids = [shown.nth(i).get_attribute("data-disclosure") for i in range(shown.count())]
    assert ids and set(ids) <= own, "the inbox lists this recipient's disclosures only"
    lefts = [t.strip() for t in page.locator("[data-testid=inbox] td.left").all_inner_texts()]
    overdue = [t.startswith("OVERDUE") for t in lefts]
    assert overdue == sorted(overdue, reverse=True), "overdue ones first"
    _shot(page, "inbox")

    # Open one: the page shows the decrypted minimised content and it becomes OPENED.
    target = ids[0]
    page.click(f"tr[data-disclosure='{target}'] a")
    assert page.locator("[data-testid=status]").inner_text().startswith("OPENED")
    payload = dict(inboxes[PRACTITIONER_RECIPIENT])[target]
    if payload.get("narrative"):
        assert payload["narrative"][:30] in page.content()
    page.select_option("select[name=outcome]", "S47_ENQUIRY")
    page.fill("textarea[name=note]", "Strategy discussion booked")
    page.click("form[action$='/action'] button")
    page.wait_for_url(re.compile(r".*done=1"))
    assert page.locator("[data-testid=status]").inner_text() == "ACTIONED (S47_ENQUIRY)"
    _shot(page, "disclosure")

    # The sender's `safer track` shows it done once the receipts are in the audit log.
    concern_id = next(
        r.concern_id for r in site.records() if r.disclosure_id == target and r.concern_id
    )

    def tracked_done() -> bool:
        result = _safer("track", concern_id, "--json", env=site.env, cwd=site.cwd)
        rows = json.loads(result.stdout or "[]")
        return any(
            r["recipient"] == PRACTITIONER_RECIPIENT and r["time_left"] == "done" for r in rows
        )

    _wait_for(tracked_done, what="safer track to show ACTIONED")

    # Another recipient's disclosure, even by its URL: refused with a reason code.
    other = next(
        d for name, items in inboxes.items() if name != PRACTITIONER_RECIPIENT for d, _ in items
    )
    response = page.goto(f"/inbox/{other}")
    assert response is not None and response.status == 404
    assert page.locator("[data-testid=reason-code]").inner_text() == "NOT_ADDRESSEE"
    response = page.goto("/audit")
    assert response is not None and response.status == 403
    page.context.close()


def test_referrals_appear_in_the_front_doors_triage_queue(browser: Any, site: Site) -> None:
    referred = {
        r.disclosure_id
        for r in site.records()
        if r.event is AuditEvent.REFERRED and r.recipient == FRONT_DOOR
    }
    assert referred, "the seeded data refers something to this front door"
    page = _sign_in(browser, site, "fd")
    page.goto("/inbox?all=1")
    rows = page.locator("[data-testid=triage] tbody tr[data-disclosure]")
    shown = {rows.nth(i).get_attribute("data-disclosure") for i in range(rows.count())}
    assert shown == referred
    page.context.close()


# -- auditors and DPOs -----------------------------------------------------------------------


def test_auditor_pages_show_the_logs_figures(browser: Any, site: Site) -> None:
    page = _sign_in(browser, site, "aud")
    before = len(site.records())
    page.goto("/audit")
    after = len(site.records())
    assert page.locator("[data-testid=verified]").inner_text() == "Verified end to end"
    assert before <= int(page.locator("[data-testid=size]").inner_text()) <= after
    _shot(page, "audit-status")

    page.goto("/audit/quarantine")
    codes = {row[2] for row in _table(page, "quarantine")}
    assert codes == DEMO_BAD_CODES

    page.goto("/audit/s62?from=2020-01-01&to=2099-12-31")
    expected = sum(
        1 for r in site.records() if r.event in (AuditEvent.DISCLOSED, AuditEvent.REFERRED)
    )
    assert page.locator("[data-testid=s62-count]").inner_text().startswith(f"{expected} ")

    # A disclosure's audit page links a proof bundle for each of its entries.
    disclosed = next(r for r in site.records() if r.event is AuditEvent.DISCLOSED)
    page.goto(f"/audit/disclosures/{disclosed.disclosure_id}")
    assert page.locator("[data-testid=decision]").inner_text() == "DISCLOSED"
    bundle = page.request.get(
        f"/audit/disclosures/{disclosed.disclosure_id}/proof/{disclosed.seq}.json"
    ).json()
    assert bundle["seq"] == disclosed.seq and bundle["inclusion_proof"] is not None
    page.context.close()


def test_trail_and_sar_views_are_audited_without_the_identifier(browser: Any, site: Site) -> None:
    nhs = next(
        person["nhs_number"]
        for _, payload in _inbox_payloads(site.data)[PRACTITIONER_RECIPIENT]
        for person in payload.get("subjects", [])
        if person.get("nhs_number") and person.get("role") == "CHILD"
    )
    page = _sign_in(browser, site, "dee")
    page.goto("/audit/trail")
    page.fill("input[name=subject]", f"nhs:{nhs}")
    page.click("form.filters button")
    page.wait_for_selector("[data-testid=trail]")
    events = _table(page, "trail")
    assert events and any(row[2] == "DISCLOSED" for row in events)
    seq = int(page.locator("[data-testid=queried-seq]").inner_text())
    _shot(page, "trail")
    page.goto(f"/audit/sar?subject=nhs:{nhs}")
    sar_seq = int(page.locator("[data-testid=queried-seq]").inner_text())
    assert "SUBJECT ACCESS" in page.locator("[data-testid=sar]").inner_text().upper()
    with AuditStore(site.data / "audit.db") as store:
        for at, kind in ((seq, "trail"), (sar_seq, "subject access report")):
            record = store.get(at)
            entry = store.entry_bytes(at)
            assert record is not None and entry is not None
            assert record.event is AuditEvent.QUERIED and record.actor == "web:dee"
            assert record.subject_pseudonyms and f"view {kind}" in record.reasons
            assert nhs.encode() not in entry, "the identifier typed is never logged"
    page.context.close()


# -- analysts ------------------------------------------------------------------------------------


def test_analyst_sees_suppressed_aggregates_of_their_partnership_only(
    browser: Any, site: Site
) -> None:
    page = _sign_in(browser, site, "ana")
    page.goto("/analyst")
    _shot(page, "analyst")
    content = page.content()
    leaks = {v for v in _personal_values(site.data) if v in content}
    assert not leaks, f"personal data on the analyst's page: {len(leaks)} value(s)"
    assert not any(r.disclosure_id in content for r in site.records() if r.disclosure_id), (
        "no disclosure ids for analysts"
    )

    # The figures: recomputed here from the audit log, then suppressed by the rule.
    raw: dict[str, Counter[str]] = {}
    types: dict[str, str] = {}
    records = site.records()
    for r in records:
        for reason in r.reasons:
            m = re.search(r"concern type ([A-Z_]+)", reason)
            if r.concern_id and m and r.concern_id not in types:
                types[r.concern_id] = m.group(1)
    for r in records:
        if r.lscp == PARTNERSHIP and r.event.value in ("DISCLOSED", "WITHHELD", "REFERRED"):
            raw.setdefault(types.get(r.concern_id or "", "not recorded"), Counter())[
                r.event.value
            ] += 1
    table = _table(page, "table-concern-type")
    assert [row[0] for row in table] == sorted(raw)
    for label, *cells, total in table:
        counts = [raw[label].get(e, 0) for e in ("DISCLOSED", "WITHHELD", "REFERRED")]
        for shown, count in zip(cells, counts, strict=True):
            if shown == "<5":
                assert 1 <= count <= 4
            elif shown == "x":
                assert count >= 5
            else:
                assert int(shown) == count and (count == 0 or count >= 5)
        assert total == ("<5" if 0 < sum(counts) < 5 else str(sum(counts)))
        assert sum(c == "<5" for c in cells) + sum(c == "x" for c in cells) != 1

    # Exports match the charts and their tables.
    # (risk-factors: issue 16; the demo's concerns carry risk assessments.)
    for key in ("concern-type", "risk-grade", "timeliness", "quarantine", "risk-factors"):
        shown = _table(page, f"table-{key}")
        exported = page.request.get(f"/analyst/export/{key}.csv").text()
        assert list(csv.reader(io.StringIO(exported)))[1:] == shown
        as_json = page.request.get(f"/analyst/export/{key}.json").json()
        assert as_json["rows"] == shown and as_json["partnership"] == PARTNERSHIP
        bars = page.locator(f"svg[data-chart={key}] rect[data-shown]")
        drawn = [bars.nth(i).get_attribute("data-shown") for i in range(bars.count())]
        assert drawn == [c for row in shown for c in row[1:-1] if c != "0"]
    quarantine = _table(page, "table-quarantine")
    assert {row[0] for row in quarantine} == DEMO_BAD_CODES
    assert all(row[1] == "<5" for row in quarantine), "one of each: all suppressed"

    # Another partnership, or anything but aggregates: refused.
    response = page.goto("/analyst?partnership=southampton")
    assert response is not None and response.status == 403
    assert page.locator("[data-testid=reason-code]").inner_text() == "OTHER_PARTNERSHIP"
    for path in ("/audit/trail", "/inbox", "/audit/quarantine"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
    page.context.close()


# -- plain HTTP: CSRF, health, metrics ----------------------------------------------------------


def test_csrf_health_and_metrics_without_personal_data(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        refused = client.post("/login", data={"name": "aud", "password": PASSWORD})
        assert refused.status_code == 403, "a sign-in without the CSRF token is refused"
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["ready"] is True
        assert client.get("/audit", follow_redirects=False).status_code == 303  # to sign-in
        body = client.get("/metrics").text
    samples = [line for line in body.splitlines() if line and not line.startswith("#")]
    names = {line.split("{")[0].split(" ")[0] for line in samples}
    assert {
        "safer_audit_log_entries",
        "safer_routed_decisions",
        "safer_quarantined_records",
        "safer_web_requests_total",
    } <= names
    labels = re.findall(r'(\w+)="([^"]*)"', body)
    allowed_keys = {
        "route",
        "method",
        "status",
        "outcome",
        "reason",
        "partnership",
        "level",
        "kind",
        "group",
    }
    assert {k for k, _ in labels} <= allowed_keys
    ids = {r.disclosure_id for r in site.records() if r.disclosure_id}
    for key, value in labels:
        assert value not in ids and not re.fullmatch(r"[0-9a-f]{16,}", value), (key, value)
        if key == "route":
            assert value == "(unmatched)" or value.startswith("/"), "a route template"
            assert not re.search(r"[0-9a-f]{32}", value)
    leaks = {v for v in _personal_values(site.data) if v in body}
    assert not leaks
    routed = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'safer_routed_decisions\{outcome="(\w+)"\} ([0-9.e+]+)', body)
    }
    records = site.records()
    assert routed["QUARANTINED"] == sum(r.event is AuditEvent.QUARANTINED for r in records)
    # Consumer lag per group, measured against Kafka: groups are service or recipient ids.
    assert "safer_kafka_reachable 1.0" in body
    lag = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'safer_consumer_lag\{group="([^"]+)"\} ([0-9.e+]+)', body)
    }
    recipients = {p.stem for p in (site.data / "inbox").glob("*.db")}
    assert {"safer-router", "safer-audit-feed", PRACTITIONER_RECIPIENT} <= set(lag)
    assert set(lag) <= recipients | {"safer-router", "safer-audit-feed"}
    assert all(v >= 0 for v in lag.values())
