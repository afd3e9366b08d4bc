"""The witnessed log from the command line (issue 15.3).

* `safer audit prove --consistency FROM_SIZE`: a consistency bundle (``audit._witness``);
* `safer audit verify-bundle` checks it offline, and counts witness cosignatures
  (``--witness VKEY``, ``--cosigned FILE``, ``--quorum K``: witnessed when k of n);
* `safer audit witness init|cosign|status`: the witness, run by another party with its
  own key and state directory. It keeps the last checkpoint it cosigned and refuses,
  loudly and with exit code 3, a rollback, a fork, a truncation or an inconsistent proof.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import (
    CONSISTENCY_FORMAT,
    AuditStore,
    Cosigner,
    CosignerKey,
    LogKey,
    WitnessRefusal,
    WitnessState,
    add_cosignatures,
    count_cosignatures,
    verify_consistency_bundle,
    witness_step,
)
from schemas import AuditError, ConfigError, ReasonCode

from ._cli_common import FORMATTER, err, out

__all__ = [
    "consistency_bundle_json",
    "register_witness",
    "verify_consistency_cli",
    "witness_quorum",
]

_KEY_FILE = "witness.key"
_NAME_FILE = "witness.name"
_STATE_FILE = "state.json"
_HISTORY = "history.jsonl"
#: Exit code of a refusal: distinct from 1 (a bad bundle) so a supervisor can alert on it.
REFUSED = 3


def consistency_bundle_json(store: AuditStore, old_size: int) -> str:
    return json.dumps(store.consistency_bundle(old_size), indent=2, ensure_ascii=False)


def witness_quorum(
    note: str, witnesses: list[str], cosigned: list[str], quorum: int | None
) -> tuple[list[str], int, bool]:
    """(witnesses that cosigned, k, witnessed?) for ``note`` and the given cosigned copies."""
    keys = [CosignerKey.from_vkey(_text_or_file(w)) for w in witnesses]
    merged = add_cosignatures(note, *(Path(c).read_text("utf-8") for c in cosigned))
    names = count_cosignatures(merged, keys)
    k = quorum if quorum is not None else (1 if keys else 0)
    if k > len(keys):
        raise ConfigError(
            f"--quorum {k} is more than the {len(keys)} witnesses given",
            code=ReasonCode.CONFIG_INVALID,
            hint="give each trusted witness's key with --witness VKEY",
        )
    return names, k, len(names) >= k


def read_witnesses(path: Path) -> tuple[list[str], int | None]:
    """The trusted witnesses and the quorum from a TOML file (``quorum``, ``[[witness]] vkey``)."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot read the witness list {path} ({type(exc).__name__})",
            code=ReasonCode.CONFIG_INVALID,
            hint='write quorum = K and one [[witness]] table with vkey = "..." per witness',
        ) from None
    entries = data.get("witness", [])
    quorum = data.get("quorum")
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("vkey"), str) for e in entries
    ):
        raise ConfigError(
            f'{path}: every [[witness]] needs vkey = "..."', code=ReasonCode.CONFIG_INVALID
        )
    if quorum is not None and (not isinstance(quorum, int) or quorum < 1):
        raise ConfigError(
            f"{path}: quorum must be a positive integer", code=ReasonCode.CONFIG_INVALID
        )
    return [e["vkey"] for e in entries], quorum


def _text_or_file(value: str) -> str:
    path = Path(value)
    return path.read_text("utf-8").strip() if path.is_file() else value


def report_failed_bundle(kind: str, exc: AuditError, *, as_json: bool) -> int:
    """Say that a bundle did not verify, and why; the exit code (1)."""
    if as_json:
        print(json.dumps({"verified": False, "problem": exc.message}))
    else:
        err.print(f"[red]{kind} FAILED verification[/]: {exc.message}")
        err.print(exc.hint)
    return 1


def verify_consistency_cli(data: bytes, key: LogKey, args: argparse.Namespace) -> int:
    """`safer audit verify-bundle` for a consistency bundle."""
    try:
        summary = verify_consistency_bundle(data, key)
    except AuditError as exc:
        if exc.code != ReasonCode.AUDIT_TAMPERED:
            raise
        return report_failed_bundle("consistency bundle", exc, as_json=args.json)
    witnesses, quorum = list(args.witness or []), args.quorum
    if args.witnesses:
        listed, listed_quorum = read_witnesses(Path(args.witnesses))
        witnesses += listed
        quorum = quorum if quorum is not None else listed_quorum
    names, k, witnessed = witness_quorum(summary.checkpoint, witnesses, args.cosigned or [], quorum)
    answer: dict[str, Any] = {
        "verified": True,
        "format": CONSISTENCY_FORMAT,
        "origin": summary.origin,
        "old_size": summary.old_size,
        "new_size": summary.new.size,
        "new_root": summary.new.root.hex(),
        "old_checkpoint_signed": summary.old_signed,
        "cosigned_by": names,
        "quorum": k,
        "witnessed": witnessed,
    }
    if args.json:
        print(json.dumps(answer))
    else:
        out.print(
            f"[green]consistency verified[/]: log {summary.origin} of {summary.new.size} "
            f"entries extends its first {summary.old_size} (append-only between them)",
            soft_wrap=True,
        )
        if k:
            colour = "green" if witnessed else "red"
            out.print(
                f"[{colour}]witnessed {len(names)} of {k} required[/] "
                f"({', '.join(names) or 'no valid cosignature'})"
            )
    return 0 if witnessed else 1


# -- the witness --------------------------------------------------------------------------


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state)


def _load_cosigner(folder: Path) -> Cosigner:
    try:
        data = (folder / _KEY_FILE).read_bytes()
        name = (folder / _NAME_FILE).read_text("utf-8").strip()
    except OSError:
        raise ConfigError(
            f"no witness key in {folder}",
            code=ReasonCode.KEY_MISSING,
            hint=f"run `safer audit witness init --state {folder} --name NAME` first",
        ) from None
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{folder / _KEY_FILE} is not an Ed25519 key", code=ReasonCode.CONFIG_INVALID
        )
    return Cosigner(name, key)


def _load_state(folder: Path) -> WitnessState | None:
    path = folder / _STATE_FILE
    if not path.exists():
        return None
    return WitnessState.from_json(json.loads(path.read_text("utf-8")))


def _save_state(folder: Path, state: WitnessState) -> None:
    temporary = folder / f".{_STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state.to_json(), indent=2), encoding="utf-8")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, folder / _STATE_FILE)


def _history(folder: Path, entry: dict[str, Any]) -> None:
    with open(folder / _HISTORY, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def cmd_witness_init(args: argparse.Namespace) -> int:
    folder = _state_dir(args)
    if (folder / _KEY_FILE).exists():
        err.print(f"a witness key already exists in {folder}; it was kept")
        print(_load_cosigner(folder).key.vkey())
        return 0
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(folder / _KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    (folder / _NAME_FILE).write_text(args.name + "\n", encoding="utf-8")
    cosigner = Cosigner(args.name, key)
    err.print(
        f"witness {args.name} ready in {folder}; give the operator and the auditors this "
        "verifier key (it is public):"
    )
    print(cosigner.key.vkey())
    return 0


def cmd_witness_cosign(args: argparse.Namespace) -> int:
    folder = _state_dir(args)
    cosigner = _load_cosigner(folder)
    log_key = LogKey.parse(_text_or_file(args.log_key))
    data = sys.stdin.buffer.read() if args.bundle == "-" else Path(args.bundle).read_bytes()
    state = _load_state(folder)
    now = int(args.time if args.time is not None else time.time())
    try:
        new_state, cosigned = witness_step(state, data, log_key, cosigner, now)
    except WitnessRefusal as refusal:
        _history(folder, {"at": now, "refused": refusal.kind, "detail": refusal.message})
        banner = "WITNESS REFUSES TO COSIGN" if refusal.kind != "STALE" else "not cosigned"
        err.print(f"[bold red]{banner}[/]: {refusal.message}")
        err.print(refusal.hint)
        return REFUSED if refusal.kind != "STALE" else 2
    except AuditError as exc:
        _history(folder, {"at": now, "refused": "BAD_BUNDLE", "detail": exc.message})
        err.print(f"[bold red]WITNESS REFUSES TO COSIGN[/]: {exc.message}")
        return REFUSED
    _save_state(folder, new_state)
    _history(folder, {"at": now, "cosigned": new_state.size, "root": new_state.root.hex()})
    if args.out:
        Path(args.out).write_text(cosigned, encoding="utf-8")
    else:
        sys.stdout.write(cosigned)
    first = " (first checkpoint seen: trusted on first use)" if state is None else ""
    err.print(
        f"[green]cosigned[/] size {new_state.size} of {new_state.origin} as {cosigner.name}"
        f"{first}; next time ask for `safer audit prove --consistency {new_state.size}`"
    )
    return 0


def cmd_witness_status(args: argparse.Namespace) -> int:
    folder = _state_dir(args)
    cosigner = _load_cosigner(folder)
    state = _load_state(folder)
    answer = {
        "witness": cosigner.name,
        "vkey": cosigner.key.vkey(),
        "origin": state.origin if state else None,
        "size": state.size if state else None,
        "root": state.root.hex() if state else None,
    }
    if args.json:
        print(json.dumps(answer))
    elif state is None:
        out.print(f"witness {cosigner.name}: no checkpoint cosigned yet")
    else:
        out.print(
            f"witness {cosigner.name}: last cosigned {state.size} entries of {state.origin}, "
            f"root {state.root.hex()}; the operator runs "
            f"`safer audit prove --consistency {state.size}` for the next bundle"
        )
    return 0


def register_witness(audit_sub: Any) -> None:
    witness = audit_sub.add_parser(
        "witness",
        help="an independent witness: check consistency and cosign checkpoints",
        formatter_class=FORMATTER,
        description="Run by another party (a partner's DPO, an inspectorate), with its own key\n"
        "and state directory, never on the operator's machine. The witness keeps the\n"
        "last checkpoint it cosigned. Given a consistency bundle from the operator\n"
        "(`safer audit prove --consistency SIZE`), it checks the log's signature and\n"
        "that the new checkpoint extends the kept one, then cosigns it (C2SP\n"
        "tlog-cosignature/v1) and keeps it. It refuses loudly (exit 3) a ROLLBACK\n"
        "(fewer entries than it cosigned), a FORK (same size, another root), a\n"
        "TRUNCATED log (its first entries rewritten) or an INCONSISTENT proof.\n\n"
        "examples:\n"
        "  safer audit witness init --state /srv/witness --name witness.hipsdpo.example/w1\n"
        "  safer audit prove --consistency 1200 > c.json      (the operator)\n"
        "  safer audit witness cosign --state /srv/witness --log-key log.vkey c.json "
        "> cosigned.note\n"
        "  safer audit witness status --state /srv/witness",
    )
    actions = witness.add_subparsers(dest="witness_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="create the witness's key and print its verifier key",
        formatter_class=FORMATTER,
        description="Create an Ed25519 witness key (mode 0600) in the state directory and\n"
        "print its verifier key (name+keyid+base64, type 0x04), which auditors pass to\n"
        "`safer audit verify-bundle --witness`.\n\n"
        "example:\n  safer audit witness init --state /srv/witness --name witness.example/w1",
    )
    init.add_argument("--state", required=True, help="the witness's own directory")
    init.add_argument("--name", required=True, help="the witness's name (a schema-less URL)")
    init.set_defaults(func=cmd_witness_init)
    cosign = actions.add_parser(
        "cosign",
        help="check a consistency bundle against the kept checkpoint and cosign it",
        formatter_class=FORMATTER,
        description="Check BUNDLE (from `safer audit prove --consistency SIZE`, SIZE being the\n"
        "size this witness kept) and print the checkpoint with this witness's\n"
        "cosignature added. The first bundle ever is trusted on first use. Exit 0\n"
        "cosigned; 2 the bundle starts from another size (ask for the right one); 3\n"
        "refused: rollback, fork, truncation, inconsistency or a bad signature. Every\n"
        "outcome is appended to history.jsonl in the state directory.\n\n"
        "example:\n  safer audit witness cosign --state /srv/witness --log-key log.vkey c.json",
    )
    cosign.add_argument("bundle", metavar="BUNDLE", help="consistency bundle file, or -")
    cosign.add_argument("--state", required=True, help="the witness's own directory")
    cosign.add_argument(
        "--log-key", required=True, help="the log's verifier key (or a file holding it)"
    )
    cosign.add_argument("--out", default=None, help="write the cosigned note here")
    cosign.add_argument("--time", type=int, default=None, help=argparse.SUPPRESS)
    cosign.set_defaults(func=cmd_witness_cosign)
    status = actions.add_parser(
        "status",
        help="show the checkpoint this witness kept",
        formatter_class=FORMATTER,
        description="Show the witness's name, verifier key and the last checkpoint it\n"
        "cosigned, and the command the operator runs for the next bundle.\n\n"
        "example:\n  safer audit witness status --state /srv/witness --json",
    )
    status.add_argument("--state", required=True, help="the witness's own directory")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_witness_status)
