"""A recipient's local inbox: one SQLite file per recipient.

It stores each decrypted disclosure once (keyed by ``disclosure_id``), the
consumer position in the same transaction (so a crash neither loses nor
repeats a disclosure), records addressed to this recipient that could not be
verified or decrypted (never silently dropped), and whether the RECEIVED
receipt has been acknowledged by the broker.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Inbox", "InboxItem", "Rejection"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS disclosures (
    disclosure_id TEXT PRIMARY KEY,
    concern_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    lscp TEXT NOT NULL,
    lawful_basis TEXT,
    purpose TEXT NOT NULL,
    profile TEXT NOT NULL,
    concern_type TEXT NOT NULL,
    risk_grade TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    wire BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'RECEIVED',
    receipt_sent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rejected (
    position TEXT PRIMARY KEY,
    reason_code TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


@dataclass(frozen=True)
class InboxItem:
    disclosure_id: str
    concern_id: str
    kind: str
    lscp: str
    lawful_basis: str | None
    purpose: str
    profile: str
    concern_type: str
    risk_grade: str
    decided_at: str
    received_at: str
    payload_sha256: str
    payload: dict[str, Any]
    status: str
    receipt_sent: bool


@dataclass(frozen=True)
class Rejection:
    position: str
    reason_code: str
    detail: str


class Inbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store(
        self,
        items: Sequence[tuple[dict[str, Any], bytes, dict[str, Any]]],
        rejections: Sequence[Rejection],
        offsets: Mapping[tuple[str, int], int],
    ) -> int:
        """Store decrypted disclosures, rejections and positions in one transaction.

        ``items`` holds (Disclosure record, wire bytes, decrypted payload).
        Returns how many disclosures were new (duplicates are ignored).
        """
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        added = 0
        with self._transaction():
            for record, wire, payload in items:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO disclosures (disclosure_id, concern_id, kind, lscp,"
                    " lawful_basis, purpose, profile, concern_type, risk_grade, decided_at,"
                    " received_at, payload_sha256, payload_json, wire)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        record["disclosure_id"],
                        record["concern_id"],
                        str(record["kind"]),
                        record["lscp"],
                        record["lawful_basis"],
                        record["purpose"],
                        record["profile"],
                        record["concern_type"],
                        record["risk_grade"],
                        record["decided_at"].isoformat(timespec="milliseconds"),
                        now,
                        record["payload_sha256"],
                        json.dumps(payload, sort_keys=True),
                        wire,
                    ),
                )
                added += cursor.rowcount
            for rejection in rejections:
                self._db.execute(
                    "INSERT OR IGNORE INTO rejected VALUES (?,?,?,?)",
                    (rejection.position, rejection.reason_code, rejection.detail, now),
                )
            for (topic, partition), offset in offsets.items():
                self._db.execute(
                    "INSERT INTO offsets VALUES (?,?,?) ON CONFLICT(topic, partition)"
                    " DO UPDATE SET next_offset=excluded.next_offset",
                    (topic, partition, offset),
                )
        return added

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    def offsets(self) -> dict[tuple[str, int], int]:
        rows = self._db.execute("SELECT topic, partition, next_offset FROM offsets")
        return {(t, p): o for t, p, o in rows}

    def pending_receipts(self) -> list[tuple[str, str, str]]:
        """(disclosure_id, concern_id, payload_sha256) whose receipt is not yet acked."""
        rows = self._db.execute(
            "SELECT disclosure_id, concern_id, payload_sha256 FROM disclosures"
            " WHERE receipt_sent = 0 ORDER BY rowid"
        )
        return [(d, c, h) for d, c, h in rows]

    def mark_receipts_sent(self, disclosure_ids: Sequence[str]) -> None:
        with self._transaction():
            self._db.executemany(
                "UPDATE disclosures SET receipt_sent = 1 WHERE disclosure_id = ?",
                [(d,) for d in disclosure_ids],
            )

    def items(self) -> Iterator[InboxItem]:
        rows = self._db.execute(
            "SELECT disclosure_id, concern_id, kind, lscp, lawful_basis, purpose, profile,"
            " concern_type, risk_grade, decided_at, received_at, payload_sha256, payload_json,"
            " status, receipt_sent FROM disclosures ORDER BY received_at, rowid"
        )
        for row in rows:
            yield InboxItem(
                disclosure_id=row[0],
                concern_id=row[1],
                kind=row[2],
                lscp=row[3],
                lawful_basis=row[4],
                purpose=row[5],
                profile=row[6],
                concern_type=row[7],
                risk_grade=row[8],
                decided_at=row[9],
                received_at=row[10],
                payload_sha256=row[11],
                payload=json.loads(row[12]),
                status=row[13],
                receipt_sent=bool(row[14]),
            )

    def disclosure_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT disclosure_id FROM disclosures")]

    def rejections(self) -> list[Rejection]:
        rows = self._db.execute("SELECT position, reason_code, detail FROM rejected ORDER BY at")
        return [Rejection(*r) for r in rows]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM disclosures").fetchone()[0])


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
