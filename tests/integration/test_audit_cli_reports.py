"""`safer audit trail|report|sar|stats|export|shred` run as a DPO runs them, on demo data.

The demo runs once (real embedded broker, real router, feed and recipients);
each test then runs the real `safer` CLI as a subprocess against that data
directory, or against a copy of it when the test writes (shred, vault links).
The synthetic people are regenerated from the demo's seed to find a child to
ask about and to scan every output for anybody else's data.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle

from adapters import synthetic_concerns
from audit import AuditRecord, AuditStore, SubjectVault, derive_vault_key, vault_path_for
from broker import KeyStore, pseudonym
from safer._cli_audit_reports import S62_COLUMNS, TRAIL_COLUMNS

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
CONCERNS = 30


@dataclass(frozen=True)
class Demo:
    data: Path
    seed: int
    concerns: list[dict[str, Any]]
    child_ids: list[str]  # identifiers of an unrestricted child, canonical
    restricted_child_ids: list[str]
    restricted_concern: str
    other_ids: list[str]  # identifiers of another person in the same concern as child_ids[0]

    def records(self, data: Path | None = None) -> list[AuditRecord]:
        with AuditStore((data or self.data) / "audit.db") as store:
            return list(store.records())

    def secret(self, data: Path | None = None) -> bytes:
        return KeyStore((data or self.data) / "keys").pseudonym_secret()


def _ids(subject: dict[str, Any]) -> list[str]:
    ids = []
    if subject.get("nhs_number"):
        ids.append(f"nhs:{subject['nhs_number']}")
    if subject.get("police_person_id"):
        ids.append(f"police:{subject['police_person_id'].upper()}")
    return ids


def _pick_seed() -> int:
    """The first seed whose concerns include a restricted one about a child with an NHS number."""
    now = datetime.now(UTC)
    for seed in range(1, 200):
        for c in synthetic_concerns(CONCERNS, seed=seed, now=now):
            if c["restricted"] and any(
                s["role"] == "CHILD" and s["nhs_number"] for s in c["subjects"]
            ):
                return seed
    raise AssertionError("no seed below 200 gives a restricted concern")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["SAFER_DEPLOY_DIR"] = str(REPO / "deploy")
    env["SAFER_DATA_DIR"] = str(home / "unused")
    env["COLUMNS"] = "160"
    return env


def _safer(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safer", "--data-dir", str(data), *args],
        env=_env(data.parent),
        cwd=data.parent,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    home = tmp_path_factory.mktemp("dpo")
    data = home / "demo"
    seed = _pick_seed()
    result = _safer(
        data, "demo", "--concerns", str(CONCERNS), "--seed", str(seed), "--json", stdin=""
    )
    assert result.returncode == 0, result.stderr[-3000:]
    concerns = synthetic_concerns(CONCERNS, seed=seed, now=datetime.now(UTC))
    restricted = next(
        c
        for c in concerns
        if c["restricted"] and any(s["role"] == "CHILD" and s["nhs_number"] for s in c["subjects"])
    )
    chosen = next(
        c
        for c in concerns
        if not c["restricted"]
        and any(s["role"] == "CHILD" and s["nhs_number"] for s in c["subjects"])
        and any(s["role"] != "CHILD" and _ids(s) for s in c["subjects"])
    )
    child = next(s for s in chosen["subjects"] if s["role"] == "CHILD" and s["nhs_number"])
    other = next(s for s in chosen["subjects"] if s["role"] != "CHILD" and _ids(s))
    restricted_child = next(
        s for s in restricted["subjects"] if s["role"] == "CHILD" and s["nhs_number"]
    )
    # The demo's concern ids are random; find the restricted one in the log by pseudonym.
    secret = KeyStore(data / "keys").pseudonym_secret()
    wanted = pseudonym(secret, _ids(restricted_child)[0])
    with AuditStore(data / "audit.db") as store:
        restricted_ids = {
            r.concern_id
            for r in store.records(subject=wanted)
            if "RESTRICTED_RECORD" in r.reason_codes
        }
    (restricted_concern,) = restricted_ids
    return Demo(
        data=data,
        seed=seed,
        concerns=concerns,
        child_ids=_ids(child),
        restricted_child_ids=_ids(restricted_child),
        restricted_concern=str(restricted_concern),
        other_ids=_ids(other),
    )


def _copy(demo: Demo, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(demo.data, target)
    return target


def _leaks(text: str, demo: Demo, *, allowed: list[str]) -> list[str]:
    """Personal data of the synthetic people in ``text``, other than ``allowed`` identifiers."""
    allowed_values = {a.split(":", 1)[1] for a in allowed}
    # Agency names (schools, towns) may share a word with a synthetic surname.
    directory = (REPO / "deploy" / "directory.toml").read_text(encoding="utf-8")
    found = []
    for concern in demo.concerns:
        for s in concern["subjects"]:
            for value in (s.get("nhs_number"), s.get("police_person_id")):
                if value and value.upper() not in allowed_values and value in text:
                    found.append(value)
            for name in (s["given_name"], s["family_name"]):
                # Names long enough not to collide with ordinary words in the report.
                if len(name) > 3 and name not in directory and f" {name} " in f" {text} ":
                    found.append(name)
    for record in demo.records():
        found += [p for p in record.subject_pseudonyms if p in text]
    return found


def _about(demo: Demo, ids: list[str], data: Path | None = None) -> list[AuditRecord]:
    secret = demo.secret(data)
    mine = {pseudonym(secret, i) for i in ids}
    return [r for r in demo.records(data) if mine & set(r.subject_pseudonyms)]


# -- trail ----------------------------------------------------------------------------------


def test_trail_of_a_child_shows_every_event_and_nobody_else(demo: Demo) -> None:
    nhs = demo.child_ids[0]
    expected = _about(demo, [nhs])  # the log as the view finds it (before its own entry)
    result = _safer(demo.data, "audit", "trail", "--subject", nhs)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert expected, "the chosen child has no audit records"
    assert f"subject identified by: {nhs}" in text
    for record in expected:
        assert record.event.value in text
    assert "Protection Act" in text or "Children Act" in text  # citations, wrapped in cells
    assert _leaks(text, demo, allowed=[nhs]) == []

    # The view above is itself in the log now (a QUERIED entry about the child): the
    # next view shows it too.
    expected = _about(demo, [nhs])
    assert expected[-1].event.value == "QUERIED"
    as_json = _safer(
        demo.data, "audit", "trail", "--subject", nhs.split(":")[1], "--format", "json"
    )
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["count"] == len(expected)
    assert sorted(e["seq"] for e in body["events"]) == sorted(r.seq or 0 for r in expected)
    assert [e["at"] for e in body["events"]] == sorted(e["at"] for e in body["events"])
    disclosed = [e for e in body["events"] if e["event"] == "DISCLOSED"]
    assert disclosed and all(e["fields"] and e["lawful_basis_citation"] for e in disclosed)
    # A view (QUERIED) has no recipient; it names who looked instead.
    views = [e for e in body["events"] if e["event"] == "QUERIED"]
    assert views and all(e["actor"].startswith("cli:") for e in views)
    assert all(e["recipient_name"] for e in body["events"] if e["event"] != "QUERIED")
    assert _leaks(as_json.stdout, demo, allowed=[nhs]) == []


def test_trail_filters_and_csv(demo: Demo) -> None:
    nhs = demo.child_ids[0]
    expected = _about(demo, [nhs])

    def events(*extra: str) -> list[dict[str, Any]]:
        # Every view adds a QUERIED entry about the child: what a view shows is the log
        # as it was when the view began.
        nonlocal expected
        expected = _about(demo, [nhs])
        result = _safer(demo.data, "audit", "trail", "--subject", nhs, "--format", "json", *extra)
        assert result.returncode == 0, result.stderr
        found: list[dict[str, Any]] = json.loads(result.stdout)["events"]
        return found

    withheld = events("--event", "withheld")
    assert len(withheld) == sum(1 for r in expected if r.event.value == "WITHHELD")
    assert {e["event"] for e in withheld} <= {"WITHHELD"}
    recipient = next(r.recipient for r in expected if r.recipient)
    assert recipient is not None
    assert len(events("--recipient", recipient)) == sum(
        1 for r in expected if r.recipient == recipient
    )
    basis = next(r.lawful_basis for r in expected if r.lawful_basis)
    assert basis is not None
    assert {e["lawful_basis"] for e in events("--lawful-basis", basis)} == {basis}
    assert events("--from", "2099-01-01") == []
    assert len(events("--from", "2000-01-01", "--to", "2099-12-31")) == len(expected)

    expected = _about(demo, [nhs])
    result = _safer(demo.data, "audit", "trail", "--subject", nhs, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert tuple(rows[0].keys()) == TRAIL_COLUMNS
    assert len(rows) == len(expected)


def test_the_vault_links_a_persons_other_identifiers(demo: Demo, tmp_path: Path) -> None:
    data = _copy(demo, tmp_path)
    nhs, linked = demo.child_ids[0], demo.other_ids[0]
    secret = demo.secret(data)
    with SubjectVault(vault_path_for(data / "audit.db"), vault_key=derive_vault_key(secret)) as v:
        v.enrol([nhs, linked], lambda i: pseudonym(secret, i))
    before = _about(demo, [nhs, linked], data)  # the view adds its own QUERIED entry
    result = _safer(data, "audit", "trail", "--subject", nhs, "--format", "json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["subject"] == {
        "identifiers": [nhs],
        "linked_identifiers": 1,
        "vault_key_shredded_at": [],
    }
    assert body["count"] == len(before)
    queried = _about(demo, [nhs, linked], data)[-1]
    assert queried.event.value == "QUERIED"
    assert set(queried.subject_pseudonyms) == {pseudonym(secret, i) for i in (nhs, linked)}
    assert linked.split(":")[1] not in result.stdout  # searched, never shown


def test_trail_and_sar_views_are_audited_without_the_identifier(demo: Demo, tmp_path: Path) -> None:
    """Issue 14: like the web app, every CLI view of a subject is a QUERIED entry."""
    data = _copy(demo, tmp_path)
    nhs = demo.child_ids[0]
    size = len(demo.records(data))
    mine = {pseudonym(demo.secret(data), nhs)}
    result = _safer(
        data, "audit", "trail", "--subject", nhs, "--event", "DISCLOSED", "--as", "dpo-0042"
    )
    assert result.returncode == 0, result.stderr
    sar = _safer(data, "audit", "sar", "--subject", nhs.split(":")[1], "--format", "json")
    assert sar.returncode == 0, sar.stderr
    trail_view, sar_view = demo.records(data)[size:]
    assert trail_view.event.value == sar_view.event.value == "QUERIED"
    assert trail_view.actor == "cli:dpo-0042" and trail_view.source == "safer-cli"
    assert "view trail" in trail_view.reasons and "filters event=DISCLOSED" in trail_view.reasons
    assert sar_view.actor == f"cli:{getpass.getuser()}"  # no --as: the OS user
    assert "view subject access report" in sar_view.reasons
    assert set(trail_view.subject_pseudonyms) == set(sar_view.subject_pseudonyms) == mine
    with AuditStore(data / "audit.db") as store:
        for record in (trail_view, sar_view):
            entry = store.entry_bytes(record.seq or 0)
            assert entry is not None and nhs.split(":")[1].encode() not in entry
    assert _safer(data, "audit", "verify").returncode == 0
    bad = _safer(data, "audit", "trail", "--subject", nhs, "--as", "two words")
    assert bad.returncode == 2 and "--as NAME" in bad.stderr
    assert len(demo.records(data)) == size + 2, "a refused view writes nothing"


# -- sar ------------------------------------------------------------------------------------


def test_sar_is_a_fileable_answer_about_the_child_alone(demo: Demo) -> None:
    nhs = demo.child_ids[0]
    result = _safer(demo.data, "audit", "sar", "--subject", nhs)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    expected = Counter(r.event.value for r in _about(demo, [nhs]))
    shared = expected["DISCLOSED"] + expected["REFERRED"]
    assert "SUBJECT ACCESS REPORT" in text
    assert f"Subject:     {nhs}" in text
    assert "verified end to end" in text
    assert f"1. WHAT WAS SHARED ({shared})" in text
    assert f"2. DECISIONS NOT TO SHARE ({expected['WITHHELD']})" in text
    assert "3. WITHHELD FROM THIS REPORT (0)" in text
    assert "lawful basis:" in text and "received:" in text and "why:" in text
    assert _leaks(text, demo, allowed=[nhs]) == []

    as_json = _safer(demo.data, "audit", "sar", "--subject", nhs, "--format", "json")
    body = json.loads(as_json.stdout)
    assert body["log_verified"] is True
    assert len(body["disclosures"]) == shared
    assert all(d["received_at"] for d in body["disclosures"])  # the demo waits for receipts
    assert _leaks(as_json.stdout, demo, allowed=[nhs]) == []


def test_sar_withholds_a_restricted_concern_with_the_recorded_reason(demo: Demo) -> None:
    ids = demo.restricted_child_ids
    args = [a for i in ids for a in ("--subject", i)]
    result = _safer(demo.data, "audit", "sar", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    restricted = [r for r in _about(demo, ids) if r.concern_id == demo.restricted_concern]
    (withheld,) = body["withheld_restricted"]
    assert sorted(withheld["log_entries"]) == sorted(r.seq or 0 for r in restricted)
    assert withheld["reason_codes"] == ["RESTRICTED_RECORD"]
    assert withheld["exemption"] == "Data Protection Act 2018 section 45(4)"
    assert any("restricted" in reason for reason in withheld["recorded_reasons"])
    assert demo.restricted_concern not in result.stdout
    for r in restricted:
        assert r.disclosure_id is None or r.disclosure_id not in result.stdout
    text = _safer(demo.data, "audit", "sar", *args).stdout
    assert f"3. WITHHELD FROM THIS REPORT ({len(restricted)})" in text
    assert "withheld under Data Protection Act 2018 section 45(4)" in text
    assert _leaks(text, demo, allowed=ids) == []


# -- s62, stats, export -----------------------------------------------------------------------


def test_s62_report_lists_every_disclosure_with_its_justification(demo: Demo) -> None:
    result = _safer(
        demo.data, "audit", "report", "s62", "--from", "2000-01-01", "--to", "2099-12-31",
        "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    records = demo.records()
    disclosures = [r for r in records if r.event.value in ("DISCLOSED", "REFERRED")]
    assert body["count"] == len(disclosures) > 0
    for entry in body["entries"]:
        assert entry["justification"] and entry["date_time"] and entry["recipient"]
        assert entry["disclosed_by"] == "hampshire-constabulary"
        assert entry["received_at"] is not None
    assert _leaks(result.stdout, demo, allowed=[]) == []
    as_csv = _safer(
        demo.data, "audit", "report", "s62", "--from", "2000-01-01", "--to", "2099-12-31",
        "--format", "csv",
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert tuple(rows[0].keys()) == S62_COLUMNS and len(rows) == len(disclosures)
    table = _safer(
        demo.data, "audit", "report", "s62", "--from", "2000-01-01", "--to", "2099-12-31"
    )
    assert table.returncode == 0 and "s.62" in table.stdout
    missing = _safer(demo.data, "audit", "report", "s62", "--from", "2000-01-01")
    assert missing.returncode == 2 and "--to" in missing.stderr


def test_stats_count_every_entry_and_time_to_receipt(demo: Demo) -> None:
    result = _safer(demo.data, "audit", "stats", "--format", "json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    records = demo.records()
    assert body["entries"] == len(records) == sum(body["by_event"].values())
    assert body["by_event"] == dict(Counter(r.event.value for r in records))
    assert {"hampshire", "isle-of-wight", "portsmouth", "southampton"} <= set(
        body["by_partnership"]
    )
    delivered = sum(1 for r in records if r.event.value in ("DISCLOSED", "REFERRED"))
    overall = body["time_to_receipt_all"]
    assert overall["delivered"] == delivered and overall["pending"] == 0
    assert 0 <= overall["median_s"] <= overall["p90_s"] <= overall["max_s"]
    assert body["concerns_with_type"] >= CONCERNS - 5  # restricted/young-adult ones may lack it
    table = _safer(demo.data, "audit", "stats")
    assert table.returncode == 0 and "Time to receipt" in table.stdout


def test_fhir_export_validates_and_a_subject_export_names_only_them(demo: Demo) -> None:
    result = _safer(demo.data, "audit", "export", "--fhir")
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    R4BBundle.model_validate(bundle)
    profiles = Counter(
        e["resource"]["meta"]["profile"][0].rsplit(".", 1)[1] for e in bundle["entry"]
    )
    assert profiles["Source"] > 0 and profiles["Recipient"] > 0

    nhs = demo.child_ids[0]
    mine = _safer(demo.data, "audit", "export", "--fhir", "--subject", nhs)
    assert mine.returncode == 0, mine.stderr
    subject_bundle = json.loads(mine.stdout)
    R4BBundle.model_validate(subject_bundle)
    child = pseudonym(demo.secret(), nhs)
    patients = {
        e["resource"]["entity"][0]["what"]["identifier"]["value"] for e in subject_bundle["entry"]
    }
    assert patients == {child}
    expected = [
        r for r in _about(demo, [nhs]) if r.event.value in ("DISCLOSED", "REFERRED", "RECEIVED")
    ]
    assert len(subject_bundle["entry"]) == len(expected)
    assert _leaks(mine.stdout.replace(child, ""), demo, allowed=[nhs]) == []


# -- shred ----------------------------------------------------------------------------------


def test_shred_destroys_the_key_records_it_and_the_log_still_verifies(
    demo: Demo, tmp_path: Path
) -> None:
    data = _copy(demo, tmp_path)
    ids = demo.child_ids
    secret = demo.secret(data)
    vault_file = vault_path_for(data / "audit.db")
    with SubjectVault(vault_file, vault_key=derive_vault_key(secret)) as vault:
        vault.enrol(ids, lambda i: pseudonym(secret, i))
    size = len(demo.records(data))

    refused = _safer(data, "audit", "shred", "--subject", ids[0], "--reason", "erasure", stdin="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(demo.records(data)) == size

    result = _safer(
        data, "audit", "shred", "--subject", ids[0], "--reason", "erasure",
        "--actor", "dpo-0042", "--yes", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    (done,) = body["shredded"]
    assert done["log_entry"] == size + 1 and done["pseudonyms"] == len(ids)
    assert body["log_verified"] is True and body["entries"] == size + 1
    verify = _safer(data, "audit", "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["problems"] == []
    with SubjectVault(vault_file, vault_key=derive_vault_key(secret)) as vault:
        ref = vault.lookup(pseudonym(secret, ids[0]))
        assert ref is not None and ref.shredded and ref.identifiers == ()

    trail = json.loads(
        _safer(data, "audit", "trail", "--subject", ids[0], "--event", "KEY_SHREDDED",
               "--format", "json").stdout
    )  # fmt: skip
    assert [(e["seq"], e["actor"]) for e in trail["events"]] == [(size + 1, "dpo-0042")]
    (shredded_at,) = trail["subject"]["vault_key_shredded_at"]
    assert shredded_at == trail["events"][0]["at"]
    sar = _safer(data, "audit", "sar", "--subject", ids[0])
    assert "4. ERASURE (1)" in sar.stdout and "dpo-0042" in sar.stdout
    assert ids[0].split(":")[1] not in sar.stderr

    again = _safer(data, "audit", "shred", "--subject", ids[0], "--reason", "erasure", "--yes")
    assert again.returncode == 0 and "nothing to shred" in again.stdout
    # The shred, then the trail and SAR views (each recorded as QUERIED); no second shred.
    assert [r.event.value for r in demo.records(data)[size:]] == [
        "KEY_SHREDDED",
        "QUERIED",
        "QUERIED",
    ]


def test_routed_people_are_enrolled_and_can_be_shredded(demo: Demo, tmp_path: Path) -> None:
    # The router enrols every routed person in the subject vault, so a real
    # demo child can be shredded, and the log still verifies afterwards.
    data = _copy(demo, tmp_path)
    assert vault_path_for(data / "audit.db").exists()
    result = _safer(
        data, "audit", "shred", "--subject", demo.child_ids[0], "--reason", "retention",
        "--yes", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["shredded"]) == 1
    assert _safer(data, "audit", "verify").returncode == 0


def test_shred_of_someone_the_vault_never_held(demo: Demo, tmp_path: Path) -> None:
    data = _copy(demo, tmp_path)
    stranger = "nhs:" + _valid_nhs("999000123")
    result = _safer(
        data, "audit", "shred", "--subject", stranger, "--reason", "retention",
        "--yes", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["shredded"] == []


def _valid_nhs(prefix: str) -> str:
    from adapters._synthetic import nhs_check_digit

    for last in range(10):
        nine = prefix[:8] + str(last)
        digit = nhs_check_digit(nine)
        if digit is not None:
            return nine + str(digit)
    raise AssertionError("no valid NHS number with that prefix")


# -- mistakes ---------------------------------------------------------------------------------


def test_a_mistyped_nhs_number_searches_nothing_and_is_not_echoed(demo: Demo) -> None:
    digits = demo.child_ids[0].split(":")[1]
    typo = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    result = _safer(demo.data, "audit", "sar", "--subject", typo)
    assert result.returncode == 2
    assert "check digit" in result.stderr
    assert typo not in result.stderr + result.stdout


def test_a_missing_data_directory_is_explained(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    result = _safer(tmp_path / "nowhere", "audit", "stats")
    assert result.returncode == 2
    assert "no audit store" in result.stderr and "--data-dir" in result.stderr
    assert not (tmp_path / "nowhere" / "audit.db").exists()
    asked = _safer(tmp_path / "nowhere", "audit", "trail", "--subject", "9434765919")
    assert asked.returncode == 2 and "no audit store" in asked.stderr
    assert "9434765919" not in asked.stderr
