"""`safer audit verify|checkpoint|prove|verify-bundle`: prove the audit log is intact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from audit import (
    AuditStore,
    LogKey,
    StoreTamperedError,
    verify_bundle,
    verify_store,
)
from schemas import AuditError, ConfigError, LogTamperedError, ReasonCode

from ._cli_audit_reports import register_reports
from ._cli_audit_risk import register_risk
from ._cli_common import FORMATTER, err, out, settings_from
from ._cli_witness import (
    consistency_bundle_json,
    register_witness,
    report_failed_bundle,
    verify_consistency_cli,
)
from ._runtime import Runtime

__all__ = ["register"]

_KEY_HELP = (
    "the log's public key: a PEM file (<data-dir>/keys/safer-audit-log/signing.pub), "
    "a file holding the one-line verifier key, or that line itself"
)


def _read_key(value: str) -> LogKey:
    """A ``--key`` argument: a PEM or verifier-key file, or a verifier key itself."""
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else value
    except OSError as exc:
        raise ConfigError(
            f"cannot read the key file {path}: {exc.strerror}",
            code=ReasonCode.CONFIG_INVALID,
            hint=f"--key takes {_KEY_HELP}",
        ) from None
    if "+" not in text and "-----BEGIN" not in text:
        raise ConfigError(
            f"--key {value!r} is neither a key file nor a verifier key",
            code=ReasonCode.CONFIG_INVALID,
            hint=f"--key takes {_KEY_HELP}",
        )
    return LogKey.parse(text)


def _data_dir_key(args: argparse.Namespace) -> LogKey | None:
    """The log key of the data directory, if it has one."""
    try:
        return _signing_runtime(args).log_key()
    except ConfigError:
        return None


def _signing_runtime(args: argparse.Namespace) -> Runtime:
    return Runtime(settings_from(args), bootstrap="")


# -- verify -------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = settings.audit_db
    key = _read_key(args.key) if args.key else _data_dir_key(args)
    anchors = [Path(p).read_text(encoding="utf-8") for p in args.checkpoint]
    try:
        summary = verify_store(path, key=key, anchors=anchors, index=not args.no_index)
    except StoreTamperedError as exc:
        if args.json:
            print(json.dumps(exc.summary.to_json(exc.problems)))
        else:
            err.print(f"[red]audit log FAILED verification[/] ({path}):")
            for problem in exc.problems:
                err.print(f"  - {problem}")
            err.print(exc.hint)
        return 1
    except LogTamperedError as exc:  # pragma: no cover - verify_store raises the subclass
        err.print(f"[red]audit log FAILED verification[/]: {exc.message}")
        return 1
    if args.json:
        print(json.dumps(summary.to_json()))
        return 0
    out.print(
        f"[green]audit log verified[/]: {summary.entries} entries, root {summary.root}; "
        f"{summary.checkpoints_verified} of {summary.checkpoints} checkpoints signed and "
        "matching",
        soft_wrap=True,
    )
    if key is None:
        err.print(
            "[yellow]note[/]: no log key found, so checkpoint signatures were not checked; "
            f"pass --key ({_KEY_HELP})"
        )
    elif not summary.checkpoint_verified:
        err.print(
            "[yellow]note[/]: the newest checkpoint is not signed by the log key; "
            "write one with `safer audit checkpoint`"
        )
    return 0


# -- checkpoint ---------------------------------------------------------------


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    runtime = _signing_runtime(args)
    signer = runtime.log_signer()
    with AuditStore(runtime.settings.audit_db, signer=signer) as store:
        checkpoint = store.checkpoint()
    sys.stdout.write(checkpoint.note)
    err.print(f"checkpoint {checkpoint.id} written: size {checkpoint.size}, signed.")
    err.print(f"log key (give it to auditors): {signer.key.vkey()}", soft_wrap=True)
    return 0


# -- prove / verify-bundle -----------------------------------------------------


def cmd_audit_prove(args: argparse.Namespace) -> int:
    runtime = _signing_runtime(args)
    try:
        signer = runtime.log_signer()
    except ConfigError:
        signer = None  # a stored signed checkpoint may still cover the entry
    if args.consistency is not None:
        with AuditStore(runtime.settings.audit_db, signer=signer) as store:
            text = consistency_bundle_json(store, args.consistency)
        print(text)
        err.print(
            f"consistency proof from size {args.consistency} to the newest signed checkpoint; "
            "check it with `safer audit verify-bundle FILE --key PUB`, or give it to a witness"
        )
        return 0
    if args.seq is None:
        err.print("give an entry's SEQ, or --consistency FROM_SIZE (see --help)")
        return 2
    with AuditStore(runtime.settings.audit_db, signer=signer) as store:
        bundle = store.proof_bundle(args.seq)
    print(json.dumps(bundle, indent=2, ensure_ascii=False))
    err.print(
        f"proof of entry {args.seq} against a signed checkpoint of size {bundle['tree_size']}; "
        "check it with `safer audit verify-bundle FILE --key PUB`"
    )
    return 0


def _describe(record: Any) -> str:
    parts = [record.event.value]
    for name in ("disclosure_id", "recipient", "lawful_basis"):
        value = getattr(record, name)
        if value:
            parts.append(f"{name.replace('_', ' ')} {value}")
    return ", ".join(parts)


def cmd_audit_verify_bundle(args: argparse.Namespace) -> int:
    key = _read_key(args.key)
    source = args.bundle
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the bundle {source}: {exc.strerror}",
            code=ReasonCode.CONFIG_INVALID,
            hint="pass the file `safer audit prove SEQ > bundle.json` wrote, or - for stdin",
        ) from None
    if b'"safer-exchange/audit-consistency/' in data[:4096]:
        return verify_consistency_cli(data, key, args)
    try:
        summary = verify_bundle(data, key)
    except AuditError as exc:
        if exc.code != ReasonCode.AUDIT_TAMPERED:
            raise
        return report_failed_bundle("bundle", exc, as_json=args.json)
    if args.json:
        print(
            json.dumps(
                {
                    "verified": True,
                    "seq": summary.seq,
                    "origin": summary.origin,
                    "tree_size": summary.tree_size,
                    "root": summary.root.hex(),
                    "key": summary.key_name,
                    "entry": json.loads(summary.record.canonical_bytes()),
                }
            )
        )
        return 0
    out.print(
        f"[green]bundle verified[/]: entry {summary.seq} ({_describe(summary.record)}, "
        f"at {summary.record.at.isoformat()}) is in log {summary.origin} of "
        f"{summary.tree_size} entries, root {summary.root.hex()}, checkpoint signed by "
        f"{summary.key_name}",
        soft_wrap=True,
    )
    return 0


# -- parser -------------------------------------------------------------------


def register(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="check, prove and query the audit log",
        formatter_class=FORMATTER,
        description="Audit log commands. The log is an append-only RFC 9162 Merkle log:\n"
        "every disclosure, withheld decision, referral, quarantine and receipt is an\n"
        "entry, and signed checkpoints commit to its size and root, so no entry can\n"
        "change, vanish or move without detection. The entries are JSON Lines in\n"
        "<data-dir>/audit.db-segments/; <data-dir>/audit.db holds where they are,\n"
        "their hashes, the checkpoints and the query index. Copy both for an auditor.\n\n"
        "example:\n  safer audit verify\n  safer audit checkpoint > checkpoint.txt\n"
        "  safer audit prove 42 > bundle.json\n"
        "  safer audit verify-bundle bundle.json --key .safer/keys/safer-audit-log/signing.pub",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="recompute the Merkle tree and report tampering",
        formatter_class=FORMATTER,
        description="Recompute every entry's leaf hash and the tree from the store file,\n"
        "read-only, check every checkpoint's signature and root, and report modified,\n"
        "deleted, reordered or truncated entries, forged checkpoints and checkpoints\n"
        "that contradict each other, naming the first bad sequence number.\n"
        "Exit code 1 on problems. The log key is read from the data directory\n"
        "unless --key is given.\n\n"
        "example:\n  safer audit verify\n  safer --data-dir .safer/demo audit verify --json\n"
        "  safer audit verify --key log.vkey --checkpoint checkpoint-kept-by-dpo.txt",
    )
    verify.add_argument(
        "--json",
        action="store_true",
        help='print {"entries","root","checkpoint_verified","consistent","problems"}',
    )
    verify.add_argument("--key", help=_KEY_HELP)
    verify.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="a signed checkpoint kept outside the store (repeatable); the log must "
        "still match it, which also catches truncation",
    )
    verify.add_argument(
        "--no-index",
        action="store_true",
        help="check the log alone (entries, order, tree, checkpoints), not the query "
        "columns and index: several times faster on a large log",
    )
    verify.set_defaults(func=cmd_audit_verify)

    checkpoint = audit_sub.add_parser(
        "checkpoint",
        help="sign and store a checkpoint of the log's size and root",
        formatter_class=FORMATTER,
        description="Write a checkpoint (the log's size and RFC 9162 root) signed with the\n"
        "log key as a C2SP signed note, keep it in the store, and print it. `safer up`\n"
        "also writes one every minute while the log grows. Keep a printed checkpoint\n"
        "somewhere the operator cannot edit (a ticket, an email to the DPO): later,\n"
        "`safer audit verify --checkpoint FILE` proves the log still extends it.\n\n"
        "example:\n  safer audit checkpoint > checkpoint-2025-03-04.txt",
    )
    checkpoint.set_defaults(func=cmd_audit_checkpoint)

    prove = audit_sub.add_parser(
        "prove",
        help="export one entry with its inclusion proof and a signed checkpoint",
        formatter_class=FORMATTER,
        description="Print a proof bundle (JSON) for entry SEQ: the entry's exact bytes, its\n"
        "RFC 9162 inclusion proof and a signed checkpoint. Anyone holding the log's\n"
        "public key can check it offline with `safer audit verify-bundle`, without\n"
        "the store. Entries hold pseudonyms and ids only, never personal data.\n\n"
        "With --consistency FROM_SIZE it prints a consistency bundle instead: the root\n"
        "of the first FROM_SIZE entries (and their signed checkpoint, if kept), the\n"
        "RFC 9162 consistency proof and the newest signed checkpoint. It proves the log\n"
        "only grew since FROM_SIZE; verify-bundle checks it offline, and a witness\n"
        "(`safer audit witness cosign`) cosigns it.\n\n"
        "example:\n  safer audit prove 42 > bundle.json\n"
        "  safer audit prove --consistency 1200 > consistency.json",
    )
    prove.add_argument(
        "seq", type=int, nargs="?", metavar="SEQ", help="sequence number of the entry"
    )
    prove.add_argument(
        "--consistency",
        type=int,
        metavar="FROM_SIZE",
        default=None,
        help="export a consistency bundle from this log size instead",
    )
    prove.set_defaults(func=cmd_audit_prove)

    verify_bundle_cmd = audit_sub.add_parser(
        "verify-bundle",
        help="check a proof bundle offline with the log's public key",
        formatter_class=FORMATTER,
        description="Verify a bundle from `safer audit prove`: the checkpoint's signature by\n"
        "the log key, the entry's leaf hash and its inclusion proof against the signed\n"
        "root. Needs no store and no data directory. Exit code 1 if it does not hold.\n"
        "A consistency bundle (`prove --consistency`) is checked too: both checkpoints'\n"
        "signatures and the consistency proof. Witnessed: with --witness VKEY (once per\n"
        "trusted witness) and --cosigned FILE (each witness's cosigned checkpoint), it\n"
        "counts valid C2SP cosignatures and needs --quorum K of them (default 1), else\n"
        "exit 1.\n\n"
        "example:\n  safer audit verify-bundle bundle.json --key signing.pub\n"
        "  safer audit verify-bundle bundle.json --key 'safer-exchange.hips/audit/v1+…'\n"
        "  safer audit verify-bundle consistency.json --key log.vkey \\\n"
        "      --witness w1.vkey --witness w2.vkey --witness w3.vkey --quorum 2 \\\n"
        "      --cosigned w1.note --cosigned w2.note\n"
        "  safer audit verify-bundle consistency.json --key log.vkey "
        "--witnesses deploy/witnesses.toml --cosigned w1.note",
    )
    verify_bundle_cmd.add_argument(
        "--witness", action="append", metavar="VKEY", help="a trusted witness's verifier key"
    )
    verify_bundle_cmd.add_argument(
        "--cosigned", action="append", metavar="FILE", help="a witness's cosigned checkpoint"
    )
    verify_bundle_cmd.add_argument(
        "--quorum", type=int, default=None, metavar="K", help="cosignatures required (k of n)"
    )
    verify_bundle_cmd.add_argument(
        "--witnesses",
        metavar="FILE",
        default=None,
        help="TOML: quorum = K and [[witness]] vkey = ... (adds to --witness)",
    )
    verify_bundle_cmd.add_argument("bundle", metavar="BUNDLE", help="bundle file, or - for stdin")
    verify_bundle_cmd.add_argument("--key", required=True, help=_KEY_HELP)
    verify_bundle_cmd.add_argument("--json", action="store_true", help="print one JSON object")
    verify_bundle_cmd.set_defaults(func=cmd_audit_verify_bundle)
    register_witness(audit_sub)
    register_reports(audit_sub)
    register_risk(audit_sub)
