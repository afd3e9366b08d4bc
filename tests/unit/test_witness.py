"""The witnessed log (issue 15.3): consistency bundles, C2SP cosignatures, the witness.

* `prove --consistency` bundles verify offline with the log key alone; an altered proof,
  root or checkpoint fails.
* Cosignatures follow C2SP tlog-cosignature/v1 byte for byte (key id type 0x04, u64
  timestamp, the signed message), and k of n are counted.
* The witness cosigns only a checkpoint shown to extend the one it kept, and refuses a
  FORK (same size, another root), a ROLLBACK (fewer entries), a TRUNCATED log (cut back
  and regrown with other entries) and an INCONSISTENT proof; the state survives a restart
  (a new process reads it from the state directory) and a refusal leaves it unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import (
    AuditStore,
    Cosigner,
    LogSigner,
    WitnessRefusal,
    count_cosignatures,
    verify_consistency_bundle,
    witness_step,
)
from safer import Runtime
from safer.cli import main
from schemas import AuditError

from .test_audit_store import make_record, signer

T = 1_790_000_000


def _store(path: Path, key: LogSigner, records: list[int]) -> AuditStore:
    store = AuditStore(path, signer=key)
    store.append([make_record(i) for i in records])
    store.checkpoint()
    return store


def _witness(name: str = "witness.example/w1") -> Cosigner:
    return Cosigner(name, Ed25519PrivateKey.generate())


def test_a_consistency_bundle_verifies_offline_and_catches_alteration(tmp_path: Path) -> None:
    key = signer()
    with _store(tmp_path / "a.db", key, list(range(1, 8))) as store:
        store.append([make_record(i) for i in range(8, 21)])
        bundle = store.consistency_bundle(7)
    summary = verify_consistency_bundle(json.dumps(bundle), key.key)
    assert (summary.old_size, summary.new.size, summary.old_signed) == (7, 20, True)
    for field, change in (
        ("old_root", base64.b64encode(b"\x00" * 32).decode()),
        ("consistency_proof", bundle["consistency_proof"][:-1]),
        ("new_size", 21),
        ("checkpoint", bundle["checkpoint"].replace("\n20\n", "\n21\n")),
    ):
        with pytest.raises(AuditError, match="does not verify"):
            verify_consistency_bundle(json.dumps({**bundle, field: change}), key.key)
    other = signer()
    with pytest.raises(AuditError, match="not signed by the log key"):
        verify_consistency_bundle(json.dumps(bundle), other.key)


def test_cosignatures_are_c2sp_tlog_cosignature_v1(tmp_path: Path) -> None:
    key = signer()
    with _store(tmp_path / "a.db", key, [1, 2, 3]) as store:
        note = store.latest_checkpoint(signed=True).note  # type: ignore[union-attr]
    witness = _witness()
    cosigned = witness.cosign(note, T)
    assert cosigned.startswith(note)
    line = cosigned[len(note) :]
    assert line.startswith("\u2014 witness.example/w1 ") and line.endswith("\n")
    blob = base64.b64decode(line.rsplit(" ", 1)[1])
    raw = witness.key.public_key.public_bytes_raw()
    assert blob[:4] == hashlib.sha256(b"witness.example/w1\n\x04" + raw).digest()[:4]
    assert struct.unpack(">Q", blob[4:12]) == (T,)
    body = note[: note.index("\n\n") + 1]
    witness.key.public_key.verify(blob[12:], f"cosignature/v1\ntime {T}\n{body}".encode())
    assert witness.key.verify(cosigned) == T
    vkey = witness.key.vkey()
    assert vkey.split("+", 2)[2] == base64.b64encode(b"\x04" + raw).decode()
    # k of n: three trusted witnesses, two cosign.
    second, third = _witness("w2.example/w"), _witness("w3.example/w")
    both = second.cosign(cosigned, T)
    names = count_cosignatures(both, [witness.key, second.key, third.key])
    assert names == ["witness.example/w1", "w2.example/w"]
    forged = both.replace(line.rsplit(" ", 1)[1][:10], "A" * 10)
    assert count_cosignatures(forged, [witness.key]) == []


def _step(state, bundle, key, witness):  # type: ignore[no-untyped-def]
    return witness_step(state, json.dumps(bundle), key.key, witness, T)


def test_the_witness_cosigns_growth_and_refuses_fork_rollback_and_truncation(
    tmp_path: Path,
) -> None:
    key, witness = signer(), _witness()
    honest = _store(tmp_path / "honest.db", key, list(range(1, 11)))
    state, _ = _step(None, honest.consistency_bundle(0), key, witness)  # trust on first use
    assert state.size == 10
    honest.append([make_record(i) for i in range(11, 16)])
    state, cosigned = _step(state, honest.consistency_bundle(10), key, witness)
    assert state.size == 15 and witness.key.verify(cosigned) == T

    # FORK: the same 15 entries' place taken by another history, same size.
    fork = _store(tmp_path / "fork.db", key, [*range(1, 11), *range(111, 116)])
    with pytest.raises(WitnessRefusal) as refused:
        _step(state, fork.consistency_bundle(15), key, witness)
    assert refused.value.kind == "FORK"

    # ROLLBACK: a copy of the log with only its first 12 entries.
    rollback = _store(tmp_path / "rollback.db", key, list(range(1, 13)))
    with pytest.raises(WitnessRefusal) as refused:
        _step(state, rollback.consistency_bundle(12), key, witness)
    assert refused.value.kind == "ROLLBACK"

    # TRUNCATED: cut back to 12 entries, then grown to 20 with other entries.
    rewritten = _store(tmp_path / "rewritten.db", key, [*range(1, 13), *range(213, 221)])
    with pytest.raises(WitnessRefusal) as refused:
        _step(state, rewritten.consistency_bundle(15), key, witness)
    assert refused.value.kind == "TRUNCATED"

    # INCONSISTENT: the right old root, a proof that does not hold.
    honest.append([make_record(i) for i in range(16, 30)])
    bundle = honest.consistency_bundle(15)
    bad = {**bundle, "consistency_proof": bundle["consistency_proof"][1:]}
    with pytest.raises(WitnessRefusal) as refused:
        _step(state, bad, key, witness)
    assert refused.value.kind == "INCONSISTENT"

    # STALE is not tampering: the bundle starts from another size.
    with pytest.raises(WitnessRefusal) as refused:
        _step(state, honest.consistency_bundle(10), key, witness)
    assert refused.value.kind == "STALE"
    # After every refusal, the honest log still goes on being cosigned.
    state, _ = _step(state, bundle, key, witness)
    assert state.size == 29
    for store in (honest, fork, rollback, rewritten):
        store.close()


@pytest.mark.usefixtures("keep_logging")
def test_the_cli_witness_keeps_state_across_runs_and_refuses_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = signer()
    honest = _store(tmp_path / "log.db", key, list(range(1, 9)))
    vkey = tmp_path / "log.vkey"
    vkey.write_text(key.key.vkey())
    state_dir = tmp_path / "witness"

    def bundle(store: AuditStore, size: int, name: str) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(store.consistency_bundle(size)))
        return path

    assert (
        main(["audit", "witness", "init", "--state", str(state_dir), "--name", "w.example/1"]) == 0
    )
    witness_vkey = capsys.readouterr().out.strip()
    cosign = ["audit", "witness", "cosign", "--state", str(state_dir), "--log-key", str(vkey)]
    assert main([*cosign, str(bundle(honest, 0, "b0.json"))]) == 0
    capsys.readouterr()
    honest.append([make_record(i) for i in range(9, 14)])
    first = bundle(honest, 8, "b8.json")
    note = tmp_path / "cosigned.note"
    assert main([*cosign, str(first), "--out", str(note)]) == 0  # a new run: state from disk
    capsys.readouterr()
    # verify-bundle: witnessed 1 of 1 with the cosigned note; not witnessed without it.
    verify = ["audit", "verify-bundle", str(first), "--key", str(vkey), "--json"]
    assert main([*verify, "--witness", witness_vkey, "--cosigned", str(note)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["witnessed"] and answer["cosigned_by"] == ["w.example/1"]
    assert main([*verify, "--witness", witness_vkey]) == 1
    assert json.loads(capsys.readouterr().out)["witnessed"] is False
    # The same from a witness list file (deploy/witnesses.toml's form), k of n = 1 of 2.
    other = _witness("w.example/2").key.vkey()
    listing = tmp_path / "witnesses.toml"
    listing.write_text(
        f'quorum = 1\n[[witness]]\nvkey = "{witness_vkey}"\n[[witness]]\nvkey = "{other}"\n'
    )
    assert main([*verify, "--witnesses", str(listing), "--cosigned", str(note)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["quorum"], answer["cosigned_by"]) == (1, ["w.example/1"])
    assert (
        main([*verify, "--witnesses", str(listing), "--quorum", "2", "--cosigned", str(note)]) == 1
    )
    assert json.loads(capsys.readouterr().out)["witnessed"] is False
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "witnesses.toml"
    assert main([*verify, "--witnesses", str(shipped)]) == 2  # no witness configured yet
    assert "more than the 0 witnesses" in capsys.readouterr().err.replace("\n", " ")

    rollback = _store(tmp_path / "rollback.db", key, list(range(1, 10)))
    assert main([*cosign, str(bundle(rollback, 9, "rb.json"))]) == 3
    text = capsys.readouterr().err
    assert "WITNESS REFUSES TO COSIGN" in text and "ROLLBACK" in text
    assert main(["audit", "witness", "status", "--state", str(state_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == 13  # the refusal changed nothing
    history = (state_dir / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["refused"] == "ROLLBACK"
    honest.close()
    rollback.close()


@pytest.mark.usefixtures("keep_logging")
def test_prove_consistency_from_the_data_directory(
    runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with runtime.audit_store() as store:
        store.append([make_record(i) for i in range(1, 6)])
        store.checkpoint()
        store.append([make_record(i) for i in range(6, 9)])
    base = [
        "--data-dir",
        str(runtime.settings.data_dir),
        "--deploy-dir",
        str(runtime.settings.deploy_dir),
    ]
    assert main([*base, "audit", "prove", "--consistency", "5"]) == 0
    path = tmp_path / "c.json"
    path.write_text(capsys.readouterr().out)
    key = runtime.settings.keys_dir / "safer-audit-log" / "signing.pub"
    assert main(["audit", "verify-bundle", str(path), "--key", str(key), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["old_size"], answer["new_size"], answer["verified"]) == (5, 8, True)
    assert answer["old_checkpoint_signed"] is True
    assert main([*base, "audit", "prove", "--consistency", "99"]) == 2
    assert "99" in capsys.readouterr().err.replace("\n", " ")
