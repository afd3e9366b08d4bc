"""The audit log against pymerkle's in-memory tree, measured in one run, as ratios.

Same machine, same run, same canonical entries (realistic audit records of
about 860 bytes, built outside the timed sections):

* **appends**: durable appends per second. Ours: ``AuditStore.append`` in
  batches of ``--batch`` (canonical encoding, RFC 9162 leaf hash, dedup on
  ``entry_id``, the entries written to a segment file and fdatasync'd, then
  one SQLite WAL transaction with ``synchronous=FULL`` (one more fsync) for
  the batch's rows; each call returns only when its batch is durable).
  pymerkle: ``InmemoryTree.append_entry`` of the same entries, encoded the
  same way, in memory (nothing reaches a disk).
* **proofs**: inclusion proofs generated and verified per second, for random
  leaves of the ``--entries`` tree. Ours: ``AuditStore.inclusion_proof`` (over
  the tree built from the stored leaf hashes) and ``verify_inclusion``.
  pymerkle: ``prove_inclusion`` and ``verify_inclusion``.
* **verify**: time to verify the ``--entries`` log from scratch. Ours:
  ``verify_store`` on the files, read-only: every leaf recomputed from the
  entry bytes in the segment files, the order of entries, the stored hashes, the RFC 9162 root at
  the signed checkpoint and its Ed25519 signature ("log"), and then also the
  plain query columns and the query index ("log + index"). pymerkle:
  rebuilding its tree from the same entries, already in memory, and
  comparing the root with the checkpoint's.

Targets (issue 4): >= 100,000 durable appends/s, >= 50,000 proofs/s and
< 10 s to verify 1,000,000 entries. Tests never assert on these numbers.

Usage: python bench/bench_audit.py [--entries 1000000] [--batch 2000] [--proofs 50000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymerkle import InmemoryTree
from pymerkle import verify_inclusion as pymerkle_verify_inclusion
from rich.console import Console
from rich.table import Table

from audit import (
    DEFAULT_ORIGIN,
    AuditRecord,
    AuditStore,
    LogSigner,
    entry_id_for,
    verify_inclusion,
    verify_store,
)
from schemas import AuditEvent

console = Console(stderr=True)
T0 = datetime(2025, 3, 4, 8, 30, tzinfo=UTC)
_RECIPIENTS = [
    f"{lscp}-{kind}" for lscp in ("hampshire", "portsmouth") for kind in ("csc", "health")
]


def _record(n: int) -> AuditRecord:
    """A decision record shaped like the router's (ids and pseudonyms only)."""
    disclosure_id = hashlib.sha256(b"d%d" % n).hexdigest()[:32]
    return AuditRecord(
        entry_id=entry_id_for(AuditEvent.DISCLOSED, disclosure_id),
        event=AuditEvent.DISCLOSED,
        disclosure_id=disclosure_id,
        decision_id=hashlib.sha256(b"x%d" % n).hexdigest()[:32],
        concern_id=hashlib.sha256(b"c%d" % (n // 6)).hexdigest()[:32],
        subject_pseudonyms=(
            hashlib.sha256(b"s%d" % (n // 6)).hexdigest()[:32],
            hashlib.sha256(b"p%d" % (n // 6)).hexdigest()[:32],
        ),
        source="hampshire-constabulary",
        recipient=_RECIPIENTS[n % len(_RECIPIENTS)],
        lscp="hampshire",
        lawful_basis="DPA18-S35+SCH8-P4",
        purpose="Front-door screening: decide whether the child is in need or at risk",
        consent_state="NOT_SOUGHT",
        reasons=(
            "agreement 'police-csc-front-door' covers police to social-care",
            "risk grade MEDIUM meets the minimum LOW",
            "consent is not needed where a child is at risk",
        ),
        policy_revision="sha256:" + "f3" * 32,
        fields_disclosed=("concern_id", "concern_type", "risk_grade", "subjects", "narrative"),
        payload_sha256=hashlib.sha256(b"%d" % n).hexdigest(),
        deadline=T0 + timedelta(hours=24, milliseconds=1500 * (n // 6)),  # per concern
        at=T0 + timedelta(milliseconds=250 * n),
        actor="safer-router",
    )


def _batches(total: int, size: int) -> Iterator[tuple[int, list[AuditRecord]]]:
    for start in range(0, total, size):
        yield start, [_record(n) for n in range(start + 1, min(total, start + size) + 1)]


def bench_appends(
    path: Path, total: int, batch: int, signer: LogSigner
) -> tuple[float, float, InmemoryTree]:
    """(our durable appends/s, pymerkle appends/s, pymerkle's tree)."""
    ours = 0.0
    with AuditStore(path, signer=signer) as store:
        mode = store._connection().execute("PRAGMA synchronous").fetchone()[0]
        assert mode == 2, "the store must run with synchronous=FULL"
        for start, records in _batches(total, batch):
            began = time.perf_counter()
            store.append(records)
            ours += time.perf_counter() - began
            if (start + len(records)) % 200_000 < batch:
                console.print(f"  ours: {start + len(records):,} appended")
        store.checkpoint()
        assert store.count() == total
    theirs = 0.0
    tree = InmemoryTree()
    for start, records in _batches(total, batch):
        began = time.perf_counter()
        for offset, record in enumerate(records, start + 1):
            tree.append_entry(record.entry_bytes(offset))
        theirs += time.perf_counter() - began
        if (start + len(records)) % 200_000 < batch:
            console.print(f"  pymerkle: {start + len(records):,} appended")
    return total / ours, total / theirs, tree


def bench_proofs(path: Path, tree: InmemoryTree, count: int) -> tuple[float, float, float]:
    """(our proofs/s, pymerkle proofs/s, seconds to build our tree from the store)."""
    rng = random.Random(9162)
    with AuditStore(path) as store:
        size, root = store.head()
        began = time.perf_counter()
        ours_tree = store.tree()
        build = time.perf_counter() - began
        seqs = [rng.randint(1, size) for _ in range(count)]
        leaves = [ours_tree.leaf(seq - 1) for seq in seqs]
        began = time.perf_counter()
        for seq, leaf in zip(seqs, leaves, strict=True):
            proof = store.inclusion_proof(seq, size)
            verify_inclusion(leaf, seq - 1, size, proof, root)
        ours = count / (time.perf_counter() - began)
    assert tree.get_root() == root, "pymerkle and the store disagree on the root"
    began = time.perf_counter()
    for seq, leaf in zip(seqs, leaves, strict=True):
        proof = tree.prove_inclusion(seq, size)
        pymerkle_verify_inclusion(leaf, root, proof)
    theirs = count / (time.perf_counter() - began)
    return ours, theirs, build


def bench_verify(path: Path, signer: LogSigner) -> tuple[float, float, float]:
    """(our log-only seconds, our full seconds, pymerkle rebuild seconds)."""
    with AuditStore(path) as store:
        list(store.records(recipient=_RECIPIENTS[0]))  # builds the query index
        checkpoint = store.latest_checkpoint(signed=True)
        assert checkpoint is not None
    gc.collect()
    began = time.perf_counter()
    summary = verify_store(path, key=signer.key, index=False)
    log_only = time.perf_counter() - began
    assert summary.checkpoint_verified and summary.entries == checkpoint.size
    began = time.perf_counter()
    verify_store(path, key=signer.key)
    full = time.perf_counter() - began
    with AuditStore(path) as store:  # JSON Lines: one entry per line, in seq order
        segments = sorted(store.segments.glob("*.jsonl"))
    entries = b"".join(p.read_bytes() for p in segments).split(b"\n")[:-1]
    gc.collect()
    began = time.perf_counter()
    rebuilt = InmemoryTree.init_from_entries(entries)
    assert rebuilt.get_root() == checkpoint.root
    theirs = time.perf_counter() - began
    return log_only, full, theirs


def _faster(ours: float, theirs: float) -> str:
    return f"{theirs / ours:.2f}x faster" if ours <= theirs else f"{ours / theirs:.2f}x slower"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000, help="entries per durable append")
    parser.add_argument("--proofs", type=int, default=50_000)
    args = parser.parse_args()
    signer = LogSigner(DEFAULT_ORIGIN, Ed25519PrivateKey.generate())
    console.print(
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, {args.entries:,} entries, batches of {args.batch:,}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        path = Path(tmp) / "audit.db"
        console.print("appends …")
        ours_append, theirs_append, tree = bench_appends(path, args.entries, args.batch, signer)
        console.print("proofs …")
        ours_proof, theirs_proof, build = bench_proofs(path, tree, args.proofs)
        del tree
        gc.collect()
        console.print("verify …")
        log_only, full, theirs_verify = bench_verify(path, signer)
        size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 1e6

    table = Table(title="SAFER audit log vs pymerkle 7.0.0 (same run, same entries)")
    for name in ("measure", "ours", "pymerkle (in memory)", "ratio", "target", "met"):
        table.add_column(name, justify="right" if name != "measure" else "left")
    rows = [
        (
            "durable appends/s",
            f"{ours_append:,.0f}",
            f"{theirs_append:,.0f}",
            f"{ours_append / theirs_append:.2f}x",
            ">= 100,000/s",
            ours_append >= 100_000,
        ),
        (
            "inclusion proofs generated+verified/s",
            f"{ours_proof:,.0f}",
            f"{theirs_proof:,.0f}",
            f"{ours_proof / theirs_proof:.2f}x",
            ">= 50,000/s",
            ours_proof >= 50_000,
        ),
        (
            f"verify {args.entries:,} entries: log (s)",
            f"{log_only:.2f}",
            f"{theirs_verify:.2f}",
            _faster(log_only, theirs_verify),
            "< 10 s" if args.entries == 1_000_000 else "-",
            log_only < 10 * args.entries / 1_000_000,
        ),
        (
            f"verify {args.entries:,} entries: log + index (s)",
            f"{full:.2f}",
            f"{theirs_verify:.2f}",
            _faster(full, theirs_verify),
            "-",
            None,
        ),
    ]
    for name, ours, theirs, ratio, target, met in rows:
        verdict = "-" if met is None else ("[green]yes[/]" if met else "[red]no[/]")
        table.add_row(name, ours, theirs, ratio, target, verdict)
    Console(width=140).print(table)
    print(
        f"tree built from the stored leaves in {build:.2f} s; store file(s) {size_mb:,.0f} MB "
        f"({size_mb * 1e6 / args.entries:,.0f} bytes per entry)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
