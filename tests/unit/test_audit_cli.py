"""`safer audit verify|checkpoint|prove|verify-bundle` on real files, in-process."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from audit import AuditRecord, open_checkpoint
from safer import Runtime
from safer import _logging as safer_logging
from safer.cli import main

from .audit_files import attack, rewrite_entries, stored_entries
from .test_audit_store import make_record

REPO = Path(__file__).resolve().parents[2]


def _safer(runtime: Runtime, *args: str) -> int:
    return main(
        [
            "--data-dir",
            str(runtime.settings.data_dir),
            "--deploy-dir",
            str(REPO / "deploy"),
            "audit",
            *args,
        ]
    )


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``main`` configures logging for a process; give the next test the set-up it had.

    ``configure_logging`` closes the file it logged to before; hide that file
    from it, so a log file another test set up stays open for the rest of the run.
    """
    monkeypatch.setattr(safer_logging, "_handle", None)
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def logged(runtime: Runtime) -> Runtime:
    with runtime.audit_store() as store:
        store.append([make_record(i) for i in range(1, 13)])
        store.checkpoint()
    return runtime


def test_verify_json_on_a_clean_log(logged: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert _safer(logged, "verify", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    with logged.audit_store() as store:
        root = store.root().hex()
    assert result == {
        "entries": 12,
        "root": root,
        "checkpoint_verified": True,
        "consistent": True,
        "problems": [],
    }


def test_verify_json_names_the_first_bad_entry(
    logged: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    db = logged.settings.audit_db
    entries = stored_entries(db)
    entries[7] = entries[7].replace(b"safeguarding", b"marketing")
    rewrite_entries(db, entries)
    assert _safer(logged, "verify", "--json") == 1
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"entries", "root", "checkpoint_verified", "consistent", "problems"}
    assert result["entries"] == 12
    assert result["checkpoint_verified"] is False and result["consistent"] is False
    assert result["problems"][0] == "entry 7 modified: it does not match its stored leaf hash"
    assert _safer(logged, "verify") == 1
    assert "entry 7 modified" in capsys.readouterr().err


def test_checkpoint_prints_a_note_the_log_key_opens(
    logged: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _safer(logged, "checkpoint") == 0
    captured = capsys.readouterr()
    body = open_checkpoint(captured.out, logged.log_key())
    assert body.size == 12
    assert logged.log_key().vkey() in captured.err


def test_prove_then_verify_bundle_offline(
    logged: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _safer(logged, "prove", "5") == 0
    bundle = tmp_path / "bundle.json"
    bundle.write_text(capsys.readouterr().out)
    pem = logged.settings.keys_dir / "safer-audit-log" / "signing.pub"
    elsewhere = Runtime(logged.settings.model_copy(update={"data_dir": tmp_path / "empty"}), "")
    assert _safer(elsewhere, "verify-bundle", str(bundle), "--key", str(pem)) == 0
    assert "bundle verified: entry 5 (DISCLOSED" in capsys.readouterr().out
    vkey = logged.log_key().vkey()
    assert _safer(elsewhere, "verify-bundle", str(bundle), "--key", vkey, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verified"] is True and result["seq"] == 5 and result["tree_size"] == 12
    assert (
        AuditRecord.from_canonical(
            json.dumps(
                result["entry"], separators=(",", ":"), sort_keys=True, ensure_ascii=False
            ).encode()
        ).seq
        == 5
    )
    assert not (tmp_path / "empty").exists()  # needs no store, no data directory

    data = json.loads(bundle.read_text())
    data["entry"] = data["entry"].replace("safeguarding", "marketing")
    del data["leaf_hash"]
    bundle.write_text(json.dumps(data))
    assert _safer(elsewhere, "verify-bundle", str(bundle), "--key", vkey) == 1
    assert "bundle FAILED verification" in capsys.readouterr().err


def test_verify_with_a_kept_checkpoint_catches_a_quiet_truncation(
    logged: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _safer(logged, "checkpoint") == 0
    kept = tmp_path / "kept.txt"
    kept.write_text(capsys.readouterr().out)
    db = logged.settings.audit_db
    entries = stored_entries(db)
    rewrite_entries(db, {seq: entry for seq, entry in entries.items() if seq <= 10})
    attack(db, ("DELETE FROM checkpoints", ()))
    assert _safer(logged, "verify", "--json", "--checkpoint", str(kept)) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert problems[0] == (
        "log truncated: the tree holds leaf hashes up to entry 12 but the log ends at entry 10 "
        "(entry 11 onward missing)"
    )
    assert (
        "log truncated: kept checkpoint 1 is at size 12 but the log has only 10 entries "
        "(entry 11 onward missing)" in problems
    )


def test_verify_bundle_explains_a_bad_key_argument(
    logged: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _safer(logged, "verify-bundle", "missing.json", "--key", "nonsense") == 2
    assert "neither a key file nor a verifier key" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["verify", "checkpoint", "prove", "verify-bundle"])
def test_every_audit_action_has_help_with_an_example(
    action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["audit", action, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: safer audit {action}" in text and "example:" in text
