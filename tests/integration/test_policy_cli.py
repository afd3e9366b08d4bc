"""`safer policy check`, `safer policy explain` and `safer consent record`, run as a user runs
them: the real CLI in a subprocess.

* Every new command's --help teaches, with an example.
* `policy check` validates the shipped set and prints who may receive what; a malformed
  policy file gives exit code 2 and a precise error (file, agreement, field), never a
  traceback.
* `policy explain` answers for every candidate recipient, in the exact JSON shape, with no
  personal data; it needs no broker and no keys.
* `consent record` publishes a signed, pseudonymised record to hips.consent.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker import Keyring, KeyStore, load_deployment, pseudonym, read_topic, verify_consent_record
from schemas import Codec, EmbeddedRegistry

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy/examples/concern-domestic-abuse.json"
#: Personal data in the example concern: none of it may be printed by explain.
EXAMPLE_PID = ["Poppy", "Walker", "Gemma", "Darren", "Fletcher", "9992048719", "Albert Road"]


def _env(tmp_path: Path, deploy: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["SAFER_DEPLOY_DIR"] = str(deploy or REPO / "deploy")
    env["SAFER_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "120"
    return env


def _safer(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safer", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_policy_check_prints_who_may_receive_what(tmp_path: Path) -> None:
    result = _safer("policy", "check", env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    policy = load_deployment(REPO / "deploy").policy
    text = result.stdout
    assert "policy OK" in text
    assert policy.revision in text
    for agreement in policy.agreements:
        assert agreement.id in text, agreement.id  # never wrapped
        fields = len(policy.profile(agreement.profile).fields)
        assert f"{agreement.profile} ({fields} fields)" in text
    compact = text.replace("\n", "").replace("│", "").replace(" ", "")
    for word in ("DAA2021-S49A", "CDA1998-S115", "overridable_at_risk", "not_required"):
        assert word in compact
    # The same check works on an explicit folder.
    again = _safer("policy", "check", str(REPO / "deploy/policy"), env=_env(tmp_path), cwd=tmp_path)
    assert again.returncode == 0 and policy.revision in again.stdout


def _broken_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    folder = tmp_path / "policy"
    shutil.copytree(REPO / "deploy/policy", folder)
    path = folder / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return folder


MALFORMED = {
    "bad-toml-syntax": (
        "police-to-health.toml",
        'min_risk_grade = "MEDIUM"',
        'min_risk_grade = "MEDIUM',
        ["police-to-health.toml", "not valid TOML", "line"],
    ),
    "unknown-field": (
        "police-to-youth-justice.toml",
        "min_age = 10",
        "min_age = 10\nmaximum_fun = true",
        ["police-to-youth-justice.toml", "agreement 'police-yjs'", "field 'maximum_fun'"],
    ),
    "wrong-enum": (
        "police-to-schools.toml",
        'min_risk_grade = "LOW"',
        'min_risk_grade = "AMBER"',
        [
            "police-to-schools.toml",
            "agreement 'police-school-encompass'",
            "field 'min_risk_grade'",
            "'HIGH', 'MEDIUM' or 'LOW'",
        ],
    ),
    "unknown-profile": (
        "police-to-health.toml",
        'profile = "health-safeguarding"',
        'profile = "health-everything"',
        [
            "police-to-health.toml",
            "agreement 'police-health-safeguarding'",
            "field 'profile'",
            "unknown profile 'health-everything'",
        ],
    ),
    "duplicate-id": (
        "police-to-health.toml",
        'id = "police-health-early-years"',
        'id = "police-health-safeguarding"',
        ["police-to-health.toml", "agreement 'police-health-safeguarding'", "field 'id'"],
    ),
    "basis-that-does-not-fit": (
        "police-to-schools.toml",
        'lawful_bases = ["DAA2021-S49A",',
        'lawful_bases = ["CDA1998-S115",',
        [
            "agreement 'police-school-encompass'",
            "field 'lawful_bases'",
            "CDA1998-S115 does not reach education",
        ],
    ),
    "unknown-lawful-basis": (
        "police-to-youth-justice.toml",
        '"CDA1998-S115",',
        '"CDA1998-S999",',
        ["agreement 'police-yjs'", "field 'lawful_bases'", "unknown lawful basis id(s)"],
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_policy_file_gets_a_precise_error_never_a_traceback(
    case: str, tmp_path: Path
) -> None:
    name, old, new, expected = MALFORMED[case]
    folder = _broken_copy(tmp_path, name, old, new)
    result = _safer("policy", "check", str(folder), env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    flat = " ".join(result.stderr.split())
    for needle in expected:
        assert needle in flat, f"{needle!r} missing from: {flat}"
    assert "policy check FAILED" in flat and "what to do" in flat


def test_a_policy_file_that_is_not_utf8_is_reported_not_raised(tmp_path: Path) -> None:
    folder = tmp_path / "policy"
    shutil.copytree(REPO / "deploy/policy", folder)
    (folder / "zz-latin1.toml").write_bytes(b'# caf\xe9\n[[profile]]\nname = "x"\n')
    result = _safer("policy", "check", str(folder), env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "zz-latin1.toml: not UTF-8" in " ".join(result.stderr.split())
    missing = _safer("policy", "check", str(tmp_path / "nowhere"), env=_env(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_explain_refuses_to_run_on_a_malformed_policy(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", deploy)
    target = deploy / "policy/police-to-schools.toml"
    target.write_text(
        target.read_text(encoding="utf-8").replace("consent_rule", "consent_rules", 1),
        encoding="utf-8",
    )
    result = _safer("policy", "explain", str(EXAMPLE), env=_env(tmp_path, deploy), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    flat = " ".join(result.stderr.split())
    assert "agreement 'police-school-encompass'" in flat and "consent_rules" in flat


def test_explain_json_has_the_exact_shape_and_the_right_answer(tmp_path: Path) -> None:
    result = _safer(
        "policy",
        "explain",
        "--json",
        "--at",
        "2026-11-23T01:20:00+00:00",
        str(EXAMPLE),
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"policy_revision", "recipients"}
    assert answer["policy_revision"] == load_deployment(REPO / "deploy").policy.revision
    keys = {
        "recipient_id",
        "lscp",
        "agency_type",
        "decision",
        "lawful_basis",
        "reason_codes",
        "reasons",
        "fields",
    }
    rows = {r["recipient_id"]: r for r in answer["recipients"]}
    assert all(set(r) == keys for r in answer["recipients"])
    assert set(rows) == {
        "portsmouth-csc",
        "portsmouth-health",
        "portsmouth-la-education",
        "portsmouth-yjs",
        "portsmouth-adult-safeguarding",
        "school-116330",
    }
    got = {rid: (r["decision"], r["lawful_basis"], r["reason_codes"]) for rid, r in rows.items()}
    assert got == {
        "portsmouth-csc": ("PERMIT", "DPA18-S35+SCH8-P4", []),
        "portsmouth-health": ("PERMIT", "DPA18-S35+SCH8-P4", []),
        "portsmouth-la-education": ("DENY", None, ["NO_LAWFUL_BASIS"]),
        "portsmouth-yjs": ("DENY", None, ["NO_LAWFUL_BASIS"]),
        "portsmouth-adult-safeguarding": ("DENY", None, ["NO_LAWFUL_BASIS"]),
        "school-116330": ("PERMIT", "DAA2021-S49A", []),
    }
    school = rows["school-116330"]["fields"]
    assert "voice_of_child" in school and "narrative" not in school
    assert "narrative" not in rows["portsmouth-health"]["fields"]
    assert "narrative" in rows["portsmouth-csc"]["fields"]
    assert all(not r["fields"] for r in rows.values() if r["decision"] == "DENY")
    assert any("RISK_TO_CHILD" in reason for reason in rows["portsmouth-csc"]["reasons"])
    for word in EXAMPLE_PID:
        assert word not in result.stdout, word


def test_explain_human_output_explains_each_recipient(tmp_path: Path) -> None:
    result = _safer("policy", "explain", str(EXAMPLE), env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for needle in (
        "DOMESTIC_ABUSE · risk HIGH",
        "consent NOT_SOUGHT (RISK_TO_CHILD",
        "partnerships: portsmouth",
        "PERMIT school-116330",
        "lawful basis: DAA2021-S49A",
        "DENY portsmouth-yjs",
        "people shared: S1 CHILD; left out: S2 PARENT_CARER, S3 ALLEGED_PERPETRATOR",
    ):
        assert needle in text, needle
    for word in EXAMPLE_PID:
        assert word not in result.stdout, word
    assert not (tmp_path / "data" / "keys").exists(), "explain must not need or make keys"


def test_explain_rejects_an_invalid_concern_cleanly(tmp_path: Path) -> None:
    invalid = REPO / "deploy/examples/concern-invalid.json"
    result = _safer("policy", "explain", str(invalid), env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "[" in result.stderr and "what to do" in result.stderr


@pytest.mark.kafka
def test_consent_record_publishes_a_signed_pseudonymised_record(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    env["SAFER_TOPIC_PREFIX"] = prefix = f"cr{secrets.token_hex(3)}"
    assert _safer("keys", "init", env=env, cwd=tmp_path).returncode == 0
    assert _safer("topics", "create", env=env, cwd=tmp_path).returncode == 0
    result = _safer(
        "consent",
        "record",
        "--subject",
        "NHS:999 204 8719",
        "--state",
        "OVERRIDDEN",
        "--justification",
        "SIGNIFICANT_HARM",
        "--by",
        "MASH team manager 4471",
        "--agency",
        "portsmouth-csc",
        "--ref",
        "MASH/2026/1187",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "PUBLISHED consent OVERRIDDEN" in result.stdout
    assert "9992048719" not in result.stdout + result.stderr

    import asyncio

    records = asyncio.run(read_topic(kafka_bootstrap, f"{prefix}.consent", timeout=30))
    assert len(records) == 1
    keys = KeyStore(tmp_path / "data" / "keys")
    deployment = load_deployment(REPO / "deploy")
    ids = [p.id for p in deployment.directory.publishers] + [
        r.id for r in deployment.directory.recipients
    ]
    keyring: Keyring = keys.keyring(ids)
    record = verify_consent_record(
        Codec(EmbeddedRegistry(None)),
        keyring,
        deployment.directory,
        key=records[0].key,
        value=records[0].value,
        headers=records[0].headers,
    )
    assert record.subject_pseudonym == pseudonym(keys.pseudonym_secret(), "nhs:9992048719")
    assert record.state.value == "OVERRIDDEN"
    assert record.justification is not None and record.justification.value == "SIGNIFICANT_HARM"
    assert record.agency_id == "portsmouth-csc" and record.source_ref == "MASH/2026/1187"
    assert b"9992048719" not in records[0].value + (records[0].key or b"")
    assert record.consent_record_id in result.stdout

    for bad, message in (
        (["--subject", "nhs:123", "--state", "WITHDRAWN"], "NHS number is 10 digits"),
        (["--subject", "nhs:9992048719", "--state", "NOT_SOUGHT"], "NOT_SOUGHT needs a reason"),
        (
            ["--subject", "nhs:9992048719", "--state", "GIVEN", "--justification", "LEGAL_DUTY"],
            "only OVERRIDDEN carries a justification",
        ),
    ):
        refused = _safer("consent", "record", *bad, "--by", "PC 1", env=env, cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout
        assert message in " ".join(refused.stderr.split())
        assert "Traceback" not in refused.stderr
